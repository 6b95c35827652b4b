"""The map's own header and the allocator header, read once at construction."""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from inspector.layouts import (
    ALLOCATOR_HEADER,
    ALLOCATOR_MAGIC,
    ALLOCATOR_OFFSET,
    BTREE_HEADER,
    BTREE_MAGIC,
    CHUNK_HEADER_SIZE,
    FIRST_CHUNK_OFFSET,
    MINIMUM_PAGE_SIZE,
    PAGE_SIZE_VALUE_MARKER,
    v1_node_size,
)
from inspector.memory import Memory, OutOfBounds
from inspector.structures.btreemap.nodes import (
    CHUNK_NODE_SIZE,
    Node,
)

if TYPE_CHECKING:
    from inspector.structures.btreemap.walk import WalkResult
    from inspector.structures.chunk_set import ChunkSet


Range = tuple[int, int]


_U32_STRUCT = struct.Struct("<I")


KeyLayout = Literal["prefixed"] | int


DEFAULT_PAGE_SIZE = 1024  # what v0.6.0+ picks when the key or value type is unbounded (FORMAT.md §3.7)


ALLOCATOR_HEADER_SIZE = ALLOCATOR_HEADER.size  # 48


HEADER_END = ALLOCATOR_OFFSET + ALLOCATOR_HEADER_SIZE  # 100: where the first chunk starts


# Caps that keep pathological inputs cheap. Findings of one code beyond the cap are summarised.
MAX_FINDINGS_PER_CODE = 50


MAX_LISTED_ADDRESSES = 64


NODE_CACHE_SIZE = 256


# Key-layout probing: how many nodes the pre-order probe may read, how many v2 nodes it keeps, and the
# largest fixed key size it considers when nothing narrows it down.
PROBE_NODE_BUDGET = 64


PROBE_V2_SAMPLE = 8


MAX_FIXED_KEY_PROBE = 4096


# A v1 entry longer than its slot is read on over the following bytes (the library does the same);
# beyond this many bytes the length is treated as garbage rather than read.
MAX_V1_OVERFLOW_READ = 1 << 20


PREAD_MIN_BYTES = 256 << 20  # snapshots from this size on have their nodes read with pread


