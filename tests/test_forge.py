"""Tests of the forge (inspector/forge/): byte identity with real-library images, and invariants.

The forge is checked two ways:
* against images written by the real ic-stable-structures (``../shared/fixtures``, skipped if absent);
* with a small, independent reader in this file that re-parses forged images through the construct
  declarations and asserts the B-tree / allocator / MemoryManager invariants of FORMAT.md §2–§3.
When the project's own walker (``inspector.structures.btreemap``) is importable, forged maps are also
walked with it and must come back exactly, without error findings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, require_fixtures

# `snapshots` is a top-level folder of the project, not part of the installed `inspector` package.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inspector.forge import (  # noqa: E402
    NAT8,
    NAT64,
    TEXT,
    ForgedBTreeMap,
    MemoryManagerImage,
    Opt,
    RawImage,
    Record,
    Variant,
    VecOf,
    Written,
    apply_stable_save,
    build_mm_image,
    candid_message,
    candid_type_section,
    candid_values,
    cell,
    forge_btreemap,
    forge_btreemap_columns,
    forge_btreemap_v1,
    forge_u64_btreemap,
    idl_hash,
    leb128,
    log,
    minheap,
    reinit_memory_manager,
    sleb128,
    stable_save_message,
    u64_be,
    vec,
)
from inspector.forge import samples as forge_samples  # noqa: E402
from inspector.layouts import (  # noqa: E402
    ALLOCATOR_HEADER,
    BTREE_HEADER,
    CHUNK_HEADER,
    MM_HEADER,
    NODE_HEADER,
    OVERFLOW_HEADER,
    PAGE_SIZE_VALUE_MARKER,
    V2_NODE_PREFIX,
    AllocatorHeader,
    BTreeMapHeader,
    ChunkHeader,
    MemoryManagerHeader,
    NodeHeader,
    OverflowPageHeader,
    V2NodePrefix,
    v1_node_size,
)

PAGE = 65_536
STANDALONE = FIXTURES / "standalone" / "v0.6.0"
SAMPLES = ROOT / "snapshots" / "samples"


def fixture_bytes(rel: str) -> bytes:
    require_fixtures()
    return (FIXTURES / rel).read_bytes()


# --- An independent reader for forged images ----------------------------------------------------------


def mm_memories(image: bytes) -> tuple[dict[str, Any], dict[int, bytes]]:
    """Parse a MemoryManager image and return (header, memory id → virtual bytes)."""
    header = MemoryManagerHeader.parse(image[:2080])
    assert header.magic == b"MGR" and header.layout_version == 1
    bs = header.bucket_size_in_pages * PAGE
    nb = header.num_allocated_buckets
    table = image[2080 : 2080 + 32_768]
    assert all(b == 0xFF for b in table[nb:]), "table entries past num_allocated_buckets"
    buckets: dict[int, list[int]] = {}
    for b in range(nb):
        buckets.setdefault(table[b], []).append(b)
    memories = {}
    for mid, bl in buckets.items():
        size = header.memory_sizes_in_pages[mid] * PAGE
        assert -(-size // bs) == len(bl), f"memory {mid}: size and bucket count disagree"
        virt = b"".join(image[PAGE + b * bs : PAGE + (b + 1) * bs] for b in bl)
        memories[mid] = virt[:size]
    return dict(header), memories


def _chunk(mem: bytes, addr: int) -> tuple[bytes, int, int, int]:
    magic, version, allocated, _pad, nxt = CHUNK_HEADER.unpack_from(mem, addr)
    assert magic == b"CHK" and version == 1, f"no chunk header at {addr}"
    return magic, version, allocated, nxt


def read_map(mem: bytes, fixed_key: int | None = None) -> dict[str, Any]:
    """Walk a BTreeMap and assert its invariants; returns entries (in order) and statistics."""
    magic, version, size_a, size_b, root, length, _res = BTREE_HEADER.unpack_from(mem, 0)
    assert magic == b"BTR"
    a_magic, a_version, _pad, alloc_size, nalloc, free_head, _r = ALLOCATOR_HEADER.unpack_from(mem, 52)
    assert a_magic == b"BTA" and a_version == 1
    if version == 2:
        assert size_b == PAGE_SIZE_VALUE_MARKER
        page = size_a
    else:
        assert version == 1
        page = v1_node_size(size_a, size_b)
    assert alloc_size == page
    stride = page + 16

    # Free list: free chunks, ending at the frontier (next = 0), which must be the highest chunk.
    free = []
    addr = free_head
    while True:
        assert (addr - 100) % stride == 0 and addr not in free
        _m, _v, allocated, nxt = _chunk(mem, addr)
        assert allocated == 0
        free.append(addr)
        if nxt == 0:
            break
        addr = nxt
    frontier = free[-1]
    below = (frontier - 100) // stride
    allocated_scan = sum(_chunk(mem, 100 + j * stride)[2] for j in range(below))
    assert allocated_scan == nalloc
    assert below == nalloc + len(free) - 1
    assert max(free) == frontier and len(mem) >= frontier + 16

    entries: list[tuple[bytes, bytes]] = []
    stats = {"nodes": 0, "leaves": 0, "overflow_pages": 0, "leaf_depths": set(), "node_addrs": []}

    def node_stream(addr: int) -> tuple[bytes, list[int]]:
        assert (addr - 116) % stride == 0, f"node {addr} off the chunk grid"
        assert _chunk(mem, addr - 16)[2] == 1, f"node {addr} in a free chunk"
        _m, _v, _t, _k, first_over = V2_NODE_PREFIX.unpack_from(mem, addr)
        stream = bytearray(mem[addr : addr + page])
        pages = []
        over = first_over
        while over:
            assert (over - 116) % stride == 0 and _chunk(mem, over - 16)[2] == 1 and over not in pages
            o_magic, nxt = OVERFLOW_HEADER.unpack_from(mem, over)
            assert o_magic == b"NOF"
            stream += mem[over + 11 : over + page]
            pages.append(over)
            over = nxt
        return bytes(stream), pages

    def visit(addr: int, depth: int, is_root: bool) -> None:
        n_magic, n_version, n_type, k = NODE_HEADER.unpack_from(mem, addr)
        assert n_magic == b"BTN" and n_version == version
        assert (1 if is_root else 5) <= k <= 11, f"node {addr} has {k} entries"
        stats["nodes"] += 1
        stats["node_addrs"].append(addr)
        keys: list[bytes] = []
        values: list[bytes] = []
        children: list[int] = []
        if version == 1:
            _chunk(mem, addr - 16)
            off = addr + 7
            mk, mv = size_a, size_b
            for _ in range(k):
                klen = int.from_bytes(mem[off : off + 4], "little")
                keys.append(mem[off + 4 : off + 4 + klen])
                off += 4 + mk
                vlen = int.from_bytes(mem[off : off + 4], "little")
                values.append(mem[off + 4 : off + 4 + vlen])
                off += 4 + mv
            if n_type == 1:
                children = [
                    int.from_bytes(mem[off + 8 * i : off + 8 * i + 8], "little") for i in range(k + 1)
                ]
        else:
            stream, pages = node_stream(addr)
            stats["overflow_pages"] += len(pages)
            off = 15
            if n_type == 1:
                children = [
                    int.from_bytes(stream[off + 8 * i : off + 8 * i + 8], "little") for i in range(k + 1)
                ]
                off += 8 * (k + 1)
            for _ in range(k):
                if fixed_key is None:
                    klen = int.from_bytes(stream[off : off + 4], "little")
                    off += 4
                else:
                    klen = fixed_key
                keys.append(stream[off : off + klen])
                off += klen
            for _ in range(k):
                vlen = int.from_bytes(stream[off : off + 4], "little")
                values.append(stream[off + 4 : off + 4 + vlen])
                off += 4 + vlen
            # Exactly as many overflow pages as the stream needs (FORMAT.md §3.6).
            needed = 0 if off <= page else -(-(off - page) // (page - 11))
            assert len(pages) == needed, f"node {addr}: {len(pages)} overflow pages, {needed} needed"
        if n_type == 0:
            stats["leaves"] += 1
            stats["leaf_depths"].add(depth)
            entries.extend(zip(keys, values, strict=True))
            return
        assert n_type == 1
        for i, child in enumerate(children):
            visit(child, depth + 1, False)
            if i < k:
                entries.append((keys[i], values[i]))

    if root:
        visit(root, 0, True)
    assert len(stats["leaf_depths"]) <= 1, "leaves at different depths"
    assert len(entries) == length
    keys = [k for k, _v in entries]
    assert keys == sorted(set(keys)), "keys not strictly increasing"
    # Nothing leaks: every allocated chunk is a reachable node or overflow page.
    assert stats["nodes"] + stats["overflow_pages"] == nalloc
    return {
        "entries": entries,
        "nodes": stats["nodes"],
        "leaves": stats["leaves"],
        "overflow_pages": stats["overflow_pages"],
        "depth": (max(stats["leaf_depths"]) + 1) if root else 0,
        "free_list": free,
        "nalloc": nalloc,
        "root": root,
        "node_addrs": stats["node_addrs"],
    }


def assert_matches_forge(fm: ForgedBTreeMap, walked: dict[str, Any]) -> None:
    assert walked["entries"] == list(fm.entries())
    assert walked["nodes"] == fm.node_count
    assert walked["leaves"] == fm.leaf_count
    assert walked["overflow_pages"] == fm.overflow_count
    assert walked["depth"] == fm.depth
    assert walked["free_list"] == fm.free_list
    assert walked["nalloc"] == fm.num_allocated_chunks
    assert walked["root"] == fm.root_addr
    assert sorted(walked["node_addrs"]) == sorted(fm.all_node_addrs())


def u64_map(n: int, **kwargs: Any) -> ForgedBTreeMap:
    """k → k² for k = 0, 3, 6, …: a ``StableBTreeMap<u64, u64>`` (page size 275)."""
    return forge_u64_btreemap(range(0, 3 * n, 3), (k * k for k in range(0, 3 * n, 3)), **kwargs)


# --- Byte identity with the real library --------------------------------------------------------------


def test_mm_header_page_matches_real_library() -> None:
    ref = fixture_bytes("mm_empty/stable_memory.bin")
    mm = MemoryManagerImage(128)
    mm.grow(0, 1)
    image = mm.to_bytes()
    assert image[:PAGE] == ref[:PAGE]
    assert image == ref


def test_hello_image_matches_real_library() -> None:
    ref = fixture_bytes("standalone/v0.6.0/mm_fresh_1bucket.bin")
    mm = MemoryManagerImage(128)
    mm.grow(0, 1)
    mm.write(0, 0, b"HELLO")
    image = mm.to_bytes()
    assert hashlib.sha256(image).hexdigest().startswith("abd79127")
    assert image == ref


def test_btreemap_v1_matches_upstream_dump() -> None:
    ref = fixture_bytes("upstream/btreemap_v1_packed_headers.dump")
    img = RawImage()
    img.place(forge_btreemap_v1([(bytes([1, 2, 3]), bytes([4, 5, 6]))], 10, 10))
    assert img.to_bytes() == ref


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("cell_string.bin", lambda: cell(b"hello cell")),
        ("vec_u64.bin", lambda: vec(u64_be(range(0, 30, 3)), 8, True)),
        ("vec_blob300.bin", lambda: vec([bytes([i]) * (10 * i) for i in range(5)], 300, False)),
        ("minheap_u32.bin", lambda: minheap([x.to_bytes(4, "big") for x in (5, 3, 9, 1, 7)], 4, True)),
        ("log_index.bin", lambda: log([b"a", b"bb", b"", b"dddd"])[0]),
        ("log_data.bin", lambda: log([b"a", b"bb", b"", b"dddd"])[1]),
    ],
)
def test_simple_structures_match_real_library(name: str, content: Any) -> None:
    ref = fixture_bytes(f"standalone/v0.6.0/{name}")
    img = RawImage()
    img.place(content())
    assert img.to_bytes() == ref


def test_stable_save_and_reinit_match_real_library() -> None:
    quickstart = fixture_bytes("standalone/v0.6.0/mm_quickstart.bin")
    message = stable_save_message([VecOf(NAT8)], [bytes(0x30 + x % 7 for x in range(300))])
    assert message[:10] == bytes.fromhex("4449444c016d7b0100ac")
    corrupt = apply_stable_save(quickstart, message)
    assert bytes(corrupt) == fixture_bytes("standalone/v0.6.0/corrupt_didl_over_mm.bin")
    # post_upgrade: MemoryManager::init over the blob, then BTreeMap<u128,u128>::init(memory 1).
    mm = MemoryManagerImage(128, base=corrupt)
    mm.place(1, forge_btreemap([], page_size=407))
    assert mm.to_bytes() == fixture_bytes("standalone/v0.6.0/corrupt_mm_reinit_after_didl.bin")


# --- Candid --------------------------------------------------------------------------------------------


def test_candid_small_examples() -> None:
    # FORMAT.md §8.3
    assert candid_message([NAT64], [42]) == bytes.fromhex("4449444c000178") + (42).to_bytes(8, "little")
    assert candid_message([VecOf(NAT8)], [bytes([1, 2, 3])]) == bytes.fromhex("4449444c016d7b0100 03010203")
    assert leb128(624485) == bytes.fromhex("e58e26")
    assert sleb128(-123456) == bytes.fromhex("c0bb78")
    assert sleb128(-1) == b"\x7f" and sleb128(63) == b"\x3f" and sleb128(64) == b"\xc0\x00"
    # Field ids sort the record; a variant value is its index in id order.
    assert idl_hash("a") == 97
    r = Record.of({"b": TEXT, "a": Opt(TEXT)})
    assert [f[0] for f in r.fields] == ["a", "b"]
    v = Variant.of({"Owner": TEXT, "Guest": TEXT})
    assert v.index_of("Owner") == sorted([idl_hash("Owner"), idl_hash("Guest")]).index(idl_hash("Owner"))


def _principal_bytes(text: str) -> bytes:
    raw = text.replace("-", "").upper()
    raw += "=" * (-len(raw) % 8)
    return base64.b32decode(raw)[4:]  # drop the CRC-32


def _from_js(value: Any, t: Any) -> Any:
    """Turn @dfinity/candid's JSON rendering back into forge values for type t."""
    if isinstance(t, Opt):
        return _from_js(value[0], t.inner) if value else None
    if isinstance(t, VecOf):
        return [_from_js(x, t.inner) for x in value]
    if isinstance(t, Record):
        return {name: _from_js(value[name], ft) for name, ft in t.fields}
    if isinstance(t, Variant):
        return value
    if t.name in ("nat64", "int64"):
        return int(value)
    if t.name == "principal":
        return _principal_bytes(value)
    return value


