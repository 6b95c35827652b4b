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

from inspector.diff.byte_ranges import DiffResult, changed_ranges
from inspector.snapshot import open_snapshot


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
            out = pickle.loads(b"".join(chunks))
        except Exception:  # a truncated pipe: fall back rather than trust it
            return None
        return out if isinstance(out, DiffResult) else None


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
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
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
