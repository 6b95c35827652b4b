"""`summary --json` and `extract` against every real-library fixture's expected.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import FIXTURES, expected_params, is_healthy, require_fixtures

from inspector.cli import main

MM_FIELDS = ("layout_version", "bucket_size_in_pages", "num_allocated_buckets", "bucket_owners")
HEADER_KEYS = {
    "cell": ("layout_version", "value_length"),
    "btreemap": ("layout_version", "page_size", "max_key_size", "max_value_size", "root_addr", "length"),
    "vec": ("layout_version", "length", "max_entry_size", "is_fixed_size"),
    "minheap": ("layout_version", "length", "max_entry_size", "is_fixed_size"),
    "log": ("layout_version", "length"),
}


def summary_json(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["summary", "--json", *extra, str(path)]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("expected_path", expected_params())
def test_summary_matches_expected(expected_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = json.loads(expected_path.read_text())
    got = summary_json(expected_path.parent / "stable_memory.bin", capsys)
    assert got["file"]["size_bytes"] == expected["file"]["size_bytes"]
    emm, gmm = expected["memory_manager"], got["memory_manager"]
    assert gmm["present"] == emm["present"]
    if emm["present"]:
        for key in MM_FIELDS:
            assert gmm[key] == emm[key], key
        gmem = {m["id"]: m for m in gmm["memories"]}
        for m in emm["memories"]:
            assert gmem[m["id"]]["size_pages"] == m["size_pages"]
            assert gmem[m["id"]]["buckets"] == m["buckets"]
    gstructs = {json.dumps(s["memory_id"]): s for s in got["structures"]}
    for s in expected["structures"]:
        if s["kind"] not in HEADER_KEYS:
            continue  # raw_pattern memories are plain data: no structure to agree on
        mine = gstructs[json.dumps(s["memory_id"])]
        assert mine["kind"] == s["kind"]
        if "physical_start" in s:
            assert mine["physical_start"] == s["physical_start"]
        for key in HEADER_KEYS[s["kind"]]:
            assert mine["header"][key] == s["header"][key], (s["kind"], key)


@pytest.mark.parametrize("expected_path", expected_params())
def test_extract_every_memory_has_the_library_digest(expected_path: Path, tmp_path: Path) -> None:
    expected = json.loads(expected_path.read_text())
    if not expected["memory_manager"]["present"]:
        pytest.skip("no MemoryManager: nothing to extract but the raw memory")
    for m in expected["memory_manager"]["memories"]:
        out = tmp_path / f"mem{m['id']}.bin"
        assert main(["extract", str(expected_path.parent), "--memory", str(m["id"]), "-o", str(out)]) == 0
        assert out.stat().st_size == m["size_pages"] * 65_536
        assert hashlib.sha256(out.read_bytes()).hexdigest() == m["virtual_sha256"]


def test_extract_raw_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    src = FIXTURES / "btree_u64_many" / "stable_memory.bin"
    out = tmp_path / "raw.bin"
    assert main(["extract", str(src), "--memory", "raw", "-o", str(out)]) == 0
    assert out.read_bytes() == src.read_bytes()
    # An existing output is not clobbered without --force, and the input is never an output.
    assert main(["extract", str(src), "--memory", "raw", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["extract", str(src), "--memory", "raw", "-o", str(src), "--force"]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert main(["extract", str(src), "--memory", "7", "-o", str(tmp_path / "x")]) == 2
    assert "not in this snapshot" in capsys.readouterr().err


def test_stability_golden_three_interleaved_memories(capsys: pytest.CaptureFixture[str]) -> None:
    """FORMAT.md §9: bucket size 1, 15 buckets, owners 1,1,1,2,2,2,0,0,0,0,1,2,2,1,0, each memory 5 pages."""
    require_fixtures()
    golden = FIXTURES / "upstream" / "memory_manager_stability_write.golden"
    got = summary_json(golden, capsys)["memory_manager"]
    assert got["bucket_size_in_pages"] == 1
    assert got["num_allocated_buckets"] == 15
    assert got["bucket_owners"] == [1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 1, 2, 2, 1, 0]
    mems = {m["id"]: m for m in got["memories"]}
    assert mems[0]["buckets"] == [6, 7, 8, 9, 14]
    assert mems[1]["buckets"] == [0, 1, 2, 10, 13]
    assert mems[2]["buckets"] == [3, 4, 5, 11, 12]
    assert {m["size_pages"] for m in mems.values()} == {5}


def test_stability_golden_virtual_bytes_follow_the_write_pattern() -> None:
    """Each memory got writes of bytes 0..255 repeating at offsets 0, 32768, 65535, 65537, 163840 (§9).

    Reading memory 0 across its scattered buckets must give that pattern at each write's start: an
    end-to-end check of the virtual→physical mapping that crosses bucket boundaries.
    """
    require_fixtures()
    from inspector.memory_manager import read_memory_manager
    from inspector.snapshot import open_snapshot

    with open_snapshot(FIXTURES / "upstream" / "memory_manager_stability_write.golden") as snap:
        mm = read_memory_manager(snap.memory)
        for m in mm.memories:
            # The writes at 163,840 leave a repeating byte ramp there. Read through the bucket mapping, the
            # ramp must run on across every bucket boundary (the range crosses two): a wrong bucket order
            # would break it exactly at a boundary.
            data = m.memory.read(163_840, 2 * 65_536 + 901)
            breaks = [i for i in range(len(data) - 1) if data[i + 1] != (data[i] + 1) % 256]
            assert len(breaks) <= 1
            assert all((163_840 + i + 1) % 65_536 for i in breaks)
            # A read across a boundary between two non-adjacent buckets comes from two places.
            k = next(i for i in range(len(m.buckets) - 1) if m.buckets[i + 1] != m.buckets[i] + 1)
            at = (k + 1) * 65_536 - 8
            phys = m.memory.physical_ranges(at, 16)
            assert phys == [
                (65_536 * (1 + m.buckets[k]) + 65_528, 65_536 * (2 + m.buckets[k])),
                (65_536 * (1 + m.buckets[k + 1]), 65_536 * (1 + m.buckets[k + 1]) + 8),
            ]
            assert m.memory.read(at, 16) == snap.memory.read(*_span(phys[0])) + snap.memory.read(
                *_span(phys[1])
            )


def _span(r: tuple[int, int]) -> tuple[int, int]:
    return r[0], r[1] - r[0]


STANDALONE_KINDS = {
    "v0.5.6/mm_fresh_1bucket.bin": "empty-or-unknown",
    "v0.6.0/cell_string.bin": "cell",
    "v0.6.0/vec_u64.bin": "vec",
    "v0.6.0/vec_blob300.bin": "vec",
    "v0.6.0/minheap_u32.bin": "minheap",
    "v0.6.0/log_index.bin": "log",
    "v0.6.0/log_data.bin": "log",
    "v0.6.0/btree_u64_u64.bin": "btreemap",
    "v0.5.6/btree_v1_u64_u64.bin": "btreemap",
    "v0.7.2/btree_tuple3ish.bin": "btreemap",
}


@pytest.mark.parametrize("name", sorted(STANDALONE_KINDS))
def test_standalone_images_detected(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    got = summary_json(FIXTURES / "standalone" / name, capsys)
    kind = STANDALONE_KINDS[name]
    if kind == "empty-or-unknown":
        assert got["memory_manager"]["present"] is True
        mem0 = got["structures"][0]
        assert mem0["kind"] == "unknown" and mem0["header"]["first_bytes_hex"].startswith(
            "48454c4c4f"
        )  # HELLO
        return
    assert got["memory_manager"]["present"] is False
    (s,) = got["structures"]
    assert s["kind"] == kind and s["memory_id"] == "raw" and s["physical_start"] == 0


def test_standalone_headers(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    sa = FIXTURES / "standalone" / "v0.6.0"
    cell = summary_json(sa / "cell_string.bin", capsys)["structures"][0]
    assert cell["header"] == {"layout_version": 1, "value_length": len("hello cell")}
    vec = summary_json(sa / "vec_blob300.bin", capsys)["structures"][0]["header"]
    assert (vec["length"], vec["max_entry_size"], vec["is_fixed_size"], vec["slot_size"]) == (
        5,
        300,
        False,
        302,
    )
    log = summary_json(sa / "log_index.bin", capsys)["structures"][0]
    assert log["header"]["length"] == 4 and log["header"]["role"] == "index"
    quick = summary_json(sa / "mm_quickstart.bin", capsys)
    assert quick["memory_manager"]["bucket_owners"] == [1, 0]
    kinds = {s["memory_id"]: s["kind"] for s in quick["structures"]}
    assert kinds == {0: "upgrade_state", 1: "btreemap"}  # the quick-start Writer pattern (FORMAT.md §14.5)


@pytest.mark.parametrize("expected_path", expected_params())
def test_summary_deep_allocator_and_node_figures(
    expected_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = json.loads(expected_path.read_text())
    maps = [s for s in expected["structures"] if s["kind"] == "btreemap"]
    if not maps:
        pytest.skip("no B-tree in this fixture")
    got = summary_json(expected_path.parent, capsys, "--deep")
    mine = {json.dumps(s["memory_id"]): s for s in got["structures"]}
    for s in maps:
        m = mine[json.dumps(s["memory_id"])]
        for key in ("allocation_size", "num_allocated_chunks", "free_list_head", "free_list_len"):
            assert m["allocator"][key] == s["allocator"][key], key
        for key in (
            "count",
            "leaf_count",
            "internal_count",
            "v1_node_count",
            "v2_node_count",
            "overflow_page_count",
            "depth",
        ):
            assert m["nodes"][key] == s["nodes"][key], key
        assert m["count"] == s["count"] and m["entries_sha256"] == s["entries_sha256"]
    # Healthy fixtures: no error finding even after the full validated walk.
    if is_healthy(expected["fixture"]):
        assert [f for f in got["findings"] if f["severity"] == "error"] == []
