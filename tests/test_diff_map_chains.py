"""Map diff by shared overflow chains: exact owners, work that follows the change, a safe fallback."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, require_fixtures

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inspector.diff import map_chains, map_nodes  # noqa: E402
from inspector.diff.byte_ranges import changed_ranges  # noqa: E402
from inspector.diff.entries import StructureDiff, _merge_join, diff_pair, element_physical  # noqa: E402
from inspector.diff.layout import RangeSet  # noqa: E402
from inspector.diff.sequences import PageReleaser  # noqa: E402
from inspector.forge import RawImage  # noqa: E402
from inspector.forge.btree_grow import grow_map_from, mix64  # noqa: E402
from inspector.layouts import CHUNK_HEADER_SIZE, FIRST_CHUNK_OFFSET, NODE_MAGIC, OVERFLOW_MAGIC  # noqa: E402
from inspector.session import Session, load  # noqa: E402
from inspector.structures.btreemap.nodes import OVERFLOW_DATA_OFFSET  # noqa: E402

PAGE = 256  # small pages: values of a few KB run through chains of many overflow pages


def _forge(path: Path, n: int = 400, seed: int = 5) -> None:
    """A raw-memory map of 0.5–6 KB values grown in random key order, with every 7th key removed."""
    block = random.Random(seed).randbytes(1 << 16)

    def value_len(key: int) -> int:
        return 500 + key % 5_500

    def value_of(key: int) -> bytes:
        off = (key >> 20) % (len(block) - value_len(key))
        return block[off : off + value_len(key)]

    keys = [mix64(i + seed) for i in range(n)]
    ops = [("insert", k) for k in keys] + [("remove", k) for k in keys[3::7]]
    fm = grow_map_from(ops, page_size=PAGE, value_of=value_of, value_len=value_len)
    image = RawImage()
    image.place(fm)
    image.write_to(path, sparse=False)


def _chunks(data: bytes, magic: bytes) -> list[int]:
    """Chunk header addresses whose payload starts with ``magic``."""
    cs = PAGE + CHUNK_HEADER_SIZE
    out = []
    for c in range(FIRST_CHUNK_OFFSET, len(data) - cs + 1, cs):
        if data[c + CHUNK_HEADER_SIZE : c + CHUNK_HEADER_SIZE + 3] == magic:
            out.append(c)
    return out


def _flip(src: Path, dst: Path, offsets: list[int]) -> None:
    data = bytearray(src.read_bytes())
    for o in offsets:
        data[o] ^= 0x5A
    dst.write_bytes(bytes(data))


def _value_flips(src: Path, count: int, seed: int) -> list[int]:
    """One byte in the data area of ``count`` random overflow pages."""
    data = src.read_bytes()
    rng = random.Random(seed)
    pages = rng.sample(_chunks(data, OVERFLOW_MAGIC), count)
    start = CHUNK_HEADER_SIZE + OVERFLOW_DATA_OFFSET
    return [c + rng.randrange(start, PAGE + CHUNK_HEADER_SIZE) for c in pages]


def _reference(a: object, b: object) -> tuple[int, int, int, int, list[tuple[str, bytes | None]]]:
    """The key-order walk of both maps (what the plan replaces)."""
    d = StructureDiff(a.memory_id, a.kind, "matched", a, b, a.count(), b.count())  # type: ignore[attr-defined]
    _merge_join(d, a, b, 10_000, None, "", None)  # type: ignore[arg-type]
    return d.added, d.removed, d.changed, d.unchanged, sorted((it.op, it.key) for it in d.items)


def _diff(old: Path, new: Path) -> tuple[object, object, RangeSet, object, object]:
    a, b = load(old), load(new)
    sa, sb = a.analysis.structure("raw"), b.analysis.structure("raw")
    return a, b, RangeSet(changed_ranges(old.read_bytes(), new.read_bytes()).ranges), sa, sb


def _result(d: StructureDiff) -> tuple[int, int, int, int, list[tuple[str, bytes | None]]]:
    return d.added, d.removed, d.changed, d.unchanged, sorted((it.op, it.key) for it in d.items)


def _indexed_map(path: Path) -> tuple[Session, Any, map_chains.ChainIndex]:
    """The map forged at ``path`` (raw memory), opened, and its chain index."""
    _forge(path)
    s = load(path)
    st = s.analysis.structure("raw")
    m = st.map
    m.key_layout  # noqa: B018 - the plan needs the key layout decided
    idx = map_chains.build(m, PageReleaser(st))
    assert idx is not None
    return s, m, idx


def test_the_chain_index_names_every_overflow_page_s_owner_and_place(tmp_path: Path) -> None:
    path = tmp_path / "map.bin"
    s, m, idx = _indexed_map(path)
    seen = 0
    reached = []
    for _depth, node in m.iter_nodes():
        reached.append(node.addr)
        for j, page in enumerate(node.overflows):
            assert idx.owner_of(page) == (node.addr, j)
            seen += 1
        chain = idx.chain(node.addr)
        assert list(chain) == list(node.overflows)
    assert seen > 500  # the forge really made long chains
    assert sorted(idx.nodes) == sorted(reached)
    # A step per run of back-to-back pages, never one per page.
    assert 0 < idx.runs_followed <= seen
    # Pages no live chain holds: node pages, free chunks.
    data = path.read_bytes()
    for c in _chunks(data, NODE_MAGIC)[:20]:
        assert idx.owner_of(c + CHUNK_HEADER_SIZE) is None
    s.close()


def test_value_edits_go_by_shared_chains_and_match_the_key_order_walk(tmp_path: Path) -> None:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    for seed, flips in ((1, 1), (2, 12), (3, 60)):
        _flip(old, new, _value_flips(old, flips, seed))
        a, b, changes, sa, sb = _diff(old, new)
        plan = map_nodes.plan(sa, sb, changes)
        assert plan is not None and plan.chains is not None, seed
        # Nodes read: only the owners of the changed pages, each once.
        owners = {plan.chains.owner_of(p) for pages in plan.dirty.values() for p in pages}
        assert plan.node_loads == len(plan.nodes) == len({o[0] for o in owners if o}) <= flips
        d = diff_pair(sa, sb, changes, max_items=10_000)
        assert d.method == "by changed nodes"
        assert 0 < d.changed <= flips and d.added == d.removed == 0
        assert _result(d) == _reference(sa, sb), seed
        a.close()  # type: ignore[attr-defined]
        b.close()  # type: ignore[attr-defined]


def test_listed_entries_keep_their_places_and_bytes(tmp_path: Path) -> None:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    _flip(old, new, _value_flips(old, 5, 9))
    a, b, changes, sa, sb = _diff(old, new)
    d = diff_pair(sa, sb, changes)
    assert d.method == "by changed nodes" and d.items
    data_old, data_new = old.read_bytes(), new.read_bytes()
    ref = {el.key: el for el in sa.elements(0)}
    for it in d.items:
        el = ref[it.key]
        # The value's length and its places are those the walker finds (from the node, read whole).
        assert it.old_len == len(el.value)
        assert it.old_ranges == it.new_ranges == element_physical(sa, el)
        assert it.old is not None and el.value.startswith(it.old)
        assert any(data_old[s:e] != data_new[s:e] for s, e in it.new_ranges)
    a.close()  # type: ignore[attr-defined]
    b.close()  # type: ignore[attr-defined]


def test_a_changed_chain_link_or_node_page_falls_back_and_stays_exact(tmp_path: Path) -> None:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    data = old.read_bytes()
    rng = random.Random(4)
    nof = rng.choice(_chunks(data, OVERFLOW_MAGIC))
    node = rng.choice(_chunks(data, NODE_MAGIC))
    cases = {
        # an overflow page's "next" link: the chains are no longer the same on both sides
        "link": [nof + CHUNK_HEADER_SIZE + 3],
        # a chunk header's allocated flag
        "header": [nof + 4],
        # a byte inside a node page (its keys, children or a value's length may change)
        "node": [node + CHUNK_HEADER_SIZE + PAGE - 1],
    }
    for name, offsets in cases.items():
        _flip(old, new, offsets + _value_flips(old, 3, 8))
        a, b, changes, sa, sb = _diff(old, new)
        plan = map_nodes.plan(sa, sb, changes)
        assert plan is None or plan.chains is None, name
        d = diff_pair(sa, sb, changes, max_items=10_000)
        assert _result(d) == _reference(sa, sb), name
        a.close()  # type: ignore[attr-defined]
        b.close()  # type: ignore[attr-defined]


def test_a_changed_length_prefix_compares_that_node_whole(tmp_path: Path) -> None:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    a = load(old)
    st = a.analysis.structure("raw")
    # The 4-byte length of a value whose prefix lies in an overflow page (past the node's first page).
    target = None
    cs = PAGE + CHUNK_HEADER_SIZE
    data = old.read_bytes()
    for el in st.elements(0):
        prefix = st.element_spans(el)[1][0][0] - 4
        chunk, o = (
            FIRST_CHUNK_OFFSET + (prefix - FIRST_CHUNK_OFFSET) // cs * cs,
            (prefix - FIRST_CHUNK_OFFSET) % cs,
        )
        inside = CHUNK_HEADER_SIZE + OVERFLOW_DATA_OFFSET <= o <= cs - 4
        if inside and data[chunk + CHUNK_HEADER_SIZE : chunk + CHUNK_HEADER_SIZE + 3] == OVERFLOW_MAGIC:
            target = prefix + 3  # the length's high byte: the value would claim megabytes
            break
    a.close()
    assert target is not None
    _flip(old, new, [target])
    a, b, changes, sa, sb = _diff(old, new)
    plan = map_nodes.plan(sa, sb, changes)
    assert plan is not None and plan.chains is not None
    assert not plan.slots  # that node is compared whole, not slot by slot
    d = diff_pair(sa, sb, changes, max_items=10_000)
    assert _result(d) == _reference(sa, sb)
    a.close()  # type: ignore[attr-defined]
    b.close()  # type: ignore[attr-defined]


def test_a_real_big_value_map_laid_on_raw_memory(tmp_path: Path) -> None:
    """The real library's map of big values (btree_big_values, memory 3), its bytes placed as a raw
    memory: the shared-chain plan on chains the crate wrote, checked against the key-order walk."""
    require_fixtures()
    s = load(FIXTURES / "btree_big_values" / "stable_memory.bin")
    mem = s.analysis.structure(3).mem
    raw = mem.read(0, mem.size)
    s.close()
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(raw)
    a = load(old)
    st = a.analysis.structure("raw")
    m = st.map
    m.key_layout  # noqa: B018
    idx = map_chains.build(m, PageReleaser(st))
    assert idx is not None
    pages = [(node.addr, j, p) for _d, node in m.iter_nodes() for j, p in enumerate(node.overflows)]
    assert pages and all(idx.owner_of(p) == (addr, j) for addr, j, p in pages)
    rng = random.Random(12)
    picks = rng.sample(pages, min(6, len(pages)))
    a.close()
    cs = m.chunk_size
    offsets = [
        p + OVERFLOW_DATA_OFFSET + rng.randrange(cs - CHUNK_HEADER_SIZE - OVERFLOW_DATA_OFFSET)
        for *_x, p in picks
    ]
    _flip(old, new, offsets)
    a, b, changes, sa, sb = _diff(old, new)
    plan = map_nodes.plan(sa, sb, changes)
    assert plan is not None and plan.chains is not None
    d = diff_pair(sa, sb, changes, max_items=10_000)
    assert d.method == "by changed nodes"
    assert _result(d) == _reference(sa, sb)
    a.close()  # type: ignore[attr-defined]
    b.close()  # type: ignore[attr-defined]


def _careful_free_list(m: object) -> tuple[list[int], list[object], int]:
    """The hop-by-hop walk that names problems (what the fast walk hands over to)."""
    m._free_list_state = None  # type: ignore[attr-defined]
    m._clean_free_list = lambda: None  # type: ignore[attr-defined]
    return m._free_list()  # type: ignore[attr-defined, no-any-return]


def test_the_fast_free_list_walk_agrees_with_the_careful_one(tmp_path: Path) -> None:
    from inspector.memory import PhysicalMemory
    from inspector.structures.btreemap import BTreeMap

    path = tmp_path / "map.bin"
    _forge(path)
    data = bytearray(path.read_bytes())
    m = BTreeMap(PhysicalMemory(bytes(data), len(data)))
    fast = m._clean_free_list()
    assert fast is not None and len(fast) > 10  # removals left a real free list
    careful = _careful_free_list(BTreeMap(PhysicalMemory(bytes(data), len(data))))
    assert (fast, fast[-1]) == (careful[0], careful[2]) and not careful[1]
    assert m.frontier == careful[2]
    # A list that loops back: the fast walk gives up, the careful walk names the loop.
    second = fast[1]
    data[fast[3] + 8 : fast[3] + 16] = second.to_bytes(8, "little")
    looped = BTreeMap(PhysicalMemory(bytes(data), len(data)))
    assert looped._clean_free_list() is None
    assert [p[0] for p in looped._free_list()[1]] == ["cycle"]


def test_the_verdict_skips_the_free_lists_only_when_no_chunk_header_changed(tmp_path: Path) -> None:
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    _flip(old, new, _value_flips(old, 4, 3))
    a, b, changes, sa, sb = _diff(old, new)
    assert map_nodes.allocator_untouched(sa, sb, changes)
    assert diff_pair(sa, sb, changes).allocator_same
    a.close()  # type: ignore[attr-defined]
    b.close()  # type: ignore[attr-defined]
    nof = _chunks(old.read_bytes(), OVERFLOW_MAGIC)[5]
    _flip(old, new, [nof + 9])  # a byte of a chunk header's own next field
    a, b, changes, sa, sb = _diff(old, new)
    assert not map_nodes.allocator_untouched(sa, sb, changes)
    assert not diff_pair(sa, sb, changes).allocator_same
    a.close()  # type: ignore[attr-defined]
    b.close()  # type: ignore[attr-defined]


def test_the_byte_compare_child_hands_over_the_chain_index(tmp_path: Path, monkeypatch: object) -> None:
    """The child that compares the bytes also resolves the old map's chains; the parent uses that
    index only for the very file it was built from, and the result is the same."""
    from inspector.diff import prefetch
    from inspector.diff.engine import diff_sessions

    monkeypatch.setattr(prefetch, "CHAINS_MIN_BYTES", 0)  # type: ignore[attr-defined]
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    _flip(old, new, _value_flips(old, 7, 21))
    pending = prefetch.start_byte_diff(str(old), str(new))
    assert pending is not None
    a, b = load(old), load(new)
    result = pending.result()
    pending.chains()
    assert result is not None and len(map_chains._OFFERED) == 1
    built = []
    monkeypatch.setattr(map_chains, "_tree", lambda *x: built.append(1))  # type: ignore[attr-defined]
    d = diff_sessions(a, b, byte_result=result)
    assert not built and len(map_chains._ADOPTED) == 1  # the parent walked no tree of its own
    (sd,) = d.structures
    assert sd.method == "by changed nodes"
    assert _result(sd) == _reference(a.analysis.structure("raw"), b.analysis.structure("raw"))
    # Another file (same bytes, another inode) does not get it.
    map_chains.offer((map_chains.file_identity(a.snapshot.fd), map_chains._ADOPTED.popitem()[1]))
    twin = tmp_path / "twin.bin"
    twin.write_bytes(old.read_bytes())
    c = load(twin)
    map_chains.adopt(c.snapshot.fd, c.snapshot.buf)
    assert not map_chains._ADOPTED
    for s in (a, b, c):
        s.close()


def test_a_second_free_list_with_the_same_bytes_is_checked_not_walked(tmp_path: Path) -> None:
    """The second of two snapshots whose free-list hops hold the same header words takes the first
    one's list after checking every hop against its own bytes; any difference walks it again, with
    the very result a fresh walk gives."""
    from inspector.memory import PhysicalMemory
    from inspector.structures.btreemap import BTreeMap, allocator

    path = tmp_path / "map.bin"
    _forge(path)
    data = bytearray(path.read_bytes())

    def walk(raw: bytes) -> list[int] | None:
        return BTreeMap(PhysicalMemory(raw, len(raw)))._clean_free_list()  # type: ignore[no-any-return]

    allocator._LAST_CLEAN.clear()
    first = walk(bytes(data))
    assert first is not None and len(first) > 10
    walked = allocator._LAST_CLEAN[0]
    # A value byte changed elsewhere: the same list, and no walk (the record is still the first walk's).
    other = bytearray(data)
    other[_chunks(bytes(data), OVERFLOW_MAGIC)[3] + CHUNK_HEADER_SIZE + 40] ^= 1
    assert walk(bytes(other)) == first and allocator._LAST_CLEAN[0] is walked
    # A hop's header padding byte differs: still a clean list, found by walking again.
    padded = bytearray(data)
    padded[first[4] + 6] ^= 0x80
    allocator._LAST_CLEAN[:] = [walked]
    assert walk(bytes(padded)) == first and allocator._LAST_CLEAN[0] is not walked
    # A hop's link cut short, or turned into a loop: each side gives what the careful walk gives.
    for link in (0, first[1]):
        cut = bytearray(data)
        cut[first[5] + 8 : first[5] + 16] = link.to_bytes(8, "little")
        allocator._LAST_CLEAN[:] = [walked]
        got = walk(bytes(cut))
        careful = _careful_free_list(BTreeMap(PhysicalMemory(bytes(cut), len(cut))))
        if link == 0:
            assert got == first[:6] == careful[0] and not careful[1]
        else:
            assert got is None and [p[0] for p in careful[1]] == ["cycle"]
    # Another chunk marked allocated in the middle of the list: the walk stops there as before.
    taken = bytearray(data)
    taken[first[7] + 4] = 1
    allocator._LAST_CLEAN[:] = [walked]
    assert walk(bytes(taken)) is None


def test_the_compare_is_split_and_takes_the_columns_only_for_a_big_map(
    tmp_path: Path, monkeypatch: object
) -> None:
    """Below CHAINS_MIN_BYTES one child compares and the parent resolves any chains itself; above it two
    children compare a part each (the joined result is the one-pass result) and, for a map on the old
    snapshot's raw memory, take its columns and hand over its chain index and free list."""
    from inspector.diff import frontier, prefetch

    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    _flip(old, new, _value_flips(old, 3, 9))
    want = changed_ranges(old.read_bytes(), new.read_bytes())
    small = prefetch.start_byte_diff(str(old), str(new))
    assert small is not None and len(small.children) == 1 and not small.columns
    map_chains._OFFERED.clear()
    assert small.result() == want and not map_chains._OFFERED
    monkeypatch.setattr(prefetch, "CHAINS_MIN_BYTES", 0)  # type: ignore[attr-defined]
    raw = tmp_path / "raw.bin"
    raw.write_bytes(bytes(1 << 16))  # no map magic: two halves, no columns
    pending = prefetch.start_byte_diff(str(raw), str(raw))
    assert pending is not None and len(pending.children) == 2 and not pending.columns
    assert pending.result() == changed_ranges(bytes(1 << 16), bytes(1 << 16))
    pending.chains()
    both = prefetch.start_byte_diff(str(old), str(new))
    assert both is not None and len(both.children) == 2 and both.columns
    frontier._OFFERED.clear()
    assert both.result() == want
    assert len(frontier._OFFERED) == 1  # the free list comes with the results, the chains after them
    both.chains()
    assert len(map_chains._OFFERED) == 1
    # The index from the children's columns is the one the parent would build from its own.
    ((identity, got),) = map_chains._OFFERED.items()
    s = load(old)
    try:
        assert identity == map_chains.file_identity(s.snapshot.fd)
        m = s.analysis.structure("raw").map  # type: ignore[union-attr]
        mine = map_chains.build(m, lambda: None)
        assert mine is not None and got is not None
        for name in ("starts", "ends", "owner", "first", "node_j", "node_c"):
            assert getattr(got, name) == getattr(mine, name), name
        assert (got.nodes, got.by_node, got.chain_len) == (mine.nodes, mine.by_node, mine.chain_len)
    finally:
        s.close()