def test_candid_values_match_official_encoder() -> None:
    """Same values section as @dfinity/candid, and same total length (its type table order differs)."""
    require_fixtures()
    expected = json.loads((FIXTURES / "migration" / "pre_upgrade" / "expected.json").read_text())
    cell_s, map_s = expected["structures"]
    ref = bytes.fromhex(cell_s["value_hex"])
    data = _from_js(cell_s["value_encoding"]["decoded_by_official_js"]["decoded"], forge_samples.DATA)
    values = candid_values([forge_samples.DATA], [data])
    assert ref.endswith(values)
    assert len(candid_message([forge_samples.DATA], [data])) == len(ref)

    by_key = {bytes.fromhex(e["key_hex"]): bytes.fromhex(e["value_hex"]) for e in map_s["entries"]}
    pairs = map_s["value_encoding"]["decoded_by_official_js"]["decoded"]
    assert len(pairs) == 200
    header = candid_type_section([forge_samples.MEMBER])
    for key, member in pairs:
        ref = by_key[key.encode()]
        values = candid_values([forge_samples.MEMBER], [_from_js(member, forge_samples.MEMBER)])
        assert len(header) + len(values) == len(ref)
        assert ref[len(header) :] == values


# --- The hot loop is pinned to the construct declarations ----------------------------------------------


