"""Entry-level diff of two B-tree maps by their changed nodes: cost proportional to the change.

When a map occupies the same physical bytes on both sides and its headers did not change, every chunk
that no changed range touches is byte-identical on both sides. Only the nodes that own a changed chunk
can hold different entries, provided the two trees still have the same shape:

* a changed chunk is a node page on both sides, or an overflow page on both sides (its owning node is
  found by looking back for the node whose chain holds it), or free or unrecognised on both sides
  (then it belongs to no reachable node);
* every such node is reachable on both sides (found by descending from the shared root by its first
  key) and has the same children on both sides.

Then, by induction from the root, both trees reach the same nodes, the untouched ones hold the same
entries, and a key held by an untouched node is held by no other node. So the diff is the merge of the
changed nodes' entries, sorted by key, on each side. Anything that breaks these conditions (a split,
a merge, a changed header, keys that are not in byte order, an owner not found) returns ``None`` and
the caller falls back to walking both maps in key order together.

``node_loads`` on the plan counts the nodes read, so tests can check that the work follows the change.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

from inspector.diff_sequences import PageReleaser, _Ranges, virtual_hits
from inspector.layouts import CHUNK_HEADER_SIZE, CHUNK_MAGIC, FIRST_CHUNK_OFFSET, NODE_MAGIC
from inspector.structures.base import Element
from inspector.structures.btreemap_nodes import INTERNAL, NodeError

Range = tuple[int, int]
MAX_DIRTY_CHUNKS = 100_000  # beyond this many changed chunks a key-order walk is the better plan
OWNER_LOOKBACK = 8192  # chunks looked back from an overflow page for its node
OWNER_CANDIDATES = 8  # nodes tried per overflow page before giving up
LOOKBACK_BATCH = 64  # chunk magics read per unpack while looking back


class _Collector(Protocol):
    def added(self, el: Element) -> None: ...

    def removed(self, el: Element) -> None: ...

    def changed(self, x: Element, y: Element) -> None: ...


class _Side:
    """One map's walker with a cache of the nodes this plan loaded."""

    def __init__(self, walker: Any) -> None:
        self.m = walker
        self.nodes: dict[int, tuple[Any, ...]] = {}
        self.loads = 0

    def load(self, addr: int) -> tuple[Any, ...]:
        got = self.nodes.get(addr)
        if got is None:
            self.loads += 1
            got = self.nodes[addr] = self.m._load(addr)
        return got

    def kind(self, chunk: int) -> str:
        """'node', 'overflow', 'free' or 'other' for the chunk whose header is at ``chunk``."""
        hdr = self.m._chunk_header(chunk)
        if hdr is None:
            return "other"
        magic, version, allocated, _next = hdr
        if (magic, version) != (CHUNK_MAGIC, 1):
            return "other"
        if allocated != 1:
            return "free"
        payload = self.m._payload_kind(chunk + CHUNK_HEADER_SIZE)
        return {"BTN": "node", "NOF": "overflow"}.get(payload, "other")

    def reaches(self, target: int) -> bool:
        """Whether descending from the root by the target node's first key arrives at it."""
        first = self.load(target)[4][0]
        addr = self.m.root_addr
        for _ in range(64):  # deeper than any real tree: a cycle ends the search
            if addr == target:
                return True
            _v, ntype, _k, children, keys = self.load(addr)[:5]
            if any(not x < y for x, y in zip(keys, keys[1:], strict=False)):
                raise NodeError("keys are not in byte order")
            i = bisect_left(keys, first)
            if i < len(keys) and keys[i] == first:
                return False  # the key lives in another node: the target is not in the tree
            if ntype != INTERNAL:
                return False
            addr = children[i]
        return False


@lru_cache(maxsize=16)
def _magics_struct(chunk_size: int, n: int) -> struct.Struct:
    """The payload magic of ``n`` consecutive chunks (derived from the chunk header's size)."""
    one = f"{CHUNK_HEADER_SIZE}x3s{chunk_size - CHUNK_HEADER_SIZE - 3}x"
    return struct.Struct("<" + one * n)


