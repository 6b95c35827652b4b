"""Which node owns each changed overflow page, from the chunk-header columns of one side.

The by-node diff of two maps (``map_nodes``) must know, for every changed overflow page, the node
whose overflow chain holds it and the page's place in that chain. A chain is a linked list that runs
forward only, so the owner of one page is not found without resolving chains. This module does it
once, for the whole tree, at the speed of C where it can:

* When no changed byte falls in a chunk header, an overflow-page header or a node page, every chunk
  header, every chain link and every node page is byte-identical on both sides: both sides have the
  same tree and the same chains. They are resolved on the OLD side only.
* The header words of every chunk on the grid are pulled out as columns by strided slices of the
  mapping (``memoryview`` casts, no Python loop), a block at a time with the mapped pages let go after
  each block, and compared with what a valid, back-to-back overflow page holds (big-integer XOR over
  the packed columns). The result is one 8-byte group per chunk, zero where the chunk is an allocated
  "NOF" page whose ``next`` is the chunk right after it; its bytes are then made 0/1 (``translate``).
* Each chain is then followed a RUN at a time: ``bytes.find`` (a C ``memchr``) finds the end of the
  run (the next non-zero group), the page there is checked field by field and its ``next`` followed.
  The Python work is one step per run of back-to-back pages, not one per page.
* Only compact arrays are kept: the runs (first chunk, last chunk, node, index of the first page in the
  chain), sorted, so an owner is one bisection.

Everything is checked: every page of every chain is a valid allocated overflow page, no page is in two
chains, no chain loops, every node is reached once from the root. Anything unusual returns None, and
the caller falls back to the per-side plan (and from there to the key-order walk).
"""

from __future__ import annotations

import mmap
import os
import struct
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from inspector.diff.byte_ranges import NONZERO_TO_ONE
from inspector.diff.shared_columns import SharedColumns
from inspector.forked import file_identity
from inspector.layouts import (
    CAPACITY,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    NODE_MAGIC,
    OVERFLOW_MAGIC,
    ChunkHeader,
    OverflowPageHeader,
    field_span,
)
from inspector.mapped_pages import ByteSource, page_releaser
from inspector.memory import PhysicalMemory
from inspector.structures.btreemap.nodes import (
    CHUNK_NODE,
    CHUNK_OVERFLOW,
    INTERNAL,
    OVERFLOW_DATA_OFFSET,
    V2_PREFIX_SIZE,
    NodeError,
)

if TYPE_CHECKING:
    from inspector.structures.btreemap import BTreeMap

    Words = array[int] | memoryview  # u64 columns: arrays, or casts of the shared columns

# A node's shape: (version, type, k, children, keys, values or None, overflow chain, value spans or None),
# a tuple of mixed fields as the walker's ``_load`` returns it.
NodeShape = tuple[Any, ...]

Range = tuple[int, int]
WORD = 8  # bytes per column entry: one u64 of the packed columns
BLOCK_CHUNKS = 1 << 12  # chunks per block of columns (~4 MB of mapping at 1 KiB pages), then release
MAX_NODES = 1 << 22
RELEASE_EVERY_NODES = 16  # node pages read between drops of the mapped pages