@pytest.mark.parametrize("piece", [4096, 5000, 1 << 20])
def test_the_column_sink_takes_the_columns_the_whole_file_pass_takes(tmp_path: Path, piece: int) -> None:
    """The byte compare's pieces, of any size (chunk headers cut by a piece's end are read on their own),
    in two spans into one shared area: the same five columns as the pass over the whole mapping."""
    from inspector.diff import byte_ranges
    from inspector.diff.shared_columns import SharedColumns
    from inspector.snapshot import open_snapshot

    path = tmp_path / "map.bin"
    _forge(path)
    with open_snapshot(path) as snap:
        assert snap.buf is not None and snap.fd is not None
        found = map_chains.old_grid(snap.buf, snap.size, snap.fd)
        assert found is not None and found[1] is not None
        base, n, cs = found[1]
        whole = map_chains._Columns(snap.buf, base, n, cs, headers=True)
        area = SharedColumns(n + 1)
        saved = byte_ranges.READ_SIZE
        byte_ranges.READ_SIZE = piece
        try:
            h = snap.size // 3
            filled = 0
            for span in ((0, h), (h, snap.size)):
                sink = map_chains.ColumnSink(area, base, n, cs, snap.fd)
                byte_ranges.changed_ranges(
                    snap.buf, snap.buf, a_file=snap.fd, b_file=snap.fd, span=span, sink=sink
                )
                filled += sink.filled
        finally:
            byte_ranges.READ_SIZE = saved
        assert filled == n == whole.n
        shared = map_chains._Columns.shared(area, n)
        assert shared.cont[: 8 * (n + 1)] == whole.cont
        assert bytes(shared.valid) == whole.valid
        for name in ("nexts", "heads", "links"):
            assert list(getattr(shared, name)) == list(getattr(whole, name)), name
        del shared
        area.close()


