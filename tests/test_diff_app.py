"""Pilot and snapshot tests of the diff UI (``stable-inspect diff OLD NEW``)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FIXTURES, require_fixtures
from test_tui_support import SIZE, run_async, settle  # also sets TEXTUAL_ANIMATIONS=none

from inspector.diff.engine import diff_sessions  # noqa: E402
from inspector.session import Session, load  # noqa: E402
from inspector.tui.diff_app import CHANGED, DiffApp, create_diff_app  # noqa: E402
from inspector.tui.hexview import HexView  # noqa: E402
from inspector.tui.memory_map import MemoryMap  # noqa: E402
from inspector.tui.tree import RegionTree  # noqa: E402

# Deterministic screenshots and cursor positions (test_tui_support sets this too; be explicit).
os.environ["TEXTUAL_ANIMATIONS"] = "none"

PRE = "migration/pre_upgrade"
POST = "migration/post_upgrade"


@pytest.fixture
def sessions() -> Iterator[tuple[Session, Session]]:
    require_fixtures()
    old, new = load(FIXTURES / PRE), load(FIXTURES / POST)
    yield old, new
    old.close()
    new.close()


def _verdict(app: DiffApp) -> str:
    return str(app.query_one("#verdict").render())


@run_async
async def _both_panes_and_stepping(old: Session, new: Session) -> None:
    app = create_diff_app(old, new)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for side in ("old", "new"):
            assert isinstance(app.query_one(f"#{side}-hex"), HexView)
            assert isinstance(app.query_one(f"#{side}-tree"), RegionTree)
            assert isinstance(app.query_one(f"#{side}-map"), MemoryMap)
        assert app.diff is not None
        assert "re-initialised" in _verdict(app)
        # The first change is current: both hex views are on it and its span is selected.
        g0 = app.diff.group(0)
        assert app.current == 0 and g0 is not None
        assert app.hex("old").cursor == app.hex("new").cursor == g0.start
        await pilot.press("right_square_bracket")
        await pilot.pause()
        g1 = app.diff.group(1)
        assert app.current == 1 and g1 is not None
        for side in ("old", "new"):
            hexv = app.hex(side)
            assert hexv.cursor == g1.start
            assert hexv.selection == [(g1.start, g1.end)]
            first, last = hexv.visible_range()
            assert first <= g1.start < last
        # Change 2 is in memory 0: its entry-level differences are listed.
        assert app.shown_structure is not None and app.shown_structure.memory_id == 0
        await pilot.press("left_square_bracket")
        await pilot.pause()
        assert app.current == 0 and app.hex("old").cursor == g0.start
        # Stepping to a change in the map lists the map's differences.
        target = next(g for g in app.diff.groups(100) if "BTreeMap node" in g.new_what)
        app.goto_change(target.index)
        await settle(pilot)
        assert app.shown_structure is not None and app.shown_structure.memory_id == 4
        assert app.entries_list.option_count >= 103
    # The diff view's trees load pages too, with no collector of their own: nothing of theirs stays frozen.
    assert gc.get_freeze_count() == 0


def test_both_panes_and_next_change_moves_both_hex_views(sessions: tuple[Session, Session]) -> None:
    _both_panes_and_stepping(*sessions)


@run_async
async def _changed_bytes_and_sync(old: Session, new: Session) -> None:
    app = create_diff_app(old, new, diff=diff_sessions(old, new))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        diff = app.diff
        assert diff is not None
        r = diff.ranges[0]
        # A changed byte is marked on both sides; an unchanged one is not.
        for side in ("old", "new"):
            roles = app.hex(side)._roles(r.start - 1, bytes(2))
            assert not roles[0][0].endswith(CHANGED) and roles[1][0].endswith(CHANGED)
            cell = app.models[side].cell(0, 65_536)
            assert cell.state == "changed"
        # Moving one hex cursor by hand moves the other one to the same offset.
        app.hex("old").focus()
        await pilot.press("down", "down")
        await pilot.pause()
        assert app.hex("new").cursor == app.hex("old").cursor == r.start + 32
        # Choosing an entry difference shows that entry's bytes on its side.
        app.show_structure(diff.structure(4))
        await pilot.pause()
        lst = app.entries_list
        lst.focus()
        index = next(
            i for i in range(lst.option_count) if (lst.get_option_at_index(i).id or "").startswith("entry-")
        )
        lst.highlighted = index
        await pilot.press("enter")
        await pilot.pause()
        item = diff.structure(4).items[0]
        assert item.op == "removed" and item.old_ranges
        assert app.hex("old").cursor == item.old_ranges[0][0]


def test_changed_bytes_are_marked_and_cursors_follow_each_other(sessions: tuple[Session, Session]) -> None:
    _changed_bytes_and_sync(*sessions)


def test_identical_snapshots_say_so() -> None:
    require_fixtures()
    old, new = load(FIXTURES / "cell_and_map"), load(FIXTURES / "cell_and_map_v072")

    @run_async
    async def run() -> None:
        app = create_diff_app(old, new)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert "byte-identical" in _verdict(app)
            assert app.current == -1
            await pilot.press("n")  # nothing to step to: a notice, not an error
            await pilot.pause()

    try:
        run()
    finally:
        old.close()
        new.close()


def test_diff_app_snapshot(snap_compare: Any, sessions: tuple[Session, Session]) -> None:
    old, new = sessions
    app = create_diff_app(old, new)

    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (250, 70)], ids=["80x24", "250x70"])
def test_diff_app_snapshot_small_and_large(snap_compare: Any, size: tuple[int, int]) -> None:
    """The bundled healthy → after_stable_save pair (no ../shared needed) at both ends of the sizes."""
    from conftest import ROOT

    from inspector.session import load

    samples = ROOT / "snapshots" / "samples"
    app = create_diff_app(load(samples / "healthy"), load(samples / "after_stable_save"))
    assert snap_compare(app, terminal_size=size, run_before=settle)
