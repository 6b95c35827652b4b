"""``diff --json`` finishes each side's forensic orphan scan after the byte compare (``diff.frontier``):
the old map's free list comes from a byte-compare child, the new one's from the old one when no changed
byte can reach its walk. The diff, its findings and its diagnosis are the same as with the scan run
while loading; anything a shortcut cannot vouch for is walked as before."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, require_fixtures, run_cli

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from test_diff_map_chains import PAGE, _flip, _forge, _value_flips  # noqa: E402
from test_forensics_forged import unowned_vec_snapshot  # noqa: E402

from inspector.diff import frontier, map_chains, prefetch  # noqa: E402
from inspector.diff.engine import diff_sessions  # noqa: E402
from inspector.layouts import CHUNK_HEADER_SIZE  # noqa: E402
from inspector.memory import PhysicalMemory  # noqa: E402
from inspector.session import load  # noqa: E402
from inspector.structures.btreemap import BTreeMap, allocator  # noqa: E402


def _synchronous(old: Path, new: Path) -> Any:
    """The diff of two snapshots loaded the ordinary way (orphan scan while loading), as JSON text."""
    a, b = load(old), load(new)
    try:
        return json.loads(json.dumps(diff_sessions(a, b).to_json(), default=str))
    finally:
        a.close()
        b.close()


def _cli(old: Path, new: Path) -> Any:
    status, out, err = run_cli(["diff", str(old), str(new), "--json"])
    assert status == 0, err
    return json.loads(out)


def _fresh_walk(path: Path) -> Any:
    data = path.read_bytes()
    return BTreeMap(PhysicalMemory(data, len(data)), memory_id="raw")._free_list()


def _child_state(path: Path) -> Any:
    """The free list the byte-compare children hand over for ``path`` (compared with itself)."""
    frontier._OFFERED.clear()
    pending = prefetch.start_byte_diff(str(path), str(path))
    assert pending is not None and pending.columns
    assert pending.result() is not None
    pending.chains()
    assert len(frontier._OFFERED) == 1
    chain, problems, end = frontier._OFFERED[0][2]
    return list(chain), problems, end  # (a clean list crosses as an array of u64)


def test_the_diff_walks_no_free_list_in_the_parent_and_says_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch, "CHAINS_MIN_BYTES", 0)
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    _flip(old, new, _value_flips(old, 5, 3))  # value bytes only: every chunk header the same
    expected = _synchronous(old, new)
    walks: list[int] = []
    real = allocator._Allocator._clean_free_list

    def counted(self: Any) -> Any:
        walks.append(1)
        return real(self)

    monkeypatch.setattr(allocator._Allocator, "_clean_free_list", counted)
    assert _cli(old, new) == expected
    assert not walks  # (the child's walk is not counted here: it runs in another process)


def test_a_changed_chunk_header_makes_the_new_side_walk_its_own_list(tmp_path: Path) -> None:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    first = _fresh_walk(old)[0]
    cut = bytearray(old.read_bytes())
    cut[first[5] + 8 : first[5] + 16] = bytes(8)  # a hop's link: the new list ends there
    new.write_bytes(bytes(cut))
    a, b = load(old, orphan_scan=False), load(new, orphan_scan=False)
    try:
        from inspector.diff.byte_ranges import changed_ranges

        result = changed_ranges(old.read_bytes(), new.read_bytes())
        frontier.finish_orphan_scans(a, b, result)
        ma, mb = frontier._raw_map(a), frontier._raw_map(b)
        assert ma is not None and mb is not None
        assert ma._free_list_state == _fresh_walk(old)
        assert mb._free_list_state == _fresh_walk(new) != ma._free_list_state
        assert len(mb._free_list_state[0]) == 6
    finally:
        a.close()
        b.close()
    assert _cli(old, new) == _synchronous(old, new)


def test_the_childs_column_walk_is_the_maps_own_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clean, cut short, looping, with an allocated hop, or ending in the chunk the file cuts off: the
    free list from the compare children's columns is what the map's own ``_free_list`` returns."""
    monkeypatch.setattr(prefetch, "CHAINS_MIN_BYTES", 0)
    path = tmp_path / "map.bin"
    _forge(path)
    data = bytes(path.read_bytes())
    chain = _fresh_walk(path)[0]
    assert len(chain) > 10
    variants: dict[str, bytes] = {"clean": data}
    for name, at, value in (
        ("cut", chain[5] + 8, (0).to_bytes(8, "little")),
        ("loop", chain[5] + 8, chain[1].to_bytes(8, "little")),
        ("allocated", chain[7] + 4, b"\x01"),
        ("misaligned", chain[3] + 8, (chain[4] + 1).to_bytes(8, "little")),
    ):
        v = bytearray(data)
        v[at : at + len(value)] = value
        variants[name] = bytes(v)
    # The frontier chunk cut by the end of the file: the columns leave that chunk out.
    frontier_at = chain[-1]
    variants["frontier_at_the_end"] = data[: frontier_at + CHUNK_HEADER_SIZE + 8]
    for name, raw in variants.items():
        p = tmp_path / f"{name}.bin"
        p.write_bytes(raw)
        assert _child_state(p) == _fresh_walk(p), name
        # The columns' walk itself gives what the clean walk gives (None: the careful walk decides).
        found = map_chains.old_grid(raw, len(raw))
        assert found is not None and found[1] is not None
        m, (base, n, cs) = found[0], found[1]
        cols = map_chains._Columns(raw, base, n, cs, headers=True)
        clean = BTreeMap(PhysicalMemory(raw, len(raw)), memory_id="raw")._clean_free_list()
        assert frontier._clean_from_columns(m, cols) == clean, name
        assert (clean is not None) == (name in ("clean", "cut", "frontier_at_the_end")), name


