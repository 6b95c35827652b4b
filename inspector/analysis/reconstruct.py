"""Rebuild the most likely MemoryManager layout when its header (and maybe its bucket table) is gone.

What survives a write over physical [0, L) (FORMAT.md §11.1): the bucket table from max(L, 2080) on, the
memory-size slots at 40 + 8·id ≥ L, and every bucket that starts at or after L. From those:

* **bucket table**: the owners of buckets ≥ L − 2080 are intact. A real table is the owners of the
  allocated buckets followed by 0xFF up to 34,848, so the start of the final 0xFF run is the number of
  allocated buckets, as long as it lies past the damage.
* **bucket size**: structures start at virtual offset 0 of their memory, which is the start of a
  bucket, so every surviving structure header (BTR, SCL, SVC, SMH, GLI, GLD) sits at a page p with
  (p − 1) divisible by the bucket size. With the table's bucket count, the file size pins it exactly
  (physical size = 1 + nb × bucket size pages when only the manager grew memory); otherwise the
  candidates are the divisors of the gcd of those (p − 1), preferring the library defaults (128 pages,
  1,024 before v0.4.0), then the largest one that also fits the file size.
* **memories**: owners from the surviving table keep their MemoryId. A bucket whose owner was lost but
  which starts with a structure header starts a memory labelled "?" (its id is unknowable), which takes
  the following unattributed buckets as far as its own header says it extends.

Nothing here is taken from particular files: it is the format's arithmetic plus what the bytes say.
The scan reads only page starts and skips holes of sparse files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

from inspector.layouts import (
    ALLOCATOR_HEADER,
    ALLOCATOR_MAGIC,
    ALLOCATOR_OFFSET,
    BTREE_HEADER,
    BTREE_MAGIC,
    BUCKET_TABLE_OFFSET,
    BUCKETS_START,
    CELL_HEADER,
    CELL_MAGIC,
    CHUNK_HEADER_SIZE,
    DEFAULT_BUCKET_SIZE_IN_PAGES,
    FIRST_CHUNK_OFFSET,
    LOG_DATA_MAGIC,
    LOG_INDEX_ENTRIES_OFFSET,
    LOG_INDEX_HEADER,
    LOG_INDEX_MAGIC,
    MAX_NUM_BUCKETS,
    MAX_NUM_MEMORIES,
    MINHEAP_MAGIC,
    MM_SIZE_SLOTS_OFFSET,
    PAGE_SIZE_VALUE_MARKER,
    UNALLOCATED_BUCKET,
    VEC_DATA_OFFSET,
    VEC_HEADER,
    VEC_MAGIC,
    WASM_PAGE_SIZE,
    vec_slot_prefix_width,
)
from inspector.memory import OutOfBounds, PhysicalMemory, VirtualMemory
from inspector.sparse import data_ranges
from inspector.structures.base import Structure
from inspector.words import plural

LEGACY_BUCKET_SIZE_IN_PAGES = 1024  # v0.1.0–v0.3.0 default (FORMAT.md §1)
MAX_BUCKET_SIZE_IN_PAGES = 0xFFFF  # stored as a u16
_SIZE_SLOTS_START = MM_SIZE_SLOTS_OFFSET
HEADER_PROBE = ALLOCATOR_OFFSET + ALLOCATOR_HEADER.size  # 100 bytes: enough for every structure header


@dataclass(frozen=True)
class StructureStart:
    """A validated structure header at a page start (physical page ``page`` ≥ 1)."""

    page: int
    magic: str
    kind: str
    summary: str

    @property
    def physical(self) -> int:
        return self.page * WASM_PAGE_SIZE


def probe_structure_header(head: bytes) -> tuple[str, str] | None:
    """(kind, one-line summary) when ``head`` (≥ 100 bytes, or all that exists) starts with a structure
    header whose fixed fields are valid, else None. Stale or random bytes rarely pass: besides the
    magic, versions, markers and reserved fields must hold the values the library writes."""
    magic = head[:3]
    if magic == BTREE_MAGIC and len(head) >= HEADER_PROBE:
        _m, version, a, b, root, length, _r = BTREE_HEADER.unpack_from(head, 0)
        if version not in (1, 2):
            return None
        amagic, aver, _pad, alloc, nalloc, _free, _res = ALLOCATOR_HEADER.unpack_from(head, ALLOCATOR_OFFSET)
        if amagic != ALLOCATOR_MAGIC or aver != 1 or alloc == 0:
            return None
        page = f"page {a}" if version == 2 and b == PAGE_SIZE_VALUE_MARKER else f"max key {a}, max value {b}"
        return (
            "btreemap",
            f"BTreeMap v{version} ({page}), {plural(length, 'entry')}, {plural(nalloc, 'chunk')} allocated",
        )
    if magic == CELL_MAGIC and len(head) >= CELL_HEADER.size:
        _m, version, n = CELL_HEADER.unpack_from(head, 0)
        return ("cell", f"Cell with a {n:,}-byte value") if version == 1 else None
    if magic in (VEC_MAGIC, MINHEAP_MAGIC) and len(head) >= VEC_HEADER.size:
        _m, version, length, max_size, fixed, reserved = VEC_HEADER.unpack_from(head, 0)
        if version != 1 or fixed not in (0, 1) or any(reserved):
            return None
        kind = "vec" if magic == VEC_MAGIC else "minheap"
        return kind, f"{'Vec' if kind == 'vec' else 'MinHeap'} of {length:,} elements (max {max_size} bytes)"
    if magic in (LOG_INDEX_MAGIC, LOG_DATA_MAGIC) and len(head) >= LOG_INDEX_HEADER.size:
        if head[3] != 1 or any(head[4:32]):
            return None
        if magic == LOG_INDEX_MAGIC:
            n = LOG_INDEX_HEADER.unpack_from(head, 0)[3]
            return "log_index", f"Log index of {plural(n, 'entry')}"
        return "log_data", "Log data"
    return None


def scan_page_starts(phys: PhysicalMemory, fd: int | None, first_page: int) -> list[StructureStart]:
    """Validated structure headers at page starts from ``first_page`` on, skipping sparse holes."""
    size = phys.size
    ranges = data_ranges(fd, size) if fd is not None else [(0, size)]
    out: list[StructureStart] = []
    buf = phys.buf

    # Touching one byte per page through the map makes the kernel fault in whole read-ahead windows, so
    # RSS would grow with the file; pread of 3 bytes per page keeps memory flat.
    def magic_at(pos: int) -> bytes:
        return os.pread(fd, 3, pos) if fd is not None else bytes(buf[pos : pos + 3])

    for lo, hi in ranges:
        p = max(first_page, -(-lo // WASM_PAGE_SIZE))
        while p * WASM_PAGE_SIZE < hi:
            pos = p * WASM_PAGE_SIZE
            if magic_at(pos) in _MAGICS:
                head = bytes(buf[pos : min(size, pos + HEADER_PROBE)])
                found = probe_structure_header(head)
                if found is not None:
                    out.append(StructureStart(p, head[:3].decode("latin-1"), found[0], found[1]))
            p += 1
    return out


_MAGICS = {BTREE_MAGIC, CELL_MAGIC, VEC_MAGIC, MINHEAP_MAGIC, LOG_INDEX_MAGIC, LOG_DATA_MAGIC}


@dataclass
class TableEvidence:
    """What the bucket table at 2080 still says after a write over [0, damaged_end)."""

    state: str  # "intact" | "partial" | "lost"
    num_buckets: int | None  # allocated buckets, when the end of the owner run survives
    lost_entries: int  # entries [0, lost_entries) were overwritten
    owners: dict[int, int]  # bucket → owner, for the surviving allocated entries

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "num_allocated_buckets": self.num_buckets,
            "entries_overwritten": self.lost_entries,
            "surviving_owners": {str(b): o for b, o in sorted(self.owners.items())},
        }


def read_table_evidence(
    phys: PhysicalMemory, damaged_end: int, max_buckets: int, base: int = 0
) -> TableEvidence:
    """Surviving owners and bucket count. ``max_buckets`` is how many buckets the file could hold at
    the smallest bucket size (1 page): a table claiming more is not a table. ``base``: where the
    manager's header was (its table follows it)."""
    table_at = base + BUCKET_TABLE_OFFSET
    lost = min(max(damaged_end - table_at, 0), MAX_NUM_BUCKETS)
    if phys.size < table_at + MAX_NUM_BUCKETS or lost >= MAX_NUM_BUCKETS:
        return TableEvidence("lost", None, lost, {})
    table = phys.read(table_at, MAX_NUM_BUCKETS)
    owned_end = len(table.rstrip(bytes([UNALLOCATED_BUCKET])))
    if owned_end <= lost or owned_end > max_buckets or owned_end >= MAX_NUM_BUCKETS:
        # Either every owner entry is inside the damage (the bucket count is unknowable), or the bytes
        # after the damage do not look like an owner run followed by 0xFF (a table always ends in 0xFF
        # unless all 32,768 buckets are allocated, which no file this size can hold).
        return TableEvidence("lost", None, lost, {})
    owners = {b: table[b] for b in range(lost, owned_end) if table[b] != UNALLOCATED_BUCKET}
    if any(o >= MAX_NUM_MEMORIES for o in owners.values()):
        return TableEvidence("lost", None, lost, {})
    return TableEvidence("intact" if lost == 0 else "partial", owned_end, lost, owners)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def choose_bucket_size(
    pages: int, starts: list[StructureStart], num_buckets: int | None
) -> tuple[int | None, list[str]]:
    """The bucket size (pages) that best explains the surviving evidence, and why."""
    offsets = [s.page - 1 for s in starts]
    aligned_text = ""
    if starts:
        aligned_text = "structure headers at pages " + ", ".join(f"{s.page:,}" for s in starts[:8])
        aligned_text += " …" if len(starts) > 8 else ""
    area = pages - 1  # pages after page 0
    if num_buckets and area > 0 and area % num_buckets == 0:
        # The manager grows stable memory to exactly 1 + nb × bucket size pages: with the table's count
        # that pins the size. Structure headers only corroborate it (a stale one elsewhere must not win).
        bs = area // num_buckets
        if 1 <= bs <= MAX_BUCKET_SIZE_IN_PAGES:
            why = [
                f"the surviving bucket table lists {num_buckets} allocated bucket(s) and the file holds "
                f"{area:,} pages after page 0: {bs} pages per bucket"
            ]
            aligned = sum(1 for o in offsets if o % bs == 0)
            if aligned_text:
                why.append(f"{aligned_text}: {aligned} of {len(offsets)} fall on bucket starts")
            return bs, why
    g = 0
    for o in offsets:
        g = math.gcd(g, o)
    if g:
        last = max(offsets)
        cands = [d for d in _divisors(g) if d <= MAX_BUCKET_SIZE_IN_PAGES and last // d < MAX_NUM_BUCKETS]
        fits = [d for d in cands if area > 0 and area % d == 0]
        for default in (DEFAULT_BUCKET_SIZE_IN_PAGES, LEGACY_BUCKET_SIZE_IN_PAGES):
            if default in fits:
                return default, [
                    f"{aligned_text} fall on bucket starts for {default}-page buckets (the library default"
                    f"{'' if default == DEFAULT_BUCKET_SIZE_IN_PAGES else ' before v0.4.0'}), which also "
                    "fits the file size"
                ]
        pool = fits or cands
        if pool:
            bs = max(pool)
            return bs, [
                f"{aligned_text}: the largest bucket size that puts them all on bucket starts"
                + (" and fits the file size" if fits else "")
                + f" is {bs} page(s)"
            ]
    if area > 0 and area % DEFAULT_BUCKET_SIZE_IN_PAGES == 0:
        return DEFAULT_BUCKET_SIZE_IN_PAGES, [
            "no surviving structure header pins the bucket size; assuming the library default of "
            f"{DEFAULT_BUCKET_SIZE_IN_PAGES} pages, which fits the file size"
        ]
    return None, ["no surviving structure header or bucket table pins the bucket size"]


@dataclass
class ReconMemory:
    id: int | str  # the MemoryId, or "?b<first bucket>" when the table no longer says
    id_known: bool
    buckets: list[int]
    size_pages: int
    size_source: str
    memory: VirtualMemory
    first_bucket_content: str = ""  # what its first bucket starts with

    @property
    def label(self) -> str:
        return f"memory {self.id}" if self.id_known else f"memory ? (bucket {self.buckets[0]})"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id if self.id_known else "?",
            "key": self.id,
            "id_known": self.id_known,
            "buckets": list(self.buckets),
            "size_pages": self.size_pages,
            "size_source": self.size_source,
            "physical_start": self.memory.to_physical(0) if self.buckets else None,
            "starts_with": self.first_bucket_content,
        }