# Where the fields sit in a chunk, from the declarations (layouts.py), not typed again.
_NEXT_AT = field_span(ChunkHeader, "next").offset  # 8: the chunk's free-list link ends the header
_OVF_MAGIC_AT = CHUNK_HEADER_SIZE + field_span(OverflowPageHeader, "magic").offset  # 16
_OVF_NEXT_AT = CHUNK_HEADER_SIZE + field_span(OverflowPageHeader, "next").offset  # 19
# Header word (bytes 0..8): magic, version 1, allocated 1 and zero padding, as the library writes it.
_HEADER_WORD = int.from_bytes(CHUNK_MAGIC + bytes([1, 1]) + bytes(_NEXT_AT - len(CHUNK_MAGIC) - 2), "little")
# Magic word: the u64 that ends with the overflow magic. Its high bytes are the top byte of the chunk's
# own ``next`` (zero for any address below 2^56, whatever an allocation left in the rest) and "NOF";
# only those are checked.
_MAGIC_WORD_AT = _OVF_MAGIC_AT + len(OVERFLOW_MAGIC) - WORD  # 11
_MAGIC_KEEP = _OVF_MAGIC_AT + len(OVERFLOW_MAGIC) - (CHUNK_HEADER_SIZE - 1)  # 4 bytes
_MAGIC_WORD = int.from_bytes(bytes(WORD - len(OVERFLOW_MAGIC)) + OVERFLOW_MAGIC, "little")
_MAGIC_MASK = ((1 << (8 * _MAGIC_KEEP)) - 1) << (8 * (WORD - _MAGIC_KEEP))
_U32 = struct.Struct("<I").unpack


class ChainIndex:
    """Every reachable node of a map and the runs of its overflow chain (see the module docstring)."""

    def __init__(self, m: BTreeMap, nodes: dict[int, tuple[int, int, tuple[int, ...]]]) -> None:
        self.cs = m.chunk_size
        # The map it was built for: an index computed elsewhere (the byte-compare child) is used only
        # for a map with the same geometry, in the same file.
        self.geometry = _geometry(m)
        self.nodes = nodes  # payload address → (node type, entry count, children)
        self.starts: array[int] = array("Q")  # first chunk index of each run, sorted
        self.ends: array[int] = array("Q")  # last chunk index of each run
        self.owner: array[int] = array("Q")  # node payload address
        self.first: array[int] = array("Q")  # index in the node's chain of the run's first page
        # node → (lo, hi): its runs in chain order are ``node_j[lo:hi]`` (index in the chain of each
        # run's first page) and ``node_c[lo:hi]`` (its first chunk). Flat arrays rather than a list of
        # tuples per node: the index travels from the compare child by pickle (a 30K-tuple dict cost
        # ~25 ms to pickle and unpickle).
        self.by_node: dict[int, tuple[int, int]] = {}
        self.node_j: array[int] = array("Q")
        self.node_c: array[int] = array("Q")
        self.chain_len: dict[int, int] = {}
        self.runs_followed = 0  # Python steps of the chain walk: one per run, for tests

    def owner_of(self, payload: int) -> tuple[int, int] | None:
        """(node, index in its chain) of the overflow page at ``payload``; None if no live chain has it."""
        c = (payload - FIRST_CHUNK_OFFSET - CHUNK_HEADER_SIZE) // self.cs
        i = bisect_right(self.starts, c) - 1
        if i < 0 or c > self.ends[i]:
            return None
        return self.owner[i], self.first[i] + c - self.starts[i]

    def chain(self, node: int) -> NodeChain:
        return NodeChain(self, node)


