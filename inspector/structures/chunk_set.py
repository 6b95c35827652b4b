"""A set of chunk payload addresses, one byte per chunk of the allocator's grid.

A deep walk remembers every node and overflow page it reached (to catch cycles and shared subtrees, and
to tell the allocator scan which allocated chunks nobody reaches). As a Python ``set`` of ints that cost
~100 bytes per chunk: ~300 MB for a 20,000,000-entry map. Chunks sit on a fixed grid (FORMAT.md §3.9:
``FIRST_CHUNK_OFFSET + i * chunk_size``, payload ``CHUNK_HEADER_SIZE`` later), so the chunk number is a
division away and one byte per chunk below the frontier holds the same answer. Addresses off the grid or
past the bitmap (only corrupt pointers produce them) go to a small ordinary set, so the answers stay
exactly those of a set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from inspector.layouts import CHUNK_HEADER_SIZE, FIRST_CHUNK_OFFSET

FIRST_PAYLOAD = FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE


class ChunkSet:
    """``add`` / ``in`` / ``len`` / iteration like a ``set[int]`` of payload addresses.

    ``bits[i]`` is 1 when the payload of chunk ``i`` (address ``FIRST_PAYLOAD + i * chunk_size``) is in
    the set. Hot loops may read and write ``bits`` directly with ``index``'s arithmetic.
    """

    __slots__ = ("chunk_size", "bits", "other")

    def __init__(self, chunk_size: int, chunks: int) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk size must be positive")
        self.chunk_size = chunk_size
        self.bits = bytearray(max(0, chunks))
        self.other: set[int] = set()

    def index(self, addr: int) -> int:
        """Chunk number of a payload address on the grid and inside the bitmap, else -1."""
        rel = addr - FIRST_PAYLOAD
        if rel < 0:
            return -1
        i, r = divmod(rel, self.chunk_size)
        return i if not r and i < len(self.bits) else -1

    def add(self, addr: int) -> None:
        i = self.index(addr)
        if i >= 0:
            self.bits[i] = 1
        else:
            self.other.add(addr)

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, int):
            return False
        i = self.index(addr)
        return bool(self.bits[i]) if i >= 0 else addr in self.other

    def __len__(self) -> int:
        return len(self.bits) - self.bits.count(0) + len(self.other)

    def __iter__(self) -> Iterator[int]:
        cs = self.chunk_size
        start = 0
        find = self.bits.find
        while (i := find(1, start)) >= 0:
            yield FIRST_PAYLOAD + i * cs
            start = i + 1
        yield from sorted(self.other)

    def absent(self, first: int, flags: Sequence[int]) -> list[int]:
        """Payload addresses of the chunks ``first``, ``first + 1``, … whose flag is 1 but which are not
        in the set (the allocator scan's "allocated but unreached"), in address order."""
        n = len(flags)
        if 0 <= first and first + n <= len(self.bits) and bytes(flags) == self.bits[first : first + n]:
            return []  # the common case, compared in C: exactly the reached chunks are allocated
        cs = self.chunk_size
        return [
            FIRST_PAYLOAD + (first + j) * cs
            for j, f in enumerate(flags)
            if f == 1 and (FIRST_PAYLOAD + (first + j) * cs) not in self
        ]
