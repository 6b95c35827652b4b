"""Layout level of a snapshot diff: MemoryManager fields, bucket owners, memories, and *attribution*.

Attribution answers "what did this changed byte range hit?" for one snapshot's layout. It asks the
snapshot's ``OffsetIndex`` (``inspector.offset_index``), the one answer to "what is at X" that the TUI's
tree, hex view and memory map use too; the index answers from the layout's geometry without walking a
structure, so attributing a handful of ranges in a map of millions of entries costs a handful of reads.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from inspector.jsonout import JsonObject, JsonValue
from inspector.layouts import (
    BUCKET_TABLE_OFFSET,
    MM_HEADER,
    MM_HEADER_PAGE_USED,
    MM_HEADER_SIZE,
    UNALLOCATED_BUCKET,
)
from inspector.offset_geometry import MemoryId, effective_layout
from inspector.offset_index import Location, OffsetIndex
from inspector.regions import build_tree

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis


Range = tuple[int, int]


class RangeSet:
    """Sorted, disjoint half-open ranges (e.g. the changed bytes) with overlap queries by bisection."""

    def __init__(self, ranges: Sequence[Sequence[int]]) -> None:
        self.ranges = ranges
        # A flat array rather than a list of ints: a diff of unrelated snapshots has millions of ranges.
        self.starts = array("Q", (r[0] for r in ranges))
        self.ends = array("Q", (r[1] for r in ranges))

    def __len__(self) -> int:
        return len(self.starts)

    def _first_at_or_after(self, a: int) -> int:
        """Index of the first range that ends after ``a``."""
        return bisect_right(self.ends, a)

    def overlaps(self, a: int, b: int) -> bool:
        i = self._first_at_or_after(a)
        return i < len(self.starts) and self.starts[i] < b

    def clip(self, a: int, b: int) -> Iterable[Range]:
        """The parts of the ranges inside ``[a, b)``, in order."""
        i = self._first_at_or_after(a)
        starts, ends = self.starts, self.ends
        while i < len(starts) and starts[i] < b:
            yield max(a, starts[i]), min(b, ends[i])
            i += 1

    def bytes_in(self, a: int, b: int) -> int:
        return sum(e - s for s, e in self.clip(a, b))

    def any_overlap(self, ranges: Iterable[Range]) -> bool:
        return any(self.overlaps(s, e) for s, e in ranges)


@dataclass(frozen=True)
class Piece:
    """A part of a physical range that hit one thing in a layout.

    ``area`` names the kind of thing without addresses ("memory 4 · BTreeMap node"), so bytes can be
    totalled per area; ``what`` is the full description ("memory 4 · BTreeMap node at virtual 0x2f14").
    """

    start: int
    end: int
    area: str
    what: str
    memory_id: MemoryId = None
    virtual: int | None = None

    def to_json(self) -> JsonObject:
        out: JsonObject = {"range": [self.start, self.end], "what": self.what, "area": self.area}
        if self.memory_id is not None:
            out["memory_id"] = self.memory_id
        if self.virtual is not None:
            out["virtual"] = self.virtual
        return out


class LayoutIndex:
    """Attribution of physical byte ranges to one snapshot's layout, by asking its ``OffsetIndex``.

    The index answers "what is at X" (``locate``) for the TUI as well; this class only splits a changed
    range at the layout's boundaries and merges neighbouring parts with one label.
    """

    def __init__(self, analysis: Analysis, *, name: str = "", index: OffsetIndex | None = None) -> None:
        self.analysis = analysis
        self.index = (
            index
            if index is not None
            else OffsetIndex(None, analysis, name=name, build=lambda: build_tree(analysis))
        )
        geometry = self.index.geometry
        self.size = geometry.size
        self.base = geometry.base
        self.stable_save = geometry.stable_save
        self.mm_live = geometry.mm_live
        self.has_buckets = geometry.has_buckets
        self.nb, self.bs = geometry.nb, geometry.bs  # bucket count and size of the layout in effect

    def locate(self, pos: int) -> tuple[int, str, str, MemoryId, int | None]:
        """(end, area, what, memory id, virtual offset) of the layout part that holds byte ``pos``."""
        at = self.index.locate(pos)
        return at.end, at.area, at.what, at.memory_id, at.virtual

    def describe(self, piece: Piece) -> Piece:
        """Re-describe one piece in detail (header fields, node address, entry keys): for listed ranges."""
        where = Location(piece.end, piece.area, piece.what, piece.memory_id, piece.virtual)
        what = self.index.detail(piece.start, piece.end, where)
        if what == piece.what:
            return piece
        return Piece(piece.start, piece.end, piece.area, what, piece.memory_id, piece.virtual)

    def pieces(self, start: int, end: int, *, detail: bool = False, max_pieces: int = 4096) -> list[Piece]:
        """Split ``[start, end)`` at the layout's boundaries; neighbouring parts with one label merge.

        After ``max_pieces`` the rest of the range becomes one piece labelled by its first byte's area.
        """
        out: list[Piece] = []
        pos = start
        while pos < end:
            seg_end, area, what, mid, virt = self.locate(pos)
            e = min(end, max(seg_end, pos + 1))
            if len(out) >= max_pieces:
                out.append(Piece(pos, end, area, f"{area} and more (not itemised)", mid, virt))
                break
            last = out[-1] if out else None
            if last is not None and last.what == what and last.end == pos:
                out[-1] = Piece(last.start, e, area, what, last.memory_id, last.virtual)
            else:
                out.append(Piece(pos, e, area, what, mid, virt))
            pos = e
        if detail:
            out = [self.describe(p) for p in out]
        return out


# --------------------------------------------------------------------------- header / table / memories


def _magic_text(raw: bytes) -> str:
    return "".join(chr(c) if 32 <= c < 127 else f"\\x{c:02x}" for c in raw)


def mm_header_fields(analysis: Analysis) -> JsonObject:
    """The MemoryManager header as a reader sees it, read from the bytes even when the magic is wrong
    (a stable_save message turns "MGR", 1, 2 buckets … into "DID", 76, 27,905 buckets, FORMAT.md §11.1)."""
    snap = analysis.snapshot
    mm = analysis.mm
    out: JsonObject = {
        "present": bool(mm.present and not mm.reconstructed),
        "reconstructed": bool(mm.reconstructed),
    }
    base = mm.base_offset if out["present"] else 0
    if snap.size < base + MM_HEADER_SIZE:
        return out
    h = MM_HEADER.parse_dict(snap.buf, base)
    out["magic"] = _magic_text(h["magic"])
    out["layout_version"] = h["layout_version"]
    out["num_allocated_buckets"] = h["num_allocated_buckets"]
    out["bucket_size_in_pages"] = h["bucket_size_in_pages"]
    out["reserved"] = "zero" if not any(h["reserved"]) else h["reserved"].hex()
    for i, pages in enumerate(h["memory_sizes_in_pages"]):
        out[f"memory_sizes_in_pages[{i}]"] = pages
    return out


def mm_field_changes(old: Analysis, new: Analysis) -> dict[str, list[JsonValue]]:
    a, b = mm_header_fields(old), mm_header_fields(new)
    out: dict[str, list[JsonValue]] = {}
    for key in list(a) + [k for k in b if k not in a]:
        if a.get(key) != b.get(key):
            out[key] = [a.get(key), b.get(key)]
    return out


@dataclass
class BucketChange:
    bucket: int
    old: int | None  # owning memory id, None = unallocated (0xFF)
    new: int | None

    def to_json(self) -> JsonObject:
        return {"bucket": self.bucket, "old": self.old, "new": self.new}


def bucket_owner_changes(
    old: Analysis, new: Analysis, changed: RangeSet, limit: int
) -> tuple[int, list[BucketChange]]:
    """(how many table bytes changed, the first ``limit`` of them), read only where bytes changed."""
    count = 0
    items: list[BucketChange] = []
    ob, nb = old.snapshot.buf, new.snapshot.buf
    top = min(old.snapshot.size, new.snapshot.size, MM_HEADER_PAGE_USED)
    for s, e in changed.clip(BUCKET_TABLE_OFFSET, top):
        count += e - s
        for pos in range(s, min(e, s + max(0, limit - len(items)))):
            o, n = ob[pos], nb[pos]
            items.append(
                BucketChange(
                    pos - BUCKET_TABLE_OFFSET,
                    None if o == UNALLOCATED_BUCKET else o,
                    None if n == UNALLOCATED_BUCKET else n,
                )
            )
    return count, items


@dataclass
class MemoryChange:
    id: int | str  # a MemoryId, or the forensics' "?b<N>" label for a memory whose id is lost
    change: str  # appeared | vanished | grew | shrank | moved | unidentified | identified
    old_size_pages: int | None
    new_size_pages: int | None
    old_buckets: list[int]
    new_buckets: list[int]
    new_label: str | None = None  # "unidentified"/"identified": the other side's label for the memory

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "id": self.id,
            "change": self.change,
            "old_size_pages": self.old_size_pages,
            "new_size_pages": self.new_size_pages,
            "old_buckets": _cap_list(self.old_buckets),
            "new_buckets": _cap_list(self.new_buckets),
        }
        if self.new_label is not None:
            out["new_label"] = self.new_label
        return out

    def describe(self) -> str:
        if self.change == "appeared":
            return f"memory {self.id} appeared ({_pages(self.new_size_pages)})"
        if self.change == "vanished":
            return f"memory {self.id} vanished (was {_pages(self.old_size_pages)})"
        if self.change == "moved":
            return f"memory {self.id} moved to other buckets ({_cap_list(self.old_buckets)} → {_cap_list(self.new_buckets)})"
        if self.change == "unidentified":
            return f"memory {self.id} lost its MemoryId: only its bucket identifies it now ({self.new_label})"
        if self.change == "identified":
            return f"memory {self.id} is readable again (the old snapshot knew it only as {self.new_label})"
        return f"memory {self.id} {self.change} from {self.old_size_pages} to {_pages(self.new_size_pages)}"


def _pages(n: int | None) -> str:
    return f"{n} page{'s' if n != 1 else ''}" if n is not None else "unknown size"


def _cap_list(values: list[int], n: int = 32) -> list[int]:
    return list(values[:n])


def _id_order(mid: int | str) -> tuple[int, str]:
    return (0, f"{mid:05d}") if isinstance(mid, int) else (1, str(mid))


def memory_changes(old: Analysis, new: Analysis) -> tuple[list[MemoryChange], dict[str, str]]:
    """Memories that appeared, vanished, grew, shrank or moved, and which layout each side used.

    Each side's effective layout is used (a reconstructed one when the header is gone), so a memory the
    forensics found again under an unknown id ("?b1") is matched to the old memory with those buckets.
    """
    kind_a, a, _ = effective_layout(old)
    kind_b, b, _ = effective_layout(new)
    # A memory whose id only one side knows (the other has the forensics' "?b<N>" label for it) is
    # paired by its first bucket: old id → new id.
    twins: dict[int | str, int | str] = {}
    only_b = {k: m for k, m in b.items() if k not in a and m.buckets}
    for k, m in a.items():
        if k in b or not m.buckets:
            continue
        for k2, t in only_b.items():
            if (
                t.buckets[0] == m.buckets[0]
                and isinstance(k, str) != isinstance(k2, str)
                and k2 not in twins.values()
            ):
                twins[k] = k2
                break
    estimated_sizes = "reconstructed" in (kind_a, kind_b)
    out: list[MemoryChange] = []
    for mid in sorted(set(a) | set(b), key=_id_order):
        m0, m1 = a.get(mid), b.get(mid)
        if m0 is None:
            assert m1 is not None  # mid comes from a or b
            if mid not in twins.values():
                out.append(MemoryChange(mid, "appeared", None, m1.size_pages, [], list(m1.buckets)))
        elif mid in twins:
            other = twins[mid]
            t = b[other]
            change = "unidentified" if isinstance(other, str) else "identified"
            shown = mid if change == "unidentified" else other
            out.append(
                MemoryChange(
                    shown,
                    change,
                    m0.size_pages,
                    t.size_pages,
                    list(m0.buckets),
                    list(t.buckets),
                    str(other if change == "unidentified" else mid),
                )
            )
        elif m1 is None:
            out.append(MemoryChange(mid, "vanished", m0.size_pages, None, list(m0.buckets), []))
        elif m0.size_pages != m1.size_pages and estimated_sizes:
            # A reconstructed memory's size is an estimate from its buckets: not a change worth naming.
            if list(m0.buckets) != list(m1.buckets):
                out.append(
                    MemoryChange(
                        mid, "moved", m0.size_pages, m1.size_pages, list(m0.buckets), list(m1.buckets)
                    )
                )
        elif m0.size_pages != m1.size_pages:
            change = "grew" if m1.size_pages > m0.size_pages else "shrank"
            out.append(
                MemoryChange(mid, change, m0.size_pages, m1.size_pages, list(m0.buckets), list(m1.buckets))
            )
        elif list(m0.buckets) != list(m1.buckets):
            out.append(
                MemoryChange(mid, "moved", m0.size_pages, m1.size_pages, list(m0.buckets), list(m1.buckets))
            )
    return out, {"old": kind_a, "new": kind_b}


# --------------------------------------------------------------------------- attribution of all ranges


@dataclass
class AreaTotal:
    area: str
    bytes: int = 0
    ranges: int = 0

    def to_json(self) -> JsonObject:
        return {"area": self.area, "bytes": self.bytes, "ranges": self.ranges}


def area_totals(
    index: LayoutIndex, changes: RangeSet, budget: int, tick: Callable[[], object] | None = None
) -> tuple[list[AreaTotal], bool]:
    """Changed bytes per area of one layout, over every range; (totals, complete).

    One layout lookup covers every range inside the part it names (summed in C over the range arrays),
    so a page with thousands of scattered differences costs one lookup. ``budget`` bounds the lookups;
    bytes past it are totalled as "not attributed", so two unrelated multi-GiB snapshots (millions of
    ranges) still answer promptly.
    """
    totals: dict[str, AreaTotal] = {}
    starts, ends = changes.starts, changes.ends
    n = len(starts)
    used = 0

    def add(area: str, nbytes: int, nranges: int) -> None:
        t = totals.get(area)
        if t is None:
            t = totals[area] = AreaTotal(area)
        t.bytes += nbytes
        t.ranges += nranges

    i = 0
    complete = True
    while i < n:
        if used >= budget:
            complete = False
            add(NOT_ATTRIBUTED, sum(ends[i:]) - sum(starts[i:]), n - i)
            break
        seg_end, area, _what, _mid, _v = index.locate(starts[i])
        used += 1
        if tick is not None and not used % 64:
            tick()  # e.g. let go of the pages the lookups mapped (see sequences.PageReleaser)
        j = bisect_right(starts, seg_end - 1, i)  # ranges i..j-1 start inside this part
        k = j - 1 if ends[j - 1] > seg_end else j  # range k (if < j) runs past the part's end
        if k > i:
            add(area, sum(ends[i:k]) - sum(starts[i:k]), k - i)
        if k < j:
            pos, end = starts[k], ends[k]
            while pos < end:
                if used >= budget:
                    add(NOT_ATTRIBUTED, end - pos, 1)
                    break
                part_end, part_area, _w, _m, _v = index.locate(pos)
                used += 1
                stop = min(end, max(part_end, pos + 1))
                add(part_area, stop - pos, 1)
                pos = stop
        i = j
    return sorted(totals.values(), key=lambda t: (-t.bytes, t.area)), complete


NOT_ATTRIBUTED = "(not attributed: too many ranges)"


# --------------------------------------------------------------------------- grouping ranges into changes


@dataclass(frozen=True)
class ChangeGroup:
    """Consecutive changed ranges that hit the same part of the layout on both sides.

    A few thousand scattered byte differences inside one unused page or one node read as one change
    ("page 0 · unused by the MemoryManager: 7,000 ranges, 29,995 bytes"), which is what a person steps
    through; the exact ranges stay available by index (``first``..``last`` inclusive).
    """

    index: int
    first: int
    last: int
    start: int
    end: int
    bytes: int
    old_area: str
    new_area: str
    old_what: str
    new_what: str
    tail: bool = False

    @property
    def ranges(self) -> int:
        return self.last - self.first + 1

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "range": [self.start, self.end],
            "ranges": self.ranges,
            "first_range": self.first,
            "bytes": self.bytes,
            "old": self.old_what,
            "new": self.new_what,
        }
        if self.tail:
            out["tail"] = True
        return out


def next_group(
    changes: RangeSet, tails: int, old: LayoutIndex, new: LayoutIndex, first: int, index: int
) -> ChangeGroup:
    """The group that starts at changed range ``first`` (``tails``: index of the size tail, or -1).

    Costs two layout lookups and a bisection whatever the number of ranges it swallows.
    """
    starts, ends = changes.starts, changes.ends
    s0, e0 = starts[first], ends[first]
    o_end, o_area, o_what, _, _ = old.locate(s0)
    n_end, n_area, n_what, _, _ = new.locate(s0)
    seg_end = min(o_end, n_end)
    if first == tails or e0 > seg_end:
        last = first  # one range over several parts (or the tail): a group of its own
    else:
        j = bisect_right(starts, seg_end - 1, lo=first)  # ranges starting inside the segment
        last = j - 1
        while last > first and (ends[last] > seg_end or last == tails):
            last -= 1
    total = sum(ends[first : last + 1]) - sum(starts[first : last + 1])
    if last == first and e0 > seg_end:
        # One range over several parts: name the parts it runs through (a few of them).
        o_what = _parts_text(old.pieces(s0, e0, max_pieces=GROUP_PARTS))
        n_what = _parts_text(new.pieces(s0, e0, max_pieces=GROUP_PARTS))
    return ChangeGroup(
        index, first, last, s0, ends[last], total, o_area, n_area, o_what, n_what, first == tails
    )


GROUP_PARTS = 3  # parts named for one range that runs through several


def _parts_text(pieces: list[Piece]) -> str:
    shown = [p.what for p in pieces[:GROUP_PARTS]]
    if len(pieces) > GROUP_PARTS:
        shown.append("…")
    return "; ".join(shown)
