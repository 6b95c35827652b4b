"""Tests for inspector.diff.byte_ranges against the real migration fixtures and a naive reference."""

from __future__ import annotations

import array
import functools
import mmap
import os
import pickle
import random
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from conftest import load_expected, make_sparse, require_fixtures
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.diff import byte_ranges as byte_diff
from inspector.diff.byte_ranges import ChangedRange, DiffCancelled, DiffResult, changed_ranges, diff_files
from inspector.sparse import data_ranges

MIB = 1 << 20

# (fixture holding the ground truth, its key, the other snapshot it was compared with)
FIXTURE_PAIRS = [
    ("migration/after_stable_save", "changed_vs_pre_upgrade", "migration/pre_upgrade"),
    ("migration/after_stable_save_small", "changed_vs_pre_upgrade", "migration/pre_upgrade"),
    ("migration/post_upgrade", "changed_vs_after_stable_save", "migration/after_stable_save"),
    ("migration/post_upgrade_small", "changed_vs_after_stable_save", "migration/after_stable_save_small"),
]


def naive_diff(a: bytes, b: bytes) -> list[tuple[int, int, bool]]:
    """Byte-by-byte reference: maximal differing runs, then the size tail on its own."""
    out: list[tuple[int, int, bool]] = []
    common = min(len(a), len(b))
    start = None
    for i in range(common):
        if a[i] != b[i]:
            if start is None:
                start = i
        elif start is not None:
            out.append((start, i, False))
            start = None
    if start is not None:
        out.append((start, common, False))
    if len(a) != len(b):
        out.append((common, max(len(a), len(b)), True))
    return out


def as_triples(res: DiffResult) -> list[tuple[int, int, bool]]:
    return [(r.start, r.end, r.tail) for r in res.ranges]


def check_against_expected(res: DiffResult, expected: dict) -> None:
    pairs = [list(p) for p in res.pairs()]
    assert res.count == expected["count"]
    assert res.total_bytes == expected["total_bytes"]
    if "ranges" in expected:
        assert pairs == expected["ranges"]
    else:
        assert expected["truncated"] is True
        first, last = expected["ranges_first"], expected["ranges_last"]
        assert pairs[: len(first)] == first
        assert pairs[-len(last) :] == last


@contextmanager
def geometry(chunk: int, block: int, leaf: int, fanout: int) -> Iterator[None]:
    """Shrink the engine's block sizes so that small buffers exercise every refinement level."""
    saved = (byte_diff.CHUNK_SIZE, byte_diff.BLOCK_SIZE, byte_diff.LEAF_SIZE, byte_diff.FANOUT)
    byte_diff.CHUNK_SIZE, byte_diff.BLOCK_SIZE, byte_diff.LEAF_SIZE, byte_diff.FANOUT = (
        chunk,
        block,
        leaf,
        fanout,
    )
    try:
        yield
    finally:
        byte_diff.CHUNK_SIZE, byte_diff.BLOCK_SIZE, byte_diff.LEAF_SIZE, byte_diff.FANOUT = saved


@contextmanager
def mapped(path: Path) -> Iterator[mmap.mmap | bytes]:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield mm


# Ways of handing the two inputs to changed_ranges; each covers a different equality path.
Kind = Callable[[ExitStack, Path, bytes], object]


def kind_bytes(stack: ExitStack, path: Path, data: bytes) -> object:
    return data


def kind_mmap(stack: ExitStack, path: Path, data: bytes) -> object:
    return stack.enter_context(mapped(path))


def kind_memoryview(stack: ExitStack, path: Path, data: bytes) -> object:
    return memoryview(bytearray(data))


KINDS: dict[str, tuple[Kind, Kind]] = {
    "mmap-mmap": (kind_mmap, kind_mmap),
    "bytes-bytes": (kind_bytes, kind_bytes),
    "bytes-mmap": (kind_bytes, kind_mmap),
    "view-bytes": (kind_memoryview, kind_bytes),
    "view-view": (kind_memoryview, kind_memoryview),
}


