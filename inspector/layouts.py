"""Every on-disk layout of ic-stable-structures, declared once with `construct`.

The declarations serve three purposes:
  * parsing a header for display (``parse``), with the byte span of each field for the hex view
    (``field_spans``);
  * building bytes in tests and in ``inspector/forge/__init__.py`` (``build``);
  * hot loops, through ``FastLayout``: a ``struct`` format string *derived* from the same declaration,
    so the fast path cannot drift from the declared layout.

Magic bytes are plain ``Bytes(3)`` fields rather than ``Const``: the tool must parse broken headers
too, and a wrong magic is a finding, not a parse failure.

Offsets and sizes come from FORMAT.md (the project's byte-layout reference): all header integers are
little-endian; ``repr(C, packed)`` structs have no padding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from construct import Array, Bytes, Construct, Int8ul, Int16ul, Int32ul, Int64ul, Renamed, Struct

WASM_PAGE_SIZE = 65_536

# --- MemoryManager (FORMAT.md §2) -------------------------------------------------------------------
MM_MAGIC = b"MGR"
MM_LAYOUT_VERSION = 1
MAX_NUM_MEMORIES = 255
MAX_NUM_BUCKETS = 32_768
UNALLOCATED_BUCKET = 0xFF
DEFAULT_BUCKET_SIZE_IN_PAGES = 128
BUCKET_TABLE_OFFSET = 2_080
BUCKETS_START = WASM_PAGE_SIZE
MM_HEADER_PAGE_USED = BUCKET_TABLE_OFFSET + MAX_NUM_BUCKETS  # 34,848: the rest of page 0 is unused

MemoryManagerHeader = Struct(
    "magic" / Bytes(3),
    "layout_version" / Int8ul,
    "num_allocated_buckets" / Int16ul,
    "bucket_size_in_pages" / Int16ul,
    "reserved" / Bytes(32),
    "memory_sizes_in_pages" / Array(MAX_NUM_MEMORIES, Int64ul),
)

# One owner byte per possible bucket id; 0xFF marks an unallocated bucket.
BucketTable = Bytes(MAX_NUM_BUCKETS)

# --- BTreeMap (FORMAT.md §3) -------------------------------------------------------------------------
BTREE_MAGIC = b"BTR"
ALLOCATOR_MAGIC = b"BTA"
CHUNK_MAGIC = b"CHK"
NODE_MAGIC = b"BTN"
OVERFLOW_MAGIC = b"NOF"
PAGE_SIZE_VALUE_MARKER = 0xFFFF_FFFF
ALLOCATOR_OFFSET = 52
FIRST_CHUNK_OFFSET = 100
B = 6
CAPACITY = 2 * B - 1  # at most 11 entries per node, 12 children
MINIMUM_PAGE_SIZE = 128

# For layout version 1 the two u32 fields are max_key_size / max_value_size; for version 2 they are
# page_size and the 0xFFFFFFFF marker. Keep the neutral names and interpret them in the walker.
BTreeMapHeader = Struct(
    "magic" / Bytes(3),
    "layout_version" / Int8ul,
    "size_a" / Int32ul,
    "size_b" / Int32ul,
    "root_addr" / Int64ul,
    "length" / Int64ul,
    "reserved" / Bytes(24),
)

AllocatorHeader = Struct(
    "magic" / Bytes(3),
    "version" / Int8ul,
    "padding" / Bytes(4),
    "allocation_size" / Int64ul,
    "num_allocated_chunks" / Int64ul,
    "free_list_head" / Int64ul,
    "reserved" / Bytes(16),
)

ChunkHeader = Struct(
    "magic" / Bytes(3),
    "version" / Int8ul,
    "allocated" / Int8ul,
    "padding" / Bytes(3),
    "next" / Int64ul,
)

NodeHeader = Struct(
    "magic" / Bytes(3),
    "version" / Int8ul,
    "node_type" / Int8ul,
    "num_entries" / Int16ul,
)

# A v2 node's initial page starts with the common header followed by the first overflow address.
V2NodePrefix = Struct(
    "magic" / Bytes(3),
    "version" / Int8ul,
    "node_type" / Int8ul,
    "num_entries" / Int16ul,
    "overflow" / Int64ul,
)

OverflowPageHeader = Struct(
    "magic" / Bytes(3),
    "next" / Int64ul,
)

# --- Cell (FORMAT.md §4) -----------------------------------------------------------------------------
CELL_MAGIC = b"SCL"
CellHeader = Struct(
    "magic" / Bytes(3),
    "layout_version" / Int8ul,
    "value_length" / Int32ul,
)

# --- Vec and MinHeap share BaseVec (FORMAT.md §5) ----------------------------------------------------
VEC_MAGIC = b"SVC"
MINHEAP_MAGIC = b"SMH"
VEC_DATA_OFFSET = 64
VecHeader = Struct(
    "magic" / Bytes(3),
    "layout_version" / Int8ul,
    "length" / Int64ul,
    "max_entry_size" / Int32ul,
    "is_fixed_size" / Int8ul,
    "reserved" / Bytes(47),
)

# --- Log: index and data memories (FORMAT.md §6) -----------------------------------------------------
LOG_INDEX_MAGIC = b"GLI"
LOG_DATA_MAGIC = b"GLD"
LOG_INDEX_ENTRIES_OFFSET = 40
LOG_DATA_ENTRIES_OFFSET = 32
LogIndexHeader = Struct(
    "magic" / Bytes(3),
    "layout_version" / Int8ul,
    "reserved" / Bytes(28),
    "length" / Int64ul,
)
LogDataHeader = Struct(
    "magic" / Bytes(3),
    "layout_version" / Int8ul,
    "reserved" / Bytes(28),
)

STRUCTURE_MAGICS: dict[bytes, str] = {
    BTREE_MAGIC: "btreemap",
    CELL_MAGIC: "cell",
    VEC_MAGIC: "vec",
    MINHEAP_MAGIC: "minheap",
    LOG_INDEX_MAGIC: "log_index",
    LOG_DATA_MAGIC: "log_data",
}

ALL_LAYOUTS: dict[str, Struct] = {
    "MemoryManagerHeader": MemoryManagerHeader,
    "BTreeMapHeader": BTreeMapHeader,
    "AllocatorHeader": AllocatorHeader,
    "ChunkHeader": ChunkHeader,
    "NodeHeader": NodeHeader,
    "V2NodePrefix": V2NodePrefix,
    "OverflowPageHeader": OverflowPageHeader,
    "CellHeader": CellHeader,
    "VecHeader": VecHeader,
    "LogIndexHeader": LogIndexHeader,
    "LogDataHeader": LogDataHeader,
}


def v1_node_size(max_key_size: int, max_value_size: int) -> int:
    """Chunk payload of a v1 node: header, 11 entry slots with u32 length prefixes, 12 children."""
    return 7 + CAPACITY * (4 + max_key_size + 4 + max_value_size) + (CAPACITY + 1) * 8


def vec_slot_prefix_width(max_size: int, is_fixed: bool) -> int:
    """Width of a Vec/MinHeap slot's little-endian length prefix (FORMAT.md §5)."""
    if is_fixed:
        return 0
    if max_size <= 0xFF:
        return 1
    if max_size <= 0xFFFF:
        return 2
    return 4


