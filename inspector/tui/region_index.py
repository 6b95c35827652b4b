"""Which loaded region is the innermost one at a byte: the hex view's colours and cursor → tree sync.

Only regions the UI has already loaded are indexed (a region is added when its parent's children are
shown), so a map with a million entries costs nothing until its pages are opened. The index is a flat
list of non-overlapping segments, each labelled with the innermost region covering it, rebuilt lazily
(on the next query after a change) with one sweep over the intervals.

"Innermost" = the region with the fewest bytes in total; ties go to the deeper one in the tree. That
matches intuition for nested layouts (memory ⊃ structure ⊃ node ⊃ entry ⊃ key) without relying on
children lying physically inside their parents, which B-tree entries with overflow pages do not.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from typing import Any

from inspector.model import Region
from inspector.tui.palette import NOT_LAYOUT_KINDS, kind_role

# Kinds whose whole subtree takes their colour: a stable_save message's arguments are "value" regions,
# and salvaged nodes under "Unreachable data" hold keys and values, but what matters about those bytes
# is that they are a stable_save message / stale data.
LINEAGE_ROLES = {"stable_save": "stable-save", "unreachable": "stale", "orphan": "stale"}

Segment = tuple[int, int, Region]


class RegionIndex:
    def __init__(self) -> None:
        self._items: dict[int, tuple[Region, int]] = {}
        self._parents: dict[int, Region | None] = {}
        self._lineage: dict[int, str] = {}
        self._segments: list[Segment] = []
        self._starts: list[int] = []
        self._dirty = False
        self.generation = 0  # bumped on every change, so views can drop cached renderings

    def __len__(self) -> int:
        return len(self._parents)

    def __contains__(self, region: Region) -> bool:
        return id(region) in self._parents

    def add(self, region: Region, parent: Region | None, depth: int, *, layout: bool = True) -> None:
        """Register a loaded region (every region gets a parent link; only layout regions get bytes)."""
        self._parents[id(region)] = parent
        lineage = LINEAGE_ROLES.get(region.kind) or (
            self._lineage.get(id(parent)) if parent is not None else None
        )
        if lineage is not None:
            self._lineage[id(region)] = lineage
        if not layout or region.kind in NOT_LAYOUT_KINDS or not region.ranges:
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
        self._segments, self._starts = [], []
        self._dirty = False
        self.generation += 1

    def role_of(self, region: Region) -> str | None:
        """The colour role of a region's bytes (None: colour them by owner)."""
        return self._lineage.get(id(region)) or kind_role(region.kind, region.memory_id)

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
            size = sum(max(0, e - s) for s, e in region.ranges)
            rank = (size, -depth, -seq)
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
        """The innermost loaded region covering physical byte ``pos``."""
        self._ensure()
        i = bisect_right(self._starts, pos) - 1
        if i >= 0:
            s, e, region = self._segments[i]
            if s <= pos < e:
                return region
        return None

    def overlapping(self, start: int, end: int) -> list[Segment]:
        """Segments (clipped to [start, end)) that overlap the given physical range."""
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

    def regions(self) -> list[Any]:
        return [r for r, _ in self._items.values()]
