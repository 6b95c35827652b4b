"""Pilot tests of the terminal UI: navigation, tree ↔ hex sync, findings, go-to, find, decoders, help."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, require_fixtures
from test_tui_support import (
    HOSTILE_KEY,
    SIZE,
    corrupt_copy,
    hostile_snapshot,
    move_tree_cursor,
    nodes_of_kind,
    run_async,
    settle,
)

from inspector.model import Region
from inspector.session import load
from inspector.tui.app import InspectorApp, create_app
from inspector.tui.hexview import HexView
from inspector.tui.memory_map import MemoryMap
from inspector.tui.screens import ConfirmScreen, GotoScreen, HelpScreen

PRE = "migration/pre_upgrade"


def pre_upgrade() -> Path:
    require_fixtures()
    return FIXTURES / PRE


async def open_entries(pilot: Any, memory_id: int | None = 4) -> Any:
    """Put the tree cursor on the map's entries node (of memory ``memory_id``, or the only one) and expand it
    with one keypress."""
    app = pilot.app
    (entries,) = [n for n in nodes_of_kind(app, "entries", memory_id)]
    move_tree_cursor(app, entries)
    app.region_tree.focus()
    await pilot.pause()
    await pilot.press("enter")
    await settle(pilot)
    return entries


@run_async
async def test_first_screen_shows_layout_and_entries_are_one_key_away() -> None:
    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        kinds = {n.data.kind for n in nodes_of_kind(app, "mm_header")}
        assert kinds == {"mm_header"}
        assert nodes_of_kind(app, "cell", 0), "the Cell at memory 0 is shown"
        assert nodes_of_kind(app, "btreemap", 4), "the BTreeMap at memory 4 is shown"
        # Without errors the MemoryManager is selected and its header bytes are highlighted.
        assert app.selected is not None and app.selected.kind == "mm_header"
        assert app.hex_view.cursor == 0
        assert app.hex_view.selection == [(0, 2080)]
        entries = await open_entries(pilot)
        assert len(entries.children) == 200
        assert all(isinstance(c.data, Region) and c.data.kind == "entry" for c in entries.children)


@run_async
async def test_tree_selection_moves_hex_cursor_and_hex_cursor_selects_innermost_region() -> None:
    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        entries = await open_entries(pilot)
        await pilot.press("down")  # first entry
        await settle(pilot)
        entry = entries.children[0].data
        assert app.selected is entry
        hexv = app.hex_view
        assert hexv.cursor == entry.ranges[0][0]
        first, last = hexv.visible_range()
        assert first <= hexv.cursor < last, "the hex view scrolled to the region"
        assert hexv.selection == sorted(entry.ranges)

        # Into the hex view: moving right stays inside the key → the tree selects the key region.
        await pilot.press("x")
        assert app.focused is hexv
        await pilot.press("right")
        await settle(pilot)
        key = next(c for c in entry.children() if c.kind == "key")
        assert app.selected is key
        assert app.region_tree.cursor_node.data is key
        assert hexv.cursor == key.ranges[0][0] + 1, "the tree selection did not move the hex cursor back"

        # Jump into the value: the value region is selected.
        value = next(c for c in entry.children() if c.kind == "value")
        hexv.move_cursor(value.ranges[0][0] + 3, by_user=True)
        await settle(pilot)
        assert app.selected is value


@run_async
async def test_goto_physical_and_virtual_offsets() -> None:
    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        assert isinstance(app.screen, GotoScreen)
        await pilot.press(*"m4:0x10", "enter")
        await settle(pilot)
        bucket_start = 0x10000 + 1 * app.analysis.mm.bucket_size_bytes  # memory 4 owns bucket 1
        assert app.hex_view.cursor == bucket_start + 0x10
        assert app.focused is app.hex_view
        assert app.selected is not None and app.selected.contains(app.hex_view.cursor)

        await pilot.press("g", *"0x820", "enter")
        await settle(pilot)
        assert app.hex_view.cursor == 0x820

        # A bad address keeps the dialog open with a message.
        await pilot.press("g", *"m9:0", "enter")
        await pilot.pause()
        assert isinstance(app.screen, GotoScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, GotoScreen)


@run_async
async def test_findings_next_previous_and_diagnosis_links(tmp_path: Path) -> None:
    path = corrupt_copy(pre_upgrade() / "stable_memory.bin", tmp_path / "corrupt.bin")
    app = create_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        findings = app.analysis.all_findings()
        errors = [f for f in findings if f.severity == "error"]
        assert len(findings) >= 2 and errors
        # With errors the diagnosis panel is shown and the tree starts at the findings.
        assert app.diagnosis_panel.display
        assert app.selected is not None and app.selected.kind in ("diagnosis", "findings")

        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert app.selected is not None and app.selected.findings == [findings[0]]
        if findings[0].physical_ranges:
            assert app.hex_view.cursor == min(
                findings[0].physical_ranges[0][0], app.analysis.snapshot.size - 1
            )
            assert app.hex_view.selection == sorted(findings[0].physical_ranges)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert app.selected.findings == [findings[1]]
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert app.selected.findings == [findings[0]]

        # The diagnosis panel links each error finding to its bytes.
        panel = app.diagnosis_panel
        panel.focus()
        target = errors[-1]
        index = next(
            i
            for i in range(panel.option_count)
            if panel.get_option_at_index(i).id == f"finding-{len(errors) - 1}"
        )
        panel.highlighted = index
        await pilot.press("enter")
        await settle(pilot)
        assert app.selected.findings == [target]
        if target.physical_ranges:
            # A range past the end of the file (a truncated snapshot) puts the cursor on the last byte.
            last = app.analysis.snapshot.size - 1
            assert app.hex_view.cursor == min(target.physical_ranges[0][0], last)


@run_async
async def test_memory_map_jumps_hex_view() -> None:
    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        mmap = app.query_one(MemoryMap)
        states = [c.state for c in mmap.cells]
        assert states[0] == "mm-header" and "memory-0" in states and "memory-4" in states
        await pilot.press("m")
        assert app.focused is mmap
        await pilot.press("right", "right")
        await settle(pilot)
        assert app.hex_view.cursor == mmap.cells[2].start
        # Clicking a cell jumps too.
        cell_w, _ = mmap._layout
        # Offsets count the border and the padding (one cell each) before the first map cell.
        await pilot.click(MemoryMap, offset=(2 + cell_w * 9, 1))
        await settle(pilot)
        assert app.hex_view.cursor == mmap.cells[9].start


@run_async
async def test_help_lists_every_binding_and_palette_has_commands() -> None:
    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        ids = {row.id for row in app.screen.rows}
        for bindings in (InspectorApp.BINDINGS, HexView.BINDINGS, MemoryMap.BINDINGS):
            for b in bindings:
                assert b.id in ids, f"{b.id} missing from the help screen"  # type: ignore[union-attr]
        text = str(app.screen.query_one("#help-table").render())
        assert text  # rendered without errors
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)

        titles = {c.title for c in app.get_system_commands(app.screen)}
        for b in InspectorApp.BINDINGS:
            if b.action != "quit" and b.key != "f1":  # type: ignore[union-attr]
                assert b.description in titles  # type: ignore[union-attr]


@run_async
async def test_value_decoder_cycles_and_rebuilds_structure() -> None:
    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        (node,) = nodes_of_kind(app, "btreemap", 4)
        move_tree_cursor(app, node)
        await settle(pilot)
        structure = app.analysis.structure(4)
        old_region = node.data
        before = structure.settings.get("value", "auto")
        await pilot.press("v")
        await settle(pilot)
        after = structure.settings.get("value", "auto")
        assert after != before
        assert app.region_tree.cursor_node.data.kind == "btreemap"
        assert app.region_tree.cursor_node.data is not old_region, "the structure's subtree was rebuilt"
        await pilot.press("K")
        await settle(pilot)
        assert structure.settings.get("key", "auto") != "auto"


@run_async
async def test_find_key_selects_matching_entry() -> None:
    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # From anywhere: the search does not need a structure selected first.
        await pilot.press("slash", *"bea.rossi", "enter")
        await settle(pilot)
        sel = app.selected
        assert sel is not None and sel.kind == "entry" and "bea.rossi" in sel.name
        assert app.hex_view.cursor == sel.ranges[0][0]
        # Again: the next match after the selection (wrapping around if there is only one).
        await pilot.press("slash", "enter")
        await settle(pilot)
        assert app.selected is not None and "bea.rossi" in app.selected.name


@run_async
async def test_hostile_key_is_shown_literally(tmp_path: Path) -> None:
    path = hostile_snapshot(tmp_path / "hostile.bin")
    app = create_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        entries = await open_entries(pilot, memory_id=3)
        labels = [c.label.plain for c in entries.children]
        hostile = next(label for label in labels if "[red]X" in label)
        assert "\x1b" not in hostile and "\\x1b[2J" in hostile
        node = next(c for c in entries.children if "[red]X" in c.label.plain)
        move_tree_cursor(app, node)
        await settle(pilot)
        details = app.details_panel
        rendered = _plain(details.head_renderable) + _plain(details.value_renderable)
        assert "[red]X" in rendered
        assert "\x1b" not in rendered and "\x07" not in rendered
        assert HOSTILE_KEY.decode() not in rendered


def _plain(renderable: Any) -> str:
    """What a renderable shows, as plain text (styles dropped, control codes kept if any got through)."""
    import io

    from rich.console import Console

    console = Console(width=200, file=io.StringIO(), color_system=None, legacy_windows=False)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


@run_async
async def test_export_region_json_and_raw_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    session = load(pre_upgrade())
    app = create_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # The MemoryManager is selected: export it as JSON with the proposed name.
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("enter")
        await settle(pilot)
        written = list(tmp_path.glob("*.json"))
        assert len(written) == 1
        data = json.loads(written[0].read_text())
        assert data["kind"] == "mm_header" and data["physical_ranges"] == [[0, 2080]]
        # Same name again: the file exists, so a confirmation is asked; "n" keeps the file.
        written[0].write_text("keep me")
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(pilot)
        assert written[0].read_text() == "keep me"
        # The input snapshot is refused outright.
        await pilot.press("e")
        await pilot.pause()
        inp = app.screen.query_one("#export-path")
        inp.value = str(session.snapshot.file_path)
        await pilot.press("enter")
        await pilot.pause()
        assert "input snapshot" in str(app.screen.query_one("#export-error").render())
        await pilot.press("escape")
        await pilot.pause()
        # Raw bytes of the selection.
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#fmt-raw").value = True
        await pilot.pause()
        await pilot.press("enter")
        await settle(pilot)
        (raw,) = list(tmp_path.glob("*.bin"))
        assert raw.read_bytes() == bytes(session.snapshot.buf[0:2080])


def test_open_command_unreadable_input_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from inspector.cli import main

    assert main(["open", "/nonexistent/stable_memory.bin"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stable-inspect: ") and err.count("\n") == 1


@run_async
async def test_many_memories_and_big_map_stay_responsive() -> None:
    """btree_u64_many: 17,000 entries in pages of 1,000 that load in a worker."""
    require_fixtures()
    app = create_app(FIXTURES / "btree_u64_many")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        entries = await open_entries(pilot, memory_id=None)
        pages = entries.children
        assert len(pages) == 17 and all(p.data.kind == "group" for p in pages)
        move_tree_cursor(app, pages[16])
        await pilot.press("enter")
        await settle(pilot)
        assert len(pages[16].children) == 1000
        await pilot.press("down")
        await settle(pilot)
        assert app.selected is pages[16].children[0].data
        assert app.hex_view.cursor == app.selected.ranges[0][0]


@run_async
async def test_legend_and_command_palette() -> None:
    from textual.command import CommandPalette

    from inspector.tui.screens import LegendScreen

    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("l")
        await pilot.pause()
        assert isinstance(app.screen, LegendScreen)
        # While a dialog is open the main actions are off: "g" does not stack a go-to dialog on it.
        await pilot.press("g")
        await pilot.pause()
        assert isinstance(app.screen, LegendScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"go to", "enter")
        await settle(pilot)
        assert isinstance(app.screen, GotoScreen), "the palette runs the same action as the key"
        await pilot.press("escape")


@run_async
async def test_multi_gib_sparse_snapshot_paints_at_once(tmp_path: Path) -> None:
    """8 GiB, almost all holes: nothing reads the file whole (it would take far longer than this test)."""
    import time

    big = tmp_path / "big.bin"
    big.write_bytes((pre_upgrade() / "stable_memory.bin").read_bytes())
    with open(big, "r+b") as fh:
        fh.truncate(8 << 30)
    started = time.monotonic()
    app = create_app(big)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert time.monotonic() - started < 10
        assert app.hex_view.line_count == (8 << 30) // 16
        await pilot.press("x", "ctrl+end")
        await pilot.pause()
        assert app.hex_view.cursor == (8 << 30) - 1
        await settle(pilot)
        cells = app.query_one(MemoryMap).cells
        assert cells[0].state == "mm-header" and cells[-1].state == "empty"


@pytest.mark.parametrize(
    "path",
    # The fixtures cover the trio; these add a forged unowned bucket and a snapshot directory.
    ["snapshots/samples/after_stable_save", "snapshots/samples/snapshot_dir"],
)
@run_async
async def test_samples_open_and_every_top_node_expands(path: str) -> None:
    from conftest import ROOT

    app = create_app(ROOT / path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for node in list(app.region_tree.root.children):
            node.expand()
        await settle(pilot)
        await pilot.press("n", "x", "pagedown", "ctrl+end", "t", "end")
        await settle(pilot)
        assert app.is_running


@run_async
async def test_load_did_and_schema_reload_the_session(tmp_path: Path) -> None:
    did = tmp_path / "service.did"
    did.write_text("type Member = record { name : text; email : text };\n")
    schema = tmp_path / "schema.toml"
    schema.write_text('[memory.4]\nvalue = "raw"\n')
    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        first = app.session

        async def load_file(path: Path) -> None:
            await pilot.press("o")
            await pilot.pause()
            app.screen.query_one("#prompt-input").value = str(path)  # typing a long path is slow
            await pilot.press("enter")
            await settle(pilot)

        await load_file(did)
        assert app.session is not first and app.did_path == str(did)
        assert app.analysis.structure(4).names, "the .did names reach the structures"
        await load_file(schema)
        assert app.schema_path == str(schema) and app.did_path == str(did)
        assert app.analysis.structure(4).settings.get("value") == "raw"
        # A file that is neither is refused in the dialog.
        other = tmp_path / "notes.txt"
        other.write_text("x")
        await load_file(other)
        assert "expected a .did file" in str(app.screen.query_one("#prompt-error").render())
        await pilot.press("escape")


@run_async
async def test_a_worker_page_is_added_a_chunk_per_turn_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1,000-entry page lands in chunks (each on a loop turn of its own), complete and in order, and its
    objects are frozen for the collector on the way."""
    import gc

    import inspector.tui.tree as tree_module

    require_fixtures()
    monkeypatch.setattr(tree_module, "ADD_CHUNK", 64)
    turns = []
    real_after_due = tree_module._after_due

    async def counted() -> None:
        turns.append(gc.get_freeze_count())
        await real_after_due()

    monkeypatch.setattr(tree_module, "_after_due", counted)
    app = create_app(FIXTURES / "btree_u64_many")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        entries = await open_entries(pilot, memory_id=None)
        page = entries.children[3]
        move_tree_cursor(app, page)
        turns.clear()
        await pilot.press("enter")
        await settle(pilot)
        built = page.data.children()
        assert [c.data for c in page.children] == built and len(built) == 1000
        # One turn before the page's regions are frozen, then one before each of the 16 chunks.
        assert len(turns) == 1 + 16
        assert turns[1] > turns[0], "the page's regions and labels were frozen before its nodes were added"


