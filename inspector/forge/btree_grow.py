"""A BTreeMap grown the way ic-stable-structures grows it: inserts and removes, one at a time.

``btree.py`` plans a tree from sorted entries and bulk-writes it (sequential addresses, every node
as full as asked, no free list unless requested). Real maps look different: nodes split as random keys
arrive (leaves end up about ⅔ full), merges on removal free chunks into the allocator's free list, and
a node's chunks lie wherever the allocator had a free one at the time. This module *simulates* the
library's algorithms (dfinity/stable-structures, ``src/btreemap.rs`` and ``btreemap/allocator.rs``,
order B = 6, capacity 11) and then writes the resulting image:

* insert: a full root gets a new internal root, then the full child on the way down is split before
  descending (the median moves up; the right half goes to a freshly allocated sibling);
* remove: a key in an internal node is replaced by its predecessor (left child has ≥ B entries) or
  successor (right child has ≥ B), else the two children merge; on the way down a child with B - 1
  entries first takes an entry from a sibling with ≥ B (left first) or merges with a sibling (left
  first); merging frees the source node's chunks, and an emptied root hands over to its only child;
* allocator: a LIFO free list (a freed chunk's ``next`` is the old head), allocation from the head, the
  frontier chunk moving on only when the list holds nothing else;
* v2 nodes: a node stream longer than the page spills into overflow pages, allocated on save as the
  node grows and freed as it shrinks or dies.

Keys are u64 (big-endian, stored raw like ``StableBTreeMap<u64, _>``); each value is a function of its
key, so the simulation holds only the keys. Freed chunks keep just their header here (the library
leaves the dead node's bytes behind them; decoders must ignore those either way).
"""

from __future__ import annotations

import random
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from inspector.forge.btree import (
    _CHUNK_ALLOCATED,
    CHUNK_HEADER_LEN,
    INTERNAL,
    LEAF,
    NODE_PREFIX_LEN,
    OVERFLOW_HEADER_LEN,
    PACKED_HEADER_SIZE,
    U64_U64_PAGE_SIZE,
    chunk_header,
    overflow_pages_needed,
)
from inspector.forge.image import PAGE, Segment, pages_for
from inspector.layouts import (
    ALLOCATOR_MAGIC,
    ALLOCATOR_OFFSET,
    BTREE_MAGIC,
    CAPACITY,
    FIRST_CHUNK_OFFSET,
    NODE_MAGIC,
    OVERFLOW_HEADER,
    OVERFLOW_MAGIC,
    PAGE_SIZE_VALUE_MARKER,
    V2_NODE_PREFIX,
    AllocatorHeader,
    B,
    BTreeMapHeader,
)

U64_MASK = 0xFFFF_FFFF_FFFF_FFFF
_PAGE_SHIFT = 16  # owner code = node serial << 16 | page number (a node spans < 65536 pages)


class _Node:
    __slots__ = ("addr", "children", "keys", "ovf")

    def __init__(self, addr: int, leaf: bool) -> None:
        self.addr = addr  # address of the node's first page (chunk + 16)
        self.keys: list[int] = []
        self.children: list[_Node] | None = None if leaf else []
        self.ovf: list[int] = []  # overflow page addresses, in chain order


def u64_square(key: int) -> bytes:
    """k → k² (mod 2⁶⁴), big-endian: the bench's u64 → u64 value."""
    return ((key * key) & U64_MASK).to_bytes(8, "big")