def diff_as(kind: str, tmp_path: Path, a: bytes, b: bytes, **kw: object) -> DiffResult:
    pa, pb = tmp_path / "a.bin", tmp_path / "b.bin"
    pa.write_bytes(a)
    pb.write_bytes(b)
    if kind == "pread":  # whole-file mappings with their descriptors: read with preadv (_PairReader)
        with ExitStack() as stack:
            fa, fb = (stack.enter_context(open(p, "rb")) for p in (pa, pb))
            ma, mb = stack.enter_context(mapped(pa)), stack.enter_context(mapped(pb))
            return changed_ranges(ma, mb, a_file=fa.fileno(), b_file=fb.fileno(), **kw)  # type: ignore[arg-type]
    make_a, make_b = KINDS[kind]
    with ExitStack() as stack:
        return changed_ranges(make_a(stack, pa, a), make_b(stack, pb, b), **kw)  # type: ignore[arg-type]


# --- ground truth from the real library ---


@pytest.mark.parametrize(("name", "key", "other"), FIXTURE_PAIRS, ids=[p[0] for p in FIXTURE_PAIRS])
def test_fixture_pairs_via_diff_files(name: str, key: str, other: str) -> None:
    fixtures = require_fixtures()
    expected = load_expected(name)[key]
    path_old, path_new = fixtures / other / "stable_memory.bin", fixtures / name / "stable_memory.bin"
    res = diff_files(path_old, path_new)
    check_against_expected(res, expected)
    assert res.tail is None
    assert res.bytes_compared + res.hole_bytes_skipped == path_new.stat().st_size
    # Skipping is only possible where the copy we read kept its holes.
    with open(path_old, "rb") as fa, open(path_new, "rb") as fb:
        size = path_new.stat().st_size
        hole_in_both = size - _covered(data_ranges(fa.fileno(), size) + data_ranges(fb.fileno(), size))
    assert res.hole_bytes_skipped == hole_in_both


def _covered(ranges: list[tuple[int, int]]) -> int:
    marks = set()
    for lo, hi in ranges:
        marks.update(range(lo, hi, 4096))
    return len(marks) * 4096


@pytest.mark.parametrize("kind", ["mmap-mmap", "bytes-bytes"])
@pytest.mark.parametrize(("name", "key", "other"), FIXTURE_PAIRS, ids=[p[0] for p in FIXTURE_PAIRS])
def test_fixture_pairs_without_hole_info(name: str, key: str, other: str, kind: str) -> None:
    fixtures = require_fixtures()
    expected = load_expected(name)[key]
    path_old, path_new = fixtures / other / "stable_memory.bin", fixtures / name / "stable_memory.bin"
    with ExitStack() as stack:
        make_a, make_b = KINDS[kind]
        old = make_a(stack, path_old, path_old.read_bytes())
        new = make_b(stack, path_new, path_new.read_bytes())
        res = changed_ranges(old, new)  # type: ignore[arg-type]
        reverse = changed_ranges(new, old)  # type: ignore[arg-type]
    check_against_expected(res, expected)
    assert res.hole_bytes_skipped == 0 and res.bytes_compared == path_new.stat().st_size
    assert reverse.ranges == res.ranges


def test_fixture_pair_matches_naive_reference() -> None:
    # expected.json lists only the first and last 50 of this pair's ranges; check all of them.
    fixtures = require_fixtures()
    a = (fixtures / "migration/pre_upgrade/stable_memory.bin").read_bytes()
    b = (fixtures / "migration/after_stable_save/stable_memory.bin").read_bytes()
    cut = 400_000  # the stable_save blob ends at 386,837; past it the files agree
    assert a[cut:] == b[cut:]
    assert as_triples(changed_ranges(a, b)) == naive_diff(a[:cut], b[:cut])


def test_identical_fixture_copies_v060_v072() -> None:
    fixtures = require_fixtures()
    for name in ("cell_and_map", "btree_u64_many"):
        res = diff_files(
            fixtures / name / "stable_memory.bin", fixtures / f"{name}_v072" / "stable_memory.bin"
        )
        assert res.identical and res.count == 0 and res.total_bytes == 0


# --- basic behaviour ---


@pytest.mark.parametrize("kind", list(KINDS))
def test_identical(tmp_path: Path, kind: str) -> None:
    data = random.Random(1).randbytes(3 * MIB + 777)
    res = diff_as(kind, tmp_path, data, data)
    assert res.identical and res.ranges == () and res.total_bytes == 0 and res.tail is None
    assert res.bytes_compared == len(data)


