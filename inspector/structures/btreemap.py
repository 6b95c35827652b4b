"""BTreeMap walker: header, allocator, chunk grid, nodes, ordered iteration and a validated full walk.

Layout reference: FORMAT.md §3 (header, allocator, chunks, v1/v2 nodes, overflow pages, invariants)
and §11.3 (corruption checks). All addresses are offsets in the map's own memory (``mem``): the raw
snapshot for a map at physical 0, or a MemoryManager virtual memory. Physical ranges for findings are
obtained through ``mem.physical_ranges`` so they are right even when a node crosses a bucket boundary.

Robustness contract: whatever the bytes, every public method either returns or raises ``NodeError``
(``node()`` only); walks are bounded by the chunks that fit in memory and guarded by visited sets, so
hostile bytes give findings, never a hang, a RecursionError or an unbounded allocation.
"""

from __future__ import annotations

import hashlib
import struct
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from operator import lt
from typing import Any, Literal, NamedTuple

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
    OVERFLOW_MAGIC,
    PAGE_SIZE_VALUE_MARKER,
    B,
    ChunkHeader,
    field_spans,
    v1_node_size,
)
from inspector.memory import Memory, OutOfBounds
from inspector.model import Finding
from inspector.slow_progress import note
from inspector.structures.btreemap_nodes import (
    BE32,
    CHUNK_NODE,
    CHUNK_NODE_SIZE,
    CHUNK_OVERFLOW,
    FIRST_PAYLOAD,
    INTERNAL,
    OVERFLOW_DATA_OFFSET,
    V2_PREFIX_SIZE,
    Entry,
    Node,
    NodeEntry,
    NodeError,
    children_struct,
    logical_ranges,
    overflow_pages_needed,
    parse_v1_body,
    parse_v2_body,
    prefixed_run,
    scan_prefixed,
    strictly_increasing,
    v1_offsets,
    v2_spans,
)
from inspector.structures.chunk_set import ChunkSet

Range = tuple[int, int]
_U32_STRUCT = struct.Struct("<I")
KeyLayout = Literal["prefixed"] | int

DEFAULT_PAGE_SIZE = 1024  # what v0.6.0+ picks when the key or value type is unbounded (FORMAT.md §3.7)
ALLOCATOR_HEADER_SIZE = ALLOCATOR_HEADER.size  # 48
HEADER_END = ALLOCATOR_OFFSET + ALLOCATOR_HEADER_SIZE  # 100: where the first chunk starts

# Caps that keep pathological inputs cheap. Findings of one code beyond the cap are summarised.
MAX_FINDINGS_PER_CODE = 50
MAX_LISTED_ADDRESSES = 64
NODE_CACHE_SIZE = 256
# Key-layout probing: how many nodes the pre-order probe may read, how many v2 nodes it keeps, and the
# largest fixed key size it considers when nothing narrows it down.
PROBE_NODE_BUDGET = 64
PROBE_V2_SAMPLE = 8
MAX_FIXED_KEY_PROBE = 4096
# A v1 entry longer than its slot is read on over the following bytes (the library does the same);
# beyond this many bytes the length is treated as garbage rather than read.
MAX_V1_OVERFLOW_READ = 1 << 20


class Chunk(NamedTuple):
    """One allocator chunk on the grid (FORMAT.md §3.3)."""

    addr: int  # of the 16-byte chunk header
    payload_addr: int  # addr + 16: where a node or overflow page starts
    magic_ok: bool  # "CHK" with version 1
    allocated: bool
    next: int  # only meaningful for free chunks
    payload: str  # "BTN", "NOF", "other", or "none" when the payload lies past the end of memory


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


