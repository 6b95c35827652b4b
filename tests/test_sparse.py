"""Tests for inspector.sparse: data_ranges, is_zero and find_all."""

from __future__ import annotations

import array
import errno
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FIXTURES, make_sparse, require_fixtures
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector import sparse
from inspector.sparse import WASM_PAGE_SIZE, data_ranges, find_all, is_zero

PAGE = WASM_PAGE_SIZE
MIB = 1 << 20


def require_holes(path: Path) -> None:
    """Skip when the filesystem under tmp_path stored the file densely (no holes to find)."""
    st_ = path.stat()
    if st_.st_blocks * 512 >= st_.st_size:
        pytest.skip("filesystem of tmp_path does not keep sparse files sparse")


@pytest.fixture
def open_fd() -> Iterator[list[int]]:
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def ro(path: Path, fds: list[int]) -> int:
    fd = os.open(path, os.O_RDONLY)
    fds.append(fd)
    return fd


def fixture_bins() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    return sorted(FIXTURES.glob("**/*.bin")) + sorted((FIXTURES / "upstream").glob("*"))


# --- data_ranges ---


def test_data_ranges_dense_file(tmp_path: Path, open_fd: list[int]) -> None:
    p = tmp_path / "dense.bin"
    p.write_bytes(os.urandom(3 * PAGE + 17))
    assert data_ranges(ro(p, open_fd), 3 * PAGE + 17) == [(0, 3 * PAGE + 17)]


def test_data_ranges_sparse_rounds_out_to_pages(tmp_path: Path, open_fd: list[int]) -> None:
    size = 10 * MIB + 1000  # not a whole number of pages: the last range must clamp to size
    p = make_sparse(
        tmp_path / "s.bin",
        size,
        {
            5: b"head",
            3 * MIB + 70_000: b"x" * 10,
            6 * MIB - 3: b"straddle",  # crosses a page boundary: both pages hold data
            size - 1: b"z",
        },
    )
    require_holes(p)
    assert data_ranges(ro(p, open_fd), size) == [
        (0, PAGE),
        (3 * MIB + PAGE, 3 * MIB + 2 * PAGE),
        (6 * MIB - PAGE, 6 * MIB + PAGE),
        (10 * MIB, size),
    ]


def test_data_ranges_merges_neighbouring_extents(tmp_path: Path, open_fd: list[int]) -> None:
    p = make_sparse(tmp_path / "s.bin", 4 * MIB, {8192: b"a", PAGE - 1: b"b", PAGE + 40_000: b"c"})
    require_holes(p)
    assert data_ranges(ro(p, open_fd), 4 * MIB) == [(0, 2 * PAGE)]


def test_data_ranges_finer_granularity(tmp_path: Path, open_fd: list[int]) -> None:
    p = make_sparse(tmp_path / "s.bin", 2 * MIB, {PAGE + 5: b"a"})
    require_holes(p)
    got = data_ranges(ro(p, open_fd), 2 * MIB, granularity=4096)
    assert got == [(PAGE, PAGE + 4096)]


def test_data_ranges_all_hole_and_empty(tmp_path: Path, open_fd: list[int]) -> None:
    p = make_sparse(tmp_path / "h.bin", 8 * MIB, {})
    require_holes(p)
    fd = ro(p, open_fd)
    assert data_ranges(fd, 8 * MIB) == []
    assert data_ranges(fd, 0) == []


def test_data_ranges_size_limits_the_scan(tmp_path: Path, open_fd: list[int]) -> None:
    p = make_sparse(tmp_path / "s.bin", 4 * MIB, {0: b"a", 3 * MIB: b"b"})
    require_holes(p)
    assert data_ranges(ro(p, open_fd), 2 * MIB) == [(0, PAGE)]


def test_data_ranges_preserves_file_offset(tmp_path: Path, open_fd: list[int]) -> None:
    p = make_sparse(tmp_path / "s.bin", 2 * MIB, {PAGE: b"a"})
    fd = ro(p, open_fd)
    os.lseek(fd, 12345, os.SEEK_SET)
    data_ranges(fd, 2 * MIB)
    assert os.lseek(fd, 0, os.SEEK_CUR) == 12345


