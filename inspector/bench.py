"""``stable-inspect bench``: time the performance targets on forged inputs and print one table.

Every timed command runs as its own process (``python -m inspector …``), the way a user runs it, so
the figures include interpreter start-up and imports. Wall time is ``time.perf_counter`` around the
child; peak RSS is the child's own ``ru_maxrss`` from ``os.wait4`` (``RUSAGE_CHILDREN`` would give the
largest child so far, not this one), taken in a small launcher process (see ``LAUNCHER`` for why).
Each target runs once untimed (it warms the page cache and the bytecode cache, and its output is
checked), then ``runs`` timed times: the table shows the median and the min–max.

Inputs are forged with ``snapshots.forge`` into ``--workdir`` (kept, and reused by later runs when
name and parameters match) or a temporary directory (deleted at the end). Never inside the project.

Targets and their references (issue figures for this kind of machine, 2 cores):

* the Rust library walks a 1,000,000-entry ``StableBTreeMap<u64, u64>`` in about 0.2 s natively, as a
  whole process: ``summary --deep`` may take 5× that, ``entries --format jsonl`` 15×;
* ``diff`` of two 1 GiB snapshots may take no longer than ``cmp -s`` of two identical 1 GiB files,
  measured here in the same run;
* ``summary`` of an 8 GiB sparse snapshot: 1.5 s and 150 MB; ``check`` (with the orphan scan): 20 s,
  and peak RSS must not grow with the snapshot's size (compared with the same layout at 1 GiB);
* the TUI paints its first screen within 1 s and scrolls a million-entry map without a stall.

Only the standard library and rich are used here; the TUI is driven from a child process so that this
module never imports Textual (``tests/test_architecture.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inspector.errors import InspectorError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Reference figures from the issue (seconds).
NATIVE_WALK_S = 0.2
SUMMARY_LIMIT_S = 1.5
SUMMARY_RSS_LIMIT_MB = 150.0
DEEP_LIMIT_X = 5.0
JSONL_LIMIT_X = 15.0
DIFF_LIMIT_X = 1.0
CHECK_LIMIT_S = 20.0
TUI_PAINT_LIMIT_S = 1.0
# Issue 16: a diff where every other byte differs must finish in seconds at 64 MiB.
HOSTILE_DIFF_MIB = 64
HOSTILE_DIFF_LIMIT_S = 10.0
# A "stall" is the UI's event loop blocked long enough for a user to notice a frozen screen.
TUI_STALL_LIMIT_S = 0.25
# "Flat" memory: peak RSS on the 8 GiB snapshot at most this much above the same layout at 1 GiB.
FLAT_RSS_LIMIT_X = 1.25

# Bumped whenever a recipe changes, so cached inputs of an older recipe are rebuilt.
INPUT_VERSION = 2  # 2: maps grown by the library's insert/remove algorithm (snapshots/forge_btree_grow.py)
MiB = 1 << 20
GiB = 1 << 30
U64_MASK = (1 << 64) - 1
PAGE = 65536
VEC_HEADER_LEN = 64  # StableVec header: its items start here


@dataclass(frozen=True)
class Config:
    """Input sizes and repetitions of one benchmark flavour."""

    name: str
    entries: int  # of the u64 → u64 map
    sparse_gib: float  # the big sparse snapshot (summary, check, TUI)
    small_sparse_gib: float  # the same layout, smaller: peak RSS must not depend on size
    dense_mib: int  # each of the two diffed snapshots (written densely so cmp does real work)
    patches: int  # scattered single-byte differences between them
    runs: int  # timed runs per target (after one untimed, checked run)
    tui_runs: int
    tui_inputs: int = 5  # how many of the inputs the TUI first-paint is measured on
    warmup: bool = True  # one untimed run first (off only for the smoke test, where speed is moot)
    tui_keys: int = 40  # scale of the TUI scroll test (about 3× this many key presses)
    scale_entries: int = 0  # the big random-order map of the scale rows (0: no scale rows)


FULL = Config("full", 1_000_000, 8.0, 1.0, 1024, 1000, 5, 3, scale_entries=20_000_000)
QUICK = Config("quick", 200_000, 8.0, 1.0, 256, 1000, 3, 1)
# For the smoke test: every code path, tiny inputs, one run each.
TINY = Config(
    "tiny", 3_000, 0.05, 0.02, 6, 50, 1, 1, tui_inputs=1, warmup=False, tui_keys=4, scale_entries=4_000
)


@dataclass
class Row:
    """One line of the result table.

    ``ratio`` is figure ÷ reference where the issue states a reference (the native walk, ``cmp -s``,
    the small snapshot's RSS), otherwise figure ÷ limit (the share of the budget used).
    ``passed`` is None for reference rows and for targets that could not be measured.
    """

    target: str
    figure: float | None
    unit: str
    limit: float | None
    limit_text: str
    ratio: float | None
    passed: bool | None
    rss_mb: float | None = None
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def result(self) -> str:
        if self.passed is None:
            return "ref" if self.figure is not None else "n/a"
        return "pass" if self.passed else "FAIL"


@dataclass
class Timing:
    """Wall times of the timed runs and the largest peak RSS among them."""

    times: list[float]
    rss_kb: int
    rc: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def rss_mb(self) -> float:
        return self.rss_kb / 1024


class BenchError(InspectorError):
    """A benchmark step that cannot go on (an input failed its check, a command crashed)."""


_T0 = time.perf_counter()


def _log(message: str) -> None:
    # Progress on stderr (a full run takes minutes); stdout stays the table or the JSON.
    print(f"[bench {time.perf_counter() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


# --- running children -----------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    # Children import this very tree, whatever is installed elsewhere.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    # The command runs in one process here (no SIGBUS supervisor, see inspector/supervise.py): peak
    # RSS is read with wait4, and on this kernel a grandchild's peak does not reach it, so a supervised
    # run would report the idle parent's RSS instead of the work's. The fork itself costs ~1 ms.
    env["STABLE_INSPECT_NO_SUPERVISOR"] = "1"
    return env


def compile_bytecode() -> None:
    """Compile the package once, as any installation does (into its usual ``__pycache__``).

    Without it, an environment with PYTHONDONTWRITEBYTECODE set (this one has it) recompiles every
    module of the package on every run, and each timed command would pay ~0.1 s that no installed tool
    pays. (A PYTHONPYCACHEPREFIX would be worse: it hides the installed libraries' bytecode too.)
    """
    dirs = [str(PROJECT_ROOT / "inspector"), str(PROJECT_ROOT / "snapshots")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], check=False, capture_output=True)


# Peak RSS needs care. Linux keeps a process's RSS high-water mark across fork *and* exec: a child
# forked from this process (tens or hundreds of MB after forging a million-entry map) would report at
# least that much whatever it really used. So children are spawned by a small launcher process that
# is started first and stays small (python -S, a few stdlib modules): the floor is then the
# launcher's own ~10 MB, which only shows for tiny non-Python children (cmp, cat). The launcher also
# takes the wall time, right around posix_spawn and wait4, without this process's IPC in it.
LAUNCHER = r"""
import json, os, sys, time
for line in sys.stdin:
    req = json.loads(line)
    out = os.open(req["stdout"] or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    acts = [(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
    t = time.perf_counter()
    try:
        pid = os.posix_spawnp(req["cmd"][0], req["cmd"], os.environ, file_actions=acts)
    except OSError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        continue
    finally:
        os.close(out)
        os.close(err)
    print(json.dumps({"pid": pid}), flush=True)
    _pid, status, usage = os.wait4(pid, 0)
    dt = time.perf_counter() - t
    print(json.dumps({"spawn": t, "wall": dt, "rss_kb": usage.ru_maxrss, "rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Launcher:
    """The long-lived child that spawns and times every measured process (see LAUNCHER)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-c", LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        self.lock = threading.Lock()

    def run(self, cmd: Sequence[str], stdout: str, stderr: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write(json.dumps({"cmd": list(cmd), "stdout": stdout, "stderr": stderr}) + "\n")
            self.proc.stdin.flush()
            first = json.loads(self.proc.stdout.readline() or "{}")
            if "pid" not in first:
                raise BenchError(f"cannot start {cmd[0]}: {first.get('error', 'launcher died')}")
            # A hung child must not hang the benchmark: kill it after the timeout.
            killer = threading.Timer(timeout, _kill, (first["pid"],))
            killer.start()
            try:
                done = json.loads(self.proc.stdout.readline() or "{}")
            finally:
                killer.cancel()
        if "rc" not in done:
            raise BenchError(f"the launcher died while running {cmd[0]}")
        return done

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except OSError:
        pass


_launcher: Launcher | None = None


def launcher() -> Launcher:
    global _launcher
    if _launcher is None:
        _launcher = Launcher()
    return _launcher


def close_launcher() -> None:
    global _launcher
    if _launcher is not None:
        _launcher.close()
        _launcher = None


@dataclass
class ChildRun:
    spawn: float  # perf_counter when it was spawned (system-wide monotonic clock on Linux)
    wall: float
    rss_kb: int  # its own peak RSS
    rc: int
    stderr: str  # the tail, for error messages


def run_child(cmd: Sequence[str], *, stdout: Path | None = None, timeout: float = 600.0) -> ChildRun:
    """Run one process through the launcher; stdout goes to ``stdout`` or /dev/null."""
    with tempfile.NamedTemporaryFile(prefix="bench-err-") as err:
        done = launcher().run(cmd, str(stdout) if stdout else "", err.name, timeout)
        tail = Path(err.name).read_bytes()[-2000:].decode("utf-8", "replace").strip()
    return ChildRun(done["spawn"], done["wall"], int(done["rss_kb"]), int(done["rc"]), tail)


def time_command(cmd: Sequence[str], runs: int, *, ok: Sequence[int] = (0,), what: str = "") -> Timing:
    times: list[float] = []
    rss = 0
    rc = 0
    for _ in range(runs):
        r = run_child(cmd)
        rc = r.rc
        if rc not in ok:
            raise BenchError(f"{what or ' '.join(cmd)} exited with {rc}: {r.stderr.splitlines()[-1:] or ''}")
        times.append(r.wall)
        rss = max(rss, r.rss_kb)
    return Timing(times, rss, rc)


def inspector_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "inspector", *args]


def command_available(name: str) -> bool:
    """Whether ``stable-inspect NAME`` has its module yet (commands land while this is developed)."""
    try:
        return importlib.util.find_spec(f"inspector.commands.{name}") is not None
    except ImportError:
        return False


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
    from snapshots.forge_btree_grow import grow_u64_map

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
    from snapshots.forge import RawImage

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
    from snapshots.forge import MemoryManagerImage, vec

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
    from snapshots.forge import MemoryManagerImage, cell, forge_btreemap, log, minheap, u64_be, vec

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
    from snapshots.forge import MemoryManagerImage, cell

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


# --- the TUI, driven in a child ---------------------------------------------------------------------------

# Runs in a child (``python -c``) so this module never imports Textual. It only uses the app factory
# and the widgets' duck-typed Tree API, so it keeps working while the TUI evolves; anything missing
# comes back as {"error": …}. Times are perf_counter values, which on Linux are CLOCK_MONOTONIC and so
# comparable with the parent's. First paint = the app receiving ``Ready``, which Textual posts right
# after the first compositor refresh of the first screen.
TUI_PROBE = r"""
import asyncio, json, statistics, sys, time
T0 = time.perf_counter()
mode, path, keys = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = {"t0": T0}
def emit():
    print(json.dumps(out), flush=True)
try:
    from inspector.tui.app import create_app
except Exception as exc:
    out["error"] = f"inspector.tui.app.create_app unavailable: {type(exc).__name__}: {exc}"
    emit(); sys.exit(0)
out["imported"] = time.perf_counter()
app = create_app(path)
out["created"] = time.perf_counter()
seen = {}
def hook(msg):
    seen.setdefault(type(msg).__name__, time.perf_counter())
gaps = []
async def heartbeat():
    # The longest gap between 5 ms ticks is the longest time the UI could not react to anything.
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.005)
        gaps.append(time.perf_counter() - t - 0.005)
def find_tree():
    for w in app.screen.walk_children():
        if hasattr(w, "cursor_node") and hasattr(w, "root") and hasattr(w, "move_cursor"):
            return w
    return None
def tree_nodes(root):
    stack = [root]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.children)
def loaded(node):
    kids = list(node.children)
    return bool(kids) and kids[0].data is not None
async def press_until_loaded(pilot, node, lat, limit=60.0):
    t = time.perf_counter()
    while not loaded(node) and time.perf_counter() - t < limit:
        s = time.perf_counter()
        await pilot.press("down")
        lat.append(time.perf_counter() - s)
    return time.perf_counter() - t
async def scroll(pilot):
    tree = find_tree()
    if tree is None:
        out["scroll_error"] = "no tree widget on the first screen"; return
    cands = [n for n in tree_nodes(tree.root) if getattr(n.data, "kind", None) == "entries"]
    if not cands:
        out["scroll_error"] = "no 'entries' node on the first screen"; return
    node = max(cands, key=lambda n: getattr(n.data, "child_count_hint", 0) or 0)
    out["entries_node"] = str(getattr(node.data, "name", ""))
    lat = []
    gaps.clear()
    tree.move_cursor(node); await pilot.pause()
    node.expand()
    out["pages_load_s"] = await press_until_loaded(pilot, node, lat)
    for key in ["down"] * (keys // 2) + ["pagedown"] * keys + ["end"] + ["up"] * (keys // 4):
        s = time.perf_counter(); await pilot.press(key); lat.append(time.perf_counter() - s)
    pages = [c for c in node.children if c.data is not None]
    out["pages"] = len(pages)
    last = pages[-1]
    load_s = 0.0
    while True:  # down to the last page of entries (a long map groups its pages)
        tree.move_cursor(last); await pilot.pause()
        last.expand()
        load_s += await press_until_loaded(pilot, last, lat)
        kids = [c for c in last.children if c.data is not None]
        if not kids or getattr(kids[-1].data, "kind", None) != "group":
            break
        last = kids[-1]
    out["deep_page"] = str(getattr(last.data, "name", ""))
    out["deep_page_load_s"] = load_s
    for key in ["down"] * keys + ["pagedown"] * (keys // 2):
        s = time.perf_counter(); await pilot.press(key); lat.append(time.perf_counter() - s)
    out["keys"] = len(lat)
    out["key_median_s"] = statistics.median(lat)
    out["key_max_s"] = max(lat)
    out["stall_max_s"] = max(gaps, default=0.0)
async def main():
    async with app.run_test(size=(160, 48), message_hook=hook) as pilot:
        hb = asyncio.create_task(heartbeat())
        await pilot.pause()
        out["settled"] = time.perf_counter()
        out["mount"] = seen.get("Mount")
        out["ready"] = seen.get("Ready")
        if mode == "scroll":
            try:
                await scroll(pilot)
            except Exception as exc:
                out["scroll_error"] = f"{type(exc).__name__}: {exc}"
        hb.cancel()
asyncio.run(main())
emit()
"""


def run_tui_probe(
    mode: str, path: Path, workdir: Path, keys: int = 40, timeout: float = 300.0
) -> tuple[dict[str, Any], ChildRun]:
    """(probe JSON, the child's run) of one TUI probe; ``keys`` scales the scroll test's key presses."""
    out = workdir / "tui-probe.json"
    cmd = [sys.executable, "-c", TUI_PROBE, mode, str(path), str(keys)]
    try:
        r = run_child(cmd, stdout=out, timeout=timeout)
        text = out.read_text(encoding="utf-8", errors="replace").strip() if out.exists() else ""
    finally:
        out.unlink(missing_ok=True)
    if r.rc != 0 or not text:
        return {"error": f"TUI probe exited with {r.rc}: {r.stderr.splitlines()[-1:] or ''}"}, r
    try:
        return json.loads(text.splitlines()[-1]), r
    except ValueError:
        return {"error": f"TUI probe printed {text[-200:]!r}"}, r


# --- targets --------------------------------------------------------------------------------------------


def _fmt_s(x: float) -> str:
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def timed_row(
    target: str,
    timing: Timing,
    *,
    limit: float,
    limit_text: str,
    reference: float | None = None,
    note: str = "",
) -> Row:
    fig = timing.median
    return Row(
        target=target,
        figure=fig,
        unit="s",
        limit=limit,
        limit_text=limit_text,
        ratio=fig / (reference if reference else limit),
        passed=fig <= limit,
        rss_mb=timing.rss_mb,
        samples=timing.times,
        note=note,
    )


def na_row(target: str, limit_text: str, why: str) -> Row:
    return Row(target, None, "s", None, limit_text, None, None, note=why)


class Bench:
    def __init__(self, cfg: Config, inputs: Inputs, workdir: Path) -> None:
        self.cfg = cfg
        self.inputs = inputs
        self.workdir = workdir
        self.rows: list[Row] = []
        self.deep_timings: dict[str, Timing] = {}  # summary --deep of the map, by "raw" / "MemoryManager"

    def _time(self, cmd: Sequence[str], *, ok: Sequence[int] = (0,), what: str = "") -> Timing:
        # The untimed first run warms the page cache and bytecode caches, as for a user's second try.
        if self.cfg.warmup:
            run_child(cmd)
        return time_command(cmd, self.cfg.runs, ok=ok, what=what)

    def _guard(self, target: str, limit_text: str, fn: Callable[[], list[Row]]) -> None:
        _log(f"{target} …")
        try:
            rows = fn()
        except BenchError as exc:
            rows = [Row(target, None, "s", None, limit_text, None, False, note=f"error: {exc}")]
        except Exception as exc:  # noqa: BLE001 - one broken target (a command in flux) must not end the run
            rows = [
                Row(
                    target,
                    None,
                    "s",
                    None,
                    limit_text,
                    None,
                    False,
                    note=f"error: {type(exc).__name__}: {exc}",
                )
            ]
        self.rows.extend(rows)
        for r in rows:
            fig = "—" if r.figure is None else f"{r.figure:.3f} {r.unit}"
            _log(f"  {r.target}: {fig} [{r.result}]")

    # -- summary --

    def summary(self) -> list[Row]:
        inp, cfg = self.inputs, self.cfg
        big = self._time(inspector_cmd("summary", str(inp.sparse_big)), what="summary")
        small = self._time(inspector_cmd("summary", str(inp.sparse_small)), what="summary")
        size = f"{cfg.sparse_gib:g} GiB sparse, 16 memories"
        return [
            timed_row(f"summary ({size})", big, limit=SUMMARY_LIMIT_S, limit_text=f"≤ {SUMMARY_LIMIT_S:g} s"),
            Row(
                f"summary peak RSS ({size})",
                big.rss_mb,
                "MB",
                SUMMARY_RSS_LIMIT_MB,
                f"≤ {SUMMARY_RSS_LIMIT_MB:g} MB",
                big.rss_mb / SUMMARY_RSS_LIMIT_MB,
                big.rss_mb <= SUMMARY_RSS_LIMIT_MB,
                big.rss_mb,
                note=f"{small.rss_mb:.0f} MB at {cfg.small_sparse_gib:g} GiB",
            ),
        ]

    def deep(self) -> list[Row]:
        inp = self.inputs
        limit = DEEP_LIMIT_X * NATIVE_WALK_S
        rows = []
        for label, path in (("MemoryManager", inp.map_mm), ("raw", inp.map_raw)):
            check_map_input(path, inp.map_count, inp.map_sha256)
            t = self._time(inspector_cmd("summary", str(path), "--deep", "--json"), what="summary --deep")
            self.deep_timings[label] = t
            rows.append(
                timed_row(
                    f"summary --deep, {inp.map_count:,}-entry u64 map ({label})",
                    t,
                    limit=limit,
                    limit_text=f"≤ {DEEP_LIMIT_X:g}× native ({limit:.2f} s)",
                    reference=NATIVE_WALK_S,
                    note="count and entries_sha256 match the forge",
                )
            )
        return rows

    def jsonl(self) -> list[Row]:
        inp = self.inputs
        limit = JSONL_LIMIT_X * NATIVE_WALK_S
        check_jsonl_output(inp.map_mm, self.workdir, inp.map_count, inp.map_sha256)
        cmd = inspector_cmd("entries", str(inp.map_mm), "--memory", "1", "--format", "jsonl")
        t = time_command(cmd, self.cfg.runs, what="entries --format jsonl")
        return [
            timed_row(
                f"entries --format jsonl, {inp.map_count:,} entries",
                t,
                limit=limit,
                limit_text=f"≤ {JSONL_LIMIT_X:g}× native ({limit:.2f} s)",
                reference=NATIVE_WALK_S,
                note="to /dev/null; an untimed export checked against count and entries_sha256",
            )
        ]

    # -- diff --

    def diff(self) -> list[Row]:
        inp, cfg = self.inputs, self.cfg
        a, a2, b = str(inp.dense_a), str(inp.dense_a2), str(inp.dense_b)
        size = inp.dense_a.stat().st_size
        label = f"{size / GiB:.2f} GiB" if size >= GiB // 2 else f"{size / MiB:.0f} MiB"
        engine_code = (
            "import sys\nfrom inspector.byte_diff import diff_files\n"
            "r = diff_files(sys.argv[1], sys.argv[2])\nprint(r.count, r.total_bytes)\n"
        )
        engine = [sys.executable, "-c", engine_code, a, b]
        out = subprocess.run(engine, capture_output=True, text=True, env=_child_env(), check=False)
        if out.stdout.split() != [str(cfg.patches), str(cfg.patches)]:
            raise BenchError(f"byte diff found {out.stdout.strip()!r}, expected {cfg.patches} 1-byte ranges")
        has_cli = command_available("diff")
        cli = inspector_cmd("diff", a, b, "--json")
        if has_cli:
            self._check_diff_cli(cli)
        # Everything is read once so every figure comes from the page cache, as the reference assumes.
        run_child(["cat", a, a2, b], timeout=1200.0)
        # Interleaved, not one command after the other: on a shared machine the load drifts, and the
        # diff/cmp ratio must compare like with like.
        cmds = {"cmp": ["cmp", "-s", a, a2], "cat": ["cat", a, a2], "engine": engine}
        if has_cli:
            cmds["cli"] = cli
        runs: dict[str, list[ChildRun]] = {k: [] for k in cmds}
        for _ in range(cfg.runs):
            for key, cmd in cmds.items():
                r = run_child(cmd)
                if r.rc not in (0, 1):
                    raise BenchError(f"{' '.join(cmd[:3])} exited with {r.rc}: {r.stderr[-300:]}")
                runs[key].append(r)
        t = {k: Timing([r.wall for r in v], max(r.rss_kb for r in v), 0) for k, v in runs.items()}
        cmp_s = t["cmp"].median

        def ref(target: str, timing: Timing, note: str) -> Row:
            return Row(
                target, timing.median, "s", None, "", None, None, timing.rss_mb, timing.times, note=note
            )

        rows = [
            ref(
                f"reference: cmp -s, two identical {label} files",
                t["cmp"],
                f"{2 * size / cmp_s / 1e9:.1f} GB/s; measured interleaved with the diff",
            ),
            ref(
                "reference: cat of the same two files",
                t["cat"],
                f"{2 * size / t['cat'].median / 1e9:.1f} GB/s",
            ),
        ]
        limit = DIFF_LIMIT_X * cmp_s
        limit_text = f"≤ {DIFF_LIMIT_X:g}× cmp -s ({limit:.3f} s)"
        engine_target = f"diff engine alone (byte_diff.diff_files), {label}, {cfg.patches:,} bytes differ"
        engine_note = f"a process that only byte-diffs: {t['engine'].median / cmp_s:.2f}× cmp; ranges checked"
        if has_cli:
            rows.append(ref(engine_target, t["engine"], engine_note))
            rows.append(
                timed_row(
                    f"diff --json, {label} snapshots, {cfg.patches:,} scattered bytes differ",
                    t["cli"],
                    limit=limit,
                    limit_text=limit_text,
                    reference=cmp_s,
                    note="whole command: start-up, both analyses, byte diff, layout/entry attribution, JSON",
                )
            )
        else:
            rows.append(
                timed_row(
                    engine_target,
                    t["engine"],
                    limit=limit,
                    limit_text=limit_text,
                    reference=cmp_s,
                    note="the diff command is not in the tree yet: " + engine_note,
                )
            )
        return rows

    def _check_diff_cli(self, cmd: Sequence[str]) -> None:
        out = subprocess.run(list(cmd), capture_output=True, text=True, env=_child_env(), check=False)
        if out.returncode not in (0, 1):
            raise BenchError(f"diff --json exited with {out.returncode}: {out.stderr.strip()[-300:]}")
        try:
            report = json.loads(out.stdout)
        except ValueError as exc:
            raise BenchError(f"diff --json did not print JSON: {exc}") from None
        changed = report.get("changed_bytes") if isinstance(report, dict) else None
        if changed is not None and changed != self.cfg.patches:
            raise BenchError(
                f"diff --json reports {changed} changed bytes, the forge patched {self.cfg.patches}"
            )

    # -- check --

    def check(self) -> list[Row]:
        inp, cfg = self.inputs, self.cfg
        if command_available("check"):

            def cmd(p: Path) -> list[str]:
                return inspector_cmd("check", str(p), "--json")

            how = "check --json (orphan scan on)"
            ok: Sequence[int] = (0, 1)
        else:
            # Until the command exists: what it is specified to do, load with forensics (which runs the
            # orphan scan) and the validated walk of every structure.
            code = (
                "import sys\nfrom inspector.session import load\n"
                "s = load(sys.argv[1])\ns.analysis.deep()\nprint(len(s.analysis.all_findings()))\n"
            )

            def cmd(p: Path) -> list[str]:
                return [sys.executable, "-c", code, str(p)]

            how = "check is not in the tree yet: load + forensics orphan scan + deep walks, as a process"
            ok = (0,)
        big = self._time(cmd(inp.sparse_big), ok=ok, what="check")
        small = self._time(cmd(inp.sparse_small), ok=ok, what="check")
        name = f"check ({cfg.sparse_gib:g} GiB sparse, 16 memories)"
        flat = big.rss_mb / small.rss_mb if small.rss_kb else float("inf")
        return [
            timed_row(name, big, limit=CHECK_LIMIT_S, limit_text=f"≤ {CHECK_LIMIT_S:g} s", note=how),
            Row(
                f"check peak RSS, {cfg.sparse_gib:g} GiB vs {cfg.small_sparse_gib:g} GiB",
                big.rss_mb,
                "MB",
                small.rss_mb * FLAT_RSS_LIMIT_X,
                f"flat: ≤ {FLAT_RSS_LIMIT_X:g}× the {cfg.small_sparse_gib:g} GiB run",
                flat,
                flat <= FLAT_RSS_LIMIT_X,
                big.rss_mb,
                note=f"{small.rss_mb:.0f} MB at {cfg.small_sparse_gib:g} GiB",
            ),
        ]

    # -- no Textual on the CLI path --

    def no_textual(self) -> list[Row]:
        inp = self.inputs
        code = (
            "import contextlib, io, json, sys\n"
            "from inspector.cli import main\n"
            "sink = io.StringIO()\n"
            "with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):\n"
            "    rc = main(sys.argv[1:])\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')[:5]))\n"
        )
        commands: list[list[str]] = [
            ["summary", str(inp.sparse_big)],
            ["summary", str(inp.map_mm), "--deep", "--json"],
            ["entries", str(inp.map_mm), "--memory", "1", "--format", "jsonl", "--limit", "100"],
            [
                "extract",
                str(inp.sparse_small),
                "--memory",
                "3",
                "-o",
                str(self.workdir / "extract.bin"),
                "--force",
            ],
        ]
        if command_available("check"):
            commands.append(["check", str(inp.sparse_small), "--json"])
        if command_available("diff"):
            commands.append(["diff", str(inp.map_mm), str(inp.map_raw), "--json"])
        loaded: list[str] = []
        for args in commands:
            out = subprocess.run(
                [sys.executable, "-c", code, *args],
                capture_output=True,
                text=True,
                env=_child_env(),
                check=False,
            )
            if out.returncode != 0:
                raise BenchError(f"{args[0]} failed: {out.stderr.strip()[-300:]}")
            mods = json.loads(out.stdout.strip().splitlines()[-1])
            if mods:
                loaded.append(f"{args[0]}: {', '.join(mods)}")
        (self.workdir / "extract.bin").unlink(missing_ok=True)
        names = ", ".join(dict.fromkeys(a[0] for a in commands))
        return [
            Row(
                "CLI path never imports textual",
                float(len(loaded)),
                "cmds",
                0.0,
                "0 commands",
                None,
                not loaded,
                note="; ".join(loaded) or f"checked sys.modules after: {names}",
            )
        ]

    # -- TUI --

    def _sparse_8tib(self) -> Path | None:
        """The small sparse snapshot extended to 8 TiB of holes (no disk used), as a user's truncate;
        None where the filesystem cannot hold such a file."""
        path = self.workdir / "sparse-8tib.bin"
        try:
            if not path.exists():
                shutil.copyfile(self.inputs.sparse_small, path)
                os.truncate(path, 8 << 40)
        except OSError:
            path.unlink(missing_ok=True)
            return None
        return path

    def tui(self) -> list[Row]:
        inp, cfg = self.inputs, self.cfg
        candidates: list[tuple[str, Callable[[], Path | None]]] = [
            (f"{cfg.sparse_gib:g} GiB sparse", lambda: inp.sparse_big),
            (f"{inp.map_count:,}-entry map", lambda: inp.map_mm),
            ("map on raw memory", lambda: inp.map_raw),
            (f"{inp.dense_a.stat().st_size / MiB:,.0f} MiB dense", lambda: inp.dense_a),
            ("8 TiB sparse, truncate -s 8T", self._sparse_8tib),
        ]
        targets = [(label, p) for label, make in candidates[: cfg.tui_inputs] if (p := make()) is not None]
        rows: list[Row] = []
        limit_text = f"≤ {TUI_PAINT_LIMIT_S:g} s"
        for label, path in targets:
            paints: list[float] = []
            rss = 0
            detail = ""
            warm = 1 if cfg.warmup else 0
            failed = ""
            for _ in range(cfg.tui_runs + warm):  # a first run only warms caches
                data, child = run_tui_probe("paint", path, self.workdir)
                if "error" in data:
                    failed = data["error"]
                    break
                ready = data.get("ready") or data["settled"]
                paints.append(ready - child.spawn)
                rss = max(rss, child.rss_kb)
                detail = (
                    f"import {data['imported'] - data['t0']:.2f} s, load {data['created'] - data['imported']:.2f} s, "
                    f"app → first paint {ready - data['created']:.2f} s"
                )
            if failed:
                rows.append(na_row(f"TUI first screen ({label})", limit_text, failed))
                continue
            timing = Timing(paints[warm:], rss, 0)
            rows.append(
                timed_row(
                    f"TUI first screen ({label})",
                    timing,
                    limit=TUI_PAINT_LIMIT_S,
                    limit_text=limit_text,
                    note=f"process start → first paint (Ready); {detail}",
                )
            )
        data, child = run_tui_probe("scroll", inp.map_mm, self.workdir, keys=cfg.tui_keys)
        rss = child.rss_kb
        name = f"TUI scroll of the {inp.map_count:,}-entry map: longest stall"
        why = data.get("error") or data.get("scroll_error")
        if why:
            rows.append(na_row(name, f"≤ {TUI_STALL_LIMIT_S:g} s", why))
            return rows
        stall = float(data["stall_max_s"])
        rows.append(
            Row(
                name,
                stall,
                "s",
                TUI_STALL_LIMIT_S,
                f"≤ {TUI_STALL_LIMIT_S:g} s event-loop block",
                stall / TUI_STALL_LIMIT_S,
                stall <= TUI_STALL_LIMIT_S,
                rss / 1024,
                samples=[stall],
                note=(
                    f"{data['keys']} keys over {data['pages']} pages; pilot round trip per key: median "
                    f"{data['key_median_s'] * 1000:.0f} ms, max {data['key_max_s'] * 1000:.0f} ms; "
                    f"'{data['deep_page']}' built in {data['deep_page_load_s']:.2f} s (worker)"
                ),
            )
        )
        return rows

    # -- issue 16: hostile sizes --

    def hostile(self) -> list[Row]:
        """A diff where every other byte differs, a 15.7 MB metadata value, a TUI on 8 TiB of holes."""
        cfg, work = self.cfg, self.workdir
        mib = min(HOSTILE_DIFF_MIB, cfg.dense_mib)
        zero, pattern = work / f"zero-{mib}mib.bin", work / f"0001-{mib}mib.bin"
        for path, unit in ((zero, b"\x00\x00"), (pattern, b"\x00\x01")):
            if not path.exists() or path.stat().st_size != mib * MiB:
                with open(path, "wb") as fh:
                    for _ in range(mib):
                        fh.write(unit * (MiB // 2))
        rows = []
        what = f"{mib} MiB all-zero vs 00 01 repeated ({mib * MiB // 2:,} changed ranges)"
        for flag in ("--json", "--report"):
            timing = self._time(inspector_cmd("diff", str(zero), str(pattern), flag), what="diff")
            rows.append(
                timed_row(
                    f"diff {flag}, {what}",
                    timing,
                    limit=HOSTILE_DIFF_LIMIT_S,
                    limit_text=f"≤ {HOSTILE_DIFF_LIMIT_S:g} s",
                    note="ranges merged into runs past the cap; totals exact (issue: 240 s / killed at 64 MiB)",
                )
            )
        snapdir = work / "long-metadata"
        if not snapdir.exists():
            snapdir.mkdir()
            shutil.copyfile(self.inputs.sparse_small, snapdir / "stable_memory.bin")
            size = (snapdir / "stable_memory.bin").stat().st_size
            meta = {"stable_memory_size": size, "long_value": "é" + "x" * 15_700_000}
            (snapdir / "metadata.json").write_text(json.dumps(meta))
        timing = self._time(inspector_cmd("summary", str(snapdir)), what="summary")
        rows.append(
            timed_row(
                "summary, a 15.7 MB metadata.json value",
                timing,
                limit=SUMMARY_LIMIT_S,
                limit_text=f"≤ {SUMMARY_LIMIT_S:g} s",
                note="displayed strings capped at 4 KiB (issue: 129 s, 259 MB)",
            )
        )
        return rows

    def run_all(self) -> list[Row]:
        self._guard("summary", f"≤ {SUMMARY_LIMIT_S:g} s", self.summary)
        self._guard("summary --deep", "", self.deep)
        self._guard("entries --format jsonl", "", self.jsonl)
        self._guard("diff", "", self.diff)
        self._guard("check", f"≤ {CHECK_LIMIT_S:g} s", self.check)
        self._guard("no textual on the CLI path", "0 commands", self.no_textual)
        self._guard("TUI", f"≤ {TUI_PAINT_LIMIT_S:g} s", self.tui)
        self._guard("structure-filled diff pairs", "", self.structure_diff)
        if self.cfg.scale_entries:
            self._guard(f"{self.cfg.scale_entries:,}-entry map", "", self.scale)
        if self.inputs_dir is not None:
            self._guard(f"real inputs in {self.inputs_dir}", "", self.real_inputs)
        self._guard("hostile sizes", "", self.hostile)
        return self.rows

    # -- issue 13: library-shaped inputs (inspector.bench_real) --

    inputs_dir: Path | None = None

    def structure_diff(self) -> list[Row]:
        from inspector.bench_real import structure_diff_rows

        return structure_diff_rows(self.workdir, self.cfg.dense_mib, self.cfg.patches, self.cfg.runs)

    def scale(self) -> list[Row]:
        from inspector.bench_scale import scale_rows

        return scale_rows(self)

    def real_inputs(self) -> list[Row]:
        from inspector.bench_real import real_input_rows

        assert self.inputs_dir is not None
        return real_input_rows(self.inputs_dir, self.workdir, self.cfg.runs)


# --- report ---------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1)
    except (ValueError, OSError):
        pass
    floor = run_child(["true"]).rss_kb / 1024
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "rss_floor_mb": round(floor, 1),
        "load_average": load,
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def figure_text(r: Row) -> str:
    if r.figure is None:
        return "—"
    if r.unit == "s":
        text = _fmt_s(r.figure)
        if len(r.samples) > 1:
            text += f" ({min(r.samples):.3f}–{max(r.samples):.3f})"
        return text
    if r.unit == "MB":
        return f"{r.figure:.0f} MB"
    return f"{r.figure:g} {r.unit}"


def ratio_text(r: Row) -> str:
    return "" if r.ratio is None else f"{r.ratio:.2f}×"


def rss_text(r: Row) -> str:
    return "" if r.rss_mb is None else f"{r.rss_mb:.0f} MB"


def print_table(rows: list[Row], cfg: Config, machine: dict[str, Any], elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"stable-inspect bench ({cfg.name}: median of {cfg.runs} runs, min–max in brackets)"
    if cfg != FULL:
        # The limits are the issue's, stated for the full-size inputs.
        title += " — smaller inputs than the limits assume: indicative only"
    table = Table(title=title, title_justify="left")
    for col, kw in (
        ("target", {}),
        ("figure", {"justify": "right"}),
        ("limit", {}),
        ("ratio", {"justify": "right"}),
        ("result", {}),
        ("peak RSS", {"justify": "right"}),
        ("note", {"style": "dim", "overflow": "fold"}),
    ):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    style = {"pass": "green", "FAIL": "bold red", "n/a": "yellow", "ref": "dim"}
    for r in rows:
        table.add_row(
            r.target,
            figure_text(r),
            r.limit_text,
            ratio_text(r),
            f"[{style[r.result]}]{r.result}[/]",
            rss_text(r),
            r.note,
        )
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 200)  # a log file gets whole rows, not 80 folded columns
    console.print(table)
    console.print(
        f"[dim]ratio: figure ÷ reference (native walk 0.2 s, cmp -s, the smaller snapshot) where there is "
        f"one, else figure ÷ limit. Peak RSS is each process's own; {machine['rss_floor_mb']:.0f} MB is the "
        f"floor any child reports (the launcher's size). {machine['cores']} cores, {machine['cpu']}, "
        f"Python {machine['python']}; load average {machine.get('load_average')} before, "
        f"{machine.get('load_average_end')} after; {elapsed:.0f} s in all.[/]"
    )


def markdown_table(rows: list[Row]) -> str:
    """The table as GitHub markdown (for the README)."""
    out = [
        "| target | figure | limit | ratio | result | peak RSS | note |",
        "| --- | ---: | --- | ---: | --- | ---: | --- |",
    ]
    for r in rows:
        cells = [r.target, figure_text(r), r.limit_text, ratio_text(r), r.result, rss_text(r), r.note]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def run_benchmark(cfg: Config, workdir: Path, inputs_dir: Path | None = None) -> dict[str, Any]:
    """Build (or reuse) the inputs in ``workdir``, time every target, return the JSON-able report."""
    start = time.perf_counter()
    machine = machine_info()
    workdir.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    inputs = prepare_inputs(cfg, workdir)
    bench = Bench(cfg, inputs, workdir)
    bench.inputs_dir = inputs_dir
    rows = bench.run_all()
    elapsed = time.perf_counter() - start
    measured = [r for r in rows if r.passed is not None]
    try:
        # Other work on the machine skews every figure: the load before and after says how much.
        machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return {
        "config": asdict(cfg),
        "machine": machine,
        "elapsed_s": round(elapsed, 1),
        "all_passed": all(r.passed for r in measured),
        "rows": [{**asdict(r), "result": r.result} for r in rows],
    }


def _inside_project(path: Path) -> bool:
    try:
        path.resolve().relative_to(PROJECT_ROOT)
    except ValueError:
        return False
    return True


def rows_from_report(report: dict[str, Any]) -> list[Row]:
    return [Row(**{k: v for k, v in r.items() if k != "result"}) for r in report["rows"]]


def render(report: dict[str, Any], args: argparse.Namespace) -> None:
    rows = rows_from_report(report)
    if args.json:
        print(json.dumps(report, indent=2))
    elif getattr(args, "markdown", False):
        print(markdown_table(rows))
    else:
        print_table(rows, Config(**report["config"]), report["machine"], report["elapsed_s"])


def run(args: argparse.Namespace) -> int:
    """Entry point of ``stable-inspect bench``; 0 when every measured target holds, 1 otherwise."""
    saved = getattr(args, "from_json", None)
    if saved:
        # Re-render a saved --json report (e.g. as markdown for the README) without re-running it.
        report = json.loads(Path(saved).read_text())
        render(report, args)
        return 0 if report["all_passed"] else 1
    cfg = TINY if getattr(args, "tiny", False) else QUICK if args.quick else FULL
    if args.workdir:
        workdir = Path(args.workdir)
        if _inside_project(workdir):
            print(
                f"stable-inspect bench: --workdir {workdir}: inputs are GiB-sized; put them outside the project",
                file=sys.stderr,
            )
            return 2
        cleanup = False
    else:
        workdir = Path(tempfile.mkdtemp(prefix="stable-inspect-bench-"))
        cleanup = True
    try:
        inputs_dir = getattr(args, "inputs", None)
        report = run_benchmark(cfg, workdir, Path(inputs_dir) if inputs_dir else None)
    except BenchError as exc:
        print(f"stable-inspect bench: {exc}", file=sys.stderr)
        return 2
    finally:
        close_launcher()
        if cleanup:
            shutil.rmtree(workdir, ignore_errors=True)
    render(report, args)
    return 0 if report["all_passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inspector.bench", description="Run the performance benchmark."
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quick", action="store_true", help="smaller inputs, fewer runs")
    p.add_argument(
        "--workdir", default=None, help="where to build (and keep) the inputs; default: a temp dir"
    )
    p.add_argument("--markdown", action="store_true", help="print the table as markdown (for the README)")
    p.add_argument("--from-json", metavar="FILE", help="render a saved --json report instead of running")
    p.add_argument(
        "--inputs", metavar="DIR", help="also time real snapshots in DIR that have an expected.json"
    )
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke tests only
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
