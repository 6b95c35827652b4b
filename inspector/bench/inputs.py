"""The benchmark's inputs: forged (and cached) map, sparse and dense-pair snapshots, and the checks that
the decoder reads them back as forged.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.bench.model import INPUT_VERSION, PAGE, VEC_HEADER_LEN, BenchError, Config, GiB, MiB
from inspector.bench.runner import _child_env, _log, inspector_cmd, run_child

# --- inputs ---------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    map_mm: Path
    map_raw: Path
    sparse_big: Path
    sparse_small: Path
    dense_a: Path
    dense_a2: Path  # byte-identical copy of dense_a, for cmp -s
    dense_b: Path  # dense_a with `patches` scattered single-byte changes
    map_count: int
    map_sha256: str
    patch_offsets: list[int]


def _cached(path: Path, params: dict[str, Any], build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build ``path`` unless a previous run left it with the same parameters; returns its metadata.

    The sidecar ``NAME.json`` records the recipe parameters and what the builder knows about the
    content (entry count, digest, patch offsets). Files are built under a temporary name and renamed,
    so an interrupted build is never mistaken for a finished one.
    """
    meta_path = path.with_name(path.name + ".json")
    wanted = {"version": INPUT_VERSION, **params}
    if path.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("params") == wanted and meta.get("size") == path.stat().st_size:
                return dict(meta.get("info", {}))
        except (OSError, ValueError):
            pass
    _log(f"forging {path.name} …")
    start = time.perf_counter()
    tmp = path.with_name(path.name + ".partial")
    info = build(tmp)
    os.replace(tmp, path)
    meta_path.write_text(json.dumps({"params": wanted, "size": path.stat().st_size, "info": info}))
    _log(f"  {path.name}: {path.stat().st_size:,} bytes in {time.perf_counter() - start:.1f} s")
    return info


REMOVED_SHARE = 10  # a map of n entries: n + n/10 random keys inserted in random order, then n/10 removed


def _u64_map(entries: int) -> Any:
    """A u64 → u64 map (k → k² mod 2⁶⁴) grown like the library grows one: random keys inserted in random
    order, node splits, then a random tenth removed again (merges, so the free list is not empty)."""
    from inspector.forge.btree_grow import grow_u64_map

    extra = entries // REMOVED_SHARE
    return grow_u64_map(entries + extra, extra, seed=entries)


def entries_digest(pairs: Iterator[tuple[bytes, bytes]]) -> tuple[int, str]:
    """(count, entries_sha256) as FORMAT.md defines it: u32 BE len + key, u32 BE len + value."""
    h = hashlib.sha256()
    be32 = struct.Struct(">I").pack
    n = 0
    batch: list[bytes] = []
    for key, value in pairs:
        batch += (be32(len(key)), key, be32(len(value)), value)
        n += 1
        if len(batch) >= 40_000:
            h.update(b"".join(batch))
            batch.clear()
    h.update(b"".join(batch))
    return n, h.hexdigest()


def build_map_image(out: Path, entries: int, *, raw: bool) -> dict[str, Any]:
    """The u64 → u64 map directly on raw memory, or at MemoryId 1 of a MemoryManager (8 MiB buckets)
    whose buckets alternate with those of a ``StableVec<u64>`` at MemoryId 2 growing at the same time."""
    from inspector.forge import RawImage

    fm = _u64_map(entries)
    if raw:
        raw_image = RawImage()
        raw_image.place(fm)
        raw_image.write_to(out, sparse=True)
    else:
        interleaved_map_image(fm, entries).write_to(out, sparse=True)
    count, digest = entries_digest(fm.entries())
    return {"count": count, "entries_sha256": digest, "nodes": fm.node_count, "overflows": fm.overflow_count}


