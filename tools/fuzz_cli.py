"""Outside fuzz harness: runs the real ``stable-inspect`` CLI, as subprocesses, on mutated snapshots.

Every run copies a seed snapshot (the real-library fixtures in ``../shared/fixtures`` and the shipped
samples), applies one mutation, and runs a few commands on the result with a wall-clock timeout. An
invocation fails when it

* prints a Python traceback or "internal error" on stderr,
* does not finish within ``--timeout`` seconds (a hang, or unbounded work),
* dies from a signal (SIGBUS, SIGSEGV, the OOM killer) or exits with a status other than 0, 1 or 2,
* exits with status 2 without saying why in exactly one line on stderr.

Mutations are aimed where the format is fragile, at the headers the inspector itself locates in the
pristine seed (MemoryManager header and bucket table, BTreeMap/allocator headers, node, chunk and
overflow-page headers, child and overflow pointers, free-list links, Cell/Vec/MinHeap/Log headers, Candid
values and the ``stable_save`` message), plus blind byte flips, splices, zeroed ranges and truncation.
A header mutation that leaves ``summary --deep --json`` identical to the pristine seed's (same findings,
same structures) is counted as *unreported*: informational here, asserted in ``tests/test_fuzz*.py``.

    python tools/fuzz_cli.py --runs 2000 [--seed 1] [--jobs N] [--timeout 20] [--keep-failures DIR]
        [--hostile 40]

``--hostile N`` adds issue 16's round (``tools/fuzz_hostile.py``): snapshot folders whose metadata.json
has hostile keys and values (no raw control character may reach stdout or stderr), schema files with
invalid fields, every kind of ``-o`` target (devices, FIFOs, links, directories, the input: none may be
replaced) and a snapshot that shrinks while it is read (no signal death, one line and exit 2).

The target catalogue (``find_targets``, ``TARGET_MUTATORS``) is shared with the hypothesis tests, so both
mutate the same places with the same kinds of invalid values.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURES = ROOT.parent / "shared" / "fixtures"
SAMPLES = ROOT / "snapshots" / "samples"
SNAPSHOT_SUFFIXES = (".bin", ".dump", ".golden")
# Files of a snapshot directory that are not stable memory.
NOT_STABLE_MEMORY = {"wasm_memory.bin", "wasm_module.bin"}
KNOWN_MAGICS = {b"MGR", b"BTR", b"BTA", b"CHK", b"BTN", b"NOF", b"SCL", b"SVC", b"SMH", b"GLI", b"GLD"}
ALLOWED_STATUS = (0, 1, 2)
# How many nodes / overflow pages / free chunks / entries per structure become targets: enough to hit
# the root, inner levels and leaves of the fixtures without making the catalogue huge.
MAX_NODES = 24
MAX_OVERFLOWS = 4
MAX_FREE = 6
MAX_VALUES = 3


# --- the target catalogue ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One header field (or Candid byte run) in a snapshot, at a physical offset.

    ``role`` picks the invalid values written there (see ``TARGET_MUTATORS``); ``structure`` is the
    structure kind the field belongs to ("memory_manager" for page 0) and ``memory_id`` its memory.
    ``must_report`` says whether every mutation of this target is a detectable corruption (a magic, a
    version, a count out of range…), as opposed to data whose change may look legitimate.
    """

    name: str
    structure: str
    memory_id: int | str | None
    offset: int
    size: int
    role: str
    must_report: bool = True
    context: dict[str, int] = field(default_factory=dict, compare=False, hash=False)


def _virtual_field(mem: Any, vstart: int, size: int) -> int | None:
    """Physical offset of virtual [vstart, vstart+size) when it is contiguous in the file, else None."""
    try:
        ranges = mem.physical_ranges(vstart, size)
    except Exception:
        return None
    if len(ranges) != 1 or ranges[0][1] - ranges[0][0] != size:
        return None
    return int(ranges[0][0])


def _add(
    out: list[Target],
    mem: Any,
    name: str,
    structure: str,
    memory_id: Any,
    vstart: int,
    size: int,
    role: str,
    must_report: bool = True,
    **context: int,
) -> None:
    phys = _virtual_field(mem, vstart, size)
    if phys is not None:
        mid = memory_id[0] if isinstance(memory_id, list) else memory_id
        out.append(Target(name, structure, mid, phys, size, role, must_report, dict(context)))


