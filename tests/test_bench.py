"""Smoke test of the benchmark harness (``stable-inspect bench``) on tiny inputs.

Nothing here asserts a time: figures depend on the machine and its load. The tests check that every
target produces a row, that inputs are checked against the decoder and cached, and that the fast
paths the benchmark relies on give exactly what the general code gives.
"""

from __future__ import annotations

import contextlib
import json
import random
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from inspector.bench import command as bench_command
from inspector.bench import inputs as bench_inputs
from inspector.bench import model as bench_model
from inspector.bench import report as bench_report
from inspector.bench import runner as bench_runner
from inspector.commands.entries import jsonl_lines, map_jsonl_chunks
from inspector.decode.valuetypes import parse_type
from inspector.session import load


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, int]:
    """One whole tiny benchmark through the command-line entry point, JSON output."""
    workdir = tmp_path_factory.mktemp("bench")
    capture = workdir / "out.json"
    with open(capture, "w") as fh, contextlib.redirect_stdout(fh):
        rc = bench_command.main(["--tiny", "--json", "--workdir", str(workdir)])
    return json.loads(capture.read_text()), workdir, rc


def test_every_target_has_a_row(tiny_run: tuple[dict[str, Any], Path, int]) -> None:
    report, _workdir, rc = tiny_run
    # Tiny inputs are not what the limits are for, so targets may miss; the exit status must say so.
    assert rc == (0 if report["all_passed"] else 1)
    assert report["all_passed"] == ("FAIL" not in {r["result"] for r in report["rows"]})
    targets = [r["target"] for r in report["rows"]]
    for needle in (
        "summary (",
        "summary peak RSS",
        "summary --deep",
        "(raw)",
        "entries --format jsonl",
        "cmp -s",
        "diff",
        "check (",
        "check peak RSS",
        "never imports textual",
        "TUI first screen",
        "TUI scroll",
        "4,000-entry u64 map (raw, random order)",
        "summary --deep peak RSS, 4,000 vs 3,000 entries",
        "TUI first screen (4,000-entry map), after the imports",
        "TUI scroll of the 4,000-entry map",
        "StableVec<u64> (raw memory, full)",
        "StableBTreeMap<u64, Vec<u8>>",
    ):
        assert any(needle in t for t in targets), f"no row for {needle!r}: {targets}"
    for row in report["rows"]:
        assert row["result"] in ("pass", "FAIL", "n/a", "ref")
        assert not row["note"].startswith("error:"), row
        if row["figure"] is not None:
            assert row["figure"] >= 0
        if row["unit"] == "s" and row["result"] != "n/a":
            assert row["samples"] and all(x > 0 for x in row["samples"])
    assert report["config"]["name"] == "tiny"
    assert report["machine"]["cores"] >= 1


def test_cli_path_never_imports_textual(tiny_run: tuple[dict[str, Any], Path, int]) -> None:
    report, _workdir, _rc = tiny_run
    (row,) = [r for r in report["rows"] if "never imports textual" in r["target"]]
    assert row["result"] == "pass", row["note"]


def test_inputs_are_cached_and_checked(tiny_run: tuple[dict[str, Any], Path, int]) -> None:
    _report, workdir, _rc = tiny_run
    first = {p.name: p.stat().st_mtime_ns for p in workdir.glob("*.bin")}
    inputs = bench_inputs.prepare_inputs(bench_model.TINY, workdir)
    assert {p.name: p.stat().st_mtime_ns for p in workdir.glob("*.bin")} == first  # nothing rebuilt
    assert inputs.map_count == bench_model.TINY.entries
    # The sidecar's digest is what the decoder sees (raises BenchError otherwise).
    bench_inputs.check_map_input(inputs.map_mm, inputs.map_count, inputs.map_sha256)
    bench_inputs.check_map_input(inputs.map_raw, inputs.map_count, inputs.map_sha256)
    assert len(inputs.patch_offsets) == bench_model.TINY.patches
    a, b = inputs.dense_a.read_bytes(), inputs.dense_b.read_bytes()
    assert [i for i in range(len(a)) if a[i] != b[i]] == inputs.patch_offsets
    assert inputs.dense_a2.read_bytes() == a
    with pytest.raises(bench_model.BenchError):
        bench_inputs.check_map_input(inputs.map_mm, inputs.map_count + 1, inputs.map_sha256)