def test_halves_whose_ranges_merged_into_runs_give_the_one_pass_result(
    tmp_path: Path, monkeypatch: object
) -> None:
    """Snapshots that differ almost everywhere: each child had to merge its ranges into runs, which
    cannot be joined; the parent compares the second half again, going on from the first."""
    from inspector.diff import byte_ranges, prefetch

    monkeypatch.setattr(prefetch, "CHAINS_MIN_BYTES", 0)  # type: ignore[attr-defined]
    monkeypatch.setattr(byte_ranges, "MAX_RUNS", 256)  # type: ignore[attr-defined]
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    old.write_bytes(bytes(1 << 20))
    new.write_bytes(b"\x00\x01" * (1 << 19))
    pending = prefetch.start_byte_diff(str(old), str(new))
    assert pending is not None and len(pending.children) == 2
    got = pending.result()
    pending.chains()
    want = changed_ranges(old.read_bytes(), new.read_bytes())
    assert want.gap > 0 and got == want


def test_a_child_that_fails_costs_the_hints_not_the_diff(tmp_path: Path, monkeypatch: object) -> None:
    """The second child dies before it says what it filled: the first sends its half without a chain
    index, the parent falls back to comparing itself, and nothing hangs."""
    from inspector.diff import prefetch

    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    _flip(old, new, _value_flips(old, 4, 2))
    monkeypatch.setattr(prefetch, "CHAINS_MIN_BYTES", 0)  # type: ignore[attr-defined]
    real = prefetch._compare

    def second_dies(old_path: str, new_path: str, span: object, cols: object) -> object:
        if isinstance(span, tuple) and span[0] > 0:
            os._exit(3)
        return real(old_path, new_path, span, cols)  # type: ignore[arg-type]

    monkeypatch.setattr(prefetch, "_compare", second_dies)  # type: ignore[attr-defined]
    map_chains._OFFERED.clear()
    pending = prefetch.start_byte_diff(str(old), str(new))
    assert pending is not None and pending.columns
    assert pending.result() is None and not map_chains._OFFERED


