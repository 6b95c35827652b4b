"""Bounded work on absurd inputs: every walk is bounded by the bytes that exist and guarded against cycles
and absurd counts, and no recursion depends on the input.

Each case forges a small snapshot whose headers claim something absurd (65,535 entries in a node, a Candid
vector of 2^60 elements, a type table of a million entries, a tree 3,000 levels deep, cycles in the free
list, the overflow chain and the tree, a MemoryManager whose memories claim petabytes) and runs every
command on it, plus the TUI, under a hang watchdog (faulthandler). The result must be findings, never a hang, a
memory blow-up or a traceback (``STABLE_INSPECT_DEBUG=1`` makes any exception fail the test).
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inspector.forge import (
    TEXT,
    MemoryManagerImage,
    RawImage,
    candid_message,
    forge_btreemap,
    forge_u64_btreemap,
    leb128,
    log,
    vec,
)
from inspector.layouts import (
    ALLOCATOR_HEADER,
    BTREE_HEADER,
    CHUNK_HEADER,
    MM_HEADER,
    V2_NODE_PREFIX,
    WASM_PAGE_SIZE,
)
from tests.conftest import run_cli

MAX_RSS_GROWTH_BYTES = 1 << 30
# Above Python's default recursion limit: anything that recursed per level would raise RecursionError.
CHAIN_DEPTH = 3_000


# --- forging helpers -------------------------------------------------------------------------------------


def _raw(content: Any) -> bytearray:
    img = RawImage()
    img.place(content)
    return bytearray(img.to_bytes())


def _u64(data: bytearray, off: int, value: int) -> None:
    data[off : off + 8] = value.to_bytes(8, "little")


def _map_with_values(values: list[bytes], **kwargs: Any) -> bytearray:
    keys = [f"k{i:06d}".encode() for i in range(len(values))]
    return _raw(forge_btreemap(list(zip(keys, values, strict=True)), **kwargs))


def _chain_map(depth: int) -> bytearray:
    """A v2 map (page 128) whose tree is a chain of ``depth`` internal nodes, each with one entry, a
    leaf on the right and the next internal node on the left: deep enough to break any recursion."""
    page = 128
    cs = page + 16
    n_chunks = 2 * depth + 1
    frontier = 100 + n_chunks * cs
    data = bytearray(max(WASM_PAGE_SIZE, -(-(frontier + 16) // WASM_PAGE_SIZE) * WASM_PAGE_SIZE))

    def payload(i: int) -> int:
        return 100 + i * cs + 16

    def node(i: int, internal: bool, children: tuple[int, ...], key: bytes) -> None:
        c = payload(i) - 16
        data[c : c + 16] = CHUNK_HEADER.pack(b"CHK", 1, 1, bytes(3), 0)
        body = V2_NODE_PREFIX.pack(b"BTN", 2, int(internal), 1, 0)
        body += b"".join(x.to_bytes(8, "little") for x in children)
        body += len(key).to_bytes(4, "little") + key + (1).to_bytes(4, "little") + b"v"
        data[payload(i) : payload(i) + len(body)] = body

    # Internal node j (chunk 2j) has children [internal j+1 (chunk 2j+2), leaf (chunk 2j+1)].
    for j in range(depth):
        # The last internal node's left child is the final leaf (chunk 2·depth).
        node(2 * j, True, (payload(2 * j + 2), payload(2 * j + 1)), f"k{j:08d}".encode())
        node(2 * j + 1, False, (), f"l{j:08d}".encode())
    node(2 * depth, False, (), b"a")
    data[frontier : frontier + 16] = CHUNK_HEADER.pack(b"CHK", 1, 0, bytes(3), 0)
    data[0:52] = BTREE_HEADER.pack(b"BTR", 2, page, 0xFFFF_FFFF, payload(0), 2 * depth + 1, bytes(24))
    data[52:100] = ALLOCATOR_HEADER.pack(b"BTA", 1, bytes(4), page, n_chunks, frontier, bytes(16))
    return data


def _node_count_65535() -> bytearray:
    fm = forge_u64_btreemap(range(200), range(200))
    data = _raw(fm)
    for addr in fm.all_node_addrs()[:3]:
        data[addr + 5 : addr + 7] = (0xFFFF).to_bytes(2, "little")
    return data


def _node_cycle() -> bytearray:
    fm = forge_u64_btreemap(range(200), range(200))
    data = _raw(fm)
    root = fm.root_addr
    # The root's first child is the root itself; its second child is the first one's.
    _u64(data, root + 15, root)
    return data


def _free_list_cycle() -> bytearray:
    fm = forge_u64_btreemap(range(200), range(200), free_chunks=6)
    data = _raw(fm)
    first, second = fm.free_list[0], fm.free_list[1]
    _u64(data, second + 8, first)  # second → first → second …
    return data


def _overflow_cycle() -> bytearray:
    fm = forge_btreemap([(b"big", bytes(range(256)) * 40)], page_size=128)
    data = _raw(fm)
    first, last = fm.overflow_addrs[0], fm.overflow_addrs[-1]
    _u64(data, last + 3, first)
    return data


def _overflow_chain_to_header() -> bytearray:
    fm = forge_btreemap([(b"big", bytes(5000))], page_size=128)
    data = _raw(fm)
    _u64(data, fm.overflow_addrs[0] + 3, 52)  # "next" points into the allocator header
    return data


def _btree_length_absurd() -> bytearray:
    data = _raw(forge_u64_btreemap(range(50), range(50)))
    _u64(data, 20, (1 << 64) - 1)
    _u64(data, 68, (1 << 63) + 5)  # num_allocated_chunks
    return data


def _zero_size_vec() -> bytearray:
    # A zero-sized element type takes no bytes: nothing but a cap bounds a claimed length of 2^64 - 1.
    data = bytearray(WASM_PAGE_SIZE)
    data[0:17] = b"SVC\x01" + b"\xff" * 8 + bytes(4) + b"\x01"
    return data


def _vec_length_absurd() -> bytearray:
    data = _raw(vec([i.to_bytes(8, "big") for i in range(100)], 8, True))
    _u64(data, 4, 1 << 60)
    return data


def _log_absurd() -> bytearray:
    index, datamem = log([b"entry %d" % i for i in range(50)])
    mm = MemoryManagerImage(1)
    mm.place(2, index)
    mm.place(3, datamem)
    data = bytearray(mm.to_bytes())
    base = mm.to_physical(2, 0)
    _u64(data, base + 32, (1 << 64) - 1)  # length
    _u64(data, base + 40 + 8 * 3, 1)  # an end before the previous one
    _u64(data, base + 40 + 8 * 10, (1 << 64) - 1)
    return data


def _cell_huge() -> bytearray:
    data = bytearray(WASM_PAGE_SIZE)
    data[0:8] = b"SCL\x01\xff\xff\xff\xff"
    return data


def _mm_absurd() -> bytearray:
    """Every bucket allocated to one memory, buckets of 65,535 pages, and memories claiming 2^64 pages."""
    data = bytearray(2 * WASM_PAGE_SIZE)
    sizes = [(1 << 64) - 1] * 255
    data[0 : MM_HEADER.size] = MM_HEADER.pack(b"MGR", 1, 32_768, 0xFFFF, bytes(32), *sizes)
    data[2080 : 2080 + 32_768] = bytes(i % 255 for i in range(32_768))
    data[WASM_PAGE_SIZE : WASM_PAGE_SIZE + 3] = b"BTR"
    return data


def _mm_all_memories_one_page_buckets() -> bytearray:
    mm = MemoryManagerImage(1)
    for mid in range(0, 255, 7):
        mm.place(mid, vec([b"x" * 4], 4, True) if mid % 2 else forge_u64_btreemap(range(20), range(20)))
    data = bytearray(mm.to_bytes())
    data[2080 + mm.num_buckets : 2080 + 32_768] = bytes(i % 255 for i in range(32_768 - mm.num_buckets))
    data[4:6] = (32_768).to_bytes(2, "little")
    return data


# Candid values (in map values, and as a stable_save message at physical 0).
def _didl(*parts: bytes) -> bytes:
    return b"DIDL" + b"".join(parts)


CANDID = {
    "vec_null_2^60": _didl(b"\x01\x6d\x7f", b"\x01\x00", leb128(1 << 60)),
    "vec_empty_record_2^60": _didl(b"\x02\x6c\x00\x6d\x00", b"\x01\x01", leb128(1 << 60)),
    "vec_nat8_2^60": _didl(b"\x01\x6d\x7b", b"\x01\x00", leb128(1 << 60), b"abc"),
    "text_2^60": _didl(b"\x00", b"\x01\x71", leb128(1 << 60), b"abc"),
    "type_table_2^60": _didl(leb128(1 << 60), b"\x6d\x7f" * 4),
    "type_table_million": _didl(leb128(1_000_000), b"\x6d\x7f" * 1_000_000, b"\x01\x00\x00"),
    "recursive_opt": _didl(b"\x01\x6e\x00", b"\x01\x00", b"\x01" * 200_000, b"\x00"),
    "recursive_vec": _didl(b"\x01\x6d\x00", b"\x01\x00", b"\x01" * 200_000, b"\x00"),
    "recursive_variant": _didl(b"\x01\x6b\x02\x00\x00\x01\x7f", b"\x01\x00", b"\x00" * 200_000, b"\x01"),
    "uninhabited_record": _didl(b"\x01\x6c\x01\x00\x00", b"\x01\x00", bytes(64)),
    "nat_100k_bytes": _didl(b"\x00", b"\x01\x7d", b"\xff" * 100_000, b"\x01"),
    "args_2^60": _didl(b"\x00", leb128(1 << 60), b"\x7f" * 16),
}


def _candid_map() -> bytearray:
    return _map_with_values([*CANDID.values(), candid_message([TEXT], ["fine"])])


def _candid_stable_save(name: str) -> Callable[[], bytearray]:
    def build() -> bytearray:
        msg = CANDID[name]
        data = bytearray(-(-len(msg) // WASM_PAGE_SIZE) * WASM_PAGE_SIZE + WASM_PAGE_SIZE)
        data[: len(msg)] = msg
        return data

    return build


CASES: dict[str, Callable[[], bytearray]] = {
    "node_count_65535": _node_count_65535,
    "node_cycle": _node_cycle,
    "deep_chain": lambda: _chain_map(CHAIN_DEPTH),
    "free_list_cycle": _free_list_cycle,
    "overflow_cycle": _overflow_cycle,
    "overflow_chain_to_header": _overflow_chain_to_header,
    "btree_length_absurd": _btree_length_absurd,
    "zero_size_vec_2^64": _zero_size_vec,
    "vec_length_absurd": _vec_length_absurd,
    "log_absurd": _log_absurd,
    "cell_huge": _cell_huge,
    "mm_absurd": _mm_absurd,
    "mm_many_memories": _mm_all_memories_one_page_buckets,
    "candid_values_in_map": _candid_map,
    **{
        f"stable_save_{name}": _candid_stable_save(name)
        for name in ("type_table_million", "recursive_opt", "vec_null_2^60")
    },
}

# What the validated walk must say about some of them (a code from the set).
EXPECTED_CODES: dict[str, set[str]] = {
    "node_count_65535": {"btree_node_invalid"},
    "node_cycle": {"btree_cycle"},
    "free_list_cycle": {"allocator_free_list_broken"},
    "overflow_cycle": {"btree_cycle", "btree_node_invalid"},
    "overflow_chain_to_header": {"btree_node_invalid"},
    "btree_length_absurd": {"btree_length_mismatch"},
    "zero_size_vec_2^64": {"vec_out_of_bounds"},
    "vec_length_absurd": {"vec_out_of_bounds"},
    "log_absurd": {"log_index_invalid"},
    "cell_huge": {"cell_value_out_of_bounds"},
    "mm_absurd": {"memory_manager_clobbered", "bucket_out_of_range"},
}


# --- running ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _hang_guard(seconds: float) -> Iterator[None]:
    """A real hang would block the whole suite: dump every thread's stack and exit instead."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _memory_ids(path: Path) -> list[str]:
    from inspector.session import load

    session = load(path)
    try:
        ids = [
            s.memory_id[0] if isinstance(s.memory_id, list) else s.memory_id
            for s in session.analysis.structures
        ]
        return [str(i) for i in ids]
    finally:
        session.close()


