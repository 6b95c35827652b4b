"""Deep walks of big snapshots let go of the pages they mapped, with the same answers."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
from conftest import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import inspector.structures.btreemap.walk as btreemap  # noqa: E402
from inspector.forge import RawImage, forge_btreemap  # noqa: E402
from inspector.session import load  # noqa: E402


def _walk(path: Path) -> tuple[int, str, int, int]:
    s = load(path)
    try:
        m = s.analysis.structures[0].map
        w = m.walk()
        return w.entry_count, w.entries_sha256, w.reachable_chunks, w.allocated_chunks_scanned
    finally:
        s.close()


def test_a_walk_releases_mapped_pages_and_finds_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(9)
    block = rng.randbytes(1 << 20)
    entries = []
    for k in range(120):
        n = rng.randrange(5_000, 60_000)
        off = rng.randrange(0, len(block) - n)
        entries.append((k.to_bytes(8, "big"), block[off : off + n]))
    image = RawImage()
    image.place(forge_btreemap(entries))
    path = tmp_path / "big-values.bin"
    image.write_to(path, sparse=False)
    plain = _walk(path)
    calls: list[int] = []
    real = btreemap._Releaser.__call__

    def counted(self: btreemap._Releaser) -> None:
        calls.append(self.count)
        real(self)

    monkeypatch.setattr(btreemap, "RELEASE_MIN_BYTES", 0)
    monkeypatch.setattr(btreemap, "RELEASE_EVERY_BYTES", 256 << 10)
    monkeypatch.setattr(btreemap._Releaser, "__call__", counted)
    released = _walk(path)
    assert released == plain and plain[0] == 120
    # The walk reads ~4 MB of overflow pages and the allocator scan every header: several releases.
    assert len(calls) >= 8


def test_a_long_free_list_is_read_with_pread_and_gives_the_same_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Far hops of a big file's free list are read with pread (no mapped folios), in the clean walk and
    (past FREE_LIST_PREAD_AFTER hops) in the careful one; same list, frontier and walk as through the
    mapping. btree_u64_many (real library) has a 158-chunk free list."""
    from conftest import FIXTURES, require_fixtures

    import inspector.structures.btreemap.allocator as allocator

    require_fixtures()
    path = FIXTURES / "btree_u64_many" / "stable_memory.bin"

    def state() -> tuple[object, ...]:
        s = load(path)
        try:
            (m,) = [x.map for x in s.analysis.structures if hasattr(x, "map")]
            w = m.walk()
            return m._free_list(), w.entry_count, w.entries_sha256, [f.code for f in w.findings]
        finally:
            s.close()

    mapped = state()
    preads: list[int] = []
    real = os.pread

    def counted(fd: int, n: int, off: int) -> bytes:
        preads.append(off)
        return real(fd, n, off)

    # The clean walk on a file counted as big, every hop "far": each hop is one pread.
    monkeypatch.setattr(allocator, "FREE_LIST_RELEASE_MIN_BYTES", 0)
    monkeypatch.setattr(allocator, "FAR_HOP", 0)
    monkeypatch.setattr(allocator.os, "pread", counted)
    assert state() == mapped
    hops = len(mapped[0][0])  # type: ignore[index]
    assert hops > 100 and len(preads) >= hops
    # The careful walk (it runs when the clean one gives up): past FREE_LIST_PREAD_AFTER hops, pread.
    preads.clear()
    monkeypatch.setattr(allocator, "FREE_LIST_PREAD_AFTER", 2)
    monkeypatch.setattr(allocator._Allocator, "_clean_free_list", lambda self: None)
    assert state() == mapped
    assert len(preads) >= hops - 2


def test_nodes_of_a_big_file_are_read_with_pread_and_give_the_same_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From PREAD_MIN_BYTES on, nodes are read with pread instead of through the mapping (scattered
    touches map whole folios): the same count, digest, node statistics and findings."""
    from conftest import FIXTURES, require_fixtures

    import inspector.structures.btreemap.headers as headers

    require_fixtures()
    path = FIXTURES / "btree_u64_many" / "stable_memory.bin"

    def walk() -> tuple[object, ...]:
        s = load(path)
        try:
            (m,) = [x.map for x in s.analysis.structures if hasattr(x, "map")]
            w = m.walk()
            entries = [(e.key, e.value) for e in m.iter_entries(16_000)]
            return w.entry_count, w.entries_sha256, w.nodes, [f.code for f in w.findings], entries
        finally:
            s.close()

    mapped = walk()
    preads: list[int] = []
    real = os.pread

    def counted(fd: int, n: int, off: int) -> bytes:
        preads.append(off)
        return real(fd, n, off)

    monkeypatch.setattr(headers, "PREAD_MIN_BYTES", 0)
    monkeypatch.setattr(headers.os, "pread", counted)
    assert walk() == mapped
    assert len(preads) >= mapped[2]["count"]  # type: ignore[index]  # every node at least once


def _rss_file_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RssFile is read from Linux /proc")
def test_peek_reads_what_read_reads_without_mapping_the_file(tmp_path: Path) -> None:
    import mmap

    from inspector.memory import OutOfBounds, PhysicalMemory, VirtualMemory

    rng = random.Random(5)
    mib = 1 << 20
    path = tmp_path / "probe.bin"
    with path.open("wb") as f:  # 64 MiB, random bytes at every MiB start (the rest a hole)
        f.truncate(64 * mib)
        marks = {}
        for i in range(64):
            marks[i] = rng.randbytes(16)
            f.seek(i * mib)
            f.write(marks[i])
    fd = os.open(path, os.O_RDONLY)
    buf = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    try:
        phys = PhysicalMemory(buf, 64 * mib, fd=fd)
        # Buckets of 1 MiB after the 64 KiB header, out of order, and a memory nested in that one.
        outer = VirtualMemory(phys, 0, [9, 2, 30, 5, 40, 41], mib, 6 * mib)
        inner = VirtualMemory(outer, 1, [3, 0], mib, 2 * mib, base=0)
        for mem in (phys, outer, inner):
            for off in (0, 7, mib - 3, mib + 65_530, mem.size - 16):  # within, and across buckets
                assert mem.peek(off, 16) == mem.read(off, 16), (mem.label, off)
            with pytest.raises(OutOfBounds):
                mem.peek(mem.size - 2, 3)
        buf.close()
        buf = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)  # a fresh mapping: nothing of it touched yet
        phys = PhysicalMemory(buf, 64 * mib, fd=fd)
        before = _rss_file_kb()
        got = [phys.peek(i * mib, 16) for i in range(1, 64)]
        peeked = _rss_file_kb() - before
        assert got == [marks[i] for i in range(1, 64)]
        before = _rss_file_kb()
        assert [phys.read(i * mib, 16) for i in range(1, 64)] == got
        mapped = _rss_file_kb() - before
        # Each mapped read faults in at least one 4 KiB page; pread maps none.
        assert mapped >= 63 * 4 > peeked
    finally:
        buf.close()
        os.close(fd)
