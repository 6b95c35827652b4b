"""B-tree nodes whose map header (``BTR`` + ``BTA``) is gone: find them, place them, salvage them.

When a write over the start of stable memory runs past page 0 (a long ``stable_save`` message), it can
take the map's own header and allocator with it, so nothing says where the map starts, what its page
size is or how its keys are laid out. The nodes themselves still say all of it (FORMAT.md §3.3–§3.6):

* every node and overflow page sits in a chunk that starts with ``CHK`` v1 and an allocated flag, on a
  grid of ``page_size + 16`` bytes: the most common distance between neighbouring chunks is the chunk
  size, so the page size follows;
* chunk *j* of a map is at virtual ``100 + j·(page_size + 16)``, and a map starts at virtual 0 of its
  memory, which is a bucket start (a whole number of 64 KiB pages into the file). The physical offset
  D of the map's virtual 0 is therefore ≡ (chunk − 100) mod chunk size and a multiple of 64 KiB. The
  overflow and child addresses inside the nodes are virtual: the D under which most of them land on
  chunks of the right kind (``NOF`` for overflows, ``BTN`` for children) is the map's base;
* the key layout (length-prefixed or fixed-size) is inferred from the nodes, as for a live map.

A node is then judged exactly as ``salvage`` judges nodes beyond a live allocator's frontier: its chunk
must say allocated (a freed node keeps its ``BTN`` bytes and is never used), it must parse completely
with an overflow chain of exactly the length its stream needs, and its keys must be in order. Nothing
is guessed: a node that fails contributes no entry.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from inspector.errors import READ_ERRORS
from inspector.layouts import (
    ALLOCATOR_HEADER,
    ALLOCATOR_MAGIC,
    BTREE_HEADER,
    BTREE_MAGIC,
    BUCKETS_START,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    MINIMUM_PAGE_SIZE,
    NODE_MAGIC,
    OVERFLOW_MAGIC,
    PAGE_SIZE_VALUE_MARKER,
    V2_NODE_PREFIX,
    WASM_PAGE_SIZE,
)
from inspector.memory import Buffer, Memory, OutOfBounds, PhysicalMemory, Range
from inspector.sparse import data_ranges
from inspector.structures.btreemap import HEADER_END, BTreeMap

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.analysis.reconstruct import ReconMemory
    from inspector.analysis.salvage import SalvagedEntry, SalvageResult
    from inspector.memory import VirtualMemory
    from inspector.structures.base import Structure

CHUNK_PROBE = CHUNK_MAGIC + b"\x01"  # "CHK" v1: every chunk header starts so
MAX_CHUNKS_SCANNED = 1_000_000  # a bound for hostile inputs full of "CHK\x01"
MAX_BASE_CANDIDATES = 64
MAX_PAGE_SIZES = 4
MAX_CLUSTERS = 4096  # grids placed per scan (hostile bytes can make every chunk its own grid)
MAX_VOTING_NODES = 256
KEY_LAYOUT_SAMPLE = 8


@dataclass(frozen=True)
class FoundChunk:
    physical: int  # of the 16-byte chunk header
    payload: str  # "BTN" | "NOF"
    allocated: bool
    version: int  # the node's version byte (BTN), 0 for NOF


@dataclass
class NodeCluster:
    """Chunks on one grid: one map's nodes in one stretch of the file."""

    chunks: list[FoundChunk]
    chunk_size: int
    base: int  # physical offset of the map's virtual 0 (a page boundary)
    votes: int  # node pointers that land on a chunk of the right kind under this base
    pointers: int  # node pointers looked at
    extent: int = 0  # virtual bytes from the base to the end of the last chunk
    notes: list[str] = field(default_factory=list)

    @property
    def page_size(self) -> int:
        return self.chunk_size - CHUNK_HEADER_SIZE

    @property
    def base_page(self) -> int:
        return self.base // WASM_PAGE_SIZE

    @property
    def allocated_nodes(self) -> int:
        return sum(1 for c in self.chunks if c.payload == "BTN" and c.allocated)

    @property
    def free_nodes(self) -> int:
        return sum(1 for c in self.chunks if c.payload == "BTN" and not c.allocated)

    @property
    def overflow_pages(self) -> int:
        return sum(1 for c in self.chunks if c.payload == "NOF")

    @property
    def node_version(self) -> int:
        versions = Counter(c.version for c in self.chunks if c.payload == "BTN" and c.allocated)
        return versions.most_common(1)[0][0] if versions else 2

    def describe(self) -> str:
        return (
            f"{self.allocated_nodes} allocated B-tree node page(s) ({self.free_nodes} free, "
            f"{self.overflow_pages} overflow page(s)) of {self.page_size:,} bytes whose map header is gone"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "physical_base": self.base,
            "page_size": self.page_size,
            "chunk_size": self.chunk_size,
            "allocated_nodes": self.allocated_nodes,
            "free_nodes": self.free_nodes,
            "overflow_pages": self.overflow_pages,
            "base_votes": self.votes,
            "base_pointers": self.pointers,
            "extent": self.extent,
            "notes": list(self.notes),
        }


