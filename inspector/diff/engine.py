"""Headless diff of two stable-memory snapshots: bytes, layout, structures, and a verdict in words.

Four levels, each built on the one before:

1. **Bytes** (``inspector.diff.byte_ranges``): the exact physical ranges that differ, merged into maximal
   half-open ranges, plus the grown or shrunk tail as a range of its own. Neither file is read whole.
2. **Layout** (``inspector.diff.layout``): MemoryManager header fields old → new, bucket-table entries
   that changed owner, memories that appeared, vanished, grew, shrank or moved, and every changed range
   attributed to what it hit in the old layout and in the new one.
3. **Structures** (``inspector.diff.entries``): per structure matched by MemoryId and kind, header
   changes and entries added, removed and changed, found by a streaming merge-join.
4. **Verdict** (``inspector.diff.verdict``): the incident named in plain words (stable_save over the
   MemoryManager, MemoryManager re-initialised, …) or a calm summary of a healthy upgrade.

``diff_sessions(old, new)`` runs all four and returns a ``SnapshotDiff``; ``SnapshotDiff.to_json()`` is
what ``stable-inspect diff --json`` prints. Nothing here imports Textual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inspector.diff import map_chains
from inspector.diff.byte_ranges import ChangedRange, DiffCancelled, DiffResult, changed_ranges
from inspector.diff.entries import StructureDiff, diff_structures
from inspector.diff.layout import (
    AreaTotal,
    BucketChange,
    ChangeGroup,
    LayoutIndex,
    MemoryChange,
    Piece,
    RangeSet,
    area_totals,
    bucket_owner_changes,
    memory_changes,
    mm_field_changes,
    next_group,
)
from inspector.diff.verdict import Incident, classify
from inspector.errors import READ_ERRORS
from inspector.jsonout import JsonObject, JsonValue
from inspector.offset_index import OffsetIndex
from inspector.structures.base import find_by_memory_id

if TYPE_CHECKING:
    from inspector.memory import Buffer
    from inspector.session import Session
    from inspector.snapshot import Snapshot

__all__ = [
    "DiffCancelled",
    "DiffLimits",
    "LayoutDiff",
    "RangeAttribution",
    "SnapshotDiff",
    "StructureDiff",
    "diff_sessions",
    "layout_diff",
    "prepare",
]

Range = tuple[int, int]
RELEASE_EVERY_LOOKUPS = 16  # ranges looked up in the layouts between drops of the mapped pages
ProgressFn = Callable[[str, int, int], object]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class DiffLimits:
    """Caps on what is *listed*; every count stays exact."""

    max_items: int = 100  # entry differences listed per structure and kind (added, removed, changed)
    max_listed_ranges: int = 200  # changed ranges listed with their attribution (JSON, report)
    max_changed_ranges: int = 10_000  # changed ranges (runs) listed as plain [start, end] in the JSON
    max_pieces_listed: int = 8  # attributed parts listed per range and side
    max_bucket_changes: int = 64  # bucket-table entries listed
    area_budget: int = 50_000  # layout lookups per side when totalling changed bytes per area


@dataclass(frozen=True)
class RangeAttribution:
    """One changed range and what it hit on each side (detailed labels, capped)."""

    start: int
    end: int
    tail: bool
    old: list[Piece]
    new: list[Piece]
    old_more: int = 0  # parts not listed
    new_more: int = 0

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "range": [self.start, self.end],
            "bytes": self.length,
            "old": [p.to_json() for p in self.old],
            "new": [p.to_json() for p in self.new],
        }
        if self.tail:
            out["tail"] = True
        if self.old_more:
            out["old_more"] = self.old_more
        if self.new_more:
            out["new_more"] = self.new_more
        return out

    def summary(self, side: str) -> str:
        pieces, more = (self.old, self.old_more) if side == "old" else (self.new, self.new_more)
        text = "; ".join(p.what for p in pieces[:2])
        extra = len(pieces) - 2 + more
        return text + (f" (+{extra} more)" if extra > 0 else "")


@dataclass
class LayoutDiff:
    """The part of a diff that needs only the byte result and the two layouts: the changed ranges, the
    groups they form and what each one hit on either side, computed lazily and kept. ``layout_diff``
    makes one before the structures are compared, so that ``diff --json`` can do this work while the
    old map's chain index is still being built elsewhere (``prefetch``); ``diff_sessions(layout=...)``
    goes on from it."""

    old: Session
    new: Session
    bytes: DiffResult
    changes: RangeSet
    old_index: LayoutIndex
    new_index: LayoutIndex
    limits: DiffLimits = field(default_factory=DiffLimits)
    _areas: dict[str, tuple[list[AreaTotal], bool]] = field(default_factory=dict)
    _attributions: dict[int, RangeAttribution] = field(default_factory=dict)
    _groups: list[ChangeGroup] = field(default_factory=list)

    def warm(self) -> None:
        """Compute now what the JSON lists: the groups, both sides' totals, the listed ranges."""
        self.groups(self.limits.max_listed_ranges)
        self.area_totals("old")
        self.area_totals("new")
        self.attributions(min(len(self.bytes.ranges), self.limits.max_listed_ranges))

    def change_index_at(self, pos: int) -> int | None:
        """Index of the first changed range that ends after ``pos`` (None past the last one)."""
        from bisect import bisect_right

        i = bisect_right(self.changes.ends, pos)
        return i if i < len(self.changes) else None

    # ------------------------------------------------------------ attribution

    def attribute(self, i: int) -> RangeAttribution:
        """What the ``i``-th changed range hit, in the old layout and in the new one (cached)."""
        got = self._attributions.get(i)
        if got is None:
            got = self._attributions[i] = self._attribute(i)
        return got

    def _attribute(self, i: int) -> RangeAttribution:
        r = self.bytes.ranges[i]
        cap = self.limits.max_pieces_listed
        old = self.old_index.pieces(r.start, r.end, detail=False, max_pieces=64)
        new = self.new_index.pieces(r.start, r.end, detail=False, max_pieces=64)
        old_d = [self.old_index.describe(p) for p in old[:cap]]
        new_d = [self.new_index.describe(p) for p in new[:cap]]
        return RangeAttribution(
            r.start, r.end, r.tail, old_d, new_d, max(0, len(old) - cap), max(0, len(new) - cap)
        )

    def attributions(self, listed: int) -> list[RangeAttribution]:
        """The first ``listed`` ranges' attributions."""
        # Each lookup reads a few scattered bytes, and each such read can map a whole large
        # page-cache folio: let the mappings go every few ranges so peak RSS stays flat.
        release = _releaser(self)
        out = []
        for i in range(listed):
            out.append(self.attribute(i))
            if i % RELEASE_EVERY_LOOKUPS == RELEASE_EVERY_LOOKUPS - 1:
                release()
        release()
        return out

    # ------------------------------------------------------------------ groups

    def groups(self, limit: int) -> list[ChangeGroup]:
        """The first ``limit`` change groups (computed incrementally and kept)."""
        n = len(self.changes)
        tail = n - 1 if self.bytes.tail is not None else -1
        release = _releaser(self)
        while len(self._groups) < limit:
            first = self._groups[-1].last + 1 if self._groups else 0
            if first >= n:
                break
            self._groups.append(
                next_group(self.changes, tail, self.old_index, self.new_index, first, len(self._groups))
            )
            if len(self._groups) % RELEASE_EVERY_LOOKUPS == 0:
                release()  # (see attributions)
        return self._groups[:limit]

    def group(self, i: int) -> ChangeGroup | None:
        got = self.groups(i + 1)
        return got[i] if i < len(got) else None

    @property
    def groups_complete(self) -> bool:
        """Whether every group has been computed (so ``len(groups(...))`` is the total)."""
        return not len(self.changes) or (
            bool(self._groups) and self._groups[-1].last == len(self.changes) - 1
        )

    def group_at(self, pos: int) -> ChangeGroup | None:
        """The group holding the first changed range that ends after ``pos``."""
        i = self.change_index_at(pos)
        if i is None:
            return None
        while not self._groups or self._groups[-1].last < i:
            before = len(self._groups)
            self.groups(before + 64)
            if len(self._groups) == before:
                return None
        lo, hi = 0, len(self._groups) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self._groups[mid].last < i:
                lo = mid + 1
            else:
                hi = mid
        return self._groups[lo]

    def area_totals(self, side: str) -> tuple[list[AreaTotal], bool]:
        """Changed bytes per area of the old or new layout, over every range (lazily, cached)."""
        if side not in self._areas:
            index = self.old_index if side == "old" else self.new_index
            release = _releaser(self)
            self._areas[side] = area_totals(index, self.changes, self.limits.area_budget, release)
            release()
        return self._areas[side]


