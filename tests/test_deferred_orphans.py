"""The orphan scan a big snapshot's terminal UI runs after its first paint: the same findings, diagnosis and
"Unreachable data" as the synchronous scan, added once it has run."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui_support import run_async, settle

import inspector.tui.app as tui_app
from inspector.analysis.forensics import apply_deferred_orphans, find_deferred_orphans
from inspector.forge.image import MemoryManagerImage
from inspector.forge.structures import cell, vec
from inspector.session import load


def _unowned_vec(tmp_path: Path) -> Path:
    """A manager that no longer knows bucket 1 (a Vec's): its table entry, bucket count and size slot reset."""
    mm = MemoryManagerImage(1)
    mm.place(0, cell(b"x" * 10))
    mm.place(1, vec([b"\x01" * 8] * 10, 8, True))
    data = bytearray(mm.to_bytes())
    data[2080 + 1] = 0xFF
    data[4] = 1
    data[40 + 8 : 40 + 16] = bytes(8)
    path = tmp_path / "o.bin"
    path.write_bytes(bytes(data))
    return path


def _facts(findings: list) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return sorted((f.severity, f.code, f.message) for f in findings)


def test_a_deferred_scan_finds_and_adds_what_the_synchronous_one_does(tmp_path: Path) -> None:
    path = _unowned_vec(tmp_path)
    whole = load(path)
    later = load(path, orphan_scan=False)
    try:
        assert not [f for f in later.analysis.all_findings() if f.code == "orphaned_data"]
        orphans = find_deferred_orphans(later.analysis)
        assert orphans is not None and len(orphans) == 1
        apply_deferred_orphans(later.analysis, orphans)
        assert _facts(later.analysis.all_findings()) == _facts(whole.analysis.all_findings())
        assert later.analysis.diagnosis == whole.analysis.diagnosis
        assert find_deferred_orphans(later.analysis) is None  # it ran: nothing left to run
        assert find_deferred_orphans(whole.analysis) is None  # nothing was deferred there
    finally:
        whole.close()
        later.close()


@run_async
async def test_the_ui_opens_a_big_snapshot_first_and_then_shows_its_stray_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _unowned_vec(tmp_path)
    monkeypatch.setattr(tui_app, "DEFER_ORPHAN_SCAN_BYTES", 0)  # every snapshot counts as big
    app = tui_app.create_app(path)
    assert not [f for f in app.analysis.all_findings() if f.code == "orphaned_data"]
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        codes = [f.code for f in app.analysis.all_findings()]
        assert codes.count("orphaned_data") == 1
        kinds = [r.kind for r in app.root_region.children()]
        assert "unreachable" in kinds
    monkeypatch.setattr(tui_app, "DEFER_ORPHAN_SCAN_BYTES", 1 << 62)
    small = tui_app.create_app(path)
    assert [f.code for f in small.analysis.all_findings()].count("orphaned_data") == 1
