"""Attribution by geometry: which part of one snapshot's layout holds a physical byte, and its label.

The offset index (``inspector.offset_index``) answers "what is at X" for every view; this module is the
half of it that never builds a region. Every question is answered from the MemoryManager geometry
(header, table, each memory's buckets) and, inside a memory, from the structure's own fixed layout. For
a B-tree that is the chunk grid: chunk ``j`` starts at ``100 + j × (allocation_size + 16)`` (FORMAT.md
§3.3), so one 16-byte chunk header read says whether the bytes are a node, an overflow page, a free chunk
or lie past the allocator frontier. Attributing a handful of ranges in a map of millions of entries
therefore costs a handful of reads, and a diff's attribution stays proportional to its changed ranges.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from inspector.errors import READ_ERRORS
from inspector.layouts import (
    ALLOCATOR_OFFSET,
    BTREE_HEADER_FIELDS_END,
    BUCKET_TABLE_OFFSET,
    BUCKETS_START,
    CELL_HEADER,
    CHUNK_HEADER,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    LOG_DATA_ENTRIES_OFFSET,
    LOG_INDEX_ENTRIES_OFFSET,
    MAX_NUM_BUCKETS,
    MM_HEADER_PAGE_USED,
    MM_HEADER_SIZE,
    MM_SIZE_SLOTS_OFFSET,
    NODE_MAGIC,
    OVERFLOW_MAGIC,
    UNALLOCATED_BUCKET,
    VEC_DATA_OFFSET,
    WASM_PAGE_SIZE,
    MemoryManagerHeader,
    field_spans,
)
from inspector.memory import Memory, OutOfBounds
from inspector.structures.base import Structure
from inspector.structures.btreemap.structure import BTreeMapStructure
from inspector.structures.cell import Cell
from inspector.structures.log import Log
from inspector.structures.vec import BaseVec

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.memory_manager import MemoryManagerInfo

Range = tuple[int, int]
MemoryId = int | str | None

BTREE_PACKED_HEADER = BTREE_HEADER_FIELDS_END  # bytes of the BTreeMap header that carry fields
ALLOCATOR_END = FIRST_CHUNK_OFFSET  # the allocator header ends where the first chunk starts
MEMORY_SIZE_SLOTS = MM_SIZE_SLOTS_OFFSET  # offset of memory_sizes_in_pages[0] in the MemoryManager header
MAX_LABEL_KEY = 40  # characters of a decoded key quoted in an attribution label
END_OF_TIME = 1 << 62  # "to the end" for the tail beyond a snapshot

# The MemoryManager header's fields, for labelling which of them a range hit (FORMAT.md §2.1).
_MM_FIELD_LABELS = {
    "magic": "magic",
    "layout_version": "layout version",
    "num_allocated_buckets": "bucket count",
    "bucket_size_in_pages": "bucket size",
    "reserved": "reserved bytes",
}
_MM_FIELDS: tuple[tuple[int, int, str], ...] = tuple(
    (f.offset, f.offset + f.size, _MM_FIELD_LABELS[f.name])
    for f in field_spans(MemoryManagerHeader)
    if f.name in _MM_FIELD_LABELS
)

# A locator answers, for a virtual offset in one memory: (end of the part that starts there, area, what).
Located = tuple[int, str, str]
Locator = Callable[[int, bool], Located]


class LaidOutMemory(Protocol):
    """A memory of a manager's layout: a ``MemoryInfo`` read from disk or a reconstructed ``ReconMemory``."""

    @property
    def id(self) -> int | str: ...

    @property
    def size_pages(self) -> int: ...

    @property
    def buckets(self) -> list[int]: ...


