"""Entry diff of Vec, MinHeap and Log by index arithmetic: same answer as a full walk, work ∝ the change."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from conftest import FIXTURES, ROOT, require_fixtures

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inspector.diff import map_nodes as diff_map_nodes  # noqa: E402
from inspector.diff import sequences as diff_sequences  # noqa: E402
from inspector.diff.byte_ranges import changed_ranges  # noqa: E402
from inspector.diff.entries import (  # noqa: E402
    StructureDiff,
    _by_index,
    _checker,
    _Collector,
    _merge_join,
    diff_pair,
    element_physical,
)
from inspector.diff.layout import RangeSet  # noqa: E402
from inspector.forge.structures import vec  # noqa: E402
from inspector.session import load  # noqa: E402

N = 200_000


def _changes(a: Path, b: Path) -> RangeSet:
    return RangeSet(changed_ranges(a.read_bytes(), b.read_bytes()).ranges)


def _reference(a: object, b: object) -> tuple[int, int, int, int, list[tuple[str, int | None]]]:
    """The full walk every element pair (the method index arithmetic replaces)."""
    d = StructureDiff(a.memory_id, a.kind, "matched", a, b, a.count(), b.count())  # type: ignore[attr-defined]
    _by_index(d, a, b, 100, None, "", None)  # type: ignore[arg-type]
    return d.added, d.removed, d.changed, d.unchanged, [(it.op, it.index) for it in d.items]


def _result(d: StructureDiff) -> tuple[int, int, int, int, list[tuple[str, int | None]]]:
    return d.added, d.removed, d.changed, d.unchanged, [(it.op, it.index) for it in d.items]


def test_raw_vec_reads_only_the_changed_slots(tmp_path: Path) -> None:
    elements = [(i * 7919).to_bytes(8, "big") for i in range(N)]
    image = vec(elements, 8, True).to_bytes()
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(image)
    data = bytearray(image)
    rng = random.Random(3)
    touched = sorted(rng.sample(range(64, 64 + 8 * N), 40))
    for pos in touched:
        data[pos] ^= 0xA5
    new.write_bytes(bytes(data))
    a, b = load(old), load(new)
    sa, sb = a.analysis.structures[0], b.analysis.structures[0]
    changes = _changes(old, new)
    plan = diff_sequences.plan(sa, sb, changes)
    assert plan is not None
    assert sorted(set(plan.indices)) == sorted({(p - 64) // 8 for p in touched})
    d = StructureDiff(sa.memory_id, sa.kind, "matched", sa, sb, sa.count(), sb.count())
    diff_sequences.diff_by_hits(d, sa, sb, plan, _Collector(d, sa, sb, 100), 100, _checker(None, "", 0, None))
    slots = len({(p - 64) // 8 for p in touched})
    # Two reads (old and new) per touched slot: nothing proportional to the 200,000 elements.
    assert plan.element_reads == 2 * slots
    assert (d.changed, d.unchanged) == (slots, N - slots)
    assert _result(d) == _reference(sa, sb)
    assert diff_pair(sa, sb, changes).method == "by index (changed slots only)"
    a.close()
    b.close()


def test_a_grown_vec_counts_added_elements_from_the_lengths(tmp_path: Path) -> None:
    old_el = [i.to_bytes(8, "big") for i in range(5_000)]
    new_el = old_el[:2_000] + [b"\xff" * 8] + old_el[2_001:] + [i.to_bytes(8, "big") for i in range(700)]
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(vec(old_el, 8, True).to_bytes())
    new.write_bytes(vec(new_el, 8, True).to_bytes())
    a, b = load(old), load(new)
    sa, sb = a.analysis.structures[0], b.analysis.structures[0]
    d = diff_pair(sa, sb, _changes(old, new), max_items=10)
    assert d.method == "by index (changed slots only)"
    assert _result(d)[:4] == (700, 0, 1, 4_999)
    assert _result(d) == _reference(sa, sb)[:4] + (
        [("changed", 2_000)] + [("added", 5_000 + i) for i in range(10)],
    )
    assert d.items_truncated
    a.close()
    b.close()


def _ids(mid: object) -> list[object]:
    return list(mid) if isinstance(mid, list) else [mid]


def test_vec_log_heap_under_a_memory_manager_match_the_full_walk(tmp_path: Path) -> None:
    require_fixtures()
    src = FIXTURES / "vec_log_heap" / "stable_memory.bin"
    s = load(src)
    data = bytearray(src.read_bytes())
    rng = random.Random(11)
    # Bytes inside each structure's virtual memory (Vec 1, Log 2 + 3, MinHeap 5), headers left alone.
    for mid in (1, 2, 3, 5):
        st = next(x for x in s.analysis.structures if mid in _ids(x.memory_id))
        m = st.mem if mid not in (2, 3) else (st.index_mem if mid == 2 else st.data_mem)
        used = 64 + 8 * 900 if mid != 3 else 4_000
        for v in rng.sample(range(64 if mid != 3 else 32, used), 6):
            data[m.to_physical(v)] ^= 0x11
    s.close()
    new = tmp_path / "new.bin"
    new.write_bytes(bytes(data))
    a, b = load(src), load(new)
    changes = _changes(src, new)
    for sa in a.analysis.structures:
        sb = next(x for x in b.analysis.structures if x.memory_id == sa.memory_id and x.kind == sa.kind)
        plan = diff_sequences.plan(sa, sb, changes)
        assert plan is not None, sa.kind
        d = diff_pair(sa, sb, changes)
        assert d.method == "by index (changed slots only)", sa.kind
        assert _result(d) == _reference(sa, sb), sa.kind
        assert d.changed > 0, sa.kind
        assert len(set(plan.indices)) <= 2 * 12 + 4, sa.kind  # a few per changed byte, not per element
    a.close()
    b.close()


# --------------------------------------------------------------------------- maps by changed nodes


def _merge_reference(a: object, b: object) -> tuple[int, int, int, int, list[tuple[str, bytes | None]]]:
    d = StructureDiff(a.memory_id, a.kind, "matched", a, b, a.count(), b.count())  # type: ignore[attr-defined]
    _merge_join(d, a, b, 100, None, "", None)  # type: ignore[arg-type]
    return d.added, d.removed, d.changed, d.unchanged, sorted((it.op, it.key) for it in d.items)


def _edit_values(name: str, memory_id: object, picks: int, seed: int, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of a fixture with one byte changed in the value of ``picks`` random entries."""
    src = FIXTURES / name / "stable_memory.bin"
    s = load(src)
    st = s.analysis.structure(memory_id)
    els = list(st.elements(0))
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    for el in rng.sample(els, picks):
        ranges = [r for r in element_physical(st, el) if r[1] > r[0]]
        lo, hi = ranges[-1]
        data[rng.randrange(lo, hi)] ^= 0x40
    s.close()
    new = tmp_path / "new.bin"
    new.write_bytes(bytes(data))
    return src, new