@dataclass
class Reconstruction:
    """The rebuilt layout. ``memories`` are decoded like a real manager's (see ``memory_refs``)."""

    damaged_end: int
    bucket_size_in_pages: int | None
    bucket_size_evidence: list[str]
    num_buckets: int | None
    num_buckets_source: str
    table: TableEvidence
    owners: list[int | str | None]  # per bucket: MemoryId, "?b<n>" label, or None when unattributed
    starts: list[StructureStart]
    memories: list[ReconMemory]
    notes: list[str] = field(default_factory=list)
    structures: list[Structure] = field(default_factory=list)  # filled by forensics after detection
    # B-tree nodes whose map header is gone (``headless.NodeCluster``), placed at their map's virtual 0.
    node_clusters: list[Any] = field(default_factory=list)
    # Where the clobbered manager's MGR header was: 0, or S × 65,536 for one on RestrictedMemory.
    base_offset: int = 0

    @property
    def base_page(self) -> int:
        return self.base_offset // WASM_PAGE_SIZE

    def bucket_of_page(self, page: int) -> int | None:
        """The bucket a structure starting at physical ``page`` starts, or None off the bucket grid."""
        bs = self.bucket_size_in_pages
        k = page - self.base_page - 1
        return k // bs if bs and k >= 0 and k % bs == 0 else None

    @property
    def bucket_size_bytes(self) -> int:
        return (self.bucket_size_in_pages or 0) * WASM_PAGE_SIZE

    def memory(self, key: int | str | list[int] | None) -> ReconMemory | None:
        """The reconstructed memory with id ``key`` (any structure's or orphan's id; a list or None matches none)."""
        for m in self.memories:
            if m.id == key:
                return m
        return None

    def memory_refs(self) -> list[tuple[int | str, VirtualMemory]]:
        return [(m.id, m.memory) for m in self.memories]

    def owner_text(self, bucket: int) -> str:
        if bucket >= len(self.owners):
            return "not allocated"
        owner = self.owners[bucket]
        if owner is None:
            return "owner unknown: its bucket-table entry was overwritten"
        if isinstance(owner, str):
            return f"memory ? (MemoryId unknown; its structure starts in bucket {owner[2:]})"
        return f"memory {owner}"

    def unknown_maps(self) -> list[ReconMemory]:
        """Memories of unknown id whose structure is a BTreeMap (salvage can only guess among these)."""
        out = []
        for m in self.memories:
            if not m.id_known and m.first_bucket_content.startswith("BTreeMap"):
                out.append(m)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "reconstructed": True,
            "base_offset": self.base_offset,
            "damaged_range": [self.base_offset, self.damaged_end],
            "bucket_size_in_pages": self.bucket_size_in_pages,
            "bucket_size_evidence": self.bucket_size_evidence,
            "num_allocated_buckets": self.num_buckets,
            "num_allocated_buckets_source": self.num_buckets_source,
            "bucket_table": self.table.to_json(),
            "buckets": [
                {
                    "bucket": b,
                    "memory": (o if not isinstance(o, str) else "?"),
                    "owner_known": isinstance(o, int),
                }
                for b, o in enumerate(self.owners)
            ],
            "memories": [m.to_json() for m in self.memories],
            "structures_found": [
                {
                    "page": s.page,
                    "physical": s.physical,
                    "magic": s.magic,
                    "kind": s.kind,
                    "summary": s.summary,
                }
                for s in self.starts
            ],
            "structures": [{"memory": s.memory_id, "kind": s.kind} for s in self.structures],
            "notes": list(self.notes),
        }


