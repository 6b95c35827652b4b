"""Start the byte compare of ``diff`` in child processes while the parent loads both snapshots.

The byte compare runs at memory bandwidth; loading the two snapshots (imports, headers, forensics)
needs a core too. Overlapping them is what lets a whole ``diff --json`` command keep pace with ``cmp``.
Above ``CHAINS_MIN_BYTES`` two children compare one half each (``changed_ranges(span=...)``), and the
parent puts their results together (``byte_ranges.join``). Each child only reads, sends its
``DiffResult`` back through a pipe and exits; if anything goes wrong there, the parent simply
compares in-process.

When the old snapshot holds a big map on its raw memory, the children also take the columns of its
chunk headers (``map_chains.ColumnSink``) from the very pieces of the old file they compare, into memory
shared with each other (``shared_columns``). Once each has told the other how many chunks it filled,
the first resolves the map's overflow chains (``map_chains``) and the second walks its free list
(``frontier``) from the columns, at the same time, and each hands its part over with its result. That
used to be a third child that read the whole old file again (measured on the bench's 1.1 GiB map pair:
~0.6 s of CPU, the longest of the three).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from inspector.diff.byte_ranges import CHUNK_SIZE, DiffResult, changed_ranges, join
from inspector.diff.shared_columns import SharedColumns
from inspector.forked import Child, fork_stream, read_exactly
from inspector.layouts import (
    ALLOCATOR_HEADER,
    ALLOCATOR_MAGIC,
    ALLOCATOR_OFFSET,
    BTREE_MAGIC,
    CHUNK_HEADER_SIZE,
    FIRST_CHUNK_OFFSET,
)
from inspector.snapshot import open_snapshot

if TYPE_CHECKING:  # map_chains and frontier are imported in the children only (see ``_compare``)
    from inspector.diff.frontier import FreeListHint
    from inspector.diff.map_chains import ChainIndex
    from inspector.snapshot import Snapshot

    ChainsHint = tuple[tuple[int, ...], ChainIndex]  # (file identity, the old map's chain index)
    Hints = tuple[ChainsHint | None, FreeListHint | None]

_T = TypeVar("_T")
CHAINS_MIN_BYTES = 64 << 20  # below this one child compares, and the parent resolves a map's chains itself
_COUNT = 8  # bytes of a chunk count on the pipe between the two children


@dataclass
class PendingByteDiff:
    # One child per part, in order. Each sends its ``DiffResult`` as soon as its compare is done; with
    # the columns, each then sends a hint about the old map: the second its free list (soon), the first
    # its chain index (the longer job). ``result`` takes the results and the free list, ``chains`` the
    # chain index, so that the parent can do what needs neither in between (``layout_diff``).
    children: list[Child]
    columns: bool = False  # whether the children take the old map's columns
    paths: tuple[str, str] = ("", "")
    spans: tuple[tuple[int, int], ...] = ()  # the children's, in order (one child: empty)

    def ready(self) -> bool:
        """Whether every compare has finished (its child has started sending), without waiting."""
        return all(c.ready() for c in self.children)

    def result(self) -> DiffResult | None:
        """The children's result (and the old map's free list, offered to ``frontier``), or None when
        one failed (the caller then compares itself)."""
        got = [c.receive() for c in self.children]
        if self.columns:
            _offer(self.children[-1].receive())
        else:
            for c in self.children:
                c.close()
        parts = [g for g in got if isinstance(g, DiffResult)]
        if len(parts) != len(got):
            self.stop()  # (no hint is wanted from a compare the parent does again)
            return None
        if len(parts) == 1:
            return parts[0]
        return join(parts) or self._resume(parts[0])

    def _resume(self, first: DiffResult) -> DiffResult:
        """The whole result where the parts had to merge ranges into runs (``join`` cannot put those
        together): the second span compared again here, going on from the first part's result."""
        with open_snapshot(self.paths[0]) as a, open_snapshot(self.paths[1]) as b:
            return changed_ranges(a.buf, b.buf, a_file=a.fd, b_file=b.fd, span=self.spans[1], resume=first)

    def chains_pending(self) -> bool:
        """Whether the chain index is still being built (``chains`` would wait for it)."""
        return self.columns and self.children[0].fd >= 0 and not self.children[0].ready()

    def stop(self) -> None:
        """End the children now and reap them (their work is no longer wanted)."""
        for c in self.children:
            c.stop()

    def chains(self) -> None:
        """Take the old map's chain index (offered to ``map_chains``), and let the children go."""
        if self.columns:
            _offer(self.children[0].receive())
        for c in self.children:
            c.close()


