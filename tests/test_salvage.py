"""``salvage`` on the real-library migration fixtures, and on copies of them with forged damage: the right
entries with their pre-upgrade bytes, and never an invented one."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, load_expected, require_fixtures

from inspector.cli import main

AFTER_PRE = (
    "migration/after_stable_save",
    "migration/after_stable_save_small",
    "migration/post_upgrade",
    "migration/post_upgrade_small",
)
CHUNK = 16  # chunk header size (FORMAT.md §3.3)


def salvage_jsonl(
    path: Path | str, capsys: pytest.CaptureFixture[str], *extra: str, memory: str = "4"
) -> tuple[int, list[dict[str, Any]], str]:
    rc = main(["salvage", str(path), "--memory", memory, "--format", "jsonl", *extra])
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines() if line.strip()]
    return rc, rows, out.err


def pre_values() -> dict[str, str]:
    pre = load_expected("migration/pre_upgrade")
    m = next(s for s in pre["structures"] if s["kind"] == "btreemap")
    return {e["key_hex"]: e["value_hex"] for e in m["entries"]}


@pytest.mark.parametrize("name", AFTER_PRE)
def test_salvage_returns_exactly_the_recoverable_keys_with_their_old_bytes(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = load_expected(name)
    recoverable = expected["old_data"]["salvage"]["recoverable_keys"]
    rc, rows, err = salvage_jsonl(FIXTURES / name, capsys)
    assert rc == 0, err
    keys = [bytes.fromhex(r["key_hex"]).decode() for r in rows]
    assert sorted(keys) == sorted(recoverable) and len(keys) == len(set(keys))
    old = pre_values()
    for r in rows:
        assert r["value_hex"] == old[r["key_hex"]]
        assert r["key"] == bytes.fromhex(r["key_hex"]).decode()  # String keys decode as text
        assert isinstance(r["value"], dict)  # Candid Member records
        assert r["node_addr"] > 0 and r["node_physical_addr"] > 0
    if name.startswith("migration/post_upgrade"):
        assert {r["reachability"] for r in rows} == {"unreachable"} and {r["layout"] for r in rows} == {
            "live"
        }
        assert "3 entries reachable from the live root are not listed" in err
    else:
        assert {r["reachability"] for r in rows} == {"reachable"}
        assert {r["layout"] for r in rows} == {"reconstructed"}


def test_the_frontier_node_is_vouched_for_by_its_parent(capsys: pytest.CaptureFixture[str]) -> None:
    """post_upgrade's old leaf 1156 sits in the new frontier chunk: its header now says free."""
    require_fixtures()
    _rc, rows, _err = salvage_jsonl(FIXTURES / "migration/post_upgrade", capsys)
    frontier_rows = [r for r in rows if r["chunk"].startswith("frontier")]
    assert frontier_rows and {r["node_addr"] for r in frontier_rows} == {1156}
    assert all(r["confirmed_by_parent"] > 0 for r in frontier_rows)


def test_reference_marks_identical_entries(capsys: pytest.CaptureFixture[str]) -> None:
    expected = load_expected("migration/post_upgrade")["old_data"]["salvage"]
    rc, rows, err = salvage_jsonl(
        FIXTURES / "migration/post_upgrade", capsys, "--reference", str(FIXTURES / "migration/pre_upgrade")
    )
    assert rc == 0
    assert {r["reference"] for r in rows} == {"identical"} and len(rows) == expected[
        "recoverable_entry_count"
    ]
    assert f"{expected['lost_entry_count']} of its 200 entries were not recovered" in err


