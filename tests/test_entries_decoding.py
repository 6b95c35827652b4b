"""Decoded values through `entries`: Candid with .did names equals the official JS decoder's output;
a schema overrides the guessed decoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, require_fixtures

from inspector.cli import main


def jsonl(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict]:
    assert main(["entries", *args, "--format", "jsonl"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize("fixture", ["cell_and_map", "migration/pre_upgrade"])
def test_map_values_equal_the_official_decoder_with_did_names(
    fixture: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_fixtures()
    expected = json.loads((FIXTURES / fixture / "expected.json").read_text())
    m = next(s for s in expected["structures"] if s["kind"] == "btreemap")
    did = tmp_path / "types.did"
    did.write_text(m["value_encoding"]["type_definitions_did"])
    lines = jsonl(capsys, str(FIXTURES / fixture), "--memory", str(m["memory_id"]), "--did", str(did))
    official = dict(map(tuple, m["value_encoding"]["decoded_by_official_js"]["decoded"]))
    assert len(lines) == len(official) == m["count"]
    for line in lines:
        assert line["key"] == bytes.fromhex(line["key_hex"]).decode()
        assert line["value"] == official[line["key"]]


def test_cell_value_equals_the_official_decoder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    expected = json.loads((FIXTURES / "cell_and_map" / "expected.json").read_text())
    cell = next(s for s in expected["structures"] if s["kind"] == "cell")
    did = tmp_path / "types.did"
    did.write_text(cell["value_encoding"]["type_definitions_did"])
    (line,) = jsonl(capsys, str(FIXTURES / "cell_and_map"), "--memory", "0", "--did", str(did))
    assert line["value"] == cell["value_encoding"]["decoded_by_official_js"]["decoded"]


def test_without_did_fields_are_named_by_hash(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    line = jsonl(capsys, str(FIXTURES / "migration" / "pre_upgrade"), "--memory", "4", "--limit", "1")[0]
    assert "name" not in line["value"] and any(k.startswith("_") for k in line["value"])


def test_schema_overrides_the_guess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    schema = tmp_path / "schema.toml"
    schema.write_text('[memory.raw]\nkey = "raw"\nvalue = "u64"\n')
    line = jsonl(
        capsys, str(FIXTURES / "btree_u64_many"), "--memory", "raw", "--limit", "1", "--schema", str(schema)
    )[0]
    assert line["key"] == line["key_hex"]  # raw keys are shown as hex
    assert line["value"] == str(int(line["value_hex"], 16))
    bad = tmp_path / "bad.toml"
    bad.write_text('[memory.raw]\nvalue = "u64<<"\n')
    assert main(["entries", str(FIXTURES / "btree_u64_many"), "--memory", "raw", "--schema", str(bad)]) == 2
    assert "schema" in capsys.readouterr().err


def test_fixed_key_size_override(capsys: pytest.CaptureFixture[str]) -> None:
    """--key-size forces the v2 key layout; the right one reproduces the digest, a wrong one does not crash."""
    require_fixtures()
    path = str(FIXTURES / "standalone" / "v0.6.0" / "btree_u64_u64.bin")
    right = jsonl(capsys, path, "--memory", "raw", "--key-size", "8")
    assert [int(x["key_hex"], 16) for x in right] == list(range(50))
    assert [int(x["value_hex"], 16) for x in right] == [k * k for k in range(50)]
    assert main(["entries", path, "--memory", "raw", "--key-size", "4", "--format", "jsonl"]) == 0
    capsys.readouterr()


def test_reconstructed_memory_by_first_bucket(capsys: pytest.CaptureFixture[str]) -> None:
    """after_stable_save lost the bucket table: the surviving map is memory '?b1' (its first bucket)."""
    require_fixtures()
    lines = jsonl(capsys, str(FIXTURES / "migration" / "after_stable_save"), "--memory", "?b1")
    pre = json.loads((FIXTURES / "migration" / "pre_upgrade" / "expected.json").read_text())
    old = next(s for s in pre["structures"] if s["kind"] == "btreemap")
    assert len(lines) == old["count"] == 200
    assert {line["key_hex"] for line in lines} == {e["key_hex"] for e in old["entries"]}