def test_fast_packers_equal_construct_build() -> None:
    cases = [
        (V2_NODE_PREFIX, V2NodePrefix, (b"BTN", 2, 1, 11, 0x1234_5678_9ABC)),
        (NODE_HEADER, NodeHeader, (b"BTN", 1, 0, 7)),
        (OVERFLOW_HEADER, OverflowPageHeader, (b"NOF", 987_654_321)),
        (CHUNK_HEADER, ChunkHeader, (b"CHK", 1, 1, bytes(3), 42)),
    ]
    for fast, decl, values in cases:
        assert fast.pack(*values) == decl.build(dict(zip(fast.names, values, strict=True)))


def test_forged_nodes_parse_with_construct() -> None:
    fm = u64_map(143, fill=11)  # exactly a full root over 12 full leaves
    mem = fm.to_bytes()
    header = BTreeMapHeader.parse(mem[:52])
    assert (header.magic, header.layout_version, header.size_a, header.size_b) == (b"BTR", 2, 275, 0xFFFFFFFF)
    assert header.root_addr == fm.root_addr and header.length == 143
    alloc = AllocatorHeader.parse(mem[52:100])
    assert (alloc.magic, alloc.allocation_size, alloc.num_allocated_chunks) == (
        b"BTA",
        275,
        fm.num_allocated_chunks,
    )
    root = V2NodePrefix.parse(mem[fm.root_addr : fm.root_addr + 15])
    assert (root.magic, root.version, root.node_type) == (b"BTN", 2, 1)
    # Full internal u64 nodes (11 keys) need 331 bytes > 275: they overflow into one "NOF" page.
    assert (root.num_entries, fm.overflow_count) == (11, 1)
    overflow = OverflowPageHeader.parse(mem[root.overflow : root.overflow + 11])
    assert (overflow.magic, overflow.next) == (b"NOF", 0)
    chunk = ChunkHeader.parse(mem[fm.root_addr - 16 : fm.root_addr])
    assert (chunk.magic, chunk.allocated, chunk.next) == (b"CHK", 1, 0)


