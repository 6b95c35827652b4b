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

When no changed byte touches a chunk header, an overflow-page header or a node page (the usual case:
values edited in place), both sides have the very same tree and chains. Then the chains are resolved
once, on the old side, from packed chunk-header columns (``map_chains``), every changed page gets its
owner and its place by one bisection, and only the owners are read: their keys and the length of each
value, never a value that is not listed. A value counts as changed when one of its bytes under a
changed range differs on the two sides.

``node_loads`` on the plan counts the nodes read, so tests can check that the work follows the change.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Sequence
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Protocol

from inspector.diff import map_chains
from inspector.diff.sequences import PageReleaser, _Ranges, virtual_hits
from inspector.errors import READ_ERRORS
from inspector.layouts import CHUNK_HEADER_SIZE, CHUNK_MAGIC, FIRST_CHUNK_OFFSET, NODE_MAGIC, OVERFLOW_MAGIC
from inspector.structures.base import Element, Structure
from inspector.structures.btreemap.nodes import (
    CHUNK_NODE,
    CHUNK_OVERFLOW,
    INTERNAL,
    OVERFLOW_DATA_OFFSET,
    V2_PREFIX_SIZE,
    NodeError,
    logical_ranges,
)
from inspector.structures.btreemap.structure import BTreeMapStructure
from inspector.structures.btreemap.walker import BTreeMap

if TYPE_CHECKING:
    from inspector.diff.entries import StructureDiff

Range = tuple[int, int]
MAX_DIRTY_CHUNKS = 100_000  # beyond this many changed chunks a key-order walk is the better plan
OWNER_LOOKBACK = 8192  # chunks looked back from an overflow page for its node
OWNER_CANDIDATES = 8  # nodes tried per overflow page before giving up
LOOKBACK_BATCH = 64  # chunk magics read per unpack while looking back
RELEASE_EVERY = 16  # node reads between drops of the mapped pages
RELEASE_EVERY_PAGES = 16_384  # overflow-page headers read between drops of the mapped pages
# Nodes (or listed values) read between drops of the mapped pages: each scattered read can map a whole
# large page-cache folio (~0.5 MB), and dropping the mappings costs next to nothing.
RELEASE_EVERY_SCATTERED = 8


NodeShape = map_chains.NodeShape  # a node as ``_Side.load`` holds it (values dropped: None)


class _PageChain(Protocol):
    """An overflow chain's page addresses: a list or array, or a ``map_chains.NodeChain``."""

    def __len__(self) -> int: ...

    def __getitem__(self, j: int, /) -> int: ...


class _Collector(Protocol):
    kept: dict[str, int]  # differences listed so far, per kind
    limit: int  # the most listed per kind
    head_beyond: tuple[int, int]  # (keep-whole limit, head kept) for long values

    def added(self, el: Element) -> None: ...

    def removed(self, el: Element) -> None: ...

    def changed(self, x: Element, y: Element) -> None: ...