# --- Declarations → struct formats and byte spans ----------------------------------------------------

_STRUCT_CODES: dict[int, str] = {id(Int8ul): "B", id(Int16ul): "H", id(Int32ul): "I", id(Int64ul): "Q"}


def _subcon_format(sub: Construct) -> tuple[str, int]:
    """The ``struct`` code for one construct field, and how many values it unpacks to."""
    while isinstance(sub, Renamed):
        sub = sub.subcon
    code = _STRUCT_CODES.get(id(sub))
    if code is not None:
        return code, 1
    if isinstance(sub, Array):
        inner, n = _subcon_format(sub.subcon)
        if n != 1:
            raise TypeError("arrays of composite fields are not supported by FastLayout")
        return f"{sub.count}{inner}", sub.count
    if sub.__class__.__name__ == "Bytes":
        return f"{sub.sizeof()}s", 1
    raise TypeError(f"no struct code for {sub!r}")


@dataclass(frozen=True)
class FieldSpan:
    name: str
    offset: int  # relative to the start of the structure
    size: int


def field_spans(layout: Struct) -> list[FieldSpan]:
    """Byte span of each field of a fixed-size declaration, for the hex view and the diff."""
    spans: list[FieldSpan] = []
    offset = 0
    for sub in layout.subcons:
        size = sub.sizeof()
        spans.append(FieldSpan(sub.name, offset, size))
        offset += size
    return spans


