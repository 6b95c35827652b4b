"""``summary --deep`` starts the deep walk of a map on the raw memory in a child (``walk_prefetch``): the
parent takes the child's figures only for that very file and map, and its summary is the one it would
have computed itself; a child that gave up sends the parent straight to the validated walk."""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, run_cli

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inspector import walk_prefetch  # noqa: E402
from inspector.forge import RawImage  # noqa: E402
from inspector.forge.btree_grow import grow_u64_map  # noqa: E402
from inspector.memory import PhysicalMemory  # noqa: E402
from inspector.session import load  # noqa: E402
from inspector.structures.btreemap import (
    BTreeMap,  # noqa: E402
    vector_walk,  # noqa: E402
)


def _forge(path: Path) -> bytes:
    img = RawImage()
    img.place(grow_u64_map(6_000, 1_500, seed=11))
    data = img.to_bytes()
    path.write_bytes(data)
    return data


def _deep(path: Path) -> Any:
    """The deep summary of ``path``, loaded and walked in this process."""
    s = load(path)
    try:
        return json.loads(json.dumps(s.analysis.to_json(deep=True), default=str))
    finally:
        s.close()


@pytest.fixture
def small_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(walk_prefetch, "MIN_BYTES", 0)
    walk_prefetch._PENDING.clear()
    walk_prefetch._RESULTS.clear()


def _parent_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = vector_walk.vector_walk

    def counted(*a: Any) -> Any:
        calls.append(1)
        return real(*a)

    monkeypatch.setattr(vector_walk, "vector_walk", counted)
    return calls


def test_the_parent_takes_the_childs_walk_and_says_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_enough: None
) -> None:
    path = tmp_path / "map.bin"
    _forge(path)
    expected = _deep(path)
    calls = _parent_walks(monkeypatch)
    assert walk_prefetch.start(str(path))
    got = _deep(path)
    assert got == expected and not calls and not walk_prefetch._PENDING
    assert got["structures"][0]["count"] == 4_500  # (the figures are the map's, not zero)
    assert got["structures"][0]["nodes"]["overflow_page_count"] > 0
    # The CLI does the same: its output is the in-process output.
    status, out, err = run_cli(["summary", "--deep", "--json", str(path)])
    assert status == 0, err
    assert json.loads(out) == expected


def test_another_file_with_the_same_bytes_walks_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_enough: None
) -> None:
    path, twin = tmp_path / "map.bin", tmp_path / "twin.bin"
    _forge(path)
    shutil.copyfile(path, twin)
    calls = _parent_walks(monkeypatch)
    assert walk_prefetch.start(str(path))
    twin_walk, map_walk = _deep(twin), _deep(path)
    assert twin_walk["structures"] == map_walk["structures"]
    assert len(calls) == 1 and not walk_prefetch._RESULTS  # the twin by itself, the map from the child


def test_a_map_the_vectorised_walk_gives_up_on_keeps_its_findings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_enough: None
) -> None:
    path = tmp_path / "map.bin"
    data = bytearray(_forge(path))
    w = BTreeMap(PhysicalMemory(bytes(data), len(data)), memory_id="raw")
    w.walk()
    leaf = next(a for a in w._reached if data[a : a + 3] == b"BTN" and data[a + 4] == 0)
    data[leaf + 5 : leaf + 7] = struct.pack("<H", 12)  # a leaf claims more entries than a node holds
    path.write_bytes(bytes(data))
    expected = _deep(path)
    assert "btree_node_invalid" in json.dumps(expected)
    calls = _parent_walks(monkeypatch)
    assert walk_prefetch.start(str(path))
    assert _deep(path) == expected and not calls  # the child gave up: straight to the validated walk


def test_no_child_for_small_or_huge_files_or_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walk_prefetch._PENDING.clear()
    path = tmp_path / "map.bin"
    _forge(path)
    assert path.stat().st_size < walk_prefetch.MIN_BYTES and not walk_prefetch.start(str(path))
    monkeypatch.setattr(walk_prefetch, "MIN_BYTES", 0)
    monkeypatch.setattr(walk_prefetch, "MAX_BYTES", path.stat().st_size - 1)
    assert not walk_prefetch.start(str(path))  # its progress line belongs to the process that walks
    assert not walk_prefetch.start(str(tmp_path)) and not walk_prefetch.start(str(tmp_path / "none"))
    assert not walk_prefetch._PENDING
