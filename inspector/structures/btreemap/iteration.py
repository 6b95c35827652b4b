"""Ordered iteration over the entries: all of them, in batches, or from a key on."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from inspector.forked import fork_call
from inspector.layouts import CAPACITY, CHUNK_HEADER_SIZE, CHUNK_MAGIC, FIRST_CHUNK_OFFSET, NODE_MAGIC
from inspector.memory import OutOfBounds
from inspector.structures.btreemap.loading import _NodeLoading
from inspector.structures.btreemap.nodes import (
    CHUNK_NODE,
    CHUNK_NODE_SIZE,
    INTERNAL,
    Entry,
    NodeError,
    children_struct,
)
from inspector.structures.chunk_set import FIRST_PAYLOAD, ChunkSet

# A start index at least this far in is reached by descending with subtree entry counts (see ``_seek``)
# instead of walking every entry before it: below it the walk costs less than a first count.
SEEK_BY_COUNT_FROM = 100_000
# Subtree entry counts kept per internal node whose subtree holds at least this many entries (a few
# thousand numbers for a 20M-entry map); smaller subtrees are counted again when a seek crosses them.
COUNT_KEEP_MIN = 2_048
# From this many allocated chunks on, the first count runs in a forked child (see ``_count_in_child``).
COUNT_IN_CHILD_FROM = 200_000
Frame = list[Any]  # [addr, children, keys, values, j] as ``_inorder`` keeps them
Run = tuple[int, list[bytes], list[bytes], int, int]


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
        self, start_key: bytes | None = None, resume: tuple[list[Frame], Run | None] | None = None
    ) -> Iterator[tuple[int, list[bytes], list[bytes], int, int]]:
        """In-order batches (node addr, keys, values, from index, to index), explicit stack, lazy.

        With ``start_key`` it starts at the first key >= start_key in byte order (which is the map's
        order only for unsigned big-endian integers, strings, blobs and byte arrays). ``resume`` is a
        position from ``_seek``: the frames down to it and the leaf run it starts with, if any.
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
        if resume is not None:
            stack, run = resume
            pending, seeking = None, False
            for frame in stack:
                seen.add(frame[0])
            if run is not None:
                seen.add(run[0])
                yield run
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
        if skip >= SEEK_BY_COUNT_FROM:
            resume = self._seek(skip)
            if resume is not None:
                yield from self._inorder(resume=resume)
                return
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

    # --- seeking by index ------------------------------------------------------------------------------

    # Filled by ``_count_tree``: None = not counted yet; False = the tree is not a plain tree of sound
    # v2 node headers (seeks then walk, as before); else subtree entry counts by internal node address.
    _subtree_counts: dict[int, int] | None | bool = None

    def _seek(self, index: int) -> tuple[list[Frame], Run | None] | None:
        """Where in-order iteration resumes to start at entry ``index``: the frames down to it (as
        ``_inorder`` keeps them) and the leaf run it starts with (None: the entry is a separator, the
        top frame yields it next; nothing at all past the last entry). None when counts cannot be trusted.

        Exact for a tree whose every node header is sound and every node reached once (which the first
        call checks over the whole tree, header by header): the entries before ``index`` are then the
        sum of the subtree counts to its left. The nodes on the way down are loaded in full.
        """
        counts = self._count_tree()
        if counts is None:
            return None
        frames: list[Frame] = []
        addr = self.root_addr
        try:
            while True:
                _v, ntype, k, children, keys, values = self._load(addr)[:6]
                if ntype != INTERNAL:
                    return (frames, (addr, keys, values, index, k)) if index < k else ([], None)
                for j in range(k + 1):
                    n = self._subtree_count(children[j], counts)
                    if n is None:
                        return None
                    if index < n:
                        frames.append([addr, children, keys, values, j])
                        addr = children[j]
                        break
                    index -= n
                    if j < k:
                        if not index:  # separator j of this node comes next
                            frames.append([addr, children, keys, values, j])
                            return frames, None
                        index -= 1
                else:
                    return [], None  # past the last entry: nothing to iterate
        except NodeError:
            return None

    def _count_tree(self) -> dict[int, int] | None:
        """The subtree counts (see ``_subtree_counts``), counting the whole tree the first time."""
        counts = self._subtree_counts
        if counts is None:
            got = self._count_in_child() if self.num_allocated_chunks >= COUNT_IN_CHILD_FROM else None
            memo, total = got if got is not None else self._count_whole_tree()
            counts = memo if total is not None and total == self.length else False
            self._subtree_counts = counts
        return counts if isinstance(counts, dict) else None

    def _count_whole_tree(self) -> tuple[dict[int, int], int | None]:
        """(subtree counts, entries in the whole tree or None when it is not a plain tree)."""
        memo: dict[int, int] = {}
        seen = self.empty_chunk_set(lazy=True)
        total = self._count_headers(self.root_addr, memo, seen) if self.root_addr else None
        # The pass reads headers through the mapping (a fault per page, not a pread per node: ~3× faster
        # on the 20M-entry map) and lets go of what it mapped once, here: letting go as it goes re-faults
        # the same pages over and over when nodes are scattered (5 s became 60 s).
        self._release_mapped_pages()
        return memo, total

    def _count_in_child(self) -> tuple[dict[int, int], int | None] | None:
        """``_count_whole_tree`` in a forked child, which hands back its result through a pipe; None
        where that fails (the caller then counts in-process).

        Millions of header reads hold the interpreter lock for seconds: in a thread of the TUI that
        halved the event loop's share of it (each repaint took twice as long while a far page was
        found). The child has its own interpreter; this thread only waits on the pipe, lock released.
        """
        child = fork_call(self._count_whole_tree)
        got = child.collect() if child is not None else None
        if not isinstance(got, tuple) or len(got) != 2:
            return None
        memo, total = got
        if not isinstance(memo, dict) or not (total is None or isinstance(total, int)):
            return None
        return memo, total

    def _subtree_count(self, addr: int, counts: dict[int, int]) -> int | None:
        n = counts.get(addr)
        return n if n is not None else self._count_headers(addr, counts, None)

    def _count_headers(self, root: int, memo: dict[int, int], seen: ChunkSet | None) -> int | None:
        """Entries in the subtree at ``root`` from node headers alone (a leaf's entry count, an internal
        node's child addresses); internal nodes holding ``COUNT_KEEP_MIN`` entries or more go in
        ``memo``. None when a header is not what ``_read_node`` accepts for a v2 node without
        question, or (with ``seen``) a node is reached twice."""
        cs, contig, unpack, page = self._cs, self._contig, CHUNK_NODE.unpack_from, self.page_size
        bits = seen.bits if seen is not None else bytearray()
        nbits = len(bits)
        hs = CHUNK_HEADER_SIZE
        mem, size = self.mem, self._size
        most = CHUNK_NODE_SIZE + 8 * (CAPACITY + 1)  # the headers and child addresses of a full node
        # One buffer for the whole memory (a raw memory): no lookup per node.
        flat_buf, flat_base, flat_avail = contig(0) if size else (b"", 0, 0)
        flat = flat_avail >= size

        def header(addr: int) -> tuple[int, int, tuple[int, ...]] | None:
            rel = addr - FIRST_PAYLOAD
            n, r = divmod(rel, cs)
            if rel < 0 or r:
                return None
            if seen is not None:
                if n < nbits:
                    if bits[n]:
                        return None
                    bits[n] = 1
                elif addr in seen.other:
                    return None
                else:
                    seen.other.add(addr)
            start = addr - hs
            if flat:
                buf, phys, avail = flat_buf, flat_base + start, size - start
            else:
                buf, phys, avail = contig(start)
            if avail < most:  # cut by the end of a bucket or of memory: read what there is
                n = min(most, size - start)
                if n < CHUNK_NODE_SIZE:
                    return None
                try:
                    buf, phys, avail = mem.read(start, n), 0, n
                except OutOfBounds:
                    return None
            cmagic, cver, alloc, _pad, _nxt, nmagic, nver, ntype, k, _ovf = unpack(buf, phys)
            if (
                cmagic != CHUNK_MAGIC
                or cver != 1
                or alloc != 1
                or nmagic != NODE_MAGIC
                or nver != 2
                or not 1 <= k <= CAPACITY
            ):
                return None
            if ntype == INTERNAL:
                if CHUNK_NODE_SIZE + 8 * (k + 1) > min(avail, hs + page):
                    return None
                return ntype, k, children_struct(k + 1).unpack_from(buf, phys + CHUNK_NODE_SIZE)
            return (ntype, k, ()) if ntype == 0 else None

        top = header(root)
        if top is None:
            return None
        if top[0] != INTERNAL:
            return top[1]
        # Frame: [addr, children, next child, entries so far]. Leaves (most nodes) are summed in the
        # inner loop; an internal child becomes a frame of its own.
        frames: list[list[Any]] = [[root, top[2], 0, top[1]]]
        get = memo.get
        while frames:
            f = frames[-1]
            kids, i, acc = f[1], f[2], f[3]
            nk = len(kids)
            while i < nk:
                child = kids[i]
                i += 1
                known = get(child)
                if known is not None:
                    acc += known
                    continue
                h = header(child)
                if h is None:
                    return None
                if h[0] == INTERNAL:
                    f[2], f[3] = i, acc
                    frames.append([child, h[2], 0, h[1]])
                    break
                acc += h[1]
            else:
                frames.pop()
                if acc >= COUNT_KEEP_MIN:
                    memo[f[0]] = acc
                if not frames:
                    return int(acc)
                frames[-1][3] += acc
        return None  # (not reached: the root's frame returns)