def _offer(hints: Any) -> None:
    if not isinstance(hints, tuple):
        return
    # (Both modules are loaded already: unpickling the hints needs them.)
    from inspector.diff import frontier, map_chains

    chains, free_list = hints
    if chains is not None:
        map_chains.offer(chains)
    if free_list is not None:
        frontier.offer(free_list)


@dataclass
class _ColumnJob:
    """What a compare child needs to take the old map's columns: the shared memory, which of the two
    children it is, and its ends of the two pipes the children tell each other their chunk counts on
    (the other's count says whether every column is in: then the first resolves the chains and the
    second walks the free list, at the same time)."""

    area: SharedColumns
    role: int  # 0: the first half (chain index), 1: the second (free list)
    send: int
    recv: int


def _compare(
    old_path: str, new_path: str, span: tuple[int, int] | None, cols: _ColumnJob | None
) -> Iterator[Any]:
    """A child's compare of ``span``: its ``DiffResult``, then with columns its hints."""
    with open_snapshot(old_path) as a, open_snapshot(new_path) as b:
        sink = _sink(a, cols) if cols is not None else None
        yield changed_ranges(
            a.buf, b.buf, a_file=a.fd, b_file=b.fd, span=span, sink=sink[1] if sink else None
        )
        if cols is None:
            return
        filled = sink[1].filled if sink else -1
        os.write(cols.send, filled.to_bytes(_COUNT, "little", signed=True))  # (8 bytes: never blocks)
        other = _read_count(cols.recv)
        hints: Hints = (None, None)
        if sink is not None and other >= 0 and filled + other == sink[1].n:
            hints = _hints(a, sink[0], cols.area, sink[1].n, cols.role)
        yield hints


def _sink(a: Snapshot, cols: _ColumnJob) -> tuple[Any, Any] | None:
    """(the old map, a ``ColumnSink`` into the shared columns) where the old snapshot's raw memory holds
    a map with a u64 grid that fits them; None otherwise."""
    if a.buf is None or a.fd is None:
        return None
    from inspector.diff import map_chains

    found = _head_start(lambda: map_chains.old_grid(a.buf, a.size, a.fd))
    grid = found[1] if found is not None else None
    if found is None or grid is None:
        return None
    base, n, cs = grid
    m = found[0]
    if n >= cols.area.capacity:  # (room for a sentinel after the last chunk's)
        return None
    return m, map_chains.ColumnSink(cols.area, base, n, cs, a.fd)


def _read_count(fd: int) -> int:
    """The chunk count the other child wrote, or -1 when it ended without writing one (it failed)."""
    data = read_exactly(fd, _COUNT)
    return -1 if data is None else int.from_bytes(data, "little", signed=True)


def _hints(a: Snapshot, m: Any, area: SharedColumns, n: int, role: int) -> Hints:
    """The old map's chain index (``map_chains``, role 0) or free list (``frontier``, role 1) from the
    shared columns, None where it does not apply or fails: only a head start, the parent computes what
    is missing itself."""
    from inspector.diff import frontier, map_chains

    fd = a.fd
    assert fd is not None
    cols = map_chains._Columns.shared(area, n)
    if role == 0:
        return _head_start(lambda: map_chains.precompute(m, fd, cols)), None
    return None, _head_start(lambda: frontier.precompute(m, fd, cols))


def _head_start(work: Callable[[], _T]) -> _T | None:
    try:
        return work()
    except Exception:  # noqa: BLE001 - only a head start: the parent does the work itself otherwise
        return None