def effective_layout(analysis: Analysis) -> tuple[str, dict[int | str, LaidOutMemory], int]:
    """(kind, memories by id, bucket size in bytes) of the layout that maps this snapshot's buckets.

    ``kind`` is "memory_manager" for a header read from disk, "reconstructed" when the forensics pass
    rebuilt the layout from what survived (``analysis.reconstructed``), "none" for raw memory. Memory
    objects have ``id``, ``size_pages`` and ``buckets`` either way.
    """
    mm = analysis.mm
    if mm.present and mm.bucket_size_bytes:
        kind = "reconstructed" if mm.reconstructed else "memory_manager"
        return kind, {m.id: m for m in mm.memories}, mm.bucket_size_bytes
    recon = analysis.reconstructed
    bs = (recon.bucket_size_bytes or 0) if recon is not None else 0
    if recon is not None and bs:
        return "reconstructed", {m.id: m for m in recon.memories}, bs
    return "none", {}, 0


def stable_save_span(analysis: Analysis) -> Range | None:
    """Where a ``stable_save`` Candid message sits in this snapshot, if anything says so.

    The forensics pass (``analysis.stable_save``) is asked first; its object is read defensively since
    only its ``to_json`` is a shared contract. Without it, an unrecognised raw memory that holds a whole
    Candid message at offset 0 is that message (what ``stable_save`` writes, FORMAT.md §8.1).
    """
    ss = analysis.stable_save
    if ss is not None:
        span = _span_of(ss)
        if span is None and hasattr(ss, "to_json"):
            try:
                span = _span_of(ss.to_json())
            except READ_ERRORS:
                span = None
        if span is not None:
            return span
    for s in analysis.structures:
        content = s.content
        if s.memory_id == "raw" and isinstance(content, dict) and content.get("kind") == "candid":
            length = content.get("length")
            if content.get("verified") and isinstance(length, int) and length > 0:
                return 0, length
    return None


def _span_of(obj: object) -> Range | None:
    get = obj.get if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
    for name in ("range", "physical_range", "span"):
        r = get(name)
        if isinstance(r, list | tuple) and len(r) == 2 and all(isinstance(x, int) for x in r) and r[1] > r[0]:
            return int(r[0]), int(r[1])
    length = get("length")
    start = get("start") if get("start") is not None else get("offset")
    if isinstance(length, int) and length > 0:
        base = start if isinstance(start, int) else 0
        return base, base + length
    return None


def mm_fields_hit(start: int, end: int) -> list[str]:
    """Names of the MemoryManager header fields that ``[start, end)`` touches, sizes folded into one."""
    out = [name for a, b, name in _MM_FIELDS if start < b and a < end]
    s, e = max(start, MEMORY_SIZE_SLOTS), min(end, MM_HEADER_SIZE)
    if s < e:
        first = (s - MEMORY_SIZE_SLOTS) // 8
        last = (e - 1 - MEMORY_SIZE_SLOTS) // 8
        partial = (e - MEMORY_SIZE_SLOTS) % 8 != 0 and e < MM_HEADER_SIZE
        if first == last:
            text = f"size slot of memory {first}"
        elif first == 0 and last == 254:
            text = "all memory size slots"
        else:
            text = f"size slots of memories {first}–{last}"
        out.append(text + (f" ({last} only partly)" if partial and first != last else ""))
    return out


APPLICATION_AREA = "application region (not managed by ic-stable-structures)"


def _bucket_span_text(first: int, last: int) -> str:
    return f"bucket {first}" if first == last else f"buckets {first}–{last}"