def _find_chunks(
    phys: PhysicalMemory, fd: int | None, start: int, end: int | None = None
) -> list[FoundChunk]:
    """Every ``CHK`` v1 header in [start, end) whose payload starts with ``BTN`` or ``NOF``."""
    buf, size = phys.buf, phys.size
    ranges = data_ranges(fd, size) if fd is not None else [(0, size)]
    out: list[FoundChunk] = []
    for lo, hi in ranges:
        hi = min(hi, size if end is None else end)
        pos = max(lo, start)
        while pos < hi and len(out) < MAX_CHUNKS_SCANNED:
            hit = buf.find(CHUNK_PROBE, pos, hi)
            if hit < 0:
                break
            pos = hit + 1
            if hit + CHUNK_HEADER_SIZE + 4 > size:
                continue
            allocated = buf[hit + 4]
            magic = bytes(buf[hit + CHUNK_HEADER_SIZE : hit + CHUNK_HEADER_SIZE + 3])
            if allocated > 1 or magic not in (NODE_MAGIC, OVERFLOW_MAGIC):
                continue
            kind = "BTN" if magic == NODE_MAGIC else "NOF"
            version = buf[hit + CHUNK_HEADER_SIZE + 3] if kind == "BTN" else 0
            if kind == "BTN" and version not in (1, 2):
                continue
            out.append(FoundChunk(hit, kind, allocated == 1, version))
    return out


def _chunk_size(chunks: list[FoundChunk]) -> int | None:
    """The most common distance between neighbouring chunks (the grid step), if it is a legal one."""
    diffs = Counter(
        b.physical - a.physical
        for a, b in zip(chunks, chunks[1:], strict=False)
        if b.physical - a.physical >= MINIMUM_PAGE_SIZE + CHUNK_HEADER_SIZE
    )
    if not diffs:
        return None
    return diffs.most_common(1)[0][0]


def _pointers(buf: Buffer, size: int, c: FoundChunk) -> list[tuple[int, str]]:
    """(virtual payload address, expected payload kind) named by a v2 node's prefix and children."""
    p = c.physical + CHUNK_HEADER_SIZE
    if c.payload != "BTN" or c.version != 2 or p + V2_NODE_PREFIX.size > size:
        return []
    _m, _v, ntype, k, ovf = V2_NODE_PREFIX.unpack_from(buf, p)
    out: list[tuple[int, str]] = []
    if ovf:
        out.append((ovf, "NOF"))
    if ntype == 1 and 1 <= k <= 11 and p + V2_NODE_PREFIX.size + 8 * (k + 1) <= size:
        q = p + V2_NODE_PREFIX.size
        out.extend((int.from_bytes(buf[q + 8 * i : q + 8 * i + 8], "little"), "BTN") for i in range(k + 1))
    return out


