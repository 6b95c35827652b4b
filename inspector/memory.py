"""Byte-addressable memories: the physical snapshot and the virtual memories a MemoryManager maps.

Every structure walker reads through the ``Memory`` interface, so the same walker works on a raw
snapshot (a structure directly on stable memory) and on a MemoryManager virtual memory whose buckets
are scattered over the file. Reads are bounds-checked against the memory's own size: a read past the
end raises ``OutOfBounds``, which walkers turn into findings, never into a traceback.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from typing import Any

from inspector.errors import BadFormat
from inspector.layouts import BUCKETS_START, WASM_PAGE_SIZE

# Anything with the buffer protocol (mmap, bytes, bytearray, memoryview); collections.abc.Buffer is 3.12+.
Buffer = Any

Range = tuple[int, int]


class OutOfBounds(BadFormat):
    """A read outside a memory's size, or into bytes the snapshot file does not hold."""


class Memory:
    """Interface shared by the physical and virtual memories."""

    size: int
    label: str

    def read(self, offset: int, n: int) -> bytes:
        raise NotImplementedError

    def physical_ranges(self, offset: int, n: int) -> list[Range]:
        """The physical byte ranges (half-open) that hold virtual bytes [offset, offset+n)."""
        raise NotImplementedError

    def peek(self, offset: int, n: int) -> bytes:
        """``read`` for a few bytes in a loop of scattered probes: it does not map the file's pages.
        Kernels that keep the page cache in large folios map a whole folio (up to 2 MB) on a touch of
        one byte, so a probe at every bucket start of a 1 GiB memory left 1 GB of RSS."""
        return self.read(offset, n)

    def to_physical(self, offset: int) -> int:
        raise NotImplementedError

    def to_virtual(self, physical: int) -> int | None:
        """The offset in this memory of a byte at ``physical``; None when the memory does not hold it.
        A memory laid over the file from byte 0 is the identity up to its size; managed memories map
        their buckets (``VirtualMemory``)."""
        return physical if 0 <= physical < self.size else None

    def contiguous(self, offset: int) -> tuple[Buffer, int, int]:
        """(buffer, physical offset, bytes available contiguously) for hot loops that unpack in place."""
        raise NotImplementedError


class PhysicalMemory(Memory):
    """The snapshot file itself (a read-only mmap, or ``bytes`` for empty/small inputs)."""

    def __init__(self, buf: Buffer, size: int, label: str = "raw", fd: int | None = None) -> None:
        self.buf = buf
        self.size = size
        self.label = label
        # The open file behind ``buf`` (when it is one), for scattered reads that should not map pages.
        self.fd = fd

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise OutOfBounds(f"read of {n} bytes at {offset:#x} is outside {self.label} ({self.size} bytes)")

    def read(self, offset: int, n: int) -> bytes:
        self._check(offset, n)
        return bytes(self.buf[offset : offset + n])

    def peek(self, offset: int, n: int) -> bytes:
        if self.fd is None:
            return self.read(offset, n)
        self._check(offset, n)
        try:
            got = os.pread(self.fd, n, offset)
        except OSError:
            got = b""
        # A short read (the file shrank under us) goes through the mapping, which reports it as read does.
        return got if len(got) == n else self.read(offset, n)

    def physical_ranges(self, offset: int, n: int) -> list[Range]:
        return [(offset, offset + n)] if n > 0 else []

    def to_physical(self, offset: int) -> int:
        return offset

    def contiguous(self, offset: int) -> tuple[Buffer, int, int]:
        return self.buf, offset, max(0, self.size - offset)


