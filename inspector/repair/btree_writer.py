"""A fresh, valid BTreeMap image from sorted entries (FORMAT.md §3), for ``repair``.

The tree is planned from the entry count (it does not reproduce any insertion history): every leaf at
one depth, non-root nodes with 5..11 entries, the root with 1..11, as the library's invariants require
(FORMAT.md §3.9). Chunks are handed out from 100 in pre-order, the root first, each node's overflow pages
right after it; the free list is the single frontier chunk after the last one. Nodes are v2 nodes
(version byte 2) in the page size of the header they are written under: a v2 header (page size + the
0xFFFFFFFF marker) or a migrated v1 header (max key/value sizes, page = v1 node size), the two layouts
in which the library writes v2 nodes.

Every header comes from the ``inspector.layouts`` declarations through their derived packers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from inspector.layouts import (
    ALLOCATOR_HEADER,
    ALLOCATOR_MAGIC,
    ALLOCATOR_OFFSET,
    BTREE_HEADER,
    BTREE_MAGIC,
    CAPACITY,
    CHUNK_HEADER,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    MINIMUM_PAGE_SIZE,
    NODE_MAGIC,
    OVERFLOW_HEADER,
    OVERFLOW_MAGIC,
    PAGE_SIZE_VALUE_MARKER,
    V2_NODE_PREFIX,
    B,
)

_U32 = struct.Struct("<I").pack
_U64 = struct.Struct("<Q").pack
MIN_ENTRIES = B - 1  # non-root nodes hold 5..11 entries
LEAF, INTERNAL = 0, 1


@dataclass
class _Node:
    lo: int  # entry index range [lo, hi) of the subtree
    hi: int
    separators: list[int] = field(default_factory=list)  # entry indexes held by this node
    children: list[_Node] = field(default_factory=list)
    addr: int = 0
    overflows: list[int] = field(default_factory=list)


def _max_entries(height: int) -> int:
    """Entries a full subtree of this height holds: 12^(h+1) − 1."""
    return (CAPACITY + 1) ** (height + 1) - 1


def _min_entries(height: int) -> int:
    """Entries a minimal non-root subtree of this height holds: 6^(h+1) − 1."""
    return (MIN_ENTRIES + 1) ** (height + 1) - 1


def _shape(lo: int, hi: int, height: int) -> _Node:
    node = _Node(lo, hi)
    n = hi - lo
    if height == 0:
        node.separators = list(range(lo, hi))
        return node
    child_max = _max_entries(height - 1)
    c = max(2, -(-(n + 1) // (child_max + 1)))
    q, r = divmod(n - (c - 1), c)
    if q < _min_entries(height - 1):
        raise AssertionError(f"no legal split of {n} entries at height {height}")
    start = lo
    for i in range(c):
        size = q + (1 if i < r else 0)
        node.children.append(_shape(start, start + size, height - 1))
        start += size
        if i < c - 1:
            node.separators.append(start)
            start += 1
    return node


def plan_tree(n: int) -> _Node | None:
    """The shape of a tree of n entries, or None for an empty map."""
    if n == 0:
        return None
    height = 0
    while _max_entries(height) < n:
        height += 1
    return _shape(0, n, height)


def overflow_pages_needed(stream_len: int, page_size: int) -> int:
    """FORMAT.md §3.6: 0 if the stream fits the initial page, else ceil((n − P)/(P − 11))."""
    if stream_len <= page_size:
        return 0
    return -(-(stream_len - page_size) // (page_size - OVERFLOW_HEADER.size))


@dataclass
class BTreeImage:
    """The bytes of a map's memory from virtual 0 to the end of the frontier chunk header."""

    data: bytearray
    root_addr: int
    length: int
    node_count: int
    overflow_count: int
    depth: int
    frontier: int  # address of the frontier chunk header (the free list's only element)

    @property
    def extent(self) -> int:
        return len(self.data)


