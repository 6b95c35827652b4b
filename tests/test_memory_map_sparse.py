"""Issue 16 item 7 (and issue 14's map labels): the memory map costs O(cells) per paint, computed from the
file's sparse extents, whatever the file's nominal size.

Scaled down and counting work: a 1 TiB sparse file (``truncate``: no disk used) with a few data pages.
The scan must read only the data pages, the model must hold nothing per page, and a paint must cost a
bounded number of state look-ups per cell. (Full size, 8 TiB, is measured in the notes/bench.)
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from inspector import sparse
from inspector.layouts import BUCKETS_START, WASM_PAGE_SIZE
from inspector.session import load
from inspector.tui.memory_map import MapModel, fit_label

ROOT = Path(__file__).resolve().parent.parent
HEALTHY = ROOT / "snapshots" / "samples" / "healthy" / "stable_memory.bin"
TIB = 1 << 40
STRAY = 600 << 30  # non-zero bytes in a bucket nobody owns, far out in the file


@pytest.fixture
def huge(tmp_path: Path) -> Path:
    if not HEALTHY.exists():
        pytest.skip("no healthy sample")
    p = tmp_path / "huge.bin"
    shutil.copyfile(HEALTHY, p)
    with open(p, "r+b") as fh:
        fh.truncate(TIB)
        fh.seek(STRAY)
        fh.write(b"stray data")
    if os.stat(p).st_blocks * 512 > 64 << 20:
        pytest.skip("this filesystem does not keep the file sparse")
    return p


def _per_page_state(model: MapModel) -> int:
    """Bytes held by the model's containers (a per-page table would be 16 M entries here)."""
    return sum(sys.getsizeof(v) for v in vars(model).values() if isinstance(v, list | bytes | bytearray))


def test_scan_reads_only_data_pages_and_keeps_nothing_per_page(
    huge: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    real = sparse.is_zero

    def counting(view: memoryview) -> bool:
        reads.append(len(view))
        return real(view)

    monkeypatch.setattr(sparse, "is_zero", counting)
    session = load(huge)
    try:
        model = MapModel(session.analysis)
        before = [c.state for c in model.cells(400)]
        assert before[-1] == "unknown"  # the tail's unowned buckets are not scanned yet
        model.scan()
        extents = model.extents
        assert extents is not None
        data_pages = sum(-(-hi // WASM_PAGE_SIZE) - lo // WASM_PAGE_SIZE for lo, hi in extents)
        assert data_pages < 64  # the sample's pages and the stray page, not 16 M pages
        assert len(reads) <= data_pages
        assert _per_page_state(model) < 64 << 10
        cells = model.cells(400)
    finally:
        session.close()
    # The stray bytes sit in the tail cell (no owner there): it says "non-zero bytes, no owner".
    stray_cell = next(c for c in cells if c.start <= STRAY < c.end)
    assert stray_cell.state == "unallocated" and "non-zero" in stray_cell.note
    assert cells[0].state == "mm-header"
    assert any(c.state.startswith("memory-") for c in cells)
    # Every cell that holds no data and no owner is known to be zero after the scan.
    assert "unknown" not in {c.state for c in cells}


def test_a_paint_costs_a_bounded_number_of_lookups_per_cell(
    huge: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = load(huge)
    try:
        model = MapModel(session.analysis)
        model.scan()
        calls = {"owner": 0, "state": 0}
        owner, state = model.bucket_owner, model._data_state

        def count_owner(b: int) -> object:
            calls["owner"] += 1
            return owner(b)

        def count_state(a: int, b: int) -> str:
            calls["state"] += 1
            return state(a, b)

        monkeypatch.setattr(model, "bucket_owner", count_owner)
        monkeypatch.setattr(model, "_data_state", count_state)
        for capacity in (80, 400, 800):
            calls.update(owner=0, state=0)
            cells = model.cells(capacity)
            assert len(cells) <= capacity
            assert calls["owner"] + calls["state"] <= 2 * len(cells), calls
    finally:
        session.close()


def test_units_zoom_on_used_buckets_with_a_tail_cell(huge: Path) -> None:
    session = load(huge)
    try:
        model = MapModel(session.analysis)
        units = model.units(100)
    finally:
        session.close()
    assert units[0] == (0, BUCKETS_START)
    assert units[-1][1] == TIB
    # The used buckets get the cells; everything past them is one last cell.
    used_end = units[-2][1]
    assert used_end < TIB // 1000 and units[-1] == (used_end, TIB)
    assert all(b == c for (_, b), (c, _) in zip(units, units[1:], strict=False))


@pytest.mark.parametrize(
    "label, width, want",
    [("m4", 2, "m4"), ("m4", 1, "4"), ("m12", 2, "12"), ("m12", 1, ""), ("MM", 1, "M"), ("??", 1, "?")],
)
def test_labels_fit_one_column_cells(label: str, width: int, want: str) -> None:
    assert fit_label(label, width) == want