class NodeChain:
    """A node's overflow chain as a read-only sequence of page addresses, computed from its runs (a
    chain of thousands of pages is a few dozen runs: nothing is expanded)."""

    def __init__(self, index: ChainIndex, node: int) -> None:
        lo, hi = index.by_node.get(node, (0, 0))
        self._at = index.node_j[lo:hi].tolist()
        self._chunk = index.node_c[lo:hi].tolist()
        self._len = index.chain_len.get(node, 0)
        self._cs = index.cs
        self._last = 0  # the run of the previous lookup: reads go through a chain mostly in order
        self.node = node

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, j: int) -> int:  # type: ignore[override]
        if not 0 <= j < self._len:
            raise IndexError(j)
        r = self._last
        at = self._at
        if not (at[r] <= j and (r + 1 == len(at) or j < at[r + 1])):
            r = self._last = bisect_right(at, j) - 1
        return FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE + (self._chunk[r] + j - at[r]) * self._cs

    def page_spans(self, j0: int, j1: int, lo: int, hi: int) -> list[Range]:
        """``(page + lo, page + hi)`` for the address ``page`` of each of pages ``j0 .. j1-1`` (within the
        chain): each run's pairs are two C-level ranges zipped (a value of megabytes is hundreds of pages)."""
        out: list[Range] = []
        at, chunk, cs = self._at, self._chunk, self._cs
        base = FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE
        r = max(0, bisect_right(at, j0) - 1)
        while r < len(at) and at[r] < j1:
            stop = min(j1, at[r + 1] if r + 1 < len(at) else self._len)
            first = max(j0, at[r])
            if first < stop:
                a = base + (chunk[r] + first - at[r]) * cs
                b = a + (stop - first) * cs
                out.extend(zip(range(a + lo, b + lo, cs), range(a + hi, b + hi, cs), strict=True))
            r += 1
        return out

    def reader(
        self, mem: object, page_size: int, slow: Callable[[int, int], bytes]
    ) -> Callable[[int, int], bytes]:
        """``read(pos, n)``: ``n`` bytes of this node's stream from ``pos`` (the node page, then each
        overflow page's data), for the by-node plan's many small reads in stream order (a node's keys,
        then each value's length prefix: ~5,800 over the bench's big-value map pair). A piece inside one
        page of a file-backed memory is one ``pread`` after the page lookup, where ``_read_stream`` went
        through ``Memory.peek`` and its checks for it; anything else (a piece across pages, a
        memory without its file, a short read) is ``slow``'s, the general reader."""
        if not isinstance(mem, PhysicalMemory) or mem.fd is None:
            return slow
        fd, size, count = mem.fd, mem.size, self._len
        body = page_size - OVERFLOW_DATA_OFFSET
        node, page_at = self.node, self.__getitem__  # (the chain's own lookup, by run, of page j)
        pread = os.pread

        def read(pos: int, n: int) -> bytes:
            if pos + n <= page_size:
                v = node + pos
            elif pos < page_size:
                return slow(pos, n)
            else:
                j, off = divmod(pos - page_size, body)
                if off + n > body or j >= count:
                    return slow(pos, n)
                v = page_at(j) + OVERFLOW_DATA_OFFSET + off
            if pos >= 0 and n >= 0 and v + n <= size:
                try:
                    got = pread(fd, n, v)
                except OSError:
                    return slow(pos, n)
                if len(got) == n:
                    return got
            return slow(pos, n)

        return read

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeChain) and (other.node, other._at, other._chunk) == (
            self.node,
            self._at,
            self._chunk,
        )

    def __hash__(self) -> int:
        return hash(self.node)


def _grid(m: BTreeMap) -> tuple[ByteSource, int, int] | None:
    """(buffer, physical offset of the first chunk, chunks on the grid) for a map on one contiguous
    mapping whose chunk size allows u64 columns; None otherwise (a bucketed memory, an odd chunk size)."""
    mem = m.mem
    cs = m.chunk_size
    if not isinstance(mem, PhysicalMemory) or cs <= 0 or cs % WORD:
        return None
    buf, phys, avail = mem.contiguous(FIRST_CHUNK_OFFSET)
    n = avail // cs
    if n < 1 or not isinstance(buf, (bytes, bytearray)) and not hasattr(buf, "madvise"):
        return None
    return buf, phys, n


_SPAN = _OVF_NEXT_AT + WORD  # a chunk's bytes the columns read: header, overflow magic and next (27)
_Fixed = dict[int, tuple[int, int, int, int, int]]


def _fitting(size: int, base: int, n: int, cs: int) -> int:
    """How many of ``n`` chunks from ``base`` on have their column bytes inside ``size`` bytes: where the
    last chunk's next field would run past the end, the columns leave that chunk out."""
    while n > 0 and base + (n - 1) * cs + _SPAN > size:
        n -= 1
    return n


