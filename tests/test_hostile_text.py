"""Text from a snapshot is data, never terminal control: Rich markup in keys and values is shown literally,
and escape sequences, carriage returns and bidi overrides are shown escaped, by every command and the TUI.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inspector.forge import (
    TEXT,
    MemoryManagerImage,
    RawImage,
    Record,
    candid_message,
    cell,
    forge_btreemap,
    vec,
)
from tests.conftest import run_cli

EVIL_KEY = "[red]X\x1b[2J\u202e"
EVIL_VALUE = "[bold]V\x1b]0;title\x07\u202e\r\u009b31m\u2066"
EVIL_CELL = "[link=http://x]C[/link]\x1b[31m\u200f"
# Characters that must never reach the terminal raw: C0 controls other than newline/tab, DEL, C1 controls,
# bidi embeddings/overrides/isolates, zero-width and directional marks, line/paragraph separators, BOM.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]")
SCHEMA = '[memory.4]\nkind = "btreemap"\nkey = "text"\nvalue = "candid"\n'


def _assert_safe(text: str, where: str) -> None:
    bad = UNSAFE.search(text)
    assert bad is None, (
        f"{where}: raw {bad.group()!r} at {bad.start()}: {text[max(0, bad.start() - 60) : bad.start() + 20]!r}"
    )


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("evil")
    entries = sorted(
        [
            (EVIL_KEY.encode(), candid_message([TEXT], [EVIL_VALUE])),
            (b"plain", candid_message([TEXT], ["ok"])),
            ("z\u202etxt.exe".encode(), candid_message([Record.of({"name": TEXT})], [{"name": EVIL_VALUE}])),
        ]
    )
    mm = MemoryManagerImage(1)
    mm.place(4, forge_btreemap(entries))
    mm.place(0, cell(candid_message([TEXT], [EVIL_CELL])))
    mm.place(2, vec([EVIL_KEY.encode().ljust(16, b" ")], 16, True))
    image = d / "evil.bin"
    mm.write_to(image)
    raw = RawImage()
    raw.place(forge_btreemap(entries))
    raw_image = d / "evil_raw.bin"
    raw.write_to(raw_image)
    schema = d / "schema.toml"
    schema.write_text(SCHEMA)
    return {"image": image, "raw": raw_image, "schema": schema}


def test_entries_table_shows_markup_literally(evil: dict[str, Path]) -> None:
    status, out, err = run_cli(
        ["entries", str(evil["image"]), "--memory", "4", "--schema", str(evil["schema"])]
    )
    assert status == 0, err
    _assert_safe(out + err, "entries table")
    assert "[red]X" in out  # not swallowed as a style tag
    assert "\\x1b[2J" in out and "\\u202e" in out  # shown escaped
    assert "[bold]V" in out


def test_entries_jsonl_round_trips_and_is_safe(evil: dict[str, Path]) -> None:
    argv = [
        "entries",
        str(evil["image"]),
        "--memory",
        "4",
        "--format",
        "jsonl",
        "--schema",
        str(evil["schema"]),
    ]
    status, out, err = run_cli(argv)
    assert status == 0, err
    _assert_safe(out + err, "entries jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    keys = {r["key"] for r in rows}
    # JSON escaping keeps the data exact: the decoded key is the original string.
    assert EVIL_KEY in keys
    assert any(r["value"] == EVIL_VALUE for r in rows)


@pytest.mark.parametrize("memory", ["0", "2"])
def test_cell_and_vec_values_are_safe(evil: dict[str, Path], memory: str) -> None:
    for fmt in ("table", "jsonl"):
        status, out, err = run_cli(["entries", str(evil["image"]), "--memory", memory, "--format", fmt])
        assert status == 0, err
        _assert_safe(out + err, f"entries memory {memory} {fmt}")


def test_auto_detected_raw_map_is_safe(evil: dict[str, Path]) -> None:
    for fmt in ("table", "jsonl"):
        status, out, err = run_cli(["entries", str(evil["raw"]), "--memory", "raw", "--format", fmt])
        assert status == 0, err
        _assert_safe(out + err, f"raw entries {fmt}")


SUMMARY_ARGVS = [
    ["summary"],
    ["summary", "--deep"],
    ["summary", "--json"],
    ["summary", "--deep", "--json"],
    ["check"],
    ["check", "--json"],
]


@pytest.mark.parametrize("argv", SUMMARY_ARGVS, ids=" ".join)
def test_summary_and_check_are_safe(evil: dict[str, Path], argv: list[str]) -> None:
    for image in (evil["image"], evil["raw"]):
        status, out, err = run_cli([argv[0], str(image), *argv[1:], "--schema", str(evil["schema"])])
        assert status in (0, 1), err
        _assert_safe(out + err, " ".join(argv))
        if argv == ["summary"] and image == evil["image"]:
            # The cell's decoded value appears on the structure line: literally, escaped.
            assert "[link=http://x]C[/link]" in out


def test_salvage_and_diff_are_safe(evil: dict[str, Path], tmp_path: Path) -> None:
    for fmt in ("table", "jsonl"):
        status, out, err = run_cli(["salvage", str(evil["raw"]), "--memory", "raw", "--format", fmt])
        assert status in (0, 1), err
        _assert_safe(out + err, f"salvage {fmt}")
    for extra in (["--json"], ["--report"]):
        status, out, err = run_cli(["diff", str(evil["raw"]), str(evil["image"]), *extra])
        assert status in (0, 1), err
        _assert_safe(out + err, f"diff {extra}")


# --- the TUI ---------------------------------------------------------------------------------------------


def _walk(node: Any, depth: int = 0) -> Iterator[Any]:
    yield node
    for child in node.children:
        yield from _walk(child, depth + 1)


def _render_plain(renderable: Any) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_tui_tree_and_details_show_data_literally(evil: dict[str, Path]) -> None:
    import inspector.tui.app as tui
    from inspector.model import Region

    async def scenario() -> tuple[list[str], str]:
        app = tui.create_app(evil["image"], schema=str(evil["schema"]))
        async with app.run_test(size=(200, 60)) as pilot:
            await pilot.pause()
            tree = app.region_tree
            # Expand everything down to the entries: populate_now builds children in this thread.
            for _ in range(8):
                for node in list(_walk(tree.root)):
                    region = node.data
                    if (
                        isinstance(region, Region)
                        and region.kind not in ("key", "value")
                        and not tree.is_populated(node)
                    ):
                        tree.populate_now(node)
                        node.expand()
                await pilot.pause()
            labels = [node.label.plain for node in _walk(tree.root)]
            target = next(
                n
                for n in _walk(tree.root)
                if isinstance(n.data, Region) and n.data.kind == "entry" and "[red]X" in n.label.plain
            )
            tree.move_cursor(target)
            tree.select_node(target)
            for _ in range(20):  # the details panel decodes in a worker
                await pilot.pause(0.05)
                if app.details_panel.current is target.data:
                    break
            details = app.details_panel
            shown = _render_plain(details._head.content) + _render_plain(details._value.content)
            shown += app.export_screenshot()
        return labels, shown

    labels, shown = asyncio.run(scenario())
    text = "\n".join(labels)
    _assert_safe(text, "TUI tree labels")
    assert any("[red]X" in label and "\\x1b[2J" in label for label in labels)
    assert any("[link=http://x]C[/link]" in label for label in labels)  # the cell's value, on its line
    _assert_safe(shown, "TUI details panel / screen")
    assert "[red]X" in shown