@dataclass
class GrownBTreeMap:
    """A v2 ``StableBTreeMap<u64, V>`` built by the library's own insert/remove algorithm."""

    page_size: int = U64_U64_PAGE_SIZE
    value_of: Callable[[int], bytes] = u64_square
    value_len: int | Callable[[int], int] | None = 8  # fixed value length, or key → length (None: value_of)
    root: _Node | None = None
    length: int = 0
    num_allocated_chunks: int = 0
    frontier: int = 0  # chunk index of the frontier chunk (the free list's last element)
    free_stack: list[int] = field(default_factory=list)  # freed chunk indices; the head is the last
    splits: int = 0
    merges: int = 0

    def __post_init__(self) -> None:
        vl = self.value_len
        self._leaf_fits = isinstance(vl, int) and NODE_PREFIX_LEN + CAPACITY * (12 + vl) <= self.page_size

    # -- allocator --

    @property
    def chunk_size(self) -> int:
        return self.page_size + CHUNK_HEADER_LEN

    def _alloc(self) -> int:
        self.num_allocated_chunks += 1
        if self.free_stack:
            i = self.free_stack.pop()
        else:
            i = self.frontier
            self.frontier += 1
        return FIRST_CHUNK_OFFSET + i * self.chunk_size + CHUNK_HEADER_LEN

    def _free(self, addr: int) -> None:
        self.num_allocated_chunks -= 1
        self.free_stack.append((addr - CHUNK_HEADER_LEN - FIRST_CHUNK_OFFSET) // self.chunk_size)

    def _new_node(self, leaf: bool) -> _Node:
        return _Node(self._alloc(), leaf)

    def _dealloc_node(self, node: _Node) -> None:
        for a in node.ovf:
            self._free(a)
        node.ovf = []
        self._free(node.addr)

    # -- node saving: only the overflow page count matters until the bytes are written --

    def _stream_len(self, node: _Node) -> int:
        n = NODE_PREFIX_LEN + 12 * len(node.keys)  # 8-byte key + 4-byte value length each
        vl = self.value_len
        if isinstance(vl, int):
            n += vl * len(node.keys)
        elif vl is not None:
            n += sum(map(vl, node.keys))
        else:
            n += sum(len(self.value_of(k)) for k in node.keys)
        if node.children is not None:
            n += 8 * len(node.children)
        return n

    def _save(self, node: _Node) -> None:
        if node.children is None and self._leaf_fits:
            return  # a full leaf fits in its page (u64 → u64: 235 of 275 bytes): nothing to allocate
        need = overflow_pages_needed(self._stream_len(node), self.page_size)
        ovf = node.ovf
        while len(ovf) > need:
            self._free(ovf.pop())
        while len(ovf) < need:
            ovf.append(self._alloc())

    # -- insert --

    def insert(self, key: int) -> None:
        """Insert a key that is not in the map yet (the caller keeps keys distinct)."""
        root = self.root
        if root is None:
            root = self._new_node(leaf=True)
            self.root = root
        elif len(root.keys) == CAPACITY:
            new_root = self._new_node(leaf=False)
            assert new_root.children is not None
            new_root.children.append(root)
            self.root = new_root
            self._split_child(new_root, 0)
            root = new_root
        node = root
        while True:
            i = bisect_right(node.keys, key)
            children = node.children
            if children is None:
                node.keys.insert(i, key)
                self._save(node)
                self.length += 1
                return
            child = children[i]
            if len(child.keys) == CAPACITY:
                self._split_child(node, i)
                if key > node.keys[i]:
                    child = children[i + 1]
            node = child

    def _split_child(self, node: _Node, i: int) -> None:
        assert node.children is not None
        full = node.children[i]
        sibling = self._new_node(leaf=full.children is None)
        median = full.keys[B - 1]
        sibling.keys = full.keys[B:]
        full.keys = full.keys[: B - 1]
        if full.children is not None:
            sibling.children = full.children[B:]
            full.children = full.children[:B]
        self._save(sibling)
        self._save(full)
        node.children.insert(i + 1, sibling)
        node.keys.insert(i, median)
        self._save(node)
        self.splits += 1

    # -- remove --

    def remove(self, key: int) -> None:
        """Remove a key that is in the map."""
        if self.root is None:
            raise KeyError(key)
        self._remove(self.root, key)

    def _merge(self, source: _Node, into: _Node, median: int) -> _Node:
        if into.keys and source.keys and into.keys[0] > source.keys[0]:
            into.keys = source.keys + [median] + into.keys
            if into.children is not None and source.children is not None:
                into.children = source.children + into.children
        else:
            into.keys = into.keys + [median] + source.keys
            if into.children is not None and source.children is not None:
                into.children = into.children + source.children
        self._dealloc_node(source)
        self._save(into)
        self.merges += 1
        return into

    def _after_merge(self, node: _Node, merged: _Node) -> None:
        if not node.keys:  # only the root can run out of entries: its one child takes over
            self._dealloc_node(node)
            self.root = merged
        else:
            self._save(node)

    def _remove(self, node: _Node, key: int) -> None:
        while True:
            keys = node.keys
            i = bisect_left(keys, key)
            found = i < len(keys) and keys[i] == key
            children = node.children
            if children is None:
                if not found:
                    raise KeyError(key)
                del keys[i]
                self.length -= 1
                if not keys:
                    self._dealloc_node(node)
                    self.root = None
                else:
                    self._save(node)
                return
            if found:
                left, right = children[i], children[i + 1]
                if len(left.keys) >= B:
                    pred = _max_key(left)
                    self._remove(left, pred)
                    node.keys[i] = pred
                    self._save(node)
                    return
                if len(right.keys) >= B:
                    succ = _min_key(right)
                    self._remove(right, succ)
                    node.keys[i] = succ
                    self._save(node)
                    return
                median = keys.pop(i)
                children.pop(i + 1)
                merged = self._merge(right, left, median)
                self._after_merge(node, merged)
                node = merged
                continue
            child = children[i]
            if len(child.keys) >= B:
                node = child
                continue
            lsib: _Node | None = children[i - 1] if i > 0 else None
            rsib: _Node | None = children[i + 1] if i + 1 < len(children) else None
            if lsib is not None and len(lsib.keys) >= B:
                child.keys.insert(0, keys[i - 1])
                keys[i - 1] = lsib.keys.pop()
                if child.children is not None and lsib.children is not None:
                    child.children.insert(0, lsib.children.pop())
                self._save(lsib)
                self._save(child)
                self._save(node)
                node = child
                continue
            if rsib is not None and len(rsib.keys) >= B:
                child.keys.append(keys[i])
                keys[i] = rsib.keys.pop(0)
                if child.children is not None and rsib.children is not None:
                    child.children.append(rsib.children.pop(0))
                self._save(rsib)
                self._save(child)
                self._save(node)
                node = child
                continue
            if lsib is not None:
                median = keys.pop(i - 1)
                children.pop(i)
                merged = self._merge(child, lsib, median)
            elif rsib is not None:
                median = keys.pop(i)
                children.pop(i + 1)
                merged = self._merge(rsib, child, median)
            else:  # pragma: no cover - an internal node always has two children
                raise AssertionError("internal node with one child")
            self._after_merge(node, merged)
            node = merged

    # -- description --

    def nodes(self) -> Iterator[tuple[int, _Node]]:
        """(depth, node) in pre-order."""
        if self.root is None:
            return
        stack = [(0, self.root)]
        while stack:
            d, n = stack.pop()
            yield d, n
            if n.children is not None:
                stack.extend((d + 1, c) for c in reversed(n.children))

    def keys(self) -> Iterator[int]:
        """Keys in order (in-order walk)."""

        def walk(n: _Node) -> Iterator[int]:
            if n.children is None:
                yield from n.keys
                return
            for c, k in zip(n.children, n.keys, strict=False):
                yield from walk(c)
                yield k
            yield from walk(n.children[-1])

        if self.root is not None:
            yield from walk(self.root)

    def entries(self) -> Iterator[tuple[bytes, bytes]]:
        value_of = self.value_of
        for k in self.keys():
            yield k.to_bytes(8, "big"), value_of(k)

    def stats(self) -> dict[str, int]:
        node_count = overflow = depth = 0
        for d, n in self.nodes():
            node_count += 1
            overflow += len(n.ovf)
            depth = max(depth, d + 1)
        return {
            "length": self.length,
            "node_count": node_count,
            "overflow_pages": overflow,
            "depth": depth,
            "num_allocated_chunks": self.num_allocated_chunks,
            "free_list_len": len(self.free_stack) + 1,  # with the frontier chunk, as the allocator walks it
            "splits": self.splits,
            "merges": self.merges,
        }

    @property
    def node_count(self) -> int:
        return sum(1 for _ in self.nodes())

    @property
    def overflow_count(self) -> int:
        return sum(len(n.ovf) for _, n in self.nodes())

    # -- bytes (MemoryContent) --

    @property
    def end(self) -> int:
        return FIRST_CHUNK_OFFSET + self.frontier * self.chunk_size + CHUNK_HEADER_LEN

    @property
    def size(self) -> int:
        return pages_for(self.end) * PAGE

    @property
    def free_list_head(self) -> int:
        i = self.free_stack[-1] if self.free_stack else self.frontier
        return FIRST_CHUNK_OFFSET + i * self.chunk_size

    def header_bytes(self) -> bytes:
        """The 28 bytes the library writes of the map header, then the 48-byte allocator header."""
        header = BTreeMapHeader.build(
            {
                "magic": BTREE_MAGIC,
                "layout_version": 2,
                "size_a": self.page_size,
                "size_b": PAGE_SIZE_VALUE_MARKER,
                "root_addr": self.root.addr if self.root is not None else 0,
                "length": self.length,
                "reserved": bytes(24),
            }
        )
        allocator = AllocatorHeader.build(
            {
                "magic": ALLOCATOR_MAGIC,
                "version": 1,
                "padding": bytes(4),
                "allocation_size": self.page_size,
                "num_allocated_chunks": self.num_allocated_chunks,
                "free_list_head": self.free_list_head,
                "reserved": bytes(16),
            }
        )
        return header[:PACKED_HEADER_SIZE] + allocator

    def _stream(self, node: _Node) -> bytes:
        children = node.children
        keys = node.keys
        prefix = V2_NODE_PREFIX.pack(
            NODE_MAGIC, 2, LEAF if children is None else INTERNAL, len(keys), node.ovf[0] if node.ovf else 0
        )
        parts = [prefix]
        if children is not None:
            parts.append(struct.pack(f"<{len(children)}Q", *(c.addr for c in children)))
        parts.append(struct.pack(f">{len(keys)}Q", *keys))
        value_of = self.value_of
        u32 = struct.Struct("<I").pack
        for k in keys:
            v = value_of(k)
            parts.append(u32(len(v)))
            parts.append(v)
        return b"".join(parts)

    def segments(self) -> Iterator[Segment]:
        """Map header, allocator header, then every chunk in address order (nodes, overflow, free)."""
        hdr = self.header_bytes()
        yield 0, hdr[:PACKED_HEADER_SIZE]
        yield ALLOCATOR_OFFSET, hdr[PACKED_HEADER_SIZE:]
        cs = self.chunk_size
        total = self.frontier + 1
        owner = array("q", [-1]) * total
        serial: list[_Node] = []
        for _, n in self.nodes():
            sid = len(serial)
            serial.append(n)
            owner[(n.addr - CHUNK_HEADER_LEN - FIRST_CHUNK_OFFSET) // cs] = sid << _PAGE_SHIFT
            for j, a in enumerate(n.ovf, start=1):
                owner[(a - CHUNK_HEADER_LEN - FIRST_CHUNK_OFFSET) // cs] = (sid << _PAGE_SHIFT) | j
        # Free chunks: each one's next is the chunk freed before it; the oldest points at the frontier.
        stack = self.free_stack
        next_of = {c: (stack[j - 1] if j else self.frontier) for j, c in enumerate(stack)}
        P = self.page_size
        per_page = P - OVERFLOW_HEADER_LEN
        pending: dict[int, bytes] = {}  # node serial → its stream, until its last overflow page is out
        for ci in range(total):
            chunk = FIRST_CHUNK_OFFSET + ci * cs
            code = owner[ci]
            if code < 0:
                nxt = next_of.get(ci)
                yield chunk, chunk_header(False, 0 if nxt is None else FIRST_CHUNK_OFFSET + nxt * cs)
                continue
            sid, page = code >> _PAGE_SHIFT, code & ((1 << _PAGE_SHIFT) - 1)
            node = serial[sid]
            if page == 0:
                stream = self._stream(node)
                if node.ovf:
                    pending[sid] = stream
                yield chunk, _CHUNK_ALLOCATED + stream[:P]
                continue
            stream = pending[sid] if sid in pending else self._stream(node)
            nxt_addr = node.ovf[page] if page < len(node.ovf) else 0
            part = stream[P + (page - 1) * per_page : P + page * per_page]
            yield chunk, _CHUNK_ALLOCATED + OVERFLOW_HEADER.pack(OVERFLOW_MAGIC, nxt_addr) + part
            if page == len(node.ovf):
                pending.pop(sid, None)


def grow_u64_map(
    inserts: int,
    removals: int,
    *,
    seed: int = 1,
    page_size: int = U64_U64_PAGE_SIZE,
    value_of: Callable[[int], bytes] = u64_square,
    value_len: int | Callable[[int], int] | None = 8,
    on_progress: Callable[[int], None] | None = None,
) -> GrownBTreeMap:
    """``inserts`` random distinct u64 keys inserted in random order, then ``removals`` of them removed
    (a random subset, in random order), as the real fixture btree_u64_many was made."""
    rng = random.Random(seed)
    m = GrownBTreeMap(page_size=page_size, value_of=value_of, value_len=value_len)
    # Keys: a bijective 64-bit mix of a seeded counter, so they are distinct without a set of millions.
    offset = rng.getrandbits(64)
    ins = m.insert
    for n in range(inserts):
        ins(mix64((n + offset) & U64_MASK))
        if on_progress is not None and n % 1_000_000 == 0:
            on_progress(n)
    for n in rng.sample(range(inserts), removals):
        m.remove(mix64((n + offset) & U64_MASK))
    return m


def mix64(x: int) -> int:
    """splitmix64's finaliser: a bijection on u64 that scatters consecutive inputs."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & U64_MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & U64_MASK
    return x ^ (x >> 31)


def grow_map_from(ops: Sequence[tuple[str, int]], **kwargs: object) -> GrownBTreeMap:
    """A map after a given sequence of ("insert" | "remove", key) operations (for tests)."""
    m = GrownBTreeMap(**kwargs)  # type: ignore[arg-type]
    for op, k in ops:
        if op == "insert":
            m.insert(k)
        else:
            m.remove(k)
    return m


def _max_key(node: _Node) -> int:
    while node.children is not None:
        node = node.children[-1]
    return node.keys[-1]


def _min_key(node: _Node) -> int:
    while node.children is not None:
        node = node.children[0]
    return node.keys[0]


__all__ = ["GrownBTreeMap", "grow_map_from", "grow_u64_map", "mix64", "u64_square"]