def _column_capacity(path: str) -> int | None:
    """How many chunks the old snapshot's map has room for, where it may be a big map on the raw memory
    (a stat and the two headers' first bytes: the columns are taken only then); else None."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(ALLOCATOR_OFFSET + ALLOCATOR_HEADER.size)
    except OSError:
        return None
    if (
        size < max(CHAINS_MIN_BYTES, FIRST_CHUNK_OFFSET)
        or len(head) < ALLOCATOR_OFFSET + ALLOCATOR_HEADER.size
    ):
        return None
    if head[: len(BTREE_MAGIC)] != BTREE_MAGIC:
        return None
    alloc = ALLOCATOR_HEADER.parse_dict(head, ALLOCATOR_OFFSET)
    if alloc["magic"] != ALLOCATOR_MAGIC:
        return None
    cs = alloc["allocation_size"] + CHUNK_HEADER_SIZE  # (the children's map checks the rest)
    return (size - FIRST_CHUNK_OFFSET) // cs + 2  # every chunk, and a sentinel


def _half(common: int) -> int:
    """Where the second child starts: half the common prefix, on a chunk boundary where there is one.
    (The first child's chain index takes longer than the second's free list; the parent fills that
    time with the layout part of the diff, see ``PendingByteDiff``.)"""
    half = common // 2
    return half - half % CHUNK_SIZE if half >= CHUNK_SIZE else half - half % 4096


def start_byte_diff(old_path: str, new_path: str) -> PendingByteDiff | None:
    """Fork the children that compare the two snapshots' stable memories (see the module docstring);
    None where fork is unavailable."""
    if not hasattr(os, "fork"):
        return None
    try:
        common = min(os.stat(old_path).st_size, os.stat(new_path).st_size)
    except OSError:
        common = 0  # (a directory snapshot, or unreadable: one child, which reports nothing useful)
    h = _half(common) if common >= CHAINS_MIN_BYTES else 0
    if h <= 0:
        one = fork_stream(lambda: _compare(old_path, new_path, None, None))
        return None if one is None else PendingByteDiff([one])
    capacity = _column_capacity(old_path)
    area = None
    if capacity is not None:
        # Imported once here rather than in both children (~20 ms each, before they could start).
        from inspector.diff import frontier, map_chains  # noqa: F401

        try:
            area = SharedColumns(capacity)
        except (OSError, ValueError, OverflowError):  # no room for it: compare without the columns
            area = None
    pipes = (os.pipe(), os.pipe()) if area is not None else None  # (first → second, second → first)
    jobs: tuple[_ColumnJob | None, _ColumnJob | None] = (None, None)
    if area is not None and pipes is not None:
        (r01, w01), (r10, w10) = pipes
        jobs = (_ColumnJob(area, 0, w01, r10), _ColumnJob(area, 1, w10, r01))
    first = fork_stream(lambda: _compare(old_path, new_path, (0, h), _closing(jobs[0], pipes)))
    second = None
    if first is not None:
        second = fork_stream(lambda: _compare(old_path, new_path, (h, common), _closing(jobs[1], pipes)))
    # The children have their own copies: without the parent's, a child reads an end of file (no count,
    # no hints) rather than waiting forever when the other fails or was never forked.
    for fd in (fd for pair in pipes or () for fd in pair):
        os.close(fd)
    if area is not None:
        area.close()
    if first is None or second is None:
        if first is not None:
            first.stop()
        return None
    return PendingByteDiff([first, second], area is not None, (old_path, new_path), ((0, h), (h, common)))


def _closing(
    job: _ColumnJob | None, pipes: tuple[tuple[int, int], tuple[int, int]] | None
) -> _ColumnJob | None:
    """In a child: close the pipe ends that are not its own (so that it reads an end of file, not a
    hang, when the other child dies), then hand over its job."""
    if job is not None and pipes is not None:
        for fd in (fd for pair in pipes for fd in pair):
            if fd not in (job.send, job.recv):
                os.close(fd)
    return job
