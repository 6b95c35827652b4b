"""Exact byte-level diff of two stable-memory snapshots, without reading either file whole.

How it stays fast (figures from ``tools/bench_byte_diff.py``, 1 GiB files from the page cache):

* When both inputs are mappings of whole files whose descriptors are given (every snapshot the CLI
  opens), both files are read with ``preadv`` a MiB at a time into two page-aligned buffers, which
  are compared as below (``_PairReader``). On Linux 6.18, whose page cache keeps large folios, this
  measured 0.30–0.36 s for a 1.1 GiB pair against 0.60 s through the mappings: mapping the pages in
  and letting them go again now costs more than the copy (it did not when the notes below were
  measured, with small pages). Buffers that are not page-aligned (a ``bytearray``) took 1.1–1.4 s.
  Nothing is mapped, so nothing needs letting go. A short read (the file shrank) is compared
  through the mapping, which then reports it as before.
* Equality of a block is tested with ``mm.find(other_view[o:o + n], o, o + n) == o``. With a needle
  exactly as long as the search window, CPython's ``mmap.find`` (``_PyBytes_Find``) skips its search
  loop and does a single ``memcmp`` on the mapped memory: no copy, ~6.4 GB/s here against ~3.7 GB/s
  for ``cmp -s``. The answer is correct whatever the implementation does, since offset ``o`` is the
  only place a needle of that length can match. Slicing an mmap (copies), a ``memoryview ==``
  (item-by-item, ~1 GB/s) and ``os.pread`` into reused buffers (~4.3 GB/s) all lost.
* Blocks are 256 KiB inside 4 MiB chunks. Per-call overhead is negligible at that size, and a
  difference costs only a 256 KiB re-read from cache to locate instead of a whole multi-MiB block.
  With 1,000 scattered changes in 1 GiB nearly every MiB differs, so this matters: 256 KiB measured
  best (64 KiB and 1 MiB were within ~10%).
* A differing block is split 16 ways, recursively, down to 4 KiB leaves; in a leaf the exact
  boundaries come from XOR-ing the two blocks as big integers and scanning the result with
  ``bytes.find`` (C loops throughout, never a Python per-byte loop).
* Mapped pages count toward RSS, so after each 4 MiB chunk its pages are dropped from this process
  with ``madvise(MADV_DONTNEED)`` (the page cache keeps them). Peak RSS therefore stays flat however
  large the files are. This is only done for read-only mappings (``ACCESS_READ``), where it cannot
  lose data; a private ``ACCESS_COPY`` mapping would lose its in-memory writes.
* When both files' descriptors or paths are given, ranges that are holes in both files are skipped
  unread (see :func:`inspector.sparse.data_ranges`).
"""

from __future__ import annotations

import mmap
import os
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from inspector.mapped_pages import ByteSource, page_loader, page_releaser
from inspector.sparse import data_ranges

FileRef = int | str | os.PathLike[str]
ProgressFn = Callable[[int, int], object]
CancelFn = Callable[[], bool]

# Tuning knobs, read at call time (tests shrink them to exercise every refinement level on small
# buffers). Keep each a multiple of the next and of mmap.PAGESIZE where page release is concerned.
CHUNK_SIZE = 4 << 20  # unit of cancel checks, progress and page release
BLOCK_SIZE = 256 << 10  # first-pass comparison unit
LEAF_SIZE = 4 << 10  # refinement stops splitting here and finds exact boundaries
FANOUT = 16  # a differing block is split into this many parts
READ_SIZE = 1 << 20  # unit of the pread compare (1 MiB measured best: 256 KiB and 4 MiB lost ~15%)
# At most this many ranges are kept; past it, nearby ranges are merged into runs (DiffResult.gap).
MAX_RUNS = 1 << 16

PROGRESS_CALLS = 100

# Maps every non-zero byte to 1 so that runs of differing bytes can be found with bytes.find(0/1).
NONZERO_TO_ONE = bytes([0] + [1] * 255)