def _mm_targets(analysis: Any, out: list[Target]) -> None:
    from inspector.layouts import BUCKET_TABLE_OFFSET, UNALLOCATED_BUCKET

    mm = analysis.mm
    if not mm.present or getattr(mm, "reconstructed", False):
        return
    phys = analysis.snapshot.memory
    for name, off, size, role in (
        ("mm.magic", 0, 3, "magic"),
        ("mm.layout_version", 3, 1, "mm_version"),
        ("mm.num_allocated_buckets", 4, 2, "mm_num_buckets"),
        ("mm.bucket_size_in_pages", 6, 2, "mm_bucket_size"),
        ("mm.reserved", 8, 32, "nonzero"),
    ):
        _add(out, phys, name, "memory_manager", None, off, size, role)
    for m in mm.memories[:8]:
        _add(out, phys, f"mm.size[{m.id}]", "memory_manager", m.id, 40 + 8 * m.id, 8, "mm_size")
    owners = mm.bucket_owners
    for b, owner in enumerate(owners[:16]):
        if owner != UNALLOCATED_BUCKET:
            _add(out, phys, f"bucket_table[{b}]", "bucket_table", owner, BUCKET_TABLE_OFFSET + b, 1, "owner")
    # The first unallocated slot: giving it an owner is an allocation past num_allocated_buckets.
    _add(
        out,
        phys,
        f"bucket_table[{len(owners)}]",
        "bucket_table",
        None,
        BUCKET_TABLE_OFFSET + len(owners),
        1,
        "owner_beyond",
    )


def _btree_targets(s: Any, out: list[Target]) -> None:
    from inspector.layouts import CHUNK_HEADER_SIZE

    mem, mid, bt = s.mem, s.memory_id, s.map
    for name, off, size, role in (
        ("btr.magic", 0, 3, "magic"),
        ("btr.layout_version", 3, 1, "btree_version"),
        ("btr.root_addr", 12, 8, "addr"),
        ("btr.length", 20, 8, "length"),
        ("bta.magic", 52, 3, "magic"),
        ("bta.version", 55, 1, "one_version"),
        ("bta.allocation_size", 60, 8, "alloc_size"),
        ("bta.num_allocated_chunks", 68, 8, "length"),
        ("bta.free_list_head", 76, 8, "addr"),
    ):
        _add(out, mem, name, "btreemap", mid, off, size, role)
    if bt.layout_version == 2 and not bt.max_key_size:
        _add(out, mem, "btr.page_size", "btreemap", mid, 4, 4, "page_size")
    try:
        nodes = [n for _i, (_d, n) in zip(range(MAX_NODES), bt.iter_nodes(), strict=False)]
    except Exception:
        nodes = []
    seen_ovf = 0
    for depth, node in enumerate(nodes):
        a = node.addr
        c = a - CHUNK_HEADER_SIZE
        ctx = {"node": a, "depth": depth}
        _add(out, mem, f"node@{a:#x}.chunk_magic", "btree_node", mid, c, 3, "magic", **ctx)
        _add(out, mem, f"node@{a:#x}.chunk_version", "btree_node", mid, c + 3, 1, "one_version", **ctx)
        _add(out, mem, f"node@{a:#x}.chunk_allocated", "btree_node", mid, c + 4, 1, "zero_byte", **ctx)
        _add(out, mem, f"node@{a:#x}.magic", "btree_node", mid, a, 3, "magic", **ctx)
        _add(out, mem, f"node@{a:#x}.version", "btree_node", mid, a + 3, 1, "node_version", **ctx)
        _add(out, mem, f"node@{a:#x}.type", "btree_node", mid, a + 4, 1, "node_type", **ctx)
        _add(out, mem, f"node@{a:#x}.num_entries", "btree_node", mid, a + 5, 2, "node_count", **ctx)
        if node.version == 2:
            # A v2 node's first overflow address: garbage there must be caught whether or not it had one.
            _add(out, mem, f"node@{a:#x}.overflow", "btree_node", mid, a + 7, 8, "addr", **ctx)
            if not node.is_leaf:
                for i in range(min(len(node.children), 3)):
                    _add(
                        out,
                        mem,
                        f"node@{a:#x}.child[{i}]",
                        "btree_node",
                        mid,
                        a + 15 + 8 * i,
                        8,
                        "addr",
                        **ctx,
                    )
        for o in node.overflows[:MAX_OVERFLOWS]:
            if seen_ovf >= 4 * MAX_OVERFLOWS:
                break
            seen_ovf += 1
            octx = {"node": a, "overflow": o}
            _add(out, mem, f"overflow@{o:#x}.chunk_magic", "btree_overflow", mid, o - 16, 3, "magic", **octx)
            _add(out, mem, f"overflow@{o:#x}.magic", "btree_overflow", mid, o, 3, "magic", **octx)
            _add(out, mem, f"overflow@{o:#x}.next", "btree_overflow", mid, o + 3, 8, "addr_nonzero", **octx)
    try:
        free = list(bt.allocator["free_list"])[:MAX_FREE]
    except Exception:
        free = []
    for i, addr in enumerate(free):
        _add(out, mem, f"free[{i}]@{addr:#x}.magic", "btree_free_list", mid, addr, 3, "magic", chunk=addr)
        if i < len(free) - 1:
            # A free chunk's next link (the frontier's is 0 and a new value there may look legitimate).
            _add(
                out, mem, f"free[{i}]@{addr:#x}.next", "btree_free_list", mid, addr + 8, 8, "addr", chunk=addr
            )
            _add(out, mem, f"free[{i}]@{addr:#x}.allocated", "btree_free_list", mid, addr + 4, 1, "one_byte")


