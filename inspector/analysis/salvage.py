"""Recovering BTreeMap entries that the map's root no longer reaches.

Where unreachable nodes come from, and what the chunk headers can and cannot say (FORMAT.md §3.3, §3.9,
§11.2). An allocator hands chunks out from a frontier that only moves forward, so relative to the
*current* allocator's frontier F:

* chunks below F have all been handed out by the current allocator at least once, so they hold the
  current map's bytes (or its freed/leaked chunks). An old node there is gone; an allocated but
  unreachable node there is live data that lost its parent.
* the frontier chunk F itself got a fresh "free" header from the current allocator, written over
  whatever was there. Its payload is untouched, so an older node may still sit in it, but its header no
  longer says whether that node was live. It is accepted only when a surviving, accepted internal node
  names it as a child and its keys fall between that parent's separators.
* chunks beyond F were never written by the current allocator: their headers are the previous
  allocator's word. "allocated" means the node was live then; "free" means it was already a stale,
  freed node (freed nodes keep their "BTN" bytes) and is never salvaged.

A node is salvaged only if it parses completely (header, every entry, an overflow chain whose pages
are on the chunk grid, allocated and "NOF", and exactly as long as the node's stream needs), shares no
chunk with the live tree, has no overflow page below F (re-used by the current map), and has strictly
increasing keys (unless the live tree itself shows the key type is not ordered bytewise). Nothing is
ever guessed: a node that fails any check contributes no entry.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from inspector.layouts import (
    BUCKETS_START,
    CHUNK_HEADER,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    NODE_MAGIC,
)
from inspector.memory import Memory, OutOfBounds, PhysicalMemory, Range, VirtualMemory
from inspector.slow_progress import note
from inspector.sparse import data_ranges, is_zero
from inspector.structures.base import Structure
from inspector.structures.btreemap import BTreeMap
from inspector.structures.btreemap.nodes import Node, NodeError
from inspector.structures.btreemap.structure import BTreeMapStructure
from inspector.structures.chunk_set import ChunkSet

# Where a node sits relative to the current allocator (see the module docstring).
BELOW = "below_frontier"
FRONTIER = "frontier"
BEYOND = "beyond_frontier"

MAX_REJECTED_LISTED = 200
# Zero regions are skipped in blocks of this size (a non-sparse file of zeros scans at memcmp speed).
ZERO_SKIP_BLOCK = 1 << 20


@dataclass
class NodeVerdict:
    """One "BTN" payload the scan looked at, and whether its entries are salvaged."""

    addr: int
    physical_addr: int | None
    domain: str
    chunk_allocated: bool
    accepted: bool
    reason: str
    node: Node | None = None
    confirmed_by: int | None = None  # the accepted parent that vouches for a frontier node

    @property
    def chunk_state(self) -> str:
        if self.domain == FRONTIER:
            return "frontier chunk (header rewritten by the current allocator)"
        return "allocated" if self.chunk_allocated else "free"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "addr": self.addr,
            "physical_addr": self.physical_addr,
            "domain": self.domain,
            "chunk": self.chunk_state,
            "accepted": self.accepted,
            "reason": self.reason,
        }
        if self.node is not None:
            out.update(
                type=self.node.type, num_entries=self.node.num_entries, overflows=list(self.node.overflows)
            )
        if self.confirmed_by is not None:
            out["confirmed_by_parent"] = self.confirmed_by
        return out


@dataclass
class MapScan:
    """Result of scanning one map's memory for nodes its root does not reach."""

    memory_id: int | str
    frontier: int
    full: bool  # False: only the frontier chunk and beyond were scanned (the fast orphan scan)
    accepted: list[NodeVerdict] = field(default_factory=list)
    rejected: list[NodeVerdict] = field(default_factory=list)
    rejected_count: int = 0
    order_check: bool = True

    @property
    def entry_count(self) -> int:
        return sum(v.node.num_entries for v in self.accepted if v.node is not None)

    def rejected_reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.rejected:
            out[v.reason] = out.get(v.reason, 0) + 1
        return out