def _recreated(path: Path, scratch: Path) -> None:
    """A map re-created over an earlier one: a fresh 3-entry map's headers and chunks written over the
    start of a 400-entry map, whose nodes then lie beyond the new allocator frontier."""
    _forge(path)
    _forge(scratch, n=3, seed=9)
    fresh = scratch.read_bytes()
    end = _fresh_walk(scratch)[2] + CHUNK_HEADER_SIZE + PAGE  # up to the end of the frontier chunk
    data = bytearray(path.read_bytes())
    data[:end] = fresh[:end]
    path.write_bytes(bytes(data))


def test_stray_nodes_are_reported_as_the_synchronous_scan_reports_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old nodes beyond the frontier of a re-created map, on both sides: the orphan scan that runs after
    the compare (free lists from the child and from the old side) reports them with the same findings,
    diagnosis and verdict as the scan run while loading."""
    monkeypatch.setattr(prefetch, "CHAINS_MIN_BYTES", 0)
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _recreated(old, tmp_path / "fresh.bin")
    _flip(old, new, _value_flips(old, 6, 11))
    s = load(new)
    try:
        stray = [f for f in s.analysis.findings if f.code == "orphaned_data"]
        assert [f.details["kind"] for f in stray] == ["unreachable_nodes"]
        diagnosis = list(s.analysis.diagnosis)
    finally:
        s.close()
    got = _cli(old, new)
    assert got == _synchronous(old, new)
    assert got["new_diagnosis"] == diagnosis != []
    # Both sides' lists came from the shortcuts, and are what each side's own walk gives.
    pending = prefetch.start_byte_diff(str(old), str(new))
    assert pending is not None and pending.columns
    a, b = load(old, orphan_scan=False), load(new, orphan_scan=False)
    try:
        result = pending.result()
        pending.chains()
        assert frontier._OFFERED and result is not None
        ma, mb = frontier._raw_map(a), frontier._raw_map(b)
        assert ma is not None and mb is not None
        frontier._adopt_old(ma, a.snapshot.fd)
        frontier._adopt_new(ma, mb, result)
        assert ma._free_list_state == _fresh_walk(old) and mb._free_list_state == _fresh_walk(new)
    finally:
        a.close()
        b.close()


def test_a_map_with_stray_nodes_keeps_its_orphan_findings(tmp_path: Path) -> None:
    """The migration and incident pairs: the new snapshots hold an earlier map's nodes beyond the
    frontier; ``diff --json`` (orphan scan after the compare) reports them as loading them would."""
    require_fixtures()
    for pre, post in (
        (FIXTURES / "migration/pre_upgrade", FIXTURES / "migration/post_upgrade"),
        (FIXTURES / "incident_16page/pre_upgrade", FIXTURES / "incident_16page/post_upgrade"),
    ):
        a, b = pre / "stable_memory.bin", post / "stable_memory.bin"
        got = _cli(a, b)
        assert got == _synchronous(a, b)
        s = load(b)
        try:
            kinds = [f.details.get("kind") for f in s.analysis.findings if f.code == "orphaned_data"]
        finally:
            s.close()
        assert "unreachable_nodes" in kinds


def test_an_unowned_bucket_found_after_the_compare_is_in_the_diff(tmp_path: Path) -> None:
    """A stray bucket (a manager that forgot a Vec's bucket) on the new side: its orphan finding, the
    diagnosis and the verdict are those of the synchronous scan."""
    new = unowned_vec_snapshot(tmp_path)
    got = _cli(new, new)
    assert got == _synchronous(new, new)
    s = load(new)
    try:
        assert [f.code for f in s.analysis.all_findings()].count("orphaned_data") == 1
        assert got["new_diagnosis"] == list(s.analysis.diagnosis) != []
    finally:
        s.close()