class LayoutGeometry:
    """What the layout's geometry says about a physical byte of one snapshot (see the module docstring)."""

    def __init__(self, analysis: Analysis, *, name: str = "") -> None:
        self.analysis = analysis
        self.name = name
        snap = analysis.snapshot
        self.size = snap.size
        self.layout, memories, self.bs = effective_layout(analysis)
        # A reconstructed layout (forensics) still tells which bucket is whose, but no header is on disk.
        self.has_buckets = self.layout != "none"
        self.mm_live = self.layout == "memory_manager"
        mm = analysis.mm
        if self.mm_live:
            self.nb, self.table = mm.num_allocated_buckets, mm.table
        else:
            recon = analysis.reconstructed
            self.nb, self.table = ((recon.num_buckets if recon is not None else None) or 0), b""
        self.stable_save = stable_save_span(analysis)
        # A manager on RestrictedMemory: everything below is shifted by its base (FORMAT.md §14.1).
        self.base = mm.base_offset if self.mm_live else 0
        self._bucket_owner: dict[int, tuple[Any, int]] = {}
        # Bytes of a memory past its declared size are no part of its structure, whatever they hold.
        self._declared: dict[MemoryId, int] = {m.id: m.size_pages * WASM_PAGE_SIZE for m in memories.values()}
        for m in memories.values():
            for k, b in enumerate(m.buckets):
                self._bucket_owner[b] = (m, k)
        self._locators: dict[Any, tuple[Locator, Memory]] = {}
        self._build_locators()

    # ----------------------------------------------------------------- locators

    def _build_locators(self) -> None:
        for s in self.analysis.structures:
            mid = s.memory_id
            if isinstance(mid, list):
                # A paired log: its index half and data half live in two memories.
                # Only a Log sets index_mem/data_mem (other structures keep the base's None).
                index_mem, data_mem = s.index_mem, s.data_mem
                if isinstance(s, Log) and index_mem is not None and mid:
                    self._locators[mid[0]] = (_log_index_locator(s, index_mem), index_mem)
                if isinstance(s, Log) and data_mem is not None and len(mid) > 1:
                    self._locators[mid[1]] = (_log_data_locator(data_mem), data_mem)
                continue
            self._locators[mid] = (structure_locator(s), s.mem)
        # A manager nested in a memory: bytes of that memory are attributed to the inner memories.
        from inspector.analysis.real_layouts import NestedManager  # (analysis sits above this module)

        for s in self.analysis.structures:
            if s.kind == "memory_manager" and isinstance(s, NestedManager) and s.inner is not None:
                self._locators[s.memory_id] = (self._nested_locator(s.inner), s.mem)

    def _nested_locator(self, inner: MemoryManagerInfo) -> Locator:
        bs = inner.bucket_size_bytes
        owners = {m.id: m for m in inner.memories}

        def locate(v: int, detail: bool) -> Located:
            if v < MM_HEADER_SIZE:
                return MM_HEADER_SIZE, "inner MemoryManager header", "inner MemoryManager header"
            if v < BUCKETS_START or not bs:
                return (
                    BUCKETS_START,
                    "inner MemoryManager page 0",
                    "inner MemoryManager bucket table / page 0",
                )
            b, off = divmod(v - BUCKETS_START, bs)
            owner = inner.table[b] if b < len(inner.table) else UNALLOCATED_BUCKET
            end = v - off + bs
            m = owners.get(owner)
            if m is None or b not in m.buckets:
                return end, "inner unallocated buckets", f"inner bucket {b} (unallocated)"
            iv = m.buckets.index(b) * bs + off
            iid = m.memory.memory_id
            entry = self._locators.get(iid)
            if entry is None:
                return end, f"memory {iid} · data", f"memory {iid} · data"
            try:
                ivend, area, what = entry[0](iv, detail)
            except OutOfBounds:
                ivend, area, what = iv + 1, "unreadable", "unreadable bytes"
            return min(end, v + max(1, ivend - iv)), f"memory {iid} · {area}", f"memory {iid} · {what}"

        return locate

    def _prefix(self, mid: MemoryId) -> str:
        return "raw memory" if mid == "raw" else f"memory {mid}"

    # -------------------------------------------------------------------- locate

    def locate(self, pos: int) -> tuple[int, str, str, MemoryId, int | None]:
        """(end, area, what, memory id, virtual offset) of the layout part that holds byte ``pos``."""
        base = self.base
        if base and pos < self.size:
            if pos < base:
                return base, APPLICATION_AREA, APPLICATION_AREA, None, None
            end, area, what, mid, v = self._locate(pos - base)
            return end + base, area, what, mid, v
        return self._locate(pos)

    def _locate(self, pos: int) -> tuple[int, str, str, MemoryId, int | None]:
        """``locate`` with ``pos`` relative to the manager's base."""
        if pos >= self.size:
            what = f"past the end of {self.name or 'this'} snapshot ({self.size:,} bytes)"
            return END_OF_TIME, "past the end of the snapshot", what, None, None
        ss = self.stable_save
        if ss is not None and not self.mm_live and ss[0] <= pos < ss[1]:
            n = ss[1] - ss[0]
            return ss[1], "stable_save message", f"stable_save message (Candid, {n:,} bytes)", None, None
        if not self.has_buckets:
            return self._in_memory("raw", pos, pos, self.size)
        if pos < MM_HEADER_SIZE:
            # Without 'MGR' a reader ignores what is left of the header and table (FORMAT.md §11.1).
            area = "MemoryManager header" if self.mm_live else "MemoryManager header (no longer valid)"
            return MM_HEADER_SIZE, area, area, None, None
        if pos < MM_HEADER_PAGE_USED:
            area = "bucket table" if self.mm_live else "bucket table (unread: the header is not valid)"
            split = BUCKET_TABLE_OFFSET + min(self.nb, MAX_NUM_BUCKETS)
            if pos < split:
                return split, area, f"{area} · entries of allocated buckets", None, None
            return MM_HEADER_PAGE_USED, area, f"{area} · entries of unallocated buckets", None, None
        if pos < BUCKETS_START:
            what = "page 0 · unused by the MemoryManager"
            if ss is not None and ss[0] <= pos < ss[1]:
                what += " (remains of a stable_save message)"
            return BUCKETS_START, "page 0 · unused by the MemoryManager", what, None, None
        b, off = divmod(pos - BUCKETS_START, self.bs)
        bucket_end = pos - off + self.bs
        owner = self._bucket_owner.get(b)
        if owner is None:
            if b < len(self.table) and self.table[b] != UNALLOCATED_BUCKET:
                # Owned in the table but not mapped (the owner id is out of range): say what the byte says.
                what = f"bucket {b} (table says memory {self.table[b]}, not mapped)"
                return bucket_end, "buckets with an unmapped owner", what, None, None
            return bucket_end, "unallocated buckets", f"bucket {b} (unallocated)", None, None
        m, k = owner
        v = k * self.bs + off
        return self._in_memory(m.id, v, pos, bucket_end, bucket=b, declared=m.size_pages * WASM_PAGE_SIZE)

    def _in_memory(
        self,
        mid: MemoryId,
        v: int,
        pos: int,
        phys_limit: int,
        *,
        bucket: int | None = None,
        declared: int | None = None,
    ) -> tuple[int, str, str, MemoryId, int | None]:
        prefix = self._prefix(mid)
        if declared is not None and v >= declared:
            where = f" (bucket {bucket})" if bucket is not None else ""
            return (
                phys_limit,
                f"{prefix} · past its declared size",
                f"{prefix} · past its declared size{where}",
                mid,
                v,
            )
        entry = self._locators.get(mid)
        if entry is None:
            return phys_limit, f"{prefix} · data", f"{prefix} · data", mid, v
        locator, _mem = entry
        try:
            vend, area, what = locator(v, False)
        except OutOfBounds:
            vend, area, what = v + 1, "unreadable", "unreadable bytes"
        if vend <= v:
            vend = v + 1
        end = min(phys_limit, pos + (vend - v))
        if declared is not None:
            end = min(end, pos + (declared - v))
        return end, f"{prefix} · {area}", f"{prefix} · {what}", mid, v

    def detail(self, start: int, end: int, memory_id: MemoryId, virtual: int | None, what: str) -> str:
        """The detailed label of ``[start, end)`` (header fields, node address, entry keys, element numbers),
        given its coarse ``what``: asked only for the ranges a diff lists."""
        if memory_id is None or virtual is None:
            return self._page0_detail(start, end, what)
        declared = self._declared.get(memory_id)
        if declared is not None and virtual >= declared:
            return what  # "past its declared size (bucket b)": the structure's locator must not relabel it
        entry = self._locators.get(memory_id)
        if entry is None:
            return what
        locator, _mem = entry
        try:
            _vend, _area, label = locator(virtual, True)
            # Entry-level detail covers the whole range: ask again with its extent where the locator
            # supports ranges (B-tree nodes, vec slots).
            ranged = getattr(locator, "describe_range", None)
            if ranged is not None:
                label = ranged(virtual, virtual + (end - start))
        except READ_ERRORS:  # a label is never worth failing the diff for
            return what
        return f"{self._prefix(memory_id)} · {label}"

    def _page0_detail(self, start: int, end: int, what: str) -> str:
        s, e = start - self.base, end - self.base
        if s < 0:
            return what
        if self.has_buckets and s < MM_HEADER_SIZE and self.mm_live:
            return f"MemoryManager header ({', '.join(mm_fields_hit(s, e))})"
        if self.has_buckets and BUCKET_TABLE_OFFSET <= s < MM_HEADER_PAGE_USED and self.mm_live:
            first, last = s - BUCKET_TABLE_OFFSET, e - 1 - BUCKET_TABLE_OFFSET
            state = "allocated" if first < self.nb else "unallocated"
            return f"bucket table · entries of {_bucket_span_text(first, last)} ({state})"
        return what


