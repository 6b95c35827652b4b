"""Run a command in a child process so that a bus error becomes one line on stderr and exit 2.

Why a child: snapshots are read through a read-only ``mmap``. When the file shrinks while it is being
read (another process truncates it, a download is restarted), the next access to a page past the new
end of file raises SIGBUS *inside a C memcpy*. Python cannot turn that into an exception: its signal
handler only sets a flag and returns, the faulting instruction runs again, and the process spins or
dies with "Bus error" (exit 135), empty stderr, partial output not marked incomplete, and a TUI leaves
the terminal in alternate-screen and mouse mode. Reading every hot path through ``pread`` instead
would cost the zero-copy mmap design (and its measured speed); checking the size before each walk
(``Snapshot.check_unchanged``) still leaves a window between the check and the read.

So ``stable-inspect`` forks right after parsing its arguments. The child runs the command exactly as
before (same stdin/stdout/stderr, same process group). The parent only waits:

* child exits normally → the parent exits with its status;
* child killed by SIGBUS (or SIGSEGV) → "stable-inspect: PATH: the snapshot file changed (shrank?)
  while it was being read; the output above is incomplete" on stderr, exit 2;
* child killed by anything else → "stable-inspect: stopped by signal NAME", exit 128 + signal;
* in every abnormal case the terminal is restored when it is one: the termios settings saved before
  the fork are put back and alternate screen, mouse reporting, bracketed paste and focus events are
  switched off, the cursor shown again.

The parent ignores SIGINT (the child, in the same process group, gets it and reports "interrupted")
and forwards SIGTERM and SIGHUP to the child. Set ``STABLE_INSPECT_NO_SUPERVISOR=1`` to run in one
process (for debuggers and profilers); calls of ``main(argv)`` from Python never fork.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

# Undo what a full-screen terminal app switches on: alternate screen, mouse modes (X10, button,
# any-event, SGR, urxvt), focus events, bracketed paste; then show the cursor and reset attributes.
TERMINAL_RESET = (
    "\x1b[?1049l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l\x1b[?1004l\x1b[?2004l\x1b[?25h\x1b[0m"
)
FAULT_SIGNALS = frozenset({signal.SIGBUS, signal.SIGSEGV})


def supervise(inputs: Sequence[str], *, interactive: bool) -> int | None:
    """Fork; in the child return None (go on and run the command), in the parent wait for the child
    and return the exit status to use. Returns None without forking where fork is unavailable."""
    if os.environ.get("STABLE_INSPECT_NO_SUPERVISOR") or not hasattr(os, "fork"):
        return None
    tty_fd, saved = _save_terminal()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:
        return None
    return _wait(pid, inputs, tty_fd, saved, interactive)


def _save_terminal() -> tuple[int | None, Any]:
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            if os.isatty(fd):
                import termios

                return fd, termios.tcgetattr(fd)
        except (OSError, ValueError, AttributeError, ImportError):
            continue
    return None, None


def _wait(pid: int, inputs: Sequence[str], tty_fd: int | None, saved: Any, interactive: bool) -> int:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except OSError:
            pass

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for forwarded in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(forwarded, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return 2
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    sig: int = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    _restore_terminal(tty_fd, saved, interactive)
    from inspector.safe_text import escape_control

    if sig in FAULT_SIGNALS:
        where = ", ".join(escape_control(p) for p in inputs) or "the snapshot"
        _say(
            f"stable-inspect: {where}: the snapshot file changed (shrank?) while it was being read "
            f"({signal.Signals(sig).name}); any output above is incomplete"
        )
        return 2
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = str(sig)
    _say(f"stable-inspect: stopped by signal {name}")
    return 128 + sig


def _restore_terminal(tty_fd: int | None, saved: Any, interactive: bool) -> None:
    if tty_fd is None:
        return
    try:
        import termios

        termios.tcsetattr(tty_fd, termios.TCSANOW, saved)
    except (OSError, ImportError, ValueError):
        pass
    if interactive:
        try:
            os.write(tty_fd, TERMINAL_RESET.encode())
        except OSError:
            pass


def _say(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