def test_the_layout_part_done_while_the_chains_are_resolved_gives_the_same_diff(
    tmp_path: Path, monkeypatch: object
) -> None:
    """``diff --json`` takes the byte results and the free list first, works out the layout part
    (``layout_diff``: groups, totals, attributions) while the first child still resolves the chains,
    and only then compares the structures: the diff is the one computed in one go."""
    import json

    from inspector.diff import prefetch
    from inspector.diff.engine import diff_sessions, layout_diff
    from inspector.jsonout import json_default

    monkeypatch.setattr(prefetch, "CHAINS_MIN_BYTES", 0)  # type: ignore[attr-defined]
    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    _flip(old, new, _value_flips(old, 6, 17))
    a, b = load(old), load(new)
    try:
        whole = json.dumps(diff_sessions(a, b).to_json(), default=json_default)
    finally:
        a.close()
        b.close()
    pending = prefetch.start_byte_diff(str(old), str(new))
    assert pending is not None and pending.columns
    a, b = load(old), load(new)
    try:
        result = pending.result()
        assert result is not None
        layout = layout_diff(a, b, result)
        layout.warm()
        assert layout._groups and len(layout._areas) == 2 and layout._attributions
        pending.chains()
        assert len(map_chains._OFFERED) == 1
        d = diff_sessions(a, b, byte_result=result, layout=layout)
        assert d.layout is layout and d.structures[0].method == "by changed nodes"
        assert json.dumps(d.to_json(), default=json_default) == whole
        # A layout made for other sessions (or another result) is not taken.
        other = layout_diff(b, a, result)
        assert diff_sessions(a, b, byte_result=result, layout=other).layout is not other
    finally:
        a.close()
        b.close()


