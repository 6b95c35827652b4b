"""The progress line of long CLI commands: stderr only, only on a terminal, erased at the end."""

from __future__ import annotations

import io
import time

from inspector import slow_progress
from inspector.slow_progress import SlowProgress, note, wanted


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_line_shows_what_is_happening_and_is_erased() -> None:
    err = _Tty()
    with SlowProgress("summary", after=0.0, stream=err) as p:
        note("walking memory 1: entries", 4096, 10_000)
        deadline = time.monotonic() + 10
        while "4,096" not in err.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert p.shown
    text = err.getvalue()
    assert "summary: walking memory 1: entries 4,096 of 10,000" in text
    assert text.endswith("\r\x1b[K")  # erased
    assert slow_progress._current is None
    note("after the end", 1)  # a no-op once nothing runs


def test_a_quick_command_prints_nothing() -> None:
    err = _Tty()
    with SlowProgress("summary", after=60.0, stream=err):
        pass
    assert err.getvalue() == ""


def test_only_on_a_terminal_stderr_and_never_over_a_terminal_stdout() -> None:
    assert not wanted(io.StringIO(), io.StringIO())  # stderr is a file or pipe
    assert wanted(_Tty(), io.StringIO())  # stdout redirected (e.g. --json > out.json)
    assert isinstance(slow_progress.for_command("bench"), slow_progress._Nothing)
