"""``stable-inspect check``: exit status, rich output, ``--json`` and ``--no-scan``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, load_expected, require_fixtures

from inspector.cli import main


def check_json(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    rc = main(["check", "--json", *extra, str(path)])
    return rc, json.loads(capsys.readouterr().out)


def test_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    assert main(["check", str(FIXTURES / "cell_and_map")]) == 0
    assert main(["check", str(FIXTURES / "migration/after_stable_save")]) == 1
    assert main(["check", str(FIXTURES / "migration/post_upgrade_small")]) == 1
    assert main(["check", str(FIXTURES / "standalone/v0.6.0/corrupt_mm_reinit_after_didl.bin")]) == 1
    assert main(["check", str(tmp_path / "missing.bin")]) == 2
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert main(["check", str(empty)]) == 2
    assert main(["check", str(tmp_path)]) == 2  # a directory without a snapshot
    capsys.readouterr()


def test_rich_output_starts_with_the_diagnosis(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    assert main(["check", str(FIXTURES / "migration/after_stable_save")]) == 1
    out = capsys.readouterr().out
    assert out.lstrip().startswith("Diagnosis")
    assert "stable_save_blob" in out and "memory_manager_clobbered" in out
    assert out.index("Diagnosis") < out.index("Findings")


def test_healthy_output(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    assert main(["check", str(FIXTURES / "btree_u64_many")]) == 0
    out = capsys.readouterr().out
    assert "No problems found" in out and "Diagnosis" not in out


def test_json_is_the_summary_object_with_forensics(capsys: pytest.CaptureFixture[str]) -> None:
    expected = load_expected("migration/after_stable_save")
    rc, got = check_json(FIXTURES / "migration/after_stable_save", capsys)
    assert rc == 1
    assert not [k for k in got if k.startswith("_")]
    assert got["memory_manager"]["present"] is False
    assert got["stable_save"]["range"] == expected["stable_save"]["range"]
    assert got["stable_save"]["complete"] is True and "decoded" in got["stable_save"]
    assert got["reconstructed"]["bucket_size_in_pages"] == expected["trio"]["bucket_size_in_pages"]
    assert got["diagnosis"] and got["diagnosis"][0].startswith("What happened")
    codes = {f["code"] for f in got["findings"]}
    assert {"stable_save_blob", "memory_manager_clobbered"} <= codes
    # The reconstructed map is decoded like any structure.
    assert any(s["kind"] == "btreemap" and s["memory_id"] == "?b1" for s in got["structures"])


def test_json_of_a_healthy_snapshot_has_no_diagnosis(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    rc, got = check_json(FIXTURES / "cell_and_map", capsys)
    assert rc == 0 and "diagnosis" not in got and "stable_save" not in got
    assert all(f["severity"] != "error" for f in got["findings"])


def test_no_scan(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    rc, got = check_json(FIXTURES / "migration/post_upgrade", capsys, "--no-scan")
    assert "orphaned_data" not in {f["code"] for f in got["findings"]}
    assert rc == 0  # nothing else is wrong with the re-initialised manager's own structures
    rc, got = check_json(FIXTURES / "migration/post_upgrade", capsys)
    assert rc == 1 and "orphaned_data" in {f["code"] for f in got["findings"]}


def test_v1_slot_overflow_is_reported_by_check(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    rc, got = check_json(FIXTURES / "standalone/v0.7.2/corrupt_v1_slot_overflow.bin", capsys)
    assert rc == 1 and "v1_slot_overflow" in {f["code"] for f in got["findings"]}