def test_prepare_moves_the_layout_and_type_work_before_the_compare(
    tmp_path: Path, monkeypatch: object
) -> None:
    """``prepare`` (run while the compare child works) computes each map's key layout and decoders;
    the diff after it then probes nothing again, and its JSON is the same as without it."""
    import json

    from inspector.decode import values
    from inspector.diff.engine import diff_sessions, prepare
    from inspector.jsonout import json_default
    from inspector.structures.btreemap import BTreeMap

    old, new = tmp_path / "old.bin", tmp_path / "new.bin"
    _forge(old)
    _flip(old, new, _value_flips(old, 5, 13))

    def report(warm: bool) -> tuple[str, int, int]:
        a, b = load(old), load(new)
        probes: list[int] = []
        guesses: list[int] = []
        probe, guess = BTreeMap._probe, values.guess_type
        monkeypatch.setattr(BTreeMap, "_probe", lambda m: (probes.append(1), probe(m))[1])  # type: ignore[attr-defined]
        monkeypatch.setattr(values, "guess_type", lambda *x: (guesses.append(1), guess(*x))[1])  # type: ignore[attr-defined]
        if warm:
            assert prepare(a, b) == 2  # the map on each side
            assert len(probes) == 2 and len(guesses) == 4
            probes.clear()
            guesses.clear()
        d = diff_sessions(a, b)
        text = json.dumps(d.to_json(), default=json_default)
        a.close()
        b.close()
        return text, len(probes), len(guesses)

    cold, warm = report(False), report(True)
    assert cold[0] == warm[0]
    # Cold: both layouts, and the decoders the listed changes use (new keys, both sides' values); the
    # first guess on a side guesses the other role too, from the same elements (so 4, not 3).
    assert cold[1:] == (2, 4) and warm[1:] == (0, 0)


