"""``entries --format jsonl`` through the columnar path (vector_walk.EntryBlocks + jsonl_columns) writes
byte for byte what the entry-by-entry path writes: on grown maps of u64, u32 and unit values, with
``--limit``, and on a map the columnar path gives up on part-way (the rest then comes entry by entry)."""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FIXTURES, ROOT, require_fixtures, run_cli

sys.path.insert(0, str(ROOT))

from inspector.commands.jsonl_columns import MapLines, column_json  # noqa: E402
from inspector.decode.valuetypes import UIntType, UnitType  # noqa: E402
from inspector.forge import RawImage  # noqa: E402
from inspector.forge.btree_grow import grow_u64_map  # noqa: E402
from inspector.structures.btreemap import vector_walk as vw  # noqa: E402


def _entries(path: Path, *extra: str) -> str:
    status, out, err = run_cli(["entries", str(path), "--memory", "raw", "--format", "jsonl", *extra])
    assert status == 0, err
    return out


def _entry_by_entry(path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> str:
    def declined(self: Any) -> Iterator[Any]:
        self.stopped_at = 0
        return iter(())

    with monkeypatch.context() as m:
        m.setattr(vw.EntryBlocks, "__iter__", declined)
        return _entries(path, *extra)


def _write(tmp_path: Path, **kwargs: Any) -> Path:
    img = RawImage()
    img.place(grow_u64_map(5_000, 1_200, seed=3, **kwargs))
    path = tmp_path / "map.bin"
    img.write_to(path)
    return path


@pytest.mark.parametrize(
    "values",
    [
        {},  # u64 → u64: the keys and values both quoted decimal strings
        {"value_of": lambda k: struct.pack(">I", k & 0xFFFFFFFF), "value_len": 4},  # u32: a JSON number
        {"value_of": lambda k: b"", "value_len": 0},  # a set: unit values, null
    ],
    ids=["u64", "u32", "unit"],
)
def test_columnar_lines_equal_the_entry_by_entry_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values: dict[str, Any]
) -> None:
    path = _write(tmp_path, **values)
    got = _entries(path)
    assert got == _entry_by_entry(path, monkeypatch)
    assert got.count("\n") == 3_800
    assert _entries(path, "--limit", "1234") == "".join(got.splitlines(keepends=True)[:1234])


def test_a_map_given_up_part_way_goes_on_entry_by_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Many small batches (of leaves), so some are given before the damage.
    monkeypatch.setattr(vw, "SUBTREE_LEVELS", 1)
    monkeypatch.setattr(vw, "BATCH_NODES", 64)
    path = _write(tmp_path)
    data = bytearray(path.read_bytes())
    lines = _entries(path).splitlines()
    # Swap the first two keys of a leaf three quarters of the way through the map: the batches before
    # it are confirmed and given, the rest comes from the validated iteration (which lists the keys as
    # they are stored).
    for line in lines[len(lines) * 3 // 4 :]:
        at = data.find(bytes.fromhex(json.loads(line)["key_hex"]))
        if data[at - 15 : at - 12] == b"BTN" and data[at - 11] == 0:  # the first key of a leaf
            break
    else:
        raise AssertionError("no leaf starts in the last quarter")
    data[at : at + 16] = data[at + 8 : at + 16] + data[at : at + 8]
    path.write_bytes(bytes(data))
    given: list[int] = []
    real = vw.EntryBlocks.__iter__

    def spy(self: Any) -> Iterator[Any]:
        yield from real(self)
        given.append(self.stopped_at)

    monkeypatch.setattr(vw.EntryBlocks, "__iter__", spy)
    got = _entries(path)
    assert given and given[0] is not None and 0 < given[0] < len(lines) * 3 // 4
    assert got == _entry_by_entry(path, monkeypatch)
    assert got.count("\n") == len(lines)


@pytest.mark.parametrize(
    ("kind", "width", "items"),
    [
        ("u64", 8, [0, 1, 9, 10, 99, 100, 12345678901234567890, 2**64 - 1]),
        ("u32", 4, [0, 7, 4294967295]),
        ("u8", 1, [0, 5, 255]),
    ],
)
def test_digits_match_python(kind: str, width: int, items: list[int]) -> None:
    t = UIntType(width)
    col = np.frombuffer(b"".join(i.to_bytes(width, "big") for i in items), dtype=np.uint8)
    col = col.reshape(len(items), width)
    unit = column_json(UnitType(), 0)
    key = column_json(t, width)
    assert key is not None and unit is not None
    pieces = MapLines(width, 0, key, unit)(col, np.zeros((len(items), 0), dtype=np.uint8))
    text = "".join(p.data.tobytes().decode("ascii") for p in pieces)
    want = [str(i) if width <= 4 else f'"{i}"' for i in items]
    assert [line.split('"key":')[1].split(',"value"')[0] for line in text.splitlines()] == want


def test_real_library_map_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    require_fixtures()
    path = FIXTURES / "btree_u64_many_v072" / "stable_memory.bin"
    assert _entries(path) == _entry_by_entry(path, monkeypatch)