def extended_memory(mem: Memory) -> Memory:
    """The memory including the slack of its last bucket (up to the end of the file).

    A memory's declared size ends at its last grown page, but its buckets continue; a map re-created
    over old data can leave old nodes there, past the new size. Reads stay inside the memory's own
    buckets, so nothing of another memory is read.
    """
    if isinstance(mem, VirtualMemory):
        bs = mem.bucket_size_bytes
        start0 = mem.base + BUCKETS_START  # a RestrictedMemory manager's buckets start after its base
        buckets = [b for b in mem.buckets if start0 + (b + 1) * bs <= mem.phys.size]
        if len(buckets) < len(mem.buckets):
            # A truncated snapshot: keep the buckets up to the first missing one, so virtual order holds.
            buckets = mem.buckets[: next(i for i, b in enumerate(mem.buckets) if b not in buckets)]
        size = max(mem.size, len(buckets) * bs) if len(buckets) == len(mem.buckets) else len(buckets) * bs
        return VirtualMemory(mem.phys, mem.memory_id, buckets, bs, size, label=mem.label, base=mem.base)
    return mem


def key_size_option(structure: Structure) -> int | Literal["auto"]:
    """The key layout the user chose for this structure (schema / --key-size), else "auto"."""
    value = structure.settings.get("key_size", "auto")
    return value if isinstance(value, int) and value > 0 else "auto"


def scan_map_of(structure: BTreeMapStructure) -> BTreeMap:
    """A walker over the structure's memory extended to its bucket slack (see ``extended_memory``)."""
    bmap = BTreeMap(
        extended_memory(structure.mem),
        memory_id=structure.map.memory_id,
        key_fixed_size=key_size_option(structure),
    )
    if bmap.allocator_ok and structure.map.allocator_ok and bmap.chunk_size == structure.map.chunk_size:
        # Walk a long free list once for both walkers: over the same memory it is the same walk, and a
        # sound list of the structure's own memory is the same list in the extended one (every hop
        # lies inside the smaller memory).
        state = structure.map._free_list()
        if bmap.mem is structure.mem or (not state[1] and state[2] >= 0):
            bmap._free_list_state = state
    return bmap


def _virtual_data_ranges(mem: Memory, fd: int | None) -> list[Range] | None:
    """Virtual ranges of ``mem`` that hold data in a sparse file (None: treat everything as data)."""
    phys = mem.phys if isinstance(mem, VirtualMemory) else mem
    if fd is None or not isinstance(phys, PhysicalMemory):
        return None
    ranges = data_ranges(fd, phys.size)
    if isinstance(mem, VirtualMemory):
        out: list[Range] = []
        bs = mem.bucket_size_bytes
        for k, b in enumerate(mem.buckets):
            start = mem.base + BUCKETS_START + b * bs
            i = bisect.bisect_right(ranges, (start, float("inf"))) - 1
            i = max(i, 0)
            while i < len(ranges) and ranges[i][0] < start + bs:
                lo, hi = max(ranges[i][0], start), min(ranges[i][1], start + bs)
                if hi > lo:
                    out.append((k * bs + lo - start, k * bs + hi - start))
                i += 1
        return out
    return ranges