@pytest.fixture(autouse=True)
def _small_zero_sized_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cap on listed zero-sized Vec elements is a million; listing them is linear and proven bounded
    # with a smaller cap just as well, at a fraction of the suite's time.
    import inspector.structures.vec as vec_module

    monkeypatch.setattr(vec_module, "MAX_ZERO_SIZED_ELEMENTS", 20_000)


@pytest.mark.parametrize("case", sorted(CASES))
def test_absurd_input_gives_findings_in_bounded_work(case: str, tmp_path: Path) -> None:
    path = tmp_path / "stable_memory.bin"
    path.write_bytes(CASES[case]())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with _hang_guard(300):
        status, out, err = run_cli(["summary", str(path), "--deep", "--json"])
        assert status == 0, err
        doc = json.loads(out)
        codes = {f["code"] for f in doc["findings"]}
        if case in EXPECTED_CODES:
            assert codes & EXPECTED_CODES[case], f"{case}: findings {sorted(codes)}"
        mids = _memory_ids(path)[:4] or ["raw"]
        argvs: list[list[str]] = [["summary", str(path)], ["summary", str(path), "--deep"]]
        argvs += [["check", str(path)], ["check", str(path), "--json"]]
        for mid in mids:
            argvs += [
                ["entries", str(path), "--memory", mid, "--format", "jsonl"],
                ["entries", str(path), "--memory", mid, "--format", "table"],
                ["extract", str(path), "--memory", mid, "-o", str(tmp_path / "out.bin"), "--force"],
            ]
            argvs.append(["salvage", str(path), "--memory", mid, "--format", "jsonl"])
        argvs.append(["diff", str(path), str(path), "--json"])
        for argv in argvs:
            status, _out, err = run_cli(argv)
            assert status in (0, 1, 2), (argv, err)
            if status == 2:
                assert len(err.strip().splitlines()) == 1, (argv, err)
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert growth < MAX_RSS_GROWTH_BYTES, f"peak memory grew by {growth / 1e6:.0f} MB"