@dataclass
class VirtualMemory(Memory):
    """A MemoryManager memory: its buckets in virtual order (FORMAT.md §2.3).

    ``size`` is the memory's declared size (size_pages × 64 KiB). Bytes whose bucket lies beyond the
    end of the snapshot file raise ``OutOfBounds`` so that a truncated snapshot is reported, not
    silently read as zeros.
    """

    # ``phys`` is the memory the manager lives in: the snapshot, or (for a nested manager) a virtual
    # memory of the outer manager. ``base`` is where the manager's MGR header sits in it (0 unless the
    # manager was initialised on a RestrictedMemory); bucket i starts at base + 65,536 + i × bucket size.
    phys: Any
    memory_id: int | str
    buckets: list[int]
    bucket_size_bytes: int
    size: int
    label: str = field(default="")
    base: int = 0

    def __post_init__(self) -> None:
        if not self.label:
            self.label = f"memory {self.memory_id}"
        start0 = self.base + BUCKETS_START
        self._starts = [start0 + b * self.bucket_size_bytes for b in self.buckets]
        # Nested managers read through their host memory; only the outermost level is the file.
        self._nested = not isinstance(self.phys, PhysicalMemory)

    @property
    def root(self) -> PhysicalMemory:
        """The snapshot file under any number of nesting levels."""
        p = self.phys
        while isinstance(p, VirtualMemory):
            p = p.phys
        return p  # type: ignore[no-any-return]

    @property
    def size_pages(self) -> int:
        return self.size // WASM_PAGE_SIZE

    def to_physical(self, offset: int) -> int:
        k, off = divmod(offset, self.bucket_size_bytes)
        if offset < 0 or k >= len(self._starts):
            raise OutOfBounds(f"virtual {offset:#x} is outside {self.label}")
        if self._nested:
            return int(self.phys.to_physical(self._starts[k] + off))
        return self._starts[k] + off

    def physical_ranges(self, offset: int, n: int) -> list[Range]:
        if self._nested:
            out_n: list[Range] = []
            for s, e in self._host_ranges(offset, n):
                for ps, pe in self.phys.physical_ranges(s, e - s):
                    if out_n and out_n[-1][1] == ps:
                        out_n[-1] = (out_n[-1][0], pe)
                    else:
                        out_n.append((ps, pe))
            return out_n
        return self._host_ranges(offset, n)

    def _host_ranges(self, offset: int, n: int) -> list[Range]:
        """Ranges in the memory the manager lives in (the file, or the host memory when nested)."""
        out: list[Range] = []
        end = offset + n
        pos = offset
        while pos < end:
            k, off = divmod(pos, self.bucket_size_bytes)
            if k >= len(self._starts):
                raise OutOfBounds(f"virtual {pos:#x} is outside {self.label}")
            take = min(end - pos, self.bucket_size_bytes - off)
            start = self._starts[k] + off
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], start + take)
            else:
                out.append((start, start + take))
            pos += take
        return out

    def read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise OutOfBounds(
                f"read of {n} bytes at virtual {offset:#x} is outside {self.label} ({self.size} bytes)"
            )
        if n == 0:
            return b""  # also for a memory that has a size but no buckets
        k, off = divmod(offset, self.bucket_size_bytes)
        if off + n <= self.bucket_size_bytes:  # the common case: one bucket
            start = self._starts[k] + off
            return self.phys.read(start, n)
        parts = [self.phys.read(s, e - s) for s, e in self._host_ranges(offset, n)]
        return b"".join(parts)

    def peek(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            return self.read(offset, n)  # raises OutOfBounds, worded as read words it
        root = self.root
        return b"".join(root.peek(s, e - s) for s, e in self.physical_ranges(offset, n))

    def contiguous(self, offset: int) -> tuple[Buffer, int, int]:
        k, off = divmod(offset, self.bucket_size_bytes)
        if offset < 0 or k >= len(self._starts) or offset >= self.size:
            return self.root.buf, 0, 0
        start = self._starts[k] + off
        avail = min(self.bucket_size_bytes - off, self.size - offset, self.phys.size - start)
        if self._nested:
            buf, pstart, pavail = self.phys.contiguous(start)
            return buf, pstart, max(0, min(avail, pavail))
        return self.phys.buf, start, max(0, avail)

    def to_virtual(self, physical: int) -> int | None:
        """Inverse mapping, for the hex view: which virtual offset a physical byte is, if any."""
        if self._nested:
            host = self.phys.to_virtual(physical)
            if host is None:
                return None
            physical = host
        if physical < self.base + BUCKETS_START:
            return None
        b, off = divmod(physical - self.base - BUCKETS_START, self.bucket_size_bytes)
        try:
            k = self.buckets.index(b)
        except ValueError:
            return None
        v = k * self.bucket_size_bytes + off
        return v if v < self.size else None


def merge_ranges(ranges: list[Range]) -> list[Range]:
    """Sort and merge half-open ranges (touching ranges merge)."""
    out: list[Range] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def range_contains(ranges: list[Range], pos: int) -> bool:
    """Whether a sorted, merged list of ranges contains pos."""
    i = bisect.bisect_right(ranges, (pos, float("inf"))) - 1
    return i >= 0 and ranges[i][0] <= pos < ranges[i][1]