def test_data_ranges_falls_back_on_pipe() -> None:
    r, w = os.pipe()
    try:
        assert data_ranges(r, 1000) == [(0, 1000)]
    finally:
        os.close(r)
        os.close(w)


def test_data_ranges_falls_back_on_einval(
    tmp_path: Path, open_fd: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = make_sparse(tmp_path / "s.bin", 2 * MIB, {PAGE: b"a"})
    fd = ro(p, open_fd)
    real_lseek = os.lseek

    def lseek(fd_: int, pos: int, how: int) -> int:
        if how in (os.SEEK_DATA, os.SEEK_HOLE):
            raise OSError(errno.EINVAL, "not supported")
        return real_lseek(fd_, pos, how)

    monkeypatch.setattr(sparse.os, "lseek", lseek)
    assert data_ranges(fd, 2 * MIB) == [(0, 2 * MIB)]


def test_data_ranges_without_seek_data(
    tmp_path: Path, open_fd: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = make_sparse(tmp_path / "s.bin", 2 * MIB, {PAGE: b"a"})
    monkeypatch.delattr(sparse.os, "SEEK_DATA")
    assert data_ranges(ro(p, open_fd), 2 * MIB) == [(0, 2 * MIB)]


def test_data_ranges_rejects_bad_granularity(tmp_path: Path, open_fd: list[int]) -> None:
    p = make_sparse(tmp_path / "s.bin", PAGE, {0: b"a"})
    with pytest.raises(ValueError):
        data_ranges(ro(p, open_fd), PAGE, granularity=0)


@pytest.mark.parametrize("path", fixture_bins(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_data_ranges_on_fixtures_cover_every_nonzero_page(path: Path, open_fd: list[int]) -> None:
    # Holes must read as zeros, and every page holding a non-zero byte must be listed.
    require_fixtures()
    size = path.stat().st_size
    ranges = data_ranges(ro(path, open_fd), size)
    content = path.read_bytes()
    covered = bytearray(size)
    for lo, hi in ranges:
        assert lo % PAGE == 0 and (hi % PAGE == 0 or hi == size) and lo < hi <= size
        covered[lo:hi] = b"\x01" * (hi - lo)
    for off in range(0, size, PAGE):
        if not is_zero(content[off : off + PAGE]):
            assert covered[off], f"non-zero page at {off} reported as a hole"
    assert ranges == sorted(ranges)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False)), "ranges not merged"


def test_fixture_files_are_sparse_where_expected(open_fd: list[int]) -> None:
    # The migration trio is stored sparsely; if the copy we see kept its holes, they must be found.
    path = require_fixtures() / "migration" / "after_stable_save_small" / "stable_memory.bin"
    require_holes(path)
    size = path.stat().st_size
    ranges = data_ranges(ro(path, open_fd), size)
    assert sum(hi - lo for lo, hi in ranges) < size


# --- is_zero ---


@pytest.mark.parametrize("n", [0, 1, 7, 4096, PAGE, MIB - 1, MIB, MIB + 1, 3 * MIB + 5])
def test_is_zero_true(n: int) -> None:
    assert is_zero(bytes(n))
    assert is_zero(bytearray(n))
    assert is_zero(memoryview(bytes(n)))


@pytest.mark.parametrize("n", [1, 4096, 3 * MIB + 5])
def test_is_zero_false_anywhere(n: int) -> None:
    for pos in sorted({0, n // 2, n - 1, min(MIB - 1, n - 1), min(MIB, n - 1), min(MIB + 1, n - 1)}):
        buf = bytearray(n)
        buf[pos] = 0x80
        assert not is_zero(buf), pos


def test_is_zero_other_buffers(tmp_path: Path) -> None:
    assert is_zero(array.array("I", [0] * 1000))
    assert not is_zero(array.array("I", [0] * 999 + [1 << 31]))
    assert is_zero(memoryview(bytes(64)).cast("Q"))
    p = tmp_path / "z.bin"
    p.write_bytes(bytes(2 * MIB) + b"\x01")
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert not is_zero(mm)
        with memoryview(mm) as view:
            assert is_zero(view[: 2 * MIB])


# --- find_all ---


def find_loop(data: bytes, needle: bytes) -> list[int]:
    # Plain reference for large inputs: every (overlapping) match, holes or not.
    out: list[int] = []
    i = data.find(needle)
    while i >= 0:
        out.append(i)
        i = data.find(needle, i + 1)
    return out


def naive_find_all(data: bytes, needle: bytes, start: int, end: int, step: int | None) -> list[int]:
    return [
        i
        for i in range(start, end - len(needle) + 1)
        if data[i : i + len(needle)] == needle and (step is None or (i - start) % step == 0)
    ]


def test_find_all_basic_and_overlapping() -> None:
    assert list(find_all(b"aaaa", b"aa", 0, 4)) == [0, 1, 2]
    assert list(find_all(b"xxBTRxxBTR", b"BTR")) == [2, 7]
    assert list(find_all(b"xxBTRxxBTR", b"BTR", 3)) == [7]
    assert list(find_all(b"xxBTRxxBTR", b"BTR", 0, 9)) == [2]  # match must end by `end`
    assert list(find_all(b"BTR", b"BTR", 0, 100)) == [0]
    assert list(find_all(b"", b"BTR")) == []


def test_find_all_step_align_is_relative_to_start() -> None:
    data = b"..MGR...MGR.MGR."
    assert list(find_all(data, b"MGR", 0, step_align=4)) == [8, 12]
    assert list(find_all(data, b"MGR", 0, step_align=8)) == [8]
    assert list(find_all(data, b"MGR", 2, step_align=10)) == [2, 12]


def test_find_all_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        list(find_all(b"abc", b""))
    with pytest.raises(ValueError):
        list(find_all(b"abc", b"a", step_align=0))


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=300),
    needle=st.binary(min_size=1, max_size=4),
    start=st.integers(0, 320),
    length=st.integers(0, 320),
    step=st.one_of(st.none(), st.integers(1, 9)),
)
def test_find_all_matches_naive(
    data: bytes, needle: bytes, start: int, length: int, step: int | None
) -> None:
    # Make matches likely by planting the needle a few times.
    data = needle + data[: len(data) // 2] + needle + data[len(data) // 2 :] + needle
    end = start + length
    expect = naive_find_all(data, needle, start, min(end, len(data)), step)
    assert list(find_all(data, needle, start, end, step_align=step)) == expect


def test_find_all_skips_holes_but_stays_exact(tmp_path: Path, open_fd: list[int]) -> None:
    size = 4 * MIB
    writes = {
        100: b"BTR",
        PAGE - 3: b"BTR",  # "BTR\0" straddles the end of the data page into a hole
        MIB + PAGE: b"DIDL",  # "\0DIDL" starts in the hole before this data page
        2 * MIB + 12: b"DIDLDIDL",
        size - 4: b"DIDL",
    }
    p = make_sparse(tmp_path / "s.bin", size, writes)
    require_holes(p)
    fd = ro(p, open_fd)
    content = p.read_bytes()
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
        for needle in (b"BTR", b"BTR\x00", b"DIDL", b"\x00DIDL", b"LD"):
            expect = find_loop(content, needle)
            assert expect, needle
            assert list(find_all(mm, needle, 0, size, fd=fd)) == expect, needle
        # An all-zero needle matches inside holes, so holes are searched for it.
        zeros = list(find_all(mm, b"\x00\x00", 0, size, step_align=PAGE, fd=fd))
        assert zeros == [off for off in range(0, size, PAGE) if content[off : off + 2] == b"\x00\x00"]
        assert len(zeros) == size // PAGE - 1  # only the page that starts with "DIDL" fails


@pytest.mark.parametrize("path", fixture_bins(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_find_all_on_fixtures_with_and_without_holes(path: Path, open_fd: list[int]) -> None:
    require_fixtures()
    fd = ro(path, open_fd)
    content = path.read_bytes()
    if not content:
        pytest.skip("empty file")
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
        for needle in (b"MGR", b"BTR", b"BTN", b"DIDL", b"CHK", b"SCL"):
            plain = list(find_all(mm, needle))
            assert plain == find_loop(content, needle)
            assert list(find_all(mm, needle, fd=fd)) == plain
