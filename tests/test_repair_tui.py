"""The TUI's "Repair…" action: the dry-run plan on screen, nothing written until a path is confirmed."""

from __future__ import annotations

from pathlib import Path

from test_repair import _incident_file
from test_tui_support import SIZE, run_async, settle

from inspector.analysis.analyze import analyze
from inspector.snapshot import open_snapshot
from inspector.tui.app import create_app
from inspector.tui.repair_screen import RepairScreen, start_repair


@run_async
async def test_repair_action_shows_the_plan_and_writes_on_confirmation(tmp_path: Path) -> None:
    path = _incident_file(tmp_path)
    out = tmp_path / "repaired.bin"
    app = create_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert any(c.title == "Repair…" for c in app.get_system_commands(app.screen))
        start_repair(app)
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RepairScreen)
        assert "rebuilt BTreeMap" in screen.plan_text and "restored:" in screen.plan_text
        assert not out.exists(), "the plan is a dry run"
        screen.query_one("#repair-path").value = str(out)  # type: ignore[attr-defined]
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, RepairScreen)
    assert out.exists()
    snap = open_snapshot(out)
    try:
        walk = analyze(snap).structure(9).map.walk()  # type: ignore[union-attr]
        assert walk.entry_count > 3 and not [f for f in walk.findings if f.severity == "error"]
    finally:
        snap.close()