class _Side:
    """One map's walker with a cache of the nodes this plan loaded."""

    def __init__(self, walker: BTreeMap, release: Callable[[], None]) -> None:
        self.m = walker
        self.release = release
        # Shapes only (values dropped): a map of big values must not end up held in memory.
        self.nodes: dict[int, NodeShape] = {}
        # Overflow pages of every node loaded, as runs of back-to-back pages: (first, last, node), sorted.
        self.runs: list[tuple[int, int, int]] = []
        self.loads = 0
        self.touched = 0  # chunks whose headers were read since the last release
        # Stream readers of shared-chain nodes (``NodeChain.reader``), for the listed values' heads.
        self.readers: dict[int, Callable[[int, int], bytes]] = {}

    def load(self, addr: int) -> NodeShape:
        """(version, type, k, children, keys, None, overflows, value spans) of a node, cached.

        A v2 node is read without its values: the overflow chain by its page headers only, then the
        keys and each value's length prefix through the chain. A map of big values is never held in
        memory, and a node whose values are megabytes costs a few small reads. (v1 nodes, which have
        no overflow pages, are parsed whole; their value spans are None.)
        """
        got = self.nodes.get(addr)
        if got is None:
            got = _light(self.m, addr)
            if got is None:
                full = self.load_full(addr)
                got = full[:5] + (None, full[6], None)
            else:
                self.loads += 1
                # Reading a chain's page headers maps every page it runs through: let them go.
                self.touched += 1 + len(got[6])
                if self.touched >= RELEASE_EVERY_PAGES:
                    self.touched = 0
                    self.release()
            self.nodes[addr] = got
            self._note_runs(got[6], addr)
        return got

    def _note_runs(self, chain: Sequence[int], addr: int) -> None:
        cs = self.m.chunk_size
        i = 0
        while i < len(chain):
            j = i
            while j + 1 < len(chain) and chain[j + 1] == chain[j] + cs:
                j += 1
            insort(self.runs, (chain[i], chain[j], addr))
            i = j + 1

    def owner_of(self, page: int) -> int | None:
        """The loaded node whose chain holds ``page``, if any."""
        k = bisect_right(self.runs, (page, 1 << 64, 0)) - 1
        if k >= 0:
            first, last, addr = self.runs[k]
            if first <= page <= last and (page - first) % self.m.chunk_size == 0:
                return addr
        return None

    def value(self, addr: int, slot: int, most: int | None = None) -> bytes:
        """One value's bytes (at most ``most`` of them), read through the node's chain (or the whole
        node for a v1 node)."""
        shape = self.load(addr)
        spans = shape[7]
        if spans is None:
            return bytes(self.load_full(addr)[5][slot][:most])
        start, n = spans[slot]
        n = n if most is None else min(n, most)
        chain = shape[6]
        if not isinstance(chain, map_chains.NodeChain):
            return _read_stream(self.m, addr, chain, start, n)
        return self.stream(addr, chain)(start, n)

    def stream(self, addr: int, chain: map_chains.NodeChain) -> Callable[[int, int], bytes]:
        """``read(pos, n)`` of the stream of the shared-chain node at ``addr`` on this side (kept: the plan
        reads its keys and lengths, the listing its values' heads)."""
        read = self.readers.get(addr)
        if read is None:
            slow = partial(_read_stream, self.m, addr, chain)
            read = self.readers[addr] = chain.reader(self.m.mem, self.m.page_size, slow)
        return read

    def load_full(self, addr: int) -> NodeShape:
        self.loads += 1
        if self.loads % RELEASE_EVERY == 0:
            self.release()  # big nodes map many pages: keep peak RSS flat
        return tuple(self.m._load(addr))

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
    known = side.owner_of(page)
    if known is not None:
        return known
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
        found = [j for j in range(n) if magics[j] == NODE_MAGIC] if NODE_MAGIC in magics else []
        for j in reversed(found):
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