@dataclass
class SnapshotDiff:
    old: Session
    new: Session
    bytes: DiffResult
    layout: LayoutDiff
    memory_manager: dict[str, list[JsonValue]]
    bucket_changes_count: int
    bucket_changes: list[BucketChange]
    memories: list[MemoryChange]
    structures: list[StructureDiff]
    incident: Incident
    layouts: dict[str, str]  # per side: "memory_manager" | "reconstructed" | "none"
    limits: DiffLimits = field(default_factory=DiffLimits)

    # ------------------------------------------------------------------ bytes

    @property
    def identical(self) -> bool:
        return self.bytes.identical

    @property
    def changed_bytes(self) -> int:
        return self.bytes.total_bytes

    @property
    def ranges(self) -> tuple[ChangedRange, ...]:
        """Every changed range (``ChangedRange``: start, end, tail), sorted."""
        return self.bytes.ranges

    @property
    def verdict(self) -> str:
        return self.incident.verdict

    # ------------------------------------------------- layout (see LayoutDiff)

    @property
    def changes(self) -> RangeSet:
        return self.layout.changes

    @property
    def old_index(self) -> LayoutIndex:
        return self.layout.old_index

    @property
    def new_index(self) -> LayoutIndex:
        return self.layout.new_index

    def change_index_at(self, pos: int) -> int | None:
        return self.layout.change_index_at(pos)

    def attribute(self, i: int) -> RangeAttribution:
        return self.layout.attribute(i)

    def groups(self, limit: int) -> list[ChangeGroup]:
        return self.layout.groups(limit)

    def group(self, i: int) -> ChangeGroup | None:
        return self.layout.group(i)

    @property
    def groups_complete(self) -> bool:
        return self.layout.groups_complete

    def group_at(self, pos: int) -> ChangeGroup | None:
        return self.layout.group_at(pos)

    def area_totals(self, side: str) -> tuple[list[AreaTotal], bool]:
        return self.layout.area_totals(side)

    def structure(self, memory_id: int | str) -> StructureDiff | None:
        return find_by_memory_id(self.structures, memory_id)

    # ------------------------------------------------------------------- json

    def to_json(self) -> JsonObject:
        return {k: (list(v) if isinstance(v, Iterator) else v) for k, v in self.iter_json()}

    def iter_json(self) -> Iterator[tuple[str, JsonValue]]:
        """The JSON object key by key, each value computed only when its key is reached, so a writer
        can stream it (``stable-inspect diff --json``). Long lists come as iterators."""
        b = self.bytes
        listed = min(len(b.ranges), self.limits.max_listed_ranges)
        tail = b.tail
        yield "old", _side_json(self.old)
        yield "new", _side_json(self.new)
        yield "identical", self.identical
        yield "verdict", self.verdict
        yield "incident", self.incident.kind
        yield "facts", self.incident.facts
        cap = self.limits.max_changed_ranges
        shown = b.ranges[:cap]
        yield "changed_ranges", ([r.start, r.end] for r in shown)
        yield "changed_range_count", b.range_count
        yield "changed_bytes", b.total_bytes
        yield (
            "changed_runs",
            {
                # Ranges closer than merge_gap bytes are listed as one run (0: every range is exact).
                "merge_gap": b.gap,
                "count": b.count,
                "listed": len(shown),
                "cap": cap,
                "truncated": len(shown) < b.count,
                "differing_bytes": [r.changed_bytes for r in shown],
            },
        )
        yield "size", {"old": b.size_a, "new": b.size_b, "tail": [tail.start, tail.end] if tail else None}
        yield "layouts", self.layouts
        yield "memory_manager", self.memory_manager
        yield (
            "bucket_owners_changed",
            {
                "count": self.bucket_changes_count,
                "items": [c.to_json() for c in self.bucket_changes],
                "truncated": self.bucket_changes_count > len(self.bucket_changes),
            },
        )
        yield "memories", [m.to_json() for m in self.memories]
        groups = self.groups(self.limits.max_listed_ranges)
        yield (
            "changes",
            {
                "groups": [g.to_json() for g in groups],
                "listed": len(groups),
                "complete": self.groups_complete,
            },
        )
        areas_old, complete_old = self.area_totals("old")
        areas_new, complete_new = self.area_totals("new")
        yield (
            "attribution",
            {
                "old": [t.to_json() for t in areas_old],
                "new": [t.to_json() for t in areas_new],
                "complete": complete_old and complete_new,
                "ranges": [a.to_json() for a in self.layout.attributions(listed)],
                "listed": listed,
                "total": b.count,
                "truncated": listed < b.count,
            },
        )
        yield "structures", [sd.to_json() for sd in self.structures]
        yield "salvage", [s.to_json() for s in self.incident.salvage]
        yield "stable_save", self.incident.stable_save
        yield "new_diagnosis", list(self.new.analysis.diagnosis or [])


