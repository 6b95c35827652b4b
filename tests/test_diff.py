"""The snapshot diff engine and ``stable-inspect diff --json/--report`` on the real fixtures and forged pairs.

Ground truth: each migration fixture's expected.json lists the exact byte ranges that differ from the
snapshot it was derived from (``changed_vs_pre_upgrade`` / ``changed_vs_after_stable_save``); the
entry counts come from the fixtures' own entry lists.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, fixture_ids, load_expected, require_fixtures

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inspector.cli import main  # noqa: E402
from inspector.diff.engine import SnapshotDiff, diff_sessions  # noqa: E402
from inspector.session import Session, load  # noqa: E402

PRE = "migration/pre_upgrade"
MIGRATION = [f for f in fixture_ids() if f.startswith("migration/") and f != PRE]


def _diff(old: str | Path, new: str | Path, **load_options: Any) -> tuple[SnapshotDiff, Session, Session]:
    a = load(FIXTURES / old if isinstance(old, str) else old, **load_options)
    b = load(FIXTURES / new if isinstance(new, str) else new, **load_options)
    return diff_sessions(a, b), a, b


def _source_of(name: str) -> str:
    """The snapshot a migration fixture was derived from (after_stable_save* name none: pre_upgrade)."""
    return load_expected(name)["trio"].get("derived_from", PRE)


def _expected_ranges(exp: dict[str, Any]) -> dict[str, Any]:
    key = "changed_vs_pre_upgrade" if "changed_vs_pre_upgrade" in exp else "changed_vs_after_stable_save"
    return exp[key]


# --------------------------------------------------------------------------- byte level


@pytest.mark.parametrize("name", MIGRATION)
def test_changed_ranges_match_the_fixture(name: str) -> None:
    require_fixtures()
    exp = _expected_ranges(load_expected(name))
    d, a, b = _diff(_source_of(name), name)
    got = [[r.start, r.end] for r in d.ranges]
    assert d.bytes.count == exp["count"]
    assert d.changed_bytes == exp["total_bytes"]
    if "ranges" in exp:
        assert got == exp["ranges"]
    else:
        assert exp.get("truncated")
        assert got[: len(exp["ranges_first"])] == exp["ranges_first"]
        assert got[-len(exp["ranges_last"]) :] == exp["ranges_last"]
    assert all(not r.tail for r in d.ranges), "same-size snapshots have no tail"
    # Grouping into changes covers every range exactly once.
    groups = d.groups(10_000)
    assert d.groups_complete
    assert sum(g.ranges for g in groups) == d.bytes.count
    assert sum(g.bytes for g in groups) == d.changed_bytes
    a.close()
    b.close()


def test_a_grown_snapshot_has_its_tail_as_a_range_of_its_own(tmp_path: Path) -> None:
    require_fixtures()
    src = FIXTURES / PRE / "stable_memory.bin"
    grown = tmp_path / "grown.bin"
    grown.write_bytes(src.read_bytes() + bytes(65_536))
    d, a, b = _diff(PRE, grown)
    size = src.stat().st_size
    assert [(r.start, r.end, r.tail) for r in d.ranges] == [(size, size + 65_536, True)]
    out = d.to_json()
    assert out["changed_ranges"] == [[size, size + 65_536]]
    assert out["size"] == {"old": size, "new": size + 65_536, "tail": [size, size + 65_536]}
    at = d.attribute(0)
    assert "past the end of the old snapshot" in at.old[0].what
    assert all(sd.status == "unchanged" for sd in d.structures)
    assert d.incident.kind == "healthy"
    # And shrinking is the same range, seen from the other side.
    d2, c, e = _diff(grown, PRE)
    assert [(r.start, r.end, r.tail) for r in d2.ranges] == [(size, size + 65_536, True)]
    for s in (a, b, c, e):
        s.close()


# --------------------------------------------------------------------------- verdicts


def test_pre_upgrade_to_post_upgrade_names_the_reinit_and_the_salvageable_entries() -> None:
    require_fixtures()
    d, a, b = _diff(PRE, "migration/post_upgrade")
    assert d.incident.kind == "memory_manager_reinitialised"
    text = d.verdict
    assert text.startswith(
        "The MemoryManager was re-initialised; the map at memory 4 went from 200 entries to 3; "
        "190 of the old entries are still on disk (run salvage)."
    )
    (est,) = d.incident.salvage
    salvage = load_expected("migration/post_upgrade")["old_data"]["salvage"]
    assert est.recoverable_entries == salvage["recoverable_entry_count"] == 190
    # The count from salvage's own scan agrees with the old-snapshot-as-reference count.
    assert est.reference_entries == 190
    a.close()
    b.close()


def test_pre_upgrade_to_after_stable_save_names_the_message_and_what_it_overwrote() -> None:
    require_fixtures()
    d, a, b = _diff(PRE, "migration/after_stable_save")
    assert d.incident.kind == "stable_save"
    length = load_expected("migration/after_stable_save")["stable_save"]["length"]
    assert length == 386_837
    text = d.verdict
    assert f"A stable_save message ({length:,} bytes of Candid) was written at offset 0" in text
    for part in (
        "the MemoryManager header",
        "the whole bucket table",
        "the unused rest of page 0",
        "the first 321,301 bytes of bucket 0 (memory 0: Cell header, Cell value)",
        "Memory 4 (btreemap, 200 entries) is untouched",
    ):
        assert part in text
    assert d.incident.stable_save is not None and d.incident.stable_save["range"] == [0, length]
    # Layout level: the header now reads as what the message's bytes say (FORMAT.md §11.1).
    assert d.memory_manager["magic"] == ["MGR", "DID"]
    assert d.memory_manager["layout_version"] == [1, 76]
    assert d.memory_manager["present"] == [True, False]
    assert d.bucket_changes_count > 0 and d.bucket_changes[0].old == 0
    a.close()
    b.close()


def test_small_stable_save_only_hits_the_header() -> None:
    require_fixtures()
    d, a, b = _diff(PRE, "migration/after_stable_save_small")
    assert d.incident.kind == "stable_save"
    assert "(307 bytes of Candid)" in d.verdict
    assert (
        "part of the MemoryManager header (magic, layout version, bucket count, bucket size, reserved bytes, "
        "size slots of memories 0–33 (33 only partly))" in d.verdict
    )
    assert (
        "The bucket table, memory 0 (cell, 1 value) and memory 4 (btreemap, 200 entries) are untouched"
        in d.verdict
    )
    assert d.bucket_changes_count == 0
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("old", "new", "fate"),
    [
        (
            "migration/after_stable_save",
            "migration/post_upgrade",
            "destroying the first 34,848 of the message's 386,837 bytes",
        ),
        (
            "migration/after_stable_save_small",
            "migration/post_upgrade_small",
            "wiping the 307-byte message completely",
        ),
    ],
)
def test_reinit_over_the_message(old: str, new: str, fate: str) -> None:
    require_fixtures()
    d, a, b = _diff(old, new)
    assert d.incident.kind == "memory_manager_reinitialised"
    assert d.verdict.startswith("The MemoryManager was re-initialised over the stable_save message")
    assert fate in d.verdict
    assert "190" in d.verdict and "(run salvage)" in d.verdict
    a.close()
    b.close()


def test_identical_snapshots_have_no_changes() -> None:
    require_fixtures()
    d, a, b = _diff("cell_and_map", "cell_and_map_v072")
    assert d.identical and d.bytes.count == 0 and d.changed_bytes == 0
    assert d.incident.kind == "identical"
    assert "byte-identical" in d.verdict
    assert d.memory_manager == {} and d.memories == [] and d.bucket_changes_count == 0
    for sd in d.structures:
        assert (sd.status, sd.added, sd.removed, sd.changed) == ("unchanged", 0, 0, 0)
        assert sd.method == "untouched"
    assert d.structure(4).unchanged == 20
    a.close()
    b.close()


# --------------------------------------------------------------------------- entry level


def _keys(exp: dict[str, Any], memory_id: int) -> dict[str, str]:
    (s,) = [s for s in exp["structures"] if s["memory_id"] == memory_id]
    return {e["key_hex"]: e["value_hex"] for e in s["entries"]}


def test_entry_counts_follow_the_keys() -> None:
    require_fixtures()
    old = _keys(load_expected(PRE), 4)
    new = _keys(load_expected("migration/post_upgrade"), 4)
    d, a, b = _diff(PRE, "migration/post_upgrade")
    sd = d.structure(4)
    assert sd is not None and sd.method == "merge-join"
    assert (sd.old_count, sd.new_count) == (200, 3)
    assert sd.added == len(new.keys() - old.keys()) == 3
    assert sd.removed == len(old.keys() - new.keys()) == 200
    assert sd.changed == sum(1 for k in old.keys() & new.keys() if old[k] != new[k]) == 0
    assert sd.header["length"] == [200, 3]
    assert len(sd.items) == 103 and sd.items_truncated  # listed: 100 per kind at most; counted: all
    items = sd.rendered_items()
    added = [it for it in items if it["op"] == "added"]
    assert [it["key"] for it in added] == [bytes.fromhex(k).decode() for k in sorted(new)]
    assert all(it["new"]["text"].startswith("(record") for it in added)
    cell = d.structure(0)
    assert cell is not None and (cell.changed, cell.added, cell.removed) == (1, 0, 0)
    a.close()
    b.close()


def _edit_value_byte(name: str, dst: Path, memory_id: int, index: int) -> bytes:
    """Copy fixture ``name`` with one letter of the ``index``-th value of a map changed; returns the key.

    The byte is found from the library's own record (expected.json: the entry's value bytes, the memory's
    bucket ranges), never from the decoder under test, so the attribution checked later is not circular.
    """
    exp = load_expected(name)
    entry = next(s for s in exp["structures"] if s["memory_id"] == memory_id)["entries"][index]
    memory = next(m for m in exp["memory_manager"]["memories"] if m["id"] == memory_id)
    data = bytearray((FIXTURES / name / "stable_memory.bin").read_bytes())
    value = bytes.fromhex(entry["value_hex"])
    hits = []
    for s0, e0 in memory["bucket_physical_ranges"]:
        at = data.find(value, s0, e0)
        while at >= 0:
            hits.append(at)
            at = data.find(value, at + 1, e0)
    assert len(hits) == 1, "the value is stored once, contiguously, in the map's buckets"
    # Change a lower-case letter near the value's end (a text field, so the value still decodes).
    pos = next(p for p in range(hits[0] + len(value) - 1, hits[0] - 1, -1) if 97 <= data[p] <= 121)
    data[pos] += 1
    dst.write_bytes(bytes(data))
    return bytes.fromhex(entry["key_hex"])


def test_a_healthy_pair_with_one_changed_value(tmp_path: Path) -> None:
    require_fixtures()
    edited = tmp_path / "edited.bin"
    key = _edit_value_byte("cell_and_map", edited, 4, 7)
    d, a, b = _diff("cell_and_map", edited)
    assert d.bytes.count == 1 and d.changed_bytes == 1
    sd = d.structure(4)
    assert sd is not None and (sd.added, sd.removed, sd.changed, sd.unchanged) == (0, 0, 1, 19)
    (item,) = sd.items
    assert item.key == key and item.old != item.new and len(item.old) == len(item.new)
    cell = d.structure(0)
    assert cell is not None and cell.status == "unchanged" and cell.method == "untouched"
    assert d.incident.kind == "healthy"
    assert d.verdict.startswith("No incident: the layout is intact (same MemoryManager geometry).")
    assert "Memory 4 (btreemap): 1 changed." in d.verdict
    # The changed byte is attributed to the node and, in detail, to the value of that entry.
    at = d.attribute(0)
    assert at.old[0].area == "memory 4 · BTreeMap node"
    assert "value of" in at.old[0].what and key.decode() in at.old[0].what
    a.close()
    b.close()


def test_v1_map_migrated_by_v060_counts_the_recorded_operations() -> None:
    require_fixtures()
    ops = load_expected("btree_v1_migrated")["operations"]
    d, a, b = _diff("btree_v1", "btree_v1_migrated")
    sd = d.structure("raw")
    assert sd is not None and sd.kind == "btreemap" and sd.method == "merge-join"
    assert (sd.added, sd.removed, sd.changed) == (ops["inserted"], ops["removed"], ops["overwritten"])
    assert (sd.old_count, sd.new_count) == (210, 250)
    assert d.incident.kind == "healthy"
    a.close()
    b.close()


def test_unrelated_snapshots_are_a_changed_layout_not_a_healthy_upgrade() -> None:
    require_fixtures()
    d, a, b = _diff("btree_big_values", "vec_log_heap")
    assert d.incident.kind == "layout_changed"
    assert d.verdict.startswith(
        "The layout changed: the btreemap at memory 3 is gone; the vec at memory 9 is gone."
    )
    assert "Memories never shrink" in d.verdict
    a.close()
    b.close()


def test_edge_inputs_empty_stable_memory_and_raw_bytes(tmp_path: Path) -> None:
    require_fixtures()
    empty = tmp_path / "empty_snapshot"
    empty.mkdir()
    (empty / "metadata.json").write_text('{"stable_memory_size": 0}')
    d, a, b = _diff(empty, PRE)
    assert [(r.start, r.end, r.tail) for r in d.ranges] == [(0, 1_114_112, True)]
    assert d.incident.kind == "healthy" and d.verdict.startswith("The old stable memory was empty.")
    json.dumps(d.to_json())
    (tmp_path / "x.bin").write_bytes(b"x")
    (tmp_path / "y.bin").write_bytes(bytes(range(256)) * 4)
    d2, c, e = _diff(tmp_path / "x.bin", tmp_path / "y.bin")
    assert d2.incident.kind == "unrecognised"
    assert d2.bytes.count == 2 and d2.ranges[-1].tail
    for s in (a, b, c, e):
        s.close()


def _forged(path: Path, entries: list[tuple[int, int]], *, extra_pages: int = 0) -> Path:
    from inspector.forge import build_mm_image, forge_u64_btreemap

    keys = [k for k, _ in entries]
    fm = forge_u64_btreemap(keys, [v for _, v in entries])
    content: Any = fm
    if extra_pages:
        content = fm.to_bytes() + bytes(extra_pages * 65_536)
    image = build_mm_image(1, [(3, content)])
    path.write_bytes(image.to_bytes())
    return path


def test_forged_healthy_upgrade_counts_adds_removes_changes_and_growth(tmp_path: Path) -> None:
    base = [(k, k * 10) for k in range(0, 1200, 2)]
    old = _forged(tmp_path / "old.bin", base)
    changed = {100: 1, 200: 2}
    added = [(k, k) for k in range(1, 81, 2)]
    new_entries = sorted([(k, changed.get(k, v)) for k, v in base if k not in (0, 2, 4)] + added)
    new = _forged(tmp_path / "new.bin", new_entries, extra_pages=2)
    d, a, b = _diff(old, new)
    sd = d.structure(3)
    assert sd is not None and sd.method == "merge-join"
    assert (sd.added, sd.removed, sd.changed) == (40, 3, 2)
    assert sd.unchanged == len(base) - 3 - 2
    ops = {(it["op"], it["key"]) for it in sd.rendered_items() if it["op"] != "added"}
    # u64 keys decode as decimal strings (the fixtures' convention for nat64).
    assert ops == {
        ("removed", "0"),
        ("removed", "2"),
        ("removed", "4"),
        ("changed", "100"),
        ("changed", "200"),
    }
    (mem,) = d.memories
    assert mem.id == 3 and mem.change == "grew"
    assert d.bytes.tail is not None  # the file grew with the memory
    assert d.incident.kind == "healthy"
    assert "Memory 3 grew from 1 to 3 pages." in d.verdict and "40 added, 3 removed, 2 changed" in d.verdict
    a.close()
    b.close()


def test_keys_out_of_byte_order_fall_back_to_a_hash_join(tmp_path: Path) -> None:
    from inspector.forge import build_mm_image
    from inspector.forge.btree import forge_btreemap_columns

    def image(path: Path, pairs: list[tuple[bytes, bytes]]) -> Path:
        # Keys stored in descending byte order: a custom Ord the merge-join cannot follow.
        fm = forge_btreemap_columns([k for k, _ in pairs], [v for _, v in pairs], check=False)
        path.write_bytes(build_mm_image(1, [(2, fm)]).to_bytes())
        return path

    keys = [f"k{i:04d}".encode() for i in range(300, 0, -1)]
    old_pairs = [(k, b"v" + k) for k in keys]
    new_pairs = [(k, (b"w" + k) if k == b"k0150" else v) for k, v in old_pairs if k != b"k0020"]
    new_pairs.insert(0, (b"k0999", b"new"))
    # Length-prefixed keys, said explicitly: the automatic key-layout probe relies on key order too.
    prefixed = {"2": {"key_size": None}}
    d, a, b = _diff(
        image(tmp_path / "o.bin", old_pairs), image(tmp_path / "n.bin", new_pairs), overrides=prefixed
    )
    sd = d.structure(2)
    assert sd is not None and sd.method == "hash-join"
    assert (sd.added, sd.removed, sd.changed) == (1, 1, 1)
    by_op = {it.op: it for it in sd.items}
    assert by_op["removed"].key == b"k0020" and by_op["removed"].old == b"vk0020"
    assert by_op["changed"].old == b"vk0150" and by_op["changed"].new == b"wk0150"
    a.close()
    b.close()


# --------------------------------------------------------------------------- attribution


def test_attribution_names_both_layouts() -> None:
    require_fixtures()
    d, a, b = _diff(PRE, "migration/post_upgrade")
    whats = {(g.old_what, g.new_what) for g in d.groups(100)}
    assert ("page 0 · unused by the MemoryManager", "page 0 · unused by the MemoryManager") in whats
    assert ("memory 4 · BTreeMap node at virtual 0x74", "memory 4 · BTreeMap node at virtual 0x74") in whats
    areas = {t.area: t.bytes for t in d.area_totals("new")[0]}
    assert areas["memory 4 · BTreeMap frontier chunk"] == 3
    assert sum(areas.values()) == d.changed_bytes
    d2, c, e = _diff(PRE, "migration/after_stable_save")
    first = d2.attribute(0)
    assert first.old[0].what.startswith(
        "MemoryManager header (magic, layout version, bucket count, bucket size"
    )
    assert first.new[0].what == "stable_save message (Candid, 386,837 bytes)"
    for s in (a, b, c, e):
        s.close()


# --------------------------------------------------------------------------- CLI


def test_cli_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    rc = main(["diff", str(FIXTURES / PRE), str(FIXTURES / "migration/post_upgrade"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    exp = _expected_ranges(load_expected("migration/post_upgrade_small"))  # any fixture: just the shape
    assert isinstance(exp["count"], int)
    assert out["changed_bytes"] == sum(e - s for s, e in out["changed_ranges"])
    assert isinstance(out["memory_manager"], dict)
    assert out["verdict"].startswith("The MemoryManager was re-initialised")
    structs = {s["memory_id"]: s for s in out["structures"]}
    assert {k: structs[4][k] for k in ("kind", "added", "removed", "changed")} == {
        "kind": "btreemap",
        "added": 3,
        "removed": 200,
        "changed": 0,
    }
    assert len(structs[4]["items"]) == 103
    att = out["attribution"]
    assert att["total"] == len(out["changed_ranges"]) and att["listed"] == 200 and att["truncated"]
    assert {"old", "new", "ranges"} <= att.keys()
    assert out["changes"]["groups"][0]["old"] == "page 0 · unused by the MemoryManager"
    assert out["salvage"][0]["recoverable_entries"] == 190


def test_json_is_plain_json_for_every_pair() -> None:
    require_fixtures()
    for name in MIGRATION:
        d, a, b = _diff(_source_of(name), name)
        json.dumps(d.to_json())  # no default=: every value is JSON already
        a.close()
        b.close()


def test_cli_report(capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    rc = main(["diff", str(FIXTURES / PRE), str(FIXTURES / "migration/after_stable_save"), "--report"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "verdict: stable_save" in out
    assert "386,837" in out and "Structures" in out and "Changes" in out


def test_cli_unreadable_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_fixtures()
    rc = main(["diff", str(FIXTURES / PRE), str(tmp_path / "missing.bin"), "--json"])
    assert rc == 2
    assert "no such file" in capsys.readouterr().err


def test_report_shows_snapshot_text_literally(tmp_path: Path) -> None:
    """A key that is Rich markup plus an ANSI sequence comes out as typed, escaped."""
    from rich.console import Console

    from inspector.commands.diff import render_report
    from inspector.forge import build_mm_image, forge_btreemap

    def image(path: Path, value: bytes) -> Path:
        fm = forge_btreemap([(b"[red]X\x1b[2J", value), (b"plain", b"v")])
        path.write_bytes(build_mm_image(1, [(3, fm)]).to_bytes())
        return path

    d, a, b = _diff(image(tmp_path / "a.bin", b"one"), image(tmp_path / "b.bin", b"two"))
    console = Console(width=200, record=True, force_terminal=False)
    console.print(render_report(d))
    text = console.export_text()
    assert "[red]X\\x1b[2J" in text
    assert "\x1b" not in text
    a.close()
    b.close()


def test_copy_of_itself_is_identical(tmp_path: Path) -> None:
    require_fixtures()
    copy = tmp_path / "copy.bin"
    shutil.copyfile(FIXTURES / "btree_u64_many" / "stable_memory.bin", copy)
    d, a, b = _diff("btree_u64_many", copy)
    assert d.identical and d.structure("raw").unchanged == 17_000
    a.close()
    b.close()
