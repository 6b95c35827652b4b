"""The one place that writes a user-named output (``extract -o``, the TUI export, ``repair -o``).

Rules, in order (issue 16 item 4), so that no input and no device is ever clobbered:

* ``-`` and ``/dev/stdout`` (also ``/dev/fd/1``) mean standard output; nothing is created or renamed.
* The output is never an input: refused when it is an input by path, by resolved path or by inode.
* A character device (``/dev/null``, a terminal) or a FIFO is written in place, never replaced.
* A symlink is followed only when it resolves to a regular file (that file is then replaced, the link
  stays); a dangling link or one to anything else is refused.
* A regular file is written as ``NAME.partial`` (created afresh with ``O_EXCL``, so a planted link
  there cannot redirect the write) and renamed over ``NAME`` only once complete, so a failed write
  never leaves half a file under the chosen name. An existing file is replaced only with ``force``.
* Anything else (a directory, a block device, a socket) is refused, and nothing is ever renamed over
  something that is not a regular file (checked again just before the rename).

API: :func:`check_output` validates a target and returns an :class:`OutputTarget` (what the TUI asks
before confirming); :func:`write_output` writes through a ``writer(binary_file)`` callback. Both raise
:class:`OutputError`, whose message is one line naming the path, without ``[Errno N]``.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from inspector.errors import UsageProblem

__all__ = ["STDOUT_NAMES", "OutputError", "OutputTarget", "check_output", "write_output"]

STDOUT_NAMES = frozenset({"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})
Writer = Callable[[BinaryIO], object]


class OutputError(UsageProblem):
    """An output that cannot or must not be written (an input, exists, a directory, unwritable…)."""


@dataclass(frozen=True)
class OutputTarget:
    """Where the bytes go. ``kind``: ``stdout``; ``stream`` (a character device or FIFO, written in
    place); ``file`` (a regular file, written to ``path.partial`` and renamed over ``path``)."""

    kind: Literal["stdout", "stream", "file"]
    path: Path | None
    exists: bool = False

    def __str__(self) -> str:
        return "standard output" if self.path is None else str(self.path)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _is_input(out: Path, inputs: Sequence[Path | None]) -> bool:
    for src in inputs:
        if src is None:
            continue
        try:
            if out.resolve() == src.resolve():
                return True
            if out.exists() and src.exists() and os.path.samefile(out, src):
                return True
        except (OSError, RuntimeError):  # a symlink loop cannot be an input either
            continue
    return False


def _kind_name(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_output(
    target: str | os.PathLike[str],
    inputs: Sequence[Path | None] = (),
    *,
    force: bool = False,
    force_hint: str = " (use --force to overwrite)",
) -> OutputTarget:
    """Validate an output target; raise :class:`OutputError` with a one-line reason when refused."""
    text = os.fspath(target)
    if not text.strip():
        raise OutputError("the output path is empty")
    if "\0" in text:
        raise OutputError("the output path contains a NUL byte")
    if text in STDOUT_NAMES:
        return OutputTarget("stdout", None)
    out = Path(text).expanduser()
    if _is_input(out, inputs):
        raise OutputError(f"{out}: that is the input snapshot; refusing to overwrite the input")
    try:
        lst = os.lstat(out)
    except FileNotFoundError:
        lst = None
    except OSError as exc:  # e.g. "Not a directory" for in.bin/x
        raise OutputError(f"{out}: cannot write there: {_why(exc)}") from None
    if lst is not None and stat.S_ISLNK(lst.st_mode):
        try:
            real = out.resolve(strict=True)
            st = os.stat(real)
        except (OSError, RuntimeError):
            raise OutputError(f"{out}: a symlink that leads nowhere; refusing to write through it") from None
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{out}: a symlink to {_kind_name(st.st_mode)}; refusing to write through it")
        out, lst = real, st
    if lst is not None:
        mode = lst.st_mode
        if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
            return OutputTarget("stream", out, True)
        if not stat.S_ISREG(mode):
            raise OutputError(f"{out}: is {_kind_name(mode)}")
        if not force:
            raise OutputError(f"{out}: already exists{force_hint}")
        return OutputTarget("file", out, True)
    parent = out.parent
    if not parent.exists():
        raise OutputError(f"{parent}: no such directory")
    if not parent.is_dir():
        raise OutputError(f"{parent}: not a directory")
    return OutputTarget("file", out, False)


def write_output(
    target: OutputTarget | str | os.PathLike[str],
    writer: Writer,
    *,
    inputs: Sequence[Path | None] = (),
    force: bool = False,
) -> OutputTarget:
    """Write through ``writer(binary_file)`` following the module's rules; returns where it went."""
    t = target if isinstance(target, OutputTarget) else check_output(target, inputs, force=force)
    if t.kind == "stdout":
        out = sys.stdout.buffer
        writer(out)
        out.flush()
        return t
    assert t.path is not None
    if t.kind == "stream":
        try:
            # No O_CREAT, no O_TRUNC: a device or FIFO is written into, never made or replaced.
            fd = os.open(t.path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
        except OSError as exc:
            raise OutputError(f"{t.path}: cannot write: {_why(exc)}") from None
        try:
            fst = os.fstat(fd)
            if not (stat.S_ISCHR(fst.st_mode) or stat.S_ISFIFO(fst.st_mode)):
                raise OutputError(f"{t.path}: changed while being opened; nothing written")
            with os.fdopen(fd, "wb") as fh:
                fd = -1
                writer(fh)
        except OSError as exc:
            raise OutputError(f"{t.path}: cannot write: {_why(exc)}") from None
        finally:
            if fd >= 0:
                os.close(fd)
        return t
    _write_atomic(t.path, writer)
    return t


def partial_path(out: Path) -> Path:
    """Where ``out`` is built before it is renamed into place: ``NAME.partial`` beside it."""
    return out.with_name(out.name + ".partial")


@contextmanager
def removed_on_failure(tmp: Path, remove: Callable[[Path], None]) -> Iterator[None]:
    """Run a body that builds ``tmp`` and renames it over the output; on any failure (an OSError, a
    refusal, Ctrl-C) ``remove(tmp)`` and re-raise, so a failed write never leaves half an output."""
    try:
        yield
    except BaseException:
        remove(tmp)
        raise


def _write_atomic(out: Path, writer: Writer) -> None:
    tmp = partial_path(out)
    try:
        with removed_on_failure(tmp, _unlink_quietly):
            _build_and_rename(tmp, out, writer)
    except OSError as exc:
        raise OutputError(f"{out}: cannot write: {_why(exc)}") from None


def _build_and_rename(tmp: Path, out: Path, writer: Writer) -> None:
    # A leftover (or planted) NAME.partial may be a symlink or hard link to an input: unlink the
    # name and create afresh ("x": O_EXCL), so opening it can never write into some other file.
    try:
        tmp_mode = os.lstat(tmp).st_mode
    except FileNotFoundError:
        tmp_mode = None
    if tmp_mode is not None:
        if stat.S_ISDIR(tmp_mode):
            raise OutputError(f"{tmp}: is a directory; remove it first")
        tmp.unlink()
    with open(tmp, "xb") as fh:
        writer(fh)
    try:
        now = os.lstat(out).st_mode
    except FileNotFoundError:
        now = None
    if now is not None and not stat.S_ISREG(now):
        raise OutputError(f"{out}: is no longer a regular file; refusing to replace it")
    os.replace(tmp, out)


def _unlink_quietly(p: Path) -> None:
    try:
        if not p.is_dir():
            p.unlink(missing_ok=True)
    except OSError:
        pass