class DiffCancelled(Exception):
    """Raised by :func:`changed_ranges` when its ``cancel`` callback returned True."""

    def __init__(self, done_bytes: int, total_bytes: int) -> None:
        # Both values go to Exception.args so the exception pickles (e.g. across a process pool).
        super().__init__(done_bytes, total_bytes)
        self.done_bytes = done_bytes
        self.total_bytes = total_bytes

    def __str__(self) -> str:
        return f"byte diff cancelled after {self.done_bytes} of {self.total_bytes} bytes"


class ChangedRange(NamedTuple):
    """Half-open physical range ``[start, end)``; ``tail`` marks the part only the longer file has.

    When the diff had to merge nearby ranges into runs (see :class:`DiffResult`), ``differing`` is the
    exact number of differing bytes inside the run; ``None`` means every byte of the range differs.
    """

    start: int
    end: int
    tail: bool = False
    differing: int | None = None

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def changed_bytes(self) -> int:
        return self.length if self.differing is None else self.differing


@dataclass(frozen=True)
class DiffResult:
    """Outcome of a byte diff.

    ``ranges`` are sorted and maximal: two differing ranges never touch. When the sizes differ, the
    last range is the tail ``[min(size_a, size_b), max(size_a, size_b))`` with ``tail=True``. It is
    kept separate even when a differing range ends exactly where it starts, because "bytes that
    changed" and "memory that grew or shrank" mean different things to a reader of the diff.
    ``total_bytes`` and ``count`` include the tail; ``bytes_compared`` and ``hole_bytes_skipped``
    cover only the common prefix.
    """

    size_a: int
    size_b: int
    ranges: tuple[ChangedRange, ...]
    bytes_compared: int
    hole_bytes_skipped: int
    # Ranges closer than ``gap`` bytes were merged into one run (0: every range is exact and maximal).
    # The gap starts at 0 and only grows when more than ``MAX_RUNS`` runs would have to be kept, so
    # memory stays flat however many bytes differ; the counts below stay exact either way.
    gap: int = 0
    exact_range_count: int | None = None  # maximal differing ranges before merging (tail included)

    @property
    def count(self) -> int:
        """How many (possibly merged) ranges are listed in ``ranges``."""
        return len(self.ranges)

    @property
    def range_count(self) -> int:
        """The exact number of maximal differing ranges, however they were merged."""
        return self.count if self.exact_range_count is None else self.exact_range_count

    @property
    def merged(self) -> bool:
        return self.gap > 0

    @cached_property
    def total_bytes(self) -> int:
        # The exact number of differing bytes (plus the tail); cached: ranges can be many.
        return sum(r.changed_bytes for r in self.ranges)

    @property
    def tail(self) -> ChangedRange | None:
        if self.ranges and self.ranges[-1].tail:
            return self.ranges[-1]
        return None

    @property
    def identical(self) -> bool:
        return not self.ranges

    @property
    def skipped_holes(self) -> bool:
        """True when at least one page was skipped because it is a hole in both files."""
        return self.hole_bytes_skipped > 0

    def pairs(self, *, include_tail: bool = True) -> list[tuple[int, int]]:
        """The ranges as plain ``(start, end)`` tuples, e.g. to compare with a JSON range list."""
        return [(r.start, r.end) for r in self.ranges if include_tail or not r.tail]


Sink = Callable[[int, int, memoryview], object]