class _Headers:
    """The map's own header and the allocator header, read once at construction."""

    def __init__(
        self,
        mem: Memory,
        *,
        memory_id: int | str | None = None,
        key_fixed_size: int | None | Literal["auto"] = "auto",
    ) -> None:
        self.mem = mem
        self.memory_id = memory_id
        self._size = mem.size
        self._contig = mem.contiguous
        # Big file-backed snapshots: nodes are read with pread, not through the mapping. Nodes of a map
        # grown in random order are scattered over the whole file, and each touch through the mapping
        # maps the page-cache folio around it: a walk of a 20M-entry map ended with ~870 MB mapped.
        phys = getattr(mem, "phys", mem)
        fd = getattr(phys, "fd", None)
        big = int(getattr(phys, "size", 0)) >= PREAD_MIN_BYTES
        self._pread_buf: Any = getattr(phys, "buf", None) if fd is not None and big else None
        self._pread: Any = partial(os.pread, int(fd)) if fd is not None and big else None
        self._header_findings: list[tuple[str, str, str, Range, dict[str, Any]]] = []
        self._node_cache: OrderedDict[int, Node] = OrderedDict()
        self._walk_result: WalkResult | None = None
        self._reached: ChunkSet | None = None
        self._free_list_state: (
            tuple[list[int], list[tuple[str, str, int | None, dict[str, Any]]], int] | None
        ) = None
        self._probe_done = False
        self._v2_seen = False
        self._v2_in_grid: bool | None = None

        # The v2 key layout: None = not decided yet (inferred when first needed), 0 = length-prefixed,
        # N > 0 = fixed N bytes.
        self._kfix: int | None
        if key_fixed_size == "auto":
            self._kfix = None
        elif key_fixed_size is None:
            self._kfix = 0
        else:
            if key_fixed_size <= 0:
                raise ValueError("key_fixed_size must be positive, None or 'auto'")
            self._kfix = int(key_fixed_size)
        self._read_headers()

    # --- headers -----------------------------------------------------------------------------------------

    def _note(self, severity: str, code: str, message: str, span: Range, **details: Any) -> None:
        self._header_findings.append((severity, code, message, span, details))

    def _read_headers(self) -> None:
        self.magic_ok = False
        self.walkable = False  # enough of the header makes sense to follow nodes
        self.allocator_ok = False  # the allocator header makes sense (free list, chunk grid)
        self.layout_version: int | None = None
        self.page_size = 0
        self.max_key_size: int | None = None
        self.max_value_size: int | None = None
        self.page_size_kind: str | None = None
        self.root_addr = 0
        self.length = 0
        self.allocation_size = 0
        self.num_allocated_chunks = 0
        self.free_list_head = 0
        self._derived = False
        self._cs = 0
        self._max_chunks = 0
        if self._size < HEADER_END:
            self._note(
                "error", "structure_bad_magic", "memory too small for a BTreeMap header", (0, self._size)
            )
            return
        try:
            raw = self.mem.read(0, HEADER_END)
        except OutOfBounds as e:
            self._note("error", "structure_bad_magic", f"BTreeMap header unreadable: {e}", (0, HEADER_END))
            return
        magic, version, size_a, size_b, root, length, _reserved = BTREE_HEADER.unpack_from(raw, 0)
        self.layout_version, self.root_addr, self.length = version, root, length
        if magic != BTREE_MAGIC:
            self._note("error", "structure_bad_magic", f"BTreeMap magic is {magic!r}, not 'BTR'", (0, 3))
            return
        self.magic_ok = True
        if version == 2 and size_b == PAGE_SIZE_VALUE_MARKER:
            self.page_size_kind, self.page_size = "v2_value", size_a
        elif version in (1, 2):
            # Version 1 (genuine or migrated), or the never-written "v2 with derived sizes" combination
            # that v0.6.0+ readers accept (FORMAT.md §3.1): node page = v1 node size.
            self._derived = True
            self.max_key_size, self.max_value_size = size_a, size_b
            self.page_size = v1_node_size(size_a, size_b)
            self.page_size_kind = "v1_derived" if version == 1 else "v2_derived"
        else:
            self._note("error", "structure_bad_magic", f"unknown BTreeMap layout version {version}", (3, 4))
            return

        amagic, aversion, _pad, alloc_size, nalloc, free_head, _res = ALLOCATOR_HEADER.unpack_from(
            raw, ALLOCATOR_OFFSET
        )
        self.allocation_size, self.num_allocated_chunks, self.free_list_head = alloc_size, nalloc, free_head
        alloc_span = (ALLOCATOR_OFFSET, HEADER_END)
        if amagic != ALLOCATOR_MAGIC or aversion != 1:
            self._note(
                "error", "structure_bad_magic", f"allocator header is {amagic!r} v{aversion}", alloc_span
            )
        elif not MINIMUM_PAGE_SIZE <= alloc_size <= self._size:
            self._note(
                "error",
                "btree_allocation_size_mismatch",
                f"allocation_size {alloc_size} is not a usable chunk size",
                (60, 68),
                allocation_size=alloc_size,
            )
        else:
            self.allocator_ok = True

        if self._derived:
            expected = self.page_size
            if alloc_size != expected:
                # v0.5.x rewrote the header with the Rust type's MAX_SIZE (FORMAT.md §3.1), so this can
                # happen without data loss; nodes still use the stored max sizes.
                self._note(
                    "warning",
                    "btree_allocation_size_mismatch",
                    f"allocation_size {alloc_size} != v1 node size {expected} for max sizes "
                    f"({self.max_key_size}, {self.max_value_size})",
                    (4, 12),
                    allocation_size=alloc_size,
                    v1_node_size=expected,
                )
        elif alloc_size != self.page_size:
            self._note(
                "error",
                "btree_allocation_size_mismatch",
                f"allocation_size {alloc_size} != page size {self.page_size}",
                (4, 8),
                allocation_size=alloc_size,
                page_size=self.page_size,
            )
        if not self._derived and self.page_size < MINIMUM_PAGE_SIZE:
            self._note(
                "error",
                "btree_node_invalid",
                f"page size {self.page_size} is below the library minimum {MINIMUM_PAGE_SIZE}",
                (4, 8),
            )
        # Nodes can be followed when the page holds at least the headers and is not larger than memory.
        if CHUNK_NODE_SIZE + 8 <= self.page_size <= self._size:
            self.walkable = True
        else:
            self._note("error", "btree_node_invalid", f"page size {self.page_size} is unusable", (4, 12))
        chunk_payload = alloc_size if self.allocator_ok else self.page_size
        self._cs = chunk_payload + CHUNK_HEADER_SIZE
        self._max_chunks = max(0, (self._size - FIRST_CHUNK_OFFSET) // self._cs + 1)