def _block(
    view: memoryview, s: int, k: int, c0: int, cs: int, fixed: _Fixed, headers: bool
) -> tuple[bytes, bytes | None, bytes, bytes, bytes]:
    """(heads, links or None, nexts, valid, cont) of the ``k`` chunks from chunk ``c0`` on, whose
    headers start at ``view[s]``, ``view[s + cs]``, … (``cont`` not yet made 0/1)."""
    if k not in fixed:
        ones = int.from_bytes(_ONE * k, "little")
        step_up = int.from_bytes(array("Q", range(0, k * cs, cs)).tobytes(), "little")
        fixed[k] = (ones, _HEADER_WORD * ones, _MAGIC_WORD * ones, _MAGIC_MASK * ones, step_up)
    ones, head_want, magic_want, magic_mask, step_up = fixed[k]
    step = cs // WORD
    last = (k - 1) * cs + WORD
    # A strided slice of a u64 view that starts at a field's offset is that field's column.
    heads, magics, nexts = (
        view[s + at : s + at + last].cast("Q")[::step].tobytes() for at in (0, _MAGIC_WORD_AT, _OVF_NEXT_AT)
    )
    links = view[s + _NEXT_AT : s + _NEXT_AT + last].cast("Q")[::step].tobytes() if headers else None
    bad = int.from_bytes(heads, "little") ^ head_want
    bad |= (int.from_bytes(magics, "little") ^ magic_want) & magic_mask
    valid = bad.to_bytes(WORD * k, "little")
    first = FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE + (c0 + 1) * cs
    bad |= int.from_bytes(nexts, "little") ^ (step_up + first * ones)
    return heads, links, nexts, valid, bad.to_bytes(WORD * k, "little")


class _Columns:
    """The grid's chunk headers as packed columns (see the module docstring): ``cont`` has a zero group
    where a chunk is a valid overflow page linked to the chunk right after it (each byte 0 or 1, so that
    ``find(1)`` finds the next non-zero group), ``valid`` a zero group where it is a valid overflow page,
    and ``nexts`` every chunk's overflow ``next`` field. With ``headers``, also each chunk header's first
    word (``heads``: magic, version, allocated) and its own ``next`` (``links``, the free-list link), as
    they are on disk (for ``frontier``)."""

    def __init__(self, buf: ByteSource, base: int, n: int, cs: int, *, headers: bool = False) -> None:
        release = page_releaser(buf)
        cont, valid = bytearray(), bytearray()
        nexts_: array[int] = array("Q")
        heads_: array[int] | None = array("Q") if headers else None
        links_: array[int] | None = array("Q") if headers else None
        view = memoryview(buf)
        fixed: _Fixed = {}  # block length → its constant columns
        n = _fitting(len(buf), base, n, cs)
        for c0 in range(0, n, BLOCK_CHUNKS):
            k = min(n, c0 + BLOCK_CHUNKS) - c0
            lo = base + c0 * cs
            heads, links, nexts, v, c = _block(view, lo, k, c0, cs, fixed, headers)
            if heads_ is not None and links_ is not None and links is not None:
                heads_.frombytes(heads)
                links_.frombytes(links)
            valid += v
            cont += c
            nexts_.frombytes(nexts)
            release(lo, lo + k * cs + WORD)
        self.n = len(nexts_)
        self.nexts: Words = nexts_
        self.heads: Words | None = heads_
        self.links: Words | None = links_
        cont += _ONE  # a sentinel: every search for a run's end finds one
        # One C pass: a search from a group's start for the first 1 lands in the first non-zero group.
        self.cont: bytearray | mmap.mmap = cont.translate(NONZERO_TO_ONE)
        self.valid: bytes | memoryview = bytes(valid)
        del view

    @classmethod
    def shared(cls, area: SharedColumns, n: int) -> _Columns:
        """The columns of ``n`` chunks that ``ColumnSink`` wrote into ``area`` (with ``headers``), read
        where they are: copying them out cost 0.1 s for a 1.1 GiB map (44 MB of columns)."""
        self = cls.__new__(cls)
        if n >= area.capacity:
            raise ValueError("no room for the sentinel")
        cont, valid, nexts, heads, links = (area.region(i) for i in range(5))
        cont[WORD * n : WORD * (n + 1)] = _ONE  # the sentinel (cont is made 0/1 by the sink)
        self.n = n
        self.cont = area.mm  # (cont is the area's first region: a search in it is a search of cont)
        self.valid = valid[: WORD * n]
        self.nexts, self.heads, self.links = (r[: WORD * n].cast("Q") for r in (nexts, heads, links))
        return self


