"""SVG snapshots of the main screen on the incident trio (fixed size, no clock, workers finished).

Baselines live in tests/__snapshots__/ (pytest-textual-snapshot); update them with
``pytest tests/test_tui_snapshots.py --snapshot-update`` after an intended change of the screen.
The snapshot is opened by a path relative to the project root (``../shared/fixtures/…``, the same on
every machine), because the diagnosis quotes the path the user typed.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, require_fixtures
from test_tui_support import SIZE, settle

from inspector.tui.app import create_app


@pytest.mark.parametrize("name", ["pre_upgrade", "after_stable_save", "post_upgrade"])
def test_main_screen(name: str, snap_compare: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    require_fixtures()
    monkeypatch.chdir(ROOT)
    app = create_app(os.path.relpath(FIXTURES / "migration" / name, ROOT))
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


@pytest.mark.parametrize("name", ["restricted_app_header", "nested_memory_manager", "reclaim_holes_v071"])
def test_main_screen_real_layouts(name: str, snap_compare: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11: the application region before a RestrictedMemory manager, a manager nested in memory 5
    (inner ids "5/1"), and a 0.7.1 reclaim hole with the bucket order risk, as the tree shows them."""
    require_fixtures()
    monkeypatch.chdir(ROOT)
    app = create_app(os.path.relpath(FIXTURES / name, ROOT))
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


@pytest.mark.parametrize(
    ("sample", "size"),
    [("after_stable_save", (80, 24)), ("healthy", (80, 24)), ("after_stable_save", (250, 70))],
    ids=["incident-80x24", "healthy-80x24", "incident-250x70"],
)
def test_main_screen_small_and_large(
    sample: str, size: tuple[int, int], snap_compare: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled samples (no ../shared needed) at the smallest and a large terminal: 8 and 32 bytes a
    line with the ASCII column, the verdict and next command on the incident's first screen."""
    monkeypatch.chdir(ROOT)
    app = create_app(os.path.join("snapshots", "samples", sample))
    assert snap_compare(app, terminal_size=size, run_before=settle)
