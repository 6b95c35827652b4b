"""A progress line on stderr for CLI commands that run longer than two seconds.

It appears only when stderr is a terminal and stdout is not the same terminal (``summary --deep --json >
out.json``, ``entries … | gzip``): the line is redrawn in place with ``\\r`` and would otherwise tear the
command's own output. It never touches stdout, so ``--json`` output stays clean. Work that knows how
far it got calls ``note("walking memory 1", done, total)``; the line shows the latest note and the
elapsed time, and is erased when the command ends.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

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


def wanted(err: TextIO | Any = None, out: TextIO | Any = None) -> bool:
    err = err if err is not None else sys.stderr
    out = out if out is not None else sys.stdout
    try:
        if not err.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    try:
        return not (out.isatty() and _same_terminal(out, err))
    except (AttributeError, ValueError):
        return True


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

    def _run(self) -> None:
        if self._stop.wait(self.after):
            return
        while not self._stop.is_set():
            self.stream.write("\r\x1b[K" + self.line())
            self.stream.flush()
            self.shown = True
            self._stop.wait(REDRAW_S)

    def __enter__(self) -> SlowProgress:
        global _current
        _current = self
        self._thread = threading.Thread(target=self._run, name="slow-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        global _current
        _current = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def for_command(command: str) -> SlowProgress | _Nothing:
    """The progress line for a CLI command, or a no-op where it must not show (see the module)."""
    if command in ("open", "bench") or not wanted():
        return _Nothing()
    return SlowProgress(command)
