"""The vectorised deep walk (structures/btreemap/vector_walk.py) against the validated walk.

The vectorised path may only confirm a healthy map: where it answers, count, digest, node statistics and
the set of reached chunks must equal the validated walk's; where anything is off it must decline, so the
findings are the validated walk's own. Checked on maps grown by the library's algorithm (random order,
removals, free list, overflow pages, buckets interleaved under a MemoryManager), on every real-library
fixture, and on broken copies.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, require_fixtures

sys.path.insert(0, str(ROOT))

from inspector.analysis.analyze import analyze  # noqa: E402
from inspector.forge import MemoryManagerImage, RawImage  # noqa: E402
from inspector.forge.btree import NODE_PREFIX_LEN  # noqa: E402
from inspector.forge.btree_grow import GrownBTreeMap, grow_map_from, grow_u64_map, mix64  # noqa: E402
from inspector.forge.structures import vec  # noqa: E402
from inspector.memory import PhysicalMemory  # noqa: E402
from inspector.snapshot import open_snapshot  # noqa: E402
from inspector.structures.btreemap import BTreeMap  # noqa: E402
from inspector.structures.btreemap import vector_walk as vw  # noqa: E402
from inspector.structures.btreemap.structure import BTreeMapStructure  # noqa: E402


def _digest(pairs: Any) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    for k, v in pairs:
        h.update(struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v)
        n += 1
    return n, h.hexdigest()


def _maps_in(path: Path) -> Any:
    """The maps the analysis finds in a snapshot file (its snapshot stays open for the test)."""
    report = analyze(open_snapshot(path), forensics=False, orphan_scan=False)
    return [s for s in report.structures if isinstance(s, BTreeMapStructure)]


def _walk_both(make: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, bool]:
    """(vectorised-or-fallback walk, validated walk, whether the vectorised path answered)."""
    answered: list[bool] = []
    real = vw.vector_walk

    def spy(w: Any, visited: Any) -> Any:
        got = real(w, visited)
        answered.append(got is not None)
        return got

    monkeypatch.setattr(vw, "vector_walk", spy)
    fast_map = make()
    fast = fast_map.walk()
    monkeypatch.setattr(vw, "vector_walk", lambda w, visited: None)
    slow_map = make()
    slow = slow_map.walk()
    monkeypatch.setattr(vw, "vector_walk", real)
    assert (fast.entry_count, fast.entries_sha256) == (slow.entry_count, slow.entries_sha256)
    assert fast.nodes == slow.nodes
    assert [(f.code, f.message) for f in fast.findings] == [(f.code, f.message) for f in slow.findings]
    assert (fast.leaked_overflow_pages, fast.unreached_allocated) == (
        slow.leaked_overflow_pages,
        slow.unreached_allocated,
    )
    assert list(fast_map._reached) == list(slow_map._reached)
    return fast, slow, bool(answered and answered[0])


def _raw_map(data: bytes) -> Any:
    return lambda: BTreeMap(PhysicalMemory(data, len(data)), memory_id="raw")


def _raw_image(m: GrownBTreeMap) -> bytes:
    img = RawImage()
    img.place(m)
    return img.to_bytes()


@pytest.fixture(scope="module")
def grown() -> GrownBTreeMap:
    return grow_u64_map(6_000, 1_500, seed=11)


def test_grown_map_is_confirmed_and_matches(grown: GrownBTreeMap, monkeypatch: pytest.MonkeyPatch) -> None:
    st = grown.stats()
    assert st["merges"] > 0 and st["free_list_len"] > 1 and st["overflow_pages"] > 0
    fast, _slow, answered = _walk_both(_raw_map(_raw_image(grown)), monkeypatch)
    assert answered
    assert (fast.entry_count, fast.entries_sha256) == _digest(grown.entries()) == (4_500, fast.entries_sha256)
    assert fast.nodes["overflow_page_count"] == st["overflow_pages"] > 0
    assert not fast.findings


@pytest.mark.parametrize(("levels", "batch"), [(1, 1), (2, 3), (3, 50), (9, 10_000)])
def test_any_batching_gives_the_same_walk(
    grown: GrownBTreeMap, monkeypatch: pytest.MonkeyPatch, levels: int, batch: int
) -> None:
    # Subtrees one level deep read one at a time exercise every separator between batches; a depth
    # beyond the tree's reads it as one forest.
    monkeypatch.setattr(vw, "SUBTREE_LEVELS", levels)
    monkeypatch.setattr(vw, "BATCH_NODES", batch)
    fast, _slow, answered = _walk_both(_raw_map(_raw_image(grown)), monkeypatch)
    assert answered and fast.entry_count == 4_500


def test_map_under_a_memory_manager_with_interleaved_buckets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = grow_u64_map(3_000, 400, seed=5)
    mm = MemoryManagerImage(1)  # one-page buckets: the map spans many, memory 2 grows between them
    for i in range(m.size // 65536):
        mm.grow(1, 1)
        if i % 3 == 0:
            mm.grow(2, 1)
    mm.place(2, vec([struct.pack("<Q", i) for i in range(mm.sizes[2] * 8000)], 8, True))
    mm.place(1, m)
    path = tmp_path / "mm.bin"
    mm.write_to(path)
    (found,) = _maps_in(path)
    mem = found.map.mem
    fast, _slow, answered = _walk_both(lambda: BTreeMap(mem, memory_id=1), monkeypatch)
    assert answered
    assert (fast.entry_count, fast.entries_sha256) == _digest(m.entries())


class _PrefixedKeys(GrownBTreeMap):
    """The grown map with every 8-byte key stored behind its u32 LE length, as a map of keys of one
    length that are not fixed-size (e.g. Strings all of 8 bytes) stores them."""

    def _stream_len(self, node: Any) -> int:
        return super()._stream_len(node) + 4 * len(node.keys)

    def _stream(self, node: Any) -> bytes:
        s = super()._stream(node)
        at = NODE_PREFIX_LEN + (0 if node.children is None else 8 * len(node.children))
        keys = s[at : at + 8 * len(node.keys)]
        prefixed = b"".join(struct.pack("<I", 8) + keys[i : i + 8] for i in range(0, len(keys), 8))
        return s[:at] + prefixed + s[at + len(keys) :]


def test_length_prefixed_keys_of_one_length_take_the_vectorised_path(monkeypatch: pytest.MonkeyPatch) -> None:
    m = _PrefixedKeys(page_size=1024)
    keys = [mix64(n) for n in range(3_000)]
    for k in keys:
        m.insert(k)
    for k in keys[:700]:
        m.remove(k)
    prefixes: list[int] = []
    real_blocks = vw._VectorWalker.blocks

    def blocks(self: Any) -> Any:
        for block in real_blocks(self):
            prefixes.append(self.kpre)  # (set once the walk has looked at the root)
            yield block

    monkeypatch.setattr(vw._VectorWalker, "blocks", blocks)
    fast, _slow, answered = _walk_both(_raw_map(_raw_image(m)), monkeypatch)
    assert answered and prefixes[0] == 4  # the columns read the keys behind their prefixes
    assert (fast.entry_count, fast.entries_sha256) == _digest(m.entries()) == (2_300, fast.entries_sha256)
    assert not fast.findings


def test_variable_values_are_left_to_the_validated_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def value_of(k: int) -> bytes:
        return bytes([k & 0xFF]) * (200 + k % 3_000)

    keys = list(range(1, 401))
    m = grow_map_from([("insert", k * 7919) for k in keys], page_size=1024, value_of=value_of, value_len=None)
    fast, _slow, answered = _walk_both(_raw_map(_raw_image(m)), monkeypatch)
    assert not answered
    assert (fast.entry_count, fast.entries_sha256) == _digest(m.entries())


def _node_addrs(data: bytes) -> list[int]:
    w = BTreeMap(PhysicalMemory(data, len(data)), memory_id="raw")
    w.walk()
    return [a for a in w._reached if data[a : a + 3] == b"BTN"]


@pytest.mark.parametrize("damage", ["key_order", "shared_child", "chunk_freed", "entry_count"])
def test_broken_maps_fall_back_and_keep_the_findings(
    grown: GrownBTreeMap, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    data = bytearray(_raw_image(grown))
    nodes = _node_addrs(bytes(data))
    leaves = [a for a in nodes if data[a + 4] == 0]
    internal = [a for a in nodes if data[a + 4] == 1]
    leaf = leaves[len(leaves) // 2]
    if damage == "key_order":  # the first key of a leaf (fixed 8-byte keys follow the 15-byte prefix)
        data[leaf + 15 : leaf + 23] = b"\xff" * 8
        code = "btree_key_order"
    elif damage == "shared_child":  # an internal node's second child pointer made equal to its first
        node = internal[0]
        data[node + 23 : node + 31] = data[node + 15 : node + 23]
        code = "btree_cycle"
    elif damage == "chunk_freed":  # the chunk header of a leaf says "free"
        data[leaf - 16 + 4] = 0
        code = "btree_node_invalid"
    else:  # a leaf claims 12 entries (more than a node holds)
        data[leaf + 5 : leaf + 7] = struct.pack("<H", 12)
        code = "btree_node_invalid"
    fast, _slow, answered = _walk_both(_raw_map(bytes(data)), monkeypatch)
    assert not answered
    assert code in {f.code for f in fast.findings}


def _fixture_maps() -> list[Any]:
    if not FIXTURES.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no real-library fixtures at {FIXTURES}"))]
    return [pytest.param(p, id=p.parent.name) for p in sorted(FIXTURES.glob("*/*.bin"))]


@pytest.mark.parametrize("path", _fixture_maps())
def test_every_fixture_map_walks_the_same(path: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
    require_fixtures()
    assert path is not None
    for s in _maps_in(path):
        if s.map.walkable:
            _walk_both(lambda s=s: BTreeMap(s.map.mem, memory_id=s.map.memory_id), monkeypatch)


def test_real_library_maps_take_the_vectorised_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Healthy maps of fixed-size entries the real library wrote are confirmed by the vectorised path
    (not merely declined); a set of Strings (keys of many lengths) is left to the validated walk."""
    fixtures = require_fixtures()
    confirmed = {}
    for name in ("btree_u64_many", "btree_u64_many_v072", "btreeset"):
        for s in _maps_in(next((fixtures / name).glob("*.bin"))):
            _f, _s, answered = _walk_both(
                lambda s=s: BTreeMap(s.map.mem, memory_id=s.map.memory_id), monkeypatch
            )
            confirmed[(name, s.map.memory_id)] = answered
    assert confirmed == {
        ("btree_u64_many", "raw"): True,
        ("btree_u64_many_v072", "raw"): True,
        ("btreeset", 0): True,  # StableBTreeSet<u64>
        ("btreeset", 1): False,  # StableBTreeSet<String>
    }