def _simple_targets(s: Any, out: list[Target]) -> None:
    mem, mid, kind = s.mem, s.memory_id, s.kind
    if kind == "cell":
        _add(out, mem, "cell.magic", kind, mid, 0, 3, "magic")
        _add(out, mem, "cell.layout_version", kind, mid, 3, 1, "one_version")
        _add(out, mem, "cell.value_length", kind, mid, 4, 4, "cell_length")
    elif kind in ("vec", "minheap"):
        _add(out, mem, f"{kind}.magic", kind, mid, 0, 3, "magic")
        _add(out, mem, f"{kind}.layout_version", kind, mid, 3, 1, "one_version")
        _add(out, mem, f"{kind}.length", kind, mid, 4, 8, "vec_length")
        _add(out, mem, f"{kind}.is_fixed_size", kind, mid, 16, 1, "flag_byte")
        _add(out, mem, f"{kind}.reserved", kind, mid, 17, 47, "nonzero")
        # A bigger max size changes every slot: the vec no longer fits or reads garbage lengths.
        _add(out, mem, f"{kind}.max_entry_size", kind, mid, 12, 4, "u32_data", must_report=False)
    elif kind == "log":
        imem = getattr(s, "index_mem", None)
        dmem = getattr(s, "data_mem", None)
        ids = mid if isinstance(mid, list) else [mid, mid]
        if imem is not None:
            _add(out, imem, "log.index_magic", kind, ids[0], 0, 3, "magic")
            _add(out, imem, "log.index_length", kind, ids[0], 32, 8, "vec_length")
            n = min(getattr(s, "readable", 0), 4)
            if dmem is not None:
                for i in range(n):
                    _add(out, imem, f"log.index[{i}]", kind, ids[0], 40 + 8 * i, 8, "log_end")
        if dmem is not None:
            _add(out, dmem, "log.data_magic", kind, ids[-1], 0, 3, "magic")


def _candid_targets(s: Any, out: list[Target]) -> None:
    """Candid values stored in a structure: the bytes after the magic (type table and values)."""
    try:
        elements = s.elements(0)
        picked = 0
        for _i, el in zip(range(64), elements, strict=False):
            if picked >= MAX_VALUES:
                break
            if not bytes(el.value[:4]) == b"DIDL" or len(el.value) < 8:
                continue
            spans = el.value_spans
            if not spans and hasattr(s, "element_spans"):
                spans = s.element_spans(el)[1]
            if not spans:
                continue
            vs, ve = spans[0]
            mem = getattr(s, "value_mem", None) or s.mem
            length = min(ve - vs, 256)
            _add(out, mem, f"candid[{el.index}]", "candid", s.memory_id, vs + 4, length - 4, "candid", False)
            picked += 1
    except Exception:
        return


def _stable_save_targets(analysis: Any, out: list[Target]) -> None:
    blob = getattr(analysis, "stable_save", None)
    if blob is None or not blob.physical_ranges:
        return
    start, end = blob.physical_ranges[0]
    if end - start > 8:
        # The type table sits at the front: mutating it exercises the decoder's table limits.
        n = min(end - start - 4, 512)
        out.append(Target("stable_save.message", "stable_save", None, start + 4, n, "candid", False))


def find_targets(path: str | os.PathLike[str]) -> list[Target]:
    """Every mutation target the inspector can locate in a (pristine) snapshot."""
    from inspector.session import load

    out: list[Target] = []
    session = load(path)
    try:
        a = session.analysis
        _mm_targets(a, out)
        for s in a.structures:
            if s.kind == "btreemap":
                _btree_targets(s, out)
            elif s.kind in ("cell", "vec", "minheap", "log"):
                _simple_targets(s, out)
            if s.kind in ("btreemap", "cell", "vec", "log"):
                _candid_targets(s, out)
        _stable_save_targets(a, out)
    finally:
        session.close()
    return out


# --- invalid values per role ---------------------------------------------------------------------------


def _u(n: int, size: int) -> bytes:
    return (n % (1 << (8 * size))).to_bytes(size, "little")


def _bad_magic(rng: random.Random, old: bytes) -> bytes:
    while True:
        new = bytes(rng.choice([rng.randrange(256), 0, 0xFF, 0x41 + rng.randrange(26)]) for _ in range(3))
        if new != old and new not in KNOWN_MAGICS:
            return new


