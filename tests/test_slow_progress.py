"""The progress line of long CLI commands: stderr only, only on a terminal, erased at the end."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

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


def test_only_on_a_terminal_stderr() -> None:
    assert not wanted(io.StringIO())  # stderr is a file or pipe
    assert wanted(_Tty())
    assert not slow_progress.shares_terminal(_Tty(), io.StringIO())  # stdout redirected (--json > out.json)
    assert isinstance(slow_progress.for_command("bench"), slow_progress._Nothing)


# --- the real CLI on a pseudo-terminal (STABLE_INSPECT_PROGRESS_AFTER=0: the line shows at once) ---------


def _map_file(tmp_path: Path) -> Path:
    from inspector.forge import RawImage, forge_btreemap

    image = RawImage()
    image.place(forge_btreemap((k.to_bytes(8, "big"), (k * k).to_bytes(8, "big")) for k in range(3_000)))
    path = tmp_path / "map.bin"
    image.write_to(path, sparse=False)
    return path


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the other side of the pty is closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _run_on_pty(argv: list[str], *, stdout_on_tty: bool, stderr_on_tty: bool) -> tuple[int, bytes, bytes]:
    """(status, bytes on the pty, bytes on the pipes) of ``stable-inspect ARGV``."""
    master, slave = pty.openpty()
    env = {**os.environ, slow_progress.AFTER_ENV: "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector", *argv],
        stdin=subprocess.DEVNULL,
        stdout=slave if stdout_on_tty else subprocess.PIPE,
        stderr=slave if stderr_on_tty else subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    os.close(slave)
    on_tty = _read_all(master)
    piped = b""
    if proc.stdout is not None:
        piped += proc.stdout.read()
    if proc.stderr is not None:
        piped += proc.stderr.read()
    status = proc.wait(timeout=120)
    os.close(master)
    return status, on_tty, piped


@pytest.mark.parametrize("command", [["summary", "--deep", "--json"], ["check", "--json"]])
def test_progress_on_a_terminal_stderr_and_clean_json_on_stdout(tmp_path: Path, command: list[str]) -> None:
    path = _map_file(tmp_path)
    status, err, out = _run_on_pty(
        [command[0], str(path), *command[1:]], stdout_on_tty=False, stderr_on_tty=True
    )
    assert status == 0
    text = err.decode()
    assert f"{command[0]}: " in text and " s" in text  # the line: what runs, how long so far
    assert text.endswith("\r\x1b[K")  # and it is erased at the end
    doc = json.loads(out)  # stdout holds the JSON and nothing else
    assert doc


def test_no_progress_when_stderr_is_redirected(tmp_path: Path) -> None:
    path = _map_file(tmp_path)
    status, on_tty, piped = _run_on_pty(
        ["summary", str(path), "--deep", "--json"], stdout_on_tty=True, stderr_on_tty=False
    )
    assert status == 0
    assert b"\x1b[K" not in on_tty and b"\x1b[K" not in piped
    assert json.loads(on_tty.decode().replace("\r\n", "\n"))["structures"]


def test_one_terminal_for_both_the_line_is_gone_before_the_output(tmp_path: Path) -> None:
    path = _map_file(tmp_path)
    status, on_tty, _ = _run_on_pty(["summary", str(path), "--deep"], stdout_on_tty=True, stderr_on_tty=True)
    assert status == 0
    text = on_tty.decode()
    first_out = text.index("\n")  # the command's first line
    assert "summary: " in text[:first_out]  # the progress line was drawn first …
    erased = text.rindex("\r\x1b[K", 0, first_out)
    assert "summary: " not in text[erased:]  # … and erased before the output, never redrawn over it