def _releaser(d: LayoutDiff) -> Callable[[], None]:
    """Drops the pages that scattered layout lookups mapped: with large page-cache folios each lookup
    maps up to megabytes (see ``sequences.PageReleaser``); the page cache keeps the data."""
    from inspector.mapped_pages import page_releaser

    calls = []
    for session in (d.old, d.new):
        buf = session.snapshot.buf
        if buf is not None:
            calls.append((page_releaser(buf), len(buf)))

    def release() -> None:
        for fn, size in calls:
            fn(0, size)

    return release


def _side_json(session: Session) -> JsonObject:
    snap = session.snapshot
    return {"path": str(snap.file_path or snap.path), "size_bytes": snap.size}


def prepare(old: Session, new: Session) -> int:
    """Do the diff's work that does not depend on which bytes changed, while a byte compare started
    elsewhere (``prefetch``) is still running: each map's key layout (a few whole nodes read) and the
    key and value types its listed entries are decoded with (its first entries read). Both are cached
    on the structures and computed from their bytes alone, so the diff is the same with or without
    this; it only moves off the path that follows the compare. Returns the maps prepared."""
    from inspector.decode.values import type_for
    from inspector.diff.sequences import PageReleaser
    from inspector.structures.btreemap.structure import BTreeMapStructure

    done = 0
    for session in (old, new):
        for s in session.analysis.structures:
            if s.kind != "btreemap" or not isinstance(s, BTreeMapStructure):
                continue
            m = s.map
            release = PageReleaser(s)
            try:
                _ = m.key_layout
                release()
                type_for(s, "key")
                type_for(s, "value")
            except READ_ERRORS:  # only a head start: the diff itself meets (and reports) bad bytes
                pass
            release()
            done += 1
    return done