def _structure_extent(phys: PhysicalMemory, start: int, kind: str, limit: int) -> int:
    """Bytes a structure at physical ``start`` needs, from its own header, assuming its memory is
    contiguous from there (the best guess for a memory whose bucket list is lost). At least 1."""
    try:
        head = phys.read(start, min(HEADER_PROBE, phys.size - start))
        if kind == "cell":
            return CELL_HEADER.size + CELL_HEADER.unpack_from(head, 0)[2]
        if kind in ("vec", "minheap"):
            _m, _v, length, max_size, fixed, _r = VEC_HEADER.unpack_from(head, 0)
            slot = max_size + vec_slot_prefix_width(max_size, bool(fixed))
            return VEC_DATA_OFFSET + length * slot
        if kind == "log_index":
            return LOG_INDEX_ENTRIES_OFFSET + 8 * LOG_INDEX_HEADER.unpack_from(head, 0)[3]
        if kind == "btreemap":
            alloc = ALLOCATOR_HEADER.unpack_from(head, ALLOCATOR_OFFSET)[3]
            stride = alloc + CHUNK_HEADER_SIZE
            # Follow the chunk grid while its headers are there: the frontier is the last one.
            end = FIRST_CHUNK_OFFSET
            pos = FIRST_CHUNK_OFFSET
            while start + pos + 3 <= min(phys.size, start + limit) and phys.read(start + pos, 3) == b"CHK":
                end = pos + CHUNK_HEADER_SIZE
                pos += stride
            return end
    except OutOfBounds:
        pass
    return 1


