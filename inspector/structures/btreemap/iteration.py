"""Ordered iteration over the entries: all of them, in batches, or from a key on."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from inspector.structures.btreemap.loading import _NodeLoading
from inspector.structures.btreemap.nodes import (
    INTERNAL,
    Entry,
    NodeError,
)


class _Iteration(_NodeLoading):
    """Ordered iteration over the entries: all of them, in batches, or from a key on."""

    # --- ordered iteration -------------------------------------------------------------------------------

    def _try_load(self, addr: int, seen: set[int]) -> tuple[Any, ...] | None:
        if addr in seen:
            return None
        seen.add(addr)
        try:
            return self._load(addr)
        except NodeError:
            return None

    def _inorder(
        self, start_key: bytes | None = None
    ) -> Iterator[tuple[int, list[bytes], list[bytes], int, int]]:
        """In-order batches (node addr, keys, values, from index, to index), explicit stack, lazy.

        With ``start_key`` it starts at the first key >= start_key in byte order (which is the map's
        order only for unsigned big-endian integers, strings, blobs and byte arrays).
        """
        if not self.walkable or not self.root_addr:
            return
        seen: set[int] = set()
        # Frame: [addr, children, keys, values, j]: child j is done or in progress; next is entry j.
        stack: list[list[Any]] = []
        pending: int | None = self.root_addr
        seeking = start_key is not None
        while True:
            while pending is not None:
                loaded = self._try_load(pending, seen)
                addr, pending = pending, None
                if loaded is None:
                    break
                _ver, ntype, k, children, keys, values = loaded[:6]
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