def interleaved_map_image(fm: Any, entries: int, bucket_pages: int = 128) -> Any:
    """MemoryManager image: the map's memory and a Vec's memory grow in turns, page by page as the
    library grows them, so neither memory's buckets are contiguous."""
    from inspector.forge import MemoryManagerImage, vec

    vec_items = max(1, entries * 3)  # about half the map's bytes
    vec_pages = -(-(VEC_HEADER_LEN + 8 * vec_items) // PAGE)
    map_pages = fm.size // PAGE
    mm = MemoryManagerImage(bucket_pages)
    steps = max(1, -(-map_pages // bucket_pages))
    for i in range(1, steps + 1):
        mm.grow(1, map_pages * i // steps - mm.sizes[1])
        mm.grow(2, vec_pages * i // steps - mm.sizes[2])
    mm.place(1, fm)
    mm.place(2, vec([(i * 0x9E37).to_bytes(8, "big") for i in range(vec_items)], 8, True))
    return mm


def build_sparse_image(out: Path, gib: float, entries: int) -> dict[str, Any]:
    """A multi-GiB sparse snapshot with many memories, like a real canister's.

    Cell, the u64 map, a Vec, a Log (two memories), a MinHeap, a text → blob map whose values spill
    into overflow pages, eight more cells, and a huge raw memory that is mostly holes. The raw memory
    grows in two steps around the structures so bucket ownership is interleaved.
    """
    from inspector.forge import MemoryManagerImage, cell, forge_btreemap, log, minheap, u64_be, vec

    mm = MemoryManagerImage(128)
    mm.place(0, cell(b"stable-inspect benchmark"))
    mm.place(1, _u64_map(entries))
    raw_pages = max(2, int(gib * GiB) // (64 * 1024))
    mm.grow(2, raw_pages // 2)
    mm.place(3, vec(u64_be(range(10_000)), 8, True))
    index, data = log([f"event {i}: something happened".encode() for i in range(5_000)])
    mm.place(4, index)
    mm.place(5, data)
    mm.place(6, minheap(u64_be(range(2_000, 0, -1)), 8, True))
    rng = random.Random(7)
    mm.place(7, forge_btreemap((f"user-{i:06d}".encode(), rng.randbytes(300)) for i in range(2_000)))
    mm.grow(2, raw_pages - raw_pages // 2)
    mm.write(2, 0, b"raw memory 2 starts here")
    mm.write(2, raw_pages * 64 * 1024 - 16, b"raw memory 2 end")
    for mid in range(8, 16):
        mm.place(mid, cell(f"setting {mid}".encode()))
    mm.write_to(out, sparse=True)
    return {"memories": 16}


def build_dense_pair(a: Path, a2: Path, b: Path, mib: int, patches: int) -> list[int]:
    """Two dense snapshots of ``mib`` 1-MiB buckets (+ the header page) that differ in ``patches`` bytes.

    A: a Cell, a small u64 map and a filler memory of pseudo-random bytes, written densely (no holes:
    ``cmp`` and ``diff`` must really read it). A2: a byte-identical copy of A (``cmp -s`` of identical
    files reads both to the end, the diff's worst case). B: a copy of A with single-byte changes at
    even offsets (so no two touch) scattered over the filler, each byte XOR 0xFF (so it does change).
    """
    from inspector.forge import MemoryManagerImage, cell

    mm = MemoryManagerImage(16)  # 1 MiB buckets
    mm.place(0, cell(b"stable-inspect diff benchmark"))
    mm.place(1, _u64_map(10_000))
    used = mm.num_buckets
    filler_buckets = max(1, mib - used)
    filler = filler_buckets * MiB
    mm.grow(2, filler // (64 * 1024))
    block = b"filler memory 2 " + random.Random(11).randbytes(4 * MiB - 16)
    for off in range(0, filler, len(block)):
        mm.write(2, off, block[: min(len(block), filler - off)])
    mm.write_to(a, sparse=False)
    lo = mm.to_physical(2, 0)
    hi = lo + filler  # memory 2 grew in one step: its buckets are consecutive
    rng = random.Random(12)
    offsets = sorted(lo + 2 * i for i in rng.sample(range(8, (hi - lo) // 2), patches))
    copy_with_flips(a, a2, b, offsets)
    return offsets


def copy_with_flips(a: Path, a2: Path, b: Path, offsets: Sequence[int]) -> None:
    """``a2``: an identical copy of ``a`` (for ``cmp -s``); ``b``: a copy with each byte at ``offsets`` inverted."""
    shutil.copyfile(a, a2)
    shutil.copyfile(a, b)
    with open(b, "r+b") as f:
        for off in offsets:
            f.seek(off)
            old = f.read(1)[0]
            f.seek(off)
            f.write(bytes([old ^ 0xFF]))


def prepare_inputs(cfg: Config, workdir: Path) -> Inputs:
    n = cfg.entries
    map_mm = workdir / f"map-mm-u64-{n}.bin"
    map_raw = workdir / f"map-raw-u64-{n}.bin"
    info = _cached(map_mm, {"recipe": "map-mm", "entries": n}, lambda p: build_map_image(p, n, raw=False))
    info_raw = _cached(
        map_raw, {"recipe": "map-raw", "entries": n}, lambda p: build_map_image(p, n, raw=True)
    )
    if (info["count"], info["entries_sha256"]) != (info_raw["count"], info_raw["entries_sha256"]):
        raise BenchError("the MemoryManager and raw map images disagree about their entries")

    def sparse(gib: float) -> Path:
        path = workdir / f"sparse-{gib:g}gib-u64-{n}.bin"
        _cached(path, {"recipe": "sparse", "gib": gib, "entries": n}, lambda p: build_sparse_image(p, gib, n))
        return path

    big, small = sparse(cfg.sparse_gib), sparse(cfg.small_sparse_gib)

    stem = f"dense-{cfg.dense_mib}mib"
    a, a2, b = workdir / f"{stem}-a.bin", workdir / f"{stem}-a2.bin", workdir / f"{stem}-b-{cfg.patches}.bin"

    def dense(tmp: Path) -> dict[str, Any]:
        # One recipe writes the three files: A2 and B are derived from A and cached with it.
        offsets = build_dense_pair(tmp, a2, b, cfg.dense_mib, cfg.patches)
        return {"patch_offsets": offsets}

    params = {"recipe": "dense", "mib": cfg.dense_mib, "patches": cfg.patches}
    if not (a2.exists() and b.exists()):
        a.with_name(a.name + ".json").unlink(missing_ok=True)
    dense_info = _cached(a, params, dense)
    for p in (a2, b):
        st = p.stat()
        if st.st_size != a.stat().st_size or st.st_blocks * 512 < st.st_size:
            raise BenchError(f"{p.name} is not a dense copy of {a.name}")
    return Inputs(
        map_mm,
        map_raw,
        big,
        small,
        a,
        a2,
        b,
        info["count"],
        info["entries_sha256"],
        dense_info["patch_offsets"],
    )


# --- checks of the inputs against the decoder -----------------------------------------------------------


def deep_structures(path: Path) -> list[dict[str, Any]]:
    """The structures ``summary --deep --json`` decodes in ``path``, run as a user runs it."""
    out = subprocess.run(
        inspector_cmd("summary", str(path), "--deep", "--json"),
        capture_output=True,
        text=True,
        env=_child_env(),
        check=False,
    )
    if out.returncode != 0:
        raise BenchError(f"summary --deep of {path.name} failed: {out.stderr.strip()[-300:]}")
    return list(json.loads(out.stdout)["structures"])


def check_map_input(path: Path, count: int, digest: str) -> None:
    """The decoder must see exactly the forged entries before any timing means anything."""
    maps = [s for s in deep_structures(path) if s.get("kind") == "btreemap"]
    if len(maps) != 1:
        raise BenchError(f"{path.name}: expected one btreemap, the decoder found {len(maps)}")
    got = (maps[0].get("count"), maps[0].get("entries_sha256"))
    if got != (count, digest):
        raise BenchError(f"{path.name}: decoder sees {got}, the forge wrote ({count}, {digest})")


def check_jsonl_output(path: Path, workdir: Path, count: int, digest: str) -> None:
    """One untimed export to a file: as many lines as entries, and they hash to the forged entries_sha256
    (so every entry is there, in key order, with its value)."""
    out = workdir / "entries-check.jsonl"
    try:
        r = run_child(inspector_cmd("entries", str(path), "--memory", "1", "--format", "jsonl"), stdout=out)
        if r.rc != 0:
            raise BenchError(f"entries --format jsonl failed ({r.rc}): {r.stderr[-300:]}")

        def pairs() -> Iterator[tuple[bytes, bytes]]:
            with open(out, "rb") as fh:
                for line in fh:
                    e = json.loads(line)
                    yield bytes.fromhex(e["key_hex"]), bytes.fromhex(e["value_hex"])

        got = entries_digest(pairs())
        if got != (count, digest):
            raise BenchError(f"jsonl export gives {got}, the forge wrote ({count}, {digest})")
    finally:
        out.unlink(missing_ok=True)