def test_tables_render(
    tiny_run: tuple[dict[str, Any], Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    report, workdir, _rc = tiny_run
    rows = bench_command.rows_from_report(report)
    md = bench_report.markdown_table(rows)
    assert md.count("\n") == len(rows) + 1 and "| target |" in md
    bench_report.print_table(rows, bench_model.TINY, report["machine"], report["elapsed_s"])
    assert "summary --deep" in capsys.readouterr().out
    # A saved report renders again without running anything.
    saved = workdir / "report.json"
    saved.write_text(json.dumps(report))
    bench_command.main(["--from-json", str(saved), "--markdown"])
    assert capsys.readouterr().out.strip() == md


def test_workdir_inside_the_project_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_command.main(["--tiny", "--workdir", str(bench_model.PROJECT_ROOT / "bench-inputs")]) == 2
    assert "outside the project" in capsys.readouterr().err
    assert not (bench_model.PROJECT_ROOT / "bench-inputs").exists()


# --- the fast paths the benchmark measures give what the general code gives -------------------------


def _text(chunks: Any) -> str:
    """The jsonl chunks as one text (the columnar path gives its lines as ASCII bytes)."""
    return "".join(c if isinstance(c, str) else c.data.tobytes().decode("ascii") for c in chunks)


def test_map_jsonl_fast_path_matches_per_element_lines(tmp_path: Path) -> None:
    from inspector.forge import MemoryManagerImage, forge_btreemap

    mm = MemoryManagerImage(1)
    mm.place(0, bench_inputs._u64_map(500))
    # Text keys, values of mixed lengths (some spill into overflow pages): the per-item fallback.
    pairs = [(f"k{i:04d}".encode(), b"v" * (i % 7) * (1 + i % 300)) for i in range(300)]
    mm.place(1, forge_btreemap(pairs))
    path = tmp_path / "maps.bin"
    mm.write_to(path)
    session = load(path)
    try:
        for mid in (0, 1):
            s = session.analysis.structure(mid)
            assert s is not None
            slow = [line + "\n" for line in jsonl_lines(s, s.elements(0))]
            chunks = map_jsonl_chunks(s, None)
            assert chunks is not None
            assert _text(chunks) == "".join(slow)
            limited = map_jsonl_chunks(s, 17)
            assert limited is not None and _text(limited) == "".join(slow[:17])
            batches = [kv for keys, values in s.map.iter_batches(5) for kv in zip(keys, values, strict=True)]
            assert batches == [(e.key, e.value) for e in islice(s.map.iter_entries(5), None)]
    finally:
        session.close()


@pytest.mark.parametrize(
    "type_text",
    ["u8", "u16", "u32", "u64", "u128", "bool", "text", "text<3>", "blob", "blob<2>", "bytes<4>", "raw"],
)
def test_json_texts_equals_decode(type_text: str) -> None:
    t = parse_type(type_text)
    samples = [b"", b"\x00", b"\x01", b"\x02", b"ab", b'a"\\\n', "é\u2028".encode(), b"\xff\xfe", b"\x00" * 4]
    samples += [bytes(range(8)), bytes(range(16))]
    for i in range(len(samples)):
        for j in range(i, len(samples) + 1):
            items = samples[i:j]
            fast = t.json_texts(items)
            clean = all(t.decode(d).ok for d in items)
            # The fast path declines exactly when some item does not decode cleanly, and otherwise
            # gives what one decode per item gives.
            assert (fast is not None) == clean, (type_text, items)
            if fast is not None:
                assert fast == [json.dumps(t.decode(d).value, ensure_ascii=False) for d in items]


def test_real_inputs_are_found_checked_and_timed(tmp_path: Path) -> None:
    """``bench --inputs DIR``: a snapshot with NAME.expected.json (count + digest) gets its rows; a
    wrong digest is refused rather than timed."""
    from inspector.bench import real as bench_real
    from inspector.forge import RawImage, forge_u64_btreemap

    keys = random.Random(4).sample(range(1 << 40), 3_000)
    fm = forge_u64_btreemap(sorted(keys), [k * 3 for k in sorted(keys)])
    image = RawImage()
    image.place(fm)
    snap = tmp_path / "small.bin"
    image.write_to(snap, sparse=False)
    count, digest = bench_inputs.entries_digest(fm.entries())
    (tmp_path / "small.expected.json").write_text(json.dumps({"count": count, "entries_sha256": digest}))
    (tmp_path / "other.expected.json").write_text(json.dumps({"count": 1}))  # no digest: ignored
    assert [p.name for p, _ in bench_real.find_real_inputs(tmp_path)] == ["small.bin"]
    try:
        rows = bench_real.real_input_rows(tmp_path, tmp_path, 1)
    finally:
        bench_runner.close_launcher()
    targets = [r.target for r in rows]
    assert any(t.startswith("summary --deep, small.bin (3,000 entries") for t in targets), targets
    assert any(t.startswith("entries --format jsonl, small.bin") for t in targets), targets
    (tmp_path / "small.expected.json").write_text(json.dumps({"count": count, "entries_sha256": "0" * 64}))
    with pytest.raises(bench_model.BenchError, match="no map with count 3000"):
        bench_real.real_input_rows(tmp_path, tmp_path, 1)


def _fake_binary(path: Path, stdout: str) -> Path:
    """A stand-in executable that prints ``stdout``: the selection is tested, not the walk (nothing is
    built; the real native-walk may be absent)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\n")
    path.chmod(0o755)
    return path


def test_native_reference_selection(tmp_path: Path) -> None:
    """The bare native walk judges when it is there (env var first, then the build.sh output), readback
    is the second reference, the issue's fixed figure only when neither is; a binary that does not give
    the expected count and digest is dropped with its reason."""
    from inspector.bench import native

    root = tmp_path / "checkout"
    assert native.native_walk_binary({}, root) is None
    built = _fake_binary(root / native.NATIVE_WALK_BUILT, "{}")
    assert native.native_walk_binary({}, root) == built
    other = _fake_binary(tmp_path / "elsewhere" / "walk", "{}")
    assert native.native_walk_binary({native.NATIVE_WALK_ENV: str(other)}, root) == other
    # A named binary that is not there is not silently replaced by the built one.
    assert native.native_walk_binary({native.NATIVE_WALK_ENV: str(tmp_path / "gone")}, root) is None
    assert "gone" in native.native_walk_missing({native.NATIVE_WALK_ENV: str(tmp_path / "gone")})
    assert "build.sh" in native.native_walk_missing({})
    (tmp_path / "not-executable").write_text("")
    assert native.native_walk_binary({native.NATIVE_WALK_ENV: str(tmp_path / "not-executable")}, root) is None

    assert native.readback_binary({}, [root]) is None
    rb = _fake_binary(tmp_path / "shared" / "tools" / native.READBACK_NAME, "{}")
    assert native.readback_binary({}, [root]) == rb

    kinds = [r.kind for r in native.candidate_references(built, rb)]
    assert kinds == ["native-walk", "readback"]
    assert [r.kind for r in native.candidate_references(None, rb)] == ["readback"]
    assert native.candidate_references(None, None) == [native.FIXED]
    assert "0.2 s" in native.FIXED.short and native.FIXED.command(tmp_path, "raw", tmp_path) is None

    walk = native.Reference("native-walk", built)
    snap = tmp_path / "snap.bin"
    assert walk.command(snap, "raw", tmp_path) == [str(built), str(snap), "--memory", "raw"]
    assert walk.command(snap, 3, tmp_path, digest=True) == [
        str(built),
        str(snap),
        "--memory",
        "3",
        "--sha256",
    ]
    assert walk.command(snap, "5/1", tmp_path) is None  # a nested manager's memory: not this walk's
    assert native.Reference("readback", rb).command(snap, 2, tmp_path) == [
        str(rb),
        "--file",
        str(snap),
        "--map",
        "2:u64u64",
    ]

    good = _fake_binary(tmp_path / "good", json.dumps({"count": 7, "entries_sha256": "ab" * 32}))
    wrong = _fake_binary(tmp_path / "wrong", json.dumps({"count": 6, "entries_sha256": "ab" * 32}))
    rb_ok = _fake_binary(
        tmp_path / "rb", json.dumps({"maps": {"4": {"count": 7, "entries_sha256": "ab" * 32}}})
    )
    refs = [native.Reference("native-walk", wrong), native.Reference("readback", rb_ok)]
    usable, dropped = native.usable_references(refs, snap, 4, tmp_path, 7, "ab" * 32)
    assert [(r.kind, cmd[0]) for r, cmd in usable] == [("readback", str(rb_ok))]
    assert len(dropped) == 1 and dropped[0].startswith("native walk could not walk it")
    refs = [native.Reference("native-walk", good), native.Reference("readback", rb_ok)]
    usable, dropped = native.usable_references(refs, snap, 4, tmp_path, 7, "ab" * 32)
    assert [r.kind for r, _ in usable] == ["native-walk", "readback"] and dropped == []


@pytest.mark.parametrize("walk", [True, False])
def test_real_input_rows_say_which_reference_judged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, walk: bool
) -> None:
    """With a native walk (here a stand-in printing the expected count and digest) the rows are judged
    against it and say so; with no native binary at all, the issue's fixed figure is used and said."""
    from inspector.bench import native
    from inspector.bench import real as bench_real
    from inspector.forge import RawImage, forge_u64_btreemap

    keys = sorted(random.Random(5).sample(range(1 << 40), 500))
    fm = forge_u64_btreemap(keys, [k + 1 for k in keys])
    image = RawImage()
    image.place(fm)
    snap = tmp_path / "small.bin"
    image.write_to(snap, sparse=False)
    count, digest = bench_inputs.entries_digest(fm.entries())
    (tmp_path / "small.expected.json").write_text(json.dumps({"count": count, "entries_sha256": digest}))
    fake = _fake_binary(tmp_path / "bin" / "walk", json.dumps({"count": count, "entries_sha256": digest}))
    monkeypatch.setenv(native.NATIVE_WALK_ENV, str(fake) if walk else str(tmp_path / "absent"))
    monkeypatch.setenv(native.READBACK_ENV, str(tmp_path / "absent"))
    try:
        rows = bench_real.real_input_rows(tmp_path, tmp_path, 1)
    finally:
        bench_runner.close_launcher()
    by_target = {r.target.split(",")[0]: r for r in rows}
    deep = by_target["summary --deep"]
    if walk:
        ref = by_target["reference: native walk of small.bin (500 entries"]
        assert ref.note.startswith("native-walk") and ref.result == "ref"
        assert "vs the native walk timed in this run" in deep.note
        assert deep.limit == pytest.approx(bench_real.DEEP_REAL_LIMIT_X * ref.figure)
    else:
        assert not any(t.startswith("reference") for t in by_target)
        assert "fixed 0.2 s" in deep.note
        assert deep.limit == pytest.approx(bench_real.DEEP_REAL_LIMIT_X * bench_model.NATIVE_WALK_S)


def test_rows_judged_against_a_reference_take_their_own_run_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The diffs timed against ``cmp -s`` (and the walks against the native walk) take
    ``ratio_runs`` interleaved runs, the other rows ``runs``; the table's title says both."""
    import dataclasses

    from inspector.bench import real as bench_real
    from inspector.bench import targets as bench_targets

    cfg = dataclasses.replace(bench_model.TINY, runs=2, ratio_runs=5)
    assert cfg.interleaved_runs == 5 and bench_model.TINY.interleaved_runs == bench_model.TINY.runs
    assert bench_model.FULL.interleaved_runs > bench_model.FULL.runs
    asked: list[int] = []
    monkeypatch.setattr(bench_real, "structure_diff_rows", lambda _w, _m, _p, runs: asked.append(runs) or [])
    bench_targets.Bench(cfg, None, tmp_path).structure_diff()  # type: ignore[arg-type]
    assert asked == [5]
    bench_report.print_table([], cfg, bench_report.machine_info(), 0.0)
    title = " ".join(capsys.readouterr().out.split())  # (as one line: the table may wrap it)
    assert "median of 2 runs (5 where timed against a reference)" in title