def _bad_byte(allowed: set[int]) -> Callable[[random.Random, bytes], bytes]:
    def pick(rng: random.Random, old: bytes) -> bytes:
        choices = [v for v in (0, 2, 3, 7, 0x7F, 0x80, 0xFE, 0xFF, rng.randrange(256)) if v not in allowed]
        return bytes([rng.choice(choices)])

    return pick


def _int_field(
    values: Callable[[random.Random, int, int], list[int]],
) -> Callable[[random.Random, bytes], bytes]:
    def pick(rng: random.Random, old: bytes) -> bytes:
        size = len(old)
        cur = int.from_bytes(old, "little")
        opts = [v for v in values(rng, cur, size) if _u(v, size) != old]
        return _u(rng.choice(opts), size) if opts else bytes(b ^ 0xFF for b in old)

    return pick


def _addr_values(rng: random.Random, cur: int, size: int) -> list[int]:
    # Off the chunk grid, past the end of any memory, or pointing at the header.
    return [cur + 1, cur - 1, cur + 8, 1, 52, 100, (1 << 64) - 1, 1 << 40, rng.randrange(1, 1 << 32)]


def _random_bytes(rng: random.Random, old: bytes) -> bytes:
    """For Candid runs: a few random bytes at random places, or a LEB128 field made absurd."""
    data = bytearray(old)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data))
        style = rng.randrange(4)
        if style == 0:
            data[i] = rng.randrange(256)
        elif style == 1:
            # A LEB128 run of 0xFF..0x0F: a count of 2^60-ish (vector lengths, table sizes, text lengths).
            run = b"\xff" * 8 + b"\x0f"
            data[i : i + len(run)] = run[: len(data) - i]
        elif style == 2:
            data[i] ^= 1 << rng.randrange(8)
        else:
            data[i] = rng.choice([0x00, 0x7F, 0x80, 0x6C, 0x6D, 0x6E])  # record/vec/opt opcodes
    return bytes(data[: len(old)])


TARGET_MUTATORS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "magic": _bad_magic,
    "mm_version": _bad_byte({1}),
    "btree_version": _bad_byte({1, 2}),
    "one_version": _bad_byte({1}),
    "node_version": _bad_byte({1, 2}),
    "node_type": _bad_byte({0, 1}),
    "flag_byte": _bad_byte({0, 1}),
    "zero_byte": _bad_byte({1}),  # an allocated flag that no longer says "allocated"
    "one_byte": _bad_byte({0}),  # a free chunk's flag that no longer says "free"
    "nonzero": lambda rng, old: bytes(rng.randrange(1, 256) for _ in old),
    "node_count": _int_field(lambda rng, cur, size: [0, 12, 13, 255, 0x7FFF, 0xFFFF]),
    "mm_num_buckets": _int_field(
        lambda rng, cur, size: [cur + 1, 32_769, 0xFFFF] + ([cur - 1] if cur else [])
    ),
    "mm_bucket_size": _int_field(lambda rng, cur, size: [0]),
    "mm_size": _int_field(lambda rng, cur, size: [cur + 10_000, 1 << 40, (1 << 64) - 1]),
    "owner": _int_field(lambda rng, cur, size: [0xFF, 0xFE]),
    "owner_beyond": _int_field(lambda rng, cur, size: [0, 1, 4, 0xFE]),
    "addr": _int_field(_addr_values),
    "addr_nonzero": _int_field(lambda rng, cur, size: [v for v in _addr_values(rng, cur, size) if v]),
    "length": _int_field(lambda rng, cur, size: [cur + 1, cur + 1000, 1 << 63, (1 << 64) - 1]),
    "alloc_size": _int_field(lambda rng, cur, size: [0, 1, cur + 1, cur * 2, 1 << 40]),
    "page_size": _int_field(lambda rng, cur, size: [0, 1, 127, cur + 16, 1 << 31]),
    "cell_length": _int_field(lambda rng, cur, size: [(1 << 32) - 1, 1 << 31]),
    "vec_length": _int_field(lambda rng, cur, size: [(1 << 64) - 1, 1 << 60, 1 << 40]),
    "log_end": _int_field(lambda rng, cur, size: [(1 << 64) - 1, 1 << 40]),
    "u32_data": _int_field(lambda rng, cur, size: [0, 1, (1 << 32) - 1, cur + 1]),
    "candid": _random_bytes,
}


def mutate_target(data: bytearray, target: Target, rng: random.Random) -> bytes:
    """Write one invalid value into ``target``; returns the bytes written."""
    old = bytes(data[target.offset : target.offset + target.size])
    new = TARGET_MUTATORS[target.role](rng, old)
    data[target.offset : target.offset + target.size] = new
    return new


# --- blind mutations -----------------------------------------------------------------------------------