def reconstruct(phys: PhysicalMemory, fd: int | None, damaged_end: int, base: int = 0) -> Reconstruction:
    """Rebuild the layout of a MemoryManager whose bytes [base, damaged_end) were overwritten. ``base`` is
    where its MGR header was: 0, or S × 65,536 for a manager on ``RestrictedMemory`` (its bucket i is at
    base + 65,536 + i × bucket size). Everything is worked out in the manager's own pages, then placed."""
    size = phys.size
    base_page = base // WASM_PAGE_SIZE
    pages = size // WASM_PAGE_SIZE - base_page  # the manager's pages: its own page 0 is at the base
    table = read_table_evidence(phys, damaged_end, max(0, pages - 1), base)
    first_page = max(base_page + 1, -(-damaged_end // WASM_PAGE_SIZE))
    starts = scan_page_starts(phys, fd, first_page)
    clusters = _headless_starts(phys, fd, damaged_end, starts)
    local = [replace(s, page=s.page - base_page) for s in starts]
    bs, why = choose_bucket_size(pages, local, table.num_buckets)
    notes: list[str] = []
    if bs is not None and table.num_buckets and table.num_buckets * bs != pages - 1:
        # The "table" does not fit the file at the size the structures point to: it is not a table
        # (bytes that happen to end in 0xFF), so its owners are not used.
        notes.append("the bytes at the bucket-table offset do not fit the file size: not used as owners")
        table = TableEvidence("lost", None, table.lost_entries, {})
    if bs is None:
        return Reconstruction(
            damaged_end,
            None,
            why,
            table.num_buckets,
            "bucket table",
            table,
            [],
            starts,
            [],
            notes,
            [],
            clusters,
            base,
        )
    bs_bytes = bs * WASM_PAGE_SIZE
    in_file = max(0, (size - base - BUCKETS_START) // bs_bytes)
    if table.num_buckets is not None:
        nb, nb_source = table.num_buckets, "the surviving end of the bucket table"
    else:
        nb, nb_source = min(in_file, MAX_NUM_BUCKETS), "the buckets that fit in the file"
    by_page = {s.page: s for s in starts}
    start_of_bucket = {b: by_page.get(base_page + 1 + b * bs) for b in range(nb)}

    # None: the owner is unknown (overwritten), or a 0xFF hole inside the run (v0.7.1 reclaim).
    owners: list[int | str | None] = [table.owners.get(b) for b in range(nb)]

    memories: list[ReconMemory] = []
    # Memories the surviving table names keep their ids.
    by_owner: dict[int, list[int]] = {}
    for b, o in enumerate(owners):
        if isinstance(o, int):
            by_owner.setdefault(o, []).append(b)
    sizes_from = base + _SIZE_SLOTS_START
    for mid in sorted(by_owner):
        buckets = [b for b in by_owner[mid] if b < in_file]
        slot = sizes_from + 8 * mid
        size_pages = len(buckets) * bs
        source = "estimate: its buckets × bucket size (size slot overwritten)"
        if slot >= damaged_end and phys.size >= slot + 8:
            stored = int.from_bytes(phys.read(slot, 8), "little")
            if stored and -(-stored // bs) == len(by_owner[mid]):
                size_pages, source = stored, "the surviving size slot"
            else:
                source = f"estimate: its buckets × bucket size (the size slot reads {stored})"
        if buckets and buckets[0] < table.lost_entries:
            notes.append(
                f"memory {mid}: its earlier buckets may be among those whose owners were overwritten"
            )
        vm = VirtualMemory(
            phys,
            mid,
            buckets,
            bs_bytes,
            min(size_pages * WASM_PAGE_SIZE, len(buckets) * bs_bytes),
            base=base,
        )
        first = start_of_bucket.get(buckets[0]) if buckets else None
        memories.append(
            ReconMemory(mid, True, buckets, size_pages, source, vm, first.summary if first else "")
        )

    # Buckets whose owner is lost: a structure header at the start begins a memory of unknown id, which
    # extends over the following unattributed buckets as far as its header needs.
    b = 0
    while b < min(nb, in_file):
        s = start_of_bucket.get(b)
        if owners[b] is not None or s is None:
            b += 1
            continue
        key = f"?b{b}"
        free_run = [b]
        while (
            free_run[-1] + 1 < min(nb, in_file)
            and owners[free_run[-1] + 1] is None
            and start_of_bucket.get(free_run[-1] + 1) is None
            and base + BUCKETS_START + (free_run[-1] + 1) * bs_bytes >= damaged_end
        ):
            free_run.append(free_run[-1] + 1)
        cluster = next((c for c in clusters if c.base == s.physical), None)
        extent = (
            cluster.extent
            if cluster is not None and s.kind == HEADLESS_KIND
            else _structure_extent(phys, s.physical, s.kind, len(free_run) * bs_bytes)
        )
        needed = max(1, min(len(free_run), -(-extent // bs_bytes)))
        buckets = free_run[:needed]
        for x in buckets:
            owners[x] = key
        if needed > 1:
            notes.append(
                f"memory ? at bucket {b}: assumed to continue in buckets {buckets[1]}–{buckets[-1]} (its header "
                "needs them and their owners are unknown)"
            )
        vm = VirtualMemory(
            phys, -1, buckets, bs_bytes, len(buckets) * bs_bytes, label=f"memory ? (bucket {b})", base=base
        )
        memories.append(
            ReconMemory(
                key, False, buckets, len(buckets) * bs, "estimate: its buckets × bucket size", vm, s.summary
            )
        )
        b = buckets[-1] + 1
    if table.num_buckets is None and starts:
        notes.append(
            "MemoryIds are unknown: the bucket table was overwritten. Memories are labelled '?' and keyed by "
            "their first bucket ('?b<N>')"
        )
    return Reconstruction(
        damaged_end, bs, why, nb, nb_source, table, owners, starts, memories, notes, [], clusters, base
    )


HEADLESS_KIND = "btree_nodes"


def _headless_starts(
    phys: PhysicalMemory, fd: int | None, damaged_end: int, starts: list[StructureStart]
) -> list[Any]:
    """B-tree node clusters past the damage whose map header is gone; each one's virtual 0 is added to
    ``starts`` (a map starts at a bucket start, so it pins the bucket size like a header would)."""
    from inspector.analysis.headless import find_node_clusters

    clusters = find_node_clusters(phys, fd, damaged_end)
    pages = {s.page for s in starts}
    kept = []
    for c in clusters:
        if c.base_page in pages:
            continue  # the map's own header survives there: it is an ordinary structure start
        kept.append(c)
        starts.append(StructureStart(c.base_page, "BTN", HEADLESS_KIND, c.describe()))
    starts.sort(key=lambda s: s.page)
    return kept