def test_deep_chain_is_walked_without_recursion(tmp_path: Path) -> None:
    """3,000 levels: more than Python's recursion limit. The walk must reach every node."""
    from inspector.session import load

    path = tmp_path / "chain.bin"
    path.write_bytes(_chain_map(CHAIN_DEPTH))
    if sys.getrecursionlimit() >= CHAIN_DEPTH:
        pytest.skip("the recursion limit was raised elsewhere: the chain would not prove anything")
    session = load(path)
    try:
        structure = session.analysis.structures[0]
        structure.deep()
        result = structure.map.walk()
        assert result.nodes["count"] == 2 * CHAIN_DEPTH + 1
        assert result.nodes["depth"] == CHAIN_DEPTH + 1
        assert sum(1 for _ in structure.elements(0)) == 2 * CHAIN_DEPTH + 1
        # The region tree is lazy and depth-guarded: walking it all stays bounded too.
        from inspector.regions import build_tree

        assert sum(1 for _ in build_tree(session.analysis).walk(max_depth=200)) > 0
    finally:
        session.close()


# --- the TUI on the same inputs ------------------------------------------------------------------------


def _expand_everything(app: Any, pilot: Any, rounds: int) -> Any:
    from inspector.model import Region

    async def go() -> int:
        tree = app.region_tree
        seen = 0
        for _ in range(rounds):
            stack = [tree.root]
            budget = 400  # nodes visited per round: a cyclic tree is infinite, the test must not be
            while stack and budget:
                node = stack.pop()
                seen += 1
                budget -= 1
                if isinstance(node.data, Region) and not tree.is_populated(node):
                    tree.populate_now(node)
                    node.expand()
                stack.extend(node.children[:20])
            await pilot.pause()
        return seen

    return go()


@pytest.mark.parametrize(
    "case",
    [
        "btree_length_absurd",
        "zero_size_vec_2^64",
        "node_cycle",
        "deep_chain",
        "mm_absurd",
        "candid_values_in_map",
    ],
)
def test_tui_opens_and_expands_absurd_inputs(case: str, tmp_path: Path) -> None:
    import inspector.tui.app as tui

    path = tmp_path / "stable_memory.bin"
    path.write_bytes(CASES[case]())

    async def scenario() -> int:
        app = tui.create_app(path)
        async with app.run_test(size=(160, 50)) as pilot:
            await pilot.pause()
            seen = await _expand_everything(app, pilot, rounds=4)
            await pilot.press("right_square_bracket")  # next finding
            await pilot.pause()
        return seen

    start = time.perf_counter()
    with _hang_guard(300):
        seen = asyncio.run(scenario())
    assert seen > 3
    assert time.perf_counter() - start < 60
