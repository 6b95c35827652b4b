"""BTreeMap bulk loader: a valid B-tree image from sorted entries (FORMAT.md §3).

The real library builds its tree by inserts; here the tree is *planned* from the entry count and then
written in one go, which is what makes a million entries take seconds:

1. **Shape**, top-down: pick the height, then split each subtree's entry range into children whose sizes
   stay within the B-tree bounds (non-root 5..11 entries, root 1..11, all leaves at one depth), aiming
   at ``fill`` entries per node.
2. **Allocation**, bottom-up: leaves first, then each level up, the root last, so children's addresses
   are known before their parent is written. Chunks are handed out sequentially from 100 like the real
   allocator, a node's overflow pages right after it; optional free chunks are spread among them, and
   the free list always ends at the frontier chunk (next = 0).
3. **Bytes**, lazily: ``segments()`` yields what the library would write (28-byte header, 48-byte
   allocator header, each chunk header + the node's bytes), so a big tree is never held whole in memory.

Headers come from the construct declarations: constant ones are ``.build()`` once; per-node ones use
``inspector.layouts.FAST`` packers, whose ``struct`` formats are *derived* from the same declarations
(tests pin packer output to ``.build()``). No construct call runs per entry or per node.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, islice
from typing import Any

from inspector.forge.image import PAGE, Segment, pages_for
from inspector.layouts import (
    ALLOCATOR_MAGIC,
    ALLOCATOR_OFFSET,
    BTREE_MAGIC,
    CAPACITY,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    MINIMUM_PAGE_SIZE,
    NODE_HEADER,
    NODE_MAGIC,
    OVERFLOW_HEADER,
    OVERFLOW_MAGIC,
    PAGE_SIZE_VALUE_MARKER,
    V2_NODE_PREFIX,
    AllocatorHeader,
    B,
    BTreeMapHeader,
    ChunkHeader,
    v1_node_size,
)

DEFAULT_UNBOUNDED_PAGE_SIZE = 1024  # DEFAULT_PAGE_SIZE when the key or value type is Unbounded
CHUNK_HEADER_LEN = 16
NODE_PREFIX_LEN = 15  # v2: 7-byte node header + 8-byte first-overflow address
OVERFLOW_HEADER_LEN = 11  # "NOF" + u64 next
LEAF, INTERNAL = 0, 1
PACKED_HEADER_SIZE = 28  # the library writes only these bytes of the 52-byte BTreeMap header
MIN_ENTRIES = B - 1  # 5: non-root nodes hold 5..11 entries

_U32 = struct.Struct("<I")


def bounded_page_size(max_key_size: int, max_value_size: int) -> int:
    """Page size of a new v2 map whose key and value are both Bounded: ¾ of the v1 node (FORMAT.md §3.7)."""
    return v1_node_size(max_key_size, max_value_size) * 3 // 4


U64_U64_PAGE_SIZE = bounded_page_size(8, 8)  # 275


def chunk_header(allocated: bool, next_addr: int = 0) -> bytes:
    return ChunkHeader.build(
        {
            "magic": CHUNK_MAGIC,
            "version": 1,
            "allocated": int(allocated),
            "padding": bytes(3),
            "next": next_addr,
        }
    )


_CHUNK_ALLOCATED = chunk_header(True)


def overflow_pages_needed(stream_len: int, page_size: int) -> int:
    """Overflow pages a node stream of stream_len bytes needs (FORMAT.md §3.6)."""
    if stream_len <= page_size:
        return 0
    per_page = page_size - OVERFLOW_HEADER_LEN
    return -(-(stream_len - page_size) // per_page)


# --- Shape -------------------------------------------------------------------------------------------


def _bounds(height: int) -> tuple[list[int], list[int]]:
    """Minimum and maximum entries of a non-root subtree of each height 0..height."""
    lo, hi = [MIN_ENTRIES], [CAPACITY]
    for _ in range(height):
        lo.append(MIN_ENTRIES + (MIN_ENTRIES + 1) * lo[-1])
        hi.append(CAPACITY + (CAPACITY + 1) * hi[-1])
    return lo, hi


def _height_for(n: int, fill: int) -> int:
    """Smallest height whose subtrees, filled to ``fill`` entries per node, hold n entries."""
    target = fill
    h = 0
    while n > target:
        target = fill + (fill + 1) * target
        h += 1
    if h > 0:
        lo, _hi = _bounds(h)
        if n < 2 * lo[h - 1] + 1:  # too few entries for a root with two legal children: one level less
            h -= 1
    return h


@dataclass
class _Level:
    """Nodes of one tree level, left to right. Leaves have (lo, hi) entry ranges; internal nodes have
    separator entry indices (their children are the next level's nodes, consecutively)."""

    ranges: list[tuple[int, int]] = field(default_factory=list)
    separators: list[list[int]] = field(default_factory=list)


def plan_shape(n: int, fill: int = CAPACITY) -> list[_Level]:
    """Levels from the root (index 0) down to the leaves. Empty for an empty map."""
    if not MIN_ENTRIES <= fill <= CAPACITY:
        raise ValueError(f"fill must be {MIN_ENTRIES}..{CAPACITY} entries per node")
    if n == 0:
        return []
    height = _height_for(n, fill)
    lo_b, hi_b = _bounds(height)
    tsize = [fill]
    for _ in range(height):
        tsize.append(fill + (fill + 1) * tsize[-1])

    levels: list[_Level] = []
    current = [(0, n)]
    for h in range(height, 0, -1):
        level = _Level(ranges=current)
        nxt: list[tuple[int, int]] = []
        child_lo, child_hi, child_target = lo_b[h - 1], hi_b[h - 1], tsize[h - 1]
        is_root = h == height
        for lo, hi in current:
            m = hi - lo
            c_min = max(2 if is_root else B, -(-(m + 1) // (child_hi + 1)))
            c_max = min(CAPACITY + 1, (m + 1) // (child_lo + 1))
            if c_min > c_max:
                raise AssertionError(f"no legal split of {m} entries at height {h}")
            c = min(max(round((m + 1) / (child_target + 1)), c_min), c_max)
            q, r = divmod(m - (c - 1), c)
            seps: list[int] = []
            start = lo
            for i in range(c):
                size = q + (1 if i < r else 0)
                nxt.append((start, start + size))
                start += size
                if i < c - 1:
                    seps.append(start)
                    start += 1
            level.separators.append(seps)
        levels.append(level)
        current = nxt
    levels.append(_Level(ranges=current))
    return levels


# --- The forged map ----------------------------------------------------------------------------------


@dataclass
class ForgedBTreeMap:
    """A planned BTreeMap image. ``segments()`` yields its bytes; the attributes describe it."""

    keys: Sequence[bytes] = field(repr=False)
    values: Sequence[bytes] = field(repr=False)
    layout_version: int  # header version byte: 1 (max key/value sizes) or 2 (page size + marker)
    allocation_size: int  # chunk payload = v2 page size, or the fixed v1 node size
    fixed_key_size: int | None  # v2: keys stored raw (no length prefix) when the key type is fixed-size
    max_key_size: int = 0  # v1 only
    max_value_size: int = 0  # v1 only
    levels: list[_Level] = field(default_factory=list, repr=False)
    # Filled in by _allocate (kept out of repr: a million-entry map has ~100k of each):
    node_addrs: list[list[int]] = field(default_factory=list, repr=False)  # per level, left to right
    node_overflows: list[list[int]] = field(default_factory=list, repr=False)  # per level: page counts
    overflow_addrs: list[int] = field(default_factory=list, repr=False)
    free_list: list[int] = field(default_factory=list, repr=False)  # chunk headers, ending at the frontier
    root_addr: int = 0
    num_allocated_chunks: int = 0

    # -- description --

    @property
    def length(self) -> int:
        return len(self.keys)

    @property
    def chunk_size(self) -> int:
        return self.allocation_size + CHUNK_HEADER_LEN

    @property
    def depth(self) -> int:
        return len(self.levels)

    @property
    def node_count(self) -> int:
        return sum(len(level.ranges) for level in self.levels)

    @property
    def leaf_count(self) -> int:
        return len(self.levels[-1].ranges) if self.levels else 0

    @property
    def overflow_count(self) -> int:
        return len(self.overflow_addrs)

    @property
    def frontier(self) -> int:
        return self.free_list[-1]

    @property
    def free_list_head(self) -> int:
        return self.free_list[0]

    @property
    def end(self) -> int:
        """One past the last byte written: the frontier chunk's header."""
        return self.frontier + CHUNK_HEADER_LEN

    @property
    def size(self) -> int:
        return pages_for(self.end) * PAGE

    def chunk_addr(self, index: int) -> int:
        return FIRST_CHUNK_OFFSET + index * self.chunk_size

    def all_node_addrs(self) -> list[int]:
        return [a for level in self.node_addrs for a in level]

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        return zip(self.keys, self.values, strict=True)

    # -- encoding helpers --

    def _enc_key_len(self, k: bytes) -> int:
        return self.fixed_key_size if self.fixed_key_size is not None else 4 + len(k)

    def _stream_len(self, depth: int, index: int, klen: list[int], vlen: list[int]) -> int:
        """Length of the v2 logical node stream, from prefix sums of encoded key/value lengths."""
        level = self.levels[depth]
        if depth == len(self.levels) - 1:
            lo, hi = level.ranges[index]
            return NODE_PREFIX_LEN + klen[hi] - klen[lo] + vlen[hi] - vlen[lo]
        seps = level.separators[index]
        n = NODE_PREFIX_LEN + 8 * (len(seps) + 1)
        for s in seps:
            n += klen[s + 1] - klen[s] + vlen[s + 1] - vlen[s]
        return n

    def header_bytes(self) -> bytes:
        """The full 52-byte BTreeMap header (only the first 28 are written by the library)."""
        if self.layout_version == 1:
            size_a, size_b = self.max_key_size, self.max_value_size
        else:
            size_a, size_b = self.allocation_size, PAGE_SIZE_VALUE_MARKER
        return BTreeMapHeader.build(
            {
                "magic": BTREE_MAGIC,
                "layout_version": self.layout_version,
                "size_a": size_a,
                "size_b": size_b,
                "root_addr": self.root_addr,
                "length": self.length,
                "reserved": bytes(24),
            }
        )

    def allocator_header_bytes(self) -> bytes:
        return AllocatorHeader.build(
            {
                "magic": ALLOCATOR_MAGIC,
                "version": 1,
                "padding": bytes(4),
                "allocation_size": self.allocation_size,
                "num_allocated_chunks": self.num_allocated_chunks,
                "free_list_head": self.free_list_head,
                "reserved": bytes(16),
            }
        )

    # -- allocation --

    def _allocate(self, free_chunks: int) -> None:
        leaf_depth = len(self.levels) - 1
        if self.layout_version == 2 and self.levels:
            klen = list(accumulate(map(self._enc_key_len, self.keys), initial=0))
            vlen = list(accumulate((4 + len(v) for v in self.values), initial=0))
            pages_per_level = [
                [
                    overflow_pages_needed(self._stream_len(d, i, klen, vlen), self.allocation_size)
                    for i in range(len(self.levels[d].ranges))
                ]
                for d in range(len(self.levels))
            ]
        else:
            pages_per_level = [[0] * len(level.ranges) for level in self.levels]
        used = sum(len(level.ranges) + sum(p) for level, p in zip(self.levels, pages_per_level, strict=True))
        total = used + free_chunks
        if free_chunks > used:
            raise ValueError("at most one free chunk per allocated chunk")
        # Free chunks are spread evenly among the allocated ones (holes left by deletions, say).
        free_idx = sorted({(2 * i + 1) * total // (2 * free_chunks) for i in range(free_chunks)})
        if len(free_idx) != free_chunks:
            raise AssertionError("free chunk positions collided")
        free_set = set(free_idx)
        alloc_order = iter(i for i in range(total) if i not in free_set)

        cs = self.chunk_size
        self.node_addrs = [[] for _ in self.levels]
        self.node_overflows = pages_per_level
        self.overflow_addrs = []
        # Bottom-up: leaves first, root last, so a parent is written after its children exist.
        for d in range(leaf_depth, -1, -1):
            addrs = self.node_addrs[d]
            for n_over in pages_per_level[d]:
                addrs.append(FIRST_CHUNK_OFFSET + next(alloc_order) * cs + CHUNK_HEADER_LEN)
                for _ in range(n_over):
                    self.overflow_addrs.append(FIRST_CHUNK_OFFSET + next(alloc_order) * cs + CHUNK_HEADER_LEN)
        self.root_addr = self.node_addrs[0][0] if self.levels else 0
        self.num_allocated_chunks = used
        self.free_list = [FIRST_CHUNK_OFFSET + i * cs for i in free_idx] + [FIRST_CHUNK_OFFSET + total * cs]

    # -- bytes --

    def segments(self) -> Iterator[Segment]:
        """Everything the library writes for this map, in ascending address order."""
        header = self.header_bytes()
        yield 0, header[:PACKED_HEADER_SIZE]
        yield ALLOCATOR_OFFSET, self.allocator_header_bytes()
        nodes = self._v2_node_segments() if self.layout_version == 2 else self._v1_node_segments()
        # Merge the free-chunk headers into the node stream so that output stays in address order.
        free = [
            (a, chunk_header(False, nxt))
            for a, nxt in zip(self.free_list, self.free_list[1:] + [0], strict=True)
        ]
        fi = 0
        for seg in nodes:
            while fi < len(free) and free[fi][0] < seg[0]:
                yield free[fi]
                fi += 1
            yield seg
        yield from free[fi:]

    def _children_bytes(self, depth: int, child_start: int, count: int) -> bytes:
        addrs = self.node_addrs[depth + 1][child_start : child_start + count]
        return struct.pack(f"<{count}Q", *addrs)

    def _v2_node_segments(self) -> Iterator[Segment]:
        P = self.allocation_size
        per_page = P - OVERFLOW_HEADER_LEN
        keys, values = self.keys, self.values
        fixed = self.fixed_key_size is not None
        u32 = _U32.pack
        pack_prefix = V2_NODE_PREFIX.pack
        pack_overflow = OVERFLOW_HEADER.pack
        chk = _CHUNK_ALLOCATED
        leaf_depth = len(self.levels) - 1
        over_iter = iter(self.overflow_addrs)
        for d in range(leaf_depth, -1, -1):
            level = self.levels[d]
            child_cursor = 0
            for i, addr in enumerate(self.node_addrs[d]):
                if d == leaf_depth:
                    lo, hi = level.ranges[i]
                    ks = keys[lo:hi]
                    vs = values[lo:hi]
                    node_type, children = LEAF, b""
                else:
                    seps = level.separators[i]
                    ks = [keys[s] for s in seps]
                    vs = [values[s] for s in seps]
                    node_type = INTERNAL
                    children = self._children_bytes(d, child_cursor, len(seps) + 1)
                    child_cursor += len(seps) + 1
                if fixed:
                    key_blob = b"".join(ks)
                else:
                    key_blob = b"".join([u32(len(k)) + k for k in ks])
                value_blob = b"".join([u32(len(v)) + v for v in vs])
                n_over = self.node_overflows[d][i]
                overflows = [next(over_iter) for _ in range(n_over)]
                prefix = pack_prefix(NODE_MAGIC, 2, node_type, len(ks), overflows[0] if overflows else 0)
                stream = b"".join((prefix, children, key_blob, value_blob))
                if not overflows:
                    yield addr - CHUNK_HEADER_LEN, chk + stream
                    continue
                # Logical stream → initial page + overflow pages (FORMAT.md §3.6).
                yield addr - CHUNK_HEADER_LEN, chk + stream[:P]
                nexts = overflows[1:] + [0]
                for j, (oaddr, nxt) in enumerate(zip(overflows, nexts, strict=True)):
                    part = stream[P + j * per_page : P + (j + 1) * per_page]
                    yield oaddr - CHUNK_HEADER_LEN, chk + pack_overflow(OVERFLOW_MAGIC, nxt) + part

    def _v1_node_segments(self) -> Iterator[Segment]:
        mk, mv = self.max_key_size, self.max_value_size
        keys, values = self.keys, self.values
        leaf_depth = len(self.levels) - 1
        for d in range(leaf_depth, -1, -1):
            level = self.levels[d]
            child_cursor = 0
            for i, addr in enumerate(self.node_addrs[d]):
                if d == leaf_depth:
                    lo, hi = level.ranges[i]
                    idx: Iterable[int] = range(lo, hi)
                    node_type, children = LEAF, b""
                else:
                    seps = level.separators[i]
                    idx = seps
                    node_type = INTERNAL
                    children = self._children_bytes(d, child_cursor, len(seps) + 1)
                    child_cursor += len(seps) + 1
                parts = []
                for e in idx:
                    k, v = keys[e], values[e]
                    # Slots are padded to the stored maxima; children follow the last used slot.
                    parts.append(
                        _U32.pack(len(k)) + k.ljust(mk, b"\0") + _U32.pack(len(v)) + v.ljust(mv, b"\0")
                    )
                node = NODE_HEADER.pack(NODE_MAGIC, 1, node_type, len(parts)) + b"".join(parts) + children
                yield addr - CHUNK_HEADER_LEN, _CHUNK_ALLOCATED + node

    def to_bytes(self) -> bytes:
        """The map's whole memory (``size`` bytes)."""
        buf = bytearray(self.size)
        for off, data in self.segments():
            buf[off : off + len(data)] = data
        return bytes(buf)


def _check_keys(keys: Sequence[bytes], fixed_key_size: int | None) -> None:
    if not all(map(operator.lt, keys, islice(keys, 1, None))):
        raise ValueError("keys must be strictly increasing (byte order)")
    if fixed_key_size is not None and any(len(k) != fixed_key_size for k in keys):
        raise ValueError(f"fixed-size keys must all be {fixed_key_size} bytes")


def forge_btreemap_columns(
    keys: Sequence[bytes],
    values: Sequence[bytes],
    *,
    page_size: int | None = None,
    bounds: tuple[int, int] | None = None,
    fixed_key_size: int | None = None,
    fill: int = CAPACITY,
    free_chunks: int = 0,
    check: bool = True,
) -> ForgedBTreeMap:
    """A v2 BTreeMap ("BTR" v2, page size + 0xFFFFFFFF) from sorted keys and their values.

    The page size is what ``BTreeMap::new`` would pick (FORMAT.md §3.7): ``page_size`` if given; else,
    when key and value types are both Bounded, ``bounds`` = (key max size, value max size) gives ¾ of
    the v1 node size (275 for u64 → u64); else 1024, the Unbounded default.
    ``fixed_key_size``: keys are written raw, without a length prefix (a fixed-size key type).
    ``fill``: target entries per node (5..11); nodes whose bytes exceed the page spill into overflow pages.
    ``free_chunks``: extra free chunks spread among the allocated ones, chained in the free list.
    """
    if len(keys) != len(values):
        raise ValueError("one value per key")
    if page_size is None:
        page_size = bounded_page_size(*bounds) if bounds is not None else DEFAULT_UNBOUNDED_PAGE_SIZE
    if page_size < MINIMUM_PAGE_SIZE:
        raise ValueError(f"v2 page size must be at least {MINIMUM_PAGE_SIZE}")
    if check:
        _check_keys(keys, fixed_key_size)
    fm = ForgedBTreeMap(
        keys=keys,
        values=values,
        layout_version=2,
        allocation_size=page_size,
        fixed_key_size=fixed_key_size,
        levels=plan_shape(len(keys), fill),
    )
    fm._allocate(free_chunks)
    return fm


def forge_u64_btreemap(keys: Iterable[int], values: Iterable[int], **kwargs: Any) -> ForgedBTreeMap:
    """``StableBTreeMap<u64, u64>``: big-endian keys stored raw (fixed size), page size 275."""
    key_bytes = [k.to_bytes(8, "big") for k in keys]
    value_bytes = [v.to_bytes(8, "big") for v in values]
    kwargs.setdefault("bounds", (8, 8))
    return forge_btreemap_columns(key_bytes, value_bytes, fixed_key_size=8, **kwargs)


def forge_btreemap(entries: Iterable[tuple[bytes, bytes]], **kwargs: Any) -> ForgedBTreeMap:
    """:func:`forge_btreemap_columns` for (key, value) pairs."""
    pairs = list(entries)
    keys = [k for k, _ in pairs]
    values = [v for _, v in pairs]
    return forge_btreemap_columns(keys, values, **kwargs)


def forge_btreemap_v1(
    entries: Iterable[tuple[bytes, bytes]],
    max_key_size: int,
    max_value_size: int,
    *,
    fill: int = CAPACITY,
    free_chunks: int = 0,
    check: bool = True,
) -> ForgedBTreeMap:
    """A layout-v1 map (v0.5.x): header with max key/value sizes, fixed-size v1 nodes, no overflow."""
    pairs = list(entries)
    keys = [k for k, _ in pairs]
    values = [v for _, v in pairs]
    if check:
        _check_keys(keys, None)
        if any(len(k) > max_key_size for k in keys) or any(len(v) > max_value_size for v in values):
            raise ValueError("an entry is larger than the map's max key/value size")
    fm = ForgedBTreeMap(
        keys=keys,
        values=values,
        layout_version=1,
        allocation_size=v1_node_size(max_key_size, max_value_size),
        fixed_key_size=None,
        max_key_size=max_key_size,
        max_value_size=max_value_size,
        levels=plan_shape(len(keys), fill),
    )
    fm._allocate(free_chunks)
    return fm


__all__ = [
    "DEFAULT_UNBOUNDED_PAGE_SIZE",
    "U64_U64_PAGE_SIZE",
    "ForgedBTreeMap",
    "bounded_page_size",
    "forge_btreemap",
    "forge_btreemap_columns",
    "forge_btreemap_v1",
    "forge_u64_btreemap",
    "overflow_pages_needed",
    "plan_shape",
]
