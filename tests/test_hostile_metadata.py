"""Issue 16 items 1 and 2: metadata.json keys and values are input, escaped and capped on every path.

A snapshot folder whose ``metadata.json`` has a key holding ``ESC[5m`` once reached the terminal raw
through ``summary``; a 15.7 MB value made rich's wrapping take minutes. Here every output path gets a
hostile key and value, and a long value must come out capped (scaled down: 2 MB; the output size is
what is checked, never the time).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from inspector.safe_text import DISPLAY_LIMIT, cap_text, safe_rich_text
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "snapshots" / "samples" / "snapshot_dir"
EVIL_KEY = "blink\x1b[5m[red]key\u202e"
EVIL_VALUE = "v\x1b]0;title\x07\x9b31m"
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]")
LONG = 2_000_000


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SAMPLE_DIR.is_dir():
        pytest.skip("no snapshot_dir sample")
    d = tmp_path_factory.mktemp("meta") / "snap"
    shutil.copytree(SAMPLE_DIR, d)
    meta = json.loads((d / "metadata.json").read_text())
    meta[EVIL_KEY] = EVIL_VALUE
    meta["long_value"] = "é" + "x" * LONG
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


ARGVS = [
    ["summary"],
    ["summary", "--deep"],
    ["summary", "--json"],
    ["check"],
    ["check", "--json"],
]


@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_every_cli_path_escapes_metadata(folder: Path, argv: list[str]) -> None:
    status, out, err = run_cli([argv[0], str(folder), *argv[1:]])
    assert status in (0, 1), err
    bad = UNSAFE.search(out + err)
    assert bad is None, (out + err)[max(0, bad.start() - 60) : bad.start() + 20]
    if "--json" in argv:
        return
    if argv[0] == "summary":
        assert "\\x1b[5m[red]key\\u202e" in out  # the key, escaped and shown literally
        assert "\\x1b]0;title\\x07\\x9b31m" in out
        # The 2 MB value is cut at DISPLAY_LIMIT characters with the rest counted.
        assert f"{LONG + 1 - DISPLAY_LIMIT:,} more bytes" in out
        assert len(out) < 100_000


def test_diff_report_and_json_escape_metadata(folder: Path) -> None:
    for extra in (["--json"], ["--report"]):
        status, out, err = run_cli(["diff", str(folder), str(folder), *extra])
        assert status == 0, err
        assert UNSAFE.search(out + err) is None


def test_cap_text_counts_the_rest_in_bytes() -> None:
    assert cap_text("abc", 5) == "abc"
    assert cap_text("abcdef", 3) == "abc… 3 more bytes"
    assert cap_text("ab" + "é" * 10, 2) == "ab… 20 more bytes"
    t = safe_rich_text("\x1b" * 10_000)
    # capped before escaping: 4 chars per escaped ESC, for DISPLAY_LIMIT of them, plus the note.
    assert t.plain.startswith("\\x1b") and len(t.plain) < 4 * DISPLAY_LIMIT + 40


def test_tui_details_of_the_root_is_capped_and_escaped(folder: Path) -> None:
    from inspector.tui.app import create_app

    async def scenario() -> str:
        app = create_app(folder)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            tree = app.region_tree
            tree.move_cursor(tree.root)
            tree.select_node(tree.root)
            for _ in range(20):
                await pilot.pause(0.05)
                if app.details_panel.current is tree.root.data:
                    break
            from rich.console import Console

            console = Console(file=io.StringIO(), width=120, record=True, color_system=None)
            console.print(app.details_panel._head.content)
            return console.export_text() + app.export_screenshot()

    shown = asyncio.run(scenario())
    assert UNSAFE.search(shown) is None
    assert "morebytes" in "".join(shown.split())  # the cut is said (folded over lines in a narrow column)
    assert len(shown) < 400_000
