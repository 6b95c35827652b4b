"""BTreeMap walker against the real-library fixtures, the standalone images, and mutated bytes.

Ground truth is what the real ic-stable-structures library reported (fixtures' expected.json) or what
the standalone README states; corruption cases mutate real fixture bytes.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, expected_files, load_expected, require_fixtures
from construct import Array, Bytes, GreedyBytes, Int32ul, Int64ul, Prefixed, Struct

from inspector.layouts import (
    AllocatorHeader,
    BTreeMapHeader,
    ChunkHeader,
    NodeHeader,
    OverflowPageHeader,
    V2NodePrefix,
)
from inspector.memory import Memory, PhysicalMemory, VirtualMemory
from inspector.structures.btreemap import BTreeMap, Chunk, iteration
from inspector.structures.btreemap.nodes import CHUNK_NODE, CHUNK_OVERFLOW, Node, NodeError

STANDALONE = FIXTURES / "standalone"


# --- helpers ------------------------------------------------------------------------------------------


def _btree_cases() -> list[tuple[str, str]]:
    import json

    cases = []
    for path in expected_files():
        exp = json.loads(path.read_text())
        for s in exp["structures"]:
            if s["kind"] == "btreemap":
                cases.append((exp["fixture"], s["name"]))
    return cases


BTREE_CASES = _btree_cases()
_FILE_CACHE: dict[Path, bytes] = {}


def _bytes(path: Path) -> bytes:
    if path not in _FILE_CACHE:
        _FILE_CACHE[path] = path.read_bytes()
    return _FILE_CACHE[path]


def _structure(exp: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in exp["structures"] if s["name"] == name)


def _memory(exp: dict[str, Any], s: dict[str, Any], data: bytes) -> Memory:
    phys = PhysicalMemory(data, len(data))
    if s["memory_id"] == "raw":
        return phys
    mm = exp["memory_manager"]
    # Built from expected.json alone: the base offset of a RestrictedMemory manager, and for a nested id
    # "5/1" the host memory 5 of the outer manager, inside which the inner manager sits at offset 0.
    host: Memory = phys
    ids = str(s["memory_id"]).split("/")
    for depth, part in enumerate(ids):
        m = next(m for m in mm["memories"] if m["id"] == int(part))
        base = mm.get("base_offset", 0) if depth == 0 else 0
        host = VirtualMemory(
            host, m["id"], m["buckets"], mm["bucket_size_in_bytes"], m["size_bytes"], base=base
        )
        mm = m.get("inner_memory_manager", mm)
    return host


def _fixture_map(fixture: str, name: str, data: bytes | None = None) -> tuple[BTreeMap, dict, dict]:
    exp = load_expected(fixture)
    s = _structure(exp, name)
    raw = _bytes(FIXTURES / fixture / "stable_memory.bin") if data is None else data
    return BTreeMap(_memory(exp, s, raw), memory_id=s["memory_id"]), exp, s


def _standalone(rel: str, data: bytes | None = None) -> BTreeMap:
    require_fixtures()
    raw = _bytes(FIXTURES / rel) if data is None else data
    return BTreeMap(PhysicalMemory(raw, len(raw)), memory_id="raw")


def _mm_memory(data: bytes, memory_id: int) -> VirtualMemory:
    """A MemoryManager memory straight from the header bytes (FORMAT.md §2), for standalone images."""
    _magic, _ver, nb, bs = struct.unpack_from("<3sBHH", data, 0)
    sizes = struct.unpack_from("<255Q", data, 40)
    table = data[2080 : 2080 + 32768]
    buckets = [b for b in range(nb) if table[b] == memory_id]
    return VirtualMemory(
        PhysicalMemory(data, len(data)), memory_id, buckets, bs * 65536, sizes[memory_id] * 65536
    )


def _codes(bt: BTreeMap, severity: str | None = None) -> set[str]:
    return {f.code for f in bt.walk().findings if severity is None or f.severity == severity}


def _patch(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new) :]


def _digest(entries: list[tuple[bytes, bytes]]) -> str:
    h = hashlib.sha256()
    for k, v in entries:
        h.update(struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v)
    return h.hexdigest()


def _big(i: int, n: int) -> bytes:
    """The standalone README's big(i, n): "v<i>:" padded with letters 'a' + p mod 26 up to n bytes."""
    head = f"v{i}:"
    return (head + "".join(chr(97 + p % 26) for p in range(len(head), n))).encode()


# --- fixtures: everything expected.json says ------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "name"), BTREE_CASES)
def test_fixture_header_allocator_walk(fixture: str, name: str) -> None:
    bt, _exp, s = _fixture_map(fixture, name)
    assert bt.header == s["header"]
    allocator = bt.allocator
    for key, value in s["allocator"].items():
        assert allocator[key] == value, key
    w = bt.walk()
    expected_nodes = {k: v for k, v in s["nodes"].items() if k not in ("list", "walk_order")}
    assert w.nodes == expected_nodes
    assert w.entry_count == s["count"] == s["header"]["length"]
    assert w.entries_sha256 == s["entries_sha256"]
    assert w.findings == []  # healthy maps written by the real library
    assert bt.unreachable_nodes() == []