def _chain(m: BTreeMap, first: int) -> array[int] | None:
    """The overflow chain from ``first`` by page headers only (None if anything is unusual).

    Pages the allocator handed out back to back are checked a run at a time (one unpack_from and a few
    tuple slices per run), so a chain of thousands of pages costs a handful of Python steps.
    """
    cs, page = m.chunk_size, m.page_size
    out = array("Q")  # 8 bytes a page: a map's chains together can run to a million pages
    seen: set[int] = set()
    nxt = first
    want = 8
    while nxt:
        if len(out) > m._max_chunks or nxt < FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE:
            return None
        buf, phys, avail = m.mem.contiguous(nxt - CHUNK_HEADER_SIZE)
        n = min(want, avail // cs)
        if n >= 1:
            t = _chain_struct(cs, page, n).unpack_from(buf, phys)
        else:
            try:
                t = CHUNK_OVERFLOW.unpack_from(m.mem.read(nxt - CHUNK_HEADER_SIZE, CHUNK_OVERFLOW.size))
            except READ_ERRORS:
                return None
            n = 1
        nexts = t[6::7]
        expected = range(nxt + cs, nxt + (n + 1) * cs, cs)
        run = n
        if nexts != tuple(expected):
            run = next(j for j in range(n) if nexts[j] != expected[j]) + 1
        stop = 7 * run
        if (
            t[0:stop:7].count(CHUNK_MAGIC) != run
            or t[1:stop:7].count(1) != run
            or t[2:stop:7].count(1) != run
            or t[5:stop:7].count(OVERFLOW_MAGIC) != run
        ):
            return None
        addrs = range(nxt, nxt + run * cs, cs)
        if not seen.isdisjoint(addrs):
            return None  # a loop
        seen.update(addrs)
        out.extend(addrs)
        nxt = nexts[run - 1]
        want = min(want * 2, 512) if run == n else 8
    return out


@lru_cache(maxsize=16)
def _chain_struct(chunk_size: int, page: int, n: int) -> struct.Struct:
    """``n`` overflow-page headers ``chunk_size`` apart (derived from CHUNK_OVERFLOW)."""
    one = CHUNK_OVERFLOW.format[1:]
    return struct.Struct("<" + one + f"{chunk_size - CHUNK_OVERFLOW.size}x{one}" * (n - 1))


def _read_stream(m: BTreeMap, addr: int, chain: _PageChain, pos: int, n: int) -> bytes:
    """``n`` bytes of a v2 node's logical stream from ``pos``: the node page, then each overflow
    page's data after its header (FORMAT.md §3.5)."""
    page = m.page_size
    body = page - OVERFLOW_DATA_OFFSET
    parts: list[bytes] = []
    while n > 0:
        if pos < page:
            v, room = addr + pos, page - pos
        else:
            j, off = divmod(pos - page, body)
            if j >= len(chain):
                raise NodeError("node stream runs past its overflow chain")
            v, room = chain[j] + OVERFLOW_DATA_OFFSET + off, body - off
        if n <= room and not parts:
            return m.mem.peek(v, n)  # the usual read (keys, a length prefix): one piece
        take = min(n, room)
        parts.append(m.mem.peek(v, take))
        pos += take
        n -= take
    return b"".join(parts)


def _stream_pos(m: BTreeMap, addr: int, chain_index: dict[int, int], v: int) -> int | None:
    """Where virtual byte ``v`` sits in the node's stream (None: in a chunk or overflow header)."""
    page = m.page_size
    if addr <= v < addr + page:
        return v - addr
    cs = m.chunk_size
    payload = FIRST_CHUNK_OFFSET + (v - FIRST_CHUNK_OFFSET) // cs * cs + CHUNK_HEADER_SIZE
    j = chain_index.get(payload)
    if j is None or v < payload + OVERFLOW_DATA_OFFSET:
        return None
    return page + j * (page - OVERFLOW_DATA_OFFSET) + (v - payload - OVERFLOW_DATA_OFFSET)


def _light(m: BTreeMap, addr: int) -> NodeShape | None:
    """A v2 node's shape without its values (see ``_Side.load``), or None to parse it whole."""
    if addr < FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE or (addr - FIRST_CHUNK_OFFSET - CHUNK_HEADER_SIZE) % (
        m.chunk_size
    ):
        raise NodeError("node address off the chunk grid")
    try:
        head = m.mem.peek(addr - CHUNK_HEADER_SIZE, CHUNK_NODE.size)
    except READ_ERRORS as exc:
        raise NodeError(str(exc)) from exc
    cmagic, cver, alloc, _pad, _nxt, nmagic, nver, ntype, k, ovf = CHUNK_NODE.unpack_from(head)
    if (cmagic, cver, alloc, nmagic) != (CHUNK_MAGIC, 1, 1, NODE_MAGIC) or ntype > 1 or not 1 <= k <= 11:
        raise NodeError("not a node")
    if nver != 2:
        return None
    chain = _chain(m, ovf) if ovf else array("Q")
    if chain is None:
        return None
    kfix = m._kfix
    if kfix is None:
        return None

    def rd(pos: int, n: int) -> bytes:
        return _read_stream(m, addr, chain, pos, n)

    p = V2_PREFIX_SIZE
    children: tuple[int, ...] = ()
    if ntype == INTERNAL:
        children = struct.unpack(f"<{k + 1}Q", rd(p, 8 * (k + 1)))
        p += 8 * (k + 1)
    keys: list[bytes] = []
    for _ in range(k):
        if kfix:
            n = kfix
        else:
            (n,) = _U32(rd(p, 4))
            p += 4
        keys.append(rd(p, n))
        p += n
    spans = map_chains.value_spans(rd, p, k, m.page_size, len(chain))
    return (2, ntype, k, children, keys, None, chain, spans)


_U32 = struct.Struct("<I").unpack


class MapPlan:
    """The nodes whose entries may differ (payload addresses), and how many node reads that took."""

    def __init__(
        self,
        old: _Side,
        new: _Side,
        nodes: list[int],
        hits: list[Range] | None = None,
        dirty: dict[int, list[int]] | None = None,
    ) -> None:
        self.old, self.new, self.nodes = old, new, nodes
        self.hits = hits or []  # the changed ranges as virtual ranges of the map's memory, sorted
        self.dirty = dirty or {}  # node → payload addresses of its changed chunks (page or overflow)
        # Nodes whose changed slots are already known (shared chains: see ``_shared_plan``).
        self.slots: dict[int, list[int]] = {}
        self.key_pos: dict[int, list[tuple[int, int]]] = {}  # those nodes' keys: (stream position, length)
        self.chains: map_chains.ChainIndex | None = None

    @property
    def node_loads(self) -> int:
        return self.old.loads + self.new.loads


def _map_of(s: Structure) -> BTreeMap | None:
    return s.map if isinstance(s, BTreeMapStructure) else None


def allocator_untouched(a: Structure, b: Structure, changed: _Ranges) -> bool:
    """Whether two maps in the same bytes have byte-identical allocator headers and chunk headers
    (every changed byte falls inside a chunk's payload), so their free lists and frontiers agree."""
    ma, mb = _map_of(a), _map_of(b)
    if ma is None or mb is None or not (ma.allocator_ok and mb.allocator_ok):
        return False
    cs = ma.chunk_size
    if (cs, ma.mem.size) != (mb.chunk_size, mb.mem.size) or cs <= CHUNK_HEADER_SIZE:
        return False
    hits = virtual_hits(a.mem, changed)
    return hits is not None and not map_chains.structure_hits(hits, cs, reach=CHUNK_HEADER_SIZE)


def plan(a: Structure, b: Structure, changed: _Ranges) -> MapPlan | None:
    """The changed nodes of two maps laid out in the same physical bytes, or None (see the module)."""
    ma, mb = _map_of(a), _map_of(b)
    if ma is None or mb is None:
        return None
    try:
        return _plan(ma, mb, a, b, changed)
    except (NodeError, IndexError, ValueError):
        return None


def _plan(ma: BTreeMap, mb: BTreeMap, a: Structure, b: Structure, changed: _Ranges) -> MapPlan | None:
    if not (ma.walkable and mb.walkable and ma.allocator_ok and mb.allocator_ok):
        return None
    same = (ma.root_addr, ma.chunk_size, ma.page_size, ma.mem.size)
    if same != (mb.root_addr, mb.chunk_size, mb.page_size, mb.mem.size) or not ma.root_addr:
        return None
    # Inferring the key layout reads a few whole nodes (their chains map pages all over a big memory).
    release = PageReleaser(a, b)
    layout = ma.key_layout
    release()
    if mb.key_layout != layout:
        return None
    release()
    hits = virtual_hits(a.mem, changed)
    if hits is None or (hits and hits[0][0] < FIRST_CHUNK_OFFSET):
        return None  # a header or the allocator changed: the shapes may differ
    cs = ma.chunk_size
    if not map_chains.structure_hits(hits, cs):
        shared = _shared_plan(ma, mb, a, b, hits)
        if shared is not None:
            return shared
    chunks: set[int] = set()
    for s, e in hits:
        first = (s - FIRST_CHUNK_OFFSET) // cs
        last = (e - 1 - FIRST_CHUNK_OFFSET) // cs
        chunks.update(range(first, last + 1))
        if len(chunks) > MAX_DIRTY_CHUNKS:
            return None
    release = PageReleaser(a, b)
    old, new = _Side(ma, release), _Side(mb, release)
    nodes: set[int] = set()
    dirty: dict[int, list[int]] = {}
    for n_chunk, ci in enumerate(sorted(chunks)):
        if n_chunk % 64 == 63:
            release()  # each scattered read maps a whole page-cache folio
        chunk = FIRST_CHUNK_OFFSET + ci * cs
        if chunk + CHUNK_HEADER_SIZE > ma.mem.size:
            continue
        ka, kb = old.kind(chunk), new.kind(chunk)
        if ka != kb:
            return None
        payload = chunk + CHUNK_HEADER_SIZE
        if ka == "node":
            nodes.add(payload)
            dirty.setdefault(payload, []).append(payload)
        elif ka == "overflow":
            oa, ob = _owner(old, payload), _owner(new, payload)
            if oa is None or oa != ob:
                return None
            nodes.add(oa)
            dirty.setdefault(oa, []).append(payload)
    for addr in nodes:
        ra, rb = old.reaches(addr), new.reaches(addr)
        if not (ra and rb):
            return None  # a node outside either tree (or a key order we cannot follow)
        la, lb = old.load(addr), new.load(addr)
        if la[1] != lb[1] or tuple(la[3]) != tuple(lb[3]):
            return None  # different children: the subtrees below may differ too
    return MapPlan(old, new, sorted(nodes), hits, dirty)


def _shared_plan(ma: BTreeMap, mb: BTreeMap, a: Structure, b: Structure, hits: list[Range]) -> MapPlan | None:
    """The plan when no changed byte touches a chunk header, an overflow-page header or a node page:
    both sides then have the same tree and the same chains, resolved once on the old side
    (``map_chains``). Only the nodes that own a changed page are read, and of those only the keys
    and the value lengths; a value counts as changed when a byte of it differs on the two sides."""
    release = PageReleaser(a, b)
    if ma._kfix is None:
        return None
    idx = map_chains.build(ma, release)
    if idx is None:
        return None
    cs, page = ma.chunk_size, ma.page_size
    body = page - OVERFLOW_DATA_OFFSET
    first_payload = FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE
    per_node: dict[int, list[tuple[int, int, int, int]]] = {}  # node → (stream start, end, virtual start)
    dirty: dict[int, list[int]] = {}
    for s, e in hits:
        payload = first_payload + (s - FIRST_CHUNK_OFFSET) // cs * cs
        if payload in idx.nodes:
            return None  # a node page changed: its keys or children may differ (the per-side plan)
        own = idx.owner_of(payload)
        if own is None:
            continue  # a free chunk, or a page no live chain holds: no entry reads it
        node, j = own
        pos = page + j * body + (s - payload - OVERFLOW_DATA_OFFSET)
        per_node.setdefault(node, []).append((pos, pos + e - s, s, j))
        pages = dirty.setdefault(node, [])
        if not pages or pages[-1] != payload:
            pages.append(payload)
    old, new = _Side(ma, release), _Side(mb, release)
    p = MapPlan(old, new, sorted(per_node), hits, dirty)
    p.chains = idx
    # (The node streams below are read with pread: nothing mapped to let go of on the way.)
    for node, parts in sorted(per_node.items()):
        chain = idx.chain(node)
        shape, key_pos = map_chains.node_shape(ma, idx, node, chain, old.stream(node, chain))
        old.loads += 1
        slots = _value_slots(ma, mb, shape[7], parts)
        if slots is None:
            continue  # a key or a length changed: the node is compared whole (``diff_by_nodes``)
        old.nodes[node] = new.nodes[node] = shape
        p.slots[node] = slots
        p.key_pos[node] = key_pos
    release()
    return p


def _value_slots(
    ma: BTreeMap, mb: BTreeMap, spans: list[tuple[int, int]], parts: list[tuple[int, int, int, int]]
) -> list[int] | None:
    """The slots whose value bytes differ under the changed stream ranges ``parts``; None if a change
    falls on a key, a length prefix or the node's own fields (then the node is compared whole)."""
    starts = [vs for vs, _n in spans]
    end = spans[-1][0] + spans[-1][1] if spans else 0
    out: set[int] = set()
    for ps, pe, v, _j in parts:
        if ps >= end:
            continue  # stale bytes past the node's stream
        i = bisect_right(starts, ps) - 1
        if i < 0 or pe > end:
            return None
        vs, n = spans[i]
        if pe > vs + n:
            return None  # runs over into the next value's length prefix
        if ps < vs:
            return None
        if ma.mem.peek(v, pe - ps) != mb.mem.peek(v, pe - ps):
            out.add(i)
    return sorted(out)


def _element(key: bytes, value: bytes, addr: int, slot: int) -> Element:
    # The entry's rank in the map is not known without a walk: by-node diffs list no index.
    return Element(-1, value, key, source=f"node {addr:#x}", node_addr=addr, slot=slot)


Ref = tuple[int, int]  # (node address, slot)


def _sorted_refs(
    side: _Side, nodes: list[int], held: dict[int, NodeShape]
) -> list[tuple[bytes, bytes, int, int]]:
    out: list[tuple[bytes, bytes, int, int]] = []
    for addr in nodes:
        keys, values = held[addr][4:6]
        out.extend((k, v, addr, i) for i, (k, v) in enumerate(zip(keys, values, strict=True)))
    out.sort()
    for x, y in zip(out, out[1:], strict=False):
        if x[0] == y[0]:
            raise NodeError("a key held by two nodes")
    return out


def _changed_slots(p: MapPlan, addr: int) -> list[int] | None:
    """The slots of a node whose values hold a changed byte, when the node has the same shape on both
    sides (type, keys, children, overflow chain and every value's place); None otherwise.

    With equal shapes, a changed byte inside a value's bytes means that value differs, and a changed
    byte anywhere else (stale bytes past the stream's end) changes no entry: no value is read.
    """
    known = p.slots.get(addr)
    if known is not None:
        return known
    a, b = p.old.load(addr), p.new.load(addr)
    if a[7] is None or a[1:5] != b[1:5] or a[6] != b[6] or a[7] != b[7]:
        return None
    m = p.old.m
    page = m.page_size
    index = {o: j for j, o in enumerate(a[6])}
    starts = [vs for vs, _n in a[7]]
    slots: set[int] = set()
    for payload in p.dirty.get(addr, ()):
        lo = bisect_left(p.hits, (payload,)) - 1
        for hs, he in p.hits[max(0, lo) :]:
            if hs >= payload + page:
                break
            s, e = max(hs, payload), min(he, payload + page)
            if s >= e:
                continue
            ps, pe = _stream_pos(m, addr, index, s), _stream_pos(m, addr, index, e - 1)
            if ps is None or pe is None:
                return None  # an overflow page's own header changed
            i = max(0, bisect_left(starts, ps + 1) - 1)
            while i < len(starts) and starts[i] <= pe:
                vs, n = a[7][i]
                if vs < pe + 1 and ps < vs + n:
                    slots.add(i)
                i += 1
    return sorted(slots)


def diff_by_nodes(
    d: StructureDiff, a: Structure, b: Structure, p: MapPlan, c: _Collector, check: Callable[[int], None]
) -> bool:
    """Fill ``d`` (a ``StructureDiff``) from the changed nodes only; False if the plan does not hold.

    A node whose keys are the same on both sides (a value changed in place, the usual case) is compared
    slot by slot and let go; only nodes whose keys differ keep their entries for a merge by key. The
    differences are then listed in key order, re-reading the few nodes whose values are listed.
    """
    release = PageReleaser(a, b)
    ops: list[tuple[bytes, str, Ref | None, Ref | None]] = []
    held_old: dict[int, NodeShape] = {}
    held_new: dict[int, NodeShape] = {}
    try:
        for n, addr in enumerate(p.nodes):
            if n % 64 == 63:
                check(n)
                release()
            slots = _changed_slots(p, addr)
            if slots is not None:
                key_list = p.old.load(addr)[4]
                ops.extend((key_list[i], "changed", (addr, i), (addr, i)) for i in slots)
                continue
            x, y = p.old.load_full(addr), p.new.load_full(addr)
            if x[4] == y[4]:
                for i, (vx, vy) in enumerate(zip(x[5], y[5], strict=True)):
                    if vx != vy:
                        ops.append((x[4][i], "changed", (addr, i), (addr, i)))
            else:
                held_old[addr], held_new[addr] = x, y
        xs = _sorted_refs(p.old, list(held_old), held_old)
        ys = _sorted_refs(p.new, list(held_new), held_new)
    except NodeError:
        return False
    finally:
        release()
    i = j = 0
    while i < len(xs) and j < len(ys):
        kx, ky = xs[i][0], ys[j][0]
        if kx == ky:
            if xs[i][1] != ys[j][1]:
                ops.append((kx, "changed", xs[i][2:4], ys[j][2:4]))  # type: ignore[arg-type]
            i += 1
            j += 1
        elif kx < ky:
            ops.append((kx, "removed", xs[i][2:4], None))  # type: ignore[arg-type]
            i += 1
        else:
            ops.append((ky, "added", None, ys[j][2:4]))  # type: ignore[arg-type]
            j += 1
    ops.extend((x[0], "removed", (x[2], x[3]), None) for x in xs[i:])
    ops.extend((y[0], "added", None, (y[2], y[3])) for y in ys[j:])
    ops.sort(key=lambda o: o[0])
    d.method = "by changed nodes"
    _list(ops, p, c)
    d.unchanged = max(0, (d.old_count or 0) - d.removed - d.changed)
    for it in d.items:
        it.index = None
    return True


def _list(ops: list[tuple[bytes, str, Ref | None, Ref | None]], p: MapPlan, c: _Collector) -> None:
    """Feed the differences to the collector in key order; values are read only for the listed ones."""

    def el(side: _Side, which: int, key: bytes, ref: Ref | None, wanted: bool) -> Element:
        assert ref is not None
        if not wanted:
            return _element(key, b"", *ref)
        addr, slot = ref
        where = p.key_pos.get(addr)
        if where is None:
            return _element(key, side.value(*ref), *ref)
        n = side.load(addr)[7][slot][1]
        head = c.head_beyond  # (keep-whole limit, head kept) of the collector
        if n > head[0]:
            # Only the head of a long value is kept: read no more than that (values can be megabytes).
            got = _element(key, side.value(addr, slot, head[1]), *ref)
            got.value_len = n
        else:
            got = _element(key, side.value(*ref), *ref)
        # A node of the shared-chain plan: its key and value spans come from its chain, so the
        # listing does not read the node again to find them.
        shape = side.load(addr)
        page = side.m.page_size
        spans = map_chains.chain_ranges if isinstance(shape[6], map_chains.NodeChain) else logical_ranges
        got.key_spans = spans(addr, shape[6], page, *where[slot])
        got.value_spans = spans(addr, shape[6], page, *shape[7][slot])
        return got

    release = PageReleaser(p.old.m, p.new.m)
    for n, (key, op, ro, rn) in enumerate(ops):
        room = c.kept[op] < c.limit
        if room and n % RELEASE_EVERY_SCATTERED == RELEASE_EVERY_SCATTERED - 1:
            release()
        if op == "changed":
            c.changed(el(p.old, 0, key, ro, room), el(p.new, 1, key, rn, room))
        elif op == "removed":
            c.removed(el(p.old, 0, key, ro, room))
        else:
            c.added(el(p.new, 1, key, rn, room))
