"""`entries --format jsonl` reproduces every fixture structure's count and entries_sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import FIXTURES, expected_files, require_fixtures

from inspector.cli import main

KINDS = ("cell", "btreemap", "vec", "minheap", "log")


def entries_digest(lines: list[dict]) -> str:
    """The fixtures' definition: u32 BE len(key), key, u32 BE len(value), value, per entry in order."""
    h = hashlib.sha256()
    for obj in lines:
        key = bytes.fromhex(obj.get("key_hex", ""))
        value = bytes.fromhex(obj["value_hex"])
        h.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
    return h.hexdigest()


def run_jsonl(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert main(["entries", *args, "--format", "jsonl"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def cases() -> list[tuple[Path, dict]]:
    out = []
    for path in expected_files():
        for s in json.loads(path.read_text())["structures"]:
            if s["kind"] in KINDS:
                out.append((path, s))
    return out


def case_id(case: tuple[Path, dict]) -> str:
    path, s = case
    return f"{path.parent.relative_to(FIXTURES)}:{s['kind']}:{s['memory_id']}"


CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_entries_count_and_digest(case: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    path, s = case
    mid = s["memory_id"]
    memory = str(mid[0] if isinstance(mid, list) else mid)
    lines = run_jsonl(capsys, str(path.parent), "--memory", memory)
    assert len(lines) == s["count"]
    if s["kind"] == "cell":  # a cell has one value, described by its own digest
        assert hashlib.sha256(bytes.fromhex(lines[0]["value_hex"])).hexdigest() == s["value_sha256"]
        assert len(lines[0]["value_hex"]) // 2 == s["header"]["value_length"]
    else:
        assert entries_digest(lines) == s["entries_sha256"]
    if s["kind"] in ("vec", "minheap", "log"):
        assert all("key_hex" not in line for line in lines)


def test_log_either_half(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    exp = json.loads((FIXTURES / "vec_log_heap" / "expected.json").read_text())
    log = next(s for s in exp["structures"] if s["kind"] == "log")
    a = run_jsonl(capsys, str(FIXTURES / "vec_log_heap"), "--memory", str(log["memory_id"][0]))
    b = run_jsonl(capsys, str(FIXTURES / "vec_log_heap"), "--memory", str(log["memory_id"][1]))
    assert a == b and len(a) == 100


def test_limit_stops_early(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    lines = run_jsonl(capsys, str(FIXTURES / "btree_u64_many"), "--memory", "raw", "--limit", "7")
    assert len(lines) == 7
    keys = [int(line["key_hex"], 16) for line in lines]
    assert keys == sorted(keys)
    # u64 keys and values decode as big-endian integers (decimal strings in JSON).
    assert lines[0]["key"] == str(keys[0])


def test_table_output_lists_decoded_candid(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    assert (
        main(["entries", str(FIXTURES / "migration" / "pre_upgrade"), "--memory", "4", "--limit", "3"]) == 0
    )
    out = capsys.readouterr().out
    assert "200 entries" in out and "record" in out


def test_unknown_memory_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    assert main(["entries", str(FIXTURES / "cell_and_map"), "--memory", "9"]) == 2
    assert "not in this snapshot" in capsys.readouterr().err