@pytest.mark.parametrize(("fixture", "name"), BTREE_CASES)
def test_fixture_node_list(fixture: str, name: str) -> None:
    bt, _exp, s = _fixture_map(fixture, name)
    expected = s["nodes"]["list"]
    with_keys = "keys_hex" in expected[0]
    mine = []
    for depth, node in bt.iter_nodes():
        item = {**node.summary(), "depth": depth}
        if not with_keys:
            item.pop("keys_hex")
        mine.append(item)
    assert mine == expected


@pytest.mark.parametrize(("fixture", "name"), BTREE_CASES)
def test_fixture_entries_and_iteration(fixture: str, name: str) -> None:
    bt, _exp, s = _fixture_map(fixture, name)
    entries = list(bt.iter_entries())
    assert _digest([(e.key, e.value) for e in entries]) == s["entries_sha256"]
    listed = s.get("entries") or (s["first_entries"] + s["last_entries"])
    picked = entries if "entries" in s else entries[:5] + entries[-5:]
    for exp_entry, entry in zip(listed, picked, strict=True):
        assert entry.key.hex() == exp_entry["key_hex"]
        assert len(entry.value) == exp_entry["value_len"]
        assert hashlib.sha256(entry.value).hexdigest() == exp_entry["value_sha256"]
    # Entry provenance: the node and index really hold that entry.
    for entry in entries[:: max(1, len(entries) // 50)]:
        assert bt.node(entry.node_addr).entries[entry.index_in_node].key == entry.key
    # Paging and seeking agree with the full iteration.
    for start in (0, 1, len(entries) // 3, len(entries) - 1, len(entries), len(entries) + 5):
        got = [e.key for e in islice(bt.iter_entries(start), 7)]
        assert got == [e.key for e in entries[start : start + 7]]
    rnd = random.Random(7)
    for entry in rnd.sample(entries, min(10, len(entries))):
        got = [e.key for e in islice(bt.iter_entries_from_key(entry.key), 5)]
        assert got == [e.key for e in entries if e.key >= entry.key][:5]
        probe = entry.key + b"\x00"  # not a key: starts just after
        got = [e.key for e in islice(bt.iter_entries_from_key(probe), 5)]
        assert got == [e.key for e in entries if e.key >= probe][:5]
    assert list(bt.iter_entries_from_key(b"\xff" * 300)) == []


@pytest.mark.parametrize(("fixture", "name"), BTREE_CASES)
def test_seek_by_subtree_counts_matches_the_walk(
    fixture: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start index reached by descending with subtree entry counts gives the entries (and where they
    are) that walking every earlier entry gives, at every kind of position: first and last entries of
    leaves, separators in internal nodes, the last entry, past the end."""
    bt, _exp, s = _fixture_map(fixture, name)
    entries = [(e.key, e.value, e.node_addr, e.index_in_node) for e in bt.iter_entries()]
    monkeypatch.setattr(iteration, "SEEK_BY_COUNT_FROM", 1)
    seek, _exp, _s = _fixture_map(fixture, name)
    n = len(entries)
    starts = set(range(0, min(n, 40))) | set(range(max(0, n - 40), n + 3)) | {n // 2, n // 3}
    starts |= set(random.Random(3).sample(range(n), min(n, 60)))
    for start in sorted(starts):
        got = [(e.key, e.value, e.node_addr, e.index_in_node) for e in islice(seek.iter_entries(start), 13)]
        assert got == entries[start : start + 13], start
    # A sound tree of v2 nodes is counted from its node headers; one with v1 nodes keeps walking.
    all_v2 = all(node.version == 2 for _d, node in bt.iter_nodes())
    sound = bt.walk().entry_count == bt.length and not bt.walk().findings
    if n >= 2:
        assert isinstance(seek._subtree_counts, dict) == (all_v2 and sound)


@pytest.mark.parametrize(
    ("fixture", "name"),
    [
        c
        for c in BTREE_CASES
        if c[0] in ("btree_big_values", "btree_u64_many", "btree_v1_migrated", "cell_and_map")
    ],
)
def test_entry_ranges_hold_the_bytes(fixture: str, name: str) -> None:
    """Key/value spans → memory ranges → physical ranges give back exactly the entry's bytes."""
    bt, _exp, _s = _fixture_map(fixture, name)
    raw = _bytes(FIXTURES / fixture / "stable_memory.bin")
    split_values = 0
    for _depth, node in bt.iter_nodes():
        for e in node.entries:
            assert b"".join(bt.mem.read(a, b - a) for a, b in e.key_ranges) == e.key
            phys = bt.physical_ranges(e.value_ranges)
            assert b"".join(raw[a:b] for a, b in phys) == e.value
            split_values += len(phys) > 1
        assert node.ranges[0][0] == node.addr
    if fixture == "btree_big_values":
        assert split_values > 0  # values cross overflow pages and bucket boundaries


# --- the fast path is pinned to the construct declarations --------------------------------------------------


def _independent_v2(
    stream: bytes, internal: bool, k: int, key_fixed: int
) -> tuple[list[int], list[bytes], list[bytes]]:
    """A construct-declared v2 node body (FORMAT.md §3.6), independent of the walker's struct code."""
    key = Bytes(key_fixed) if key_fixed else Prefixed(Int32ul, GreedyBytes)
    body = Struct(
        "prefix" / V2NodePrefix,
        "children" / Array(k + 1 if internal else 0, Int64ul),
        "keys" / Array(k, key),
        "values" / Array(k, Prefixed(Int32ul, GreedyBytes)),
    )
    parsed = body.parse(stream)
    return list(parsed.children), list(parsed["keys"]), list(parsed["values"])


@pytest.mark.parametrize(
    ("fixture", "name"),
    [
        c
        for c in BTREE_CASES
        if c[0] in ("btree_big_values", "btree_u64_many", "btree_v1_migrated", "cell_and_map")
    ],
)
def test_fast_path_matches_construct_declarations(fixture: str, name: str) -> None:
    bt, _exp, _s = _fixture_map(fixture, name)
    mem = bt.mem
    raw_header = mem.read(0, 100)
    hdr = BTreeMapHeader.parse(raw_header)
    alloc = AllocatorHeader.parse(raw_header[52:])
    assert (hdr.layout_version, hdr.root_addr, hdr.length) == (bt.layout_version, bt.root_addr, bt.length)
    assert (alloc.allocation_size, alloc.num_allocated_chunks, alloc.free_list_head) == (
        bt.allocation_size,
        bt.num_allocated_chunks,
        bt.free_list_head,
    )
    page = bt.page_size
    checked_overflows = 0
    for _depth, node in bt.iter_nodes():
        raw = mem.read(node.addr - 16, 16 + 15)
        chunk = ChunkHeader.parse(raw)
        nh = NodeHeader.parse(raw[16:])
        fast = CHUNK_NODE.unpack_from(raw, 0)
        assert fast[:5] == (chunk.magic, chunk.version, chunk.allocated, chunk.padding, chunk.next)
        assert fast[5:9] == (nh.magic, nh.version, nh.node_type, nh.num_entries)
        assert (nh.version, nh.num_entries) == (node.version, node.num_entries)
        if node.version == 2:
            prefix = V2NodePrefix.parse(raw[16:])
            assert fast[9] == prefix.overflow == (node.overflows[0] if node.overflows else 0)
            # Reassemble the logical stream by hand and parse it with the declarations.
            stream = mem.read(node.addr, page)
            for o in node.overflows:
                oraw = mem.read(o - 16, 16 + page)
                ochunk, ohdr = ChunkHeader.parse(oraw), OverflowPageHeader.parse(oraw[16:])
                assert CHUNK_OVERFLOW.unpack_from(oraw, 0) == (
                    ochunk.magic,
                    ochunk.version,
                    ochunk.allocated,
                    ochunk.padding,
                    ochunk.next,
                    ohdr.magic,
                    ohdr.next,
                )
                stream += oraw[16 + 11 :]
                checked_overflows += 1
            kfix = 0 if bt.key_layout == "prefixed" else int(bt.key_layout)
            children, keys, values = _independent_v2(stream, not node.is_leaf, node.num_entries, kfix)
            assert children == node.children
            assert keys == node.keys
            assert values == node.values
    if fixture in ("btree_big_values", "btree_u64_many"):
        assert checked_overflows > 0


# --- key layout inference ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "layout"),
    [
        ("btree_u64_many/stable_memory.bin", 8),
        ("standalone/v0.6.0/btree_u64_u64.bin", 8),
        ("standalone/v0.6.0/btree_u64_string.bin", 8),
        ("standalone/v0.6.0/btree_v1_migrated_u64_u64.bin", 8),
        ("standalone/v0.6.0/btree_blob10.bin", "prefixed"),  # one entry: fixed 7 would also parse
        ("standalone/v0.7.2/btree_tuple3ish.bin", "prefixed"),
        ("btree_v1_migrated/stable_memory.bin", "prefixed"),
    ],
)
def test_key_layout_inference(rel: str, layout: str | int) -> None:
    bt = _standalone(rel)
    assert bt.key_layout == layout
    assert not _codes(bt, "error")


def test_key_layout_override() -> None:
    auto = _standalone("btree_u64_many/stable_memory.bin")
    forced = BTreeMap(auto.mem, key_fixed_size=8)
    assert forced.key_layout == 8
    assert forced.walk().entries_sha256 == auto.walk().entries_sha256
    wrong = BTreeMap(auto.mem, key_fixed_size=None)  # u64 keys read as length-prefixed: garbage
    assert wrong.key_layout == "prefixed"
    assert "btree_node_invalid" in _codes(wrong)
    with pytest.raises(ValueError):
        BTreeMap(auto.mem, key_fixed_size=0)


# --- standalone images (facts from standalone/README.md) -------------------------------------------------


def test_v056_u64_u64() -> None:
    bt = _standalone("standalone/v0.5.6/btree_v1_u64_u64.bin")
    assert bt.header["page_size_kind"] == "v1_derived"
    assert (bt.max_key_size, bt.max_value_size, bt.allocation_size) == (8, 8, 367)
    w = bt.walk()
    assert w.findings == []
    assert (w.entry_count, w.nodes["count"], w.nodes["internal_count"]) == (75, 10, 1)
    assert bt.allocator["free_list_len"] == 10 and bt.frontier == 7377
    expected = [(k.to_bytes(8, "big"), (k * k).to_bytes(8, "big")) for k in range(100) if k % 4]
    assert [(e.key, e.value) for e in bt.iter_entries()] == expected


def test_v056_u64_blob10() -> None:
    bt = _standalone("standalone/v0.5.6/btree_v1_u64_blob10.bin")
    assert (bt.max_key_size, bt.max_value_size) == (8, 10)
    assert [(e.key, e.value) for e in bt.iter_entries()] == [
        (i.to_bytes(8, "big"), bytes([i]) * 4) for i in (1, 2, 3)
    ]
    assert bt.walk().findings == []


@pytest.mark.parametrize(
    ("version", "nalloc", "leaked", "frontier"), [("v0.6.0", 68, 24, 83300), ("v0.7.2", 44, 0, 81220)]
)
def test_u64_string_overflow_leak(version: str, nalloc: int, leaked: int, frontier: int) -> None:
    bt = _standalone(f"standalone/{version}/btree_u64_string.bin")
    w = bt.walk()
    assert (w.entry_count, w.nodes["count"], w.nodes["overflow_page_count"]) == (133, 21, 23)
    assert bt.num_allocated_chunks == nalloc and bt.frontier == frontier
    assert len(w.leaked_overflow_pages) == leaked
    assert w.unreached_allocated == []
    codes = {(f.severity, f.code) for f in w.findings}
    assert codes == ({("info", "leaked_overflow_pages")} if leaked else set())
    if leaked:
        finding = next(f for f in w.findings if f.code == "leaked_overflow_pages")
        assert finding.details["count"] == 24 and finding.physical_ranges
    expected = [
        (i.to_bytes(8, "big"), _big(i, 3000 if i % 17 == 0 else 10 + i % 40)) for i in range(200) if i % 3
    ]
    assert [(e.key, e.value) for e in bt.iter_entries()] == expected
    assert bt.unreachable_nodes() == []  # leaked pages are NOF, never nodes


def test_v060_u64_u64_and_blob10() -> None:
    bt = _standalone("standalone/v0.6.0/btree_u64_u64.bin")
    assert bt.page_size == 275 and bt.walk().nodes["count"] == 9
    assert [(e.key, e.value) for e in bt.iter_entries()] == [
        (k.to_bytes(8, "big"), (k * k).to_bytes(8, "big")) for k in range(50)
    ]
    blob = _standalone("standalone/v0.6.0/btree_blob10.bin")
    assert blob.page_size == 308
    assert [(e.key, e.value) for e in blob.iter_entries()] == [(b"\x01\x02\x03", b"\x04\x05\x06")]
    assert blob.walk().findings == []


def test_v060_migrated_u64_u64() -> None:
    bt = _standalone("standalone/v0.6.0/btree_v1_migrated_u64_u64.bin")
    w = bt.walk()
    assert bt.header["layout_version"] == 1 and bt.header["page_size_kind"] == "v2_derived"
    assert bt.header["page_size"] == 367
    assert (w.entry_count, w.nodes["count"]) == (175, 31)
    assert w.nodes["v1_node_count"] > 0 and w.nodes["v2_node_count"] > 0
    assert w.findings == []
    keys = [int.from_bytes(e.key, "big") for e in bt.iter_entries()]
    assert keys == [k for k in range(100) if k % 4] + list(range(1000, 1100))


def test_v072_tuple3_keys() -> None:
    bt = _standalone("standalone/v0.7.2/btree_tuple3ish.bin")
    got = [(e.key, e.value) for e in bt.iter_entries()]
    # (u32, String, u64): size-lengths byte, u32 BE, 1-byte BE size + "k<i>", u64 BE (FORMAT.md §7).
    expected = [
        (
            b"\x00" + i.to_bytes(4, "big") + b"\x02" + f"k{i}".encode() + (7).to_bytes(8, "big"),
            i.to_bytes(4, "big") + (9).to_bytes(8, "big"),
        )
        for i in range(5)
    ]
    assert got == expected
    assert bt.walk().findings == []


@pytest.mark.parametrize("version", ["v0.6.0", "v0.7.2"])
def test_v1_slot_overflow(version: str) -> None:
    bt = _standalone(f"standalone/{version}/corrupt_v1_slot_overflow.bin")
    w = bt.walk()
    errors = [f for f in w.findings if f.severity == "error"]
    assert [f.code for f in errors] == ["v1_slot_overflow"]
    assert errors[0].details["lengths"] == [(8, 50)] and errors[0].physical_ranges
    first = next(bt.iter_entries())
    assert first.key == (1).to_bytes(8, "big")
    assert len(first.value) == 50 and first.value[:10] == b"\xab" * 10  # the slot's share, then entry 2
    assert bt.node(bt.root_addr).entries[0].slot_overflow


def test_upstream_packed_headers_dump() -> None:
    bt = _standalone("upstream/btreemap_v1_packed_headers.dump")
    h = bt.header
    assert (h["max_key_size"], h["max_value_size"], h["root_addr"], h["length"]) == (10, 10, 0x74, 1)
    assert h["page_size_kind"] == "v1_derived" and h["page_size"] == 411
    assert bt.allocator["free_list"] == [0x20F]
    assert [(e.key, e.value) for e in bt.iter_entries()] == [(b"\x01\x02\x03", b"\x04\x05\x06")]
    assert bt.walk().findings == []
    grid = list(bt.chunk_grid())
    assert grid == [Chunk(100, 116, True, True, 0, "BTN"), Chunk(0x20F, 0x21F, True, False, 0, "other")]


def test_mm_quickstart_u128_map() -> None:
    require_fixtures()
    mem = _mm_memory(_bytes(STANDALONE / "v0.6.0/mm_quickstart.bin"), 1)
    bt = BTreeMap(mem, memory_id=1)
    w = bt.walk()
    assert bt.page_size == 407 and bt.key_layout == 16
    assert (w.entry_count, w.nodes["count"], w.nodes["overflow_page_count"]) == (100, 19, 1)
    assert w.findings == []
    assert [(e.key, e.value) for e in bt.iter_entries()] == [
        ((7 * i).to_bytes(16, "big"), (1000 * i + 1).to_bytes(16, "big")) for i in range(100)
    ]


def test_chunk_grid_matches_walk() -> None:
    bt = _standalone("btree_u64_many/stable_memory.bin")
    w = bt.walk()
    grid = list(bt.chunk_grid())
    assert all(c.magic_ok for c in grid)
    assert grid[-1].addr == bt.frontier and not grid[-1].allocated and grid[-1].next == 0
    allocated = [c for c in grid if c.allocated]
    assert len(allocated) == bt.num_allocated_chunks
    assert sum(c.payload == "BTN" for c in allocated) == w.nodes["count"]
    assert sum(c.payload == "NOF" for c in allocated) == w.nodes["overflow_page_count"]
    assert sorted(c.addr for c in grid if not c.allocated) == sorted(bt.allocator["free_list"])


# --- laziness and speed --------------------------------------------------------------------------------


class _CountingMemory(PhysicalMemory):
    def __init__(self, buf: bytes) -> None:
        super().__init__(buf, len(buf))
        self.calls = 0

    def contiguous(self, offset: int) -> tuple[Any, int, int]:
        self.calls += 1
        return super().contiguous(offset)


def test_first_page_is_lazy() -> None:
    require_fixtures()
    mem = _CountingMemory(_bytes(FIXTURES / "btree_u64_many/stable_memory.bin"))
    bt = BTreeMap(mem)
    first = list(islice(bt.iter_entries(), 20))
    assert len(first) == 20
    assert (
        mem.calls < 150
    )  # a root-to-leaf path, a few leaves and the bounded key-layout probe, not 2,572 nodes


def test_walk_reads_each_node_once() -> None:
    """The full walk's work is one read per node and overflow page (plus the header and the bounded
    key-layout probe); its speed is measured by `stable-inspect bench`, not here."""
    require_fixtures()
    mem = _CountingMemory(_bytes(FIXTURES / "btree_u64_many/stable_memory.bin"))
    w = BTreeMap(mem).walk()
    exp = load_expected("btree_u64_many")["structures"][0]
    assert w.entry_count == exp["header"]["length"] == 17_000
    assert w.nodes["count"] == exp["nodes"]["count"]
    assert mem.calls <= w.nodes["count"] + w.nodes["overflow_page_count"] + 200


# --- salvage: unreachable nodes ----------------------------------------------------------------------------


def test_post_upgrade_unreachable_nodes() -> None:
    bt, exp, _s = _fixture_map("migration/post_upgrade", "ENTRIES")
    salvage = exp["old_data"]["salvage"]
    old_nodes = {n["addr"]: n for n in exp["old_data"]["old_map_nodes"]["list"]}
    recoverable_addrs = {a for a, n in old_nodes.items() if n["entries_recoverable"]}
    # The re-created map's allocator has only the new root allocated: every old node is past its frontier.
    assert bt.unreachable_nodes() == []

    beyond = bt.unreachable_nodes(beyond_frontier=True)
    beyond_keys = {k.decode() for n in beyond for k in n.keys}
    assert {n.addr for n in beyond} == recoverable_addrs - {bt.frontier + 16}
    assert len(beyond) == 26 and len(beyond_keys) == 180
    assert beyond_keys <= set(salvage["recoverable_keys"])

    # Old leaf 1156 sits in the chunk that became the new frontier (header rewritten as free).
    with_frontier = bt.unreachable_nodes(beyond_frontier=True, include_frontier=True)
    keys = [k.decode() for n in with_frontier for k in n.keys]
    assert {n.addr for n in with_frontier} == recoverable_addrs
    assert sorted(keys) == sorted(salvage["recoverable_keys"]) and len(keys) == 190
    assert not set(keys) & set(salvage["lost_keys"])
    with pytest.raises(NodeError):
        bt.node(bt.frontier + 16)  # node() itself still refuses a free chunk

    # The recovered values are the pre_upgrade values.
    pre = _structure(load_expected("migration/pre_upgrade"), "ENTRIES")
    pre_values = {bytes.fromhex(e["key_hex"]): e["value_sha256"] for e in pre["entries"]}
    for node in with_frontier:
        assert isinstance(node, Node)
        for e in node.entries:
            assert hashlib.sha256(e.value).hexdigest() == pre_values[e.key]


def test_reinit_after_didl_stale_nodes() -> None:
    """An empty map re-created over an old one: its 19 stale nodes hold all 100 old entries."""
    require_fixtures()
    mem = _mm_memory(_bytes(STANDALONE / "v0.6.0/corrupt_mm_reinit_after_didl.bin"), 1)
    bt = BTreeMap(mem, memory_id=1)
    assert bt.root_addr == 0 and bt.walk().findings == [] and list(bt.iter_entries()) == []
    assert bt.unreachable_nodes() == []
    nodes = bt.unreachable_nodes(beyond_frontier=True, include_frontier=True)
    entries = sorted(
        (int.from_bytes(e.key, "big"), int.from_bytes(e.value, "big")) for n in nodes for e in n.entries
    )
    assert len(nodes) == 19
    assert entries == [(7 * i, 1000 * i + 1) for i in range(100)]


# --- corruption: mutated real bytes give findings, never exceptions ----------------------------------------


def _u64_many() -> tuple[bytes, BTreeMap]:
    require_fixtures()
    data = _bytes(FIXTURES / "btree_u64_many/stable_memory.bin")
    return data, BTreeMap(PhysicalMemory(data, len(data)))


def _first_leaf(bt: BTreeMap) -> Node:
    return next(node for _d, node in bt.iter_nodes() if node.is_leaf)


def test_bad_magics() -> None:
    data, _bt = _u64_many()
    bad = _standalone("x", _patch(data, 0, b"XYZ"))
    assert _codes(bad) == {"structure_bad_magic"}
    assert bad.header["page_size_kind"] is None and list(bad.iter_entries()) == []
    assert [f.code for f in bad.header_findings()] == ["structure_bad_magic"]
    assert bad.header_findings()[0].physical_ranges == [(0, 3)]
    bad_alloc = _standalone("x", _patch(data, 52, b"XYZ"))
    assert "structure_bad_magic" in _codes(bad_alloc)
    assert bad_alloc.walk().entry_count == 17_000  # nodes are still followed
    bad_version = _standalone("x", _patch(data, 3, b"\x07"))
    assert _codes(bad_version) == {"structure_bad_magic"}


def test_child_cycle() -> None:
    data, bt = _u64_many()
    root = bt.node(bt.root_addr)
    # Root child 1 → the root itself (children start at offset 15 of a v2 node).
    mutated = _standalone("x", _patch(data, root.addr + 15 + 8, struct.pack("<Q", root.addr)))
    codes = _codes(mutated)
    assert "btree_cycle" in codes and "btree_length_mismatch" in codes
    assert sum(1 for _ in mutated.iter_entries()) < 17_000


def test_seek_counts_from_a_forked_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first count of a big map runs in a forked child: it hands back the counts an in-process pass
    gives, and seeks with them give what walking gives."""
    monkeypatch.setattr(iteration, "SEEK_BY_COUNT_FROM", 1)
    monkeypatch.setattr(iteration, "COUNT_IN_CHILD_FROM", 0)
    data, bt = _u64_many()
    walked = [(e.key, e.value, e.node_addr) for e in bt.iter_entries()]
    in_child = _standalone("x", data)
    assert in_child._count_in_child() == _standalone("x", data)._count_whole_tree()
    for start in (1, 777, 9_999, len(walked) - 1, len(walked)):
        got = [(e.key, e.value, e.node_addr) for e in islice(in_child.iter_entries(start), 9)]
        assert got == walked[start : start + 9]
    assert isinstance(in_child._subtree_counts, dict) and in_child._subtree_counts


def test_seek_walks_when_the_tree_is_not_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child loop, a shared subtree or a bad child address: the counts are refused and a seek walks, so
    it gives what the walk gives."""
    monkeypatch.setattr(iteration, "SEEK_BY_COUNT_FROM", 1)
    data, bt = _u64_many()
    root = bt.node(bt.root_addr)
    leaf = [node for _d, node in bt.iter_nodes() if node.is_leaf][-1]
    for child in (root.addr, leaf.addr, root.children[0] + 1):
        mutated = _patch(data, root.addr + 15 + 8, struct.pack("<Q", child))
        walked = [(e.key, e.node_addr) for e in _standalone("x", mutated).iter_entries()]
        seek = _standalone("x", mutated)
        for start in (1, 5_000, len(walked) - 3, len(walked)):
            got = [(e.key, e.node_addr) for e in islice(seek.iter_entries(start), 5)]
            assert got == walked[start : start + 5]
        assert seek._subtree_counts is False


def test_bad_child_addresses() -> None:
    data, bt = _u64_many()
    root = bt.node(bt.root_addr)
    for bad_child in (root.children[0] + 1, 0, 2**63, bt.frontier + 16):
        mutated = _standalone("x", _patch(data, root.addr + 15, struct.pack("<Q", bad_child)))
        w = mutated.walk()
        invalid = [f for f in w.findings if f.code == "btree_node_invalid"]
        assert invalid and invalid[0].details["addr"] == bad_child
        assert "btree_length_mismatch" in _codes(mutated)


def test_shared_subtree_and_uneven_depth() -> None:
    data, bt = _u64_many()
    root = bt.node(bt.root_addr)
    # The rightmost leaf, hung under the root as child 1: met first at depth 1, then again at depth 4.
    leaf = [node for _d, node in bt.iter_nodes() if node.is_leaf][-1]
    mutated = _standalone("x", _patch(data, root.addr + 15 + 8, struct.pack("<Q", leaf.addr)))
    codes = _codes(mutated)
    assert {"btree_node_invalid", "btree_cycle", "btree_length_mismatch"} <= codes


def test_absurd_entry_count_and_bad_node_header() -> None:
    data, bt = _u64_many()
    root = bt.root_addr
    for offset, value in (
        (5, b"\xff\xff"),
        (5, b"\x00\x00"),
        (0, b"XXX"),
        (3, b"\x09"),
        (4, b"\x05"),
        (3, b"\x01"),
    ):
        mutated = _standalone("x", _patch(data, root + offset, value))
        w = mutated.walk()
        assert "btree_node_invalid" in _codes(mutated), (offset, value)
        assert w.entry_count == 0 and "btree_length_mismatch" in _codes(mutated)
    # The chunk header of a node says free.
    mutated = _standalone("x", _patch(data, root - 16 + 4, b"\x00"))
    assert "btree_node_invalid" in _codes(mutated)


def test_overflow_chain_damage() -> None:
    data, bt = _u64_many()
    node = next(n for _d, n in bt.iter_nodes() if n.overflows)
    page = node.overflows[0]
    bad_magic = _standalone("x", _patch(data, page, b"XXX"))
    assert "btree_node_invalid" in _codes(bad_magic)
    loop = _standalone("x", _patch(data, page + 3, struct.pack("<Q", page)))
    assert "btree_cycle" in _codes(loop)
    too_long = _standalone("x", _patch(data, page + 3, struct.pack("<Q", bt.frontier + 16)))
    assert "btree_node_invalid" in _codes(too_long)


def test_free_list_damage() -> None:
    data, bt = _u64_many()
    free = bt.allocator["free_list"]
    # A hop that loops back to the head.
    loop = _standalone("x", _patch(data, free[3] + 8, struct.pack("<Q", free[0])))
    assert "allocator_free_list_broken" in _codes(loop)
    assert loop.walk().entry_count == 17_000
    # A hop into an allocated chunk.
    allocated = bt.root_addr - 16
    into_alloc = _standalone("x", _patch(data, free[0] + 8, struct.pack("<Q", allocated)))
    assert "allocator_free_list_broken" in _codes(into_alloc)
    # Ending early: a middle hop claims to be the frontier.
    early = _standalone("x", _patch(data, free[5] + 8, struct.pack("<Q", 0)))
    assert "allocator_free_list_broken" in _codes(early) or "allocator_count_mismatch" in _codes(early)
    # Head not on the grid.
    off_grid = _standalone("x", _patch(data, 76, struct.pack("<Q", free[0] + 1)))
    assert "allocator_free_list_broken" in _codes(off_grid)


def test_count_and_length_mismatch() -> None:
    data, bt = _u64_many()
    nalloc = _standalone("x", _patch(data, 68, struct.pack("<Q", bt.num_allocated_chunks + 1)))
    assert _codes(nalloc) == {"allocator_count_mismatch"}
    length = _standalone("x", _patch(data, 20, struct.pack("<Q", 16_999)))
    assert _codes(length) == {"btree_length_mismatch"}
    # A reachable leaf's chunk flipped to free: count mismatches and the node is refused.
    leaf = _first_leaf(bt)
    freed = _standalone("x", _patch(data, leaf.addr - 16 + 4, b"\x00"))
    assert {"btree_node_invalid", "allocator_count_mismatch"} <= _codes(freed)


def test_key_order_is_only_a_warning() -> None:
    data, bt = _u64_many()
    leaf = _first_leaf(bt)
    (a, _), (b, _) = leaf.entries[0].key_ranges[0], leaf.entries[1].key_ranges[0]
    swapped = _patch(_patch(data, a, data[b : b + 8]), b, data[a : a + 8])
    mutated = _standalone("x", swapped)
    assert _codes(mutated) == {"btree_key_order"}
    assert {f.severity for f in mutated.walk().findings} == {"warning"}


def test_v1_allocation_size_warning() -> None:
    require_fixtures()
    data = _bytes(FIXTURES / "upstream/btreemap_v1_packed_headers.dump")
    bt = _standalone("x", _patch(data, 60, struct.pack("<Q", 412)))
    findings = [f for f in bt.walk().findings if f.code == "btree_allocation_size_mismatch"]
    assert findings and findings[0].severity == "warning"
    assert [(e.key, e.value) for e in bt.iter_entries()] == [(b"\x01\x02\x03", b"\x04\x05\x06")]


def test_hostile_header_sizes() -> None:
    data, _bt = _u64_many()
    for patch in (
        (4, struct.pack("<I", 0xFFFF_FFF0)),  # page size larger than memory
        (4, struct.pack("<I", 3)),  # page size below the headers
        (60, struct.pack("<Q", 0)),  # allocation size 0
        (60, struct.pack("<Q", 2**63)),
        (12, struct.pack("<Q", 2**64 - 1)),  # root far away
    ):
        bt = _standalone("x", _patch(data, *patch))
        assert any(f.severity == "error" for f in bt.walk().findings), patch
        list(islice(bt.iter_entries(), 10))
        bt.unreachable_nodes(beyond_frontier=True)
    v1 = _bytes(FIXTURES / "btree_v1/stable_memory.bin")
    huge = _standalone("x", _patch(v1, 4, struct.pack("<II", 0xFFFF_FFFF, 0xFFFF_FFFF)))
    assert not huge.walkable and "btree_node_invalid" in _codes(huge)


def test_truncated_memory() -> None:
    data, bt = _u64_many()
    for size in (50, 120, 4096, len(data) // 2):
        cut = BTreeMap(PhysicalMemory(data, size))
        assert any(f.severity == "error" for f in cut.walk().findings)
        list(islice(cut.iter_entries(), 10))


@pytest.mark.parametrize(
    "rel",
    [
        "btree_v1_migrated/stable_memory.bin",
        "standalone/v0.6.0/btree_u64_string.bin",
        "standalone/v0.6.0/corrupt_v1_slot_overflow.bin",
    ],
)
def test_random_byte_damage_never_raises(rel: str) -> None:
    require_fixtures()
    data = bytearray(_bytes(FIXTURES / rel))
    used = next(i for i in range(len(data) - 1, 0, -1) if data[i]) + 1  # flip only inside the map's bytes
    rnd = random.Random(rel)
    deadline = time.perf_counter() + 3.0
    for _ in range(120):
        mutated = bytearray(data)
        for _ in range(rnd.choice((1, 2, 8, 40))):
            pos = rnd.randrange(used)
            mutated[pos] = rnd.choice((0, 1, 2, 0xFF, rnd.randrange(256)))
        bt = BTreeMap(PhysicalMemory(bytes(mutated), len(mutated)))
        w = bt.walk()
        assert w.entry_count <= 17_000
        list(islice(bt.iter_entries(), 300))
        list(islice(bt.iter_entries_from_key(b"acct:m"), 20))
        bt.unreachable_nodes(beyond_frontier=True, include_frontier=True)
        _ = bt.header, bt.allocator, bt.key_layout
        try:
            bt.node(bt.root_addr)
        except NodeError:
            pass
        if time.perf_counter() > deadline:
            break


def _every_candidate(m: BTreeMap, monkeypatch: pytest.MonkeyPatch) -> int:
    """The key layout the inference picks when it scores every candidate size (no early stop): the
    reference for the stop after a perfect score."""
    seen: dict[str, Any] = {}
    real = BTreeMap._infer_key_layout

    def spy(self: BTreeMap, addrs: list[int], reads: Any = None) -> None:
        seen["nodes"] = [(reads or {}).get(a) or self._read_node(a, allow_free=True) for a in addrs]
        real(self, addrs, reads)

    monkeypatch.setattr(BTreeMap, "_infer_key_layout", spy)
    _ = m.key_layout
    nodes = [n for n in seen["nodes"] if n[0] == 2]
    scores = []
    for cand in m._key_candidates():
        failures = empties = 0
        for _v, ntype, k, buf, base, end, ovf in nodes:
            got = m._try_layout(cand, ntype, k, buf, base, end, ovf)
            failures, empties = (failures + 1, empties) if got < 0 else (failures, empties + got)
        scores.append(((failures, empties, 0 if cand == 0 else 1, cand), cand))
    return min(scores)[1]


@pytest.mark.parametrize("shape", ["u64", "fixed16", "strings", "one entry", "empty values", "empty keys"])
def test_key_layout_stops_at_a_perfect_score_and_picks_what_every_candidate_would(
    shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inspector.forge import RawImage, forge_btreemap, forge_btreemap_columns, forge_u64_btreemap

    rng = random.Random(shape)
    keys = sorted(rng.sample(range(1 << 40), 300))
    if shape == "u64":
        fm = forge_u64_btreemap(keys, [k * 7 for k in keys])
    elif shape == "fixed16":
        ks = [k.to_bytes(16, "big") for k in keys]
        fm = forge_btreemap_columns(ks, [b"v" * (k % 9 + 1) for k in keys], fixed_key_size=16)
    elif shape == "strings":
        fm = forge_btreemap(sorted((f"key-{k}".encode(), b"x" * (k % 5 + 1)) for k in keys))
    elif shape == "one entry":
        fm = forge_btreemap([(b"0123456", b"value")])
    elif shape == "empty values":
        fm = forge_btreemap(sorted((f"k{k}".encode(), b"") for k in keys))
    else:
        fm = forge_btreemap([(b"", b"a")] + sorted((f"k{k}".encode(), b"b") for k in keys))
    image = RawImage()
    image.place(fm)
    data = image.to_bytes()
    reference = BTreeMap(PhysicalMemory(data, len(data)))
    want = _every_candidate(reference, monkeypatch)
    monkeypatch.undo()
    tried: list[int] = []
    real = BTreeMap._try_layout

    def counted(self: BTreeMap, kfix: int, *rest: Any) -> int:
        tried.append(kfix)
        return real(self, kfix, *rest)

    monkeypatch.setattr(BTreeMap, "_try_layout", counted)
    m = BTreeMap(PhysicalMemory(data, len(data)))
    assert m.key_layout == ("prefixed" if want == 0 else want)
    if shape in ("u64", "fixed16", "strings"):  # a perfect score early: the rest is not tried
        assert max(tried) <= 16