def test_chain_ranges_are_logical_ranges_a_run_at_a_time(tmp_path: Path) -> None:
    from inspector.structures.btreemap.nodes import logical_ranges

    path = tmp_path / "map.bin"
    s, m, idx = _indexed_map(path)
    page, per = m.page_size, m.page_size - OVERFLOW_DATA_OFFSET
    rng = random.Random(4)
    checked = multi = 0
    for addr in idx.nodes:
        chain = idx.chain(addr)
        pages = list(chain)
        n = len(pages)
        for j0 in range(0, n + 1, max(1, n // 5)):
            for j1 in (j0, j0 + 1, n, n + 3):
                assert chain.page_spans(j0, j1, 0, 0) == [(p, p) for p in pages[j0:j1]]
                assert chain.page_spans(j0, j1, 7, page) == [(p + 7, p + page) for p in pages[j0:j1]]
        stream = page + n * per
        cases = [(0, stream), (0, page), (page - 3, 10), (stream - 5, 5), (stream - 5, 40), (3, 0)]
        cases += [(rng.randrange(stream), rng.randrange(1, stream)) for _ in range(30)]
        for start, length in cases:
            want = logical_ranges(addr, pages, page, start, length)
            got = map_chains.chain_ranges(addr, chain, page, start, length)
            assert got == want, (addr, start, length)
            checked += 1
            multi += len(want) > 2
    assert checked > 1000 and multi > 500  # long chains, many pages per range
    s.close()


def test_the_plan_s_stream_reader_reads_what_the_general_reader_reads(tmp_path: Path) -> None:
    """``NodeChain.reader``: the same bytes as ``_read_stream`` at every place of every node's stream
    (keys, length prefixes, pieces across pages, past the end); a piece inside one page is its own
    ``pread``, anything else goes to the general reader, and a memory without its file is read by it."""
    from functools import partial

    from inspector.memory import PhysicalMemory

    path = tmp_path / "map.bin"
    s, m, idx = _indexed_map(path)
    page, per = m.page_size, m.page_size - OVERFLOW_DATA_OFFSET
    rng = random.Random(8)
    inside = across = 0
    for addr in idx.nodes:
        chain = idx.chain(addr)
        stream = page + len(chain) * per
        general = partial(map_nodes._read_stream, m, addr, chain)
        slow_calls: list[tuple[int, int]] = []

        def slow(
            pos: int, n: int, general: Any = general, calls: list[tuple[int, int]] = slow_calls
        ) -> bytes:
            calls.append((pos, n))
            return general(pos, n)

        read = chain.reader(m.mem, page, slow)
        cases = [(0, 8), (page - 4, 4), (page - 2, 4), (page, 4), (page + per - 4, 4), (page + per - 1, 3)]
        cases += [(rng.randrange(stream), rng.choice((1, 4, 8, 40, 3 * per))) for _ in range(40)]
        for pos, n in sorted(cases):  # (in stream order, as the plan reads)
            one_page = pos + n <= page or (pos >= page and (pos - page) % per + n <= per)
            if pos + n > stream:
                with pytest.raises(map_nodes.NodeError):
                    general(pos, n)
                with pytest.raises(map_nodes.NodeError):
                    read(pos, n)
                continue
            before = len(slow_calls)
            assert read(pos, n) == general(pos, n), (addr, pos, n)
            assert (len(slow_calls) == before) == one_page, (addr, pos, n)
            inside += one_page
            across += not one_page
        # The same map held in memory (no file to read from): the reader is the general one.
        held = PhysicalMemory(path.read_bytes(), m.mem.size)
        assert chain.reader(held, page, slow) is slow
    assert inside > 500 and across > 100
    s.close()


def test_the_tree_walk_reads_the_same_nodes_from_the_file_and_from_memory(tmp_path: Path) -> None:
    """The chain index's node walk reads each node page with a ``pread`` when the map's file is open and
    through the buffer otherwise: both give the same nodes, children and chains."""
    from inspector.memory import PhysicalMemory
    from inspector.structures.btreemap import BTreeMap

    path = tmp_path / "map.bin"
    s, m, idx = _indexed_map(path)
    assert isinstance(m.mem, PhysicalMemory) and m.mem.fd is not None  # (the pread path)
    data = path.read_bytes()
    held = BTreeMap(PhysicalMemory(data, len(data)), memory_id="raw")
    held.key_layout  # noqa: B018
    again = map_chains.build(held, lambda: None)
    assert again is not None
    assert again.nodes == idx.nodes and len(again.nodes) > 20
    assert (again.starts, again.ends, again.owner, again.first) == (
        idx.starts,
        idx.ends,
        idx.owner,
        idx.first,
    )
    s.close()


def test_the_map_locator_keeps_a_bounded_number_of_chunk_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``locate`` remembers the chunk headers it read (a diff describes each changed range's chunk again),
    a bounded number of them, and says the same with or without them."""
    from inspector import offset_geometry
    from inspector.offset_index import OffsetIndex

    path = tmp_path / "map.bin"
    _forge(path)
    s = load(path)
    try:
        size = s.snapshot.size
        positions = list(range(FIRST_CHUNK_OFFSET, size, 97)) * 2  # every chunk, twice

        def locate_all(kept: int) -> tuple[list[Any], int]:
            monkeypatch.setattr(offset_geometry, "CHUNKS_KEPT", kept)
            index = OffsetIndex(None, s.analysis, build=lambda: None)  # type: ignore[arg-type,return-value]
            got = [index.locate(p) for p in positions]
            (locator, _mem) = index.geometry._locators["raw"]
            return got, len(locator._chunks)

        small, held_small = locate_all(8)
        large, held_large = locate_all(1 << 20)
        assert 0 < held_small <= 8 < held_large
        # What a locator that reads every header again says.
        monkeypatch.setattr(
            offset_geometry._BTreeLocator, "_chunk", offset_geometry._BTreeLocator._read_chunk
        )
        fresh, _ = locate_all(8)
        assert small == large == fresh
        assert len({(a.area, a.what) for a in fresh}) > 3  # nodes, overflow pages, free chunks…
    finally:
        s.close()
