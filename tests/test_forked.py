"""``inspector.forked``: work in a child whose results come back through a pipe, one message at a time;
a child that fails costs nothing but its result, and every child is reaped."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

from conftest import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inspector import forked  # noqa: E402


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_messages_arrive_one_by_one_then_the_end() -> None:
    def work() -> Iterator[object]:
        yield {"n": 1}
        yield b"x" * (3 << 20)  # bigger than the pipe: sent in pieces, taken whole
        yield None

    child = forked.fork_stream(work)
    assert child is not None
    assert child.receive() == {"n": 1}
    assert child.receive() == b"x" * (3 << 20)
    assert child.receive() is None  # (the third message is None itself)
    assert child.receive() is None and child.fd == -1  # the end: closed and reaped
    assert _gone(child.pid)


def test_a_child_that_fails_sends_what_it_had_and_then_nothing() -> None:
    def work() -> Iterator[object]:
        yield 1
        raise RuntimeError("broken")

    child = forked.fork_stream(work)
    assert child is not None
    assert child.receive() == 1 and child.receive() is None and _gone(child.pid)
    one = forked.fork_call(lambda: 1 / 0)
    assert one is not None and one.collect() is None and _gone(one.pid)


def test_collect_takes_one_result_without_waiting_for_the_exit() -> None:
    child = forked.fork_call(lambda: [1, 2, 3])
    assert child is not None
    assert child.collect() == [1, 2, 3] and child.fd == -1
    forked._reap_all()
    assert _gone(child.pid) and not forked._UNREAPED


def test_stop_ends_a_child_whose_work_is_not_wanted() -> None:
    import time

    def work() -> Iterator[object]:
        time.sleep(60)
        yield 1

    child = forked.fork_stream(work)
    assert child is not None
    t = time.monotonic()
    child.stop()
    assert time.monotonic() - t < 10 and _gone(child.pid)
