"""Scratch benchmark for inspector.diff.byte_ranges (not shipped, not a test).

Creates 1 GiB files in a temporary directory under /tmp (random data A, an identical copy, and B =
A with N scattered single-byte changes), times ``cmp -s`` on the identical pair, then runs every
comparison candidate and the real engine in a fresh child process each, so that peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is measured per candidate. Files are deleted at the
end unless --keep is given. All timings are from the page cache (files are read once first).

    python tools/bench_byte_diff.py [--size-mib 1024] [--diffs 1000] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


# --- candidates: each scans the whole common prefix and returns the number of differing blocks ---


def _open_pair(pa: str, pb: str) -> tuple[int, int, mmap.mmap, mmap.mmap, int]:
    fa, fb = os.open(pa, os.O_RDONLY), os.open(pb, os.O_RDONLY)
    ma = mmap.mmap(fa, 0, access=mmap.ACCESS_READ)
    mb = mmap.mmap(fb, 0, access=mmap.ACCESS_READ)
    return fa, fb, ma, mb, min(len(ma), len(mb))


def cand_mmap_slice(pa: str, pb: str, bs: int) -> int:
    _, _, ma, mb, size = _open_pair(pa, pb)
    return sum(ma[o : o + bs] != mb[o : o + bs] for o in range(0, size, bs))


def cand_memoryview_eq(pa: str, pb: str, bs: int) -> int:
    # memoryview == compares item by item (no memcmp fast path in CPython 3.11 for format 'B').
    _, _, ma, mb, size = _open_pair(pa, pb)
    va, vb = memoryview(ma), memoryview(mb)
    return sum(va[o : o + bs] != vb[o : o + bs] for o in range(0, size, bs))


def cand_memoryview_q(pa: str, pb: str, bs: int) -> int:
    # Cast to 8-byte items: still item by item, but 8x fewer items.
    _, _, ma, mb, size = _open_pair(pa, pb)
    va, vb = memoryview(ma).cast("Q"), memoryview(mb).cast("Q")
    q = bs // 8
    return sum(va[o : o + q] != vb[o : o + q] for o in range(0, size // 8, q))


def cand_bytes_of_view(pa: str, pb: str, bs: int) -> int:
    _, _, ma, mb, size = _open_pair(pa, pb)
    va, vb = memoryview(ma), memoryview(mb)
    return sum(bytes(va[o : o + bs]) != bytes(vb[o : o + bs]) for o in range(0, size, bs))


def cand_pread_both(pa: str, pb: str, bs: int) -> int:
    fa, fb, _, _, size = _open_pair(pa, pb)
    ba, bb = bytearray(bs), bytearray(bs)
    n = 0
    for o in range(0, size, bs):
        if os.preadv(fa, [ba], o) != os.preadv(fb, [bb], o) or ba != bb:
            n += 1
    return n


def cand_pread_vs_mmap(pa: str, pb: str, bs: int) -> int:
    # bytearray == memoryview is a memcmp against the mapped memory (one copy instead of two).
    fa, _, _, mb, size = _open_pair(pa, pb)
    ba, vb = bytearray(bs), memoryview(mb)
    n = 0
    for o in range(0, size, bs):
        got = os.preadv(fa, [ba], o)
        if (ba if got == bs else ba[:got]) != vb[o : o + bs]:
            n += 1
    return n


def cand_hashlib(pa: str, pb: str, bs: int) -> int:
    import hashlib

    _, _, ma, mb, size = _open_pair(pa, pb)
    va, vb = memoryview(ma), memoryview(mb)
    n = 0
    for o in range(0, size, bs):
        if hashlib.blake2b(va[o : o + bs]).digest() != hashlib.blake2b(vb[o : o + bs]).digest():
            n += 1
    return n


def cand_mmap_find(pa: str, pb: str, bs: int) -> int:
    # Same-length needle: _PyBytes_Find falls through to a single memcmp, zero-copy.
    _, _, ma, mb, size = _open_pair(pa, pb)
    vb = memoryview(mb)
    return sum(ma.find(vb[o : o + bs], o, o + bs) != o for o in range(0, size, bs))


def cand_mmap_find_release(pa: str, pb: str, bs: int) -> int:
    # As above, plus MADV_DONTNEED every 4 MiB so mapped pages do not accumulate in RSS.
    _, _, ma, mb, size = _open_pair(pa, pb)
    vb = memoryview(mb)
    chunk = max(bs, 4 * MIB)
    n = 0
    for c in range(0, size, chunk):
        e = min(c + chunk, size)
        for o in range(c, e, bs):
            m = min(bs, e - o)
            if ma.find(vb[o : o + m], o, o + m) != o:
                n += 1
        ma.madvise(mmap.MADV_DONTNEED, c, e - c)
        mb.madvise(mmap.MADV_DONTNEED, c, e - c)
    return n


CANDIDATES: dict[str, Callable[[str, str, int], int]] = {
    "mmap_slice": cand_mmap_slice,
    "memoryview_eq": cand_memoryview_eq,
    "memoryview_cast_Q": cand_memoryview_q,
    "bytes(memoryview)": cand_bytes_of_view,
    "pread_both": cand_pread_both,
    "pread_vs_mmap": cand_pread_vs_mmap,
    "hashlib_blake2b": cand_hashlib,
    "mmap_find": cand_mmap_find,
    "mmap_find+release": cand_mmap_find_release,
}


def run_engine(pa: str, pb: str, overrides: dict[str, int]) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    from inspector.diff import byte_ranges as byte_diff

    dense_mib = overrides.pop("_dense_mib", 0)
    for name, value in overrides.items():
        setattr(byte_diff, name, value)
    if dense_mib:
        with open(pa, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            with memoryview(mm) as view:
                res = byte_diff.changed_ranges(view[: dense_mib * MIB], view[1 : dense_mib * MIB + 1])
        return {"count": res.count, "total_bytes": res.total_bytes}
    calls: list[int] = []
    res = byte_diff.diff_files(pa, pb, progress=lambda done, total: calls.append(done))
    return {
        "count": res.count,
        "total_bytes": res.total_bytes,
        "progress_calls": len(calls),
        "skipped": res.hole_bytes_skipped,
    }


def child(argv: list[str]) -> None:
    kind, name, pa, pb, param = argv
    t = time.perf_counter()
    if kind == "cand":
        out: object = CANDIDATES[name](pa, pb, int(param))
    else:
        out = run_engine(pa, pb, json.loads(param))
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": dt, "maxrss_mib": rss, "out": out}))


# --- driver ---


def make_files(d: Path, size: int, ndiffs: int) -> tuple[Path, Path, Path, list[int]]:
    rnd = random.Random(20240601)
    a, a2, b = d / "a.bin", d / "a_copy.bin", d / "b.bin"
    with open(a, "wb") as f:
        for _ in range(size // MIB):
            f.write(rnd.randbytes(MIB))
    shutil.copyfile(a, a2)
    shutil.copyfile(a, b)
    offsets = sorted(rnd.sample(range(size), ndiffs))
    fd = os.open(b, os.O_RDWR)
    try:
        for o in offsets:
            old = os.pread(fd, 1, o)[0]
            os.pwrite(fd, bytes([old ^ rnd.randrange(1, 256)]), o)
    finally:
        os.close(fd)
    return a, a2, b, offsets


def make_sparse(d: Path, size: int) -> tuple[Path, Path]:
    # Two sparse files with 8 MiB of data each at the same places, 3 changed bytes.
    sa, sb = d / "sparse_a.bin", d / "sparse_b.bin"
    rnd = random.Random(5)
    blob = rnd.randbytes(4 * MIB)
    for p in (sa, sb):
        with open(p, "wb") as f:
            f.truncate(size)
            for off in (0, size // 2):
                f.seek(off)
                f.write(blob)
    fd = os.open(sb, os.O_RDWR)
    for o in (17, size // 2 + 12345, size // 2 + 4 * MIB - 1):
        os.pwrite(fd, bytes([os.pread(fd, 1, o)[0] ^ 0xFF]), o)
    os.close(fd)
    return sa, sb


def spawn(kind: str, name: str, pa: Path, pb: Path, param: str, repeat: int) -> dict[str, object]:
    best: dict[str, object] | None = None
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, name, str(pa), str(pb), param],
            check=True,
            capture_output=True,
            text=True,
        )
        got = json.loads(proc.stdout)
        if best is None or got["seconds"] < best["seconds"]:
            best = got
    assert best is not None
    return best


def time_cmp(pa: Path, pb: Path, repeat: int) -> tuple[float, float]:
    best, rss = float("inf"), 0.0
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        subprocess.run(["cmp", "-s", str(pa), str(pb)], check=False)
        best = min(best, time.perf_counter() - t)
        rss = max(rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    return best, rss / 1024


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--diffs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="reuse/keep files in this directory instead of a temp dir")
    ap.add_argument("--skip-candidates", action="store_true")
    ap.add_argument("--sparse-gib", type=int, default=64)
    ap.add_argument(
        "--dense-mib", type=int, default=0, help="also diff N MiB of A against A shifted by a byte"
    )
    args = ap.parse_args()
    size = args.size_mib * MIB

    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench_byte_diff_", dir="/tmp"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if (tmp / "b.bin").exists() and (tmp / "a.bin").stat().st_size == size:
            a, a2, b = tmp / "a.bin", tmp / "a_copy.bin", tmp / "b.bin"
        else:
            print(f"creating {args.size_mib} MiB files in {tmp} ...", flush=True)
            a, a2, b, _ = make_files(tmp, size, args.diffs)
        for p in (a, a2, b):  # warm the page cache
            subprocess.run(["cat", str(p)], stdout=subprocess.DEVNULL, check=True)

        cmp_s, cmp_rss = time_cmp(a, a2, args.repeat)
        gbps = size / cmp_s / 1e9
        print(f"{'cmp -s (identical)':34s} {cmp_s:7.3f} s {gbps:6.2f} GB/s  maxrss {cmp_rss:7.1f} MiB")

        def show(label: str, got: dict[str, object]) -> None:
            s = float(got["seconds"])  # type: ignore[arg-type]
            print(
                f"{label:34s} {s:7.3f} s {size / s / 1e9:6.2f} GB/s  maxrss {got['maxrss_mib']:7.1f} MiB"
                f"  x{cmp_s / s:4.2f} of cmp  -> {got['out']}",
                flush=True,
            )

        if not args.skip_candidates:
            for name in CANDIDATES:
                for bs in (64 << 10, 1 << 20):
                    show(
                        f"{name} bs={bs >> 10}K (1000 diffs)", spawn("cand", name, a, b, str(bs), args.repeat)
                    )

        variants: dict[str, dict[str, int]] = {
            "engine default": {},
            "engine block=64K": {"BLOCK_SIZE": 64 << 10},
            "engine block=1M": {"BLOCK_SIZE": 1 << 20},
            "engine block=16K": {"BLOCK_SIZE": 16 << 10},
            "engine leaf=1K": {"LEAF_SIZE": 1 << 10},
            "engine leaf=16K": {"LEAF_SIZE": 16 << 10},
            "engine chunk=1M": {"CHUNK_SIZE": 1 << 20},
            "engine chunk=16M": {"CHUNK_SIZE": 16 << 20},
        }
        for label, over in variants.items():
            show(f"{label} (identical)", spawn("engine", label, a, a2, json.dumps(over), args.repeat))
            show(f"{label} (diffs)", spawn("engine", label, a, b, json.dumps(over), args.repeat))

        if args.dense_mib:
            # Worst case: nearly every byte differs, so the result itself has millions of ranges.
            got = spawn("engine", "dense", a, a, json.dumps({"_dense_mib": args.dense_mib}), 1)
            print(f"engine, {args.dense_mib} MiB where nearly every byte differs: {got}")

        if args.sparse_gib:
            sa, sb = make_sparse(tmp, args.sparse_gib << 30)
            got = spawn("engine", "sparse", sa, sb, "{}", args.repeat)
            print(f"engine on {args.sparse_gib} GiB sparse pair (8 MiB data each): {got}")
            sa.unlink()
            sb.unlink()
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
