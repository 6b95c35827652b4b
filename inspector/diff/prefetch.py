"""Start the byte compare of ``diff`` in a child process while the parent loads both snapshots.

The byte compare runs at memory bandwidth on one core; loading the two snapshots (imports, headers,
forensics) needs the other. Overlapping them is what lets a whole ``diff --json`` command keep pace
with ``cmp``. The child only reads (the snapshots are mapped read-only), sends its ``DiffResult``
back through a pipe and exits; if anything goes wrong there, the parent simply compares in-process.
"""

from __future__ import annotations

import os
import pickle
import select
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from inspector.diff.byte_ranges import DiffResult, changed_ranges
from inspector.layouts import BTREE_MAGIC
from inspector.snapshot import open_snapshot

if TYPE_CHECKING:  # map_chains and frontier are imported in the child only (see ``_old_map_hints``)
    from inspector.diff.frontier import FreeListHint
    from inspector.diff.map_chains import ChainIndex
    from inspector.snapshot import Snapshot

    ChainsHint = tuple[tuple[int, ...], ChainIndex]  # (file identity, the old map's chain index)

_T = TypeVar("_T")
CHAINS_MIN_BYTES = 64 << 20  # below this the parent resolves a map's chains in no time itself


@dataclass
class PendingByteDiff:
    pid: int
    fd: int
    # A second child that resolves the old map's overflow chains (``map_chains``) and walks its free list
    # (``frontier``) at the same time, on the other core: done after the compare in the same child, it
    # doubled the time the parent waits.
    chains: _Child | None = None

    def ready(self) -> bool:
        """Whether the compare has finished (its child has started sending), without waiting."""
        try:
            return bool(select.select([self.fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def result(self) -> DiffResult | None:
        """The child's result, or None when it failed (the caller then compares itself)."""
        got = _Child(self.pid, self.fd).collect()
        hints = self.chains.collect() if self.chains is not None else None
        if isinstance(hints, tuple):
            # (Both modules are loaded already: unpickling the hints needs them.)
            from inspector.diff import frontier, map_chains

            chains, free_list = hints
            if chains is not None:
                map_chains.offer(chains)
            if free_list is not None:
                frontier.offer(free_list)
        return got if isinstance(got, DiffResult) else None


@dataclass
class _Child:
    pid: int
    fd: int

    def collect(self) -> Any:
        """What the child sent (unpickled), or None when it failed; the child is reaped either way."""
        chunks = []
        try:
            while chunk := os.read(self.fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            _, status = os.waitpid(self.pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            return None
        try:
            return pickle.loads(b"".join(chunks))
        except (pickle.UnpicklingError, EOFError):  # a truncated pipe: fall back rather than trust it
            return None


def _old_map_hints(snap: Snapshot) -> tuple[ChainsHint | None, FreeListHint | None]:
    """The old map's chain index and free list (``map_chains``, ``frontier``), each None where it does
    not apply or fails: they are only a head start, the parent computes what is missing itself."""
    if snap.buf is None or snap.fd is None or snap.size < CHAINS_MIN_BYTES:
        return None, None
    buf, size, fd = snap.buf, snap.size, snap.fd
    if bytes(buf[: len(BTREE_MAGIC)]) != BTREE_MAGIC:
        return None, None  # no map on the raw memory: not even the imports below
    # Imported here, in the child: the parent forks it before its own imports, as early as it can.
    from inspector.diff import frontier, map_chains

    found = _head_start(lambda: map_chains.old_map(buf, size, fd))
    if found is None:
        return None, None
    m, cols = found
    return (
        _head_start(lambda: map_chains.precompute(m, fd, cols)),
        _head_start(lambda: frontier.precompute(m, fd, cols)),
    )


def _head_start(work: Callable[[], _T]) -> _T | None:
    try:
        return work()
    except Exception:  # noqa: BLE001 - only a head start: the parent does the work itself otherwise
        return None


def _wants_chains(path: str) -> bool:
    """Whether the old snapshot may hold a big map on its raw memory (a stat and three bytes: the
    chains child is forked only then)."""
    try:
        with open(path, "rb") as f:
            return (
                os.fstat(f.fileno()).st_size >= CHAINS_MIN_BYTES and f.read(len(BTREE_MAGIC)) == BTREE_MAGIC
            )
    except OSError:
        return False


def _fork(work: Callable[[], object]) -> _Child | None:
    """Run ``work`` in a forked child that pickles its result into a pipe; None where fork fails."""
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child: work, send, and leave without running any of the parent's cleanup
        code = 1
        try:
            os.close(read_fd)
            data = pickle.dumps(work(), protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view) :]
            code = 0
        except BaseException:  # noqa: BLE001 - any failure means "parent, do it yourself"
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return _Child(pid, read_fd)


def _compare(old_path: str, new_path: str) -> DiffResult:
    with open_snapshot(old_path) as a, open_snapshot(new_path) as b:
        return changed_ranges(a.buf, b.buf, a_file=a.fd, b_file=b.fd)


def _chains(old_path: str) -> tuple[ChainsHint | None, FreeListHint | None]:
    with open_snapshot(old_path) as a:
        return _old_map_hints(a)


def start_byte_diff(old_path: str, new_path: str) -> PendingByteDiff | None:
    """Fork a child that compares the two snapshots' stable memories (and, for a big map on the old
    one's raw memory, a second child that resolves its chains); None where fork is unavailable."""
    if not hasattr(os, "fork"):
        return None
    compare = _fork(lambda: _compare(old_path, new_path))
    if compare is None:
        return None
    chains = _fork(lambda: _chains(old_path)) if _wants_chains(old_path) else None
    return PendingByteDiff(compare.pid, compare.fd, chains)