class ColumnSink:
    """``changed_ranges``' sink in a byte-compare child (``prefetch``): takes the columns of the old
    map's chunks from the pieces of the old file the compare has just read, instead of reading the
    whole file again for them, and writes them into ``SharedColumns``. ``filled`` counts the chunks
    done; a chunk whose bytes run over the end of a piece is read on its own."""

    def __init__(self, area: SharedColumns, base: int, n: int, cs: int, fd: int) -> None:
        self.area, self.base, self.n, self.cs, self.fd = area, base, n, cs, fd
        self.regions = [area.region(i) for i in range(5)]
        self.fixed: _Fixed = {}
        self.filled = 0

    def __call__(self, off: int, size: int, view: memoryview) -> None:
        base, cs = self.base, self.cs
        c_first = max(0, -(-(off - base) // cs))  # the chunks whose headers start in this piece
        c_end = min(self.n, max(0, -(-(off + size - base) // cs)))
        if c_first >= c_end:
            return
        fit = min(c_end, max(c_first, (off + size - base - _SPAN) // cs + 1))  # their bytes all here
        if fit > c_first:
            self._put(view, base + c_first * cs - off, fit - c_first, c_first)
        for c in range(fit, c_end):
            raw = os.pread(self.fd, _SPAN, base + c * cs)
            if len(raw) != _SPAN:
                raise OSError(f"short read of chunk {c}")  # (the child gives up: no columns)
            self._put(memoryview(raw), 0, 1, c)
        self.filled += c_end - c_first

    def _put(self, view: memoryview, s: int, k: int, c0: int) -> None:
        heads, links, nexts, valid, cont = _block(view, s, k, c0, self.cs, self.fixed, True)
        a, b = WORD * c0, WORD * (c0 + k)
        r = self.regions
        r[0][a:b] = cont.translate(NONZERO_TO_ONE)
        r[1][a:b] = valid
        r[2][a:b] = nexts
        r[3][a:b] = heads
        r[4][a:b] = links or b""


_ONE = (1).to_bytes(WORD, "little")
_ONE_BYTE = _ONE[:1]


def _geometry(m: BTreeMap) -> tuple[int, ...]:
    return (m.root_addr, m.chunk_size, m.page_size, m.mem.size, m.free_list_head, m.num_allocated_chunks)


# Indexes the byte-compare child built for a file, by the file's identity, then by the buffer that
# maps that file in this process (see ``offer`` and ``adopt``).
_OFFERED: dict[tuple[int, ...], ChainIndex] = {}
_ADOPTED: dict[int, ChainIndex] = {}


def old_grid(
    buf: ByteSource, size: int, fd: int | None = None
) -> tuple[BTreeMap, tuple[int, int, int] | None] | None:
    """For the byte-compare children: the map on the raw memory of this snapshot and the grid of its
    columns, (physical offset of the first chunk, chunks whose column bytes lie in the file, chunk
    size); the grid is None where the map has no u64 grid. None without a map."""
    from inspector.layouts import BTREE_MAGIC
    from inspector.structures.btreemap import BTreeMap

    if size < FIRST_CHUNK_OFFSET or bytes(buf[: len(BTREE_MAGIC)]) != BTREE_MAGIC:
        return None
    m = BTreeMap(PhysicalMemory(buf, size, fd=fd), memory_id="raw")
    if not (m.walkable and m.allocator_ok and m.root_addr):
        return m, None
    grid = _grid(m)
    if grid is None:
        return m, None
    mapped, base, n = grid
    cs = m.chunk_size
    return m, (base, _fitting(len(mapped), base, n, cs), cs)


def precompute(m: BTreeMap, fd: int, cols: _Columns | None) -> tuple[tuple[int, ...], ChainIndex] | None:
    """For a compare child: the chain index of the old raw-memory map, built while the parent is still
    loading both snapshots; None if it does not apply."""
    if cols is None:
        return None
    buf = m.mem.buf if isinstance(m.mem, PhysicalMemory) else None
    if buf is None:
        return None
    drop = page_releaser(buf)
    size = m.mem.size
    idx = build(m, lambda: drop(0, size), cols)
    return None if idx is None else (file_identity(fd), idx)


def offer(hint: tuple[tuple[int, ...], ChainIndex]) -> None:
    _OFFERED.clear()
    _OFFERED[hint[0]] = hint[1]


def adopt(fd: int | None, buf: ByteSource | None) -> None:
    """Use an offered index for the map in ``buf`` when ``fd`` is the very file it was built from."""
    _ADOPTED.clear()
    if fd is None or buf is None or not _OFFERED:
        return
    try:
        idx = _OFFERED.pop(file_identity(fd), None)
    except OSError:
        return
    if idx is not None:
        _ADOPTED[id(buf)] = idx


def build(m: BTreeMap, release: Callable[[], None], cols: _Columns | None = None) -> ChainIndex | None:
    """The chain index of map ``m`` (its old side), or None where it does not apply or anything is off.
    ``cols``: the map's columns, already pulled out (``_Columns``, or ``_Columns.shared``)."""
    grid = _grid(m)
    if grid is None or not m.root_addr:
        return None
    buf, base, n = grid
    ready = _ADOPTED.get(id(buf))
    if ready is not None:
        return ready if ready.geometry == _geometry(m) else None
    cs = m.chunk_size
    first_payload = FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE
    nodes = _tree(m, buf, base, n, release)
    if nodes is None:
        return None
    if cols is None:
        cols = _Columns(buf, base, n, cs)
    n = cols.n
    cont, nexts = cols.cont, cols.nexts
    valid = memoryview(cols.valid).cast("Q")
    idx = ChainIndex(m, {a: v[:3] for a, v in nodes.items()})
    starts, ends, owner, first = idx.starts, idx.ends, idx.owner, idx.first
    total = 0
    find = cont.find
    for addr, (_t, _k, _ch, head) in nodes.items():
        j = 0
        nxt = head
        lo = len(starts)
        while nxt:
            pos, r = divmod(nxt - first_payload, cs)
            if r or not 0 <= pos < n:
                return None
            e = find(_ONE_BYTE, WORD * pos) >> 3  # (the sentinel: always found)
            if e >= n or valid[e] and not _valid_page(buf, base + e * cs):
                return None
            nxt = nexts[e]
            starts.append(pos)
            ends.append(e)
            owner.append(addr)
            first.append(j)
            j += e - pos + 1
            if j > n:
                return None  # a chain longer than the grid: it loops
        total += j
        if total > n:
            return None  # more pages than the grid holds: a loop
        idx.by_node[addr] = (lo, len(starts))
        idx.chain_len[addr] = j
    idx.node_j, idx.node_c = first, starts  # (in chain order, node by node)
    order = sorted(range(len(starts)), key=starts.__getitem__)
    idx.starts, idx.ends = (
        array("Q", map(starts.__getitem__, order)),
        array("Q", map(ends.__getitem__, order)),
    )
    idx.owner, idx.first = (
        array("Q", map(owner.__getitem__, order)),
        array("Q", map(first.__getitem__, order)),
    )
    if any(map(int.__le__, idx.starts[1:], idx.ends[:-1])):
        return None  # a page in two chains (or twice in one)
    idx.runs_followed = len(starts)
    release()
    return idx


def _valid_page(buf: ByteSource, at: int) -> bool:
    """The reader's own test of an overflow page (padding and the chunk's next are not looked at)."""
    cm, cv, al, _pad, _cn, om, _nxt = CHUNK_OVERFLOW.unpack_from(buf, at)
    return bool(cm == CHUNK_MAGIC and cv == 1 and al == 1 and om == OVERFLOW_MAGIC)


def _tree(
    m: BTreeMap, buf: ByteSource, base: int, n: int, release: Callable[[], None]
) -> dict[int, tuple[int, int, tuple[int, ...], int]] | None:
    """Every node reached from the root: payload address → (type, entry count, children, first
    overflow page), from the node pages alone; None if a node is not a v2 node on the grid, is reached
    twice, or keeps its children beyond its first page.

    Each node's first bytes are one ``pread`` where the file is open (the compare child's case): the
    mapping maps a whole large page-cache folio on each touch, and letting those go every few nodes
    over a 1.1 GiB mapping made the walk of the bench's 1,428 nodes take ~38 ms there instead of ~10."""
    cs = m.chunk_size
    page = m.page_size
    first_payload = FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE
    fd = m.mem.fd if isinstance(m.mem, PhysicalMemory) else None
    span = CHUNK_NODE.size + 8 * (CAPACITY + 1)  # a node's header and as many children as a node has
    out: dict[int, tuple[int, int, tuple[int, ...], int]] = {}
    stack = [m.root_addr]
    while stack:
        addr = stack.pop()
        r = addr - first_payload
        if addr in out or r < 0 or r % cs or r // cs >= n or len(out) >= MAX_NODES:
            return None
        at = base + (r // cs) * cs
        blk: ByteSource = buf
        if fd is not None:
            try:
                got = os.pread(fd, span, at)
            except OSError:
                got = b""
            # (Short only if the file shrank, the grid counting whole chunks: then the mapping's bytes,
            # which fail as they did before.)
            blk, at = (got, 0) if len(got) == span else (buf[at : at + span], 0)
        cm, cv, al, _pad, _cn, nm, nv, ntype, k, ovf = CHUNK_NODE.unpack_from(blk, at)
        if (cm, cv, al, nm, nv) != (CHUNK_MAGIC, 1, 1, NODE_MAGIC, 2) or ntype > 1 or not 1 <= k <= 11:
            return None
        children: tuple[int, ...] = ()
        if ntype == INTERNAL:
            if CHUNK_NODE.size + 8 * (k + 1) > CHUNK_HEADER_SIZE + page:
                return None
            children = tuple(
                memoryview(blk)[at + CHUNK_NODE.size : at + CHUNK_NODE.size + 8 * (k + 1)].cast("Q")
            )
            stack.extend(children)
        out[addr] = (ntype, k, children, ovf)
        if fd is None and not len(out) % RELEASE_EVERY_NODES:
            release()  # each node page read can map a whole large folio
    release()
    return out


def node_shape(
    m: BTreeMap, idx: ChainIndex, addr: int, chain: NodeChain, read: Callable[[int, int], bytes]
) -> tuple[NodeShape, list[tuple[int, int]]]:
    """(2, type, k, children, keys, None, chain, value spans) of a node and where its keys are in its
    stream, reading only the keys and the length prefix of each value (``read(pos, n)`` reads the
    node's stream through its chain)."""
    ntype, k, children = idx.nodes[addr]
    p = V2_PREFIX_SIZE + (8 * (k + 1) if ntype == INTERNAL else 0)
    kfix = m._kfix
    keys: list[bytes] = []
    key_pos: list[tuple[int, int]] = []
    if kfix:
        run = read(p, kfix * k)
        keys = [run[i * kfix : (i + 1) * kfix] for i in range(k)]
        key_pos = [(p + i * kfix, kfix) for i in range(k)]
        p += kfix * k
    else:
        for _ in range(k):
            (n,) = _U32(read(p, 4))
            keys.append(read(p + 4, n))
            key_pos.append((p + 4, n))
            p += 4 + n
    spans = value_spans(read, p, k, m.page_size, len(chain))
    if any(not x < y for x, y in zip(keys, keys[1:], strict=False)):
        raise NodeError("keys are not in byte order")
    return (2, ntype, k, children, keys, None, chain, spans), key_pos


def value_spans(
    read: Callable[[int, int], bytes], p: int, k: int, page_size: int, chain_len: int
) -> list[Range]:
    """(stream position, length) of each of a v2 node's ``k`` values, whose length prefixes start at
    stream position ``p``; NodeError when the node's stream does not end in its last overflow page."""
    spans: list[tuple[int, int]] = []
    for _ in range(k):
        (n,) = _U32(read(p, 4))
        spans.append((p + 4, n))
        p += 4 + n
    needed = -(-max(0, p - page_size) // (page_size - OVERFLOW_DATA_OFFSET))
    if needed != chain_len:
        raise NodeError("overflow chain length does not match the node stream")
    return spans


def structure_hits(
    hits: Iterable[Range], cs: int, reach: int = CHUNK_HEADER_SIZE + OVERFLOW_DATA_OFFSET
) -> bool:
    """Whether a changed range touches a chunk header or the overflow-page header after it (the first
    ``reach`` bytes of every chunk), or runs over from one chunk into the next. (Node pages are the
    caller's.) With ``reach=CHUNK_HEADER_SIZE``: whether any chunk header (or the allocator) changed."""
    for s, e in hits:
        if s < FIRST_CHUNK_OFFSET:
            return True
        o = (s - FIRST_CHUNK_OFFSET) % cs
        if o < reach or o + (e - s) > cs:
            return True
    return False


def chain_ranges(addr: int, chain: NodeChain, page_size: int, start: int, length: int) -> list[Range]:
    """``logical_ranges`` (btreemap.nodes) of a node whose overflow chain is a ``NodeChain``, built a
    run of pages at a time instead of one Python step per page (a listed 200 KB value spans ~200
    pages). The same list: where two pieces would touch (never on the chunk grid, where a header
    separates any two pages) it hands over to ``logical_ranges``, which merges them."""
    end = start + length
    out: list[Range] = []
    o = start
    if o < end and o < page_size:
        cut = min(end, page_size)
        out.append((addr + o, addr + cut))
        o = cut
    if o >= end:
        return out
    per = page_size - OVERFLOW_DATA_OFFSET
    j0, r0 = divmod(o - page_size, per)
    jl, rl = divmod(end - 1 - page_size, per)  # the page holding the last byte, and its offset there
    whole_last = jl >= len(chain)  # (a chain shorter than the stream: its pages are taken whole)
    jl = min(jl, len(chain) - 1)
    if j0 > jl:
        return out
    at = OVERFLOW_DATA_OFFSET
    segs = chain.page_spans(j0, jl + 1, at, page_size)  # each page's data, whole
    segs[0] = (segs[0][0] + r0, segs[0][1])
    if not whole_last:
        last = segs[-1]
        segs[-1] = (last[0], last[1] - page_size + at + rl + 1)  # (the page's address + at + rl + 1)
    if out and out[-1][1] == segs[0][0]:
        touch = True
    elif chain._cs > per:
        # Pages sit on the chunk grid, so two of them are a multiple of the chunk size apart, never
        # ``per``, as one page's data would have to end where another's starts: nothing to look for.
        touch = False
    else:
        touch = any(map(int.__eq__, [e for _s, e in segs[:-1]], [s for s, _e in segs[1:]]))
    if touch:
        from inspector.structures.btreemap.nodes import logical_ranges

        return logical_ranges(addr, chain, page_size, start, length)  # type: ignore[arg-type]
    out.extend(segs)
    return out