def _chunk_headers(bmap: BTreeMap, first: int, fd: int | None) -> Iterator[tuple[int, bool, bool, bool]]:
    """(chunk addr, CHK v1, allocated, payload starts with BTN) for grid positions from ``first``,
    skipping positions whose bytes lie in holes of a sparse snapshot (they read as zeros: no chunk)."""
    mem = bmap.mem
    cs = bmap.chunk_size
    size = mem.size
    data_known = _virtual_data_ranges(mem, fd)
    addr = first
    ri = 0
    while addr + CHUNK_HEADER_SIZE <= size:
        if data_known is not None:
            while ri < len(data_known) and data_known[ri][1] <= addr:
                ri += 1
            if ri >= len(data_known):
                return
            lo = data_known[ri][0]
            if addr + CHUNK_HEADER_SIZE + 3 <= lo:
                # Jump to the first grid position whose header could reach into the data range.
                skip = (lo - CHUNK_HEADER_SIZE - 3 - addr) // cs
                addr += max(1, skip) * cs
                continue
        buf, phys, avail = mem.contiguous(addr)
        if avail >= CHUNK_HEADER_SIZE + 3:
            raw = buf[phys : phys + CHUNK_HEADER_SIZE + 3]
        else:
            try:
                raw = mem.read(addr, min(CHUNK_HEADER_SIZE + 3, size - addr))
            except OutOfBounds:
                return
        if len(raw) >= CHUNK_HEADER_SIZE and not any(raw):
            # An all-zero slot: the memory is probably fresh from here on (new pages read as zero).
            # Skip whole zero blocks at memory-compare speed instead of slot by slot.
            if avail >= ZERO_SKIP_BLOCK and is_zero(buf[phys : phys + ZERO_SKIP_BLOCK]):
                addr += max(1, (ZERO_SKIP_BLOCK - CHUNK_HEADER_SIZE - 3) // cs) * cs
                continue
        if len(raw) >= CHUNK_HEADER_SIZE:
            magic, version, allocated, _pad, _next = CHUNK_HEADER.unpack_from(raw, 0)
            yield (
                addr,
                magic == CHUNK_MAGIC and version == 1,
                allocated == 1,
                bytes(raw[CHUNK_HEADER_SIZE : CHUNK_HEADER_SIZE + 3]) == NODE_MAGIC,
            )
        addr += cs


def _parse(bmap: BTreeMap, payload: int, allocated: bool) -> Node:
    if allocated:
        return bmap.node(payload)
    # A node in a chunk whose header says free: only the frontier chunk gets here (its header was
    # rewritten by the current allocator). The walker parses such nodes only on explicit request.
    parse_free = getattr(bmap, "_unreachable_node", None)
    if parse_free is None:
        raise NodeError("cannot parse a node in a free chunk", addr=payload)
    node: Node = parse_free(payload, False)
    return node


def _keys_in_bounds(node: Node, parent: Node, index: int) -> bool:
    keys = node.keys
    lo = parent.keys[index - 1] if index > 0 else None
    hi = parent.keys[index] if index < len(parent.keys) else None
    return (lo is None or lo < keys[0]) and (hi is None or keys[-1] < hi)


def reachable_chunks(bmap: BTreeMap) -> ChunkSet:
    """Payload addresses of every node and overflow page reachable from the root (one byte per chunk)."""
    out = bmap.empty_chunk_set()
    for n, (_depth, node) in enumerate(bmap.iter_nodes(), 1):
        out.add(node.addr)
        for o in node.overflows:
            out.add(o)
        if not n & 4095:
            note("walking the live tree: nodes", n)
    return out


def scan_unreachable(
    bmap: BTreeMap, *, full: bool, fd: int | None = None, order_check: bool = True
) -> MapScan:
    """Find the valid nodes the root does not reach (see the module docstring for the rules).

    ``full`` scans every chunk of the memory (salvage; also finds live nodes that lost their parent
    below the frontier). Otherwise only the frontier chunk and beyond are scanned and the live tree is
    not walked: that is where a re-created map leaves its predecessor, and it costs no more than the
    slack after the frontier, so ``summary`` and ``check`` stay fast on huge maps.
    """
    scan = MapScan(bmap.memory_id if bmap.memory_id is not None else "?", -1, full, order_check=order_check)
    if not bmap.walkable or not bmap.allocator_ok:
        return scan
    frontier = bmap.frontier
    scan.frontier = frontier
    reached = reachable_chunks(bmap) if full else bmap.empty_chunk_set()
    first = FIRST_CHUNK_OFFSET if full or frontier < 0 else frontier
    pending: dict[int, NodeVerdict] = {}
    accepted: dict[int, NodeVerdict] = {}

    def reject(v: NodeVerdict, reason: str) -> None:
        v.accepted, v.reason = False, reason
        scan.rejected_count += 1
        if len(scan.rejected) < MAX_REJECTED_LISTED:
            scan.rejected.append(v)

    for i, (addr, chk_ok, allocated, is_btn) in enumerate(_chunk_headers(bmap, first, fd)):
        if not i & 16383:
            note("scanning chunk headers", i)
        payload = addr + CHUNK_HEADER_SIZE
        if not is_btn or payload in reached:
            continue
        if frontier < 0:
            domain = BEYOND  # no usable frontier: every header is judged on its own
        else:
            domain = BELOW if addr < frontier else FRONTIER if addr == frontier else BEYOND
        try:
            phys: int | None = bmap.mem.to_physical(payload)
        except OutOfBounds:
            phys = None
        v = NodeVerdict(payload, phys, domain, allocated, False, "")
        if not chk_ok:
            reject(v, "no valid chunk header")
            continue
        if domain != FRONTIER and not allocated:
            reject(v, "stale: its chunk header says free (a freed node)")
            continue
        try:
            node = _parse(bmap, payload, allocated)
        except NodeError as exc:
            reject(v, f"torn: {exc}")
            continue
        v.node = node
        if any(o in reached for o in node.overflows):
            reject(v, "torn: an overflow page is part of the live tree")
            continue
        if (
            domain != BELOW
            and frontier >= 0
            and any(o - CHUNK_HEADER_SIZE < frontier for o in node.overflows)
        ):
            reject(v, "torn: an overflow page lies below the frontier, in chunks the current map re-used")
            continue
        keys = node.keys
        if order_check and any(not a < b for a, b in zip(keys, keys[1:], strict=False)):
            reject(v, "torn: keys are not in order")
            continue
        if node.version == 1 and any(e.slot_overflow for e in node.entries):
            reject(v, "an entry is longer than its v1 slot (its bytes overlap the next entries)")
            continue
        if domain == FRONTIER:
            v.reason = "frontier chunk: waiting for a parent"
            pending[payload] = v
        else:
            v.accepted = True
            v.reason = "allocated, valid, unreachable from the root"
            accepted[payload] = v

    note("")  # the scan is over: the progress line must not go on naming it
    _confirm_frontier_nodes(pending, accepted, order_check, reject)
    for v in pending.values():
        reject(v, "frontier chunk: its header was rewritten and no surviving parent or children vouch for it")
    scan.accepted = sorted(accepted.values(), key=lambda v: v.addr)
    return scan


def _confirm_frontier_nodes(
    pending: dict[int, NodeVerdict],
    accepted: dict[int, NodeVerdict],
    order_check: bool,
    reject: Callable[[NodeVerdict, str], None],
) -> None:
    """Accept frontier nodes that the surviving tree vouches for; reject those it contradicts.

    Upward: an accepted internal node names it as a child, and its keys lie between that parent's
    separators (the parent was live, so its pointer is current). Downward, for the old root (which no
    parent names): it is internal, every child is an accepted node that no other accepted node claims,
    each child fits its separators, and none of its keys occurs in an accepted node. A freed internal
    node (e.g. a root emptied by a merge) fails the last two tests: its child is claimed or its
    separator lives on in the merged child. Bounded: each pass accepts at least one node or stops.
    """
    for _ in range(len(pending)):
        if not pending:
            return
        parents: dict[int, tuple[NodeVerdict, int]] = {}
        for pv in accepted.values():
            if pv.node is not None and pv.node.children:
                for i, child in enumerate(pv.node.children):
                    parents.setdefault(child, (pv, i))
        progressed = False
        for payload in list(pending):
            v = pending[payload]
            assert v.node is not None
            hit = parents.get(payload)
            if hit is not None:
                pv, index = hit
                assert pv.node is not None
                del pending[payload]
                if order_check and not _keys_in_bounds(v.node, pv.node, index):
                    reject(v, "torn: its keys do not fit between its parent's separators")
                    continue
                v.accepted, v.confirmed_by = True, pv.addr
                v.reason = f"frontier chunk, confirmed by its parent node {pv.addr:#x}"
                accepted[payload] = v
                progressed = True
                continue
            node = v.node
            if not node.children or any(c not in accepted or c in parents for c in node.children):
                continue
            keys = set(node.keys)
            if any(keys.intersection(a.node.keys) for a in accepted.values() if a.node is not None):
                continue
            kids = [accepted[c].node for c in node.children]
            if order_check and not all(
                k is not None and _keys_in_bounds(k, node, i) for i, k in enumerate(kids)
            ):
                continue
            del pending[payload]
            v.accepted = True
            v.reason = f"frontier chunk, confirmed by its {len(kids)} surviving children (the old root)"
            accepted[payload] = v
            progressed = True
        if not progressed:
            return


def order_is_bytewise(bmap: BTreeMap) -> bool:
    """False when the live tree itself has keys out of byte order (floats, Reverse<T>, custom Ord):
    then key order cannot tell torn nodes apart. Runs (or reuses) the validated walk."""
    return not any(f.code == "btree_key_order" for f in bmap.walk().findings)


# --- salvage of one map -------------------------------------------------------------------------------------


@dataclass
class SalvagedEntry:
    key: bytes
    value: bytes
    node_addr: int
    node_physical_addr: int | None
    index_in_node: int
    reachability: str  # "reachable" (from the root) | "unreachable" (found by the chunk scan)
    chunk: str
    key_ranges: list[Range] = field(default_factory=list)  # physical
    value_ranges: list[Range] = field(default_factory=list)
    confirmed_by: int | None = None
    duplicate_key: bool = False
    reference: str | None = None  # "identical" | "different" | "absent" (with --reference)


@dataclass
class SalvageResult:
    memory_id: int | str
    label: str
    layout: str  # "live": the manager the library will load; "reconstructed": rebuilt by forensics
    structure: Structure  # the live map; for a headless memory, what its first bytes now read as
    entries: list[SalvagedEntry]
    scan: MapScan
    notes: list[str] = field(default_factory=list)
    reference_summary: dict[str, Any] | None = None

    @property
    def reachable_count(self) -> int:
        return sum(1 for e in self.entries if e.reachability == "reachable")

    def recovered(self) -> list[SalvagedEntry]:
        """The entries worth saving: everything the library will not give back by itself.

        With a live MemoryManager the entries reachable from the root are the current map, readable
        with ``entries``; they are left out. With a reconstructed layout the library sees nothing at
        all (its next init starts a fresh manager), so the reachable entries are recovered too.
        """
        if self.layout == "live":
            return [e for e in self.entries if e.reachability != "reachable"]
        return list(self.entries)

    def to_json(self) -> dict[str, Any]:
        rec = self.recovered()
        out: dict[str, Any] = {
            "memory_id": self.memory_id,
            "layout": self.layout,
            "recovered_entries": len(rec),
            "reachable_entries": self.reachable_count,
            "unreachable_entries": sum(1 for e in self.entries if e.reachability == "unreachable"),
            "frontier": self.scan.frontier,
            "accepted_nodes": [v.to_json() for v in self.scan.accepted],
            "rejected_nodes": self.scan.rejected_count,
            "rejected_reasons": self.scan.rejected_reasons(),
            "notes": list(self.notes),
        }
        if self.reference_summary is not None:
            out["reference"] = self.reference_summary
        return out


def _entries_of_node(bmap: BTreeMap, v: NodeVerdict) -> Iterator[SalvagedEntry]:
    node = v.node
    assert node is not None
    for i, ne in enumerate(node.entries):
        yield SalvagedEntry(
            bytes(ne.key),
            bytes(ne.value),
            node.addr,
            node.physical_addr,
            i,
            "unreachable",
            v.chunk_state,
            bmap.physical_ranges(list(ne.key_ranges)),
            bmap.physical_ranges(list(ne.value_ranges)),
            v.confirmed_by,
        )


def add_node_entries(bmap: BTreeMap, accepted: list[NodeVerdict], entries: list[SalvagedEntry]) -> None:
    """Append the entries of the accepted unreachable nodes to ``entries``.

    Two surviving copies of one key (already in ``entries`` or in two nodes): neither is dropped (that
    would be a guess); both are marked ``duplicate_key`` so the user can see them side by side.
    """
    seen: dict[bytes, SalvagedEntry] = {e.key: e for e in entries}
    for v in accepted:
        for e in _entries_of_node(bmap, v):
            other = seen.get(e.key)
            if other is not None:
                e.duplicate_key = other.duplicate_key = True
            else:
                seen[e.key] = e
            entries.append(e)


def salvage_structure(
    structure: BTreeMapStructure, *, layout: str, label: str, fd: int | None = None, mem: Memory | None = None
) -> SalvageResult:
    """Every entry of a map: reachable ones from the root, then the valid unreachable nodes' ones.
    ``mem``: the memory to scan instead of the structure's own (extended by older buckets)."""
    bmap = (
        scan_map_of(structure)
        if mem is None
        else BTreeMap(mem, memory_id=structure.memory_id, key_fixed_size=key_size_option(structure))
    )
    entries: list[SalvagedEntry] = []
    notes: list[str] = []
    by_node: dict[int, Node] = {}
    for n, entry in enumerate(bmap.iter_entries(), 1):
        if not n & 65535:
            note("reading the reachable entries", n, bmap.length or None)
        node = by_node.get(entry.node_addr)
        if node is None:
            try:
                node = bmap.node(entry.node_addr)
            except NodeError:
                continue
            by_node = {entry.node_addr: node}  # entries come node by node: keep one
        ne = node.entries[entry.index_in_node]
        entries.append(
            SalvagedEntry(
                bytes(entry.key),
                bytes(entry.value),
                entry.node_addr,
                node.physical_addr,
                entry.index_in_node,
                "reachable",
                "allocated",
                bmap.physical_ranges(list(ne.key_ranges)),
                bmap.physical_ranges(list(ne.value_ranges)),
            )
        )
    scan = scan_unreachable(bmap, full=True, fd=fd, order_check=order_is_bytewise(bmap))
    if not scan.order_check:
        notes.append("the live tree's keys are not in byte order, so key order was not used to reject nodes")
    add_node_entries(bmap, scan.accepted, entries)
    if not bmap.walkable or not bmap.allocator_ok:
        notes.append("the map's header or allocator is unusable: no node grid to scan")
    return SalvageResult(structure.memory_id, label, layout, structure, entries, scan, notes)


def compare_with_reference(result: SalvageResult, reference: dict[bytes, bytes], label: str) -> None:
    """Mark each recovered entry against an earlier snapshot's map (matched by key, values compared)."""
    rec = result.recovered()
    identical = different = absent = 0
    for e in rec:
        old = reference.get(e.key)
        if old is None:
            e.reference, absent = "absent", absent + 1
        elif old == e.value:
            e.reference, identical = "identical", identical + 1
        else:
            e.reference, different = "different", different + 1
    recovered_keys = {e.key for e in rec}
    live_keys = {e.key for e in result.entries if e.reachability == "reachable"}
    missing = [k for k in reference if k not in recovered_keys]
    result.reference_summary = {
        "reference": label,
        "reference_entries": len(reference),
        "identical": identical,
        "different": different,
        "not_in_reference": absent,
        "reference_entries_not_recovered": len(missing),
        "reference_entries_not_recovered_but_live": sum(1 for k in missing if k in live_keys),
        "not_recovered_keys_hex": [k.hex() for k in missing[:1000]],
    }