def test_empty_inputs() -> None:
    assert changed_ranges(b"", b"").identical
    res = changed_ranges(b"", bytes(10))
    assert res.ranges == (ChangedRange(0, 10, tail=True),)
    assert res.total_bytes == 10 and res.bytes_compared == 0


@pytest.mark.parametrize("grow", [True, False])
def test_size_change_gives_separate_tail(grow: bool) -> None:
    short = bytes(1000)
    long_ = bytearray(1500)
    long_[990:1000] = b"\x01" * 10  # a difference that ends exactly where the tail starts
    a, b = (short, bytes(long_)) if grow else (bytes(long_), short)
    res = changed_ranges(a, b)
    assert as_triples(res) == [(990, 1000, False), (1000, 1500, True)]
    assert res.tail == ChangedRange(1000, 1500, tail=True)
    assert res.count == 2 and res.total_bytes == 510
    assert res.pairs(include_tail=False) == [(990, 1000)]
    assert (res.size_a, res.size_b) == ((1000, 1500) if grow else (1500, 1000))


def test_size_change_of_identical_prefix(tmp_path: Path) -> None:
    data = random.Random(2).randbytes(2 * MIB)
    pa, pb = tmp_path / "a.bin", tmp_path / "b.bin"
    pa.write_bytes(data)
    pb.write_bytes(data + bytes(65536))  # stable memory grew by one zeroed page
    res = diff_files(pa, pb)
    assert as_triples(res) == [(2 * MIB, 2 * MIB + 65536, True)]


def single_change_offsets() -> list[int]:
    chunk, block, leaf = byte_diff.CHUNK_SIZE, byte_diff.BLOCK_SIZE, byte_diff.LEAF_SIZE
    offs = {0, leaf - 1, leaf, leaf + 1, block - 1, block, block + 1, chunk - 1, chunk, chunk + 1}
    return sorted(offs)


SINGLE_SIZE = 2 * byte_diff.CHUNK_SIZE + 12_345  # odd size: the last block and leaf are partial


@functools.cache
def single_base() -> bytes:
    return random.Random(3).randbytes(SINGLE_SIZE)


@pytest.mark.parametrize("kind", [*KINDS, "pread"])
@pytest.mark.parametrize("offset", [*single_change_offsets(), SINGLE_SIZE - 1])
def test_single_changed_byte(tmp_path: Path, kind: str, offset: int) -> None:
    a = single_base()
    b = bytearray(a)
    b[offset] ^= 0x5A
    res = diff_as(kind, tmp_path, a, bytes(b))
    assert as_triples(res) == [(offset, offset + 1, False)]
    assert res.total_bytes == 1


@pytest.mark.parametrize(
    "boundary",
    [byte_diff.LEAF_SIZE, byte_diff.BLOCK_SIZE, byte_diff.CHUNK_SIZE],
    ids=["leaf", "block", "chunk"],
)
def test_runs_merge_across_boundaries(tmp_path: Path, boundary: int) -> None:
    a = bytes(3 * byte_diff.CHUNK_SIZE)
    b = bytearray(a)
    b[boundary - 3 : boundary + 4] = b"\xff" * 7
    b[boundary + 10] = 1  # a separate run just after
    res = diff_as("mmap-mmap", tmp_path, a, bytes(b))
    assert as_triples(res) == [(boundary - 3, boundary + 4, False), (boundary + 10, boundary + 11, False)]


def test_scattered_changes_match_naive_at_real_geometry() -> None:
    rnd = random.Random(4)
    a = rnd.randbytes(byte_diff.CHUNK_SIZE + 5000)
    b = bytearray(a)
    for off in rnd.sample(range(len(a)), 300):
        b[off] ^= rnd.randrange(1, 256)
    b[1000:9000] = rnd.randbytes(8000)  # a dense stretch too
    assert as_triples(changed_ranges(a, bytes(b))) == naive_diff(a, bytes(b))


def test_non_byte_buffers() -> None:
    a = array.array("I", range(5000))
    b = array.array("I", range(5000))
    b[100] = 7
    res = changed_ranges(memoryview(a), memoryview(b))
    # 100 * 4 = 400 in little- or big-endian: the value 100 vs 7 differs in one byte of the item.
    assert res.count == 1 and res.total_bytes == 1 and 400 <= res.ranges[0].start < 404
    assert res.size_a == res.size_b == 20_000


