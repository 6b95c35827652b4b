"""Start the byte compare of ``diff`` in a child process while the parent loads both snapshots.

The byte compare runs at memory bandwidth on one core; loading the two snapshots (imports, headers,
forensics) needs the other. Overlapping them is what lets a whole ``diff --json`` command keep pace
with ``cmp``. The child only reads (the snapshots are mapped read-only), sends its ``DiffResult``
back through a pipe and exits; if anything goes wrong there, the parent simply compares in-process.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any

from inspector.diff.byte_ranges import DiffResult, changed_ranges
from inspector.layouts import BTREE_MAGIC
from inspector.snapshot import open_snapshot

CHAINS_MIN_BYTES = 64 << 20  # below this the parent resolves a map's chains in no time itself


@dataclass
class PendingByteDiff:
    pid: int
    fd: int

    def result(self) -> DiffResult | None:
        """The child's result, or None when it failed (the caller then compares itself)."""
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
            out, hint = pickle.loads(b"".join(chunks))
        except (pickle.UnpicklingError, EOFError):  # a truncated pipe: fall back rather than trust it
            return None
        if hint is not None:
            from inspector.diff import map_chains  # (loaded already: unpickling the hint needs it)

            map_chains.offer(hint)
        return out if isinstance(out, DiffResult) else None


def _chains_hint(snap: Any) -> Any:
    try:
        if snap.buf is None or snap.fd is None or snap.size < CHAINS_MIN_BYTES:
            return None
        if bytes(snap.buf[: len(BTREE_MAGIC)]) != BTREE_MAGIC:
            return None  # no map on the raw memory: not even the import below
        # Imported here, in the child: the parent forks it before its own imports, as early as it can.
        from inspector.diff import map_chains

        return map_chains.precompute(snap.buf, snap.size, snap.fd)
    except Exception:  # noqa: BLE001 - only a head start: the parent builds it itself otherwise
        return None


def start_byte_diff(old_path: str, new_path: str) -> PendingByteDiff | None:
    """Fork a child that compares the two snapshots' stable memories; None where fork is unavailable."""
    if not hasattr(os, "fork"):
        return None
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the child: compare, send, and leave without running any of the parent's cleanup
        code = 1
        try:
            os.close(read_fd)
            with open_snapshot(old_path) as a, open_snapshot(new_path) as b:
                result = changed_ranges(a.buf, b.buf, a_file=a.fd, b_file=b.fd)
                # While the parent is still loading: a big map's overflow chains (map_chains).
                hint = _chains_hint(a)
            data = pickle.dumps((result, hint), protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(data)
            while view:
                view = view[os.write(write_fd, view) :]
            code = 0
        except BaseException:  # noqa: BLE001 - any failure means "parent, do it yourself"
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return PendingByteDiff(pid, read_fd)
