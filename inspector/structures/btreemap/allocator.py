"""The allocator: chunk headers, the free list and the frontier of allocated chunks."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from inspector.layouts import (
    ALLOCATOR_OFFSET,
    CHUNK_HEADER,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
)
from inspector.mapped_pages import page_releaser
from inspector.memory import OutOfBounds
from inspector.structures.btreemap.headers import MAX_LISTED_ADDRESSES, _Headers

FREE_LIST_PREAD_AFTER = 64  # free-list hops read through the mapping before switching to pread
FREE_LIST_RELEASE_MIN_BYTES = 256 << 20  # smaller snapshots are left mapped


class _Allocator(_Headers):
    """The allocator: chunk headers, the free list and the frontier of allocated chunks."""

    # --- allocator ---------------------------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        return self._cs

    def _chunk_header(self, addr: int) -> tuple[bytes, int, int, int] | None:
        """(magic, version, allocated, next) of the chunk header at addr, or None if unreadable."""
        buf, phys, avail = self._contig(addr)
        if avail >= CHUNK_HEADER_SIZE:
            magic, version, allocated, _pad, nxt = CHUNK_HEADER.unpack_from(buf, phys)
            return magic, version, allocated, nxt
        try:
            raw = self.mem.read(addr, CHUNK_HEADER_SIZE)
        except OutOfBounds:
            return None
        magic, version, allocated, _pad, nxt = CHUNK_HEADER.unpack_from(raw, 0)
        return magic, version, allocated, nxt

    def _on_grid(self, addr: int) -> bool:
        return addr >= FIRST_CHUNK_OFFSET and (addr - FIRST_CHUNK_OFFSET) % self._cs == 0

    def _free_list(self) -> tuple[list[int], list[tuple[str, str, int | None, dict[str, Any]]], int]:
        """(free list, problems, frontier). The frontier is the list's end when the list is sound,
        otherwise the last chunk of the longest run of valid "CHK" headers from 100 (best effort)."""
        if self._free_list_state is not None:
            return self._free_list_state
        chain: list[int] = []
        problems: list[tuple[str, str, int | None, dict[str, Any]]] = []
        frontier = -1
        if self.allocator_ok:
            seen: set[int] = set()
            pread: Callable[[int], tuple[bytes, int, int, int] | None] | None = None
            addr = self.free_list_head
            while True:
                if addr in seen:
                    problems.append(("cycle", f"free list loops back to {addr:#x}", addr, {}))
                    break
                if len(chain) >= self._max_chunks:
                    problems.append(("too_long", "free list longer than the chunks that fit", addr, {}))
                    break
                if not self._on_grid(addr):
                    problems.append(
                        ("misaligned", f"free-list hop {addr:#x} is not on the chunk grid", addr, {})
                    )
                    break
                hdr = self._chunk_header(addr) if pread is None else pread(addr)
                if hdr is None:
                    problems.append(
                        ("out_of_bounds", f"free-list hop {addr:#x} lies outside memory", addr, {})
                    )
                    break
                magic, version, allocated, nxt = hdr
                if magic != CHUNK_MAGIC or version != 1:
                    problems.append(
                        ("bad_magic", f"free-list hop {addr:#x} is not a CHK v1 header", addr, {})
                    )
                    break
                if allocated != 0:
                    problems.append(("allocated", f"free-list hop {addr:#x} is marked allocated", addr, {}))
                    break
                seen.add(addr)
                chain.append(addr)
                if len(chain) == FREE_LIST_PREAD_AFTER:
                    pread = self._header_preader()
                if nxt == 0:
                    frontier = addr
                    break
                addr = nxt
            if frontier >= 0:
                higher = [a for a in chain[:-1] if a > frontier]
                if higher:
                    problems.append(
                        (
                            "frontier_not_highest",
                            f"free list ends at {frontier:#x} but holds higher chunks",
                            frontier,
                            {"higher": higher[:MAX_LISTED_ADDRESSES]},
                        )
                    )
                if frontier + CHUNK_HEADER_SIZE > self._size:
                    problems.append(
                        ("frontier_oob", "frontier header lies past the end of memory", frontier, {})
                    )
            if problems or frontier < 0:
                frontier = self._fallback_frontier()
        if len(chain) >= FREE_LIST_PREAD_AFTER:
            self._release_mapped_pages()  # what the first hops mapped
        self._free_list_state = (chain, problems, frontier)
        return self._free_list_state

    def _header_preader(self) -> Callable[[int], tuple[bytes, int, int, int] | None] | None:
        """A chunk-header reader that uses ``pread`` on the snapshot's file instead of the mapping, or
        None where there is no file (bytes in tests). A long free list hops all over the file, and each
        touch through the mapping maps the whole page-cache folio around it: the 65,000 hops of a
        20M-entry map had mapped ~780 MB. Releasing as it goes costs re-faults (3× the time); a 16-byte
        pread maps nothing."""
        phys = getattr(self.mem, "phys", self.mem)
        fd, whole = getattr(phys, "fd", None), getattr(phys, "buf", None)
        if fd is None or whole is None:
            return None
        contig, unpack = self._contig, CHUNK_HEADER.unpack_from

        def read(addr: int) -> tuple[bytes, int, int, int] | None:
            buf, off, avail = contig(addr)
            if buf is not whole or avail < CHUNK_HEADER_SIZE:
                return self._chunk_header(addr)
            try:
                raw = os.pread(fd, CHUNK_HEADER_SIZE, off)
            except OSError:
                return None
            if len(raw) < CHUNK_HEADER_SIZE:
                return None
            magic, version, allocated, _pad, nxt = unpack(raw, 0)
            return magic, version, allocated, nxt

        return read

    def _release_mapped_pages(self) -> None:
        """Drop this process's mapping of the snapshot (the page cache keeps the data)."""
        phys = getattr(self.mem, "phys", self.mem)
        buf, size = getattr(phys, "buf", None), int(getattr(phys, "size", 0))
        if buf is not None and size >= FREE_LIST_RELEASE_MIN_BYTES:
            page_releaser(buf)(0, size)

    def _fallback_frontier(self) -> int:
        addr, last = FIRST_CHUNK_OFFSET, -1
        for _ in range(self._max_chunks):
            hdr = self._chunk_header(addr)
            if hdr is None or hdr[0] != CHUNK_MAGIC or hdr[1] != 1:
                break
            last = addr
            addr += self._cs
        return last

    @property
    def frontier(self) -> int:
        """Address of the frontier chunk header (the never-used chunk ending the free list), or -1."""
        return self._free_list()[2]

    @property
    def allocator(self) -> dict[str, Any]:
        chain = self._free_list()[0]
        return {
            "magic": "BTA",
            "header_addr": ALLOCATOR_OFFSET,
            "allocation_size": self.allocation_size,
            "chunk_header_size": CHUNK_HEADER_SIZE,
            "chunk_size": self.allocation_size + CHUNK_HEADER_SIZE,
            "num_allocated_chunks": self.num_allocated_chunks,
            "free_list_head": self.free_list_head,
            "free_list": list(chain),
            "free_list_len": len(chain),
        }