def _base_candidates(first_chunk: int, cs: int) -> list[int]:
    """Physical bases D ≤ first_chunk − 100 with D ≡ first_chunk − 100 (mod cs) and D a page boundary,
    nearest first. D = 65,536·k with 65,536·k ≡ target (mod cs): solved for k, no page-by-page search."""
    target = first_chunk - FIRST_CHUNK_OFFSET
    if target < 0:
        return []
    g = math.gcd(WASM_PAGE_SIZE, cs)
    if target % g:
        return []
    step = cs // g
    k0 = (target // g) * pow(WASM_PAGE_SIZE // g, -1, step) % step if step > 1 else 0
    k = target // WASM_PAGE_SIZE
    k -= (k - k0) % step
    out: list[int] = []
    while k >= 0 and len(out) < MAX_BASE_CANDIDATES:
        out.append(k * WASM_PAGE_SIZE)
        k -= step
    return out


def _place(cluster_chunks: list[FoundChunk], cs: int, buf: Buffer, size: int) -> NodeCluster | None:
    candidates = _base_candidates(cluster_chunks[0].physical, cs)
    if not candidates:
        return None
    kinds = {c.physical: c.payload for c in cluster_chunks}
    pointers: list[tuple[int, str]] = []
    for c in cluster_chunks:
        if c.payload == "BTN" and c.allocated:
            pointers.extend(_pointers(buf, size, c))
            if len(pointers) > MAX_VOTING_NODES * 4:
                break
    best, best_votes = candidates[0], -1
    for d in candidates:
        votes = sum(1 for p, kind in pointers if kinds.get(d + p - CHUNK_HEADER_SIZE) == kind)
        if votes > best_votes:
            best, best_votes = d, votes
    cluster = NodeCluster(cluster_chunks, cs, best, max(best_votes, 0), len(pointers))
    cluster.extent = cluster_chunks[-1].physical + cs - best
    if not best_votes:
        cluster.notes.append(
            "no node address confirms where the map starts: assumed the nearest page boundary on its grid"
        )
    return cluster


def find_node_clusters(
    phys: PhysicalMemory, fd: int | None, start: int, end: int | None = None
) -> list[NodeCluster]:
    """Groups of chunks on one grid (see the module docstring), each placed at its map's virtual 0.

    Only clusters with at least one allocated ``BTN`` node are returned: free chunks alone are stale.
    """
    chunks = _find_chunks(phys, fd, start, end)
    # Maps of different page sizes leave grids of different steps: take the most common step, group the
    # chunks on it, and look again at what is left over (bounded: a few page sizes per snapshot).
    placed: list[tuple[int, list[FoundChunk]]] = []
    remaining = chunks
    for _ in range(MAX_PAGE_SIZES):
        cs = _chunk_size(remaining)
        if cs is None:
            break
        groups: list[list[FoundChunk]] = []
        for c in remaining:
            if groups and (c.physical - groups[-1][-1].physical) % cs == 0:
                groups[-1].append(c)
            else:
                groups.append([c])
        placed.extend((cs, g) for g in groups if len(g) > 1)
        leftover = [g[0] for g in groups if len(g) == 1]
        if len(leftover) == len(remaining) or len(leftover) < 2:
            placed.extend((cs, [c]) for c in leftover)
            break
        remaining = leftover
    placed.sort(key=lambda item: item[1][0].physical)
    out: list[NodeCluster] = []
    for cs, g in placed:
        if not any(c.payload == "BTN" and c.allocated for c in g):
            continue
        if len(out) >= MAX_CLUSTERS:
            break
        cluster = _place(g, cs, phys.buf, phys.size)
        if cluster is not None and cluster.base >= BUCKETS_START:
            out.append(cluster)
    out.sort(key=lambda c: c.base)
    return out


# --- a map view over headerless nodes -----------------------------------------------------------------


class HeaderOverlay(Memory):
    """A memory whose first 100 bytes read as a given BTreeMap header; everything else as ``inner``.

    The header is only a lens for the walker (page size, allocator chunk size); it never reaches a file.
    """

    def __init__(self, inner: Memory, head: bytes) -> None:
        self.inner = inner
        self.head = head
        self.size = inner.size
        self.label = inner.label
        self.memory_id = getattr(inner, "memory_id", None)

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise OutOfBounds(f"read of {n} bytes at virtual {offset:#x} is outside {self.label}")
        if offset >= len(self.head):
            return self.inner.read(offset, n)
        cut = min(offset + n, len(self.head))
        return self.head[offset:cut] + (self.inner.read(cut, offset + n - cut) if offset + n > cut else b"")

    def physical_ranges(self, offset: int, n: int) -> list[Range]:
        return self.inner.physical_ranges(offset, n)

    def to_physical(self, offset: int) -> int:
        return self.inner.to_physical(offset)

    def contiguous(self, offset: int) -> tuple[Buffer, int, int]:
        if offset < len(self.head):
            return self.head, offset, len(self.head) - offset
        return self.inner.contiguous(offset)


class OffsetMemory(Memory):
    """Physical bytes [base, base + size) seen from virtual 0 (a map whose memory layout is unknown)."""

    def __init__(self, phys: PhysicalMemory, base: int, size: int, label: str = "") -> None:
        self.phys = phys
        self.base = base
        self.size = max(0, min(size, phys.size - base))
        self.label = label or f"bytes from {base:#x}"

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise OutOfBounds(f"read of {n} bytes at virtual {offset:#x} is outside {self.label}")
        return self.phys.read(self.base + offset, n)

    def physical_ranges(self, offset: int, n: int) -> list[Range]:
        return [(self.base + offset, self.base + offset + n)] if n > 0 else []

    def to_physical(self, offset: int) -> int:
        if not 0 <= offset < self.size:
            raise OutOfBounds(f"virtual {offset:#x} is outside {self.label}")
        return self.base + offset

    def contiguous(self, offset: int) -> tuple[Buffer, int, int]:
        if not 0 <= offset < self.size:
            return self.phys.buf, 0, 0
        return self.phys.buf, self.base + offset, self.size - offset


class HeadlessBTreeMap(BTreeMap):
    """The walker over a map whose header is gone: no root, and no allocator frontier to trust.

    Without a frontier every chunk header is judged on its own (``salvage.scan_unreachable``): an
    allocated chunk holding a valid node is salvaged, a free one never is.
    """

    def _free_list(self) -> tuple[list[int], list[tuple[str, str, int | None, dict[str, Any]]], int]:
        return [], [], -1


def lens_header(page_size: int, max_key: int | None = None, max_value: int | None = None) -> bytes:
    """A BTR + BTA header for ``HeaderOverlay``: v2 with ``page_size``, or v1 with max key/value sizes."""
    if max_key is None or max_value is None:
        btr = BTREE_HEADER.pack(BTREE_MAGIC, 2, page_size, PAGE_SIZE_VALUE_MARKER, 0, 0, bytes(24))
    else:
        btr = BTREE_HEADER.pack(BTREE_MAGIC, 1, max_key, max_value, 0, 0, bytes(24))
    bta = ALLOCATOR_HEADER.pack(ALLOCATOR_MAGIC, 1, bytes(4), page_size, 0, 0, bytes(16))
    head = btr + bta
    assert len(head) == HEADER_END
    return head


def _v1_sizes(mem: Memory, cluster: NodeCluster, sample: list[int]) -> tuple[int, int] | None:
    """(max key, max value) of a v1 map, from a v1 node size P = 191 + 11·(mk + mv): the split under
    which the sampled nodes parse."""
    total, rem = divmod(cluster.page_size - 191, 11)
    if rem or total < 0:
        return None
    best: tuple[int, tuple[int, int]] | None = None
    for mk in range(total + 1):
        bmap = HeadlessBTreeMap(HeaderOverlay(mem, lens_header(cluster.page_size, mk, total - mk)))
        ok = 0
        for addr in sample:
            try:
                node = bmap.node(addr)
            except READ_ERRORS:  # NodeError and short or junk bytes alike: this split fails
                continue
            ok += 1 if not any(e.slot_overflow for e in node.entries) else 0
        if best is None or ok > best[0]:
            best = (ok, (mk, total - mk))
    return best[1] if best is not None and best[0] else None


def open_headless_map(
    mem: Memory,
    cluster: NodeCluster,
    *,
    memory_id: int | str | None = None,
    key_fixed_size: int | None | Literal["auto"] = "auto",
) -> HeadlessBTreeMap:
    """A walker over ``mem`` (whose virtual 0 is the cluster's base) with a header lens from the nodes."""
    sample = [
        c.physical - cluster.base + CHUNK_HEADER_SIZE
        for c in cluster.chunks
        if c.payload == "BTN" and c.allocated and c.version == cluster.node_version
    ][:KEY_LAYOUT_SAMPLE]
    head = lens_header(cluster.page_size)
    if cluster.node_version == 1:
        sizes = _v1_sizes(mem, cluster, sample)
        if sizes is not None:
            head = lens_header(cluster.page_size, *sizes)
    bmap = HeadlessBTreeMap(HeaderOverlay(mem, head), memory_id=memory_id, key_fixed_size=key_fixed_size)
    if key_fixed_size == "auto" and cluster.node_version == 2 and sample:
        bmap._infer_key_layout(sample)  # from the nodes: there is no root to probe from
    return bmap


def cluster_for_memory(clusters: list[NodeCluster], mem: Memory) -> NodeCluster | None:
    """The cluster whose base is virtual 0 of ``mem``."""
    try:
        start = mem.to_physical(0)
    except OutOfBounds:
        return None
    bases = [c.base for c in clusters]
    i = bisect.bisect_left(bases, start)
    return clusters[i] if i < len(clusters) and bases[i] == start else None


def salvage_headless(
    bmap: HeadlessBTreeMap,
    structure: Structure,
    *,
    label: str,
    memory_id: int | str,
    fd: int | None = None,
) -> SalvageResult:
    """Every entry of the allocated, valid nodes under ``bmap`` (a ``SalvageResult``, layout "headless").

    A key found in two nodes is kept twice and both copies are marked ``duplicate_key``: which one the
    map held last is not knowable from the bytes.
    """
    from inspector.analysis.salvage import SalvageResult, add_node_entries, scan_unreachable

    scan = scan_unreachable(bmap, full=True, fd=fd, order_check=True)
    entries: list[SalvagedEntry] = []
    add_node_entries(bmap, scan.accepted, entries)
    notes = [
        f"the map's header and allocator are gone: nodes found by their chunk headers, page size "
        f"{bmap.page_size:,} inferred from the chunk grid, key layout {bmap.key_layout} from the nodes"
    ]
    return SalvageResult(memory_id, label, "headless", structure, entries, scan, notes)


def headless_memories(analysis: Analysis) -> list[tuple[ReconMemory, NodeCluster]]:
    """(reconstructed memory, node cluster) for every memory of a rebuilt layout whose virtual 0 is the
    start of B-tree nodes whose map header is gone."""
    recon = analysis.reconstructed
    if recon is None:
        return []
    out = []
    for m in recon.memories:
        cluster = cluster_for_memory(recon.node_clusters, m.memory) if m.buckets else None
        if cluster is not None:
            out.append((m, cluster))
    return out


def salvage_memory(
    analysis: Analysis, rm: ReconMemory, cluster: NodeCluster, fd: int | None = None
) -> SalvageResult:
    """``salvage_headless`` over a reconstructed memory (its buckets, up to the end of the file)."""
    from inspector.analysis.salvage import extended_memory, key_size_option

    structure = analysis.structure(rm.id)
    assert structure is not None, "every reconstructed memory has a structure (raw content at least)"
    bmap = open_headless_map(
        extended_memory(rm.memory), cluster, memory_id=rm.id, key_fixed_size=key_size_option(structure)
    )
    return salvage_headless(bmap, structure, label=rm.label, memory_id=rm.id, fd=fd)


def continuation_buckets(analysis: Analysis, structure: Structure) -> list[int]:
    """Unowned buckets right after a live map's last bucket that hold the rest of an older map in the
    same memory (a re-initialised manager gives the re-created map fewer buckets than the old one had).

    A bucket counts only if its B-tree chunks sit on the memory's own chunk grid continued through it:
    placed by their own node addresses (or, when no address names another chunk, by a grid step that
    leaves a single possible base), their map's virtual 0 is the memory's virtual 0.
    """
    from inspector.memory import VirtualMemory

    mm, mem = analysis.mm, structure.mem
    if not mm.present or not isinstance(mem, VirtualMemory) or not mem.buckets:
        return []
    phys, bs = mem.phys, mem.bucket_size_bytes
    table = mm.table
    run: list[int] = []
    b = mem.buckets[-1] + 1
    start0 = mem.base + BUCKETS_START  # bucket 0 of a RestrictedMemory manager starts after its base
    while start0 + (b + 1) * bs <= phys.size and b < len(table) and table[b] == 0xFF:
        run.append(b)
        b += 1
    if not run:
        return []
    start, end = start0 + run[0] * bs, start0 + (run[-1] + 1) * bs
    expected_base = start - len(mem.buckets) * bs
    fd = analysis.snapshot.fd
    for cluster in find_node_clusters(phys, fd, start, end):
        if cluster.base != expected_base or cluster.chunks[0].physical >= start + bs:
            continue
        unique = math.lcm(cluster.chunk_size, WASM_PAGE_SIZE) > cluster.chunks[0].physical - expected_base
        if not cluster.votes and not unique:
            continue
        last = cluster.chunks[-1].physical + cluster.chunk_size
        return [x for x in run if start0 + x * bs < last]
    return []


def with_buckets(mem: Memory, extra: list[int]) -> VirtualMemory:
    """``mem`` (to the end of its last bucket) followed by the buckets ``extra`` (``continuation_buckets``)."""
    from inspector.analysis.salvage import extended_memory
    from inspector.memory import VirtualMemory

    base = extended_memory(mem)
    assert isinstance(base, VirtualMemory), "continuation buckets exist for a bucketed memory only"
    buckets = [*base.buckets, *extra]
    return VirtualMemory(
        base.phys,
        base.memory_id,
        buckets,
        base.bucket_size_bytes,
        len(buckets) * base.bucket_size_bytes,
        base=base.base,  # a RestrictedMemory manager's buckets start after its base
    )
