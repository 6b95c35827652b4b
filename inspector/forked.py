"""Work in a forked child whose result comes back pickled through a pipe (``diff``'s byte compare, the
deep walk of ``summary --deep``): the parent goes on loading meanwhile, on the other core.

The child sends one message, its length first, and leaves with ``os._exit`` (none of the parent's
cleanup runs twice). The parent takes the message as soon as it is in: waiting for the end of file
would wait for the child's exit, and with it the unmapping of everything the child had mapped. A
child that has not exited by then is reaped later, at the latest when the parent exits. Whatever
goes wrong in a child means only "parent, do it yourself": ``collect`` then returns None.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

LENGTH = 8  # bytes of the length that starts a child's message
_UNREAPED: list[int] = []


@dataclass
class Child:
    pid: int
    fd: int

    def ready(self) -> bool:
        """Whether the child has started sending (or ended), without waiting."""
        import select

        try:
            return bool(select.select([self.fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def receive(self) -> Any:
        """The next message the child sent (unpickled), or None when there is none (it failed, or it
        sent all it had: then its pipe is closed and it is reaped)."""
        if self.fd < 0:
            return None
        head = read_exactly(self.fd, LENGTH)
        data = read_exactly(self.fd, int.from_bytes(head, "little")) if head is not None else None
        if data is None:  # the end of its messages (or it failed before one was whole)
            self.close(wait=True)
            return None
        try:
            return pickle.loads(data)
        except (pickle.UnpicklingError, EOFError):  # not what a child sends: fall back rather than trust it
            return None

    def collect(self) -> Any:
        """The child's (next) message, and no more of them: its pipe is closed, it is reaped."""
        try:
            return self.receive()
        finally:
            self.close()

    def stop(self) -> None:
        """End the child now (its work is no longer wanted) and reap it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        self.close(wait=True)

    def close(self, *, wait: bool = False) -> None:
        """Stop listening; reap the child now (``wait``, it is exiting) or as soon as it has exited."""
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        if wait:
            os.waitpid(self.pid, 0)
        else:
            _reap(self.pid)


def fork_call(work: Callable[[], object]) -> Child | None:
    """Run ``work`` in a forked child that sends its result; None where fork is unavailable or fails."""
    return fork_stream(lambda: iter((work(),)))


def fork_stream(work: Callable[[], Iterator[object]]) -> Child | None:
    """Run ``work`` in a forked child that sends each thing it yields as soon as it is yielded (the
    parent takes them one by one with ``receive``); None where fork is unavailable or fails."""
    if not hasattr(os, "fork"):
        return None
    read_fd, write_fd = os.pipe()
    _widen(write_fd)
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
            for message in work():
                data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                view = memoryview(len(data).to_bytes(LENGTH, "little") + data)
                while view:
                    view = view[os.write(write_fd, view) :]
            code = 0
        except BaseException:  # noqa: BLE001 - any failure means "parent, do it yourself"
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return Child(pid, read_fd)


def file_identity(fd: int) -> tuple[int, ...]:
    """What says an open file is the one a child worked on: device, inode, size, modification time."""
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_exactly(fd: int, n: int) -> bytes | None:
    """``n`` bytes from the pipe, or None at an end of file before them."""
    parts = []
    while n > 0:
        got = os.read(fd, min(n, 1 << 20))
        if not got:
            return None
        parts.append(got)
        n -= len(got)
    return b"".join(parts)


def _widen(fd: int) -> None:
    """Give a pipe a 1 MiB buffer where the system allows (Linux): a result of a megabyte or two (a chain
    index) then goes across in a few reads, not in 64 KiB steps each waking the other side (measured
    16–20 ms a result that way)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ImportError):
        pass


def _reap(pid: int) -> None:
    """Reap ``pid`` if it has exited, else leave it for the next call (and the last, at exit)."""
    if not _UNREAPED:
        atexit.register(_reap_all)
    _UNREAPED.append(pid)
    for p in list(_UNREAPED):
        try:
            done, _ = os.waitpid(p, os.WNOHANG)
        except ChildProcessError:
            done = p
        if done:
            _UNREAPED.remove(p)


def _reap_all() -> None:
    while _UNREAPED:
        try:
            os.waitpid(_UNREAPED.pop(), 0)
        except ChildProcessError:
            pass
