"""The grown-map forge (inspector/forge/btree_grow.py): maps built by the library's insert/remove algorithm.

Each image is read back by the project's decoder through the CLI (a validated deep walk plus ``check``,
which runs the allocator checks: free list, allocated-chunk count, orphans): no error finding, every
entry back in key order, the right count and entries_sha256.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, require_fixtures

sys.path.insert(0, str(ROOT))

from inspector.forge import MemoryManagerImage, RawImage  # noqa: E402
from inspector.forge.btree_grow import GrownBTreeMap, grow_map_from, grow_u64_map  # noqa: E402
from inspector.forge.structures import vec  # noqa: E402


def _digest(pairs: Any) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for k, v in pairs:
        h.update(struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v)
        n += 1
    return n, h.hexdigest()


def _cli(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "inspector", *args], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert out.returncode in (0, 1), out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _errors(report: dict[str, Any]) -> list[Any]:
    return [f for f in report.get("findings", []) if f.get("severity") == "error"]


def _read_back(path: Path, memory: str = "raw") -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    summary = _cli("summary", str(path), "--deep", "--json")
    assert not _errors(summary), _errors(summary)
    check = _cli("check", str(path), "--json")
    assert not _errors(check), _errors(check)
    maps = [s for s in summary["structures"] if s.get("kind") == "btreemap"]
    assert len(maps) == 1
    args = ["entries", str(path), "--format", "jsonl", "--memory", memory]
    out = subprocess.run(
        [sys.executable, "-m", "inspector", *args], capture_output=True, text=True, cwd=ROOT, check=True
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return maps[0], [(bytes.fromhex(e["key_hex"]), bytes.fromhex(e["value_hex"])) for e in lines]


def _check_tree(m: GrownBTreeMap) -> None:
    """B-tree invariants of the simulated tree itself: bounds, one leaf depth, sorted keys."""
    leaf_depths = set()
    for d, n in m.nodes():
        if n is not m.root:
            assert 5 <= len(n.keys) <= 11
        if n.children is None:
            leaf_depths.add(d)
        else:
            assert len(n.children) == len(n.keys) + 1
    assert len(leaf_depths) <= 1
    keys = list(m.keys())
    assert keys == sorted(keys) and len(keys) == len(set(keys)) == m.length


def test_random_inserts_and_removals_read_back(tmp_path: Path) -> None:
    m = grow_u64_map(6_000, 1_500, seed=7)
    _check_tree(m)
    st = m.stats()
    assert st["merges"] > 0 and st["free_list_len"] > 1 and st["overflow_pages"] > 0
    img = RawImage()
    img.place(m)
    path = tmp_path / "grown.bin"
    img.write_to(path)
    got, entries = _read_back(path)
    count, digest = _digest(m.entries())
    assert (got["count"], got["entries_sha256"]) == (count, digest) == (4_500, digest)
    assert entries == list(m.entries()) and [k for k, _ in entries] == sorted(k for k, _ in entries)
    assert got["nodes"]["count"] == st["node_count"]
    assert got["nodes"]["depth"] == st["depth"]
    assert got["nodes"]["overflow_page_count"] == st["overflow_pages"]
    assert got["allocator"]["free_list_len"] == st["free_list_len"]
    assert got["allocator"]["num_allocated_chunks"] == st["num_allocated_chunks"]


def test_large_values_use_overflow_pages_and_free_them(tmp_path: Path) -> None:
    def value_of(k: int) -> bytes:
        return bytes([k & 0xFF]) * (200 + k % 3_000)

    rng = random.Random(3)
    keys = rng.sample(range(1 << 40), 400)
    ops = [("insert", k) for k in keys] + [("remove", k) for k in keys[::3]]
    m = grow_map_from(ops, page_size=1024, value_of=value_of, value_len=None)
    _check_tree(m)
    st = m.stats()
    assert st["overflow_pages"] > st["node_count"]  # most nodes spill: the values are big
    assert st["free_list_len"] > 1
    img = RawImage()
    img.place(m)
    path = tmp_path / "big.bin"
    img.write_to(path)
    got, entries = _read_back(path)
    assert (got["count"], got["entries_sha256"]) == _digest(m.entries())
    assert entries == list(m.entries())


def test_removing_everything_empties_the_tree() -> None:
    keys = random.Random(5).sample(range(10**9), 300)
    m = grow_map_from([("insert", k) for k in keys] + [("remove", k) for k in keys])
    assert m.root is None and m.length == 0 and m.num_allocated_chunks == 0
    # Every chunk ever taken is back in the free list (plus the frontier).
    assert m.stats()["free_list_len"] == m.frontier + 1


def test_interleaved_buckets_under_a_memory_manager(tmp_path: Path) -> None:
    m = grow_u64_map(30_000, 3_000, seed=11)
    mm = MemoryManagerImage(1)  # one-page buckets: the map spans many, another memory grows between them
    map_pages = m.size // 65536
    for i in range(map_pages):
        mm.grow(1, 1)
        if i % 3 == 0:
            mm.grow(2, 1)
    filler = vec([struct.pack("<Q", i) for i in range(mm.sizes[2] * 8000)], 8, True)
    mm.place(2, filler)
    mm.place(1, m)
    buckets = mm.buckets(1)
    assert any(b - a > 1 for a, b in zip(buckets, buckets[1:], strict=False))  # not contiguous
    path = tmp_path / "mm.bin"
    mm.write_to(path)
    summary = _cli("summary", str(path), "--deep", "--json")
    assert not _errors(summary), _errors(summary)
    maps = [s for s in summary["structures"] if s.get("kind") == "btreemap"]
    assert [(s["count"], s["entries_sha256"]) for s in maps] == [_digest(m.entries())]


def test_shape_is_comparable_to_the_real_fixture() -> None:
    """Same operation counts as btree_u64_many (20,000 random inserts, 3,000 removals): the simulated
    tree must land in the same range as the real one. Loose bounds: a different random draw, not a copy."""
    fixtures = require_fixtures()
    expected = json.loads((fixtures / "btree_u64_many" / "expected.json").read_text())
    real = expected["structures"][0]
    st = grow_u64_map(20_000, 3_000, seed=1).stats()
    assert st["length"] == real["count"] == 17_000
    assert st["depth"] == real["nodes"]["depth"]
    assert abs(st["node_count"] - real["nodes"]["count"]) <= 0.05 * real["nodes"]["count"]
    assert abs(st["num_allocated_chunks"] - real["allocator"]["num_allocated_chunks"]) <= 0.05 * 2594
    assert st["free_list_len"] > 1 and real["allocator"]["free_list_len"] > 1


@pytest.mark.parametrize("seed", [1, 2])
def test_simulated_tree_invariants(seed: int) -> None:
    _check_tree(grow_u64_map(3_000, 2_000, seed=seed))