# --------------------------------------------------------------------------- structure locators


def structure_locator(s: Structure) -> Locator:
    kind = s.kind
    if isinstance(s, Cell):  # kind "cell"
        return _cell_locator(s)
    if isinstance(s, BTreeMapStructure):  # kind "btreemap"
        return _BTreeLocator(s)
    if isinstance(s, BaseVec):  # kind "vec" or "minheap"
        return _VecLocator(s)
    label = {"empty": "zero-filled memory", "unknown": "unrecognised bytes"}.get(kind, f"{kind} bytes")
    content = s.content
    size = s.mem.size
    if (
        isinstance(content, dict)
        and content.get("kind") == "candid"
        and isinstance(content.get("length"), int)
    ):
        n = content["length"]

        def candid(v: int, detail: bool) -> Located:
            if v < n:
                return n, "Candid message", f"Candid message at offset 0 ({n:,} bytes)"
            return size, label, f"{label} (after the Candid message)"

        return candid

    def plain(v: int, detail: bool) -> Located:
        return size, label, label

    return plain


def _cell_locator(s: Cell) -> Locator:
    hdr = CELL_HEADER.size
    value_end = hdr + s.value_length
    size = s.mem.size

    def locate(v: int, detail: bool) -> Located:
        if v < hdr:
            return hdr, "Cell header", "Cell header"
        if v < value_end:
            return value_end, "Cell value", f"Cell value ({s.value_length:,} bytes)"
        return size, "unused (past the Cell value)", "unused (past the Cell value)"

    return locate