def diff_sessions(
    old: Session,
    new: Session,
    *,
    limits: DiffLimits | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    lock: AbstractContextManager[object] | None = None,
    byte_result: DiffResult | None = None,
    indexes: tuple[OffsetIndex, OffsetIndex] | None = None,
    layout: LayoutDiff | None = None,
) -> SnapshotDiff:
    """Compare two loaded sessions (``inspector.session.load``) at every level.

    ``progress(stage, done, total)`` reports the byte compare ("bytes") and each structure's entry walk
    ("memory N"); ``cancel()`` is polled throughout and makes the diff raise ``DiffCancelled``.
    ``lock`` is held while structures are read (their walkers keep caches that are not thread-safe, so
    a UI that also browses them passes its lock); the byte compare only reads the maps and runs
    without it. ``byte_result`` is a byte compare of the same two files computed beforehand.
    ``indexes`` are the (old, new) offset indexes a UI already has over these sessions: the changes
    are then attributed by the very index its tree and hex views ask (otherwise the diff makes its own).
    ``layout``: the ``layout_diff`` of these sessions and ``byte_result``, made beforehand.
    """
    limits = limits or DiffLimits()
    so, sn = old.snapshot, new.snapshot

    def byte_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("bytes", done, total)

    # A byte compare already done elsewhere (``prefetch``, overlapped with loading) is reused
    # when it covers exactly these two files.
    result = byte_result
    if result is not None:
        # An index of the old map's chains the byte-compare child built (only for that very file).
        map_chains.adopt(so.fd, so.buf)
    if result is None or (result.size_a, result.size_b) != (so.size, sn.size):
        result = changed_ranges(
            _buf(so), _buf(sn), a_file=so.fd, b_file=sn.fd, progress=byte_progress, cancel=cancel
        )
    if (
        layout is None
        or layout.bytes is not result
        or layout.old is not old
        or layout.new is not new
        or layout.limits != limits
    ):
        layout = layout_diff(old, new, result, limits=limits, indexes=indexes)
    with lock if lock is not None else nullcontext():
        return _structures(layout, progress, cancel)


