"""Every command, every structure kind and the whole incident trio on data the project forges itself.

These run on a clone without ../shared: the facts asserted come from the forge (what it wrote), never
from the decoder under test. The real-library fixtures add oracle checks on top, in the other modules.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from inspector.forge import build_mm_image, forge_btreemap, u64_be
from inspector.forge.candid import candid_message
from inspector.forge.image import content_bytes
from inspector.forge.samples import (
    HEALTHY_MEMBERS,
    MEMBER,
    SEED,
    build_samples,
    heap_data,
    members,
)
from inspector.forge.structures import cell, heap_order, log, minheap, vec
from tests.conftest import run_cli

CELL_VALUE = b"hello, cell"
MAP_PAIRS = [(f"k{i:03d}".encode(), f"value {i}".encode() * (1 + i % 3)) for i in range(150)]
VEC_ITEMS = [b"a", b"bb", b"", b"cccc"]
HEAP_PUSHED = u64_be([5, 3, 9, 1, 7])
LOG_ENTRIES = [b"alpha", b"", b"gamma" * 50]


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, bytes]]:
    """One MemoryManager image holding each structure kind; also each memory's forged virtual bytes."""
    index, data = log(LOG_ENTRIES)
    contents = [
        (0, cell(CELL_VALUE)),
        (1, forge_btreemap(MAP_PAIRS)),
        (2, vec(VEC_ITEMS, 8, False)),
        (3, minheap(HEAP_PUSHED, 8, True)),
        (5, index),
        (6, data),
    ]
    path = tmp_path_factory.mktemp("kinds") / "stable_memory.bin"
    build_mm_image(1, contents).write_to(path)
    return path, {mid: content_bytes(c) for mid, c in contents}


def test_summary_deep_json_finds_every_kind(every_kind: tuple[Path, dict[int, bytes]]) -> None:
    path, _ = every_kind
    status, out, err = run_cli(["summary", str(path), "--deep", "--json"])
    assert status == 0, err
    doc = json.loads(out)
    kinds = {json.dumps(s["memory_id"]): s["kind"] for s in doc["structures"]}
    assert kinds == {"0": "cell", "1": "btreemap", "2": "vec", "3": "minheap", "[5, 6]": "log"}
    bmap = next(s for s in doc["structures"] if s["kind"] == "btreemap")
    assert bmap["count"] == len(MAP_PAIRS)
    assert doc["findings"] == []
    status, out, _err = run_cli(["summary", str(path)])
    assert status == 0 and "btreemap" in out.lower() and "minheap" in out.lower()


@pytest.mark.parametrize(
    "memory,expected",
    [
        ("0", [CELL_VALUE]),
        ("1", [v for _k, v in MAP_PAIRS]),
        ("2", VEC_ITEMS),
        ("3", heap_order(HEAP_PUSHED)),
        ("5", LOG_ENTRIES),
    ],
)
def test_entries_give_back_what_was_forged(
    every_kind: tuple[Path, dict[int, bytes]], memory: str, expected: list[bytes]
) -> None:
    path, _ = every_kind
    status, out, err = run_cli(["entries", str(path), "--memory", memory, "--format", "jsonl"])
    assert status == 0, err
    rows = jsonl(out)
    assert [bytes.fromhex(r["value_hex"]) for r in rows] == expected
    if memory == "1":
        assert [bytes.fromhex(r["key_hex"]) for r in rows] == [k for k, _v in MAP_PAIRS]
    status, table, err = run_cli(["entries", str(path), "--memory", memory, "--format", "table"])
    assert status == 0 and table.strip(), err


@pytest.mark.parametrize("memory", [0, 1, 2, 3, 5, 6])
def test_extract_writes_the_memory_the_forge_wrote(
    every_kind: tuple[Path, dict[int, bytes]], tmp_path: Path, memory: int
) -> None:
    path, forged = every_kind
    out = tmp_path / "memory.bin"
    status, _out, err = run_cli(["extract", str(path), "--memory", str(memory), "-o", str(out)])
    assert status == 0, err
    got = out.read_bytes()
    want = forged[memory]
    # Whole pages: the forged bytes, then zeros up to the memory's size.
    assert got[: len(want)] == want and not any(got[len(want) :]) and len(got) % 65_536 == 0


