"""A progress line on stderr for CLI commands that run longer than two seconds.

It appears only when stderr is a terminal. It never touches stdout, so ``--json`` output stays clean.
When stdout is the same terminal, the line is erased for good before the command's first write to
stdout (a command that prints as it goes, ``entries`` to the screen, is its own progress; one that
prints at the end, ``summary --deep``, shows the line until then), so it never tears the output. Work
that knows how far it got calls ``note("walking memory 1", done, total)``; the line shows the latest
note and the elapsed time, and is erased when the command ends.

``STABLE_INSPECT_PROGRESS_AFTER`` (seconds) overrides the two-second delay, for tests on a pty.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

AFTER_ENV = "STABLE_INSPECT_PROGRESS_AFTER"

SHOW_AFTER_S = 2.0
REDRAW_S = 0.5

_current: SlowProgress | None = None


def note(stage: str, done: int | None = None, total: int | None = None) -> None:
    """Tell the running progress line (if any) what is happening now. Cheap when there is none."""
    p = _current
    if p is not None:
        p.stage, p.done, p.total = stage, done, total


def _same_terminal(a: TextIO, b: TextIO) -> bool:
    try:
        sa, sb = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (sa.st_dev, sa.st_ino, sa.st_rdev) == (sb.st_dev, sb.st_ino, sb.st_rdev)


def wanted(err: TextIO | Any = None) -> bool:
    err = err if err is not None else sys.stderr
    try:
        return bool(err.isatty())
    except (AttributeError, ValueError):
        return False


def shares_terminal(err: TextIO | Any = None, out: TextIO | Any = None) -> bool:
    """True when stdout is the terminal the progress line is drawn on."""
    err = err if err is not None else sys.stderr
    out = out if out is not None else sys.stdout
    try:
        return bool(out.isatty()) and _same_terminal(out, err)
    except (AttributeError, ValueError):
        return False


class SlowProgress:
    """``with SlowProgress("summary"):`` shows a line after ``after`` seconds, erases it at the end."""

    def __init__(self, label: str, *, after: float = SHOW_AFTER_S, stream: TextIO | None = None) -> None:
        self.label = label
        self.after = after
        self.stream = stream if stream is not None else sys.stderr
        self.stage = ""
        self.done: int | None = None
        self.total: int | None = None
        self.shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = time.monotonic()

    def line(self) -> str:
        text = f"{self.label}: {self.stage or 'working'}"
        if self.done is not None:
            text += f" {self.done:,}" + (f" of {self.total:,}" if self.total else "")
        return f"{text} … {time.monotonic() - self._start:.0f} s"

    def _draw(self) -> None:
        self.stream.write("\r\x1b[K" + self.line())
        self.stream.flush()
        self.shown = True

    def _run(self) -> None:
        if self.after > 0 and self._stop.wait(self.after):
            return
        while not self._stop.is_set():
            self._draw()
            self._stop.wait(REDRAW_S)

    def __enter__(self) -> SlowProgress:
        global _current
        _current = self
        if self.after <= 0:  # drawn at once (tests on a pty): no race with a quick command's end
            self._draw()
        self._thread = threading.Thread(target=self._run, name="slow-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop redrawing and erase the line (idempotent)."""
        global _current
        if _current is self:
            _current = None
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self.shown:
            self.shown = False
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class _StopBeforeOutput:
    """Stands in for ``sys.stdout`` (text or ``.buffer``) while a progress line shares its terminal:
    the first write stops and erases the line, then everything goes straight to the real stream."""

    def __init__(self, real: Any, progress: SlowProgress) -> None:
        self._real = real
        self._progress: SlowProgress | None = progress

    def _first(self) -> Any:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        return self._real

    def write(self, data: Any) -> int:
        return int(self._first().write(data))

    def writelines(self, lines: Any) -> None:
        self._first().writelines(lines)

    @property
    def buffer(self) -> Any:
        if self._progress is None:
            return self._real.buffer
        return _StopBeforeOutput(self._real.buffer, self._progress)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Guarded:
    """The progress line plus the stdout stand-in, undone on exit."""

    def __init__(self, progress: SlowProgress) -> None:
        self.progress = progress
        self._saved: Any = None

    def __enter__(self) -> SlowProgress:
        self._saved = sys.stdout
        sys.stdout = _StopBeforeOutput(self._saved, self.progress)  # type: ignore[assignment]
        return self.progress.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)
        if isinstance(sys.stdout, _StopBeforeOutput):
            sys.stdout = self._saved


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _after() -> float:
    try:
        return max(0.0, float(os.environ.get(AFTER_ENV, SHOW_AFTER_S)))
    except ValueError:
        return SHOW_AFTER_S


def for_command(command: str) -> SlowProgress | _Guarded | _Nothing:
    """The progress line for a CLI command, or a no-op where it must not show (see the module)."""
    if command in ("open", "bench") or not wanted():
        return _Nothing()
    progress = SlowProgress(command, after=_after())
    return _Guarded(progress) if shares_terminal() else progress