def test_reference_for_a_map_of_unknown_id_matches_by_position(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    rc, rows, err = salvage_jsonl(
        FIXTURES / "migration/after_stable_save",
        capsys,
        "--reference",
        str(FIXTURES / "migration/pre_upgrade"),
        memory="?b1",
    )
    assert rc == 0 and len(rows) == 200 and {r["reference"] for r in rows} == {"identical"}
    assert "200 identical" in err


def test_unknown_id_selection(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    rc, rows, err = salvage_jsonl(FIXTURES / "migration/after_stable_save", capsys, memory="4")
    assert (
        rc == 0
        and len(rows) == 200
        and "cannot be placed" in err
        and {r["memory_id"] for r in rows} == {"?b1"}
    )
    rc, rows2, _ = salvage_jsonl(FIXTURES / "migration/after_stable_save", capsys, memory="b1")
    assert rc == 0 and rows2 == rows


def test_healthy_map_has_nothing_to_salvage(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    rc, rows, err = salvage_jsonl(FIXTURES / "migration/pre_upgrade", capsys)
    assert rc == 0 and rows == [] and "200 entries reachable" in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    pre = FIXTURES / "migration/pre_upgrade"
    assert main(["salvage", str(pre), "--memory", "0"]) == 2
    assert "holds a cell, not a BTreeMap" in capsys.readouterr().err
    assert main(["salvage", str(pre), "--memory", "7"]) == 2
    assert "not in this snapshot" in capsys.readouterr().err
    assert main(["salvage", str(pre), "--memory", "nope"]) == 2
    assert main(["salvage", str(pre) + ".missing", "--memory", "4"]) == 2
    assert main(["salvage", str(pre), "--memory", "4", "--reference", str(FIXTURES / "mm_empty")]) == 2


def test_table_format_lists_the_entries(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    assert main(["salvage", str(FIXTURES / "migration/post_upgrade"), "--memory", "4"]) == 0
    out = capsys.readouterr()
    assert "190 entries recovered" in out.out and "unreachable" in out.out


# --- forged damage on copies of post_upgrade: never invent an entry -------------------------------------------


def _post_copy(tmp_path: Path) -> tuple[Path, bytearray, dict[str, Any]]:
    require_fixtures()
    data = bytearray((FIXTURES / "migration/post_upgrade/stable_memory.bin").read_bytes())
    path = tmp_path / "stable_memory.bin"
    return path, data, load_expected("migration/post_upgrade")


def _map_base(expected: dict[str, Any]) -> int:
    return next(s for s in expected["structures"] if s["kind"] == "btreemap")["physical_start"]


def _keys_of_node(expected: dict[str, Any], addr: int) -> list[str]:
    pre = load_expected("migration/pre_upgrade")
    m = next(s for s in pre["structures"] if s["kind"] == "btreemap")
    node = next(n for n in m["nodes"]["list"] if n["addr"] == addr)
    return [bytes.fromhex(k).decode() for k in node["keys_hex"]]


def _old_leaf_beyond_frontier(expected: dict[str, Any]) -> int:
    nodes = expected["old_data"]["old_map_nodes"]["list"]
    return next(
        n["addr"] for n in nodes if n["type"] == "leaf" and n["entries_recoverable"] and n["addr"] > 2000
    )


def test_a_node_whose_chunk_header_says_free_is_not_salvaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data, expected = _post_copy(tmp_path)
    addr = _old_leaf_beyond_frontier(expected)
    data[_map_base(expected) + addr - CHUNK + 4] = 0  # allocated → free: a stale, freed node
    path.write_bytes(bytes(data))
    rc, rows, err = salvage_jsonl(path, capsys)
    lost = set(_keys_of_node(expected, addr))
    got = {bytes.fromhex(r["key_hex"]).decode() for r in rows}
    assert rc == 0 and not lost & got
    assert got == set(expected["old_data"]["salvage"]["recoverable_keys"]) - lost
    assert "stale" in err


def test_a_torn_overflow_chain_is_not_salvaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, data, expected = _post_copy(tmp_path)
    base = _map_base(expected)
    nodes = expected["old_data"]["old_map_nodes"]["list"]
    node = next(n for n in nodes if n["overflow_pages"] and n["entries_recoverable"] and n["addr"] > 2000)
    ovf = struct.unpack_from("<Q", data, base + node["addr"] + 7)[0]
    data[base + ovf : base + ovf + 3] = b"XXX"  # the overflow page is no longer "NOF"
    path.write_bytes(bytes(data))
    rc, rows, err = salvage_jsonl(path, capsys)
    got = {bytes.fromhex(r["key_hex"]).decode() for r in rows}
    assert rc == 0 and not set(_keys_of_node(expected, node["addr"])) & got
    assert "torn" in err


def test_a_cyclic_overflow_chain_is_rejected_not_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data, expected = _post_copy(tmp_path)
    base = _map_base(expected)
    nodes = expected["old_data"]["old_map_nodes"]["list"]
    node = next(n for n in nodes if n["overflow_pages"] and n["entries_recoverable"] and n["addr"] > 2000)
    ovf = struct.unpack_from("<Q", data, base + node["addr"] + 7)[0]
    struct.pack_into("<Q", data, base + ovf + 3, ovf)  # the overflow page points to itself
    path.write_bytes(bytes(data))
    rc, rows, _err = salvage_jsonl(path, capsys)
    got = {bytes.fromhex(r["key_hex"]).decode() for r in rows}
    assert rc == 0 and not set(_keys_of_node(expected, node["addr"])) & got


def test_keys_out_of_order_are_not_salvaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, data, expected = _post_copy(tmp_path)
    base = _map_base(expected)
    nodes = expected["old_data"]["old_map_nodes"]["list"]
    node = next(n for n in nodes if n["type"] == "leaf" and n["entries_recoverable"] and n["addr"] > 2000)
    # The first key's first byte becomes 0x7e ('~'), which sorts after every other key's first byte.
    p = base + node["addr"] + 15 + 4
    data[p] = 0x7E
    path.write_bytes(bytes(data))
    rc, rows, err = salvage_jsonl(path, capsys)
    got = {bytes.fromhex(r["key_hex"]).decode() for r in rows}
    assert rc == 0 and not set(_keys_of_node(expected, node["addr"])[1:]) & got
    assert "not in order" in err


def test_a_frontier_node_without_a_surviving_parent_is_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, data, expected = _post_copy(tmp_path)
    base = _map_base(expected)
    # Break every old internal node that names 1156 as a child: nothing vouches for the frontier node.
    pre = load_expected("migration/pre_upgrade")
    m = next(s for s in pre["structures"] if s["kind"] == "btreemap")
    parents = [n["addr"] for n in m["nodes"]["list"] if 1156 in n["children"]]
    assert parents
    for p in parents:
        data[base + p : base + p + 3] = b"XXX"
    path.write_bytes(bytes(data))
    rc, rows, err = salvage_jsonl(path, capsys)
    assert rc == 0 and 1156 not in {r["node_addr"] for r in rows}
    assert "no surviving parent" in err


def test_a_wiped_map_header_is_salvaged_from_its_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """after_stable_save with the map's header overwritten too: the nodes alone give back every entry,
    byte for byte as pre_upgrade held them, and nothing else."""
    require_fixtures()
    data = bytearray((FIXTURES / "migration/after_stable_save/stable_memory.bin").read_bytes())
    prev = load_expected("migration/after_stable_save")["previous_layout"]["memory_manager"]
    start = next(m for m in prev["memories"] if m["id"] == 4)["bucket_physical_ranges"][0][0]
    data[start : start + 100] = bytes(100)  # BTR and BTA headers gone
    path = tmp_path / "stable_memory.bin"
    path.write_bytes(bytes(data))
    rc, rows, err = salvage_jsonl(path, capsys)
    pre = next(s for s in load_expected("migration/pre_upgrade")["structures"] if s["kind"] == "btreemap")
    assert rc == 0 and {r["layout"] for r in rows} == {"headless"}
    assert sorted((r["key_hex"], r["value_hex"]) for r in rows) == sorted(
        (e["key_hex"], e["value_hex"]) for e in pre["entries"]
    )
    assert "header and allocator are gone" in err


def test_reinitialised_manager_over_quickstart(capsys: pytest.CaptureFixture[str]) -> None:
    """FORMAT.md §11.2: an empty map re-created over the old one; every old entry survives, unchanged."""
    require_fixtures()
    sa = FIXTURES / "standalone/v0.6.0"
    rc, rows, err = salvage_jsonl(
        sa / "corrupt_mm_reinit_after_didl.bin",
        capsys,
        "--reference",
        str(sa / "mm_quickstart.bin"),
        memory="1",
    )
    assert rc == 0 and len(rows) == 100 and {r["reference"] for r in rows} == {"identical"}
    # BTreeMap<u128, u128> with 7i → 1000i + 1 (standalone/README.md): big-endian integers.
    assert all(int(r["value_hex"], 16) == 1000 * (int(r["key_hex"], 16) // 7) + 1 for r in rows)
    assert "0 of its 100 entries were not recovered" in err