def layout_diff(
    old: Session,
    new: Session,
    result: DiffResult,
    *,
    limits: DiffLimits | None = None,
    indexes: tuple[OffsetIndex, OffsetIndex] | None = None,
) -> LayoutDiff:
    """The layout part of the diff of two sessions whose byte compare gave ``result`` (see
    ``LayoutDiff``); nothing is computed until asked for (``warm``, or the diff's JSON)."""
    old_oi, new_oi = indexes if indexes is not None else (None, None)
    return LayoutDiff(
        old,
        new,
        result,
        RangeSet(result.pairs()),
        LayoutIndex(old.analysis, name="the old", index=old_oi),
        LayoutIndex(new.analysis, name="the new", index=new_oi),
        limits or DiffLimits(),
    )


def _structures(layout: LayoutDiff, progress: ProgressFn | None, cancel: CancelFn | None) -> SnapshotDiff:
    old, new, result, changes, limits = layout.old, layout.new, layout.bytes, layout.changes, layout.limits
    a, b = old.analysis, new.analysis
    count, items = bucket_owner_changes(a, b, changes, limits.max_bucket_changes)
    memories, layouts = memory_changes(a, b)
    structs = diff_structures(a, b, changes, max_items=limits.max_items, progress=progress, cancel=cancel)
    incident = classify(
        a, b, structs, changes, layout.old_index, memories, result.total_bytes, result.identical
    )
    return SnapshotDiff(
        old,
        new,
        result,
        layout,
        mm_field_changes(a, b),
        count,
        items,
        memories,
        structs,
        incident,
        layouts,
        limits,
    )


def _buf(snapshot: Snapshot) -> Buffer:
    # A snapshot without a stable-memory file (empty stable memory) has b"" as its buffer.
    buf = snapshot.buf
    return buf if buf is not None else b""