def test_check_is_clean_on_every_kind(every_kind: tuple[Path, dict[int, bytes]]) -> None:
    path, _ = every_kind
    status, out, err = run_cli(["check", str(path), "--json"])
    assert status == 0, err
    assert not [f for f in json.loads(out)["findings"] if f["severity"] == "error"]


# --- the incident trio: healthy → stable_save over the MemoryManager → MemoryManager::init -----------------


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Any]]:
    images, manifest = build_samples()
    root = tmp_path_factory.mktemp("trio")
    paths = {}
    for name in ("healthy", "after_stable_save", "post_upgrade"):
        paths[name] = root / f"{name}.bin"
        paths[name].write_bytes(images[f"{name}/stable_memory.bin"])
    return paths, manifest["samples"]


def healthy_pairs() -> dict[bytes, bytes]:
    """The healthy map's entries, re-derived from the forge's own generator (same seed, same draws)."""
    rng = random.Random(SEED)
    heap_data(rng, audit_events=5, admins=4)
    old = members(rng, HEALTHY_MEMBERS)
    return {k.encode(): candid_message([MEMBER], [m]) for k, m in old.items()}


def test_check_of_the_trio(trio: tuple[dict[str, Path], dict[str, Any]]) -> None:
    paths, samples = trio
    status, out, err = run_cli(["check", str(paths["healthy"]), "--json"])
    assert status == 0, err
    assert not [f for f in json.loads(out)["findings"] if f["severity"] == "error"]

    status, out, _err = run_cli(["check", str(paths["after_stable_save"]), "--json"])
    doc = json.loads(out)
    assert status == 1
    assert doc["stable_save"]["range"] == samples["after_stable_save"]["stable_save"]["range"]
    assert {f["code"] for f in doc["findings"] if f["severity"] == "error"} >= {"memory_manager_clobbered"}

    status, out, _err = run_cli(["check", str(paths["post_upgrade"]), "--json"])
    assert status == 1
    bmap = next(s for s in json.loads(out)["structures"] if s["memory_id"] == 4)
    assert bmap["header"]["length"] == samples["post_upgrade"]["btreemap"]["length"]


def test_salvage_of_post_upgrade_recovers_old_entries_byte_for_byte(
    trio: tuple[dict[str, Path], dict[str, Any]],
) -> None:
    paths, samples = trio
    status, out, err = run_cli(["salvage", str(paths["post_upgrade"]), "--memory", "4", "--format", "jsonl"])
    assert status == 0, err
    old = healthy_pairs()
    assert len(old) == samples["post_upgrade"]["stale"]["old_map_entries"]
    rows = jsonl(out)
    # Most of the old map survives (only the chunks the new map reused are gone), and every recovered
    # entry is exactly an entry the forge wrote before the upgrade.
    assert len(old) // 2 < len(rows) < len(old)
    for r in rows:
        assert old[bytes.fromhex(r["key_hex"])] == bytes.fromhex(r["value_hex"])


def test_diff_of_the_trio_names_the_incident(trio: tuple[dict[str, Path], dict[str, Any]]) -> None:
    paths, samples = trio
    status, out, err = run_cli(["diff", str(paths["healthy"]), str(paths["post_upgrade"]), "--json"])
    assert status in (0, 1), err
    doc = json.loads(out)
    assert doc["incident"] == "memory_manager_reinitialised"
    sd = next(s for s in doc["structures"] if s["memory_id"] == 4)
    assert (sd["old_count"], sd["new_count"]) == (
        samples["healthy"]["btreemap"]["length"],
        samples["post_upgrade"]["btreemap"]["length"],
    )
    status, report, err = run_cli(
        ["diff", str(paths["healthy"]), str(paths["after_stable_save"]), "--report"]
    )
    assert status in (0, 1), err
    assert report.strip()
