"""The TUI's pure parts: region index, addresses, memory-map cells, colours, exports, value display."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from inspector.model import REGION_KINDS, Finding, Region
from inspector.offset_index import OffsetIndex
from inspector.session import load
from inspector.tui.memory_map import MapModel
from inspector.views.colour_roles import LEGEND, MAP_LEGEND, MAP_STATES, ROLES, kind_role, region_role
from inspector.views.export import ExportError, check_output, export_region, region_json
from inspector.views.navigation import GotoError, describe_position, key_matches, parse_goto
from inspector.views.value_display import show_value

SAMPLES = ROOT / "snapshots" / "samples"


# --------------------------------------------------------------------------- region index


def _tree() -> tuple[Region, Region, Region, Region, Region]:
    key = Region("key", "key", [(110, 120)])
    value = Region("value", "value", [(120, 150), (400, 420)])
    entry = Region("[0]", "entry", [(110, 150), (400, 420)], children=[key, value])
    node = Region("node", "node", [(100, 200)], children=[entry])
    memory = Region("memory 4", "memory", [(0, 1000)], children=[node], memory_id=4)
    return memory, node, entry, key, value


def _indexed() -> tuple[OffsetIndex, tuple[Region, ...]]:
    memory, node, entry, key, value = regions = _tree()
    index = OffsetIndex()
    index.add(memory, None, 0)
    index.add(node, memory, 1)
    index.add(entry, node, 2)
    index.add(key, entry, 3)
    index.add(value, entry, 3)
    return index, regions


def test_index_innermost_region_at_each_byte() -> None:
    index, (memory, node, entry, key, value) = _indexed()
    assert index.at(5) is memory
    assert index.at(100) is node
    assert index.at(110) is key and index.at(119) is key
    assert index.at(120) is value and index.at(149) is value
    assert index.at(150) is node
    assert index.at(405) is value, "a second range of a multi-range region"
    assert index.at(999) is memory
    assert index.at(1000) is None
    assert index.path(key) == [memory, node, entry, key]


def test_index_overlapping_segments_are_clipped_and_ordered() -> None:
    index, (memory, node, entry, key, value) = _indexed()
    segs = index.overlapping(95, 125)
    assert [(s, e, r.name) for s, e, r in segs] == [
        (95, 100, "memory 4"),
        (100, 110, "node"),
        (110, 120, "key"),
        (120, 125, "value"),
    ]


def test_index_remove_subtree_and_lineage_roles() -> None:
    index, (memory, node, entry, key, value) = _indexed()
    index.remove_subtree(node)
    assert index.at(115) is memory
    assert node not in index and key not in index
    blob = Region(
        "stable_save message", "stable_save", [(0, 50)], children=[Region("arg", "value", [(4, 50)])]
    )
    index.add(blob, None, 1)
    (arg,) = blob.children()
    index.add(arg, blob, 2)
    assert index.at(10) is arg
    assert region_role(index, arg) == "stable-save", "a stable_save message's parts keep its colour"
    assert region_role(index, memory) == "memory-4"


def test_index_skips_non_layout_regions() -> None:
    index = OffsetIndex()
    finding = Region("error: x", "finding", [(0, 10)], findings=[Finding("error", "x", "m", [(0, 10)])])
    index.add(finding, None, 1)
    assert index.at(5) is None
    assert index.parent(finding) is None and finding in index


# --------------------------------------------------------------------------- addresses


@pytest.fixture(scope="module")
def healthy() -> Iterator[Any]:
    """The analysis of the bundled healthy sample (shared by the address tests)."""
    session = load(SAMPLES / "healthy")
    yield session.analysis
    session.close()


def test_goto_forms(healthy: Any) -> None:
    a = healthy
    bucket = a.mm.bucket_size_bytes
    assert parse_goto("0x820", a) == 0x820
    assert parse_goto("2_080", a) == 2080
    assert parse_goto("820h", a) == 0x820
    mem4 = a.memory(4)
    assert parse_goto("m4:0x10", a) == mem4.to_physical(0x10)
    assert parse_goto("memory 4 : 16", a) == mem4.to_physical(16)
    assert parse_goto("b1", a) == 0x10000 + bucket
    assert parse_goto("b1:0x20", a) == 0x10000 + bucket + 0x20
    assert parse_goto("p2", a) == 2 * 0x10000
    assert parse_goto("+0x10", a, cursor=0x100) == 0x110
    assert parse_goto("-16", a, cursor=0x100) == 0xF0
    for bad, message in [
        ("m9:0", "memory 9 is not in this snapshot"),
        ("0xffffffffff", "outside the snapshot"),
        ("zz", "not a number"),
        ("", "type an offset"),
        (f"b0:{bucket}", "past the end"),
        ("-1", "outside the snapshot"),
    ]:
        with pytest.raises(GotoError, match=re.escape(message)):
            parse_goto(bad, a)


def test_describe_position(healthy: Any) -> None:
    a = healthy
    assert "MemoryManager header" in describe_position(a, 3)
    assert "bucket table entry 1" in describe_position(a, 2081)
    assert "page 0, unused" in describe_position(a, 0x9000)
    text = describe_position(a, a.memory(4).to_physical(0x30))
    assert "→ memory 4" in text and "m4:0x30" in text


def test_key_matching() -> None:
    assert key_matches("ALICE", '"alice.popescu"', b"alice.popescu")
    assert key_matches("0x616c", "whatever", b"alice")
    assert key_matches("616c", "whatever", b"alice")
    assert not key_matches("0x6c", "whatever", b"alice")
    assert not key_matches("", "x", b"x")
    assert not key_matches("zz", "abc", None)


# --------------------------------------------------------------------------- memory map


def _states(path: Path) -> list[tuple[str, str]]:
    session = load(path)
    try:
        model = MapModel(session.analysis)
        model.scan()
        return [(c.state, c.label) for c in model.cells(200)]
    finally:
        session.close()


def test_map_healthy_owners() -> None:
    states = _states(SAMPLES / "healthy")
    assert states[0] == ("mm-header", "MM")
    assert ("memory-0", "m0") in states and ("memory-4", "m4") in states


def test_map_after_stable_save_shows_the_overwrite() -> None:
    states = _states(SAMPLES / "after_stable_save")
    assert states[0] == ("stable-save", "SS")


def test_map_post_upgrade_unowned_nonzero_bucket() -> None:
    states = [s for s, _ in _states(SAMPLES / "post_upgrade")]
    assert "unallocated" in states, "bucket 2 has no owner but still holds the old map's nodes"


def test_map_groups_buckets_and_keeps_page0_alone(healthy: Any) -> None:
    model = MapModel(healthy)
    units = model.units(2)
    assert units[0] == (0, 0x10000)
    assert units[-1][1] == healthy.snapshot.size
    cells = model.cells(2)
    assert cells[0].state == "mm-header" and cells[1].label.startswith("m")


# --------------------------------------------------------------------------- colours


def test_every_role_and_map_state_has_a_style() -> None:
    css = (ROOT / "inspector" / "tui" / "app.tcss").read_text()
    for role in ROLES:
        assert f".role--{role} " in css, f"no style for role {role}"
    for state in MAP_STATES:
        assert f".map--{state} " in css, f"no style for map state {state}"
    assert {r for r, _ in LEGEND} <= set(ROLES)
    assert {s for s, _ in MAP_LEGEND} <= set(MAP_STATES)


def test_every_known_kind_has_a_role_and_unknown_kinds_are_neutral() -> None:
    for kind in REGION_KINDS:
        role = kind_role(kind, 4)
        assert role is None or role in ROLES
    assert kind_role("some_future_kind") == "neutral"
    assert kind_role("memory", 12) == "memory-4"


# --------------------------------------------------------------------------- export


def test_export_refuses_input_and_existing_files(tmp_path: Path) -> None:
    src = tmp_path / "stable_memory.bin"
    src.write_bytes(b"x" * 16)
    with pytest.raises(ExportError, match="input snapshot"):
        check_output(src, [src], overwrite=True)
    link = tmp_path / "alias.bin"
    link.symlink_to(src)
    with pytest.raises(ExportError, match="input snapshot"):
        check_output(link, [src], overwrite=True)
    out = tmp_path / "out.json"
    out.write_text("{}")
    with pytest.raises(ExportError, match="already exists"):
        check_output(out, [src], overwrite=False)
    assert check_output(out, [src], overwrite=True) == out
    with pytest.raises(ExportError, match="no such directory"):
        check_output(tmp_path / "missing" / "x.json", [src], overwrite=False)


def test_export_region_json_and_raw(tmp_path: Path) -> None:
    buf = bytes(range(256))
    region = Region("r", "value", [(16, 20), (32, 34)], value=b"\x01\x02")
    export_region(region, buf, tmp_path / "r.bin", "raw")
    assert (tmp_path / "r.bin").read_bytes() == buf[16:20] + buf[32:34]
    export_region(region, buf, tmp_path / "r.json", "json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["physical_ranges"] == [[16, 20], [32, 34]]
    assert data["decoded"]["hex"] == "0102"
    assert not list(tmp_path.glob("*.partial"))
    assert region_json(Region("x", "group"))["kind"] == "group"


# --------------------------------------------------------------------------- values


class _Broken:
    data = b"\x1b[2J"

    def decoded(self) -> object:
        raise RuntimeError("boom")


class _Decoded:
    text = "[red]hi\x1b[0m"
    value = {"a": 1}
    ok = False
    error = "bad"


def test_show_value_never_raises_and_escapes() -> None:
    shown = show_value(_Broken())
    assert shown is not None and not shown.ok and "boom" in (shown.error or "")
    assert "\x1b" not in shown.text and shown.value == "1b5b324a"
    shown = show_value(_Decoded())
    assert shown is not None and shown.text == "[red]hi\\x1b[0m" and shown.value == {"a": 1} and not shown.ok
    assert show_value(None) is None
    assert show_value(b"\x00ab").value == "006162"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- collector


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_collector_makes_full_passes_only_when_due_and_hands_back() -> None:
    import gc
    import weakref

    from inspector.tui.collector import FULL_AFTER_YOUNG_PASSES, Collector

    before = gc.get_threshold()
    collector = Collector()
    collector.take_over()
    try:
        assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] > before[2]
        gc.collect()
        cycle = _Cycle()
        ref = weakref.ref(cycle)
        gc.collect(1)  # the cycle survives a young pass: it is in the oldest generation now
        del cycle
        collector.collect_if_due()
        assert ref() is not None, "one young pass since the last full one: not due"
        for _ in range(FULL_AFTER_YOUNG_PASSES):
            gc.collect(1)
        collector.collect_if_due()
        assert ref() is None, "due: the full pass found the old garbage"
        frozen = gc.get_freeze_count()
        kept = [_Cycle() for _ in range(10)]
        collector.settle()
        assert gc.get_freeze_count() >= frozen + 10 and all(k.me is k for k in kept)
    finally:
        collector.hand_back()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