def test_map_value_edits_go_by_changed_nodes_and_match_the_key_order_walk(tmp_path: Path) -> None:
    require_fixtures()
    for name, mid, picks in (
        ("btree_u64_many", "raw", 25),
        ("btree_big_values", 3, 4),
        ("cell_and_map", 4, 3),
    ):
        old, new = _edit_values(name, mid, picks, 7, tmp_path)
        a, b = load(old), load(new)
        sa, sb = a.analysis.structure(mid), b.analysis.structure(mid)
        changes = _changes(old, new)
        plan = diff_map_nodes.plan(sa, sb, changes)
        assert plan is not None, name
        # The nodes looked at follow the edits (plus the root paths and owner look-ups), not the map.
        assert len(plan.nodes) <= picks, name
        d = diff_pair(sa, sb, changes)
        assert d.method == "by changed nodes", name
        assert d.changed == picks and d.added == d.removed == 0, name
        assert _result_keys(d) == _merge_reference(sa, sb), name
        a.close()
        b.close()


def _result_keys(d: StructureDiff) -> tuple[int, int, int, int, list[tuple[str, bytes | None]]]:
    return d.added, d.removed, d.changed, d.unchanged, sorted((it.op, it.key) for it in d.items)


def test_a_changed_tree_shape_falls_back_to_the_key_order_walk(tmp_path: Path) -> None:
    """Different maps (the pre_upgrade map and the re-created one) are not diffed by nodes."""
    require_fixtures()
    a = load(FIXTURES / "migration" / "pre_upgrade")
    b = load(FIXTURES / "migration" / "post_upgrade")
    sa, sb = a.analysis.structure(4), b.analysis.structure(4)
    changes = _changes(
        FIXTURES / "migration/pre_upgrade/stable_memory.bin",
        FIXTURES / "migration/post_upgrade/stable_memory.bin",
    )
    assert diff_map_nodes.plan(sa, sb, changes) is None
    d = diff_pair(sa, sb, changes)
    assert d.method == "merge-join"
    a.close()
    b.close()
