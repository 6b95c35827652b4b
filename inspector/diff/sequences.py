"""Entry-level diff of Vec, MinHeap and Log by index arithmetic: cost proportional to the change.

When a sequence occupies the same physical bytes on both sides, an element whose slot (Vec, MinHeap)
or whose index entries and data bytes (Log) no changed range touches is byte-identical on both sides.
So only the elements under the changed ranges are read and compared; everything else is counted as
unchanged without being read. A 1 GiB ``StableVec<u64>`` with 1,000 changed bytes costs about 1,000
slot reads instead of 134 million.

``element_reads`` on the returned plan counts the elements read, so tests can check that the work
follows the changed ranges and not the structure's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, Protocol

from inspector.layouts import LOG_DATA_ENTRIES_OFFSET, LOG_INDEX_ENTRIES_OFFSET, VEC_DATA_OFFSET
from inspector.mapped_pages import page_releaser
from inspector.memory import Memory, OutOfBounds
from inspector.structures.base import Element, Structure

Range = tuple[int, int]
CHECK_EVERY = 8192  # elements between cancel/progress checks
RELEASE_EVERY = 32  # runs of elements read between drops of the mapped pages (see PageReleaser)


class _Ranges(Protocol):
    def clip(self, a: int, b: int) -> Iterable[Range]: ...


class _Collector(Protocol):
    def added(self, el: Element) -> None: ...

    def removed(self, el: Element) -> None: ...

    def changed(self, x: Element, y: Element) -> None: ...


def virtual_hits(mem: Memory, changed: _Ranges) -> list[Range] | None:
    """The changed ranges seen from inside ``mem``: virtual ranges, sorted (None if unmappable).

    Costs one step per bucket extent plus one per range that falls inside the memory.
    """
    try:
        extents = mem.physical_ranges(0, mem.size)
    except OutOfBounds:
        return None
    out: list[Range] = []
    v0 = 0
    for ps, pe in extents:
        for a, b in changed.clip(ps, pe):
            out.append((v0 + a - ps, v0 + b - ps))
        v0 += pe - ps
    out.sort()
    return out


class PageReleaser:
    """Drops this process's mapping of the snapshots after scattered reads, so peak RSS stays flat.

    With large page-cache folios (recent Linux kernels), one read through the mmap maps the whole folio
    into the process: a thousand scattered 8-byte reads of a 1 GiB file showed as ~500 MB of RSS. The
    page cache keeps the pages; ``madvise(MADV_DONTNEED)`` on the read-only mapping only unmaps them.
    """

    def __init__(self, *structures: Any) -> None:
        seen: dict[int, Callable[[], None]] = {}
        for s in structures:
            for mem in (getattr(s, "mem", None), getattr(s, "index_mem", None), getattr(s, "data_mem", None)):
                phys = getattr(mem, "phys", mem)
                buf = getattr(phys, "buf", None)
                if buf is None or id(buf) in seen:
                    continue
                release = page_releaser(buf)
                size = int(getattr(phys, "size", 0))
                seen[id(buf)] = lambda release=release, size=size: release(0, size)  # type: ignore[misc]
        self._calls = list(seen.values())

    def __call__(self) -> None:
        for call in self._calls:
            call()


def _runs(indices: Iterable[int]) -> Iterator[Range]:
    """Sorted distinct indices as half-open runs of consecutive ones."""
    start = prev = -2
    for i in sorted(set(indices)):
        if i != prev + 1:
            if start >= 0:
                yield start, prev + 1
            start = i
        prev = i
    if start >= 0:
        yield start, prev + 1


def vec_hit_indices(s: Any, hits: list[Range], limit: int) -> list[int]:
    """Indices below ``limit`` of the Vec/MinHeap slots that the virtual ranges ``hits`` touch."""
    slot = s.slot_size
    if not slot:
        return []
    out: list[int] = []
    for a, b in hits:
        if b <= VEC_DATA_OFFSET:
            continue
        first = (max(a, VEC_DATA_OFFSET) - VEC_DATA_OFFSET) // slot
        last = min((b - 1 - VEC_DATA_OFFSET) // slot, limit - 1)
        out.extend(range(first, last + 1))
    return out


def _log_entry_at(s: Any, rel: int) -> int:
    """Index of the first log entry whose end is past data offset ``rel`` (binary search on the index)."""
    lo, hi = 0, s.readable
    while lo < hi:
        mid = (lo + hi) // 2
        if s._ends(mid, 1)[0] > rel:
            hi = mid
        else:
            lo = mid + 1
    return lo


def log_hit_indices(s: Any, index_hits: list[Range], data_hits: list[Range], limit: int) -> list[int]:
    """Indices below ``limit`` of the log entries whose index slots or data bytes the ranges touch.

    Entry i spans data [end(i-1), end(i)): a changed index slot i touches entries i and i + 1.
    """
    out: list[int] = []
    for a, b in index_hits:
        if b <= LOG_INDEX_ENTRIES_OFFSET:
            continue
        first = (max(a, LOG_INDEX_ENTRIES_OFFSET) - LOG_INDEX_ENTRIES_OFFSET) // 8
        last = min((b - 1 - LOG_INDEX_ENTRIES_OFFSET) // 8 + 1, limit - 1)
        out.extend(range(first, last + 1))
    for a, b in data_hits:
        if b <= LOG_DATA_ENTRIES_OFFSET:
            continue
        ra, rb = max(a, LOG_DATA_ENTRIES_OFFSET) - LOG_DATA_ENTRIES_OFFSET, b - LOG_DATA_ENTRIES_OFFSET
        i = _log_entry_at(s, ra)
        # Walk forward over the entries that start before the range ends (usually one).
        while i < limit:
            out.append(i)
            if s._ends(i, 1)[0] >= rb:
                break
            i += 1
    return out


class SequencePlan:
    """Which indices to compare, and how many element reads that took (for tests)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices
        self.element_reads = 0


