"""Issue 16 item 6: a snapshot that shrinks while it is read ends with one line and exit 2, never
"Bus error" (rc 135), and the TUI's terminal is restored.

Deterministic: the command runs in a subprocess whose ``Snapshot.check_unchanged`` is replaced by a
hook that, on its N-th call, truncates the test's own copy of the snapshot and returns as if the size
check had passed (the race the check cannot close: the file shrinks right after it). The next read
of a mapped page past the new end of file raises a real SIGBUS; ``inspector.supervise`` turns it into
the message.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from inspector.forge import RawImage, forge_btreemap

ROOT = Path(__file__).resolve().parent.parent
HOOK = """
import os, signal, sys
from inspector import snapshot
after = int(os.environ["CUT_ON_CALL"])
calls = 0
def cut(self):
    global calls
    calls += 1
    if calls == after:
        os.truncate(self.file_path, 4096)
snapshot.Snapshot.check_unchanged = cut
if os.environ.get("BUS_IN_TUI"):
    from inspector.tui import app as tui_app
    mounted = tui_app.InspectorApp.on_mount
    def on_mount(self):
        mounted(self)
        self.set_timer(0.3, lambda: os.kill(os.getpid(), signal.SIGBUS))
    tui_app.InspectorApp.on_mount = on_mount
from inspector.cli import main
sys.argv = ["stable-inspect", *sys.argv[1:]]
sys.exit(main())
"""


@pytest.fixture(scope="module")
def map_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sigbus")
    entries = [(i.to_bytes(8, "big"), (i * 7).to_bytes(8, "big") * 4) for i in range(30_000)]
    img = RawImage()
    img.place(forge_btreemap(entries))
    path = d / "map.bin"
    img.write_to(path)
    (d / "hook.py").write_text(HOOK)
    return path


def _run(map_file: Path, tmp_path: Path, argv: list[str], cut_on: int) -> subprocess.CompletedProcess[str]:
    copy = tmp_path / "m.bin"
    shutil.copyfile(map_file, copy)
    env = {**os.environ, "CUT_ON_CALL": str(cut_on)}
    env.pop("STABLE_INSPECT_NO_SUPERVISOR", None)
    args = [a.replace("SNAP", str(copy)) for a in argv]
    proc = subprocess.run(
        [sys.executable, str(map_file.parent / "hook.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert copy.stat().st_size == 4096  # the hook really cut the file
    return proc


@pytest.mark.parametrize(
    "argv",
    [
        ["entries", "SNAP", "--memory", "raw", "--format", "jsonl"],
        ["summary", "SNAP", "--deep"],
        ["check", "SNAP"],
        ["salvage", "SNAP", "--memory", "raw"],
    ],
    ids=lambda a: " ".join(a[:1] + a[2:]),
)
def test_shrinking_file_ends_with_one_line_and_exit_2(
    map_file: Path, tmp_path: Path, argv: list[str]
) -> None:
    proc = _run(map_file, tmp_path, argv, cut_on=1)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "m.bin" in lines[0] and ("shrank" in lines[0] or "truncated" in lines[0]), lines[0]


def test_partial_jsonl_is_followed_by_an_error_line(map_file: Path, tmp_path: Path) -> None:
    # The third size check comes after 4,096 lines: those are out, then the walk faults.
    proc = _run(map_file, tmp_path, ["entries", "SNAP", "--memory", "raw", "--format", "jsonl"], cut_on=3)
    assert proc.returncode == 2, proc.stderr
    assert 0 < proc.stdout.count("\n") < 30_000
    assert proc.stderr.splitlines()[-1].endswith("any output above is incomplete")


def test_tui_bus_error_restores_the_terminal(map_file: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m.bin"
    shutil.copyfile(map_file, copy)
    env = {**os.environ, "CUT_ON_CALL": "0", "BUS_IN_TUI": "1", "TERM": "xterm-256color"}
    env.pop("STABLE_INSPECT_NO_SUPERVISOR", None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: run the TUI on the pty
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, str(map_file.parent / "hook.py"), str(copy)], env)
    before = termios.tcgetattr(fd)
    out = bytearray()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    try:
        after = termios.tcgetattr(fd)
    except termios.error:
        after = None
    os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 2, (status, bytes(out[-400:]))
    assert b"\x1b[?1049h" in out  # the app had switched to the alternate screen
    tail = bytes(out[out.rindex(b"\x1b[?1049h") :])
    assert b"\x1b[?1049l" in tail and b"\x1b[?1000l" in tail and b"\x1b[?25h" in tail
    assert b"SIGBUS" in tail and b"incomplete" in tail
    if after is not None:  # the line discipline is back to what it was before the app went raw
        assert after[3] == before[3]
