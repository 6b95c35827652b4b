"""The validated full walk: the tree's invariants, the allocator's accounting and unreachable nodes,
as findings with physical ranges.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from operator import lt
from typing import TYPE_CHECKING, Any

from inspector.layouts import (
    CHUNK_HEADER,
    CHUNK_HEADER_SIZE,
    CHUNK_MAGIC,
    FIRST_CHUNK_OFFSET,
    B,
    ChunkHeader,
    field_spans,
)
from inspector.mapped_pages import page_releaser
from inspector.memory import OutOfBounds
from inspector.model import Finding
from inspector.slow_progress import note
from inspector.structures.btreemap.headers import (
    MAX_FINDINGS_PER_CODE,
    MAX_LISTED_ADDRESSES,
    KeyLayout,
    Range,
)
from inspector.structures.btreemap.iteration import _Iteration
from inspector.structures.btreemap.nodes import (
    BE32,
    INTERNAL,
    Node,
    NodeError,
)
from inspector.structures.chunk_set import FIRST_PAYLOAD, ChunkSet

if TYPE_CHECKING:
    from inspector.structures.btreemap.vector_walk import VectorWalk


@dataclass
class WalkResult:
    nodes: dict[str, int]
    entry_count: int
    entries_sha256: str
    findings: list[Finding]
    key_layout: KeyLayout
    reachable_chunks: int = 0  # nodes + overflow pages reached from the root
    allocated_chunks_scanned: int = 0  # allocated chunks below the frontier (linear scan)
    leaked_overflow_pages: list[int] = field(default_factory=list)  # payload addresses
    unreached_allocated: list[int] = field(default_factory=list)  # other allocated, unreached payloads


class _Sink:
    """Collects findings with a per-code cap so a shredded map cannot produce millions of them."""

    def __init__(self, memory_id: int | str | None) -> None:
        self.memory_id = memory_id
        self.findings: list[Finding] = []
        self._counts: dict[str, int] = {}
        self._severity: dict[str, str] = {}

    def add(
        self,
        severity: str,
        code: str,
        message: str,
        ranges: list[Range] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        n = self._counts.get(code, 0) + 1
        self._counts[code] = n
        self._severity.setdefault(code, severity)
        if n <= MAX_FINDINGS_PER_CODE:
            self.findings.append(
                Finding(severity, code, message, ranges or [], self.memory_id, details or {})
            )

    def finish(self) -> list[Finding]:
        for code, n in self._counts.items():
            if n > MAX_FINDINGS_PER_CODE:
                extra = n - MAX_FINDINGS_PER_CODE
                self.findings.append(
                    Finding(
                        self._severity[code],
                        code,
                        f"{extra} more '{code}' findings not listed individually",
                        [],
                        self.memory_id,
                        {"suppressed": extra, "total": n},
                    )
                )
        return self.findings


RELEASE_MIN_BYTES = 256 << 20  # snapshots smaller than this are not unmapped as walks go


OVERFLOW_TOUCHES_PER_RELEASE = 256
RELEASE_EVERY_BYTES = 32 << 20  # chunks' worth of bytes read between two releases


class _Releaser:
    """Calls the page releaser every ``every`` chunks (``pages``) or on demand (``()``)."""

    __slots__ = ("fn", "size", "every", "count")

    def __init__(self, fn: Any, size: int, every: int) -> None:
        self.fn, self.size, self.every, self.count = fn, size, every, 0

    def pages(self, n: int) -> None:
        self.count += n
        if self.count >= self.every:
            self()

    def __call__(self) -> None:
        if self.fn is not None:
            self.count = 0
            self.fn(0, self.size)


_SCAN_BATCH = 1024  # chunk headers per unpack in the allocator scan


@lru_cache(maxsize=16)
def _header_scan_struct(chunk_size: int, n: int) -> struct.Struct:
    """(magic, version, allocated) of ``n`` chunk headers ``chunk_size`` apart, from CHUNK_HEADER's
    leading fields (derived from the declaration, not re-typed)."""
    head = CHUNK_HEADER.format[1:5]  # "3sBB": magic, version, allocated
    width = struct.calcsize("<" + head)
    if width != field_spans(ChunkHeader)[3].offset:  # the padding field follows the three we read
        raise AssertionError(f"chunk header format {CHUNK_HEADER.format} does not start with {head}")
    return struct.Struct("<" + head + f"{chunk_size - width}x{head}" * (n - 1))


class _Walk(_Iteration):
    """The validated full walk: the tree's invariants, the allocator's accounting and unreachable nodes,
    as findings with physical ranges."""

    # --- validated walk ----------------------------------------------------------------------------------

    def _phys(self, start: int, n: int) -> list[Range]:
        start = max(0, start)
        end = min(self._size, start + n)
        if end <= start:
            return []
        try:
            return self.mem.physical_ranges(start, end - start)
        except OutOfBounds:
            return []

    def physical_span(self, start: int, n: int) -> list[Range]:
        """Physical ranges of memory bytes [start, start+n), clipped to the memory; never raises."""
        return self._phys(start, n)

    def header_findings(self) -> list[Finding]:
        """Findings about the BTR/BTA headers alone (known at construction, no walk needed)."""
        return [
            Finding(severity, code, message, self._phys(s, e - s), self.memory_id, details)
            for severity, code, message, (s, e), details in self._header_findings
        ]

    def physical_ranges(self, ranges: list[Range]) -> list[Range]:
        """Physical ranges of memory ranges (e.g. ``NodeEntry.value_ranges``), for the hex view."""
        out: list[Range] = []
        for s, e in ranges:
            out.extend(self._phys(s, e - s))
        return out

    def _node_span(self, addr: int) -> list[Range]:
        return self._phys(addr - CHUNK_HEADER_SIZE, CHUNK_HEADER_SIZE + self.page_size)

    def walk(self) -> WalkResult:
        """Full validated walk (cached). Never raises on bad bytes: problems become findings."""
        if self._walk_result is not None:
            return self._walk_result
        sink = _Sink(self.memory_id)
        for severity, code, message, (s, e), details in self._header_findings:
            sink.add(severity, code, message, self._phys(s, e - s), details)
        stats = {
            "count": 0,
            "leaf_count": 0,
            "internal_count": 0,
            "v1_node_count": 0,
            "v2_node_count": 0,
            "overflow_page_count": 0,
            "depth": 0,
        }
        h = hashlib.sha256()
        visited = self.empty_chunk_set()
        count = 0
        if self.walkable and self.root_addr:
            from inspector import walk_prefetch

            # The walk a child ran while this process loaded (``summary --deep``), else the vectorised
            # walk here. (Imported only then: numpy costs ~0.1 s to import.)
            got = walk_prefetch.adopt(self, visited)
            fast: VectorWalk | walk_prefetch.WalkFigures | None = None  # (GAVE_UP: the validated walk)
            if isinstance(got, walk_prefetch.WalkFigures):
                fast = got
            elif got is None:
                from inspector.structures.btreemap.vector_walk import vector_walk

                fast = vector_walk(self, visited)
            if fast is not None:
                h, count = fast.sha256, fast.count
                stats.update(
                    count=fast.nodes,
                    leaf_count=fast.leaves,
                    internal_count=fast.nodes - fast.leaves,
                    v2_node_count=fast.nodes,
                    overflow_page_count=fast.overflow_pages,
                    depth=fast.depth,
                )
            else:
                # Not a map the columns confirm (or not healthy): the validated walk, from scratch,
                # names whatever is wrong.
                visited = self.empty_chunk_set()
                count = self._walk_tree(sink, stats, h, visited)
        elif self.walkable and self.length:
            sink.add(
                "error",
                "btree_length_mismatch",
                f"empty map (root 0) with length {self.length}",
                self._phys(0, 28),
            )
        if self.walkable and count != self.length:
            sink.add(
                "error",
                "btree_length_mismatch",
                f"header length {self.length} but {count} entries are reachable from the root",
                self._phys(20, 8),
                {"header_length": self.length, "reachable_entries": count},
            )
        self._reached = visited
        result = WalkResult(
            nodes=stats,
            entry_count=count,
            entries_sha256=h.hexdigest(),
            findings=[],
            key_layout=self.key_layout,
            reachable_chunks=stats["count"] + stats["overflow_page_count"],
        )
        if self.allocator_ok:
            note(f"checking the allocator of {self.mem.label}")
            self._check_allocator(sink, result, visited)
        note("")
        result.findings = sink.finish()
        self._walk_result = result
        return result

    def _walk_tree(self, sink: _Sink, stats: dict[str, int], h: Any, visited: ChunkSet) -> int:
        """The hot loop: in-order traversal with an explicit stack, hashing entries as it goes."""
        load = self._load
        # Visited nodes and overflow pages: one byte per chunk (see chunk_set), indexed inline here.
        bits = visited.bits
        nbits = len(bits)
        cs = visited.chunk_size
        other = visited.other
        upd = h.update
        release = self._page_releaser()
        # Nodes read with pread map nothing; their overflow pages are still read through the mapping,
        # each from a scattered place: let go after every OVERFLOW_TOUCHES_PER_RELEASE of them.
        touch = release.every // OVERFLOW_TOUCHES_PER_RELEASE + 1 if self._pread is not None else 0
        be_cache: dict[int, bytes] = {}
        stack: list[list[Any]] = []
        # None, not 0, means "nothing to descend into": a child address of 0 is corruption to report.
        pending: int | None = self.root_addr
        pdepth = 0
        leaf_depth = -1
        last: bytes | None = None
        order_bad = 0
        order_first: list[int] = []
        n_nodes = n_leaf = n_v1 = n_ovf = 0
        max_depth = 0
        count = 0
        underfull: list[int] = []
        while True:
            while pending is not None:
                addr = pending
                depth = pdepth
                pending = None
                i, r = divmod(addr - FIRST_PAYLOAD, cs)
                if not r and 0 <= i < nbits:
                    seen = bits[i]
                    bits[i] = 1
                else:
                    seen = addr in other
                    other.add(addr)
                if seen:
                    sink.add(
                        "error",
                        "btree_cycle",
                        f"node {addr:#x} is reached twice (cycle or shared subtree)",
                        self._node_span(addr),
                        {"addr": addr},
                    )
                    break
                try:
                    _ver, ntype, k, children, keys, values, ovfs, _n, klen, vlen, slots = load(addr)
                except NodeError as e:
                    sink.add("error", e.code, str(e), self._node_span(addr), {"addr": addr, "depth": depth})
                    break
                n_nodes += 1
                if not n_nodes & 4095:
                    note(f"walking {self.mem.label}: entries", count, self.length or None)
                    release.pages(4096)
                if _ver == 1:
                    n_v1 += 1
                    if slots:
                        sink.add(
                            "error",
                            "v1_slot_overflow",
                            f"v1 node {addr:#x}: entries {list(slots)} are longer than their slots "
                            f"(max key {self.max_key_size}, max value {self.max_value_size}); their bytes "
                            "overlap the following entries",
                            self._node_span(addr),
                            {
                                "addr": addr,
                                "entries": list(slots),
                                "lengths": [(len(keys[i]), len(values[i])) for i in slots],
                            },
                        )
                if ovfs:
                    if len(ovfs) > 64:
                        release.pages(len(ovfs))
                    elif touch:
                        release.pages(touch)
                    for o in ovfs:
                        if o in visited:
                            sink.add(
                                "error",
                                "btree_cycle",
                                f"overflow page {o:#x} of node {addr:#x} is also used elsewhere",
                                self._node_span(o),
                                {"addr": addr, "overflow": o},
                            )
                        else:
                            visited.add(o)
                            n_ovf += 1
                if depth and k < B - 1:
                    underfull.append(addr)
                if ntype == INTERNAL:
                    stack.append([children, keys, values, 0, depth])
                    pending = children[0]
                    pdepth = depth + 1
                    continue
                n_leaf += 1
                if depth != leaf_depth:
                    if leaf_depth < 0:
                        leaf_depth = depth
                    else:
                        sink.add(
                            "error",
                            "btree_node_invalid",
                            f"leaf {addr:#x} is at depth {depth}, other leaves at {leaf_depth}",
                            self._node_span(addr),
                            {"addr": addr, "depth": depth, "expected_depth": leaf_depth},
                        )
                if depth > max_depth:
                    max_depth = depth
                if (last is not None and not last < keys[0]) or (k > 1 and not all(map(lt, keys, keys[1:]))):
                    order_bad += 1
                    if len(order_first) < MAX_LISTED_ADDRESSES:
                        order_first.append(addr)
                last = keys[-1]
                kp = be_cache.get(klen) if klen >= 0 else None
                if kp is None and klen >= 0:
                    kp = be_cache[klen] = BE32(klen)
                vp = be_cache.get(vlen) if vlen >= 0 else None
                if vp is None and vlen >= 0:
                    vp = be_cache[vlen] = BE32(vlen)
                parts: list[bytes] = [b""] * (4 * k)
                parts[0::4] = [kp] * k if kp is not None else list(map(BE32, map(len, keys)))
                parts[1::4] = keys
                parts[2::4] = [vp] * k if vp is not None else list(map(BE32, map(len, values)))
                parts[3::4] = values
                upd(b"".join(parts))
                count += k
            if not stack:
                break
            frame = stack[-1]
            j = frame[3]
            fkeys = frame[1]
            if j < len(fkeys):
                key = fkeys[j]
                value = frame[2][j]
                if last is not None and not last < key:
                    order_bad += 1
                    if len(order_first) < MAX_LISTED_ADDRESSES:
                        order_first.append(-1)
                last = key
                upd(BE32(len(key)) + key + BE32(len(value)) + value)
                count += 1
                frame[3] = j + 1
                pending = frame[0][j + 1]
                pdepth = frame[4] + 1
            else:
                stack.pop()

        stats["count"] = n_nodes
        stats["leaf_count"] = n_leaf
        stats["internal_count"] = n_nodes - n_leaf
        stats["v1_node_count"] = n_v1
        stats["v2_node_count"] = n_nodes - n_v1
        stats["overflow_page_count"] = n_ovf
        stats["depth"] = max_depth + 1 if n_leaf else 0
        if order_bad:
            leaves = [a for a in order_first if a >= 0]
            sink.add(
                "warning",
                "btree_key_order",
                f"{order_bad} places where keys are not strictly increasing in byte order (expected for "
                "types whose order is not byte order: floats, Reverse<T>, padded tuples, custom Ord)",
                self._node_span(leaves[0]) if leaves else [],
                {"violations": order_bad, "leaf_addrs": leaves},
            )
        if underfull:
            sink.add(
                "warning",
                "btree_node_invalid",
                f"{len(underfull)} non-root nodes hold fewer than {B - 1} entries",
                self._node_span(underfull[0]),
                {"addrs": underfull[:MAX_LISTED_ADDRESSES]},
            )
        return count

    def _scan_headers_fast(
        self, buf: Any, phys: int, addr: int, run: int, reached: ChunkSet, unreached: list[int]
    ) -> int | None:
        """Allocated-chunk count of ``run`` back-to-back chunk headers, unpacked a batch at a time; None
        when one of them is not a valid "CHK" v1 header (the caller's loop then names it)."""
        cs = self._cs
        allocated = 0
        for b0 in range(0, run, _SCAN_BATCH):
            n = min(_SCAN_BATCH, run - b0)
            t = _header_scan_struct(cs, n).unpack_from(buf, phys + b0 * cs)
            if t[0::3].count(CHUNK_MAGIC) != n or t[1::3].count(1) != n:
                return None
            flags = t[2::3]
            k = flags.count(1)
            allocated += k
            if k:
                unreached.extend(reached.absent((addr + b0 * cs - FIRST_CHUNK_OFFSET) // cs, flags))
        return allocated

    def _page_releaser(self) -> _Releaser:
        """Drops this process's mapping of a big snapshot as a walk goes, so peak RSS stays flat.

        A read through the mmap maps whole page-cache folios into the process; over a walk of an 800 MB
        map that is 800 MB of RSS. ``madvise(MADV_DONTNEED)`` on the read-only mapping only unmaps them
        (the page cache keeps the data). Snapshots under ``RELEASE_MIN_BYTES`` are left alone.
        """
        phys = getattr(self.mem, "phys", self.mem)
        buf, size = getattr(phys, "buf", None), int(getattr(phys, "size", 0))
        if buf is None or size < RELEASE_MIN_BYTES or self._cs <= 0:
            return _Releaser(None, 0, 1 << 62)
        return _Releaser(page_releaser(buf), size, max(1, RELEASE_EVERY_BYTES // self._cs))

    def _check_allocator(self, sink: _Sink, result: WalkResult, reached: ChunkSet) -> None:
        chain, problems, frontier = self._free_list()
        head_span = self._phys(76, 8)
        for kind, message, addr, details in problems:
            span = self._phys(addr, CHUNK_HEADER_SIZE) if addr is not None else head_span
            sink.add(
                "error",
                "allocator_free_list_broken",
                message,
                span or head_span,
                {"problem": kind, **details},
            )
        if frontier < 0:
            sink.add(
                "error", "allocator_free_list_broken", "no valid chunk header at 100", self._phys(100, 16)
            )
            return
        # Linear scan of the chunk headers below the frontier.
        allocated = 0
        free = 0
        bad: list[int] = []
        unreached: list[int] = []
        addr = FIRST_CHUNK_OFFSET
        cs = self._cs
        contig = self._contig
        unpack = CHUNK_HEADER.unpack_from
        release = self._page_releaser()
        while addr < frontier:
            buf, phys, avail = contig(addr)
            if avail >= CHUNK_HEADER_SIZE:
                # Every header wholly inside this contiguous run (up to a bucket's end) is unpacked
                # without another address lookup: one lookup per bucket instead of one per chunk.
                run = min((avail - CHUNK_HEADER_SIZE) // cs + 1, -(-(frontier - addr) // cs), release.every)
                done = self._scan_headers_fast(buf, phys, addr, run, reached, unreached)
                release.pages(run)  # after the scan: what it mapped is let go
                if done is not None:
                    allocated += done
                    free += run - done
                    addr += run * cs
                    continue
                headers = map(unpack, repeat(buf, run), range(phys, phys + run * cs, cs))
                addrs = range(addr, addr + run * cs, cs)
                for a, (magic, version, alloc, _pad, _nxt) in zip(addrs, headers, strict=True):
                    if magic != CHUNK_MAGIC or version != 1:
                        bad.append(a)
                    elif alloc == 1:
                        allocated += 1
                        if a + CHUNK_HEADER_SIZE not in reached:
                            unreached.append(a + CHUNK_HEADER_SIZE)
                    else:
                        free += 1
                addr += run * cs
                continue
            # A header cut by a bucket boundary.
            hdr = self._chunk_header(addr)
            if hdr is None:
                bad.append(addr)
                break
            magic, version, alloc, _nxt = hdr
            if magic != CHUNK_MAGIC or version != 1:
                bad.append(addr)
            elif alloc == 1:
                allocated += 1
                if addr + CHUNK_HEADER_SIZE not in reached:
                    unreached.append(addr + CHUNK_HEADER_SIZE)
            else:
                free += 1
            addr += cs
        result.allocated_chunks_scanned = allocated
        if bad:
            sink.add(
                "error",
                "allocator_chunk_invalid",
                f"{len(bad)} chunk headers below the frontier are not 'CHK' v1 (first at {bad[0]:#x}); "
                "at bucket boundaries this is the signature of scrambled buckets",
                self._phys(bad[0], CHUNK_HEADER_SIZE),
                {"addrs": bad[:MAX_LISTED_ADDRESSES], "count": len(bad)},
            )
        nalloc = self.num_allocated_chunks
        nalloc_span = self._phys(68, 8)
        if allocated != nalloc:
            sink.add(
                "error",
                "allocator_count_mismatch",
                f"num_allocated_chunks is {nalloc} but {allocated} chunks below the frontier are allocated",
                nalloc_span,
                {"num_allocated_chunks": nalloc, "scanned_allocated": allocated},
            )
        if not problems and free != len(chain) - 1:
            sink.add(
                "warning",
                "allocator_count_mismatch",
                f"{free} free chunks below the frontier but the free list holds {len(chain) - 1}",
                head_span,
                {"scanned_free": free, "free_list_len": len(chain)},
            )
        reachable = result.reachable_chunks
        if reachable > nalloc:
            sink.add(
                "error",
                "allocator_count_mismatch",
                f"{reachable} nodes and overflow pages are reachable but only {nalloc} chunks are allocated",
                nalloc_span,
                {"num_allocated_chunks": nalloc, "reachable": reachable},
            )
        leaked: list[int] = []
        other: list[int] = []
        for payload in unreached:
            (leaked if self._payload_kind(payload) == "NOF" else other).append(payload)
        result.leaked_overflow_pages = leaked
        result.unreached_allocated = other
        if leaked:
            sink.add(
                "info",
                "leaked_overflow_pages",
                f"{len(leaked)} allocated overflow pages are not reachable (benign leak of v0.6.0–v0.6.3)",
                self._phys(leaked[0] - CHUNK_HEADER_SIZE, CHUNK_HEADER_SIZE + self.page_size),
                {"count": len(leaked), "addrs": leaked[:MAX_LISTED_ADDRESSES]},
            )
        if other:
            sink.add(
                "warning",
                "allocator_count_mismatch",
                f"{len(other)} allocated chunks hold neither a reachable node nor an overflow page",
                self._phys(other[0] - CHUNK_HEADER_SIZE, CHUNK_HEADER_SIZE + self.page_size),
                {"count": len(other), "addrs": other[:MAX_LISTED_ADDRESSES]},
            )

    # --- salvage support ---------------------------------------------------------------------------------

    def unreachable_nodes(
        self, *, beyond_frontier: bool = False, include_frontier: bool = False
    ) -> list[Node]:
        """Valid nodes in allocated chunks that the walk from the root does not reach.

        A candidate must sit in a chunk whose header is "CHK" with allocated = 1, start with "BTN", parse
        completely (header, entries, overflow chain with every page in an allocated chunk and "NOF"), and
        share no overflow page with the live tree. Free chunks are never considered: freed nodes keep
        their bytes but are not data (FORMAT.md §3.9).

        ``beyond_frontier`` also scans the chunk-aligned slots after the frontier. That is where a map
        that was re-created over old data (allocator reset, e.g. post_upgrade after a MemoryManager
        re-init) leaves its previous nodes, still in chunks whose headers say allocated.

        ``include_frontier`` (only with ``beyond_frontier``) also accepts the frontier chunk's payload.
        The current allocator has never handed that chunk out; its header reads "free" only because
        the allocator wrote a fresh frontier header over whatever was there. After a re-created map
        this is the one old node whose chunk header was overwritten (post_upgrade: old leaf 1156).
        Its old allocation state is unknowable, so it is opt-in.
        """
        if not self.walkable or not self.allocator_ok:
            return []
        self.walk()
        reached = self._reached if self._reached is not None else self.empty_chunk_set()
        found: list[Node] = []
        frontier = self.frontier
        for chunk in self.chunk_grid(beyond_frontier=beyond_frontier):
            if chunk.payload != "BTN" or not chunk.magic_ok:
                continue
            if not chunk.allocated and not (beyond_frontier and include_frontier and chunk.addr == frontier):
                continue
            if chunk.payload_addr in reached:
                continue
            try:
                node = self._unreachable_node(chunk.payload_addr, chunk.allocated)
            except NodeError:
                continue
            if any(o in reached for o in node.overflows):
                continue
            found.append(node)
        return found
