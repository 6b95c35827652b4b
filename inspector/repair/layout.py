"""Where a repaired manager's memories land physically, and how far old contents reach."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inspector.layouts import WASM_PAGE_SIZE
from inspector.memory import Range
from inspector.repair.mm_writer import bucket_start, physical_size
from inspector.repair.model import RepairPlan

if TYPE_CHECKING:
    from inspector.mapped_pages import ByteSource
    from inspector.memory import PhysicalMemory

SCAN_BLOCK = 1 << 20


class Layout:
    """The repaired manager's buckets: where a memory's virtual bytes land physically."""

    def __init__(self, base: int, bucket_size_pages: int, owners: list[int | None]) -> None:
        self.base = base
        self.bs_pages = bucket_size_pages
        self.bs = bucket_size_pages * WASM_PAGE_SIZE
        self.owners = owners

    def buckets(self, mid: int) -> list[int]:
        return [b for b, o in enumerate(self.owners) if o == mid]

    def capacity(self, mid: int) -> int:
        return len(self.buckets(mid)) * self.bs

    def grow_to(self, mid: int, nbytes: int) -> list[int]:
        """Allocate buckets at the end of the table until the memory holds ``nbytes``; the new ones."""
        new: list[int] = []
        while self.capacity(mid) < nbytes:
            self.owners.append(mid)
            new.append(len(self.owners) - 1)
        return new

    def physical(self, mid: int, offset: int, n: int) -> list[Range]:
        out: list[Range] = []
        buckets = self.buckets(mid)
        pos, end = offset, offset + n
        while pos < end:
            k, off = divmod(pos, self.bs)
            take = min(end - pos, self.bs - off)
            s = bucket_start(self.base, buckets[k], self.bs_pages) + off
            out.append((s, s + take))
            pos += take
        return out

    def place(self, plan: RepairPlan, mid: int, offset: int, data: bytes, what: str) -> None:
        pos = 0
        for s, e in self.physical(mid, offset, len(data)):
            plan.add(s, data[pos : pos + e - s], what)
            pos += e - s

    @property
    def physical_size(self) -> int:
        return physical_size(self.base, len(self.owners), self.bs_pages)


def last_nonzero_end(buf: ByteSource, size: int, ranges: list[Range]) -> int:
    """For a memory made of the physical ``ranges`` (in virtual order): the virtual offset just past its
    last non-zero byte (0 when it is all zero). Read backwards in blocks, so the cost is the tail's."""
    starts = [0]
    for s, e in ranges:
        starts.append(starts[-1] + e - s)
    for i in range(len(ranges) - 1, -1, -1):
        s, e = ranges[i]
        hi = min(e, size)
        while hi > s:
            lo = max(s, hi - SCAN_BLOCK)
            block = bytes(buf[lo:hi]).rstrip(b"\0")
            if block:
                return starts[i] + (lo - s) + len(block)
            hi = lo
    return 0


def pages(nbytes: int) -> int:
    return -(-nbytes // WASM_PAGE_SIZE)


def old_extent(phys: PhysicalMemory, layout: Layout, mid: int) -> int:
    """Virtual bytes of memory ``mid`` up to its last non-zero byte, over the buckets it has now."""
    ranges = [
        (bucket_start(layout.base, b, layout.bs_pages), bucket_start(layout.base, b + 1, layout.bs_pages))
        for b in layout.buckets(mid)
    ]
    return last_nonzero_end(phys.buf, phys.size, ranges)
