"""The allocator: chunk headers, the free list and the frontier of allocated chunks."""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable
from typing import Any

from inspector.layouts import (
    ALLOCATOR_OFFSET,
    CHUNK_HEADER,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    ChunkHeader,
    field_span,
)
from inspector.mapped_pages import page_releaser
from inspector.memory import OutOfBounds, PhysicalMemory
from inspector.structures.btreemap.headers import MAX_LISTED_ADDRESSES, _Headers

# The last clean free list walked on a raw mapping: (its walk's parameters, the hops, each hop's first
# header word). ``diff`` loads two snapshots whose allocators are usually identical; the second walk is
# then two C-speed gathers that check every hop's header and link against its own bytes instead of a
# Python step per hop (a 100K-hop list: ~0.2 s). Only the bytes decide: any difference walks again.
_LAST_CLEAN: list[tuple[tuple[int, ...], array[int], array[int]]] = []
VERIFY_BLOCK = 0x100  # hops gathered between drops of the mapped pages (as the walk does)
FREE_LIST_PREAD_AFTER = 64  # free-list hops read through the mapping before switching to pread
FREE_LIST_RELEASE_MIN_BYTES = 256 << 20  # smaller snapshots are left mapped
# In the clean walks of a big file, a hop this far from the previous one is read with pread: through the
# mapping it would fault in (and map) a fresh page-cache folio, dropped again by the next release. Hops
# closer than that (the freed chunks of one big value lie side by side) stay on pages already mapped.
FAR_HOP = 64 << 10


def _same_free_list(q: Any, key: tuple[int, ...], release: Any) -> list[int] | None:
    """The last clean free list (``_LAST_CLEAN``) when ``q`` (u64 words from the first chunk) holds,
    at every one of its hops, the same first header word and a link to the next hop (0 at the end):
    then a walk of ``q`` would read exactly those words and return exactly that list. None otherwise."""
    if not _LAST_CLEAN or _LAST_CLEAN[0][0] != key:
        return None
    _key, chain, heads = _LAST_CLEAN[0]
    first, cs_link = key[2], key[4]
    at = [(a - first) >> 3 for a in chain]
    links = [i + cs_link for i in at]
    nexts = chain[1:]
    nexts.append(0)
    get = q.__getitem__
    for b in range(0, len(at), VERIFY_BLOCK):
        e = b + VERIFY_BLOCK
        if (
            list(map(get, at[b:e])) != heads[b:e].tolist()
            or list(map(get, links[b:e])) != nexts[b:e].tolist()
        ):
            release()
            return None
        release()
    return chain.tolist()


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
        clean = self._clean_free_list() if self.allocator_ok else None
        if clean is not None:
            chain, frontier = clean, clean[-1]
        elif self.allocator_ok:
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

    def _clean_free_list(self) -> list[int] | None:
        """The free list when every hop is a free CHK v1 chunk on the grid and it ends (None otherwise:
        the careful walk above then names the problem). One unpack per hop and no set of seen
        addresses: a list that loops runs past the number of chunks that fit and is handed back.
        The mapped pages are let go every few hundred hops (each hop can map a large page-cache
        folio; unmapping is cheap, a long list over a big memory would otherwise map all of it)."""
        cs, first, size = self._cs, FIRST_CHUNK_OFFSET, self._size
        unpack = CHUNK_HEADER.unpack_from
        mem = self.mem
        direct = mem.buf if isinstance(mem, PhysicalMemory) else None
        contig = self._contig
        root = getattr(mem, "root", mem)  # the snapshot file under a memory manager's memory
        drop, whole = page_releaser(getattr(root, "buf", b"")), int(getattr(root, "size", 0))

        def release() -> None:
            drop(0, whole)

        chain: list[int] = []
        append = chain.append
        addr = self.free_list_head
        if direct is not None and not cs % 8 and size > first:
            return self._clean_free_list_words(direct, release)
        # On a big file, far hops are read with pread (see ``FAR_HOP``), inline rather than through
        # ``_header_preader``: a call per hop made the 65,398-hop list of a 20M-entry map ~35% slower.
        root_buf = getattr(root, "buf", None)
        fd = root.fd if isinstance(root, PhysicalMemory) and whole >= FREE_LIST_RELEASE_MIN_BYTES else None
        fd_, pread, last = fd if fd is not None else -1, os.pread, -FAR_HOP
        for n in range(1, self._max_chunks + 1):
            if addr < first or (addr - first) % cs or addr + CHUNK_HEADER_SIZE > size:
                break
            if direct is not None:
                buf, phys = direct, addr
            else:
                buf, phys, avail = contig(addr)
                if avail < CHUNK_HEADER_SIZE:
                    break
            if fd is not None and buf is root_buf and not -FAR_HOP < phys - last < FAR_HOP:
                try:
                    raw = pread(fd_, CHUNK_HEADER_SIZE, phys)
                except OSError:
                    break
                if len(raw) < CHUNK_HEADER_SIZE:
                    break
                magic, version, allocated, _pad, nxt = unpack(raw, 0)
            else:
                magic, version, allocated, _pad, nxt = unpack(buf, phys)
            last = phys
            if magic != CHUNK_MAGIC or version != 1 or allocated:
                break
            append(addr)
            if not nxt:
                release()
                return None if max(chain) > addr else chain
            addr = nxt
            if not n & 0xFF:
                release()
        release()
        return None

    def _clean_free_list_words(self, buf: Any, release: Any) -> list[int] | None:
        """``_clean_free_list`` on a raw mapping whose chunks are u64-aligned from the first one: a hop
        reads two words of a u64 view (the header's leading fields, then its link) instead of
        unpacking a tuple."""
        cs, first = self._cs, FIRST_CHUNK_OFFSET
        words = (self._size - first) // 8
        link = field_span(ChunkHeader, "next").offset // 8
        free = int.from_bytes(CHUNK_MAGIC + bytes([1, 0]), "little")  # magic, version 1, not allocated
        mask = (1 << (8 * (len(CHUNK_MAGIC) + 2))) - 1
        key = (self.free_list_head, cs, first, words, link, self._max_chunks)
        chain: list[int] = []
        append = chain.append
        heads: list[int] = []
        keep = heads.append
        addr = self.free_list_head
        # On a big file, far hops are read with pread (see ``FAR_HOP``).
        mem = self.mem
        fd = mem.fd if isinstance(mem, PhysicalMemory) and self._size >= FREE_LIST_RELEASE_MIN_BYTES else None
        span = 8 * (link + 1)
        fd_, last = fd if fd is not None else -1, -FAR_HOP
        with memoryview(buf) as view, view[first : first + 8 * words].cast("Q") as q:
            known = _same_free_list(q, key, release)
            if known is not None:
                return known
            for n in range(1, self._max_chunks + 1):
                r = addr - first
                if r < 0 or r % cs:
                    break
                i = r >> 3
                if i + link >= words:
                    break
                if fd is None or -FAR_HOP < addr - last < FAR_HOP:
                    h, nxt = q[i], q[i + link]
                else:
                    try:
                        raw = os.pread(fd_, span, addr)
                    except OSError:
                        break
                    if len(raw) < span:
                        break
                    h, nxt = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[span - 8 : span], "little")
                if h & mask != free:
                    break
                append(addr)
                keep(h)
                last, addr = addr, nxt
                if not addr:
                    release()
                    if max(chain) > chain[-1]:
                        return None
                    _LAST_CLEAN[:] = [(key, array("Q", chain), array("Q", heads))]
                    return chain
                if not n & 0xFF:
                    release()
        release()
        return None

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