def _hot_offsets(targets: Sequence[Target], size: int) -> list[int]:
    """Where blind mutations aim most of the time: near headers, plus page 0."""
    hot = [t.offset for t in targets] or [0]
    return [min(size - 1, max(0, o)) for o in hot]


def blind_mutation(data: bytearray, targets: Sequence[Target], rng: random.Random) -> tuple[bytearray, str]:
    """One generic mutation: flips, splats, splices, zeroed ranges, truncation or extension."""
    size = len(data)
    hot = _hot_offsets(targets, size)

    def where() -> int:
        if rng.random() < 0.7:
            return min(size - 1, max(0, rng.choice(hot) + rng.randint(-32, 64)))
        return rng.randrange(size)

    op = rng.choice(["flip", "splat", "zero", "splice", "truncate", "truncate_page", "extend", "tiny"])
    if op == "flip":
        n = rng.randint(1, 16)
        for _ in range(n):
            i = where()
            data[i] ^= 1 << rng.randrange(8)
        return data, f"flip x{n}"
    if op == "splat":
        i = where()
        n = rng.randint(1, 64)
        fill = rng.choice([0x00, 0xFF, 0x7F, 0x80])
        data[i : i + n] = bytes([fill]) * len(data[i : i + n])
        return data, f"splat {fill:#x} x{n} @{i:#x}"
    if op == "zero":
        i = where()
        n = rng.choice([16, 1024, 4096, 65_536])
        data[i : i + n] = bytes(len(data[i : i + n]))
        return data, f"zero {n} @{i:#x}"
    if op == "splice":
        src, dst = rng.randrange(size), where()
        n = rng.randint(1, 4096)
        chunk = bytes(data[src : src + n])
        data[dst : dst + len(chunk)] = chunk[: len(data) - dst]
        return data, f"splice {n} {src:#x}->{dst:#x}"
    if op == "truncate":
        n = rng.randrange(1, size) if size > 1 else 1
        return data[:n], f"truncate to {n}"
    if op == "truncate_page":
        pages = max(1, size // 65_536)
        n = rng.randrange(pages) * 65_536 + rng.choice([0, 1, 2080, 34_848, 65_535])
        n = max(1, min(size, n))
        return data[:n], f"truncate to {n}"
    if op == "extend":
        extra = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        return data + extra, f"extend +{len(extra)}"
    n = rng.choice([1, 2, 3, 7, 52, 99, 100, 115, 2080, 34_847])
    return data[: min(size, n)], f"truncate to {min(size, n)}"


# --- commands ------------------------------------------------------------------------------------------


COMMAND_MODULES = {
    "summary": "inspector.cli",
    "extract": "inspector.cli",
    "entries": "inspector.commands.entries",
    "check": "inspector.commands.check",
    "salvage": "inspector.commands.salvage",
    "diff": "inspector.commands.diff",
}


def available_commands() -> set[str]:
    """Commands whose module imports in this tree (others are being written and are skipped)."""
    out = set()
    for command, module in COMMAND_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        out.add(command)
    return out


def command_lines(
    path: str, memory_ids: Sequence[str], original: str | None, workdir: str
) -> list[tuple[str, list[str]]]:
    """Every command of the CLI, as (label, argv after the program name), for one snapshot path."""
    mids = list(memory_ids) or ["raw"]
    out: list[tuple[str, list[str]]] = [
        ("summary", ["summary", path]),
        ("summary", ["summary", path, "--deep"]),
        ("summary", ["summary", path, "--json"]),
        ("summary", ["summary", path, "--deep", "--json"]),
        ("check", ["check", path]),
        ("check", ["check", path, "--json"]),
    ]
    for mid in mids[:3]:
        out.append(("entries", ["entries", path, "--memory", mid, "--format", "jsonl"]))
        out.append(("entries", ["entries", path, "--memory", mid, "--format", "table", "--limit", "200"]))
        out.append(("salvage", ["salvage", path, "--memory", mid]))
        out.append(("salvage", ["salvage", path, "--memory", mid, "--format", "jsonl"]))
        target = os.path.join(workdir, f"extract-{mid}.bin")
        out.append(("extract", ["extract", path, "--memory", mid, "-o", target, "--force"]))
    if original is not None:
        out.append(("diff", ["diff", original, path, "--json"]))
    return out


def memory_ids_of(path: str | os.PathLike[str]) -> list[str]:
    from inspector.session import load

    session = load(path)
    try:
        ids: list[str] = []
        for s in session.analysis.structures:
            mid = s.memory_id[0] if isinstance(s.memory_id, list) else s.memory_id
            ids.append(str(mid))
        return ids
    finally:
        session.close()


# --- running -------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    label: str
    argv: list[str]
    status: int | None  # None: timed out
    seconds: float
    stderr: str
    problem: str | None = None


def classify(status: int | None, stderr: str) -> str | None:
    """Why an invocation is a failure, or None when it behaved."""
    if status is None:
        return "hang"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if "internal error" in stderr:
        return "internal_error"
    if status < 0:
        return f"signal_{-status}"
    if status not in ALLOWED_STATUS:
        return f"status_{status}"
    if status == 2:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        if len(lines) != 1:
            return "status_2_without_one_line"
    return None


def run_cli(argv: list[str], timeout: float, env: dict[str, str]) -> tuple[int | None, float, str]:
    rc, elapsed, _out, err = _run(argv, timeout, env, None, keep_stdout=False)
    return rc, elapsed, err


def _run(
    argv: list[str], timeout: float, env: dict[str, str], prefix: list[str] | None, *, keep_stdout: bool
) -> tuple[int | None, float, str, str]:
    """Run the CLI in its own process group: (status or None on timeout, seconds, stdout, stderr)."""
    start = time.perf_counter()
    cmd = [sys.executable, *(prefix or ["-m", "inspector"]), *argv]
    with subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
        env=env,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The child leads its own process group: end exactly it (and anything it started).
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.communicate()
            return None, time.perf_counter() - start, "", ""
    text = (out or b"").decode("utf-8", "replace")
    return proc.returncode, time.perf_counter() - start, text, err.decode("utf-8", "replace")


def report_fingerprint(path: str, timeout: float, env: dict[str, str]) -> tuple[Any, str | None]:
    """What ``summary --deep --json`` says about a snapshot: findings and structures, for comparison."""
    cmd = [sys.executable, "-m", "inspector", "summary", path, "--deep", "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=str(ROOT), env=env, check=False)
    except subprocess.TimeoutExpired:
        return None, "hang"
    problem = classify(proc.returncode, proc.stderr.decode("utf-8", "replace"))
    if proc.returncode != 0:
        return ("unreadable", proc.returncode), problem
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return None, "bad_json"
    return fingerprint(doc), problem


def fingerprint(doc: dict[str, Any]) -> Any:
    """The parts of a summary JSON document that say "something is wrong here"."""
    findings = sorted(
        (f.get("code"), f.get("severity"), str(f.get("memory_id"))) for f in doc.get("findings", [])
    )
    structures = sorted((str(s.get("memory_id")), s.get("kind")) for s in doc.get("structures", []))
    mm = doc.get("memory_manager", {})
    return (tuple(findings), tuple(structures), mm.get("present"), tuple(doc.get("diagnosis", [])))


@dataclass
class Seed:
    path: Path
    targets: list[Target]
    memory_ids: list[str]
    baseline: Any


@dataclass
class Stats:
    runs: int = 0
    invocations: int = 0
    status: collections.Counter[str] = field(default_factory=collections.Counter)
    by_command: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    header_runs: int = 0
    unreported: collections.Counter[str] = field(default_factory=collections.Counter)
    status2: collections.Counter[str] = field(default_factory=collections.Counter)  # why status 2
    slowest: float = 0.0
    slowest_what: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


def discover_seeds(dirs: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.is_file() and p.suffix in SNAPSHOT_SUFFIXES and p.name not in NOT_STABLE_MEMORY:
                out.append(p)
    return out


def _reason(stderr: str) -> str:
    """The gist of a one-line error, without paths and numbers, for the status-2 histogram."""
    line = next((ln for ln in stderr.splitlines() if ln.strip()), "")
    line = line.removeprefix("stable-inspect: ")
    line = re.sub(r"(/[^\s:]+)+:?", "PATH", line)
    line = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", line)
    return re.sub(r"0x[0-9a-f]+|\d[\d,]*", "N", line)[:90]


def _target_group(what: str) -> str:
    """One counter per kind of header field: "node@0x74.magic := 00ff00" counts as "node.magic"."""
    name = what.split(" := ")[0]
    head, _, tail = name.partition("@")
    return f"{head}.{tail.split('.', 1)[1]}" if "." in tail else name


def _one_run(
    index: int,
    seed: Seed,
    args: argparse.Namespace,
    commands: set[str],
    stats: Stats,
    env: dict[str, str],
    workroot: Path,
) -> None:
    rng = random.Random(f"{args.seed}:{index}")
    data = bytearray(seed.path.read_bytes())
    musts = [t for t in seed.targets if t.must_report]
    header = False
    if seed.targets and rng.random() < 0.6:
        target = rng.choice(seed.targets)
        new = mutate_target(data, target, rng)
        header = target.must_report
        what = f"{target.name} := {new.hex()}"
    else:
        data, what = blind_mutation(data, musts or seed.targets, rng)
    work = workroot / f"run{index}"
    work.mkdir()
    mutated = work / "stable_memory.bin"
    mutated.write_bytes(data)
    lines = [
        c for c in command_lines(str(mutated), seed.memory_ids, str(seed.path), str(work)) if c[0] in commands
    ]
    picked = rng.sample(lines, min(args.commands_per_run, len(lines)))
    outcomes: list[Outcome] = []
    for label, argv in picked:
        status, secs, err = run_cli(argv, args.timeout, env)
        outcomes.append(Outcome(label, argv, status, secs, err, classify(status, err)))
    unreported = False
    if header:
        fp, problem = report_fingerprint(str(mutated), args.timeout, env)
        if problem:
            outcomes.append(
                Outcome("summary", ["summary", str(mutated), "--deep", "--json"], None, 0.0, "", problem)
            )
        elif fp == seed.baseline:
            unreported = True
    with stats.lock:
        stats.runs += 1
        stats.header_runs += header
        if unreported:
            stats.unreported[_target_group(what)] += 1
        for o in outcomes:
            stats.invocations += 1
            stats.by_command[o.label] += 1
            stats.status["timeout" if o.status is None else str(o.status)] += 1
            if o.status == 2:
                stats.status2[_reason(o.stderr)] += 1
            if o.seconds > stats.slowest:
                stats.slowest = o.seconds
                stats.slowest_what = f"{seed.path.relative_to(seed.path.parents[1])} [{what}] {o.argv[0]} {' '.join(o.argv[2:])}"
            if o.problem:
                failure = {
                    "run": index,
                    "seed": str(seed.path),
                    "mutation": what,
                    "command": o.argv[:1] + ["MUTATED" if a == str(mutated) else a for a in o.argv[1:]],
                    "problem": o.problem,
                    "status": o.status,
                    "stderr_tail": o.stderr[-2000:],
                }
                if args.keep_failures:
                    keep = Path(args.keep_failures)
                    keep.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(mutated, keep / f"run{index}.bin")
                    failure["saved"] = str(keep / f"run{index}.bin")
                stats.failures.append(failure)
        done = stats.runs
    if args.progress and done % 100 == 0:
        print(
            f"  {done} runs, {stats.invocations} invocations, {len(stats.failures)} failures", file=sys.stderr
        )
    shutil.rmtree(work, ignore_errors=True)


def special_inputs(workroot: Path) -> Iterator[tuple[str, str]]:
    """Inputs that are not snapshots at all: each must give exit status 2 and one line on stderr."""
    d = workroot / "special"
    d.mkdir()
    (d / "empty.bin").write_bytes(b"")
    (d / "emptydir").mkdir()
    os.mkfifo(d / "fifo")
    snapdir = d / "snapdir_fifo_metadata"
    snapdir.mkdir()
    os.mkfifo(snapdir / "metadata.json")
    (snapdir / "stable_memory.bin").write_bytes(b"\0" * 65_536)
    yield "missing", str(d / "missing.bin")
    yield "empty", str(d / "empty.bin")
    yield "directory", str(d / "emptydir")
    yield "fifo", str(d / "fifo")
    # Not unreadable (the stable memory is fine), but must not block on the FIFO: status 0 expected.
    yield "fifo_metadata", str(snapdir)


def run_special(
    args: argparse.Namespace, commands: set[str], env: dict[str, str], workroot: Path, stats: Stats
) -> None:
    for name, path in special_inputs(workroot):
        for label, argv in command_lines(path, ["raw", "0"], None, str(workroot)):
            if label not in commands:
                continue
            status, secs, err = run_cli(argv, args.timeout, env)
            problem = classify(status, err)
            if problem is None and name != "fifo_metadata" and status != 2:
                problem = f"unreadable input gave status {status}"
            stats.invocations += 1
            stats.by_command[label] += 1
            stats.status["timeout" if status is None else str(status)] += 1
            if status == 2:
                stats.status2["(special input) " + _reason(err)] += 1
            if problem:
                stats.failures.append(
                    {
                        "special": name,
                        "command": argv,
                        "problem": problem,
                        "status": status,
                        "stderr_tail": err[-2000:],
                    }
                )


def run_cli_capture(
    argv: list[str], timeout: float, env: dict[str, str], prefix: list[str] | None = None
) -> tuple[int | None, str, str]:
    """Like ``run_cli`` but keeps stdout too (hostile-text checks look at it)."""
    rc, _elapsed, out, err = _run(argv, timeout, env, prefix, keep_stdout=True)
    return rc, out, err


def run_hostile(
    args: argparse.Namespace, seeds: Sequence[Seed], env: dict[str, str], workroot: Path, stats: Stats
) -> None:
    """Issue 16's round: hostile metadata keys/values, schema fields, -o target kinds, a shrinking file."""
    from tools import fuzz_hostile as fh

    rng = random.Random(f"{args.seed}:hostile")
    small = [s for s in seeds if s.path.stat().st_size <= 4 << 20] or list(seeds)
    for i in range(args.hostile):
        seed = rng.choice(small)
        work = workroot / f"hostile{i}"
        work.mkdir()
        kind = rng.choice(["metadata", "schema", "output", "shrink"])
        if kind == "metadata":
            case = fh.metadata_case(seed.path, work, rng)
        elif kind == "schema":
            case = fh.schema_case(seed.path, work, rng, seed.memory_ids)
        elif kind == "output":
            case = fh.output_case(seed.path, work, rng, seed.memory_ids)
        else:
            case = fh.shrink_case(seed.path, work, rng, seed.memory_ids)
        outs = [run_cli_capture(a, args.timeout, {**env, **case.env}, case.prefix) for a in case.runs]
        problems = [classify(st, err) for st, _out, err in outs]
        extra = case.check(outs)
        stats.invocations += len(outs)
        stats.by_command[f"hostile:{case.name.split(':')[0]}"] += len(outs)
        for (st, _out, err), argv, problem in zip(outs, case.runs, problems, strict=True):
            stats.status["timeout" if st is None else str(st)] += 1
            if problem or extra:
                stats.failures.append(
                    {
                        "hostile": case.name,
                        "command": argv,
                        "env": case.env,
                        "problem": problem or extra,
                        "status": st,
                        "stderr_tail": err[-2000:],
                    }
                )
                extra = None
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="mutated snapshots to try")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per invocation")
    parser.add_argument("--commands-per-run", type=int, default=3)
    parser.add_argument("--fixtures", type=Path, action="append", help="seed directories (repeatable)")
    parser.add_argument("--max-seed-bytes", type=int, default=20 << 20)
    parser.add_argument(
        "--keep-failures", metavar="DIR", help="copy the mutated snapshot of each failure here"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument(
        "--hostile", type=int, default=40, help="runs of the hostile round (metadata, schema, -o, shrinking)"
    )
    args = parser.parse_args(argv)

    dirs = args.fixtures or [FIXTURES, SAMPLES]
    paths = [p for p in discover_seeds(dirs) if p.stat().st_size <= args.max_seed_bytes]
    if not paths:
        print(f"no seed snapshots found in {', '.join(map(str, dirs))}", file=sys.stderr)
        return 2
    commands = available_commands()
    missing = sorted(set(COMMAND_MODULES) - commands)
    env = {k: v for k, v in os.environ.items() if k != "STABLE_INSPECT_DEBUG"}
    env["PYTHONPATH"] = str(ROOT)
    t0 = time.perf_counter()
    seeds: list[Seed] = []
    for p in paths:
        fp, problem = report_fingerprint(str(p), args.timeout, env)
        if problem:
            print(f"seed {p} itself fails: {problem}", file=sys.stderr)
        seeds.append(Seed(p, find_targets(p), memory_ids_of(p), fp))
    print(
        f"{len(seeds)} seeds, {sum(len(s.targets) for s in seeds)} header targets; commands: "
        f"{', '.join(sorted(commands))}"
        + (f" (not in this tree yet: {', '.join(missing)})" if missing else ""),
        file=sys.stderr,
    )
    stats = Stats()
    with tempfile.TemporaryDirectory(prefix="fuzz_cli_") as tmp:
        workroot = Path(tmp)
        run_special(args, commands, env, workroot, stats)
        run_hostile(args, seeds, env, workroot, stats)
        rng = random.Random(args.seed)
        # Small seeds are cheap: weight them up so the run count goes to variety, not to copying 16 MiB.
        weights = [1.0 / max(1.0, s.path.stat().st_size / (1 << 20)) ** 0.5 for s in seeds]
        picks = rng.choices(range(len(seeds)), weights=weights, k=args.runs)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [
                pool.submit(_one_run, i, seeds[k], args, commands, stats, env, workroot)
                for i, k in enumerate(picks)
            ]
            for f in futures:
                f.result()
    elapsed = time.perf_counter() - t0
    figures = {
        "runs": stats.runs,
        "invocations": stats.invocations,
        "seconds": round(elapsed, 1),
        "exit_status": dict(sorted(stats.status.items())),
        "by_command": dict(sorted(stats.by_command.items())),
        "status_2_reasons": dict(stats.status2.most_common(25)),
        "slowest_invocation_seconds": round(stats.slowest, 2),
        "slowest_invocation": stats.slowest_what,
        "header_mutation_runs": stats.header_runs,
        "header_mutations_unreported": dict(stats.unreported.most_common()),
        "commands_not_in_tree": missing,
        "failures": stats.failures,
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "failures"}, indent=2))
    for f in stats.failures[:20]:
        print(json.dumps(f), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    print(f"{len(stats.failures)} failure(s)", file=sys.stderr)
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
