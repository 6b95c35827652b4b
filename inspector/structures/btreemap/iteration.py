"""Ordered iteration over the entries: all of them, in batches, or from a key on."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from inspector.layouts import FIRST_CHUNK_OFFSET
from inspector.structures.btreemap.loading import _NodeLoading
from inspector.structures.btreemap.nodes import (
    INTERNAL,
    Entry,
    NodeError,
)
from inspector.structures.chunk_set import FIRST_PAYLOAD, ChunkSet


class _Iteration(_NodeLoading):
    """Ordered iteration over the entries: all of them, in batches, or from a key on."""

    # --- ordered iteration -------------------------------------------------------------------------------

    def empty_chunk_set(self, *, lazy: bool = False) -> ChunkSet:
        """An empty set of chunk payloads sized to the chunks below the frontier (the ones nodes and
        overflow pages can be in); anything else lands in its small overflow set, so the answers are
        exact whatever the size. ``lazy`` does not follow the free list to find the frontier (a first
        page must not read it): the header's allocated-chunk count plus a quarter stands in for it."""
        cs = self._cs if self._cs > 0 else 1
        fits = max(0, (self._size - FIRST_CHUNK_OFFSET) // cs + 1)
        if lazy or not self.allocator_ok:
            # Without a sound allocator header nothing says how many chunks are in use: 1 MiB of bitmap,
            # the rest (if a broken map really spans more) in the overflow set.
            guess = self.num_allocated_chunks if self.allocator_ok else 1 << 20
            return ChunkSet(cs, min(fits, guess + guess // 4 + 64))
        top = self.frontier
        if top < FIRST_CHUNK_OFFSET:
            return ChunkSet(cs, min(fits, 1 << 20))
        return ChunkSet(cs, min(fits, (top - FIRST_CHUNK_OFFSET) // cs + 1))

    def _inorder(
        self, start_key: bytes | None = None
    ) -> Iterator[tuple[int, list[bytes], list[bytes], int, int]]:
        """In-order batches (node addr, keys, values, from index, to index), explicit stack, lazy.

        With ``start_key`` it starts at the first key >= start_key in byte order (which is the map's
        order only for unsigned big-endian integers, strings, blobs and byte arrays).
        """
        if not self.walkable or not self.root_addr:
            return
        # Nodes seen (a cycle must not loop forever): one byte per chunk, indexed inline (see chunk_set).
        seen = self.empty_chunk_set(lazy=True)
        bits, nbits, cs, other = seen.bits, len(seen.bits), seen.chunk_size, seen.other
        load = self._load
        touches = 0
        # Frame: [addr, children, keys, values, j]: child j is done or in progress; next is entry j.
        stack: list[list[Any]] = []
        pending: int | None = self.root_addr
        seeking = start_key is not None
        while True:
            while pending is not None:
                addr, pending = pending, None
                n, r = divmod(addr - FIRST_PAYLOAD, cs)
                if not r and 0 <= n < nbits:
                    if bits[n]:
                        break
                    bits[n] = 1
                elif addr in other:
                    break
                else:
                    other.add(addr)
                try:
                    loaded = load(addr)
                except NodeError:
                    break
                _ver, ntype, k, children, keys, values, ovfs = loaded[:7]
                if ovfs and self._pread is not None:
                    # Nodes come with pread; overflow pages through the mapping, each touch mapping a
                    # folio: let go every 256 of them (a long iteration of a big map held ~450 MB).
                    touches += 1
                    if not touches % 256:
                        self._release_mapped_pages()
                if ntype == INTERNAL:
                    if seeking:
                        i = bisect_left(keys, start_key)
                        if i < k and keys[i] == start_key:
                            stack.append([addr, children, keys, values, i])
                            seeking = False
                            break
                        stack.append([addr, children, keys, values, i])
                        pending = children[i]
                    else:
                        stack.append([addr, children, keys, values, 0])
                        pending = children[0]
                else:
                    i = bisect_left(keys, start_key) if seeking else 0
                    seeking = False
                    if i < k:
                        yield addr, keys, values, i, k
            seeking = False
            if not stack:
                return
            frame = stack[-1]
            j = frame[4]
            if j < len(frame[2]):
                yield frame[0], frame[2], frame[3], j, j + 1
                frame[4] = j + 1
                pending = frame[1][j + 1]
            else:
                stack.pop()

    def _runs_from(self, start_index: int) -> Iterator[tuple[int, list[bytes], list[bytes], int, int]]:
        """The in-order node runs (addr, keys, values, i0, i1), the first ``start_index`` entries skipped."""
        skip = max(0, start_index)
        for addr, keys, values, i0, i1 in self._inorder():
            if skip:
                if skip >= i1 - i0:
                    skip -= i1 - i0
                    continue
                i0 += skip
                skip = 0
            yield addr, keys, values, i0, i1

    def iter_entries(self, start_index: int = 0) -> Iterator[Entry]:
        """Entries in key order from the ``start_index``-th, lazily (stop consuming to stop reading)."""
        for addr, keys, values, i0, i1 in self._runs_from(start_index):
            for i in range(i0, i1):
                yield Entry(keys[i], values[i], addr, i)

    def iter_batches(self, start_index: int = 0) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """The entries of ``iter_entries(start_index)`` as (keys, values) runs, one per node visit.

        For bulk consumers (the jsonl export): a run is a leaf's entries or one separator, so the
        caller can work list-at-a-time instead of creating an ``Entry`` per entry.
        """
        for _addr, keys, values, i0, i1 in self._runs_from(start_index):
            if i0 == 0 and i1 == len(keys):
                yield keys, values
            else:
                yield keys[i0:i1], values[i0:i1]

    def iter_entries_from_key(self, key: bytes) -> Iterator[Entry]:
        """Entries in key order starting at the first key >= ``key`` (byte order; see ``_inorder``)."""
        for addr, keys, values, i0, i1 in self._inorder(bytes(key)):
            for i in range(i0, i1):
                yield Entry(keys[i], values[i], addr, i)