class _VecLocator:
    def __init__(self, s: BaseVec) -> None:
        self.s = s
        self.name = "Vec" if s.kind == "vec" else "MinHeap"
        self.slot = s.slot_size
        self.data_end = VEC_DATA_OFFSET + s.length * s.slot_size
        self.size = s.mem.size

    def __call__(self, v: int, detail: bool) -> Located:
        if v < VEC_DATA_OFFSET:
            return VEC_DATA_OFFSET, f"{self.name} header", f"{self.name} header"
        if v < self.data_end and self.slot:
            i = (v - VEC_DATA_OFFSET) // self.slot
            end = self.data_end if not detail else VEC_DATA_OFFSET + (i + 1) * self.slot
            return end, f"{self.name} elements", f"{self.name} element {i}"
        return (
            self.size,
            f"{self.name} unused slots (past its length)",
            f"{self.name} unused slots (past its length)",
        )

    def describe_range(self, a: int, b: int) -> str:
        if a < VEC_DATA_OFFSET or a >= self.data_end or not self.slot:
            return self(a, True)[2]
        first = (a - VEC_DATA_OFFSET) // self.slot
        last = (min(b, self.data_end) - 1 - VEC_DATA_OFFSET) // self.slot
        return f"{self.name} element {first}" if first == last else f"{self.name} elements {first}–{last}"


