"""Benchmark rows on library-shaped data: structure-filled diff pairs, real snapshots, the native walk.

* **Structure-filled diff pairs.** Two snapshots that hold real structures from end to end: a full
  ``StableVec<u64>`` on the raw memory (1 GiB: 134,217,720 items), and a ``StableBTreeMap<u64, Vec<u8>>``
  of 10–200 KB values (so nearly every byte is in an overflow page), each pair differing in scattered
  single bytes inside element or value bytes. ``diff --json`` must keep pace with ``cmp -s`` of two
  identical copies, timed interleaved with it, and attribute every change to its element or entry.
* **Real snapshots** (``bench --inputs DIR``): every ``NAME.bin`` with a ``NAME.expected.json`` (or a
  folder with ``stable_memory.bin`` + ``expected.json``) whose JSON has ``count`` and
  ``entries_sha256``. The decoder must find a map with exactly that count and digest; then
  ``summary --deep`` and ``entries --format jsonl`` are timed, interleaved with the native walk.
* **The native walk**, timed interleaved in the same run (``inspector.bench.native``): the bare walk
  of the real crate (``tools/native_walk``), which judges the rows; ``readback-0.7.2`` beside it as a
  second, labelled reference (it walks through a MemoryManager image and hashes everything, so it is
  slower). Without the bare walk, readback judges as before; without either, the issue's fixed figure.

The big-value map of the forged pair is grown by ``inspector.forge.btree_grow`` (the library's insert and
remove: random key order, a share of the entries removed again, overflow pages taken and freed as nodes
split and merge, so chains are scattered and the free list holds former overflow pages).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inspector.bench.inputs import _cached, copy_with_flips, deep_structures
from inspector.bench.model import NATIVE_WALK_S, BenchError, GiB, MiB, Row, Timing
from inspector.bench.native import (
    FIXED,
    READBACK_NAME,
    candidate_references,
    native_walk_binary,
    native_walk_missing,
    readback_binary,
    reference_row,
    time_interleaved,
    usable_references,
)
from inspector.bench.runner import ChildRun, _child_env, _log, inspector_cmd, run_child
from inspector.bench.targets import timed_row

DEEP_REAL_LIMIT_X = 3.0  # summary --deep of a real map: ≤ 3× the native walk (issue 13)
JSONL_REAL_LIMIT_X = 6.0
STRUCT_DIFF_LIMIT_X = 1.0  # × cmp -s of identical copies
STRUCT_DIFF_RSS_MB = 200.0
VEC_HEADER = 64


# --- forged structure-filled pairs ----------------------------------------------------------------------


def build_vec_pair(a: Path, a2: Path, b: Path, mib: int, patches: int) -> dict[str, Any]:
    """A raw-memory ``StableVec<u64>`` filling ``mib`` MiB (item i = 7·i, big-endian), a copy, and a
    copy with ``patches`` single bytes XOR 0xFF inside the items (never two in one item)."""
    from inspector.forge.structures import _vec_header
    from inspector.layouts import VEC_MAGIC

    size = mib * MiB
    n = (size - VEC_HEADER) // 8
    with open(a, "wb") as f:
        f.write(_vec_header(VEC_MAGIC, n, 8, True).ljust(VEC_HEADER, b"\0"))
        step = 1 << 20
        for i in range(0, n, step):
            m = min(step, n - i)
            f.write(struct.pack(f">{m}Q", *range(7 * i, 7 * (i + m), 7)))
    rng = random.Random(21)
    items = sorted(rng.sample(range(n), patches))
    offsets = [VEC_HEADER + 8 * i + rng.randrange(8) for i in items]
    copy_with_flips(a, a2, b, offsets)
    return {"items": n, "patch_offsets": offsets, "changed_items": len(items)}


def build_bigmap_pair(a: Path, a2: Path, b: Path, mib: int, patches: int) -> dict[str, Any]:
    """A raw-memory ``StableBTreeMap<u64, Vec<u8>>`` of 10–200 KB values filling about ``mib`` MiB,
    a copy, and a copy with ``patches`` single bytes changed inside overflow-page data."""
    from inspector.forge import RawImage
    from inspector.forge.btree_grow import grow_map_from, mix64
    from inspector.layouts import CHUNK_HEADER_SIZE, FIRST_CHUNK_OFFSET, OVERFLOW_MAGIC
    from inspector.structures.btreemap.nodes import OVERFLOW_DATA_OFFSET

    rng = random.Random(31)
    block = rng.randbytes(4 * MiB)

    def value_len(key: int) -> int:
        return 10_000 + key % 190_000

    def value_of(key: int) -> bytes:
        n = value_len(key)
        off = (key >> 24) % (len(block) - n)
        return block[off : off + n]

    # Keys in random order (a bijective mix of a counter); every 11th is removed again at the end.
    inserted: list[int] = []
    total, i = 0, 0
    while total < mib * MiB * 0.97:
        k = mix64(i + 31)
        inserted.append(k)
        if i % 11 != 5:
            total += value_len(k)
        i += 1
    removed = [k for j, k in enumerate(inserted) if j % 11 == 5]
    rng.shuffle(removed)
    ops = [("insert", k) for k in inserted] + [("remove", k) for k in removed]
    fm = grow_map_from(ops, page_size=1024, value_of=value_of, value_len=value_len)
    image = RawImage()
    image.place(fm)
    image.write_to(a, sparse=False)
    cs = fm.chunk_size
    offsets: set[int] = set()
    chunks: set[int] = set()
    with open(a, "rb") as f:
        data_size = os.fstat(f.fileno()).st_size
        while len(offsets) < patches:
            c = rng.randrange(1, (data_size - FIRST_CHUNK_OFFSET) // cs - 1)
            chunk = FIRST_CHUNK_OFFSET + c * cs
            f.seek(chunk + CHUNK_HEADER_SIZE)
            if f.read(3) != OVERFLOW_MAGIC or c in chunks:
                continue
            chunks.add(c)
            start = chunk + CHUNK_HEADER_SIZE + OVERFLOW_DATA_OFFSET
            offsets.add(rng.randrange(start, chunk + cs))
    copy_with_flips(a, a2, b, sorted(offsets))
    return {"entries": fm.length, "nodes": fm.node_count, "overflows": fm.overflow_count}


def prepare_pairs(
    workdir: Path, mib: int, patches: int
) -> list[tuple[str, Path, Path, Path, dict[str, Any]]]:
    out = []
    for recipe, build, what in (
        ("vec", build_vec_pair, "StableVec<u64> (raw memory, full)"),
        ("bigmap", build_bigmap_pair, "StableBTreeMap<u64, Vec<u8>> of 10–200 KB values (raw memory)"),
    ):
        stem = f"struct-{recipe}-{mib}mib"
        a, a2, b = workdir / f"{stem}-a.bin", workdir / f"{stem}-a2.bin", workdir / f"{stem}-b-{patches}.bin"
        if not (a2.exists() and b.exists()):
            a.with_name(a.name + ".json").unlink(missing_ok=True)
        info = _cached(
            a,
            {"recipe": f"struct-{recipe}", "mib": mib, "patches": patches},
            lambda tmp, build=build, a2=a2, b=b: build(tmp, a2, b, mib, patches),  # type: ignore[misc]
        )
        out.append((what, a, a2, b, info))
    return out


def structure_diff_rows(workdir: Path, mib: int, patches: int, runs: int) -> list[Row]:
    rows: list[Row] = []
    for what, a, a2, b, info in prepare_pairs(workdir, mib, patches):
        short = "StableVec" if what.startswith("StableVec") else "big-value map"
        cli = inspector_cmd("diff", str(a), str(b), "--json")
        note = _check_structure_diff(cli, patches, info)
        run_child(["cat", str(a), str(a2), str(b)], timeout=1200.0)
        cmds = {"cmp": ["cmp", "-s", str(a), str(a2)], "cli": cli}
        got: dict[str, list[ChildRun]] = {k: [] for k in cmds}
        for _ in range(runs):
            for k, cmd in cmds.items():
                r = run_child(cmd, timeout=1800.0)
                if r.rc not in (0, 1):
                    raise BenchError(f"{' '.join(cmd[:3])} exited with {r.rc}: {r.stderr[-300:]}")
                got[k].append(r)
        t = {k: Timing([r.wall for r in v], max(r.rss_kb for r in v), 0) for k, v in got.items()}
        cmp_s = t["cmp"].median
        size = a.stat().st_size
        label = f"{size / GiB:.2f} GiB" if size >= GiB // 2 else f"{size / MiB:.0f} MiB"
        rows.append(
            Row(
                f"reference: cmp -s, two identical {label} copies of the {short} snapshot",
                cmp_s,
                "s",
                None,
                "",
                None,
                None,
                t["cmp"].rss_mb,
                t["cmp"].times,
                note="interleaved with the diff below",
            )
        )
        limit = STRUCT_DIFF_LIMIT_X * cmp_s
        row = timed_row(
            f"diff --json, {label}: {what}, {patches:,} scattered bytes differ",
            t["cli"],
            limit=limit,
            limit_text=f"≤ {STRUCT_DIFF_LIMIT_X:g}× cmp -s ({limit:.3f} s), ≤ {STRUCT_DIFF_RSS_MB:g} MB",
            reference=cmp_s,
            note=note,
        )
        if t["cli"].rss_mb > STRUCT_DIFF_RSS_MB:
            row.passed = False
            row.note += f"; RSS over {STRUCT_DIFF_RSS_MB:g} MB"
        rows.append(row)
    return rows


def _check_structure_diff(cmd: Sequence[str], patches: int, info: dict[str, Any]) -> str:
    out = subprocess.run(list(cmd), capture_output=True, text=True, env=_child_env(), check=False)
    if out.returncode not in (0, 1):
        raise BenchError(f"diff --json exited with {out.returncode}: {out.stderr.strip()[-300:]}")
    report = json.loads(out.stdout)
    if report.get("changed_bytes") != patches:
        raise BenchError(
            f"diff reports {report.get('changed_bytes')} changed bytes, the forge patched {patches}"
        )
    (sd,) = report["structures"]
    if "changed_items" in info and sd["changed"] != info["changed_items"]:
        raise BenchError(
            f"diff finds {sd['changed']} changed items, the forge changed {info['changed_items']}"
        )
    if "entries" in info and not 0 < sd["changed"] <= min(patches, info["entries"]):
        raise BenchError(f"diff finds {sd['changed']} changed entries for {patches} patched value bytes")
    if sd["added"] or sd["removed"]:
        raise BenchError("diff finds added or removed entries where only values changed")
    return f"{sd['changed']:,} {sd['kind']} items changed, found by {sd['method']!r}; counts checked"


# --- real snapshots (bench --inputs DIR) ----------------------------------------------------------------


def find_real_inputs(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(snapshot, expected) for every snapshot in ``directory`` with a count and an entries digest."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for exp_path in sorted(directory.rglob("*expected.json")):
        if exp_path.name == "expected.json":
            snap = exp_path.with_name("stable_memory.bin")
        else:
            snap = exp_path.with_name(exp_path.name[: -len(".expected.json")] + ".bin")
        try:
            exp = json.loads(exp_path.read_text())
        except (OSError, ValueError):
            continue
        if snap.is_file() and isinstance(exp, dict) and "count" in exp and "entries_sha256" in exp:
            found.append((snap, exp))
    return found


def _decoded_map(path: Path, exp: dict[str, Any]) -> dict[str, Any]:
    for s in deep_structures(path):
        if s.get("kind") == "btreemap" and (s.get("count"), s.get("entries_sha256")) == (
            exp["count"],
            exp["entries_sha256"],
        ):
            return dict(s)
    raise BenchError(f"{path.name}: no map with count {exp['count']} and the expected entries_sha256")


def real_input_rows(directory: Path, workdir: Path, runs: int) -> list[Row]:
    rows: list[Row] = []
    inputs = find_real_inputs(directory)
    if not inputs:
        raise BenchError(
            f"--inputs {directory}: no snapshot with an expected.json holding count and entries_sha256"
        )
    walk = native_walk_binary()
    candidates = candidate_references(walk, readback_binary())
    absent = [] if walk else [native_walk_missing()]
    for snap, exp in inputs:
        s = _decoded_map(snap, exp)
        mid = s.get("memory_id")
        name = f"{snap.name} ({exp['count']:,} entries, real library)"
        usable, dropped = usable_references(
            candidates, snap, mid, workdir, exp["count"], exp["entries_sha256"]
        )
        judge = usable[0][0] if usable else FIXED
        deep = inspector_cmd("summary", str(snap), "--deep", "--json")
        jsonl = inspector_cmd("entries", str(snap), "--memory", str(mid), "--format", "jsonl")
        cmds: dict[str, list[str]] = {"deep": deep, "jsonl": jsonl}
        cmds.update((ref.kind, cmd) for ref, cmd in usable)
        t = time_interleaved(cmds, runs)
        ref_s = t[judge.kind].median if judge is not FIXED else NATIVE_WALK_S
        why_not = "".join(f"; {d}" for d in absent + dropped)
        for ref, _ in usable:
            if ref is judge:
                rows.append(
                    reference_row(
                        f"reference: native walk of {name}",
                        t[ref.kind],
                        f"{ref.what}; interleaved; the limits below are × this{why_not}",
                    )
                )
            else:
                rows.append(
                    reference_row(
                        f"second reference (not a limit): {READBACK_NAME} walk of {name}",
                        t[ref.kind],
                        f"{ref.what}; {t[ref.kind].median / ref_s:.1f}× the {judge.short}; interleaved",
                    )
                )
        if judge is FIXED:
            judged_by = judge.what + why_not
        else:  # readback judging says why the bare walk does not
            judged_by = f"vs the {judge.short} timed in this run" + (
                "" if judge.kind == "native-walk" else why_not
            )
        for key, x, what in (
            ("deep", DEEP_REAL_LIMIT_X, "summary --deep"),
            ("jsonl", JSONL_REAL_LIMIT_X, "entries --format jsonl"),
        ):
            limit = x * ref_s
            rows.append(
                timed_row(
                    f"{what}, {name}",
                    t[key],
                    limit=limit,
                    limit_text=f"≤ {x:g}× {judge.short if judge is not FIXED else 'native'} ({limit:.2f} s)",
                    reference=ref_s,
                    note=("count and entries_sha256 match expected.json" if key == "deep" else "to /dev/null")
                    + f"; {judged_by}",
                )
            )
    return rows


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


if __name__ == "__main__":  # pragma: no cover - a quick manual run: python -m inspector.bench.real DIR
    wd = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp")
    for row in real_input_rows(Path(sys.argv[1]), wd, 3):
        _log(f"{row.target}: {row.figure} ({row.ratio})")
