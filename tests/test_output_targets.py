"""Issue 16 item 4 (and issue 14's ``extract -o -``): ``-o`` never replaces a device, a FIFO or a link.

Every case runs the real CLI (``python -m inspector``) in a subprocess, so stdout is a real pipe, and
checks afterwards what kind of file each target still is.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from inspector.output import OutputError, OutputTarget, check_output, write_output
from inspector.views.export import ExportError
from inspector.views.export import check_output as export_check

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "snapshots" / "samples" / "healthy" / "stable_memory.bin"


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    p = tmp_path / "in.bin"
    if not SAMPLE.exists():
        pytest.skip("no healthy sample")
    shutil.copyfile(SAMPLE, p)
    return p


def _extract(snap: Path, out: str, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "inspector", "extract", str(snap), "--memory", "4", "-o", out, *extra],
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )


def _reference(snap: Path, tmp_path: Path) -> bytes:
    ref = tmp_path / "ref.bin"
    r = _extract(snap, str(ref))
    assert r.returncode == 0, r.stderr
    return ref.read_bytes()


def test_dash_and_dev_stdout_write_to_stdout(snap: Path, tmp_path: Path) -> None:
    want = _reference(snap, tmp_path)
    assert len(want) > 0
    for name in ("-", "/dev/stdout"):
        r = _extract(snap, name)
        assert r.returncode == 0, r.stderr
        assert r.stdout == want
        assert b"standard output" in r.stderr
    # /dev/stdout is still the system's symlink (never renamed over), and nothing was left behind.
    assert stat.S_ISLNK(os.lstat("/dev/stdout").st_mode)
    assert not Path("/dev/stdout.partial").exists()


def test_character_device_is_written_in_place(snap: Path) -> None:
    r = _extract(snap, "/dev/null")
    assert r.returncode == 0, r.stderr
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_fifo_is_written_through(snap: Path, tmp_path: Path) -> None:
    want = _reference(snap, tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    t = threading.Thread(target=reader)
    t.start()
    r = _extract(snap, str(fifo), "--force")
    t.join(timeout=60)
    assert r.returncode == 0, r.stderr
    assert got == [want]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_symlinks_only_to_regular_files(snap: Path, tmp_path: Path) -> None:
    want = _reference(snap, tmp_path)
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    r = _extract(snap, str(link))
    assert r.returncode == 2 and b"already exists" in r.stderr
    r = _extract(snap, str(link), "--force")
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and real.read_bytes() == want
    for target in (tmp_path / "sub", tmp_path / "nowhere"):
        bad = tmp_path / f"to-{target.name}"
        bad.symlink_to(target)
        if target.name == "sub":
            target.mkdir()
        r = _extract(snap, str(bad), "--force")
        assert r.returncode == 2, r.stderr
        assert b"symlink" in r.stderr and len(r.stderr.splitlines()) == 1
        assert bad.is_symlink()
    dev_link = tmp_path / "to-null"
    dev_link.symlink_to("/dev/null")
    r = _extract(snap, str(dev_link), "--force")
    assert r.returncode == 2 and b"symlink" in r.stderr
    assert dev_link.is_symlink()


@pytest.mark.parametrize(
    "target, words",
    [("", b"empty"), ("{snap}/x", b"Not a directory"), ("{tmp}", b"directory")],
)
def test_bad_targets_are_one_line_errors(snap: Path, tmp_path: Path, target: str, words: bytes) -> None:
    out = target.format(snap=snap, tmp=tmp_path)
    r = _extract(snap, out, "--force")
    assert r.returncode == 2
    assert words in r.stderr and len(r.stderr.splitlines()) == 1
    assert b"Errno" not in r.stderr and b"internal error" not in r.stderr
    assert tmp_path.is_dir() and snap.is_file()


def test_check_output_kinds(tmp_path: Path) -> None:
    assert check_output("-") == OutputTarget("stdout", None)
    assert check_output("/dev/stdout").kind == "stdout"
    assert check_output("/dev/null").kind == "stream"
    assert check_output(tmp_path / "new.bin").kind == "file"
    with pytest.raises(OutputError, match="refusing to overwrite the input"):
        check_output(tmp_path / ".." / tmp_path.name / "x", [tmp_path / "x"], force=True)


def test_write_output_never_renames_over_a_non_regular_file(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"

    def becomes_a_directory(fh: object) -> None:
        out.mkdir()  # the target changes kind while the bytes are being written

    with pytest.raises(OutputError, match="no longer a regular file"):
        write_output(out, becomes_a_directory)
    assert out.is_dir() and not (tmp_path / "out.bin.partial").exists()


def test_tui_export_uses_the_same_rules(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    link = tmp_path / "l"
    link.symlink_to(d)
    with pytest.raises(ExportError, match="symlink"):
        export_check(link, [], overwrite=True)
    with pytest.raises(ExportError, match="standard output"):
        export_check("-", [], overwrite=True)
    assert export_check("/dev/null", [], overwrite=True) == Path("/dev/null")
