"""The one answer to "what is at physical offset X": the region tree, resolved lazily, down to the byte.

Two halves over the same region tree (``inspector.model``):

* ``resolve(pos)`` descends from the root to the innermost region at ``pos`` (node, entry, key bytes,
  value bytes, overflow page, allocator chunk), building only the children on the way. It descends by
  ranges, and where a container has no ranges of its own (a structure's entries, a B-tree's node tree) it
  asks the structure's geometry instead: a B-tree chunk is found by arithmetic on the chunk grid and its
  node by a key-guided descent from the root, a vec element by its slot. A map with a million entries
  costs one root-to-leaf path, never a page of a thousand entries it does not need.
* ``at(pos)`` / ``overlapping(a, b)`` answer from the regions already *registered* (loaded in a view or
  resolved): the hex view colours its bytes from these, so colouring never builds anything.
* ``locate(pos)`` / ``detail(a, b, where)`` answer from the layout's geometry alone
  (``inspector.offset_geometry``: a few reads, no region built): the diff's attribution and its JSON,
  the memory map's caption. ``region_path(pos)`` is ``resolve`` by name, for the same byte in the tree.

"Innermost" = the region with the fewest bytes in total; ties go to the deeper one. That matches
nested layouts (memory ⊃ structure ⊃ node ⊃ entry ⊃ key) without relying on children lying physically
inside their parents, which B-tree entries with overflow pages do not.

No Textual here: the TUI's tree, hex view, go-to, memory map and diff views all call this module.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inspector.errors import READ_ERRORS
from inspector.layouts import (
    BUCKET_TABLE_OFFSET,
    BUCKETS_START,
    CHUNK_HEADER_SIZE,
    FIRST_CHUNK_OFFSET,
    MM_HEADER_PAGE_USED,
    MM_HEADER_SIZE,
    VEC_DATA_OFFSET,
)
from inspector.model import Region
from inspector.offset_geometry import LayoutGeometry, MemoryId
from inspector.structures.vec import BaseVec

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.memory import Memory
    from inspector.structures.base import Structure
    from inspector.structures.btreemap import BTreeMap

Segment = tuple[int, int, Region]

# Kinds never offered as "the region at X": they describe bytes, they are not a layout.
NOT_LAYOUT_KINDS = frozenset({"finding", "findings", "diagnosis"})
# Structure kinds: their own ranges cover only their header, their entries are found by geometry.
STRUCTURE_KINDS = frozenset({"btreemap", "cell", "vec", "minheap", "log", "raw", "unknown", "empty"})
# Containers without ranges whose children are cheap and carry ranges: always worth a look.
OPEN_CONTAINERS = frozenset({"memories", "unreachable"})
# A structure's entries are scanned one by one only up to this many (beyond, geometry or nothing).
LINEAR_SCAN_LIMIT = 2_000
# Reverse lookups (the node holding an overflow page) walk at most this many nodes.
NODE_WALK_LIMIT = 200_000
MAX_DEPTH = 64
ENTRIES_PAGE = 1_000  # must match inspector.regions.ENTRIES_PAGE (the tree's page size)


@dataclass(frozen=True)
class Location:
    """What the layout says is at a physical byte, without building a region (``OffsetIndex.locate``).

    ``area`` names the kind of thing without addresses ("memory 4 · BTreeMap node"), so bytes can be
    totalled per area; ``what`` is the full description ("memory 4 · BTreeMap node at virtual 0x2f14");
    ``end`` is where the part that holds the byte ends (physical, exclusive).
    """

    end: int
    area: str
    what: str
    memory_id: MemoryId = None
    virtual: int | None = None


def region_size(region: Region) -> int:
    return sum(max(0, e - s) for s, e in region.ranges)


class OffsetIndex:
    """Lazy resolution over a region tree plus an index of the regions registered so far."""

    def __init__(
        self,
        root: Region | None = None,
        analysis: Analysis | None = None,
        *,
        name: str = "",
        build: Callable[[], Region] | None = None,
    ) -> None:
        self.root = root
        self._build = build  # builds the region tree on the first resolve() (the diff rarely needs it)
        self.analysis = analysis
        self.name = name  # "the old" / "the new" in a diff's "past the end of … snapshot"
        self._geometry: LayoutGeometry | None = None
        self._items: dict[int, tuple[Region, int]] = {}
        self._parents: dict[int, Region | None] = {}
        self._lineage: dict[int, str] = {}
        self._segments: list[Segment] = []
        self._starts: list[int] = []
        self._dirty = False
        self._btree_parents: dict[int, dict[int, int]] = {}  # id(map) -> child addr -> parent addr
        self._overflow_owner: dict[int, dict[int, int]] = {}  # id(map) -> overflow payload -> node addr
        self._claimed: set[int] = set()  # regions placed by geometry during the current resolve()
        self.generation = 0  # bumped on every change, so views can drop cached renderings

    def set_tree(self, root: Region, analysis: Analysis | None) -> None:
        self.clear()
        self.root, self.analysis = root, analysis
        self._geometry = None

    # ------------------------------------------------------------------ by geometry (builds nothing)

    @property
    def geometry(self) -> LayoutGeometry:
        if self._geometry is None:
            assert self.analysis is not None, "the geometry is read from an analysis"
            self._geometry = LayoutGeometry(self.analysis, name=self.name)
        return self._geometry

    def locate(self, pos: int) -> Location:
        """What holds physical byte ``pos``, from the layout's geometry alone (a few reads, no regions):
        the diff's attribution, its JSON and the memory map's caption ask this."""
        return Location(*self.geometry.locate(pos))

    def detail(self, start: int, end: int, where: Location) -> str:
        """The detailed label of ``[start, end)``, which lies in the part ``where`` (from ``locate(start)``):
        header fields, node address and the entries' keys, element numbers."""
        return self.geometry.detail(start, end, where.memory_id, where.virtual, where.what)

    def region_path(self, pos: int) -> list[str]:
        """Names of the regions from the root down to the innermost one at ``pos`` (``resolve``), as the
        tree shows them; empty without a region tree."""
        return [r.name for r in self.resolve(pos)]

    # ------------------------------------------------------------------ registered regions

    def __len__(self) -> int:
        return len(self._parents)

    def __contains__(self, region: Region) -> bool:
        return id(region) in self._parents

    def _is_layout(self, region: Region) -> bool:
        if region.kind in NOT_LAYOUT_KINDS or not region.ranges:
            return False
        rebuilt = self.analysis is not None and self.analysis.mm.reconstructed
        # A rebuilt MemoryManager has no real header bytes: page 0 holds whatever overwrote it (a
        # stable_save message, garbage), and that is what the bytes should be called.
        return not (rebuilt and region.kind in ("mm_header", "bucket_table"))

    def add(self, region: Region, parent: Region | None, depth: int, *, layout: bool = True) -> None:
        """Register a loaded region (every region gets a parent link; only layout regions get bytes)."""
        if id(region) in self._parents and self._parents[id(region)] is parent:
            return
        self._parents[id(region)] = parent
        lineage = LINEAGE_ROLES.get(region.kind) or (
            self._lineage.get(id(parent)) if parent is not None else None
        )
        if lineage is not None:
            self._lineage[id(region)] = lineage
        if not layout or not self._is_layout(region):
            return
        self._items[id(region)] = (region, depth)
        self._dirty = True
        self.generation += 1

    def remove_subtree(self, region: Region) -> None:
        """Forget a region and every registered descendant (after a subtree is rebuilt)."""
        stack = [region]
        while stack:
            r = stack.pop()
            self._parents.pop(id(r), None)
            self._lineage.pop(id(r), None)
            if self._items.pop(id(r), None) is not None:
                self._dirty = True
            if r.children_loaded:
                stack.extend(r.children())
        self.generation += 1

    def clear(self) -> None:
        self._items.clear()
        self._parents.clear()
        self._lineage.clear()
        self._btree_parents.clear()
        self._overflow_owner.clear()
        self._segments, self._starts = [], []
        self._dirty = False
        self.generation += 1

    def lineage(self, region: Region) -> str | None:
        """ "stable-save" / "stale" when the region lies under a stable_save message or stale data."""
        return self._lineage.get(id(region))

    def parent(self, region: Region) -> Region | None:
        return self._parents.get(id(region))

    def path(self, region: Region) -> list[Region]:
        """Root-first chain of registered ancestors ending with ``region`` (just [region] if unknown)."""
        out = [region]
        seen = {id(region)}
        p = self._parents.get(id(region))
        while p is not None and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
            p = self._parents.get(id(p))
        out.reverse()
        return out

    def depth_of(self, region: Region) -> int:
        return len(self.path(region)) - 1

    def _rebuild(self) -> None:
        intervals: list[tuple[int, int, tuple[int, int, int], Region]] = []
        for seq, (region, depth) in enumerate(self._items.values()):
            rank = (region_size(region), -depth, -seq)
            for s, e in region.ranges:
                if e > s:
                    intervals.append((s, e, rank, region))
        intervals.sort(key=lambda t: t[0])
        points = sorted({p for s, e, _, _ in intervals for p in (s, e)})
        heap: list[tuple[tuple[int, int, int], int, int, Region]] = []
        segments: list[Segment] = []
        i = 0
        n = len(intervals)
        for k in range(len(points) - 1):
            p = points[k]
            while i < n and intervals[i][0] <= p:
                s, e, rank, region = intervals[i]
                heapq.heappush(heap, (rank, e, i, region))
                i += 1
            # Lazy deletion: only the top has to be live, expired entries below it surface later.
            while heap and heap[0][1] <= p:
                heapq.heappop(heap)
            if not heap:
                continue
            best = heap[0][3]
            q = points[k + 1]
            if segments and segments[-1][2] is best and segments[-1][1] == p:
                segments[-1] = (segments[-1][0], q, best)
            else:
                segments.append((p, q, best))
        self._segments = segments
        self._starts = [s for s, _, _ in segments]
        self._dirty = False

    def _ensure(self) -> None:
        if self._dirty:
            self._rebuild()

    def at(self, pos: int) -> Region | None:
        """The innermost *registered* region covering physical byte ``pos`` (builds nothing)."""
        self._ensure()
        i = bisect_right(self._starts, pos) - 1
        if i >= 0:
            s, e, region = self._segments[i]
            if s <= pos < e:
                return region
        return None

    def overlapping(self, start: int, end: int) -> list[Segment]:
        """Registered segments (clipped to [start, end)) that overlap the given physical range."""
        self._ensure()
        out: list[Segment] = []
        i = max(0, bisect_right(self._starts, start) - 1)
        while i < len(self._segments):
            s, e, region = self._segments[i]
            if s >= end:
                break
            if e > start:
                out.append((max(s, start), min(e, end), region))
            i += 1
        return out

    def regions(self) -> list[Region]:
        return [r for r, _ in self._items.values()]

    # ------------------------------------------------------------------ lazy resolution

    def resolve(self, pos: int) -> list[Region]:
        """Root-first path to the innermost region at physical ``pos``, building what it needs.

        Every region on the path is registered, so ``at(pos)`` answers the same afterwards. Returns
        ``[root]`` when nothing more specific covers the byte, ``[]`` without a tree.
        """
        if self.root is None and self._build is not None:
            self.root = self._build()
        if self.root is None:
            return []
        self._claimed = set()
        best = self._explore(self.root, pos, 0)
        path = [self.root, *best]
        known = self.at(pos)
        if known is not None and region_size(known) <= region_size(path[-1]) and known is not path[-1]:
            # The same bytes are already open elsewhere (an entry under its page rather than under its
            # node): stay where the user is.
            known_path = self.path(known)
            if known_path[0] is self.root:
                return known_path
        for depth, region in enumerate(path):
            self.add(region, path[depth - 1] if depth else None, depth)
        return path

    def _explore(self, region: Region, pos: int, depth: int) -> list[Region]:
        """The best path below ``region`` (not including it) to a region containing ``pos``."""
        if depth >= MAX_DEPTH:
            return []
        guided = self._guided(region, pos, depth)
        if guided is not None:
            if guided:
                # Geometry vouches for the last region even where its own ranges stop short (a
                # node's chunk header belongs to the node's chunk).
                self._claimed.add(id(guided[-1]))
            return guided
        best: list[Region] = []
        best_key: tuple[int, int] | None = None
        for child in self._candidates(region, pos):
            sub = self._explore(child, pos, depth + 1)
            path = [child, *sub]
            leaf = next((r for r in reversed(path) if self._holds(r, pos)), None)
            if leaf is None:
                continue
            key = (region_size(leaf), -len(path))
            if best_key is None or key < best_key:
                best, best_key = path[: path.index(leaf) + 1], key
        return best

    def _holds(self, region: Region, pos: int) -> bool:
        return self._is_layout(region) and (region.contains(pos) or id(region) in self._claimed)

    def _children(self, region: Region) -> list[Region]:
        try:
            return region.children()
        except READ_ERRORS:  # a region too broken to expand: nothing more specific to say here
            return []

    def _candidates(self, region: Region, pos: int) -> Iterator[Region]:
        """Children worth descending into for ``pos``: by ranges, or by what the container holds."""
        if region.kind in NOT_LAYOUT_KINDS:
            return
        if region.kind == "entries" and not region.children_loaded:
            count = region.child_count_hint or 0
            if count > LINEAR_SCAN_LIMIT:
                return  # a big sequence without geometry: pages are not scanned blindly
        if region.kind == "group" and not region.children_loaded and region.name != "nodes":
            return  # an unopened page of entries: reached by geometry, not by scanning
        for child in self._children(region):
            if child.kind in NOT_LAYOUT_KINDS:
                continue
            if child.contains(pos):
                yield child
            elif not child.ranges and child.kind in OPEN_CONTAINERS:
                yield child
            elif child.kind in STRUCTURE_KINDS and self._structure_holds(child, pos):
                yield child
            elif child.kind in ("entries", "group") and not child.ranges and region.kind in STRUCTURE_KINDS:
                yield child
            elif child.kind == "entries" and region.kind == "group":  # nested pages
                yield child

    def _structure_holds(self, region: Region, pos: int) -> bool:
        structure = self._structure(region)
        return structure is not None and _virtual(structure.mem, pos) is not None

    def _structure(self, region: Region) -> Structure | None:
        if self.analysis is None or region.memory_id is None:
            return None
        return self.analysis.structure(region.memory_id)  # a lookup by id: never reads bytes

    # ------------------------------------------------------------------ geometry-guided descent

    def _guided(self, region: Region, pos: int, depth: int) -> list[Region] | None:
        """A descent that uses the structure's geometry (None: fall back to ranges)."""
        if region.kind == "btreemap":
            return self._btree(region, pos, depth)
        if region.kind in ("vec", "minheap"):
            return self._vec(region, pos)
        return None

    def _vec(self, region: Region, pos: int) -> list[Region] | None:
        structure = self._structure(region)
        if not isinstance(structure, BaseVec) or not structure.slot_size:
            return None
        v = _virtual(structure.mem, pos)
        if v is None or v < VEC_DATA_OFFSET:
            return None  # the header: found by its ranges
        index = (v - VEC_DATA_OFFSET) // structure.slot_size
        if index >= structure.count():
            return None
        entries = next((c for c in self._children(region) if c.kind == "entries"), None)
        if entries is None:
            return None
        return self._entry_path(entries, index, pos)

    def _entry_path(self, entries: Region, index: int, pos: int) -> list[Region] | None:
        kids = self._children(entries)
        head = [entries]
        if kids and kids[0].kind == "group" and kids[0].child_count_hint:
            # A very long sequence: groups of pages, each but the last holding the same number of entries.
            span = kids[0].child_count_hint
            if index // span >= len(kids):
                return None
            group = kids[index // span]
            head.append(group)
            index -= index // span * span
            kids = self._children(group)
        if kids and kids[0].kind == "group":
            page = kids[index // ENTRIES_PAGE] if index // ENTRIES_PAGE < len(kids) else None
            if page is None:
                return None
            items = self._children(page)
            entry = items[index % ENTRIES_PAGE] if index % ENTRIES_PAGE < len(items) else None
            head.append(page)
        else:
            entry = kids[index] if index < len(kids) else None
        if entry is None:
            return None
        return [*head, entry, *self._inside(entry, pos)]

    def _inside(self, region: Region, pos: int) -> list[Region]:
        """The smallest child of an already found region that holds ``pos`` (key or value bytes)."""
        best: Region | None = None
        for child in self._children(region):
            if child.contains(pos) and (best is None or region_size(child) < region_size(best)):
                best = child
        return [best, *self._inside(best, pos)] if best is not None else []

    def _btree(self, region: Region, pos: int, depth: int) -> list[Region] | None:
        structure = self._structure(region)
        bmap = structure.walker() if structure is not None else None
        if bmap is None or not bmap.chunk_size:
            return None
        v = _virtual(bmap.mem, pos)
        if v is None or v < FIRST_CHUNK_OFFSET:
            return None  # BTR header, allocator header: found by their ranges
        kids = self._children(region)
        chunk = FIRST_CHUNK_OFFSET + (v - FIRST_CHUNK_OFFSET) // bmap.chunk_size * bmap.chunk_size
        payload = chunk + CHUNK_HEADER_SIZE
        try:
            kind = bmap._payload_kind(payload)
        except READ_ERRORS:
            kind = "none"
        node_addr: int | None = None
        if kind == "BTN":
            node_addr = payload
        elif kind == "NOF":
            node_addr = self._overflow_owner_of(bmap, payload)
        if node_addr is None:
            # A free chunk (listed under the allocator), stale bytes or nothing: ranges decide.
            allocator = next((c for c in kids if c.kind == "allocator"), None)
            if allocator is not None:
                inner = self._inside(allocator, pos)
                if inner:
                    return [allocator, *inner]
            return None
        chain = self._node_chain(bmap, node_addr)
        if not chain:
            return None
        nodes = next((c for c in kids if c.kind == "group" and c.name == "nodes"), None)
        if nodes is None:
            return None
        path: list[Region] = [nodes]
        current = nodes
        for addr in chain:
            nxt = next(
                (c for c in self._children(current) if c.kind == "node" and c.virtual_start == addr), None
            )
            if nxt is None:
                break
            path.append(nxt)
            current = nxt
        if current is nodes:
            return None
        return path + self._inside(current, pos)

    def _node_chain(self, bmap: BTreeMap, target: int) -> list[int]:
        """Node addresses from the root down to ``target`` (empty when it is not reachable)."""
        root = bmap.root_addr
        if not root:
            return []
        if target == root:
            return [root]
        try:
            key = bmap.node(target).entries[0].key
        except READ_ERRORS:
            key = None
        if key is not None:
            # Descend by key (byte order, like the walker): right for the usual key types, and checked.
            chain, addr = [root], root
            for _ in range(MAX_DEPTH):
                try:
                    node = bmap.node(addr)
                except READ_ERRORS:
                    break
                if not node.children:
                    break
                if target in node.children:
                    return [*chain, target]
                keys = [e.key for e in node.entries]
                i = bisect_left(keys, key)
                if i >= len(node.children):
                    break
                addr = node.children[i]
                chain.append(addr)
        parents = self._parents_of(bmap)
        if target not in parents:
            return []
        chain = [target]
        while chain[-1] != root and len(chain) < MAX_DEPTH:
            chain.append(parents[chain[-1]])
        chain.reverse()
        return chain if chain[0] == root else []

    def _parents_of(self, bmap: BTreeMap) -> dict[int, int]:
        """child → parent for every reachable node (built once per map, bounded), plus overflow owners."""
        cached = self._btree_parents.get(id(bmap))
        if cached is not None:
            return cached
        parents: dict[int, int] = {}
        owners: dict[int, int] = {}
        stack = [bmap.root_addr]
        seen: set[int] = set()
        while stack and len(seen) < NODE_WALK_LIMIT:
            addr = stack.pop()
            if addr in seen:
                continue
            seen.add(addr)
            try:
                node = bmap.node(addr)
            except READ_ERRORS:
                continue
            for o in node.overflows:
                owners[o] = addr
            for c in node.children:
                parents.setdefault(c, addr)
                stack.append(c)
        self._btree_parents[id(bmap)] = parents
        self._overflow_owner[id(bmap)] = owners
        return parents

    def _overflow_owner_of(self, bmap: BTreeMap, payload: int) -> int | None:
        self._parents_of(bmap)
        return self._overflow_owner.get(id(bmap), {}).get(payload)


# Kinds whose whole subtree takes their colour: a stable_save message's arguments are "value" regions,
# and salvaged nodes under "Unreachable data" hold keys and values, but what matters about those bytes
# is that they are a stable_save message / stale data.
LINEAGE_ROLES = {"stable_save": "stable-save", "unreachable": "stale", "orphan": "stale"}


def _virtual(mem: Memory, pos: int) -> int | None:
    """The virtual offset of physical ``pos`` in ``mem`` (None when the memory does not hold it)."""
    return mem.to_virtual(pos)


# ---------------------------------------------------------------------- addresses of a byte


def owner_at(analysis: Analysis, pos: int) -> tuple[int | None, int | None, int | None]:
    """(bucket, owning memory id, virtual offset in that memory) of a physical byte; Nones where n/a."""
    mm = analysis.mm
    if not mm.present or not mm.bucket_size_bytes:
        return None, None, None
    bucket, owner = mm.owner_of_physical(pos)
    if owner is None:
        return bucket, None, None
    info = mm.memory(owner)
    virtual = info.memory.to_virtual(pos) if info is not None else None
    return bucket, owner, virtual


def address_forms(analysis: Analysis, pos: int) -> list[str]:
    """Every way to write a physical offset: physical, virtual (``m4:0x…``), bucket (``b3:0x…``)."""
    out = [f"{pos:#x}"]
    mm = analysis.mm
    buckets_start = mm.base_offset + BUCKETS_START
    if not mm.present or not mm.bucket_size_bytes or pos < buckets_start:
        return out
    bucket, owner, virtual = owner_at(analysis, pos)
    if owner is not None and virtual is not None:
        out.append(f"m{owner}:{virtual:#x}")
    if bucket is not None:
        out.append(f"b{bucket}:{(pos - buckets_start) % mm.bucket_size_bytes:#x}")
    return out


def describe_position(analysis: Analysis, pos: int) -> str:
    """One plain line about a physical offset: where it is in the MemoryManager's geometry."""
    parts = [f"{pos:#x} ({pos:,})"]
    mm = analysis.mm
    if not mm.present:
        parts.append("raw memory (no MemoryManager)")
        return " · ".join(parts)
    if pos < mm.base_offset:
        parts.append("application region (not managed by ic-stable-structures)")
        return " · ".join(parts)
    rel = pos - mm.base_offset
    if rel < MM_HEADER_SIZE:
        parts.append("MemoryManager header")
    elif rel < MM_HEADER_PAGE_USED:
        parts.append(f"bucket table entry {rel - BUCKET_TABLE_OFFSET}")
    elif rel < BUCKETS_START:
        parts.append("page 0, unused by the MemoryManager")
    else:
        bucket, owner, virtual = owner_at(analysis, pos)
        if bucket is None:
            parts.append("outside the bucket area")
        elif owner is None:
            parts.append(f"bucket {bucket}, unallocated")
        else:
            parts.append(f"bucket {bucket} → memory {owner}")
            if virtual is not None:
                parts.append(f"m{owner}:{virtual:#x}")
            else:
                parts.append("past the memory's size")
    return " · ".join(parts)
