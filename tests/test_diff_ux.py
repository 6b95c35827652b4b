"""Issue 14: the diff view as a full citizen — distinguishing titles, the main view's keymap (help, go
to, export, legend), a data inspector per side, the report's bullets and reconciled counts."""

from __future__ import annotations

from pathlib import Path

from conftest import ROOT
from test_tui_support import run_async, settle

from inspector.session import load
from inspector.tui.diff_app import DiffApp, create_diff_app
from inspector.tui.screens import HelpScreen, LegendScreen
from inspector.words import distinguishing_names

SAMPLES = ROOT / "snapshots" / "samples"


def test_distinguishing_names() -> None:
    a = Path("/x/pre_upgrade/stable_memory.bin")
    b = Path("/x/post_upgrade/stable_memory.bin")
    assert distinguishing_names(a, b) == ("pre_upgrade/stable_memory.bin", "post_upgrade/stable_memory.bin")
    assert distinguishing_names(Path("/x/old.bin"), Path("/x/new.bin")) == ("old.bin", "new.bin")
    assert distinguishing_names(a, a) == ("stable_memory.bin (old)", "stable_memory.bin (new)")


def _copy(tmp: Path, name: str, sample: str) -> Path:
    d = tmp / name
    d.mkdir()
    (d / "stable_memory.bin").write_bytes((SAMPLES / sample / "stable_memory.bin").read_bytes())
    return d / "stable_memory.bin"


def _app(old: Path, new: Path) -> DiffApp:
    return create_diff_app(load(old), load(new))


def _text(app: DiffApp, selector: str) -> str:
    return str(app.query_one(selector).render())


@run_async
async def test_titles_verdict_and_shared_keymap(tmp_path: Path) -> None:
    old = _copy(tmp_path, "pre_upgrade", "healthy")
    new = _copy(tmp_path, "post_upgrade", "after_stable_save")
    app = _app(old, new)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        assert "pre_upgrade/stable_memory.bin" in _text(app, "#old-title")
        assert "post_upgrade/stable_memory.bin" in _text(app, "#new-title")
        verdict = _text(app, "#verdict")
        assert app.diff is not None
        b = app.diff.bytes
        groups = len(app.diff.groups(1_000))
        assert f"differ in {b.count:,} byte ranges, grouped into {groups:,} change" in verdict
        for fact in app.diff.incident.facts:
            assert "• " + fact[:40] in verdict, "the report's bullets are in the verdict"
        assert app.diff.incident.facts, "a stable_save incident has facts to show"

        # The main view's keys: help, legend, go to, export.
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        descriptions = {row.description for row in app.screen.rows}
        assert {"Go to", "Export", "Legend", "Next change"} <= descriptions
        await pilot.press("escape", "l")
        await pilot.pause()
        assert isinstance(app.screen, LegendScreen)
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("g", *"0x20010", "enter")
        await settle(pilot)
        assert app.hex("old").cursor == app.hex("new").cursor == 0x20010
        rows = dict(app.query_one("#new-inspector").rows)
        assert rows["address"].startswith("0x20010")
        assert rows["u8"].startswith(f"{app.sessions['new'].snapshot.buf[0x20010]:,}")

        out = tmp_path / "cmp.json"
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("Input").value = str(out)  # type: ignore[attr-defined]
        await pilot.press("enter")
        await settle(pilot)
        assert out.is_file() and '"incident"' in out.read_text()
        messages = [n.message for n in app._notifications]
        assert any(str(out) in m for m in messages), "export says where it wrote"


@run_async
async def test_next_previous_change_keys(tmp_path: Path) -> None:
    app = _app(SAMPLES / "healthy", SAMPLES / "after_stable_save")
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        assert app.current == 0
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert app.current == 1
        await pilot.press("left_square_bracket")
        await pilot.pause()
        assert app.current == 0
        await pilot.press("n", "N")
        await pilot.pause()
        assert app.current == 0
        tree = app.query_one("#old-tree")
        assert tree.region.height >= 8, "the trees are usable at 200x50"
