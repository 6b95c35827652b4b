"""Issue 14: any byte explains itself (one offset index, data inspector), the incident's first screen,
small and large terminals. Runs on the bundled samples (no ../shared needed)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT
from test_tui_support import move_tree_cursor, nodes_of_kind, run_async, settle

from inspector.analysis.verdict import verdict
from inspector.byte_inspector import inspect_bytes, read_leb128
from inspector.decode.principal import principal_to_text
from inspector.offset_index import OffsetIndex, address_forms
from inspector.regions import build_tree
from inspector.session import load
from inspector.tui.app import create_app
from inspector.views.navigation import parse_goto

SAMPLES = ROOT / "snapshots" / "samples"


@pytest.fixture(scope="module")
def healthy() -> Iterator[Any]:
    session = load(SAMPLES / "healthy")
    yield session.analysis
    session.close()


# --------------------------------------------------------------------------- the offset index


def test_resolve_reaches_key_and_value_bytes_of_an_unopened_map(healthy: Any) -> None:
    root = build_tree(healthy)
    index = OffsetIndex(root, healthy)
    buf = healthy.snapshot.buf
    structure = healthy.structure(4)
    seen_kinds: set[str] = set()
    # Every entry of the map, found from one byte of its key and one of its value, by offset alone.
    for el in list(structure.elements(0))[:40]:
        key_spans, value_spans = structure.element_spans(el)
        for role, spans, data in (("key", key_spans, el.key), ("value", value_spans, el.value)):
            phys = structure.physical(spans)
            pos = phys[0][0] + min(1, phys[0][1] - phys[0][0] - 1)
            path = index.resolve(pos)
            leaf = path[-1]
            assert leaf.kind == role, (role, [r.name for r in path])
            assert leaf.contains(pos)
            assert leaf.value.data == data, "the region holds the bytes stored at that offset"
            assert b"".join(bytes(buf[s:e]) for s, e in leaf.ranges) == data
            assert path[0] is root and [r.kind for r in path].count("node") >= 1
            seen_kinds.update(r.kind for r in path)
    assert {"memory", "btreemap", "node", "entry", "key", "value"} <= seen_kinds
    # Resolving registered the path: the cheap lookup now answers the same.
    assert index.at(pos) is leaf and index.path(leaf)[0] is root


def test_resolve_headers_cell_value_and_page0(healthy: Any) -> None:
    index = OffsetIndex(build_tree(healthy), healthy)
    assert index.resolve(0)[-1].kind == "mm_header"
    assert index.resolve(parse_goto("m4:0x0", healthy))[-1].kind == "structure_header"
    assert index.resolve(parse_goto("m4:0x40", healthy))[-1].kind == "allocator"
    cell_value = index.resolve(parse_goto("m0:0x40", healthy))
    assert [r.kind for r in cell_value][-3:] == ["entries", "entry", "value"]
    assert index.resolve(0x8000) == [index.root], "unused page 0: nothing more specific than the file"


def test_address_forms(healthy: Any) -> None:
    pos = parse_goto("m4:0x2f14", healthy)
    forms = address_forms(healthy, pos)
    assert forms[0] == f"{pos:#x}" and "m4:0x2f14" in forms
    bucket = (pos - 0x10000) // healthy.mm.bucket_size_bytes
    assert f"b{bucket}:{(pos - 0x10000) % healthy.mm.bucket_size_bytes:#x}" in forms


# --------------------------------------------------------------------------- data inspector


def test_data_inspector_numbers_leb_and_principal() -> None:
    data = struct.pack("<Q", 0x0102030405060708) + bytes(24)
    rows = dict(inspect_bytes(data))
    assert rows["u8"] == "8  (0x08)"
    assert rows["u16 LE / BE"] == f"{0x0708:,} / {0x0807:,}"
    assert rows["u64 LE / BE"].startswith(f"{0x0102030405060708:,} / ")
    assert read_leb128(bytes([0xE5, 0x8E, 0x26])) == (624485, 3)
    assert read_leb128(bytes([0xC0, 0xBB, 0x78]), signed=True) == (-123456, 3)
    assert read_leb128(bytes([0x80] * 12)) is None
    canister = bytes.fromhex("00000000000000070101")  # a canister id: 10 bytes, class 0x01
    rows = dict(inspect_bytes(bytes([10]) + canister + bytes(8)))
    assert rows["principal"] == f"{principal_to_text(canister)} (length-prefixed)"
    assert "principal" not in dict(inspect_bytes(bytes(range(40, 72))))
    assert "None" not in str(rows) and "False" not in str(rows)


# --------------------------------------------------------------------------- incident screen


def test_verdict_is_headline_plus_next_command() -> None:
    session = load(SAMPLES / "after_stable_save")
    try:
        headline, command = verdict(session.analysis.diagnosis)
        assert headline.startswith("an ic-cdk stable_save wrote") and headline.endswith("MemoryManager.")
        # The README's rescue: repair's dry-run into a new snapshot, with the ids the bucket table lost.
        assert command is not None and command.startswith("stable-inspect repair ")
        assert "--dry-run -o rescued" in command and "--assign '?b1=<MemoryId>'" in command
        todo = next(line for line in session.analysis.diagnosis if line.startswith("What to do"))
        # ... and salvage stays as the listing alternative.
        assert "--reference OLD_SNAPSHOT" in todo and "stable-inspect salvage " in todo
        names = [r.name for r in build_tree(session.analysis).children()]
        assert not any(n.startswith("unknown") for n in names), "the stable_save bytes are shown once"
    finally:
        session.close()
    assert verdict([]) == ("", None)


@run_async
async def test_incident_first_screen_shows_verdict_and_command_at_80x24() -> None:
    app = create_app(SAMPLES / "after_stable_save")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        panel = app.diagnosis_panel
        texts = [str(panel.get_option_at_index(i).prompt) for i in range(panel.option_count)]
        assert texts[0].startswith("an ic-cdk stable_save wrote")
        assert texts[1].startswith("Next: stable-inspect repair") and "--dry-run" in texts[1]
        # The long diagnosis is not repeated in the panel: only in Details, once.
        assert not any(t.startswith("Consequence") or "Consequence:" in t for t in texts)
        assert panel.region.height >= 4 and panel.display


# --------------------------------------------------------------------------- hex ↔ tree in the app


@run_async
async def test_goto_expands_the_tree_down_to_the_key_on_a_fresh_screen() -> None:
    app = create_app(SAMPLES / "healthy")
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await pilot.press("g", *"m4:0x400", "enter")
        await settle(pilot)
        pos = parse_goto("m4:0x400", app.analysis)
        selected = app.selected
        assert selected is not None and selected.kind in ("key", "value") and selected.contains(pos)
        assert app.region_tree.cursor_node is not None and app.region_tree.cursor_node.data is selected
        rows = dict(app.query_one("#inspector").rows)
        assert "m4:0x400" in rows["address"]
        assert rows["u8"].startswith(f"{app.analysis.snapshot.buf[pos]:,}")


@pytest.mark.parametrize(("size", "bpl"), [((80, 24), 8), ((200, 50), 16), ((250, 70), 32)])
def test_bytes_per_line_follow_the_terminal(size: tuple[int, int], bpl: int) -> None:
    @run_async
    async def check() -> None:
        app = create_app(SAMPLES / "healthy")
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            hexv = app.hex_view
            assert hexv.bpl == bpl
            assert hexv.line_width <= hexv.scrollable_content_region.width, "ASCII column fits"
            assert app.details_panel.region.width > 0 and app.details_panel.region.height > 0
            line = "".join(seg.text for seg in hexv.render_line(0))
            assert line.rstrip().endswith("MGR." + "." * (bpl - 4))

    check()


# --------------------------------------------------------------------------- decoder switch / reload


async def _select_entry(pilot: Any, index: int) -> Any:
    app = pilot.app
    (entries_node,) = nodes_of_kind(app, "entries", 4)
    app.region_tree.populate_now(entries_node)
    entries_node.expand()
    await settle(pilot)
    target = entries_node.children[index]
    move_tree_cursor(app, target)
    await settle(pilot)
    return target


@run_async
async def test_decoder_switch_and_reload_keep_selection_and_scroll(tmp_path: Any) -> None:
    did = tmp_path / "names.did"
    did.write_text("type Profile = record { name : text; age : nat32 };\nservice : {}\n")
    app = create_app(SAMPLES / "healthy")
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await _select_entry(pilot, 37)
        assert app.selected is not None and app.selected.name.startswith("[37]")
        tree_y, hex_cursor = app.region_tree.scroll_offset.y, app.hex_view.cursor
        for key in ("v", "K"):
            await pilot.press(key)
            await settle(pilot)
            assert app.selected is not None and app.selected.name.startswith("[37]"), key
            assert app.region_tree.cursor_node.data is app.selected
            assert app.region_tree.scroll_offset.y == tree_y
            assert app.hex_view.cursor == hex_cursor
        await pilot.press("o", *str(did), "enter")
        await settle(pilot)
        assert app.did_path == str(did)
        assert app.selected is not None and app.selected.name.startswith("[37]")
        assert app.hex_view.cursor == hex_cursor


# --------------------------------------------------------------------------- search


def test_search_finds_keys_values_and_bytes_sorted_by_offset(healthy: Any) -> None:
    from inspector.search import find_all, next_match, parse_query

    assert parse_query("0x4d4752").raw == (b"MGR",) and parse_query("0x4d4752").text == ""
    assert parse_query('"cafe"').raw == (b"cafe",)
    found = find_all(healthy, "alice")
    assert [m.pos for m in found] == sorted(m.pos for m in found)
    keys = [m for m in found if m.what == "key"]
    structure = healthy.structure(4)
    expected = sum(1 for el in structure.elements(0) if b"alice" in (el.key or b""))
    assert expected and len(keys) == expected, "one match per key holding the text"
    index = OffsetIndex(build_tree(healthy), healthy)
    for m in found:  # every match really holds the text (any case): raw bytes, or the key/value there
        if m.what == "bytes":
            assert bytes(healthy.snapshot.buf[m.pos : m.pos + 5]).lower() == b"alice"
        else:
            leaf = index.resolve(m.pos)[-1]
            assert leaf.kind == m.what and b"alice" in leaf.value.data.lower()
    (mgr,) = find_all(healthy, "0x4d4752")
    assert (mgr.pos, mgr.what) == (0, "bytes")
    assert find_all(healthy, "no-such-text-anywhere") == []
    assert next_match(keys, keys[0].pos, 1) == 1 and next_match(keys, keys[0].pos, -1) == len(keys) - 1


@run_async
async def test_search_from_anywhere_and_step_with_n() -> None:
    app = create_app(SAMPLES / "healthy")
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await pilot.press("n")  # no search yet: a hint, nothing moves
        await settle(pilot)
        assert app.hex_view.cursor == 0
        await pilot.press("slash", *"alice", "enter")
        await settle(pilot)
        first = app.selected
        assert first is not None and first.kind == "entry" and "alice" in first.name
        assert app.hex_view.cursor == app._matches[0].pos
        status = str(app.query_one("#status-text").render())
        assert f"match 1 of {len(app._matches):,}" in status
        await pilot.press("n")
        await settle(pilot)
        assert app.selected is not first and "alice" in app.selected.name
        assert app.hex_view.cursor == app._matches[1].pos
        await pilot.press("N")
        await settle(pilot)
        assert app.hex_view.cursor == app._matches[0].pos
        app._last_query = ""  # the dialog starts with the previous query; start afresh
        await pilot.press("slash", *"0x4d4752", "enter")
        await settle(pilot)
        assert app.hex_view.cursor == 0


def test_footer_and_help_use_words_and_findings_keys() -> None:
    app = create_app(SAMPLES / "healthy")
    keys = {b.key: b for b in app.BINDINGS if hasattr(b, "key")}
    assert keys["right_square_bracket"].action == "next_finding"
    assert keys["n"].action == "next_match" and keys["slash"].description == "Search"


# --------------------------------------------------------------------------- values on screen


def test_display_value_writes_numbers_one_way_and_no_python_reprs() -> None:
    from inspector.byte_inspector import display_value, hex_rows

    assert display_value(None) == "—" and display_value(False) == "no" and display_value(True) == "yes"
    assert display_value(1234567) == "1,234,567"
    assert display_value([0, 91546]) == "0x0–0x1659a"
    assert display_value(b"\x01\xff") == "01 ff"
    rows = hex_rows(b"DIDL" + bytes(range(20)))
    assert rows[0].startswith("000000  44 49 44 4c 00 01") and rows[0].endswith("│ DIDL............")
    assert rows[1].startswith("000010  0c 0d 0e 0f 10 11 12 13")
    assert len(hex_rows(bytes(16 * 100), max_rows=64)) == 65


def _rendered(renderable: Any) -> str:
    from rich.console import Console

    console = Console(width=100, record=True, color_system=None)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


@run_async
async def test_candid_value_is_real_multiline_text_shown_once() -> None:
    app = create_app(SAMPLES / "after_stable_save")
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        app.goto("0x100")
        await settle(pilot)
        path = app.index.path(app.selected)
        message = next(r for r in path if r.kind == "stable_save")
        app.reveal_path(path[: path.index(message) + 1])
        await settle(pilot)
        assert app.selected is message
        head = _rendered(app.details_panel.head_renderable)
        value = _rendered(app.details_panel.value_renderable)
        assert "\n  record {\n" in value and "\\n" not in value
        assert "type table1 = " in head and "\\n" not in head
        for python in ("None", "False", "True"):
            assert python not in head and python not in value
        assert value.count("DAO Members Registry") == 1, "one rendering of the value, not text + JSON"


# --------------------------------------------------------------------------- words, not ids


@run_async
async def test_help_and_palette_show_words_not_action_ids() -> None:
    from inspector.tui.screens import HelpScreen

    app = create_app(SAMPLES / "healthy")
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = _rendered(app.screen.query_one("#help-table").content)  # type: ignore[attr-defined]
        assert "Next finding" in text and "Search" in text
        for action_id in ("app.", "hex.", "tree.", "cursor_parent_next_sibling", "next_finding"):
            assert action_id not in text, action_id
        await pilot.press("escape")
        commands = list(app.get_system_commands(app.screen))
        assert all("app." not in (c.help or "") for c in commands)


@run_async
async def test_export_says_where_it_wrote(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app(SAMPLES / "healthy")
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("enter")  # the proposed name, in the working directory
        await settle(pilot)
        written = [p for p in tmp_path.iterdir() if p.is_file()]
        assert len(written) == 1
        messages = [n.message for n in app._notifications]
        assert any(f"to {written[0].resolve()}" in m for m in messages), messages


def test_readme_key_table_matches_the_bindings() -> None:
    import re

    from inspector.tui.app import InspectorApp
    from inspector.tui.diff_app import DiffApp
    from inspector.tui.hexview import HexView

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| key | anywhere (main view) | diff view |") :].split("\n\n", 1)[0]
    documented: set[str] = set()
    for row in table.splitlines()[2:]:
        documented.update(re.findall(r"`([^`]+)`", row.split("|")[1]))
    app = create_app(SAMPLES / "healthy")
    shown = {app.get_key_display(b) for b in InspectorApp.BINDINGS if b.show}  # type: ignore[union-attr]
    motion = {
        "up",
        "down",
        "left",
        "right",
        "pageup",
        "pagedown",
        "home",
        "end",
        "ctrl+home",
        "ctrl+end",
        "f1",
    }
    every = {
        app.get_key_display(b)  # type: ignore[arg-type]
        for b in [*InspectorApp.BINDINGS, *DiffApp.BINDINGS, *HexView.BINDINGS]
        if b.key not in motion  # type: ignore[union-attr]
    }
    assert shown <= documented, shown - documented
    assert every <= documented, every - documented
    assert documented <= every, documented - every
    app.session.close()


def test_resolve_in_a_big_map_builds_one_path_not_the_entries(tmp_path: Any) -> None:
    """A map with 30,000 entries: resolving a byte of the last key builds one root-to-leaf path (counts
    of work, not timings: the entries pages stay unbuilt and the index holds a few hundred regions)."""
    from inspector.forge import build_mm_image, forge_btreemap

    entries = [(i.to_bytes(8, "big"), (i * 7).to_bytes(8, "little")) for i in range(30_000)]
    path = tmp_path / "big.bin"
    path.write_bytes(build_mm_image(16, [(2, forge_btreemap(entries))]).to_bytes())
    session = load(path)
    try:
        analysis = session.analysis
        root = build_tree(analysis)
        index = OffsetIndex(root, analysis)
        structure = analysis.structure(2)
        *_, last = structure.map.iter_entries(29_990)
        node = structure.map.node(last.node_addr)
        (key_range,) = structure.physical(list(node.entries[last.index_in_node].key_ranges))
        resolved = index.resolve(key_range[0] + 3)
        assert resolved[-1].kind == "key" and resolved[-1].value.data == last.key == (29_999).to_bytes(
            8, "big"
        )
        btree = next(r for r in resolved if r.kind == "btreemap")
        entries_region = next(c for c in btree.children() if c.kind == "entries")
        assert not entries_region.children_loaded, "the 30,000 entries were not materialised"
        assert len(index) < 400
    finally:
        session.close()
