"""Reading a node's bytes: the chunk, its overflow pages, and a slot's overflowing key or value."""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

from inspector.layouts import (
    CAPACITY,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    NODE_MAGIC,
    OVERFLOW_MAGIC,
)
from inspector.memory import OutOfBounds
from inspector.structures.btreemap.chunks import _ChunkGrid
from inspector.structures.btreemap.headers import _U32_STRUCT, MAX_V1_OVERFLOW_READ
from inspector.structures.btreemap.nodes import (
    CHUNK_NODE,
    CHUNK_NODE_SIZE,
    CHUNK_OVERFLOW,
    FIRST_PAYLOAD,
    OVERFLOW_DATA_OFFSET,
    NodeError,
    children_struct,
    v1_offsets,
)

_RUN_MIN, _RUN_MAX = 8, 512  # overflow pages unpacked per run (doubling while the pages stay back to back)


@lru_cache(maxsize=64)
def _overflow_run_struct(page: int, n: int) -> struct.Struct:
    """``n`` chunks of ``CHUNK_OVERFLOW`` header + page data, back to back (derived, not re-typed)."""
    one = CHUNK_OVERFLOW.format[1:] + f"{page - OVERFLOW_DATA_OFFSET}s"
    return struct.Struct("<" + one * n)


def _u32(buf: Any, offset: int) -> tuple[int]:
    return _U32_STRUCT.unpack_from(buf, offset)


def _children(k: int, buf: Any, p: int) -> tuple[int, ...]:
    return children_struct(k + 1).unpack_from(buf, p)