class FastLayout:
    """``struct.unpack_from`` over a construct declaration, for hot loops.

    ``unpack_from`` returns a flat tuple in declaration order (arrays are flattened), which is what
    node walks and scans want; ``parse_dict`` gives named fields where speed matters less.
    """

    def __init__(self, layout: Struct) -> None:
        self.layout = layout
        codes: list[str] = []
        self.names: list[str] = []
        self._counts: list[int] = []
        for sub in layout.subcons:
            code, n = _subcon_format(sub)
            codes.append(code)
            self.names.append(sub.name)
            self._counts.append(n)
        self.format = "<" + "".join(codes)
        self._struct = struct.Struct(self.format)
        self.size = self._struct.size
        if self.size != layout.sizeof():
            raise AssertionError(f"struct format {self.format} disagrees with the declaration size")
        self.unpack_from = self._struct.unpack_from
        self.pack = self._struct.pack

    def parse_dict(self, buf: Any, offset: int = 0) -> dict[str, Any]:
        flat = self._struct.unpack_from(buf, offset)
        out: dict[str, Any] = {}
        i = 0
        for name, n in zip(self.names, self._counts, strict=True):
            out[name] = flat[i] if n == 1 else list(flat[i : i + n])
            i += n
        return out


FAST: dict[str, FastLayout] = {name: FastLayout(layout) for name, layout in ALL_LAYOUTS.items()}
MM_HEADER = FAST["MemoryManagerHeader"]
BTREE_HEADER = FAST["BTreeMapHeader"]
ALLOCATOR_HEADER = FAST["AllocatorHeader"]
CHUNK_HEADER = FAST["ChunkHeader"]
NODE_HEADER = FAST["NodeHeader"]
V2_NODE_PREFIX = FAST["V2NodePrefix"]
OVERFLOW_HEADER = FAST["OverflowPageHeader"]
CELL_HEADER = FAST["CellHeader"]
VEC_HEADER = FAST["VecHeader"]
LOG_INDEX_HEADER = FAST["LogIndexHeader"]
LOG_DATA_HEADER = FAST["LogDataHeader"]

MM_HEADER_SIZE = MM_HEADER.size  # 2,080


def field_span(layout: Struct, name: str) -> FieldSpan:
    """The byte span of one named field of a fixed-size declaration."""
    return next(f for f in field_spans(layout) if f.name == name)


# Offsets other modules need, derived from the declarations above rather than typed again.
MM_SIZE_SLOTS_OFFSET = field_span(MemoryManagerHeader, "memory_sizes_in_pages").offset  # 40
MM_SIZE_SLOT_SIZE = Int64ul.sizeof()  # 8: one u64 page count per memory
BTREE_HEADER_FIELDS_END = field_span(BTreeMapHeader, "reserved").offset  # 28; 28..52 are reserved
BTREE_HEADER_SIZE = BTREE_HEADER.size  # 52 (28 used + 24 reserved)
CHUNK_HEADER_SIZE = CHUNK_HEADER.size  # 16