def build_btree(
    keys: Sequence[bytes],
    values: Sequence[bytes],
    *,
    page_size: int,
    key_fixed_size: int = 0,
    header_version: int = 2,
    max_key_size: int = 0,
    max_value_size: int = 0,
) -> BTreeImage:
    """A map holding ``keys`` → ``values`` (keys strictly increasing in the map's order).

    ``key_fixed_size`` N > 0 stores keys as N raw bytes (a fixed-size key type), 0 with a u32 length.
    ``header_version`` 1 writes a migrated-map header (``max_key_size``/``max_value_size``; the page is
    then the v1 node size the caller passes as ``page_size``).
    """
    if len(keys) != len(values):
        raise ValueError("keys and values differ in length")
    if page_size < MINIMUM_PAGE_SIZE:
        raise ValueError(f"page size {page_size} is below the library minimum {MINIMUM_PAGE_SIZE}")
    if key_fixed_size and any(len(k) != key_fixed_size for k in keys):
        raise ValueError(f"a key is not {key_fixed_size} bytes long (fixed-size key layout)")
    cs = page_size + CHUNK_HEADER_SIZE
    root = plan_tree(len(keys))

    def stream_len(node: _Node) -> int:
        k = len(node.separators)
        n = V2_NODE_PREFIX.size + (8 * (k + 1) if node.children else 0)
        for i in node.separators:
            n += (key_fixed_size or 4 + len(keys[i])) + 4 + len(values[i])
        return n

    # Pre-order allocation: the root gets chunk 0.
    order: list[_Node] = []
    chunk = 0
    stack = [root] if root is not None else []
    depth = 0
    while stack:
        node = stack.pop()
        order.append(node)
        node.addr = FIRST_CHUNK_OFFSET + chunk * cs + CHUNK_HEADER_SIZE
        extra = overflow_pages_needed(stream_len(node), page_size)
        node.overflows = [node.addr + (j + 1) * cs for j in range(extra)]
        chunk += 1 + extra
        stack.extend(reversed(node.children))
    if root is not None:
        probe = root
        while probe.children:
            probe, depth = probe.children[0], depth + 1
    frontier = FIRST_CHUNK_OFFSET + chunk * cs
    data = bytearray(frontier + CHUNK_HEADER_SIZE)
    allocated = CHUNK_HEADER.pack(CHUNK_MAGIC, 1, 1, bytes(3), 0)
    per_overflow = page_size - OVERFLOW_HEADER.size
    for node in order:
        k = len(node.separators)
        parts = [
            V2_NODE_PREFIX.pack(
                NODE_MAGIC,
                2,
                INTERNAL if node.children else LEAF,
                k,
                node.overflows[0] if node.overflows else 0,
            )
        ]
        if node.children:
            parts.extend(_U64(c.addr) for c in node.children)
        for i in node.separators:
            parts.append(keys[i] if key_fixed_size else _U32(len(keys[i])) + keys[i])
        for i in node.separators:
            parts.append(_U32(len(values[i])) + values[i])
        stream = b"".join(parts)
        pages = [stream[:page_size]]
        for j in range(len(node.overflows)):
            nxt = node.overflows[j + 1] if j + 1 < len(node.overflows) else 0
            body = stream[page_size + j * per_overflow : page_size + (j + 1) * per_overflow]
            pages.append(OVERFLOW_HEADER.pack(OVERFLOW_MAGIC, nxt) + body)
        for addr, page in zip([node.addr, *node.overflows], pages, strict=True):
            data[addr - CHUNK_HEADER_SIZE : addr] = allocated
            data[addr : addr + len(page)] = page
    data[frontier : frontier + CHUNK_HEADER_SIZE] = CHUNK_HEADER.pack(CHUNK_MAGIC, 1, 0, bytes(3), 0)
    root_addr = root.addr if root is not None else 0
    if header_version == 2:
        size_a, size_b = page_size, PAGE_SIZE_VALUE_MARKER
    else:
        size_a, size_b = max_key_size, max_value_size
    data[0 : BTREE_HEADER.size] = BTREE_HEADER.pack(
        BTREE_MAGIC, header_version, size_a, size_b, root_addr, len(keys), bytes(24)
    )
    num_chunks = chunk
    data[ALLOCATOR_OFFSET : ALLOCATOR_OFFSET + ALLOCATOR_HEADER.size] = ALLOCATOR_HEADER.pack(
        ALLOCATOR_MAGIC, 1, bytes(4), page_size, num_chunks, frontier, bytes(16)
    )
    return BTreeImage(
        data,
        root_addr,
        len(keys),
        len(order),
        sum(len(n.overflows) for n in order),
        depth,
        frontier,
    )