def _log_index_locator(s: Log, index_mem: Memory) -> Locator:
    end = LOG_INDEX_ENTRIES_OFFSET + 8 * s.length
    size = index_mem.size

    def locate(v: int, detail: bool) -> Located:
        if v < LOG_INDEX_ENTRIES_OFFSET:
            return LOG_INDEX_ENTRIES_OFFSET, "Log index header", "Log index header"
        if v < end:
            i = (v - LOG_INDEX_ENTRIES_OFFSET) // 8
            return (v - v % 8 + 8 if detail else end), "Log index entries", f"Log index entry {i}"
        return size, "Log index unused", "Log index unused"

    return locate


def _log_data_locator(data_mem: Memory) -> Locator:
    size = data_mem.size

    def locate(v: int, detail: bool) -> Located:
        if v < LOG_DATA_ENTRIES_OFFSET:
            return LOG_DATA_ENTRIES_OFFSET, "Log data header", "Log data header"
        return size, "Log entry data", "Log entry data"

    return locate


CHUNKS_KEPT = 4096  # chunk headers a map's locator keeps (~100 bytes each)


class _BTreeLocator:
    """The BTreeMap's fixed layout plus its chunk grid (FORMAT.md §3.1–3.3)."""

    def __init__(self, s: BTreeMapStructure) -> None:
        self.s = s
        self.map = s.map
        self.mem: Memory = s.mem
        self.size = self.mem.size
        self._frontier: int | None = None
        # The chunks looked up lately: a diff locates each changed range's chunk again to describe it
        # (~800 of the ~3,600 lookups of the bench's big-value map diff). Bounded: the TUI asks per screen.
        self._chunks: dict[int, tuple[bool, int, bytes] | None] = {}

    @property
    def frontier(self) -> int:
        if self._frontier is None:
            try:
                self._frontier = int(self.map.frontier)
            except READ_ERRORS:
                self._frontier = -1
        return self._frontier

    def _chunk(self, c: int) -> tuple[bool, int, bytes] | None:
        """(header is CHK v1, allocated flag, payload magic) of the chunk whose header is at ``c``."""
        if c in self._chunks:
            return self._chunks[c]
        if len(self._chunks) >= CHUNKS_KEPT:
            self._chunks.clear()
        got = self._chunks[c] = self._read_chunk(c)
        return got

    def _read_chunk(self, c: int) -> tuple[bool, int, bytes] | None:
        try:
            # The usual case: header and magic in one read. A peek (pread) rather than the mapping: a
            # touch of the mapping maps a whole large page-cache folio, and a diff looks up thousands.
            raw = self.mem.peek(c, CHUNK_HEADER_SIZE + 3)
        except OutOfBounds:
            raw = b""
        if len(raw) == CHUNK_HEADER_SIZE + 3:
            magic, version, allocated, _pad, _next = CHUNK_HEADER.unpack_from(raw)
            return magic == CHUNK_MAGIC and version == 1, allocated, raw[CHUNK_HEADER_SIZE:]
        try:
            magic, version, allocated, _pad, _next = CHUNK_HEADER.unpack_from(
                self.mem.read(c, CHUNK_HEADER_SIZE)
            )
        except OutOfBounds:
            return None
        try:
            payload = self.mem.read(c + CHUNK_HEADER_SIZE, 3)
        except OutOfBounds:
            payload = b""
        return magic == CHUNK_MAGIC and version == 1, allocated, payload

    def __call__(self, v: int, detail: bool) -> Located:
        m = self.map
        if v < BTREE_PACKED_HEADER:
            return BTREE_PACKED_HEADER, "BTreeMap header", "BTreeMap header"
        if v < ALLOCATOR_OFFSET:
            return ALLOCATOR_OFFSET, "BTreeMap header", "BTreeMap header (reserved bytes)"
        if v < ALLOCATOR_END:
            return ALLOCATOR_END, "BTreeMap allocator header", "BTreeMap allocator header"
        if not m.allocator_ok or not m.chunk_size:
            return (
                self.size,
                "BTreeMap chunks (allocator unreadable)",
                "BTreeMap chunks (allocator unreadable)",
            )
        cs = m.chunk_size
        c = FIRST_CHUNK_OFFSET + (v - FIRST_CHUNK_OFFSET) // cs * cs
        payload = c + CHUNK_HEADER_SIZE
        in_header = v < payload
        part_end = payload if in_header else c + cs
        frontier = self.frontier
        if frontier >= 0 and c > frontier:
            area = "BTreeMap · past the allocator frontier"
            if not detail:
                return self.size, area, area
            what = area
            info = self._chunk(c)
            if info is not None and info[0] and info[2] == NODE_MAGIC:
                what += f" · stale node at virtual {payload:#x}"
            elif info is not None and info[0] and info[2] == OVERFLOW_MAGIC:
                what += f" · stale overflow page at virtual {payload:#x}"
            return part_end, area, what
        suffix = " (chunk header)" if in_header else ""
        if c == frontier:
            return (
                part_end,
                "BTreeMap frontier chunk",
                f"BTreeMap frontier chunk at virtual {payload:#x}{suffix}",
            )
        info = self._chunk(c)
        if info is None:
            return self.size, "BTreeMap chunks (unreadable)", "BTreeMap chunks (unreadable)"
        ok, allocated, magic = info
        if not ok:
            area, thing = "BTreeMap chunk with a bad header", "BTreeMap chunk with a bad header"
        elif allocated != 1:
            area, thing = "BTreeMap free chunk", "BTreeMap free chunk"
        elif magic == NODE_MAGIC:
            area, thing = "BTreeMap node", "BTreeMap node"
        elif magic == OVERFLOW_MAGIC:
            area, thing = "BTreeMap overflow page", "BTreeMap overflow page"
        else:
            area, thing = "BTreeMap allocated chunk (no node magic)", "BTreeMap allocated chunk"
        return part_end, area, f"{thing} at virtual {payload:#x}{suffix}"

    def describe_range(self, a: int, b: int) -> str:
        """The detailed label, plus which entries of a node ``[a, b)`` touched (read from the node)."""
        base = self(a, True)[2]
        m = self.map
        if a < ALLOCATOR_END or not m.chunk_size:
            return base
        cs = m.chunk_size
        c = FIRST_CHUNK_OFFSET + (a - FIRST_CHUNK_OFFSET) // cs * cs
        payload = c + CHUNK_HEADER_SIZE
        if a < payload or not base.startswith("BTreeMap node"):
            return base
        try:
            node = m.node(payload)
        except READ_ERRORS:
            return base
        hit: list[str] = []
        for e in node.entries:
            parts = []
            if any(s < b and a < t for s, t in e.key_ranges):
                parts.append("key")
            if any(s < b and a < t for s, t in e.value_ranges):
                parts.append("value")
            if parts:
                hit.append(f"{' and '.join(parts)} of {self._key_text(e.key)}")
        if not hit:
            return base + " · node header or free space"
        if len(hit) <= 2:
            return base + " · " + "; ".join(hit)
        return base + f" · {len(hit)} entries, first {hit[0]}"

    def _key_text(self, key: bytes) -> str:
        try:
            from inspector.decode.values import decode_for

            text = decode_for(self.s, "key", key).text
        except READ_ERRORS:
            text = key.hex()
        return text if len(text) <= MAX_LABEL_KEY else text[: MAX_LABEL_KEY - 1] + "…"