def changed_ranges(
    a: ByteSource,
    b: ByteSource,
    *,
    a_file: FileRef | None = None,
    b_file: FileRef | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    span: tuple[int, int] | None = None,
    sink: Sink | None = None,
    resume: DiffResult | None = None,
) -> DiffResult:
    """Return every byte range where ``a`` and ``b`` differ, plus the size-difference tail.

    ``a`` and ``b`` are normally read-only ``mmap.mmap`` objects; ``bytes`` (e.g. for empty files,
    which cannot be mapped) and other contiguous buffers work too. Neither is ever copied whole.

    ``a_file``/``b_file`` (an open descriptor or a path of the same bytes) are used to find holes:
    ranges that are holes in *both* files are skipped unread. A path is opened read-only and closed
    again; a descriptor is left open and its file offset is preserved. Two descriptors of whole-file
    mappings are also read from directly (``_PairReader``).

    ``progress(done, total)`` is called at most 100 times over the common prefix (``total`` is its
    length). ``cancel()`` is polled once per 4 MiB chunk; when it returns True, :class:`DiffCancelled`
    is raised.

    ``span=(lo, hi)``: compare only that part of the common prefix; the tail is included only when
    ``hi`` reaches the end of the shorter input. ``join`` puts the results of
    adjacent spans together into the result of the whole. ``sink(offset, n, view)`` is handed every
    piece of ``a`` read by descriptor (``view[:n]`` holds ``a[offset:offset + n]``, valid during the
    call), for work that wants the same bytes (``map_chains.ColumnSink``); it is not called for pieces
    compared through the mappings. ``resume``: the result of the span that ends where ``span``
    starts, compared first; this compare goes on from it, so it returns the result of both spans
    together, exactly as one pass over them (``join`` cannot put together spans whose ranges had to be
    merged into runs: how they merge depends on everything before them).
    """
    with _byte_view(a) as va, _byte_view(b) as vb:
        size_a, size_b = va.nbytes, vb.nbytes
        common = min(size_a, size_b)
        lo_span, hi_span = (0, common) if span is None else (max(0, span[0]), min(span[1], common))
        regions = _clip(_regions_to_scan(a_file, b_file, size_a, size_b, common), lo_span, hi_span)
        equal = _block_equality(a, b, va, vb)
        release_a, release_b = page_releaser(a), page_releaser(b)
        load_a, load_b = page_loader(a), page_loader(b)
        runs = _Runs(resume)
        add = runs.add
        report = _ProgressReporter(progress, common)

        def exact(xa: memoryview, xb: memoryview, base: int, off: int, n: int) -> None:
            # The XOR of the two blocks is non-zero exactly at the differing bytes.
            x = int.from_bytes(xa[off : off + n], "little") ^ int.from_bytes(xb[off : off + n], "little")
            mask = x.to_bytes(n, "little").translate(NONZERO_TO_ONE)
            off += base
            i = mask.find(1)
            gap = runs.gap
            if gap == 0:
                while i >= 0:
                    j = mask.find(0, i)
                    if j < 0:
                        j = n
                    add(off + i, off + j, j - i, 1)
                    i = mask.find(1, j)
                return
            # Merging: a run ends only where more than ``gap`` equal bytes follow; counting its
            # differing bytes and its maximal ranges (0→1 steps) stays in C.
            sep = bytes(gap + 1)
            while i >= 0:
                p = mask.find(sep, i)
                end = mask.rfind(1) + 1 if p < 0 else p
                seg = mask[i:end]
                add(off + i, off + end, seg.count(1), seg.count(b"\x00\x01") + 1)
                if p < 0:
                    break
                i = mask.find(1, end)

        def refine(
            xa: memoryview, xb: memoryview, eq: Callable[[int, int], bool], base: int, off: int, n: int
        ) -> None:
            leaf = LEAF_SIZE
            if n <= leaf:
                exact(xa, xb, base, off, n)
                return
            part = max(leaf, n // FANOUT)
            stop = off + n
            for p in range(off, stop, part):
                m = min(part, stop - p)
                if not eq(p, m):
                    refine(xa, xb, eq, base, p, m)

        def mapped(lo: int, hi: int) -> None:
            load_a(lo, hi)
            load_b(lo, hi)
            for off in range(lo, hi, block):
                n = min(block, hi - off)
                if not equal(off, n):
                    refine(va, vb, equal, 0, off, n)
            release_a(lo, hi)
            release_b(lo, hi)

        block, chunk = BLOCK_SIZE, CHUNK_SIZE
        reader = _PairReader.open(a, b, a_file, b_file, min(READ_SIZE, chunk))
        compared = 0
        try:
            for lo, hi in regions:
                for cs in range(lo, hi, chunk):
                    if cancel is not None and cancel():
                        raise DiffCancelled(report.done, common)
                    ce = min(cs + chunk, hi)
                    if reader is None:
                        mapped(cs, ce)
                    else:
                        for off in range(cs, ce, reader.size):
                            n = min(reader.size, ce - off)
                            same = reader.same(off, n)
                            if same is None:  # a short read (the file shrank?): the mapping decides
                                mapped(off, off + n)
                                continue
                            if sink is not None:
                                sink(off, n, reader.va)
                            if not same:
                                refine(reader.va, reader.vb, reader.equal, off, 0, n)
                    compared += ce - cs
                    report.advance_to(ce)
        finally:
            if reader is not None:
                reader.close()
        report.finish()

    if hi_span >= common and size_a != size_b:
        runs.tail(common, max(size_a, size_b))
    skipped = (hi_span - lo_span) - compared
    if resume is not None:
        compared, skipped = compared + resume.bytes_compared, skipped + resume.hole_bytes_skipped
    return runs.result(size_a, size_b, compared, skipped)


def join(parts: list[DiffResult]) -> DiffResult | None:
    """The result of one pass over the spans the ``parts`` compared (adjacent, in order, together the
    whole common prefix; the tail is the last one's): their ranges replayed through the same accumulator,
    so a range that runs over a span boundary is one range and the counts are the single pass's. None
    where a part had merged ranges into runs (its gap depends on its own count; compare again whole)."""
    if not parts or any(p.gap for p in parts):
        return None
    runs = _Runs()
    for p in parts:
        for r in p.ranges:
            if not r.tail:
                runs.add(r.start, r.end, r.end - r.start, 1)
    tail = parts[-1].tail  # (a part that ends at the end of the common prefix has it too: one is kept)
    if tail is not None:
        runs.tail(tail.start, tail.end)
    last = parts[-1]
    return runs.result(
        last.size_a,
        last.size_b,
        sum(p.bytes_compared for p in parts),
        sum(p.hole_bytes_skipped for p in parts),
    )


class _Runs:
    """The differing ranges found so far, in order. Flat arrays (8 bytes a value) rather than a list of
    tuples, and at most MAX_RUNS of them: a diff of unrelated snapshots has millions of differing
    ranges. Past the cap, nearby ranges are merged into runs (the gap grows) and each run keeps its
    exact count of differing bytes."""

    def __init__(self, before: DiffResult | None = None) -> None:
        self.starts, self.ends, self.diffs = array("Q"), array("Q"), array("Q")
        self.max_runs = max(2, MAX_RUNS)
        self.gap = 0
        self.raw_count = 0  # maximal differing ranges, exact
        self.raw_end = -1  # one past the last differing byte seen
        self._tail: ChangedRange | None = None
        if before is not None:  # the state a pass had at the end of the span ``before`` compared
            ranges = [r for r in before.ranges if not r.tail]
            self.starts.extend(r.start for r in ranges)
            self.ends.extend(r.end for r in ranges)
            self.diffs.extend(r.changed_bytes for r in ranges)
            self.gap = before.gap
            self.raw_count = before.range_count - (1 if before.tail is not None else 0)
            self.raw_end = ranges[-1].end if ranges else -1

    def add(self, start: int, end: int, differing: int, raw: int) -> None:
        self.raw_count += raw - (1 if start == self.raw_end else 0)
        self.raw_end = end
        ends = self.ends
        if ends and start - ends[-1] <= self.gap:
            ends[-1] = end
            self.diffs[-1] += differing
        else:
            self.starts.append(start)
            ends.append(end)
            self.diffs.append(differing)
            if len(self.starts) > self.max_runs:
                self._coalesce()

    def _coalesce(self) -> None:
        while len(self.starts) > self.max_runs // 2:
            gap = self.gap = 8 if self.gap == 0 else self.gap * 4
            s2, e2, d2 = array("Q"), array("Q"), array("Q")
            for st, en, df in zip(self.starts, self.ends, self.diffs, strict=True):
                if e2 and st - e2[-1] <= gap:
                    e2[-1] = en
                    d2[-1] += df
                else:
                    s2.append(st)
                    e2.append(en)
                    d2.append(df)
            self.starts, self.ends, self.diffs = s2, e2, d2

    def tail(self, start: int, end: int) -> None:
        self._tail = ChangedRange(start, end, tail=True)
        self.raw_count += 1

    def result(self, size_a: int, size_b: int, compared: int, skipped: int) -> DiffResult:
        if self.gap:
            ranges = [
                ChangedRange(s, e, False, d)
                for s, e, d in zip(self.starts, self.ends, self.diffs, strict=True)
            ]
        else:
            ranges = list(map(ChangedRange, self.starts, self.ends))
        if self._tail is not None:
            ranges.append(self._tail)
        return DiffResult(
            size_a=size_a,
            size_b=size_b,
            ranges=tuple(ranges),
            bytes_compared=compared,
            hole_bytes_skipped=skipped,
            gap=self.gap,
            exact_range_count=self.raw_count,
        )


def _clip(regions: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """``regions`` cut to ``[lo, hi)``."""
    out = []
    for a, b in regions:
        a, b = max(a, lo), min(b, hi)
        if a < b:
            out.append((a, b))
    return out


class _PairReader:
    """Both files read with ``preadv`` into two reused buffers, for the compare when both snapshots are
    whole-file mappings with open descriptors (``changed_ranges``). Measured on 1.1 GiB pairs from the
    page cache (Linux 6.18): 0.30–0.36 s against 0.60 s through the mappings, whose page-table work on
    large page-cache folios now costs more than the copy; and nothing is mapped, so RSS stays flat.

    The buffers are anonymous mappings, page-aligned: the kernel's copy into a ``bytearray`` (16 bytes
    past a page boundary) took 1.1–1.4 s of system time for the same pass. Equality is the mapping
    compare's ``find`` trick (one ``memcmp``, see the module docstring)."""

    def __init__(self, fa: int, fb: int, size: int) -> None:
        self.fa, self.fb, self.size = fa, fb, size
        self.a, self.b = mmap.mmap(-1, size), mmap.mmap(-1, size)
        self.va, self.vb = memoryview(self.a), memoryview(self.b)
        self.equal = _block_equality(self.a, self.b, self.va, self.vb)

    @classmethod
    def open(
        cls, a: ByteSource, b: ByteSource, a_file: FileRef | None, b_file: FileRef | None, size: int
    ) -> _PairReader | None:
        """A reader where the descriptors hold exactly the mapped bytes (a mapping of the whole file
        from offset 0); None otherwise, and the mappings are compared."""
        if not (isinstance(a_file, int) and isinstance(b_file, int) and hasattr(os, "preadv")):
            return None
        if not (isinstance(a, mmap.mmap) and isinstance(b, mmap.mmap)):
            return None
        try:
            if os.fstat(a_file).st_size != len(a) or os.fstat(b_file).st_size != len(b):
                return None
        except OSError:
            return None
        return cls(a_file, b_file, size)

    def same(self, off: int, n: int) -> bool | None:
        """Read ``[off, off + n)`` of both files into the buffers (at their start) and say whether the
        two are equal; None on a short read."""
        if os.preadv(self.fa, [self.va[:n]], off) != n or os.preadv(self.fb, [self.vb[:n]], off) != n:
            return None
        return self.equal(0, n)

    def close(self) -> None:
        self.va.release()
        self.vb.release()
        self.a.close()
        self.b.close()


def diff_files(
    path_a: str | os.PathLike[str],
    path_b: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> DiffResult:
    """Diff two snapshot files by path: maps both read-only and lets holes be skipped."""
    with _open_mapped(path_a) as (fd_a, ma), _open_mapped(path_b) as (fd_b, mb):
        return changed_ranges(ma, mb, a_file=fd_a, b_file=fd_b, progress=progress, cancel=cancel)


@contextmanager
def _open_mapped(path: str | os.PathLike[str]) -> Iterator[tuple[int, mmap.mmap | bytes]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size == 0:
            # mmap refuses empty files; an empty bytes object behaves the same for diffing.
            yield fd, b""
            return
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        try:
            yield fd, mm
        finally:
            mm.close()
    finally:
        os.close(fd)


@contextmanager
def _byte_view(obj: ByteSource) -> Iterator[memoryview]:
    # Every view is released on the way out: a live export would make the caller's mm.close() fail.
    base = memoryview(obj)
    try:
        if base.format == "B" and base.ndim == 1:
            yield base
        else:
            flat = base.cast("B")
            try:
                yield flat
            finally:
                flat.release()
    finally:
        base.release()


def _block_equality(
    a: ByteSource, b: ByteSource, va: memoryview, vb: memoryview
) -> Callable[[int, int], bool]:
    """Pick the fastest zero-copy equality test for ``[off, off + n)`` the input types allow."""
    # mmap.find and bytes.startswith with a same-length needle both come down to one memcmp against
    # the other buffer's memory; see the module docstring.
    if isinstance(a, mmap.mmap):
        find_a = a.find
        return lambda off, n: find_a(vb[off : off + n], off, off + n) == off
    if isinstance(b, mmap.mmap):
        find_b = b.find
        return lambda off, n: find_b(va[off : off + n], off, off + n) == off
    if isinstance(a, bytes | bytearray):
        starts_a = a.startswith
        return lambda off, n: starts_a(vb[off : off + n], off)
    if isinstance(b, bytes | bytearray):
        starts_b = b.startswith
        return lambda off, n: starts_b(va[off : off + n], off)
    # Two plain memoryviews: copy each block (cache-sized) and compare with memcmp.
    return lambda off, n: bytes(va[off : off + n]) == bytes(vb[off : off + n])


def _regions_to_scan(
    a_file: FileRef | None, b_file: FileRef | None, size_a: int, size_b: int, common: int
) -> list[tuple[int, int]]:
    """The parts of ``[0, common)`` that hold data in at least one file, in order."""
    if common == 0:
        return []
    if a_file is None or b_file is None:
        return [(0, common)]
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(_file_data_ranges(a_file, size_a) + _file_data_ranges(b_file, size_b)):
        hi = min(hi, common)
        if lo >= hi:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _file_data_ranges(ref: FileRef, size: int) -> list[tuple[int, int]]:
    if isinstance(ref, int):
        return data_ranges(ref, size)
    fd = os.open(ref, os.O_RDONLY)
    try:
        return data_ranges(fd, size)
    finally:
        os.close(fd)


class _ProgressReporter:
    """Calls ``progress`` only when another 1/PROGRESS_CALLS of the work is done (<= 100 calls)."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        self.next_at = self._threshold(1)

    def _threshold(self, step: int) -> int:
        return -(-step * self.total // PROGRESS_CALLS)

    def advance_to(self, done: int) -> None:
        self.done = done
        if self.progress is not None and done >= self.next_at and done < self.total:
            self.progress(done, self.total)
            self.next_at = self._threshold(done * PROGRESS_CALLS // self.total + 1)

    def finish(self) -> None:
        self.done = self.total
        if self.progress is not None:
            self.progress(self.total, self.total)
