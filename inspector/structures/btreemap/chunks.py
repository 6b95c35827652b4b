"""The chunk grid: every chunk slot of the memory and what its payload holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from inspector.layouts import (
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    NODE_MAGIC,
    OVERFLOW_MAGIC,
)
from inspector.memory import OutOfBounds
from inspector.structures.btreemap.allocator import _Allocator


class Chunk(NamedTuple):
    """One allocator chunk on the grid (FORMAT.md §3.3)."""

    addr: int  # of the 16-byte chunk header
    payload_addr: int  # addr + 16: where a node or overflow page starts
    magic_ok: bool  # "CHK" with version 1
    allocated: bool
    next: int  # only meaningful for free chunks
    payload: str  # "BTN", "NOF", "other", or "none" when the payload lies past the end of memory


class _ChunkGrid(_Allocator):
    """The chunk grid: every chunk slot of the memory and what its payload holds."""

    def _payload_kind(self, payload: int) -> str:
        if payload + 3 > self._size:
            return "none"
        buf, phys, avail = self._contig(payload)
        if avail >= 3:
            magic = bytes(buf[phys : phys + 3])
        else:
            try:
                magic = self.mem.read(payload, 3)
            except OutOfBounds:  # a bucket missing from a truncated snapshot
                return "none"
        if magic == NODE_MAGIC:
            return "BTN"
        if magic == OVERFLOW_MAGIC:
            return "NOF"
        return "other"

    def chunk_grid(self, *, beyond_frontier: bool = False) -> Iterator[Chunk]:
        """Every chunk header from 100 up to and including the frontier.

        ``beyond_frontier`` continues over the chunk-aligned slots after the frontier up to the end of
        memory: an allocator that was reset (a re-created map) leaves its old chunks there.
        """
        if not self.allocator_ok:
            return
        frontier = self.frontier
        if frontier < 0:
            return
        stop = (self._size - CHUNK_HEADER_SIZE) if beyond_frontier else frontier
        addr = FIRST_CHUNK_OFFSET
        while addr <= stop:
            hdr = self._chunk_header(addr)
            if hdr is None:
                break
            magic, version, allocated, nxt = hdr
            payload = addr + CHUNK_HEADER_SIZE
            yield Chunk(
                addr,
                payload,
                magic == CHUNK_MAGIC and version == 1,
                allocated == 1,
                nxt,
                self._payload_kind(payload),
            )
            addr += self._cs