def _scattered(seed: int, size: int, changes: int, grow: int = 0) -> tuple[bytes, bytes]:
    rnd = random.Random(seed)
    a = rnd.randbytes(size)
    b = bytearray(a)
    for off in rnd.sample(range(size), changes):
        b[off] ^= rnd.randrange(1, 256)
    b[size // 3 : size // 3 + 3000] = rnd.randbytes(3000)  # a dense stretch
    return a, bytes(b) + rnd.randbytes(grow)


@pytest.mark.parametrize("grow", [0, 777, -5000])
def test_the_pread_compare_matches_naive_at_every_level(tmp_path: Path, grow: int) -> None:
    """Read by descriptor in 16 KiB pieces (the reader's unit is capped by the chunk), refined down to
    64-byte leaves: the same ranges as the byte-by-byte reference, tail included."""
    a, b = _scattered(8, 200_000, 400, max(grow, 0))
    if grow < 0:
        b = b[:grow]
    with geometry(chunk=16384, block=4096, leaf=64, fanout=4):
        got = diff_as("pread", tmp_path, a, b)
    assert as_triples(got) == naive_diff(a, b)
    assert got == diff_as("bytes-bytes", tmp_path, a, b)


@pytest.mark.parametrize("kind", ["bytes-bytes", "pread"])
def test_spans_join_to_the_one_pass_result(tmp_path: Path, kind: str) -> None:
    """Two spans split anywhere (in a run of differing bytes, on a chunk boundary, at the ends), put
    together by ``join``: the very result of one pass, counts and tail included."""
    a, b = _scattered(9, 300_000, 500, 1234)
    whole = diff_as(kind, tmp_path, a, b)
    common = len(a)
    inside = whole.ranges[len(whole.ranges) // 2]
    for h in (0, 1, 16384, inside.start + 1, common // 2, common - 1, common):
        with geometry(chunk=16384, block=4096, leaf=64, fanout=4):
            parts = [
                diff_as(kind, tmp_path, a, b, span=(0, h)),
                diff_as(kind, tmp_path, a, b, span=(h, common)),
            ]
        assert byte_diff.join(parts) == whole, h
        assert parts[1].tail == whole.tail and (h == common or parts[0].tail is None)


@pytest.mark.parametrize("h", [30_000, 70_000])
def test_merged_runs_are_not_joined_but_resumed(monkeypatch: pytest.MonkeyPatch, h: int) -> None:
    """A part that had to merge ranges into runs (how depends on everything before it) is not joined;
    the span after it, compared again going on from it (``resume``), gives the one-pass result."""
    a, b = _scattered(10, 100_000, 3000, 500)
    monkeypatch.setattr(byte_diff, "MAX_RUNS", 64)
    whole = changed_ranges(a, b)
    assert whole.gap > 0
    parts = [changed_ranges(a, b, span=(0, h)), changed_ranges(a, b, span=(h, 100_000))]
    assert parts[0].gap > 0 or parts[1].gap > 0
    assert byte_diff.join(parts) is None
    assert changed_ranges(a, b, span=(h, 100_000), resume=parts[0]) == whole
    monkeypatch.setattr(byte_diff, "MAX_RUNS", 1 << 16)  # nothing merged: resuming is joining
    exact = [changed_ranges(a, b, span=(0, h)), changed_ranges(a, b, span=(h, 100_000))]
    assert (
        changed_ranges(a, b, span=(h, 100_000), resume=exact[0])
        == byte_diff.join(exact)
        == changed_ranges(a, b)
    )


def test_the_sink_sees_every_piece_read_by_descriptor(tmp_path: Path) -> None:
    """``sink`` gets each piece of the first input the pread compare reads, in order, tiling the span."""
    a, b = _scattered(11, 100_000, 50)
    seen: list[tuple[int, bytes]] = []
    with geometry(chunk=16384, block=4096, leaf=64, fanout=4):
        diff_as(
            "pread", tmp_path, a, b, span=(5000, 90_000), sink=lambda o, n, v: seen.append((o, bytes(v[:n])))
        )
    assert [o for o, _ in seen] == [5000 + i * 16384 for i in range(len(seen))]
    assert b"".join(d for _o, d in seen) == a[5000:90_000]


# --- property test against the byte-by-byte reference ---

mutation = st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 40), st.integers(1, 255))


@settings(max_examples=300, deadline=None)
@given(
    base=st.binary(max_size=3000),
    mutations=st.lists(mutation, max_size=12),
    size_delta=st.integers(-100, 100),
    tiny=st.booleans(),
)
def test_matches_naive_reference(
    base: bytes, mutations: list[tuple[float, int, int]], size_delta: int, tiny: bool
) -> None:
    b = bytearray(base)
    for where, length, xor in mutations:
        if not b:
            break
        start = int(where * len(b))
        for i in range(start, min(start + length, len(b))):
            b[i] ^= xor
    if size_delta < 0:
        del b[max(0, len(b) + size_delta) :]
    else:
        b.extend(bytes([size_delta % 251]) * size_delta)
    expected = naive_diff(base, bytes(b))
    # "tiny" shrinks every block so the 3000-byte inputs cross chunk, block and leaf boundaries.
    if tiny:
        with geometry(chunk=256, block=64, leaf=4, fanout=4):
            got = changed_ranges(base, bytes(b))
            got_view = changed_ranges(memoryview(base), memoryview(bytes(b)))
    else:
        got = changed_ranges(base, bytes(b))
        got_view = changed_ranges(memoryview(base), memoryview(bytes(b)))
    assert as_triples(got) == expected
    assert got_view.ranges == got.ranges
    assert got.total_bytes == sum(e - s for s, e, _ in expected)


# --- sparse files ---


def test_sparse_files_skip_common_holes(tmp_path: Path) -> None:
    size = 64 * MIB
    blob = random.Random(5).randbytes(100_000)
    pa = make_sparse(tmp_path / "a.bin", size, {0: blob, 40 * MIB + 60_000: blob})
    pb = make_sparse(
        tmp_path / "b.bin",
        size,
        {0: blob, 40 * MIB + 60_000: blob[:500] + b"X" + blob[501:], 20 * MIB: b"new", size - 2: b"zz"},
    )
    if pa.stat().st_blocks * 512 >= size:
        pytest.skip("filesystem of tmp_path does not keep sparse files sparse")
    res = diff_files(pa, pb)
    assert as_triples(res) == [
        (20 * MIB, 20 * MIB + 3, False),
        (40 * MIB + 60_500, 40 * MIB + 60_501, False),
        (size - 2, size, False),
    ]
    assert res.skipped_holes
    # Data pages: 2 for the first blob, 3 for the second (it straddles a page), 1 each for the writes.
    assert res.bytes_compared == 7 * 65536
    assert res.hole_bytes_skipped == size - res.bytes_compared


def test_sparse_with_paths_fds_and_sizes(tmp_path: Path) -> None:
    size = 8 * MIB
    pa = make_sparse(tmp_path / "a.bin", size, {3 * MIB: b"abc"})
    pb = make_sparse(tmp_path / "b.bin", size + 2 * MIB, {3 * MIB: b"abd", size + 5: b"tail"})
    expected = naive_diff(pa.read_bytes(), pb.read_bytes())
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        fa.seek(77)
        with (
            mmap.mmap(fa.fileno(), 0, access=mmap.ACCESS_READ) as ma,
            mmap.mmap(fb.fileno(), 0, access=mmap.ACCESS_READ) as mb,
        ):
            by_fd = changed_ranges(ma, mb, a_file=fa.fileno(), b_file=fb.fileno())
            by_path = changed_ranges(ma, mb, a_file=pa, b_file=str(pb))
            only_one = changed_ranges(ma, mb, a_file=pa)
        assert fa.tell() == 77  # the descriptor's offset survived the hole probing
    assert as_triples(by_fd) == as_triples(by_path) == as_triples(only_one) == expected
    assert expected[-1] == (size, size + 2 * MIB, True)
    assert only_one.hole_bytes_skipped == 0
    if pa.stat().st_blocks * 512 < size:
        assert by_fd.hole_bytes_skipped == by_path.hole_bytes_skipped == size - 65536


def test_all_hole_files(tmp_path: Path) -> None:
    pa = make_sparse(tmp_path / "a.bin", 16 * MIB, {})
    pb = make_sparse(tmp_path / "b.bin", 16 * MIB, {})
    calls: list[tuple[int, int]] = []
    res = diff_files(pa, pb, progress=lambda d, t: calls.append((d, t)))
    assert res.identical
    assert calls[-1] == (16 * MIB, 16 * MIB)


def test_empty_files(tmp_path: Path) -> None:
    pa, pb = tmp_path / "a.bin", tmp_path / "b.bin"
    pa.write_bytes(b"")
    pb.write_bytes(b"\x00" * 10)
    assert as_triples(diff_files(pa, pb)) == [(0, 10, True)]
    assert diff_files(pa, pa).identical


# --- progress, cancel, resource hygiene ---


def test_progress_is_bounded_and_monotonic() -> None:
    a = bytes(4 * MIB)
    b = bytearray(a)
    b[-1] = 1
    calls: list[tuple[int, int]] = []
    with geometry(chunk=4096, block=1024, leaf=64, fanout=4):
        res = changed_ranges(a, bytes(b), progress=lambda d, t: calls.append((d, t)))
    assert res.count == 1
    assert 90 <= len(calls) <= 100  # 1024 chunks, reported once per percent
    assert all(t == len(a) for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert calls[-1] == (len(a), len(a))


def test_progress_on_tiny_and_empty_inputs() -> None:
    calls: list[tuple[int, int]] = []
    changed_ranges(b"abc", b"abd", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(3, 3)]
    calls.clear()
    changed_ranges(b"", b"x", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 0)]


def test_cancel_raises_and_releases_mappings(tmp_path: Path) -> None:
    data = bytes(6 * MIB)
    pa, pb = tmp_path / "a.bin", tmp_path / "b.bin"
    pa.write_bytes(data)
    pb.write_bytes(data)
    polls = 0

    def cancel() -> bool:
        nonlocal polls
        polls += 1
        return polls > 1

    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        ma = mmap.mmap(fa.fileno(), 0, access=mmap.ACCESS_READ)
        mb = mmap.mmap(fb.fileno(), 0, access=mmap.ACCESS_READ)
        with pytest.raises(DiffCancelled) as info:
            changed_ranges(ma, mb, cancel=cancel)
        assert info.value.done_bytes == byte_diff.CHUNK_SIZE
        assert info.value.total_bytes == len(data)
        again = pickle.loads(pickle.dumps(info.value))
        assert (again.done_bytes, again.total_bytes) == (byte_diff.CHUNK_SIZE, len(data))
        assert "cancelled" in str(again)
        # No memoryview export may outlive the call, or closing the caller's maps would fail.
        ma.close()
        mb.close()


def test_cancel_never_true_completes() -> None:
    assert changed_ranges(b"ab", b"ab", cancel=lambda: False).identical


def test_private_copy_mapping_keeps_its_writes(tmp_path: Path) -> None:
    # Pages of a private (ACCESS_COPY) mapping must never be dropped: that would undo its writes.
    data = bytes(3 * byte_diff.CHUNK_SIZE)
    pa, pb = tmp_path / "a.bin", tmp_path / "b.bin"
    pa.write_bytes(data)
    pb.write_bytes(data)
    with open(pa, "rb") as fa, open(pb, "rb") as fb:
        with (
            mmap.mmap(fa.fileno(), 0, access=mmap.ACCESS_COPY) as ma,
            mmap.mmap(fb.fileno(), 0, access=mmap.ACCESS_READ) as mb,
        ):
            ma[10:14] = b"edit"
            first = changed_ranges(ma, mb)
            second = changed_ranges(ma, mb)
            assert ma[10:14] == b"edit"
    assert as_triples(first) == as_triples(second) == [(10, 14, False)]
    assert pa.read_bytes() == data  # and the file itself was never written


def test_inputs_are_not_modified(tmp_path: Path) -> None:
    rnd = random.Random(6)
    a, b = rnd.randbytes(MIB), rnd.randbytes(MIB)
    pa, pb = tmp_path / "a.bin", tmp_path / "b.bin"
    pa.write_bytes(a)
    pb.write_bytes(b)
    mtimes = (pa.stat().st_mtime_ns, pb.stat().st_mtime_ns)
    diff_files(pa, pb)
    assert (pa.read_bytes(), pb.read_bytes()) == (a, b)
    assert (pa.stat().st_mtime_ns, pb.stat().st_mtime_ns) == mtimes
