"""Issue 15 item 8: one headless offset index answers "what is at X" for the tree, the hex view, the memory
map and the diff's attribution alike. A changed byte is chosen from the bytes themselves (a key found by
its text, ranges from expected.json), never from the product's own element geometry."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, load_expected, require_fixtures
from test_tui_support import run_async, settle

from inspector.diff.engine import diff_sessions
from inspector.offset_index import OffsetIndex
from inspector.session import load
from inspector.tui.app import create_app
from inspector.tui.diff_app import create_diff_app
from inspector.tui.memory_map import MapModel

SAMPLES = ROOT / "snapshots" / "samples"
FIRST_KEY = b"alice.dubois-4216"  # MANIFEST.json: the healthy sample's first key (a String key)


def _forge_key_edit(tmp_path: Path) -> tuple[Path, Path, int]:
    """A copy of the healthy sample with one byte of its first key changed; (old, new, offset)."""
    old = tmp_path / "old"
    new = tmp_path / "new"
    shutil.copytree(SAMPLES / "healthy", old)
    shutil.copytree(SAMPLES / "healthy", new)
    raw = bytearray((new / "stable_memory.bin").read_bytes())
    pos = raw.find(FIRST_KEY)
    assert pos > 0 and raw.find(FIRST_KEY, pos + 1) == -1, "the key is stored once"
    pos += 3  # inside the key, not at its first byte
    raw[pos] ^= 0x20  # "c" -> "C": still a valid String key
    (new / "stable_memory.bin").write_bytes(bytes(raw))
    return old, new, pos


def _tui_path(app: Any) -> list[str]:
    selected = app.selected
    assert selected is not None
    return [r.name for r in app.index.path(selected)]


def test_diff_attribution_and_the_tree_agree_on_a_changed_key_byte(tmp_path: Path) -> None:
    old_dir, new_dir, pos = _forge_key_edit(tmp_path)
    old, new = load(old_dir), load(new_dir)
    try:
        d = diff_sessions(old, new)
        assert [(r.start, r.end) for r in d.ranges] == [(pos, pos + 1)]
        att = d.attribute(0)
        (piece,) = att.old
        assert piece.memory_id == 4 and "BTreeMap node at virtual" in piece.what
        assert f'key of "{FIRST_KEY.decode()}"' in piece.what, piece.what
        # The diff's index resolves the same byte, down to the key bytes, through the region tree.
        path = d.old_index.index.resolve(pos)
        assert path[-1].kind == "key" and path[-1].contains(pos)
        memory = next(r for r in path if r.kind == "memory")
        assert memory.memory_id == piece.memory_id
        # The node the label names is the node on the path.
        m = re.search(r"node at virtual (0x[0-9a-f]+)", piece.what)
        assert m is not None
        nodes = [r for r in path if r.kind == "node"]
        assert nodes and nodes[-1].virtual_start == int(m.group(1), 16)
        diff_path = d.old_index.index.region_path(pos)
    finally:
        old.close()
        new.close()

    @run_async
    async def tui() -> None:
        app = create_app(old_dir / "stable_memory.bin")
        async with app.run_test(size=(200, 50)) as pilot:
            await settle(pilot)
            await pilot.press("g", *f"{pos:#x}", "enter")
            await settle(pilot)
            # (The roots differ only in name: the app was given the file, the diff its folder.)
            assert _tui_path(app)[1:] == diff_path[1:], "the TUI selects the region the diff attributed"
            assert diff_path[-1] == app.selected.name and app.selected.kind == "key"

    tui()


def test_the_diff_app_attributes_with_the_indexes_its_views_use(tmp_path: Path) -> None:
    old_dir, new_dir, pos = _forge_key_edit(tmp_path)

    @run_async
    async def check() -> None:
        app = create_diff_app(load(old_dir), load(new_dir))
        async with app.run_test(size=(200, 50)) as pilot:
            await settle(pilot)
            d = app.diff
            assert d is not None
            assert d.old_index.index is app.indexes["old"] and d.new_index.index is app.indexes["new"]
            # The new side's label names the key as it is now ("aliCe…"): the new snapshot's bytes.
            (piece,) = d.attribute(0).new
            assert 'key of "aliCe.dubois-4216"' in piece.what, piece.what
            assert app.indexes["new"].resolve(pos)[-1].kind == "key"

    check()


def test_locate_builds_no_region_and_the_map_caption_says_the_same(tmp_path: Path) -> None:
    old_dir, _new_dir, pos = _forge_key_edit(tmp_path)
    session = load(old_dir)
    try:
        built: list[int] = []
        index = OffsetIndex(None, session.analysis, build=lambda: built.append(1) or None)  # type: ignore[func-returns-value]
        at = index.locate(pos)
        assert at.memory_id == 4 and at.area == "memory 4 · BTreeMap node" and at.end > pos
        assert built == [] and len(index) == 0, "attribution by geometry builds no region"
        model = MapModel(session.analysis, index)
        cell = next(c for c in model.cells(64) if c.start <= pos < c.end)
        caption = model.caption(cell)
        assert caption.startswith(cell.note)
        assert caption.endswith(index.locate(cell.start).what)
        assert built == [], "the caption asks locate, not resolve"
    finally:
        session.close()


@pytest.mark.parametrize("pair", [("pre_upgrade", "post_upgrade"), ("pre_upgrade", "after_stable_save")])
def test_listed_changes_of_the_migration_resolve_in_the_memory_they_are_attributed_to(
    pair: tuple[str, str],
) -> None:
    fixtures = require_fixtures()
    expected = load_expected("migration/" + pair[0])["memory_manager"]
    # Where each memory's buckets lie, as the real library wrote them.
    buckets = {m["id"]: [tuple(r) for r in m["bucket_physical_ranges"]] for m in expected["memories"]}
    old, new = load(fixtures / "migration" / pair[0]), load(fixtures / "migration" / pair[1])
    try:
        d = diff_sessions(old, new)
        checked = 0
        # Ranges spread over the whole snapshot (the first hundreds all lie in page 0).
        for i in range(0, len(d.ranges), max(1, len(d.ranges) // 50)):
            for piece in d.attribute(i).old:
                if not isinstance(piece.memory_id, int):
                    continue
                if "past its declared size" in piece.area:
                    # Bucket bytes beyond the memory's size: the label says so (it once named the Cell's
                    # unused bytes there); the tree has no region for them.
                    assert "past its declared size" in piece.what, piece.what
                    continue
                assert any(s <= piece.start and piece.end <= e for s, e in buckets[piece.memory_id])
                path = d.old_index.index.resolve(piece.start)
                memories = [r.memory_id for r in path if r.kind == "memory"]
                assert memories == [piece.memory_id], (piece.what, [r.name for r in path])
                checked += 1
        assert checked > 0
    finally:
        old.close()
        new.close()


def test_a_long_sequence_groups_its_pages_and_the_index_still_finds_each_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past PAGES_PER_GROUP pages the tree shows groups of pages (no node gets thousands of children);
    the offset index finds an item through its group, page and entry, by geometry."""
    import inspector.regions as regions
    from inspector.forge import RawImage, u64_be, vec

    monkeypatch.setattr(regions, "PAGES_PER_GROUP", 4)  # 10 pages of 1,000 items: groups of 4, 4, 2
    image = RawImage()
    image.place(vec(u64_be(range(10_000)), 8, True))
    path = tmp_path / "vec.bin"
    image.write_to(path, sparse=False)
    raw = path.read_bytes()
    s = load(path)
    try:
        index = OffsetIndex(regions.build_tree(s.analysis), s.analysis)
        (structure,) = [r for r in index.root.children() if r.kind == "vec"]
        (entries,) = [r for r in structure.children() if r.kind == "entries"]
        groups = entries.children()
        assert [g.name for g in groups] == ["entries 0–3,999", "entries 4,000–7,999", "entries 8,000–9,999"]
        assert [len(g.children()) for g in groups] == [4, 4, 2]
        assert groups[2].children()[1].name == "entries 9,000–9,999"
        pos = raw.find((9_123).to_bytes(8, "big"))
        assert pos > 0
        names = [r.name for r in index.resolve(pos)]
        after = names[names.index(entries.name) + 1 :]
        assert after[:3] == ["entries 8,000–9,999", "entries 9,000–9,999", "[9123]"], names
    finally:
        s.close()