# --- Structural invariants of forged maps --------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 5, 11, 12, 23, 100, 1_000, 5_000])
@pytest.mark.parametrize("fill", [5, 8, 11])
def test_u64_maps_roundtrip(n: int, fill: int) -> None:
    fm = u64_map(n, fill=fill, free_chunks=min(3, n // 20))
    assert_matches_forge(fm, read_map(fm.to_bytes(), fixed_key=8))


def test_unbounded_map_with_long_overflow_chains() -> None:
    entries = [(f"key-{i:05d}".encode(), bytes([i % 251]) * (10 + (i * 37) % 3_000)) for i in range(400)]
    fm = forge_btreemap(entries, fill=9, free_chunks=7)
    assert fm.allocation_size == 1024
    walked = read_map(fm.to_bytes())
    assert_matches_forge(fm, walked)
    assert fm.overflow_count > fm.node_count  # chains of several pages


def test_v1_map_roundtrip() -> None:
    entries = [(f"acct:{i}".encode(), bytes([i % 256]) * 32) for i in range(300)]
    entries.sort()
    fm = forge_btreemap_v1(entries, 32, 32, fill=7, free_chunks=11)
    mem = fm.to_bytes()
    assert mem[:4] == b"BTR\x01" and fm.allocation_size == v1_node_size(32, 32)
    assert_matches_forge(fm, read_map(mem))


def test_default_page_sizes() -> None:
    # FORMAT.md §3.7: both bounds → ¾ of the v1 node size; otherwise the Unbounded default 1024.
    assert u64_map(3).allocation_size == 275
    assert forge_btreemap([(b"k", b"v")], bounds=(16, 16)).allocation_size == 407
    assert forge_btreemap([(b"k", b"v")], bounds=(10, 10)).allocation_size == 308
    assert forge_btreemap([(b"k", b"v")]).allocation_size == 1024
    assert forge_btreemap_columns([bytes(8)], [b"x" * 100_000], fixed_key_size=8).allocation_size == 1024


def test_empty_map_is_header_allocator_and_frontier() -> None:
    fm = forge_btreemap([], page_size=407)
    assert list(fm.segments())[-1][0] == 100
    assert fm.free_list == [100] and fm.root_addr == 0 and fm.size == PAGE


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        forge_btreemap([(b"b", b""), (b"a", b"")])
    with pytest.raises(ValueError):
        forge_btreemap_columns([b"abc"], [b""], fixed_key_size=8)
    with pytest.raises(ValueError):
        forge_btreemap_v1([(b"x" * 11, b"")], 10, 10)
    with pytest.raises(ValueError):
        u64_map(10, fill=4)


def test_million_entries_are_consistent() -> None:
    # How long forging takes is the benchmark's business (it forges this map); here: what it wrote.
    n = 1_000_000
    fm = u64_map(n)
    mem = fm.to_bytes()
    # Allocator arithmetic from the headers and a linear scan of the whole chunk grid.
    _m, _v, _p, alloc_size, nalloc, free_head, _r = ALLOCATOR_HEADER.unpack_from(mem, 52)
    stride = alloc_size + 16
    frontier = fm.frontier
    below = (frontier - 100) // stride
    kinds = {"BTN": 0, "NOF": 0}
    allocated = 0
    for j in range(below):
        addr = 100 + j * stride
        magic, _ver, alloc, _pad, _nxt = CHUNK_HEADER.unpack_from(mem, addr)
        assert magic == b"CHK"
        if alloc:
            allocated += 1
            kinds[mem[addr + 16 : addr + 19].decode()] += 1
    assert allocated == nalloc == fm.node_count + fm.overflow_count
    assert below == nalloc + len(fm.free_list) - 1
    assert kinds == {"BTN": fm.node_count, "NOF": fm.overflow_count}
    assert all((a - 116) % stride == 0 for a in fm.all_node_addrs() + fm.overflow_addrs)
    assert free_head == fm.free_list[0] == frontier
    assert BTREE_HEADER.unpack_from(mem, 0)[5] == n
    # Every leaf at the same depth and within 5..11 entries: check the plan itself.
    leaf_sizes = [hi - lo for lo, hi in fm.levels[-1].ranges]
    assert min(leaf_sizes) >= 5 and max(leaf_sizes) <= 11
    assert sum(leaf_sizes) + sum(len(s) for level in fm.levels[:-1] for s in level.separators) == n
    # And the whole tree, walked from the root, gives back every entry.
    assert_matches_forge(fm, read_map(mem, fixed_key=8))


def test_full_walk_of_a_large_map() -> None:
    fm = u64_map(60_000, fill=10, free_chunks=100)
    assert_matches_forge(fm, read_map(fm.to_bytes(), fixed_key=8))


# --- MemoryManager images ------------------------------------------------------------------------------


def test_interleaved_growth_scatters_buckets_and_maps_correctly() -> None:
    mm = MemoryManagerImage(1)
    fm = u64_map(3_000, fill=6)
    pages = fm.size // PAGE
    for _ in range(pages):  # the map and a Vec grow in turns, so the map's buckets are not contiguous
        mm.grow(3, 1)
        mm.grow(9, 1)
    mm.place(3, fm)
    items = u64_be(range(100))
    mm.place(9, vec(items, 8, True))
    header, memories = mm_memories(mm.to_bytes())
    assert header["num_allocated_buckets"] == 2 * pages
    assert mm.buckets(3) == list(range(0, 2 * pages, 2))
    assert_matches_forge(fm, read_map(memories[3], fixed_key=8))
    assert memories[9][:3] == b"SVC" and memories[9][64 : 64 + 800] == b"".join(items)


def test_grow_fails_beyond_max_buckets() -> None:
    mm = MemoryManagerImage(1)
    assert mm.grow(0, 32_768) == 0
    assert mm.grow(1, 1) == -1
    assert mm.num_buckets == 32_768


def test_sparse_8_gib_image(tmp_path: Path) -> None:
    mm = MemoryManagerImage(128)
    fm = u64_map(1_000)
    mm.place(1, fm)
    mm.grow(2, (8 << 30) // PAGE)
    mm.write(2, (8 << 30) - 4, b"tail")
    out = tmp_path / "big.bin"
    size = mm.write_to(out)
    st = os.stat(out)
    assert st.st_size == size == PAGE + (1 + 1024) * 128 * PAGE
    if hasattr(st, "st_blocks"):
        assert st.st_blocks * 512 < 64 << 20, "sparse output should cost almost no disk"
    with open(out, "rb") as f:
        head = f.read(2080)
        assert MemoryManagerHeader.parse(head).num_allocated_buckets == 1 + 1024
        f.seek(mm.to_physical(2, (8 << 30) - 4))
        assert f.read(4) == b"tail"
        f.seek(PAGE)
        assert f.read(fm.size) == fm.to_bytes()


def test_write_to_file_equals_to_bytes(tmp_path: Path) -> None:
    mm = build_mm_image(2, [(0, cell(b"x" * 70_000)), (5, Written([(10, b"abc")])), (0, b"")])
    mm.write_physical(40_000, b"junk in the unused tail of page 0")
    sparse, dense = tmp_path / "s.bin", tmp_path / "d.bin"
    mm.write_to(sparse)
    mm.write_to(dense, sparse=False)
    assert sparse.read_bytes() == dense.read_bytes() == mm.to_bytes()


def test_apply_stable_save_semantics(tmp_path: Path) -> None:
    old = bytes(range(256)) * (2 * PAGE // 256)
    msg = b"DIDL" + b"\x01" * 100
    out = apply_stable_save(old, msg)
    assert bytes(out[:104]) == msg and bytes(out[104:]) == old[104:]  # never zero-fills, never shrinks
    grown = apply_stable_save(bytearray(PAGE), b"DIDL" + bytes(PAGE))  # needs 2 pages: grows by one
    assert len(grown) == 2 * PAGE
    assert len(apply_stable_save(b"", b"DIDL\x00\x00")) == PAGE
    path = tmp_path / "m.bin"
    path.write_bytes(old)
    apply_stable_save(path, msg)
    assert path.read_bytes() == bytes(out)


def test_reinit_memory_manager_writes_only_the_header_and_table(tmp_path: Path) -> None:
    old = b"\xab" * (3 * PAGE)
    out = reinit_memory_manager(old, 8)
    assert bytes(out[34_848:]) == old[34_848:]
    assert all(b == 0xFF for b in out[2080:34_848])
    assert MM_HEADER.parse_dict(out)["bucket_size_in_pages"] == 8
    header, memories = mm_memories(bytes(out))
    assert header["num_allocated_buckets"] == 0 and memories == {}
    path = tmp_path / "r.bin"
    path.write_bytes(old)
    reinit_memory_manager(path, 8)
    assert path.read_bytes() == bytes(out)
    # On the MemoryManagerImage side, re-init + nothing grown is the same bytes.
    assert MemoryManagerImage(8, base=old).to_bytes() == bytes(out)


def test_mm_header_rewrite_after_physical_corruption_is_kept_in_order() -> None:
    mm = MemoryManagerImage(1)
    mm.grow(0, 1)
    mm.write_physical(0, b"DIDL")  # a stray write over the header...
    assert mm.to_bytes()[:4] == b"DIDL"
    mm.grow(1, 1)  # ...is repaired by the next grow, which rewrites the whole header
    image = mm.to_bytes()
    assert image[:3] == b"MGR" and image[2080:2083] == b"\x00\x01\xff"


# --- Samples -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples() -> tuple[dict[str, bytes], dict[str, Any]]:
    return forge_samples.build_samples()


def test_samples_are_deterministic(tmp_path: Path) -> None:
    first = forge_samples.write_samples(tmp_path / "a")
    second = forge_samples.write_samples(tmp_path / "b")
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a
    total = sum(p.stat().st_size for p in first)
    assert total < 3_000_000


def test_shipped_samples_are_up_to_date(tmp_path: Path) -> None:
    if not SAMPLES.is_dir():
        pytest.skip("snapshots/samples not generated (python -m inspector.forge samples)")
    fresh = forge_samples.write_samples(tmp_path)
    for path in fresh:
        shipped = SAMPLES / path.relative_to(tmp_path)
        assert shipped.is_file() and shipped.read_bytes() == path.read_bytes(), f"regenerate {shipped}"


def test_healthy_sample(samples: tuple[dict[str, bytes], dict[str, Any]]) -> None:
    images, manifest = samples
    header, memories = mm_memories(images["healthy/stable_memory.bin"])
    info = manifest["samples"]["healthy"]
    assert header["bucket_size_in_pages"] == forge_samples.BUCKET_SIZE_PAGES
    assert sorted(memories) == [0, 4]
    cell_mem = memories[0]
    assert cell_mem[:4] == b"SCL\x01"
    n = int.from_bytes(cell_mem[4:8], "little")
    assert cell_mem[8:12] == b"DIDL" and n == info["cell"]["value_len"]
    walked = read_map(memories[4])
    assert len(walked["entries"]) == forge_samples.HEALTHY_MEMBERS
    assert all(v[:4] == b"DIDL" for _k, v in walked["entries"])
    assert walked["depth"] >= 2 and walked["overflow_pages"] > 0 and len(walked["free_list"]) == 3
    # The map is larger than one bucket, so nodes sit in two buckets.
    assert len(memories[4]) > forge_samples.BUCKET_SIZE_PAGES * PAGE


def test_after_stable_save_sample(samples: tuple[dict[str, bytes], dict[str, Any]]) -> None:
    images, manifest = samples
    healthy = images["healthy/stable_memory.bin"]
    after = images["after_stable_save/stable_memory.bin"]
    length = manifest["samples"]["after_stable_save"]["stable_save"]["length"]
    assert after[:4] == b"DIDL" and len(after) == len(healthy)
    assert after[length:] == healthy[length:]
    assert 34_848 < length < PAGE + forge_samples.BUCKET_SIZE_PAGES * PAGE  # past the table, into bucket 0


def test_post_upgrade_sample(samples: tuple[dict[str, bytes], dict[str, Any]]) -> None:
    images, manifest = samples
    healthy = images["healthy/stable_memory.bin"]
    after = images["after_stable_save/stable_memory.bin"]
    post = images["post_upgrade/stable_memory.bin"]
    header, memories = mm_memories(post)
    assert header["num_allocated_buckets"] == 2
    assert memories[0][:4] == b"SCL\x01"
    walked = read_map(memories[4])
    assert len(walked["entries"]) == forge_samples.NEW_MEMBERS and walked["root"] == 116
    # Stale: bucket 2 (0xFF now) still holds the rest of the old map, byte for byte.
    bs = forge_samples.BUCKET_SIZE_PAGES * PAGE
    assert post[2080 + 2] == 0xFF
    assert post[PAGE + 2 * bs : PAGE + 3 * bs] == healthy[PAGE + 2 * bs : PAGE + 3 * bs]
    # Old nodes other than chunk 0/1 are untouched; the old root is one of them.
    old_root = manifest["samples"]["post_upgrade"]["stale"]["old_root_addr"]
    phys = PAGE + bs + old_root if old_root < bs else PAGE + 2 * bs + old_root - bs
    assert post[phys : phys + 4] == b"BTN\x02" == healthy[phys : phys + 4]
    # The blob's tail beyond the fresh header/table survives in page 0.
    assert post[34_848:PAGE] == after[34_848:PAGE] and any(post[34_848:PAGE])


def test_snapshot_dir_sample(samples: tuple[dict[str, bytes], dict[str, Any]], tmp_path: Path) -> None:
    forge_samples.write_samples(tmp_path)
    snap = tmp_path / "snapshot_dir"
    meta = json.loads((snap / "metadata.json").read_text())
    stable = (snap / "stable_memory.bin").read_bytes()
    assert meta["stable_memory_size"] == len(stable) and meta["wasm_memory_size"] == 0
    assert isinstance(meta["taken_at_timestamp"], int) and meta["source"] and "canister_version" in meta
    assert stable == samples[0]["post_upgrade/stable_memory.bin"]


# --- The project's walker on forged maps ---------------------------------------------------------------


def _walker() -> Any:
    from inspector.memory import PhysicalMemory, VirtualMemory
    from inspector.structures.btreemap import BTreeMap

    return BTreeMap, PhysicalMemory, VirtualMemory


def _walker_entries(walker: Any) -> Iterator[tuple[bytes, bytes]]:
    for e in walker.iter_entries():
        yield (bytes(e[0]), bytes(e[1])) if isinstance(e, tuple) else (bytes(e.key), bytes(e.value))


@pytest.mark.parametrize(
    ("label", "make", "key_fixed_size"),
    [
        ("u64 fixed keys", lambda: u64_map(5_000, fill=11, free_chunks=9), 8),
        ("u64 fixed keys, inferred", lambda: u64_map(2_000, fill=7), "auto"),
        (
            "strings, long overflow chains",
            lambda: forge_btreemap(
                [(f"k{i:04d}".encode(), b"v" * (i * 53 % 5_000)) for i in range(300)], fill=8, free_chunks=4
            ),
            None,
        ),
        (
            "v1",
            lambda: forge_btreemap_v1([(u64_be([i])[0], b"x" * (i % 11)) for i in range(500)], 8, 10),
            "auto",
        ),
    ],
)
def test_project_walker_reads_forged_maps(label: str, make: Any, key_fixed_size: Any) -> None:
    BTreeMap, PhysicalMemory, _VirtualMemory = _walker()
    fm = make()
    mem = fm.to_bytes()
    walker = BTreeMap(PhysicalMemory(mem, len(mem)), key_fixed_size=key_fixed_size)
    result = walker.walk()
    errors = [f for f in result.findings if f.severity == "error"]
    assert not errors, [f.message for f in errors]
    assert result.entry_count == fm.length
    assert result.nodes["count"] == fm.node_count and result.nodes["overflow_page_count"] == fm.overflow_count
    assert list(_walker_entries(walker)) == list(fm.entries())


def test_project_walker_reads_sample_maps(samples: tuple[dict[str, bytes], dict[str, Any]]) -> None:
    BTreeMap, PhysicalMemory, VirtualMemory = _walker()
    images, _manifest = samples
    for name, expected_len in (
        ("healthy", forge_samples.HEALTHY_MEMBERS),
        ("post_upgrade", forge_samples.NEW_MEMBERS),
    ):
        image = images[f"{name}/stable_memory.bin"]
        header, memories = mm_memories(image)
        phys = PhysicalMemory(image, len(image))
        bs = header["bucket_size_in_pages"] * PAGE
        owners = image[2080 : 2080 + header["num_allocated_buckets"]]
        buckets = [b for b, owner in enumerate(owners) if owner == 4]
        vm = VirtualMemory(phys, 4, buckets, bs, len(memories[4]))
        walker = BTreeMap(vm, memory_id=4)
        result = walker.walk()
        assert not [f for f in result.findings if f.severity == "error"], name
        assert list(_walker_entries(walker)) == read_map(memories[4])["entries"]
        assert result.entry_count == expected_len