def _owner(side: _Side, page: int) -> int | None:
    """The node whose overflow chain holds the overflow page at ``page`` (payload address), or None.

    The allocator hands out a node's overflow pages when the node is saved, so its owner is usually the
    nearest node page before it; a few earlier nodes are tried too.
    """
    m = side.m
    cs = m.chunk_size
    chunk = page - CHUNK_HEADER_SIZE
    tried = 0
    looked = 0
    while chunk > FIRST_CHUNK_OFFSET and looked < OWNER_LOOKBACK and tried < OWNER_CANDIDATES:
        n = min(LOOKBACK_BATCH, (chunk - FIRST_CHUNK_OFFSET) // cs)
        start = chunk - n * cs
        buf, phys, avail = m.mem.contiguous(start)
        if avail >= n * cs:
            magics = _magics_struct(cs, n).unpack_from(buf, phys)
        else:
            magics = tuple(
                NODE_MAGIC if m._payload_kind(start + j * cs + CHUNK_HEADER_SIZE) == "BTN" else b""
                for j in range(n)
            )
        for j in range(n - 1, -1, -1):
            if magics[j] != NODE_MAGIC:
                continue
            addr = start + j * cs + CHUNK_HEADER_SIZE
            tried += 1
            try:
                overflows = side.load(addr)[6]
            except NodeError:
                continue
            if page in overflows:
                return addr
            if tried >= OWNER_CANDIDATES:
                break
        looked += n
        chunk = start
    return None


class MapPlan:
    """The nodes whose entries may differ (payload addresses), and how many node reads that took."""

    def __init__(self, old: _Side, new: _Side, nodes: list[int]) -> None:
        self.old, self.new, self.nodes = old, new, nodes

    @property
    def node_loads(self) -> int:
        return self.old.loads + self.new.loads


def plan(a: Any, b: Any, changed: _Ranges) -> MapPlan | None:
    """The changed nodes of two maps laid out in the same physical bytes, or None (see the module)."""
    ma, mb = getattr(a, "map", None), getattr(b, "map", None)
    if ma is None or mb is None or not hasattr(ma, "_load") or not hasattr(mb, "_load"):
        return None
    try:
        return _plan(ma, mb, a, changed)
    except (NodeError, IndexError, ValueError):
        return None


def _plan(ma: Any, mb: Any, a: Any, changed: _Ranges) -> MapPlan | None:
    if not (ma.walkable and mb.walkable and ma.allocator_ok and mb.allocator_ok):
        return None
    same = (ma.root_addr, ma.chunk_size, ma.page_size, ma.mem.size, ma.key_layout)
    if same != (mb.root_addr, mb.chunk_size, mb.page_size, mb.mem.size, mb.key_layout) or not ma.root_addr:
        return None
    hits = virtual_hits(a.mem, changed)
    if hits is None or (hits and hits[0][0] < FIRST_CHUNK_OFFSET):
        return None  # a header or the allocator changed: the shapes may differ
    cs = ma.chunk_size
    chunks: set[int] = set()
    for s, e in hits:
        first = (s - FIRST_CHUNK_OFFSET) // cs
        last = (e - 1 - FIRST_CHUNK_OFFSET) // cs
        chunks.update(range(first, last + 1))
        if len(chunks) > MAX_DIRTY_CHUNKS:
            return None
    old, new = _Side(ma), _Side(mb)
    nodes: set[int] = set()
    for ci in sorted(chunks):
        chunk = FIRST_CHUNK_OFFSET + ci * cs
        if chunk + CHUNK_HEADER_SIZE > ma.mem.size:
            continue
        ka, kb = old.kind(chunk), new.kind(chunk)
        if ka != kb:
            return None
        payload = chunk + CHUNK_HEADER_SIZE
        if ka == "node":
            nodes.add(payload)
        elif ka == "overflow":
            oa, ob = _owner(old, payload), _owner(new, payload)
            if oa is None or oa != ob:
                return None
            nodes.add(oa)
    for addr in nodes:
        ra, rb = old.reaches(addr), new.reaches(addr)
        if not (ra and rb):
            return None  # a node outside either tree (or a key order we cannot follow)
        la, lb = old.load(addr), new.load(addr)
        if la[1] != lb[1] or tuple(la[3]) != tuple(lb[3]):
            return None  # different children: the subtrees below may differ too
    return MapPlan(old, new, sorted(nodes))


def _entries(side: _Side, nodes: list[int]) -> list[tuple[bytes, bytes, int, int]]:
    out: list[tuple[bytes, bytes, int, int]] = []
    for addr in nodes:
        keys, values = side.load(addr)[4:6]
        out.extend((k, v, addr, i) for i, (k, v) in enumerate(zip(keys, values, strict=True)))
    out.sort()
    for x, y in zip(out, out[1:], strict=False):
        if x[0] == y[0]:
            raise NodeError("a key held by two nodes")
    return out


def _element(e: tuple[bytes, bytes, int, int]) -> Element:
    key, value, addr, slot = e
    # The entry's rank in the map is not known without a walk: by-node diffs list no index.
    return Element(-1, value, key, source=f"node {addr:#x}", node_addr=addr, slot=slot)


def diff_by_nodes(d: Any, a: Any, b: Any, p: MapPlan, c: _Collector, check: Callable[[int], None]) -> bool:
    """Fill ``d`` (a ``StructureDiff``) from the changed nodes only; False if the plan does not hold."""
    release = PageReleaser(a, b)
    try:
        xs, ys = _entries(p.old, p.nodes), _entries(p.new, p.nodes)
    except NodeError:
        return False
    finally:
        release()
    d.method = "by changed nodes"
    i = j = n = 0
    while i < len(xs) and j < len(ys):
        n += 1
        if n % 8192 == 0:
            check(n)
        x, y = xs[i], ys[j]
        if x[0] == y[0]:
            if x[1] != y[1]:
                c.changed(_element(x), _element(y))
            i += 1
            j += 1
        elif x[0] < y[0]:
            c.removed(_element(x))
            i += 1
        else:
            c.added(_element(y))
            j += 1
    for x in xs[i:]:
        c.removed(_element(x))
    for y in ys[j:]:
        c.added(_element(y))
    d.unchanged = max(0, (d.old_count or 0) - d.removed - d.changed)
    for it in d.items:
        it.index = None
    return True