class BTreeMap:
    """A StableBTreeMap in one memory.

    Construction reads only the two headers; everything else is lazy. ``header`` and ``allocator`` are
    dicts with the keys of the fixtures' expected.json. ``key_fixed_size``: ``"auto"`` infers the v2
    key layout from the bytes, ``None`` forces length-prefixed keys, an int forces fixed-size keys.
    """

    def __init__(
        self,
        mem: Memory,
        *,
        memory_id: int | str | None = None,
        key_fixed_size: int | None | Literal["auto"] = "auto",
    ) -> None:
        self.mem = mem
        self.memory_id = memory_id
        self._size = mem.size
        self._contig = mem.contiguous
        self._header_findings: list[tuple[str, str, str, Range, dict[str, Any]]] = []
        self._node_cache: OrderedDict[int, Node] = OrderedDict()
        self._walk_result: WalkResult | None = None
        self._reached: ChunkSet | None = None
        self._free_list_state: (
            tuple[list[int], list[tuple[str, str, int | None, dict[str, Any]]], int] | None
        ) = None
        self._probe_done = False
        self._v2_seen = False
        self._v2_in_grid: bool | None = None

        # The v2 key layout: None = not decided yet (inferred when first needed), 0 = length-prefixed,
        # N > 0 = fixed N bytes.
        self._kfix: int | None
        if key_fixed_size == "auto":
            self._kfix = None
        elif key_fixed_size is None:
            self._kfix = 0
        else:
            if key_fixed_size <= 0:
                raise ValueError("key_fixed_size must be positive, None or 'auto'")
            self._kfix = int(key_fixed_size)
        self._read_headers()

    # --- headers -----------------------------------------------------------------------------------------

    def _note(self, severity: str, code: str, message: str, span: Range, **details: Any) -> None:
        self._header_findings.append((severity, code, message, span, details))

    def _read_headers(self) -> None:
        self.magic_ok = False
        self.walkable = False  # enough of the header makes sense to follow nodes
        self.allocator_ok = False  # the allocator header makes sense (free list, chunk grid)
        self.layout_version: int | None = None
        self.page_size = 0
        self.max_key_size: int | None = None
        self.max_value_size: int | None = None
        self.page_size_kind: str | None = None
        self.root_addr = 0
        self.length = 0
        self.allocation_size = 0
        self.num_allocated_chunks = 0
        self.free_list_head = 0
        self._derived = False
        self._cs = 0
        self._max_chunks = 0
        if self._size < HEADER_END:
            self._note(
                "error", "structure_bad_magic", "memory too small for a BTreeMap header", (0, self._size)
            )
            return
        try:
            raw = self.mem.read(0, HEADER_END)
        except OutOfBounds as e:
            self._note("error", "structure_bad_magic", f"BTreeMap header unreadable: {e}", (0, HEADER_END))
            return
        magic, version, size_a, size_b, root, length, _reserved = BTREE_HEADER.unpack_from(raw, 0)
        self.layout_version, self.root_addr, self.length = version, root, length
        if magic != BTREE_MAGIC:
            self._note("error", "structure_bad_magic", f"BTreeMap magic is {magic!r}, not 'BTR'", (0, 3))
            return
        self.magic_ok = True
        if version == 2 and size_b == PAGE_SIZE_VALUE_MARKER:
            self.page_size_kind, self.page_size = "v2_value", size_a
        elif version in (1, 2):
            # Version 1 (genuine or migrated), or the never-written "v2 with derived sizes" combination
            # that v0.6.0+ readers accept (FORMAT.md §3.1): node page = v1 node size.
            self._derived = True
            self.max_key_size, self.max_value_size = size_a, size_b
            self.page_size = v1_node_size(size_a, size_b)
            self.page_size_kind = "v1_derived" if version == 1 else "v2_derived"
        else:
            self._note("error", "structure_bad_magic", f"unknown BTreeMap layout version {version}", (3, 4))
            return

        amagic, aversion, _pad, alloc_size, nalloc, free_head, _res = ALLOCATOR_HEADER.unpack_from(
            raw, ALLOCATOR_OFFSET
        )
        self.allocation_size, self.num_allocated_chunks, self.free_list_head = alloc_size, nalloc, free_head
        alloc_span = (ALLOCATOR_OFFSET, HEADER_END)
        if amagic != ALLOCATOR_MAGIC or aversion != 1:
            self._note(
                "error", "structure_bad_magic", f"allocator header is {amagic!r} v{aversion}", alloc_span
            )
        elif not MINIMUM_PAGE_SIZE <= alloc_size <= self._size:
            self._note(
                "error",
                "btree_allocation_size_mismatch",
                f"allocation_size {alloc_size} is not a usable chunk size",
                (60, 68),
                allocation_size=alloc_size,
            )
        else:
            self.allocator_ok = True

        if self._derived:
            expected = self.page_size
            if alloc_size != expected:
                # v0.5.x rewrote the header with the Rust type's MAX_SIZE (FORMAT.md §3.1), so this can
                # happen without data loss; nodes still use the stored max sizes.
                self._note(
                    "warning",
                    "btree_allocation_size_mismatch",
                    f"allocation_size {alloc_size} != v1 node size {expected} for max sizes "
                    f"({self.max_key_size}, {self.max_value_size})",
                    (4, 12),
                    allocation_size=alloc_size,
                    v1_node_size=expected,
                )
        elif alloc_size != self.page_size:
            self._note(
                "error",
                "btree_allocation_size_mismatch",
                f"allocation_size {alloc_size} != page size {self.page_size}",
                (4, 8),
                allocation_size=alloc_size,
                page_size=self.page_size,
            )
        if not self._derived and self.page_size < MINIMUM_PAGE_SIZE:
            self._note(
                "error",
                "btree_node_invalid",
                f"page size {self.page_size} is below the library minimum {MINIMUM_PAGE_SIZE}",
                (4, 8),
            )
        # Nodes can be followed when the page holds at least the headers and is not larger than memory.
        if CHUNK_NODE_SIZE + 8 <= self.page_size <= self._size:
            self.walkable = True
        else:
            self._note("error", "btree_node_invalid", f"page size {self.page_size} is unusable", (4, 12))
        chunk_payload = alloc_size if self.allocator_ok else self.page_size
        self._cs = chunk_payload + CHUNK_HEADER_SIZE
        self._max_chunks = max(0, (self._size - FIRST_CHUNK_OFFSET) // self._cs + 1)

    @property
    def header(self) -> dict[str, Any]:
        kind = self.page_size_kind
        if kind in ("v1_derived", "v2_derived") and self.layout_version == 1:
            kind = "v2_derived" if self._has_v2_nodes() else "v1_derived"
        root_phys: int | None = None
        if self.root_addr:
            try:
                root_phys = self.mem.to_physical(self.root_addr)
            except OutOfBounds:
                root_phys = None
        return {
            "layout_version": self.layout_version,
            "in_memory_version": None if kind is None else (1 if kind == "v1_derived" else 2),
            "page_size_kind": kind,
            "page_size": self.page_size if self.magic_ok else None,
            "max_key_size": self.max_key_size,
            "max_value_size": self.max_value_size,
            "root_addr": self.root_addr,
            "root_physical_addr": root_phys,
            "length": self.length,
        }

    def _has_v2_nodes(self) -> bool:
        """Whether the tree holds v2 nodes (a migrated map): exact after walk(), a bounded probe before."""
        if self._walk_result is not None:
            return self._walk_result.nodes["v2_node_count"] > 0
        self._probe()
        if self._v2_seen:
            return True
        # The probe reads a bounded number of nodes; fall back to the allocated chunks, where any live
        # v2 node of a healthy map must be.
        if self._v2_in_grid is None:
            self._v2_in_grid = False
            for chunk in self.chunk_grid():
                if chunk.allocated and chunk.payload == "BTN":
                    try:
                        if self.mem.read(chunk.payload_addr + 3, 1) == b"\x02":
                            self._v2_in_grid = True
                            break
                    except OutOfBounds:
                        continue
        return self._v2_in_grid

    # --- allocator ---------------------------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        return self._cs

    def _chunk_header(self, addr: int) -> tuple[bytes, int, int, int] | None:
        """(magic, version, allocated, next) of the chunk header at addr, or None if unreadable."""
        buf, phys, avail = self._contig(addr)
        if avail >= CHUNK_HEADER_SIZE:
            magic, version, allocated, _pad, nxt = CHUNK_HEADER.unpack_from(buf, phys)
            return magic, version, allocated, nxt
        try:
            raw = self.mem.read(addr, CHUNK_HEADER_SIZE)
        except OutOfBounds:
            return None
        magic, version, allocated, _pad, nxt = CHUNK_HEADER.unpack_from(raw, 0)
        return magic, version, allocated, nxt

    def _on_grid(self, addr: int) -> bool:
        return addr >= FIRST_CHUNK_OFFSET and (addr - FIRST_CHUNK_OFFSET) % self._cs == 0

    def _free_list(self) -> tuple[list[int], list[tuple[str, str, int | None, dict[str, Any]]], int]:
        """(free list, problems, frontier). The frontier is the list's end when the list is sound,
        otherwise the last chunk of the longest run of valid "CHK" headers from 100 (best effort)."""
        if self._free_list_state is not None:
            return self._free_list_state
        chain: list[int] = []
        problems: list[tuple[str, str, int | None, dict[str, Any]]] = []
        frontier = -1
        if self.allocator_ok:
            seen: set[int] = set()
            addr = self.free_list_head
            while True:
                if addr in seen:
                    problems.append(("cycle", f"free list loops back to {addr:#x}", addr, {}))
                    break
                if len(chain) >= self._max_chunks:
                    problems.append(("too_long", "free list longer than the chunks that fit", addr, {}))
                    break
                if not self._on_grid(addr):
                    problems.append(
                        ("misaligned", f"free-list hop {addr:#x} is not on the chunk grid", addr, {})
                    )
                    break
                hdr = self._chunk_header(addr)
                if hdr is None:
                    problems.append(
                        ("out_of_bounds", f"free-list hop {addr:#x} lies outside memory", addr, {})
                    )
                    break
                magic, version, allocated, nxt = hdr
                if magic != CHUNK_MAGIC or version != 1:
                    problems.append(
                        ("bad_magic", f"free-list hop {addr:#x} is not a CHK v1 header", addr, {})
                    )
                    break
                if allocated != 0:
                    problems.append(("allocated", f"free-list hop {addr:#x} is marked allocated", addr, {}))
                    break
                seen.add(addr)
                chain.append(addr)
                if nxt == 0:
                    frontier = addr
                    break
                addr = nxt
            if frontier >= 0:
                higher = [a for a in chain[:-1] if a > frontier]
                if higher:
                    problems.append(
                        (
                            "frontier_not_highest",
                            f"free list ends at {frontier:#x} but holds higher chunks",
                            frontier,
                            {"higher": higher[:MAX_LISTED_ADDRESSES]},
                        )
                    )
                if frontier + CHUNK_HEADER_SIZE > self._size:
                    problems.append(
                        ("frontier_oob", "frontier header lies past the end of memory", frontier, {})
                    )
            if problems or frontier < 0:
                frontier = self._fallback_frontier()
        self._free_list_state = (chain, problems, frontier)
        return self._free_list_state

    def _fallback_frontier(self) -> int:
        addr, last = FIRST_CHUNK_OFFSET, -1
        for _ in range(self._max_chunks):
            hdr = self._chunk_header(addr)
            if hdr is None or hdr[0] != CHUNK_MAGIC or hdr[1] != 1:
                break
            last = addr
            addr += self._cs
        return last

    @property
    def frontier(self) -> int:
        """Address of the frontier chunk header (the never-used chunk ending the free list), or -1."""
        return self._free_list()[2]

    @property
    def allocator(self) -> dict[str, Any]:
        chain = self._free_list()[0]
        return {
            "magic": "BTA",
            "header_addr": ALLOCATOR_OFFSET,
            "allocation_size": self.allocation_size,
            "chunk_header_size": CHUNK_HEADER_SIZE,
            "chunk_size": self.allocation_size + CHUNK_HEADER_SIZE,
            "num_allocated_chunks": self.num_allocated_chunks,
            "free_list_head": self.free_list_head,
            "free_list": list(chain),
            "free_list_len": len(chain),
        }

    def _payload_kind(self, payload: int) -> str:
        if payload + 3 > self._size:
            return "none"
        buf, phys, avail = self._contig(payload)
        if avail >= 3:
            magic = bytes(buf[phys : phys + 3])
        else:
            try:
                magic = self.mem.read(payload, 3)
            except OutOfBounds:  # a bucket missing from a truncated snapshot
                return "none"
        if magic == NODE_MAGIC:
            return "BTN"
        if magic == OVERFLOW_MAGIC:
            return "NOF"
        return "other"

    def chunk_grid(self, *, beyond_frontier: bool = False) -> Iterator[Chunk]:
        """Every chunk header from 100 up to and including the frontier.

        ``beyond_frontier`` continues over the chunk-aligned slots after the frontier up to the end of
        memory: an allocator that was reset (a re-created map) leaves its old chunks there.
        """
        if not self.allocator_ok:
            return
        frontier = self.frontier
        if frontier < 0:
            return
        stop = (self._size - CHUNK_HEADER_SIZE) if beyond_frontier else frontier
        addr = FIRST_CHUNK_OFFSET
        while addr <= stop:
            hdr = self._chunk_header(addr)
            if hdr is None:
                break
            magic, version, allocated, nxt = hdr
            payload = addr + CHUNK_HEADER_SIZE
            yield Chunk(
                addr,
                payload,
                magic == CHUNK_MAGIC and version == 1,
                allocated == 1,
                nxt,
                self._payload_kind(payload),
            )
            addr += self._cs

    # --- node loading ------------------------------------------------------------------------------------

    def _read_chunk_bytes(self, addr: int, n: int) -> Any:
        buf, phys, avail = self._contig(addr)
        if avail >= n:
            return buf[phys : phys + n]
        try:
            return self.mem.read(addr, n)
        except OutOfBounds as e:
            raise NodeError(f"chunk at {addr:#x} lies outside memory") from e

    def _read_node(
        self, addr: int, allow_free: bool = False
    ) -> tuple[int, int, int, Any, int, int, list[int]]:
        """Validate a node's chunk, header and overflow chain; return where its logical stream is.

        Returns (version, node type, k, buffer, base, end, overflow pages): the stream is buffer[base:end].
        """
        page = self.page_size
        if addr < FIRST_PAYLOAD or (addr - FIRST_PAYLOAD) % self._cs:
            raise NodeError(
                f"node address {addr:#x} is not on the chunk grid ((addr - 116) mod {self._cs} != 0)",
                addr=addr,
            )
        start = addr - CHUNK_HEADER_SIZE
        buf, phys, avail = self._contig(start)
        if avail >= CHUNK_HEADER_SIZE + page:
            base = phys + CHUNK_HEADER_SIZE
            end = base + page
        else:
            n = min(CHUNK_HEADER_SIZE + page, self._size - start)
            if n < CHUNK_NODE_SIZE:
                raise NodeError(f"node {addr:#x} lies outside memory", addr=addr)
            try:
                buf = self.mem.read(start, n)
            except OutOfBounds as e:
                raise NodeError(f"node {addr:#x} is unreadable: {e}", addr=addr) from e
            base, end = CHUNK_HEADER_SIZE, n
        cmagic, cver, alloc, _pad, _nxt, nmagic, nver, ntype, k, ovf = CHUNK_NODE.unpack_from(
            buf, base - CHUNK_HEADER_SIZE
        )
        if cmagic != CHUNK_MAGIC or cver != 1:
            raise NodeError(f"chunk header of node {addr:#x} is {cmagic!r} v{cver}, not CHK v1", addr=addr)
        if alloc != 1 and not allow_free:
            raise NodeError(f"node {addr:#x} sits in a chunk marked free (allocated={alloc})", addr=addr)
        if nmagic != NODE_MAGIC:
            raise NodeError(f"node {addr:#x} has magic {nmagic!r}, not 'BTN'", addr=addr)
        if ntype > 1:
            raise NodeError(f"node {addr:#x} has type {ntype}", addr=addr)
        if not 1 <= k <= CAPACITY:
            raise NodeError(f"node {addr:#x} has {k} entries (must be 1..{CAPACITY})", addr=addr)
        if nver == 1:
            if not self._derived:
                raise NodeError(f"v1 node {addr:#x} in a map whose header is v2 (page size value)", addr=addr)
            return 1, ntype, k, buf, base, end, []
        if nver != 2:
            raise NodeError(f"node {addr:#x} has version {nver}", addr=addr)
        if not ovf:
            return 2, ntype, k, buf, base, end, []
        if end - base < page:
            raise NodeError(f"node {addr:#x} page is cut off by the end of memory", addr=addr)
        stream, overflows = self._read_overflow_chain(addr, bytes(buf[base:end]), ovf)
        return 2, ntype, k, stream, 0, len(stream), overflows

    def _read_overflow_chain(self, addr: int, first_page: bytes, ovf: int) -> tuple[bytes, list[int]]:
        page = self.page_size
        parts = [first_page]
        overflows: list[int] = []
        seen: set[int] = set()
        nxt = ovf
        run = _RUN_MIN
        while nxt:
            # Fast path: overflow pages the allocator handed out back to back (the usual case) are
            # checked and cut out a run at a time by one unpack_from; anything unusual falls through
            # to the page-by-page loop below, which names the problem.
            taken = self._overflow_run(nxt, run, seen, len(overflows), parts, overflows)
            if taken is not None:
                nxt = taken
                run = min(run * 2, _RUN_MAX)
                continue
            run = _RUN_MIN
            if nxt in seen:
                raise NodeError(f"overflow chain of node {addr:#x} loops at {nxt:#x}", "btree_cycle", addr)
            if len(overflows) >= self._max_chunks:
                raise NodeError(f"overflow chain of node {addr:#x} is longer than memory allows", addr=addr)
            if nxt < FIRST_PAYLOAD or (nxt - FIRST_PAYLOAD) % self._cs:
                raise NodeError(
                    f"overflow page {nxt:#x} of node {addr:#x} is not on the chunk grid", addr=addr
                )
            data = self._read_chunk_bytes(nxt - CHUNK_HEADER_SIZE, CHUNK_HEADER_SIZE + page)
            cmagic, cver, alloc, _pad, _n, omagic, onext = CHUNK_OVERFLOW.unpack_from(data, 0)
            if cmagic != CHUNK_MAGIC or cver != 1 or alloc != 1:
                raise NodeError(
                    f"overflow page {nxt:#x} of node {addr:#x} is not in an allocated CHK chunk", addr=addr
                )
            if omagic != OVERFLOW_MAGIC:
                raise NodeError(f"overflow page {nxt:#x} of node {addr:#x} has magic {omagic!r}", addr=addr)
            parts.append(data[CHUNK_HEADER_SIZE + OVERFLOW_DATA_OFFSET :])
            overflows.append(nxt)
            seen.add(nxt)
            nxt = onext
        return b"".join(parts), overflows

    def _overflow_run(
        self, nxt: int, want: int, seen: set[int], have: int, parts: list[Any], overflows: list[int]
    ) -> int | None:
        """Take the longest run of back-to-back valid overflow pages starting at ``nxt`` (at most
        ``want``) and return the address that follows it (0: the chain ends), or None when no run of
        two or more applies."""
        cs = self._cs
        if nxt < FIRST_PAYLOAD or (nxt - FIRST_PAYLOAD) % cs:
            return None
        buf, phys, avail = self._contig(nxt - CHUNK_HEADER_SIZE)
        n = min(want, avail // cs, self._max_chunks - have)
        if n < 2:
            return None
        t = _overflow_run_struct(self.page_size, n).unpack_from(buf, phys)
        nexts = t[6::8]
        expected = range(nxt + cs, nxt + (n + 1) * cs, cs)
        m = n
        if nexts != tuple(expected):
            m = next(j for j in range(n) if nexts[j] != expected[j]) + 1
        if m < 2:
            return None
        stop = 8 * m
        if (
            t[0:stop:8].count(CHUNK_MAGIC) != m
            or t[1:stop:8].count(1) != m
            or t[2:stop:8].count(1) != m
            or t[5:stop:8].count(OVERFLOW_MAGIC) != m
        ):
            return None
        addrs = range(nxt, nxt + m * cs, cs)
        if not seen.isdisjoint(addrs):
            return None
        seen.update(addrs)
        overflows.extend(addrs)
        parts.extend(t[7:stop:8])
        return int(nexts[m - 1])

    def _load(self, addr: int, allow_free: bool = False) -> tuple[Any, ...]:
        """Parse a node for the walk: (version, type, k, children, keys, values, overflows, stream_len,
        common key length or -1, common value length or -1, slot-overflowing v1 entry indexes)."""
        nver, ntype, k, buf, base, end, overflows = self._read_node(addr, allow_free)
        if nver == 2:
            kfix = self._kfix
            if kfix is None:
                kfix = self._resolve_key_layout(addr)
            children, keys, values, n, klen, vlen = parse_v2_body(buf, base, end, ntype == INTERNAL, k, kfix)
            if overflows:
                needed = overflow_pages_needed(n, self.page_size)
                if needed != len(overflows):
                    raise NodeError(
                        f"node {addr:#x} has {len(overflows)} overflow pages but its {n}-byte stream needs "
                        f"{needed}",
                        addr=addr,
                    )
            return 2, ntype, k, children, keys, values, overflows, n, klen, vlen, ()
        mk, mv = self.max_key_size or 0, self.max_value_size or 0
        children, keys, values, over = parse_v1_body(buf, base, end, ntype == INTERNAL, k, mk, mv)
        if over:
            self._reread_slot_overflow(addr, buf, base, keys, values, over)
        n = 7 + k * (8 + mk + mv) + (8 * (k + 1) if ntype == INTERNAL else 0)
        return 1, ntype, k, children, keys, values, [], n, -1, -1, tuple(over)

    def _reread_slot_overflow(
        self, addr: int, buf: Any, base: int, keys: list[bytes], values: list[bytes], over: list[int]
    ) -> None:
        """A v1 entry longer than its slot: read its real bytes the way the library does, straight on
        over the following slots (FORMAT.md §11.3). Bounded by the memory size."""
        mk, mv = self.max_key_size or 0, self.max_value_size or 0
        for i in over:
            koff, voff = v1_offsets(i, mk, mv)
            (klen,) = _u32(buf, base + koff - 4)
            (vlen,) = _u32(buf, base + voff - 4)
            if max(klen, vlen) > MAX_V1_OVERFLOW_READ:
                raise NodeError(
                    f"v1 entry {i} of node {addr:#x} claims a {max(klen, vlen)}-byte key/value", addr=addr
                )
            try:
                if klen > mk:
                    keys[i] = self.mem.read(addr + koff, klen)
                if vlen > mv:
                    values[i] = self.mem.read(addr + voff, vlen)
            except OutOfBounds as e:
                raise NodeError(
                    f"v1 entry {i} of node {addr:#x} runs past the end of memory", addr=addr
                ) from e

    # --- key layout --------------------------------------------------------------------------------------

    @property
    def key_layout(self) -> KeyLayout:
        """How v2 nodes store keys: "prefixed" (u32 LE length + bytes) or a fixed size N (no prefix)."""
        if self._kfix is None:
            self._probe()
            if self._kfix is None:  # no v2 node seen: the question does not arise; report the default
                return "prefixed"
        return "prefixed" if self._kfix == 0 else self._kfix

    def _resolve_key_layout(self, addr: int) -> int:
        """Called when a v2 node needs parsing and the layout is still open."""
        self._probe()
        if self._kfix is None:
            self._infer_key_layout([addr])
        assert self._kfix is not None
        return self._kfix

    def _probe(self) -> None:
        """Bounded pre-order probe from the root: notes v2 nodes and infers the key layout from them."""
        if self._probe_done:
            return
        self._probe_done = True
        if not self.walkable or not self.root_addr:
            return
        sample: list[int] = []
        seen: set[int] = set()
        stack = [self.root_addr]
        budget = PROBE_NODE_BUDGET
        while stack and budget > 0 and len(sample) < PROBE_V2_SAMPLE:
            addr = stack.pop()
            if addr in seen:
                continue
            seen.add(addr)
            budget -= 1
            try:
                nver, ntype, k, buf, base, end, _ovf = self._read_node(addr)
                if ntype == INTERNAL:
                    if nver == 2:
                        p = base + V2_PREFIX_SIZE
                        if p + 8 * (k + 1) > end:
                            continue
                        children = _children(k, buf, p)
                    else:
                        children = parse_v1_body(
                            buf, base, end, True, k, self.max_key_size or 0, self.max_value_size or 0
                        )[0]
                    stack.extend(reversed(children))
            except NodeError:
                continue
            if nver == 2:
                sample.append(addr)
        if sample:
            self._v2_seen = True
            if self._kfix is None:
                self._infer_key_layout(sample)

    def _key_candidates(self) -> list[int]:
        """Fixed key sizes worth trying (0 stands for "prefixed", always tried first)."""
        if self._derived:
            # A migrated v1 map: the key type is the one whose max size the header stores.
            return [0, self.max_key_size] if self.max_key_size else [0]
        return [0, *range(1, MAX_FIXED_KEY_PROBE + 1)]

    def _infer_key_layout(self, addrs: list[int]) -> None:
        """Pick the key layout under which every sampled v2 node parses consistently.

        A layout passes a node when its keys and values fit the stream, the stream length agrees with
        the overflow page count, keys are strictly increasing bytewise, and (header-v1 maps) key lengths
        respect max_key_size. Ties (tiny maps, e.g. one entry) go to the layout with fewer empty keys or
        values, then to "prefixed", then to the smaller size.
        """
        nodes = []
        for addr in addrs:
            try:
                # allow_free: the sample may be the node a salvage scan is parsing on request (its
                # caller has already validated it); the layout evidence is the same either way.
                nver, ntype, k, buf, base, end, overflows = self._read_node(addr, allow_free=True)
            except NodeError:
                continue
            if nver == 2:
                nodes.append((ntype, k, buf, base, end, overflows))
        if not nodes:
            self._kfix = 0
            return
        best: tuple[int, int, int, int] | None = None
        best_layout = 0
        for cand in self._key_candidates():
            failures = 0
            empties = 0
            for ntype, k, buf, base, end, overflows in nodes:
                result = self._try_layout(cand, ntype, k, buf, base, end, overflows)
                if result < 0:
                    failures += 1
                    if failures > (best[0] if best else len(nodes)):
                        break
                else:
                    empties += result
            score = (failures, empties, 0 if cand == 0 else 1, cand)
            if best is None or score < best:
                best, best_layout = score, cand
        self._kfix = best_layout

    def _try_layout(
        self, kfix: int, ntype: int, k: int, buf: Any, base: int, end: int, overflows: list[int]
    ) -> int:
        """-1 if the node does not parse consistently with this key layout, else its empty-item count."""
        p = base + V2_PREFIX_SIZE + (8 * (k + 1) if ntype == INTERNAL else 0)
        keys: list[bytes] = []
        if kfix:
            if p + kfix * k > end:
                return -1
            vstart = p + kfix * k
        else:
            vstart = scan_prefixed(buf, p, end, k)
            if vstart < 0:
                return -1
        vend = scan_prefixed(buf, vstart, end, k)
        if vend < 0:
            return -1
        if overflow_pages_needed(vend - base, self.page_size) != len(overflows):
            return -1
        empties = 0
        if kfix:
            keys = [buf[p + i * kfix : p + (i + 1) * kfix] for i in range(k)]
        else:
            keys, _p, _l = prefixed_run(buf, p, end, k)
            if self.max_key_size is not None and any(len(x) > self.max_key_size for x in keys):
                return -1
            empties += sum(1 for x in keys if not x)
        if not strictly_increasing(keys):
            return -1
        q = vstart
        for _ in range(k):
            (n,) = _u32(buf, q)
            empties += n == 0
            q += 4 + n
        return empties

    # --- nodes -------------------------------------------------------------------------------------------

    def node(self, addr: int) -> Node:
        """Parse one node with its entries and where their bytes are. Raises NodeError if invalid."""
        cached = self._node_cache.get(addr)
        if cached is not None:
            self._node_cache.move_to_end(addr)
            return cached
        node = self._build_node(addr)
        self._node_cache[addr] = node
        if len(self._node_cache) > NODE_CACHE_SIZE:
            self._node_cache.popitem(last=False)
        return node

    def _unreachable_node(self, addr: int, allocated: bool) -> Node:
        # A node in a chunk marked free is only ever parsed on explicit request and is not cached, so
        # node() keeps refusing it.
        return self.node(addr) if allocated else self._build_node(addr, allow_free=True)

    def _build_node(self, addr: int, allow_free: bool = False) -> Node:
        if not self.walkable:
            raise NodeError("the map header is not usable", addr=addr)
        ver, ntype, k, children, keys, values, overflows, n, _kl, _vl, over = self._load(addr, allow_free)
        page = self.page_size
        entries: list[NodeEntry] = []
        if ver == 2:
            kfix = self._kfix or 0
            kspans, vspans = v2_spans(ntype == INTERNAL, keys, values, kfix)
            for key, value, ks, vs in zip(keys, values, kspans, vspans, strict=True):
                entries.append(
                    NodeEntry(
                        key,
                        value,
                        ks,
                        vs,
                        logical_ranges(addr, overflows, page, ks[0], ks[1]),
                        logical_ranges(addr, overflows, page, vs[0], vs[1]),
                    )
                )
            layout: KeyLayout = "prefixed" if kfix == 0 else kfix
        else:
            mk, mv = self.max_key_size or 0, self.max_value_size or 0
            for i, (key, value) in enumerate(zip(keys, values, strict=True)):
                koff, voff = v1_offsets(i, mk, mv)
                entries.append(
                    NodeEntry(
                        key,
                        value,
                        (koff, len(key)),
                        (voff, len(value)),
                        [(addr + koff, addr + koff + len(key))] if key else [],
                        [(addr + voff, addr + voff + len(value))] if value else [],
                        i in over,
                    )
                )
            layout = "prefixed"
        try:
            phys: int | None = self.mem.to_physical(addr)
        except OutOfBounds:
            phys = None
        ranges = [(addr, min(addr + page, self._size))] + [(o, o + page) for o in overflows]
        return Node(
            addr,
            phys,
            ver,
            "internal" if ntype == INTERNAL else "leaf",
            k,
            list(children),
            list(overflows),
            entries,
            page,
            n,
            layout,
            ranges,
        )

    def iter_nodes(self) -> Iterator[tuple[int, Node]]:
        """(depth, node) in pre-order from the root, children left to right; invalid nodes are skipped
        (``walk()`` reports them) and each node is visited once even if the bytes form a cycle."""
        if not self.walkable or not self.root_addr:
            return
        seen: set[int] = set()
        stack: list[tuple[int, int]] = [(self.root_addr, 0)]
        while stack:
            addr, depth = stack.pop()
            if addr in seen:
                continue
            seen.add(addr)
            try:
                node = self.node(addr)
            except NodeError:
                continue
            yield depth, node
            stack.extend((c, depth + 1) for c in reversed(node.children))

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
        visited = self._chunk_set()
        count = 0
        if self.walkable and self.root_addr:
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
            self._check_allocator(sink, result, visited)
        result.findings = sink.finish()
        self._walk_result = result
        return result

    def _chunk_set(self) -> ChunkSet:
        """An empty set of chunk payloads sized to the chunks below the frontier (the ones nodes and
        overflow pages can be in); anything else lands in its small overflow set."""
        cs = self._cs if self._cs > 0 else 1
        top = self.frontier if self.allocator_ok else -1
        if top < FIRST_CHUNK_OFFSET:
            top = min(self._size, FIRST_CHUNK_OFFSET + self._max_chunks * cs)
        return ChunkSet(cs, max(0, (min(top, self._size) - FIRST_CHUNK_OFFSET) // cs + 1))

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
                    note(f"walking {self.mem.label}: entries", count)
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
        from inspector.byte_diff import _page_releaser

        return _Releaser(_page_releaser(buf), size, max(1, RELEASE_EVERY_BYTES // self._cs))

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
        reached = self._reached if self._reached is not None else self._chunk_set()
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


RELEASE_MIN_BYTES = 256 << 20  # snapshots smaller than this are not unmapped as walks go
RELEASE_EVERY_BYTES = 64 << 20  # chunks' worth of bytes read between two releases


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


_RUN_MIN, _RUN_MAX = 8, 512  # overflow pages unpacked per run (doubling while the pages stay back to back)


@lru_cache(maxsize=64)
def _overflow_run_struct(page: int, n: int) -> struct.Struct:
    """``n`` chunks of ``CHUNK_OVERFLOW`` header + page data, back to back (derived, not re-typed)."""
    one = CHUNK_OVERFLOW.format[1:] + f"{page - OVERFLOW_DATA_OFFSET}s"
    return struct.Struct("<" + one * n)


def _u32(buf: Any, offset: int) -> tuple[int]:
    return _U32_STRUCT.unpack_from(buf, offset)


def _children(k: int, buf: Any, p: int) -> tuple[int, ...]:
    return children_struct(k + 1).unpack_from(buf, p)
