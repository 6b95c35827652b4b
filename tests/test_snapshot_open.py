"""Opening snapshots: raw files of any name, dfx / icp-cli snapshot directories, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, require_fixtures

from inspector.cli import main
from inspector.snapshot import DOWNLOAD_CHUNK_SIZE, InputError, open_snapshot

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "snapshots" / "samples" / "snapshot_dir"


def summary(capsys: pytest.CaptureFixture[str], path: Path) -> dict:
    assert main(["summary", "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def test_snapshot_directory_metadata_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.loads((SAMPLE_DIR / "metadata.json").read_text())
    got = summary(capsys, SAMPLE_DIR)
    assert got["file"]["size_bytes"] == (SAMPLE_DIR / "stable_memory.bin").stat().st_size
    assert got["snapshot_metadata"]["stable_memory_size"] == meta["stable_memory_size"]
    assert got["memory_manager"]["present"] is True
    assert not [f for f in got["findings"] if f["code"] == "metadata_size_mismatch"]


def test_metadata_size_mismatch_and_extra_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(SAMPLE_DIR / "stable_memory.bin", tmp_path / "stable_memory.bin")
    size = (tmp_path / "stable_memory.bin").stat().st_size
    meta = {"source": "taken_from_canister", "stable_memory_size": size + 65_536, "brand_new_key": {"x": 1}}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    got = summary(capsys, tmp_path)
    (f,) = [f for f in got["findings"] if f["code"] == "metadata_size_mismatch"]
    assert f["severity"] == "error" and f["physical_ranges"] == [[size, size + 65_536]]
    assert got["snapshot_metadata"]["source"] == "taken_from_canister"


def test_dfx_directory_without_stable_memory_says_it_is_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "metadata.json").write_text(json.dumps({"stable_memory_size": 0, "wasm_memory_size": 65536}))
    (tmp_path / "wasm_memory.bin").write_bytes(b"\0" * 16)
    got = summary(capsys, tmp_path)
    assert got["file"]["size_bytes"] == 0
    assert [f["code"] for f in got["findings"]] == ["stable_memory_empty"]


def test_interrupted_icp_download_lists_missing_ranges(tmp_path: Path) -> None:
    total = 3 * DOWNLOAD_CHUNK_SIZE + 1_000
    with open(tmp_path / "stable_memory.bin", "wb") as fh:
        fh.truncate(total)
    (tmp_path / "metadata.json").write_text(json.dumps({"stable_memory_size": total}))
    progress = {"stable_memory": {"frontier": DOWNLOAD_CHUNK_SIZE, "ahead": [2 * DOWNLOAD_CHUNK_SIZE]}}
    (tmp_path / ".download_progress.json").write_text(json.dumps(progress))
    with open_snapshot(tmp_path) as snap:
        assert snap.missing_ranges == [
            (DOWNLOAD_CHUNK_SIZE, 2 * DOWNLOAD_CHUNK_SIZE),
            (3 * DOWNLOAD_CHUNK_SIZE, total),
        ]
        codes = [f.code for f in snap.findings]
        assert "download_incomplete" in codes and "size_not_page_multiple" in codes


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.bin", "no such file"),
        (lambda p: p, "holds no snapshot"),
        (lambda p: (p / "empty.bin").write_bytes(b"") and p / "empty.bin" or p / "empty.bin", "empty"),
    ],
    ids=["missing", "directory-without-snapshot", "empty-file"],
)
def test_unreadable_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    for command in (["summary"], ["check"], ["entries", "--memory", "raw"]):
        assert main([command[0], str(path), *command[1:]]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_odd_file_name_and_odd_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    data = (FIXTURES / "standalone" / "v0.6.0" / "cell_string.bin").read_bytes()
    odd = tmp_path / "backup.img"
    odd.write_bytes(data[:1000])
    got = summary(capsys, odd)
    assert got["structures"][0]["kind"] == "cell"
    assert [f["code"] for f in got["findings"] if f["code"] == "size_not_page_multiple"]


def test_open_snapshot_refuses_a_fifo(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        open_snapshot(fifo)
