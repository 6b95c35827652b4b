"""Issue 16 item 3: a diff with very many changed ranges stays bounded (runs, caps, streamed JSON).

Scaled down: ``byte_diff.MAX_RUNS`` is shrunk so a few KiB hit the cap that 64 MiB hits at full size
(full-size figures are in ``stable-inspect bench`` and the issue notes). The tests count work (runs
kept, ranges listed) and check every total against a byte-by-byte reference.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from inspector.diff import byte_ranges as byte_diff
from inspector.diff.byte_ranges import changed_ranges


def naive_ranges(a: bytes, b: bytes) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = None
    for i in range(min(len(a), len(b))):
        if a[i] != b[i]:
            if start is None:
                start = i
        elif start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, min(len(a), len(b))))
    return out


@pytest.fixture
def small_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(byte_diff, "CHUNK_SIZE", 1 << 14)
    monkeypatch.setattr(byte_diff, "BLOCK_SIZE", 1 << 12)
    monkeypatch.setattr(byte_diff, "LEAF_SIZE", 1 << 8)
    monkeypatch.setattr(byte_diff, "FANOUT", 4)


def test_zero_vs_0001_becomes_runs_with_exact_totals(
    monkeypatch: pytest.MonkeyPatch, small_leaves: None
) -> None:
    monkeypatch.setattr(byte_diff, "MAX_RUNS", 64)
    size = 1 << 16
    a, b = bytes(size), b"\x00\x01" * (size // 2)
    res = changed_ranges(a, b)
    # 32,768 one-byte ranges, kept as at most MAX_RUNS runs: memory does not follow the change count.
    assert res.range_count == size // 2
    assert res.total_bytes == size // 2
    assert res.merged and res.gap > 0
    assert 1 <= res.count <= 64
    assert sum(r.changed_bytes for r in res.ranges) == size // 2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_runs_cover_every_difference_and_count_it_exactly(
    monkeypatch: pytest.MonkeyPatch, small_leaves: None, seed: int
) -> None:
    monkeypatch.setattr(byte_diff, "MAX_RUNS", 32)
    rng = random.Random(seed)
    size = 20_000
    a = bytes(rng.getrandbits(8) for _ in range(size))
    edited = bytearray(a)
    for _ in range(600):
        pos = rng.randrange(size)
        for k in range(rng.randint(1, 4)):
            if pos + k < size:
                edited[pos + k] ^= 1 + rng.randrange(255)
    b = bytes(edited)
    want = naive_ranges(a, b)
    res = changed_ranges(a, b)
    assert res.count <= 32 < len(want)
    assert res.range_count == len(want)
    assert res.total_bytes == sum(e - s for s, e in want)
    # Every exact range lies inside one run; each run's count is exactly the differing bytes inside it.
    for r in res.ranges:
        inside = [(s, e) for s, e in want if r.start <= s and e <= r.end]
        assert r.changed_bytes == sum(e - s for s, e in inside)
        assert inside[0][0] == r.start and inside[-1][1] == r.end
    assert sum(len([1 for s, e in want if r.start <= s and e <= r.end]) for r in res.ranges) == len(want)
    # Runs are kept apart by more than the gap.
    for x, y in zip(res.ranges, res.ranges[1:], strict=False):
        assert y.start - x.end > res.gap


def test_few_ranges_stay_exact(small_leaves: None) -> None:
    a = bytes(10_000)
    b = bytearray(a)
    b[10] = b[12] = b[5000] = 1
    res = changed_ranges(a, bytes(b))
    assert res.gap == 0 and not res.merged
    assert res.pairs() == [(10, 11), (12, 13), (5000, 5001)]
    assert all(r.differing is None for r in res.ranges)


def test_diff_json_streams_and_states_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_leaves: None
) -> None:
    from inspector.commands.diff import write_json_stream
    from inspector.diff.engine import DiffLimits, diff_sessions
    from inspector.session import load

    monkeypatch.setattr(byte_diff, "MAX_RUNS", 1 << 12)
    size = 1 << 16
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(bytes(size))
    # 300 isolated changes, 100 bytes apart: more ranges than the listing cap, fewer than MAX_RUNS.
    data = bytearray(size)
    for i in range(300):
        data[i * 100] = 7
    new.write_bytes(bytes(data))
    so, sn = load(str(old)), load(str(new))
    try:
        d = diff_sessions(so, sn, limits=DiffLimits(max_changed_ranges=25))
        buf = io.StringIO()
        write_json_stream(d, buf)
        got = json.loads(buf.getvalue())
        assert got == json.loads(json.dumps(d.to_json(), default=str))
    finally:
        so.close()
        sn.close()
    assert got["changed_range_count"] == 300 and got["changed_bytes"] == 300
    assert len(got["changed_ranges"]) == 25 and got["changed_ranges"][0] == [0, 1]
    runs = got["changed_runs"]
    assert runs == {
        "merge_gap": 0,
        "count": 300,
        "listed": 25,
        "cap": 25,
        "truncated": True,
        "differing_bytes": [1] * 25,
    }


def test_diff_cli_on_many_ranges_reports_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], small_leaves: None
) -> None:
    from inspector.cli import main

    monkeypatch.setattr(byte_diff, "MAX_RUNS", 16)
    size = 1 << 15
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(bytes(size))
    new.write_bytes(b"\x00\x01" * (size // 2))
    assert main(["diff", str(old), str(new), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["changed_range_count"] == size // 2 and got["changed_bytes"] == size // 2
    assert got["changed_runs"]["count"] <= 16 and got["changed_runs"]["merge_gap"] > 0
    assert sum(got["changed_runs"]["differing_bytes"]) == size // 2
    assert main(["diff", str(old), str(new), "--report"]) == 0
    out = capsys.readouterr().out
    assert f"{size // 2:,} changed ranges" in out and "runs" in out


def test_diff_json_keeps_flat_lists_on_one_line() -> None:
    from inspector.commands.diff import _dump
    from inspector.jsonout import json_default

    value = {
        "ranges": [[1, 2], [3, 4]],
        "item": {"key": "a\u202eb", "n": [1, 2, 3], "raw": b"\x01\xff"},
        "rows": [{"x": 1}, {"y": [[5, 6]]}],
        "empty": {},
        "nested": [[1, [2]]],
    }
    text = _dump(value, "  ")
    assert json.loads(text) == json.loads(json.dumps(value, default=json_default))
    lines = text.splitlines()
    assert lines[1] == '    "ranges": [[1, 2], [3, 4]],'
    assert '      "n": [1, 2, 3],' in lines and '      "raw": "01ff"' in lines
    assert '        "y": [[5, 6]]' in lines  # a dict inside a list is still laid out key by key
    assert '"nested": [[1, [2]]]' not in text  # lists of lists of lists are not flat
    assert "\u202e" not in text and "\\u202e" in text  # a bidi override is escaped, as before


def test_diff_json_writes_every_scalar_as_json_does() -> None:
    """Strings and exact ints take a shortcut past json's encoder; everything else (bools, None,
    floats, big ints, int and str subclasses, keys of a str subclass) still reads as json writes it."""
    import enum

    from inspector.commands.diff import _dump
    from inspector.safe_text import json_safe

    class Word(str):
        pass

    class Level(enum.IntEnum):
        HIGH = 3

    value = {
        "t": True,
        "f": False,
        "none": None,
        "x": 1.5,
        "neg": -7,
        "big": 2**70,
        "s": 'é\n"q\\',
        Word("key"): Word("word"),
        "level": Level.HIGH,
        "inner": {"deep": {"n": 0, "e": ""}},
    }
    want = json_safe(json.dumps(value, indent=2, ensure_ascii=False))
    assert _dump(value, "") == want
    assert '"level": 3' in want and '"t": true' in want and '"big": 1180591620717411303424' in want


def test_diff_json_writes_flat_lists_of_any_scalar_as_json_does() -> None:
    """Flat lists are written on one line without json's encoder for ints, strings and lists of ints; a
    list with anything else in it (bools, None, floats, an int subclass, a pair holding a bool) reads as
    json writes it all the same, and a list that holds a container deeper down is laid out over lines."""
    import enum

    from inspector.commands.diff import _dump
    from inspector.safe_text import json_safe

    class Level(enum.IntEnum):
        HIGH = 3

    flat = {
        "pairs": [[1, 2], (3, 4), []],
        "mixed": [1, "é\n", True, None, 1.5, Level.HIGH, 2**70],
        "odd_pairs": [[1, True], (None, 2), ["a", 3], [2.5]],
        "empty": [],
    }
    text = _dump(flat, "")
    assert text == json_safe(
        "{\n"
        + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in flat.items())
        + "\n}"
    )
    deep = {"rows": [[1, [2]], 3, [[4]]]}  # (the inner lists hold no deeper container: one line each)
    assert _dump(deep, "") == '{\n  "rows": [\n    [1, [2]],\n    3,\n    [[4]]\n  ]\n}'


def test_a_headless_diff_hands_the_collector_back_what_it_froze(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``diff --json`` keeps the collector off the loaded sessions while it runs (``gc.freeze``) and
    thaws them when it ends: a caller that goes on in the same process loses nothing."""
    import gc

    from inspector.cli import main

    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(bytes(1 << 16))
    new.write_bytes(b"\x00\x07" * (1 << 15))
    frozen: list[int] = []
    real = gc.freeze

    def freeze() -> None:
        real()
        frozen.append(gc.get_freeze_count())

    gc.unfreeze()
    monkeypatch.setattr(gc, "freeze", freeze)
    assert main(["diff", str(old), str(new), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed_bytes"] == 1 << 15
    assert frozen and frozen[0] > 0 and gc.get_freeze_count() == 0
