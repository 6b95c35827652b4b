"""The orphan scan a big snapshot's terminal UI runs after its first paint: the same findings, diagnosis and
"Unreachable data" as the synchronous scan, added once it has run."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_forensics_forged import MemoryManagerImage, cell, unowned_vec_snapshot, vec
from test_tui_support import run_async, settle

import inspector.tui.app as tui_app
from inspector.analysis.forensics import apply_deferred_orphans, find_deferred_orphans
from inspector.session import load


def _facts(findings: list) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return sorted((f.severity, f.code, f.message) for f in findings)


def test_a_deferred_scan_finds_and_adds_what_the_synchronous_one_does(tmp_path: Path) -> None:
    path = unowned_vec_snapshot(tmp_path)
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


def test_deferred_findings_go_where_the_synchronous_scan_puts_them(tmp_path: Path) -> None:
    """Before the findings that come after the scan (here: a memory grown but never written), so the
    findings are in the very order of a synchronous load."""
    mm = MemoryManagerImage(1)
    mm.place(0, cell(b"x" * 10))
    mm.grow(1, 1)  # never written: an "empty_memory" finding after the orphan scan's
    mm.place(2, vec([b"\x01" * 8] * 10, 8, True))
    data = bytearray(mm.to_bytes())
    data[2080 + 2] = 0xFF  # the manager forgot bucket 2 (the Vec's): table entry, bucket count, size
    data[4] = 2
    data[40 + 16 : 40 + 24] = bytes(8)
    path = tmp_path / "o.bin"
    path.write_bytes(bytes(data))
    whole = load(path)
    later = load(path, orphan_scan=False)
    try:
        orphans = find_deferred_orphans(later.analysis)
        assert orphans is not None
        apply_deferred_orphans(later.analysis, orphans)
        codes = [f.code for f in whole.analysis.findings]
        assert codes.index("orphaned_data") < codes.index("empty_memory")
        assert [(f.code, f.message) for f in later.analysis.findings] == [
            (f.code, f.message) for f in whole.analysis.findings
        ]
        assert later.analysis.diagnosis == whole.analysis.diagnosis
    finally:
        whole.close()
        later.close()


@run_async
async def test_the_ui_opens_a_big_snapshot_first_and_then_shows_its_stray_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = unowned_vec_snapshot(tmp_path)
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