def plan(a: Structure, b: Structure, changed: _Ranges) -> SequencePlan | None:
    """The indices whose elements may differ, or None when index arithmetic does not apply.

    It applies when both sides have the same slot geometry (Vec/MinHeap) or are both paired (Log): the
    caller has already checked that the structure's memories map to the same physical bytes.
    """
    m = min(a.count(), b.count())
    if a.kind in ("vec", "minheap"):
        sa, sb = a, b
        if (sa.slot_size, sa.prefix_width) != (sb.slot_size, sb.prefix_width):  # type: ignore[attr-defined]
            return None
        hits = virtual_hits(a.mem, changed)
        if hits is None:
            return None
        return SequencePlan(vec_hit_indices(a, hits, m))
    if a.kind == "log":
        la, lb = a, b
        if la.role != "pair" or lb.role != "pair":  # type: ignore[attr-defined]
            return None
        if la.index_mem is None or la.data_mem is None:
            return None
        ih = virtual_hits(la.index_mem, changed)
        dh = virtual_hits(la.data_mem, changed)
        if ih is None or dh is None:
            return None
        # Data ranges are looked up on both sides: an entry's extent may differ where its index did.
        idx = log_hit_indices(la, ih, dh, m) + log_hit_indices(lb, ih, dh, m)
        return SequencePlan(idx)
    return None


def diff_by_hits(
    d: Any,
    a: Structure,
    b: Structure,
    p: SequencePlan,
    c: _Collector,
    limit: int,
    check: Callable[[int], None],
) -> None:
    """Fill ``d`` (a ``StructureDiff``): compare only the planned indices, count the rest unchanged."""
    d.method = "by index (changed slots only)"
    na, nb = a.count(), b.count()
    m = min(na, nb)
    compared = changed = 0
    release = PageReleaser(a, b)
    for run, (start, stop) in enumerate(_runs(p.indices)):
        if run % RELEASE_EVERY == RELEASE_EVERY - 1:
            release()
        xs = a.elements(start, stop)  # type: ignore[call-arg]
        ys = b.elements(start, stop)  # type: ignore[call-arg]
        for x, y in zip(xs, ys, strict=False):
            compared += 1
            p.element_reads += 2
            if compared % CHECK_EVERY == 0:
                check(compared)
            if x.value != y.value:
                changed += 1
                c.changed(x, y)
    release()
    d.unchanged = m - changed
    # Past the shorter side: listed up to ``limit`` and counted from the lengths, never walked.
    for side, n, op in ((a, na, "removed"), (b, nb, "added")):
        if n <= m:
            continue
        listed = 0
        for el in islice(side.elements(m, m + limit), limit):  # type: ignore[call-arg]
            p.element_reads += 1
            getattr(c, op)(el)
            listed += 1
        rest = n - m - listed
        if rest > 0:
            setattr(d, op, getattr(d, op) + rest)
            d.items_truncated = True