@run_async
async def test_a_page_replaced_while_it_is_being_added_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder change (the node's region replaced) between two chunks: the old page's nodes stop coming."""
    import inspector.tui.tree as tree_module

    require_fixtures()
    monkeypatch.setattr(tree_module, "ADD_CHUNK", 100)
    app = create_app(FIXTURES / "btree_u64_many")
    replacement = Region("replaced", "group")
    turns = 0
    real_after_due = tree_module._after_due

    async def replace_on_third_turn() -> None:
        nonlocal turns
        turns += 1
        if turns == 3:
            app.region_tree.replace_subtree(page, replacement)
        await real_after_due()

    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        entries = await open_entries(pilot, memory_id=None)
        page = entries.children[5]
        old = page.data
        monkeypatch.setattr(tree_module, "_after_due", replace_on_third_turn)
        move_tree_cursor(app, page)
        await pilot.press("enter")
        await settle(pilot)
        assert page.data is replacement and turns == 3
        old_entries = {id(r) for r in old.children()}
        assert not [c for c in page.children if id(c.data) in old_entries]
        assert not app.region_tree.is_populated(page)
        assert not [key for key in app._tasks if key.startswith("load-")], "its loading task ended"


@run_async
async def test_the_app_holds_the_collectors_full_passes_and_hands_them_back() -> None:
    import gc

    from inspector.tui.collector import FULL_AFTER_YOUNG_PASSES

    before = gc.get_threshold()
    app = create_app(pre_upgrade())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2] and full > 1_000 * FULL_AFTER_YOUNG_PASSES
        assert gc.get_freeze_count() > 0, "the first screen is frozen once painted"
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