class _NodeReading(_ChunkGrid):
    """Reading a node's bytes: the chunk, its overflow pages, and a slot's overflowing key or value."""

    # --- node loading ------------------------------------------------------------------------------------

    def _read_chunk_bytes(self, addr: int, n: int) -> Any:
        buf, phys, avail = self._contig(addr)
        if avail >= n:
            return buf[phys : phys + n]
        try:
            return self.mem.read(addr, n)
        except OutOfBounds as e:
            raise NodeError(f"chunk at {addr:#x} lies outside memory") from e

    def _read_node(
        self, addr: int, allow_free: bool = False
    ) -> tuple[int, int, int, Any, int, int, list[int]]:
        """Validate a node's chunk, header and overflow chain; return where its logical stream is.

        Returns (version, node type, k, buffer, base, end, overflow pages): the stream is buffer[base:end].
        """
        page = self.page_size
        if addr < FIRST_PAYLOAD or (addr - FIRST_PAYLOAD) % self._cs:
            raise NodeError(
                f"node address {addr:#x} is not on the chunk grid ((addr - 116) mod {self._cs} != 0)",
                addr=addr,
            )
        start = addr - CHUNK_HEADER_SIZE
        buf, phys, avail = self._contig(start)
        if avail >= CHUNK_HEADER_SIZE + page:
            base = phys + CHUNK_HEADER_SIZE
            end = base + page
            if buf is self._pread_buf:  # a big snapshot file: read, do not map (see _Headers)
                raw = self._pread(CHUNK_HEADER_SIZE + page, phys)
                if len(raw) == CHUNK_HEADER_SIZE + page:
                    buf, base, end = raw, CHUNK_HEADER_SIZE, CHUNK_HEADER_SIZE + page
        else:
            n = min(CHUNK_HEADER_SIZE + page, self._size - start)
            if n < CHUNK_NODE_SIZE:
                raise NodeError(f"node {addr:#x} lies outside memory", addr=addr)
            try:
                buf = self.mem.read(start, n)
            except OutOfBounds as e:
                raise NodeError(f"node {addr:#x} is unreadable: {e}", addr=addr) from e
            base, end = CHUNK_HEADER_SIZE, n
        cmagic, cver, alloc, _pad, _nxt, nmagic, nver, ntype, k, ovf = CHUNK_NODE.unpack_from(
            buf, base - CHUNK_HEADER_SIZE
        )
        if cmagic != CHUNK_MAGIC or cver != 1:
            raise NodeError(f"chunk header of node {addr:#x} is {cmagic!r} v{cver}, not CHK v1", addr=addr)
        if alloc != 1 and not allow_free:
            raise NodeError(f"node {addr:#x} sits in a chunk marked free (allocated={alloc})", addr=addr)
        if nmagic != NODE_MAGIC:
            raise NodeError(f"node {addr:#x} has magic {nmagic!r}, not 'BTN'", addr=addr)
        if ntype > 1:
            raise NodeError(f"node {addr:#x} has type {ntype}", addr=addr)
        if not 1 <= k <= CAPACITY:
            raise NodeError(f"node {addr:#x} has {k} entries (must be 1..{CAPACITY})", addr=addr)
        if nver == 1:
            if not self._derived:
                raise NodeError(f"v1 node {addr:#x} in a map whose header is v2 (page size value)", addr=addr)
            return 1, ntype, k, buf, base, end, []
        if nver != 2:
            raise NodeError(f"node {addr:#x} has version {nver}", addr=addr)
        if not ovf:
            return 2, ntype, k, buf, base, end, []
        if end - base < page:
            raise NodeError(f"node {addr:#x} page is cut off by the end of memory", addr=addr)
        stream, overflows = self._read_overflow_chain(addr, bytes(buf[base:end]), ovf)
        return 2, ntype, k, stream, 0, len(stream), overflows

    def _read_overflow_chain(self, addr: int, first_page: bytes, ovf: int) -> tuple[bytes, list[int]]:
        page = self.page_size
        parts = [first_page]
        overflows: list[int] = []
        seen: set[int] = set()
        nxt = ovf
        run = _RUN_MIN
        while nxt:
            # Fast path: overflow pages the allocator handed out back to back (the usual case) are
            # checked and cut out a run at a time by one unpack_from; anything unusual falls through
            # to the page-by-page loop below, which names the problem.
            before = len(overflows)
            taken = self._overflow_run(nxt, run, seen, before, parts, overflows)
            if taken is not None:
                nxt = taken
                # Doubling while runs fill the read; a run that ended early says how long the next may
                # be (the library's chains are runs of a few dozen pages where values were freed and
                # reused): reading 512 pages to take 40 read and unpacked 13 times what was used.
                got = len(overflows) - before
                run = min(run * 2, _RUN_MAX) if got == run else max(_RUN_MIN, min(2 * got, _RUN_MAX))
                continue
            run = _RUN_MIN
            if nxt in seen:
                raise NodeError(f"overflow chain of node {addr:#x} loops at {nxt:#x}", "btree_cycle", addr)
            if len(overflows) >= self._max_chunks:
                raise NodeError(f"overflow chain of node {addr:#x} is longer than memory allows", addr=addr)
            if nxt < FIRST_PAYLOAD or (nxt - FIRST_PAYLOAD) % self._cs:
                raise NodeError(
                    f"overflow page {nxt:#x} of node {addr:#x} is not on the chunk grid", addr=addr
                )
            data = self._read_chunk_bytes(nxt - CHUNK_HEADER_SIZE, CHUNK_HEADER_SIZE + page)
            cmagic, cver, alloc, _pad, _n, omagic, onext = CHUNK_OVERFLOW.unpack_from(data, 0)
            if cmagic != CHUNK_MAGIC or cver != 1 or alloc != 1:
                raise NodeError(
                    f"overflow page {nxt:#x} of node {addr:#x} is not in an allocated CHK chunk", addr=addr
                )
            if omagic != OVERFLOW_MAGIC:
                raise NodeError(f"overflow page {nxt:#x} of node {addr:#x} has magic {omagic!r}", addr=addr)
            parts.append(data[CHUNK_HEADER_SIZE + OVERFLOW_DATA_OFFSET :])
            overflows.append(nxt)
            seen.add(nxt)
            nxt = onext
        return b"".join(parts), overflows

    def _overflow_run(
        self, nxt: int, want: int, seen: set[int], have: int, parts: list[Any], overflows: list[int]
    ) -> int | None:
        """Take the longest run of back-to-back valid overflow pages starting at ``nxt`` (at most
        ``want``) and return the address that follows it (0: the chain ends), or None when no run of
        two or more applies."""
        cs = self._cs
        if nxt < FIRST_PAYLOAD or (nxt - FIRST_PAYLOAD) % cs:
            return None
        buf, phys, avail = self._contig(nxt - CHUNK_HEADER_SIZE)
        n = min(want, avail // cs, self._max_chunks - have)
        if n < 2:
            return None
        # Read with pread where the memory is a file: with large page-cache folios, unpacking straight
        # from the mapping maps up to megabytes per run (page-table work and RSS) for kilobytes read.
        t = _overflow_run_struct(self.page_size, n).unpack_from(
            self.mem.peek(nxt - CHUNK_HEADER_SIZE, n * cs)
        )
        nexts = t[6::8]
        expected = range(nxt + cs, nxt + (n + 1) * cs, cs)
        m = n
        if nexts != tuple(expected):
            m = next(j for j in range(n) if nexts[j] != expected[j]) + 1
        if m < 2:
            return None
        stop = 8 * m
        if (
            t[0:stop:8].count(CHUNK_MAGIC) != m
            or t[1:stop:8].count(1) != m
            or t[2:stop:8].count(1) != m
            or t[5:stop:8].count(OVERFLOW_MAGIC) != m
        ):
            return None
        addrs = range(nxt, nxt + m * cs, cs)
        if not seen.isdisjoint(addrs):
            return None
        seen.update(addrs)
        overflows.extend(addrs)
        parts.extend(t[7:stop:8])
        return int(nexts[m - 1])

    def _reread_slot_overflow(
        self, addr: int, buf: Any, base: int, keys: list[bytes], values: list[bytes], over: list[int]
    ) -> None:
        """A v1 entry longer than its slot: read its real bytes the way the library does, straight on
        over the following slots (FORMAT.md §11.3). Bounded by the memory size."""
        mk, mv = self.max_key_size or 0, self.max_value_size or 0
        for i in over:
            koff, voff = v1_offsets(i, mk, mv)
            (klen,) = _u32(buf, base + koff - 4)
            (vlen,) = _u32(buf, base + voff - 4)
            if max(klen, vlen) > MAX_V1_OVERFLOW_READ:
                raise NodeError(
                    f"v1 entry {i} of node {addr:#x} claims a {max(klen, vlen)}-byte key/value", addr=addr
                )
            try:
                if klen > mk:
                    keys[i] = self.mem.read(addr + koff, klen)
                if vlen > mv:
                    values[i] = self.mem.read(addr + voff, vlen)
            except OutOfBounds as e:
                raise NodeError(
                    f"v1 entry {i} of node {addr:#x} runs past the end of memory", addr=addr
                ) from e
