"""The deep walk of a healthy map, a level at a time with numpy instead of a node at a time in Python.

The validated walk (``walk._walk_tree``) costs ~11 µs of interpreter per node: 1.5 s for the real
1,000,000-entry map, whose 134,606 nodes the native library walks in ~0.1 s. Most maps the library
writes are regular: v2 nodes, keys of one size, values of one size, every node's bytes in its own page.
For those the tree can be read a whole level of a subtree at a time: the node pages gathered as rows of
one array, their headers checked as columns, children, keys and values cut out by column slices, and the
in-order position of every entry computed from subtree sizes, so the entries reach the digest in key
order as fixed-width records.

This path only ever *confirms* a healthy map. Anything it does not handle, or any sign of trouble (a
header that does not check out, a node reached twice, an underfull node, keys out of order, leaves at
different depths, values of another size), makes it give up and return None; the caller then runs the
validated walk from scratch, which names the problem. So the findings stay those of the validated walk
and its counts, digest and reached-chunk set come out identical (tests/test_vector_walk.py compares
both on every fixture map).

Cost is bounded by the batch, not the map: subtrees ``SUBTREE_LEVELS`` deep are read a few at a time
(about ``BATCH_NODES`` nodes), so memory stays flat on a 20,000,000-entry map.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from construct import Bytes, FormatField, Struct

from inspector.errors import READ_ERRORS, InspectorError
from inspector.layouts import (
    CAPACITY,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    NODE_MAGIC,
    OVERFLOW_MAGIC,
    B,
    ChunkHeader,
    OverflowPageHeader,
    V2NodePrefix,
)
from inspector.memory import PhysicalMemory, VirtualMemory
from inspector.slow_progress import note
from inspector.structures.btreemap.nodes import (
    BE32,
    INTERNAL,
    LEAF,
    OVERFLOW_DATA_OFFSET,
    V2_PREFIX_SIZE,
)
from inspector.structures.chunk_set import FIRST_PAYLOAD, ChunkSet

SUBTREE_LEVELS = 4  # levels per subtree read as one forest: at most 1 + 12 + … + 12**3 nodes each
BATCH_NODES = 16_384  # nodes per batch of subtrees (a few MB of rows each)
MAX_PAGE = 4096  # bytes: larger node pages go through the validated walk (u64 → u64 pages are 275)
MAX_DEPTH = 64  # deeper than any real map (2**64 entries need < 30 levels); a longer chain is a loop

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


class _GiveUp(InspectorError):
    """The map is not one this path confirms; the validated walk takes over (never leaves this module)."""


@dataclass
class VectorWalk:
    count: int
    sha256: Any  # hashlib object, fed every entry in key order
    nodes: int
    leaves: int
    overflow_pages: int
    depth: int


def _numpy_dtype(*layouts: Struct, itemsize: int) -> np.dtype[Any]:
    """A numpy record type for construct declarations laid end to end (the layout is declared once, in
    ``inspector.layouts``; this only translates it)."""
    names: list[str] = []
    formats: list[str] = []
    offsets: list[int] = []
    offset = 0
    for n, layout in enumerate(layouts):
        for sc in layout.subcons:
            inner = sc.subcon
            if isinstance(inner, FormatField):
                size = struct.calcsize(inner.fmtstr)
                formats.append(np.dtype(inner.fmtstr).str)
            elif isinstance(inner, Bytes):
                size = int(inner.length)
                formats.append(f"S{size}")
            else:  # pragma: no cover - only fixed-size declarations are translated
                raise TypeError(f"{sc.name}: cannot translate {type(inner).__name__}")
            names.append(f"{n}_{sc.name}")
            offsets.append(offset)
            offset += size
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


class _Rows:
    """Node pages (chunk header + page) of a memory gathered as rows of one array.

    Only the raw file and a MemoryManager memory laid directly over it are handled; a page that crosses
    a bucket boundary or the end of the file is left to the caller (``ok`` is False for it)."""

    def __init__(self, mem: Any, rowlen: int, pread: Any) -> None:
        self.rowlen = rowlen
        # Big snapshots are read with pread (see _Headers): rows gathered through the mapping of a map
        # grown in random order each map the page-cache folio around them (~12 µs and ~56 KB a row
        # measured on a 20,000,000-entry map: the whole file mapped after one level), a pread costs
        # ~5 µs here and maps nothing.
        self.pread = partial(pread, rowlen) if pread is not None else None
        if isinstance(mem, PhysicalMemory):
            phys, self.starts, self.bucket = mem, None, 0
        elif isinstance(mem, VirtualMemory) and isinstance(mem.phys, PhysicalMemory):
            phys = mem.phys
            self.starts = np.asarray(mem._starts, dtype=np.int64)
            self.bucket = mem.bucket_size_bytes
        else:
            raise _GiveUp("nested memory")
        self.size = mem.size
        buf = np.frombuffer(phys.buf, dtype=np.uint8)
        self.file_size = min(len(buf), phys.size)
        if self.file_size < rowlen:
            raise _GiveUp("memory smaller than a node")
        # Every byte offset as the start of one opaque row: gathering rows from it copies each with one
        # memcpy (half the time of a 2-D sliding window's element loop, measured on 16,384 rows of 275).
        self.window = np.ndarray(
            shape=(self.file_size - rowlen + 1,),
            dtype=f"V{rowlen}",
            buffer=buf[: self.file_size],
            strides=(1,),
        )

    def gather(self, addrs: I64) -> tuple[U8, npt.NDArray[np.bool_]]:
        """(rows of the pages that could be gathered, which ones could)."""
        start = addrs - CHUNK_HEADER_SIZE
        ok = (start >= 0) & (start + self.rowlen <= self.size)
        if self.starts is not None:
            k, off = np.divmod(start, self.bucket)
            ok &= (off + self.rowlen <= self.bucket) & (k < len(self.starts))
            phys = self.starts[np.where(ok, k, 0)] + off
        else:
            phys = start
        ok &= phys + self.rowlen <= self.file_size
        if self.pread is None:
            return self.window[phys[ok]].view(np.uint8).reshape(-1, self.rowlen), ok
        # In file order: the kernel's page-cache lookups then walk memory forwards (~35% faster here).
        want = phys[ok]
        order = np.argsort(want, kind="stable")
        raw = b"".join(map(self.pread, want[order].tolist()))
        if len(raw) != len(want) * self.rowlen:
            raise _GiveUp("short read")
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return _take_rows(np.frombuffer(raw, dtype=np.uint8).reshape(len(want), self.rowlen), back), ok

    def close(self) -> None:
        del self.window


def _applies(w: Any) -> bool:
    """A v2 map with a root, and pages small enough that a batch of them is a few MB (a header can
    claim pages of gigabytes; the validated walk reads those one at a time)."""
    ok = bool(w.walkable and w.root_addr) and w.layout_version == 2 and w._cs > 0
    return ok and 0 < w.page_size <= MAX_PAGE


def vector_walk(w: Any, visited: ChunkSet) -> VectorWalk | None:
    """Walk a healthy map the vectorised way, or return None (see the module docstring). ``visited``
    must be empty; on None its contents are meaningless (the caller starts again with a fresh one)."""
    if not _applies(w):
        return None
    try:
        return _VectorWalker(w, visited).run()
    except READ_ERRORS:  # _GiveUp, NodeError, or bytes no healthy map has: the validated walk says what
        return None


class EntryBlocks:
    """The entries of a healthy map in key order, as (keys, values) blocks of equal-width rows.

    Iterate it; when it stops early (the map is not one the vectorised path confirms, from the start or
    from some batch on) ``stopped_at`` is the number of entries it gave, and the caller goes on from
    there with the validated iteration (``BTreeMap.iter_batches(stopped_at)``)."""

    def __init__(self, w: Any) -> None:
        self.w = w
        self.given = 0
        self.stopped_at: int | None = None

    def __iter__(self) -> Iterator[tuple[U8, U8]]:
        w = self.w
        if not _applies(w):
            self.stopped_at = 0
            return
        # Every chunk slot of the memory: no free-list walk to find the frontier before the first line.
        visited = ChunkSet(w._cs, max(0, (w._size - FIRST_CHUNK_OFFSET) // w._cs + 1))
        walker = _VectorWalker(w, visited)
        try:
            for out in walker.blocks():
                kl = walker.klen
                self.given += len(out)
                yield out[:, 4 : 4 + kl], out[:, 8 + kl :]
        except READ_ERRORS:
            self.stopped_at = self.given


def _strictly_increasing(keys: U8) -> bool:
    """Rows of equal-width byte strings strictly increasing in byte order (as the validated walk checks)."""
    n, width = keys.shape
    if n < 2:
        return True
    if width == 0:
        return False
    if width <= 8:  # big-endian integers order like their bytes
        if width == 8 and keys.flags.c_contiguous:
            v = keys.view(">u8").ravel()
        else:
            padded = np.zeros((n, 8), dtype=np.uint8)
            padded[:, 8 - width :] = keys
            v = padded.view(">u8").ravel()
        return bool((v[1:] > v[:-1]).all())
    differ = keys[1:] != keys[:-1]
    if not differ.any(axis=1).all():
        return False
    first = differ.argmax(axis=1)
    r = np.arange(n - 1)
    return bool((keys[1:][r, first] > keys[:-1][r, first]).all())


def _put_u32_column(rows: U8, at: int, four: bytes) -> None:
    """The same 4 bytes at column ``at`` of every row; as one u32 column when the rows allow it (an
    8-byte-wide broadcast into a strided byte slice costs ~10x more)."""
    if rows.shape[1] % 4 == 0 and at % 4 == 0 and rows.flags.c_contiguous:
        rows.view("<u4")[:, at // 4] = np.frombuffer(four, dtype="<u4")[0]
    else:
        rows[:, at : at + 4] = np.frombuffer(four, dtype=np.uint8)


def _prefixes_are(items: U8, four: npt.NDArray[np.uint8]) -> bool:
    """Whether every row of ``items`` (contiguous rows of a u32 LE length then the bytes) starts with
    ``four``."""
    if items.shape[1] % 4 == 0:
        return bool((items.view("<u4")[:, 0] == four.view("<u4")[0]).all())
    return bool((items[:, :4] == four).all())


def _exclusive_cumsum(a: I64) -> I64:
    out = np.zeros(len(a), dtype=np.int64)
    np.cumsum(a[:-1], out=out[1:])
    return out


def _take_rows(a: U8, order: I64) -> U8:
    """``a[order]`` for rows of bytes, one opaque element per row (much faster than a 2-D take)."""
    if a.shape[1] == 0:
        return np.empty((len(order), 0), dtype=np.uint8)
    a = np.ascontiguousarray(a)
    return a.view(f"V{a.shape[1]}").ravel()[order].view(np.uint8).reshape(len(order), a.shape[1])


class _Level:
    """One level of a batch: entry counts per node, and the entries in node order."""

    __slots__ = ("k", "keys", "values", "entry")

    def __init__(self, k: I64, keys: list[U8], values: list[U8], entry: I64) -> None:
        # ``keys``/``values`` blocks of rows come in the order they were cut (put together only once, for
        # the whole batch); ``entry`` is each row's index among the level's entries in node order.
        self.k, self.keys, self.values, self.entry = k, keys, values, entry


class _Tally:
    """What one batch reached (chunk numbers, marked when the batch is taken) and counted: cutting a
    batch out writes nothing shared, so a batch that turns out bad leaves no trace."""

    __slots__ = ("marks", "nodes", "leaves", "overflow_pages")

    def __init__(self) -> None:
        self.marks: list[I64] = []
        self.nodes = 0
        self.leaves = 0
        self.overflow_pages = 0


class _VectorWalker:
    def __init__(self, w: Any, visited: ChunkSet) -> None:
        self.w = w
        self.chunk_size = visited.chunk_size
        self.bits: U8 = np.frombuffer(visited.bits, dtype=np.uint8)
        self.page = int(w.page_size)
        self.rowlen = CHUNK_HEADER_SIZE + self.page
        self.head = _numpy_dtype(ChunkHeader, V2NodePrefix, itemsize=self.rowlen)
        self.overflow_head = _numpy_dtype(ChunkHeader, OverflowPageHeader, itemsize=self.rowlen)
        self.spill_room = self.page - OVERFLOW_DATA_OFFSET  # stream bytes one overflow page adds
        self.h = hashlib.sha256()
        self.count = 0
        self.nodes = 0
        self.leaves = 0
        self.overflow_pages = 0
        self.last_key: bytes | None = None
        self.kpre = 0  # 4 when keys carry a u32 length prefix (then all of one length), 0 when fixed-size
        self.klen = -1
        self.vlen = -1
        self.depth = 0
        self.reuse = False
        self.scratch: U8 | None = None
        self._field_types: dict[tuple[int, int, int, bool], np.dtype[Any]] = {}

    # --- the Python part: the levels above the subtrees, and nodes the columns cannot take ----------------

    def _chunks(self, addrs: I64) -> I64:
        """Chunk numbers of payload addresses; gives up on one off the grid or past the bitmap."""
        rel = addrs - FIRST_PAYLOAD
        idx, off = np.divmod(rel, self.chunk_size)
        if (rel < 0).any() or off.any() or (idx >= len(self.bits)).any():
            raise _GiveUp("off the grid")
        return idx

    def _commit(self, tally: _Tally) -> None:
        """Mark a batch's chunks reached, in walk order: one reached twice (a cycle or a shared
        subtree) gives up, as do duplicates inside the batch."""
        idx = np.concatenate(tally.marks) if tally.marks else np.empty(0, dtype=np.int64)
        ordered = np.sort(idx)  # a sort finds repeats ~30x faster than np.unique's hashing here
        if self.bits[idx].any() or (ordered[1:] == ordered[:-1]).any():
            raise _GiveUp("reached twice")
        self.bits[idx] = 1
        self.nodes += tally.nodes
        self.leaves += tally.leaves
        self.overflow_pages += tally.overflow_pages

    def _load(
        self, addr: int, depth: int, leaf: bool | None, tally: _Tally
    ) -> tuple[list[int], list[bytes], list[bytes]]:
        """One node through the validated loader, with the checks the validated walk makes; the caller
        has counted it reached."""
        ver, ntype, k, children, keys, values, ovfs, _n, _kl, _vl, _slots = self.w._load(addr)
        if ver != 2:
            raise _GiveUp("v1 node")
        if leaf is not None and (ntype != INTERNAL) != leaf:
            raise _GiveUp("leaves at different depths")
        if ovfs:
            tally.marks.append(self._chunks(np.asarray(ovfs, dtype=np.int64)))
        tally.overflow_pages += len(ovfs)
        if depth and k < B - 1:
            raise _GiveUp("underfull")
        self._lengths(keys, values)
        return list(children), keys, values

    def _lengths(self, keys: list[bytes], values: list[bytes]) -> None:
        if self.klen < 0:
            self.klen, self.vlen = len(keys[0]), len(values[0])
            # The u32 LE length prefixes every key (when prefixed) and value must carry, as bytes.
            self.klen_le = np.frombuffer(struct.pack("<I", self.klen), dtype=np.uint8)
            self.vlen_le = np.frombuffer(struct.pack("<I", self.vlen), dtype=np.uint8)
        if any(len(x) != self.klen for x in keys) or any(len(x) != self.vlen for x in values):
            raise _GiveUp("keys or values of another size")

    def _records(self, total: int, width: int) -> U8:
        """Room for a batch's records: the same buffer batch after batch where they are only hashed (a new
        one each time costs its page faults again: ~15 ms over the real 1,000,000-entry map)."""
        if not self.reuse:
            return np.empty((total, width), dtype=np.uint8)
        if self.scratch is None or len(self.scratch) < total:
            self.scratch = np.empty((total + total // 4, width), dtype=np.uint8)
        return self.scratch[:total]

    def run(self) -> VectorWalk:
        self.reuse = True  # each block is hashed before the next is made
        for out in self.blocks():
            self.h.update(out.data)
        return VectorWalk(self.count, self.h, self.nodes, self.leaves, self.overflow_pages, self.depth)

    def blocks(self) -> Iterator[U8]:
        """The map's entries in key order as record blocks (u32 BE key length, key, u32 BE value
        length, value: the digest's records), a batch of subtrees at a time. Raises _GiveUp or
        NodeError where the map is not one this path confirms; the blocks before were checked."""
        w = self.w
        kfix = w._kfix if w._kfix is not None else w._resolve_key_layout(w.root_addr)
        self.kpre = 0 if kfix else 4
        # The depth, from the leftmost path (the batches check that every leaf sits at it).
        depth = 0
        addr = w.root_addr
        while True:
            _v, ntype, _k, children, keys, values, _o, _n, _kl, _vl, _s = w._load(addr)
            if depth == 0:
                self._lengths(keys, values)
            depth += 1
            if ntype != INTERNAL:
                break
            if depth >= MAX_DEPTH:
                raise _GiveUp("too deep")
            addr = children[0]
        if kfix and kfix != self.klen:
            raise _GiveUp("fixed key size disagrees")
        top = max(0, depth - SUBTREE_LEVELS)  # depth of the subtree roots
        roots: list[int] = []
        sep_keys: list[bytes] = []
        sep_values: list[bytes] = []

        above = _Tally()

        def upper(addr: int, d: int) -> None:
            if d == top:
                roots.append(addr)
                return
            above.marks.append(self._chunks(np.asarray([addr], dtype=np.int64)))
            children, keys, values = self._load(addr, d, False, above)
            above.nodes += 1
            for j, child in enumerate(children):
                upper(child, d + 1)
                if j < len(keys):
                    sep_keys.append(keys[j])
                    sep_values.append(values[j])

        upper(w.root_addr, 0)
        self._commit(above)
        self.depth = depth
        rows = _Rows(w.mem, self.rowlen, w._pread)
        try:
            # The first subtree alone says how many roots make a batch of ~BATCH_NODES nodes. (Cutting
            # batches out on two threads was measured slower: the interpreter lock serialises them.)
            i = 0
            per_batch = 0
            while i < len(roots):
                j = min(len(roots), i + (per_batch or 1))
                out, tally = self._batch(rows, roots[i:j], sep_keys[i:j], sep_values[i:j], top, depth - top)
                per_batch = per_batch or max(1, int(BATCH_NODES / max(1, tally.nodes)))
                i = j
                self._commit(tally)
                keys = out[:, 4 : 4 + self.klen]
                if len(out) and self.last_key is not None and not self.last_key < bytes(keys[0]):
                    raise _GiveUp("keys out of order")
                if len(out):
                    self.last_key = bytes(keys[-1])
                self.count += len(out)
                yield out
                note(f"walking {w.mem.label}: entries", self.count, w.length or None)
        finally:
            rows.close()

    # --- the vectorised part: one batch of subtrees ---------------------------------------------------------

    def _batch(
        self,
        rows: _Rows,
        roots: list[int],
        sep_keys: list[bytes],
        sep_values: list[bytes],
        top: int,
        levels: int,
    ) -> tuple[U8, _Tally]:
        """One batch's records in key order (checked in order among themselves), and its tally."""
        tally = _Tally()
        addrs: I64 = np.asarray(roots, dtype=np.int64)
        found: list[_Level] = []
        for lvl in range(levels):
            level, addrs = self._level(rows, addrs, top + lvl, lvl == levels - 1, tally)
            found.append(level)
        # Subtree sizes, bottom up: a node holds its entries and its children's.
        sizes: list[I64] = [found[-1].k]
        for level in reversed(found[:-1]):
            below = np.add.reduceat(sizes[0], _exclusive_cumsum(level.k + 1))
            sizes.insert(0, level.k + below)
        # In-order positions, top down: each root is followed by its separator (an entry of the levels
        # above), each child by the entry after it in its parent.
        nsep = len(sep_keys)
        starts = _exclusive_cumsum(sizes[0] + 1)
        total = int(sizes[0].sum()) + nsep
        # Every entry was cut out in whatever order its node group came; ``where`` says where each goes
        # in key order, and the records are then gathered (a gather is ~10x faster than a scatter here).
        staged_keys: list[U8] = []
        staged_values: list[U8] = []
        where: list[I64] = []
        if nsep:
            where.append(starts[:nsep] + sizes[0][:nsep])
            staged_keys.append(self._key_items(sep_keys))
            staged_values.append(self._value_items(sep_values))
        for lvl, level in enumerate(found):
            k = level.k
            node_of_entry = np.repeat(np.arange(len(k)), k)
            slot = np.arange(len(node_of_entry)) - _exclusive_cumsum(k)[node_of_entry]
            if lvl == len(found) - 1:
                pos = starts[node_of_entry] + slot
            else:
                child_size = sizes[lvl + 1]
                coff = _exclusive_cumsum(k + 1)
                parent = np.repeat(np.arange(len(k)), k + 1)
                before = _exclusive_cumsum(child_size)
                child_start = (
                    starts[parent] + (np.arange(len(parent)) - coff[parent]) + before - before[coff[parent]]
                )
                g = coff[node_of_entry] + slot
                pos = child_start[g] + child_size[g]
                starts = child_start
            where.append(pos[level.entry])
            staged_keys.extend(level.keys)
            staged_values.extend(level.values)
        order = np.empty(total, dtype=np.int64)
        order[np.concatenate(where)] = np.arange(total)
        kl = self.klen
        # The items keep their little-endian length prefixes (where the key has one) and go to the
        # records with them, right where the records' big-endian lengths go; those are written after.
        keys = _take_rows(np.concatenate(staged_keys), order)
        if not _strictly_increasing(keys[:, self.kpre :]):
            raise _GiveUp("keys out of order")
        out = self._records(total, 8 + kl + self.vlen)
        out[:, 4 - self.kpre : 4 + kl] = keys
        out[:, 4 + kl :] = _take_rows(np.concatenate(staged_values), order)
        _put_u32_column(out, 0, BE32(kl))
        _put_u32_column(out, 4 + kl, BE32(self.vlen))
        return out, tally

    def _key_items(self, keys: list[bytes]) -> U8:
        """Keys from the validated loader as the columns cut them: with their u32 LE length where
        keys carry one."""
        prefix = bytes(self.klen_le) if self.kpre else b""
        raw = b"".join(prefix + x for x in keys)
        return np.frombuffer(raw, dtype=np.uint8).reshape(len(keys), self.kpre + self.klen)

    def _value_items(self, values: list[bytes]) -> U8:
        """Values from the validated loader as the columns cut them: with their u32 LE length."""
        prefix = bytes(self.vlen_le)
        raw = b"".join(prefix + x for x in values)
        return np.frombuffer(raw, dtype=np.uint8).reshape(len(values), 4 + self.vlen)

    def _level(self, rows: _Rows, addrs: I64, depth: int, leaf: bool, tally: _Tally) -> tuple[_Level, I64]:
        """Check and cut out one level's nodes; return them and their children, in order."""
        n = len(addrs)
        tally.marks.append(self._chunks(addrs))
        got, ok = rows.gather(addrs)
        head = got.reshape(-1).view(self.head)
        k_got = head["1_num_entries"].astype(np.int64)
        need = (
            V2_PREFIX_SIZE
            + (0 if leaf else 8 * (k_got + 1))
            + k_got * (self.kpre + self.klen + 4 + self.vlen)
        )
        sound = (
            (head["0_magic"] == CHUNK_MAGIC)
            & (head["0_version"] == 1)
            & (head["0_allocated"] == 1)
            & (head["1_magic"] == NODE_MAGIC)
            & (head["1_version"] == 2)
            & (head["1_node_type"] == (LEAF if leaf else INTERNAL))
            & (k_got >= 1)
            & (k_got <= CAPACITY)
        )
        plain = sound & (head["1_overflow"] == 0) & (need <= self.page)
        # A stream one overflow page long (a full internal node of small entries, the usual reason for
        # overflow pages in a map of small keys and values) is read here too; longer chains go through
        # the validated loader.
        spill = sound & (head["1_overflow"] != 0) & (need > self.page) & (need <= self.page + self.spill_room)
        if depth and (k_got[plain | spill] < B - 1).any():
            raise _GiveUp("underfull")
        # (streams as whole rows, where in those rows the stream starts, the gathered rows they are for,
        # each one's row in the streams)
        plain_at = np.flatnonzero(plain)
        streams = [(got, CHUNK_HEADER_SIZE, plain_at, plain_at)]
        if spill.any():
            spilled = self._spilled(rows, got, head, spill, tally)
            if spilled is not None:
                streams.append(spilled)
            else:
                spill[:] = False
        got_at = np.flatnonzero(ok)
        k: I64 = np.zeros(n, dtype=np.int64)
        k[got_at] = k_got
        slow_rows = np.ones(n, dtype=bool)
        slow_rows[got_at] = ~(plain | spill)
        slow: dict[int, tuple[list[int], list[bytes], list[bytes]]] = {}
        for i in np.flatnonzero(slow_rows).tolist():
            slow[i] = self._load(int(addrs[i]), depth, leaf, tally)
            k[i] = len(slow[i][1])
        eoff = _exclusive_cumsum(k)
        coff = _exclusive_cumsum(k + 1)
        children: I64 = np.empty(0 if leaf else int((k + 1).sum()), dtype=np.int64)
        keys: list[U8] = []
        values: list[U8] = []
        entry: list[I64] = []
        for stream, skip, at, row in streams:
            k_at = k_got[at]
            for kv in np.flatnonzero(np.bincount(k_at)).tolist():  # the entry counts present
                sel = np.flatnonzero(k_at == kv)
                nodes_k = got_at[at[sel]]
                kb, vb = self._cut(stream, skip, row[sel], kv, leaf, coff[nodes_k], children)
                keys.append(kb)
                values.append(vb)
                entry.append((eoff[nodes_k][:, None] + np.arange(kv)).ravel())
        for i, (ch_list, key_list, value_list) in slow.items():
            kv = len(key_list)
            keys.append(self._key_items(key_list))
            values.append(self._value_items(value_list))
            entry.append(np.arange(int(eoff[i]), int(eoff[i]) + kv))
            if not leaf:
                children[int(coff[i]) : int(coff[i]) + kv + 1] = ch_list
        tally.nodes += n
        if leaf:
            tally.leaves += n
        return _Level(k, keys, values, np.concatenate(entry)), children

    def _spilled(
        self, rows: _Rows, got: U8, head: Any, spill: npt.NDArray[np.bool_], tally: _Tally
    ) -> tuple[U8, int, I64, I64] | None:
        """The streams of nodes whose bytes go on in one overflow page: page + that page's data. None
        when any of those pages is not a sound, unshared, last page (the validated loader then reads
        them all)."""
        at = np.flatnonzero(spill)
        ovf = head["1_overflow"][at].astype(np.int64)
        rel = ovf - FIRST_PAYLOAD
        idx, off = np.divmod(rel, self.chunk_size)
        if (rel < 0).any() or off.any() or (idx >= len(self.bits)).any():
            return None
        pages, ok = rows.gather(ovf)
        if not ok.all():
            return None
        oh = pages.reshape(-1).view(self.overflow_head)
        if not (
            (oh["0_magic"] == CHUNK_MAGIC)
            & (oh["0_version"] == 1)
            & (oh["0_allocated"] == 1)
            & (oh["1_magic"] == OVERFLOW_MAGIC)
            & (oh["1_next"] == 0)
        ).all():
            return None
        tally.marks.append(idx)
        tally.overflow_pages += len(at)
        stream = np.concatenate(
            (got[at, CHUNK_HEADER_SIZE:], pages[:, CHUNK_HEADER_SIZE + OVERFLOW_DATA_OFFSET :]), axis=1
        )
        return stream, 0, at, np.arange(len(at))

    def _cut(
        self, stream: U8, skip: int, at: I64, kv: int, leaf: bool, coff: I64, children: I64
    ) -> tuple[U8, U8]:
        """Key and value items (rows with their length prefixes, node by node) of the nodes of ``kv``
        entries whose streams start at column ``skip`` of rows ``at`` of ``stream``; their children go
        into the level's array at the nodes' offsets ``coff``. Each part is gathered straight from the
        rows as one opaque field per row: only its own bytes are copied, once."""
        kw = self.kpre + self.klen
        vw = 4 + self.vlen
        fields = self._fields(stream.shape[1], skip, kv, leaf)
        recs = stream.reshape(-1).view(fields)
        g = len(at)
        if not leaf:
            children[coff[:, None] + np.arange(kv + 1)] = recs["children"][at]
        kb = recs["keys"][at].view(np.uint8).reshape(g * kv, kw) if kw else np.empty((g * kv, 0), np.uint8)
        vb = recs["values"][at].view(np.uint8).reshape(g * kv, vw)
        if self.kpre and not _prefixes_are(kb, self.klen_le):
            raise _GiveUp("keys of another size")
        if not _prefixes_are(vb, self.vlen_le):
            raise _GiveUp("values of another size")
        return kb, vb

    def _fields(self, width: int, skip: int, kv: int, leaf: bool) -> np.dtype[Any]:
        """The record type of a row of ``width`` bytes holding a v2 stream of ``kv`` entries from column
        ``skip``: the children, the keys and the values as one field each (cached per shape)."""
        shape = (width, skip, kv, leaf)
        got = self._field_types.get(shape)
        if got is not None:
            return got
        kw = self.kpre + self.klen
        p = skip + V2_PREFIX_SIZE
        names: list[str] = []
        formats: list[Any] = []
        offsets: list[int] = []
        if not leaf:
            names.append("children")
            formats.append(("<u8", (kv + 1,)))
            offsets.append(p)
            p += 8 * (kv + 1)
        if kw:
            names.append("keys")
            formats.append(f"V{kv * kw}")
            offsets.append(p)
        p += kv * kw
        names.append("values")
        formats.append(f"V{kv * (4 + self.vlen)}")
        offsets.append(p)
        dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": width})
        self._field_types[shape] = dt
        return dt
