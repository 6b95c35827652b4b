"""The orphan scan: structure bytes on disk that nothing reachable points to.

Three places are looked at, all cheap enough for a multi-GiB sparse snapshot (holes are skipped, only a
few bytes per place are read unless a place holds data):

* the unused tail of page 0 (34,848..65,535), which a MemoryManager never writes (FORMAT.md §2.1):
  non-zero bytes there are the remains of an earlier write at offset 0;
* the start of every bucket no memory owns: a structure header (BTR, SCL, SVC, SMH, GLI, GLD), a
  Candid message or a u32-length-prefixed blob there is a structure of an earlier layout, typically
  left by a re-initialised MemoryManager (FORMAT.md §11.2);
* every BTreeMap's frontier chunk and the chunks beyond it, up to the end of its last bucket: a healthy
  allocator has never written there, so valid allocated nodes there belong to an earlier map that was
  re-created over the same memory (``salvage.scan_unreachable``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inspector.analysis.reconstruct import HEADER_PROBE, probe_structure_header
from inspector.analysis.salvage import MapScan, extended_memory, scan_map_of, scan_unreachable
from inspector.decode.candid import MAGIC as DIDL
from inspector.decode.candid import CandidError, decode_message
from inspector.layouts import (
    BUCKETS_START,
    MAX_NUM_BUCKETS,
    MM_HEADER_PAGE_USED,
    UNALLOCATED_BUCKET,
    WASM_PAGE_SIZE,
)
from inspector.layouts import BUCKETS_START as _BUCKETS_START
from inspector.memory import Range
from inspector.model import Field, Finding, Region
from inspector.sparse import data_ranges, is_zero
from inspector.structures.btreemap.structure import BTreeMapStructure
from inspector.words import plural

MAX_LISTED_BUCKETS = 64
MAX_LISTED_NODES = 64
LENGTH_PREFIX_HEAD = 1 << 16  # bytes handed to the length-prefix detector


@dataclass
class Orphan:
    kind: str  # "page0_tail" | "unowned_bucket" | "unreachable_nodes"
    severity: str
    message: str
    physical_ranges: list[Range]
    memory_id: int | str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    scan: MapScan | None = None  # for unreachable nodes: what the scan found
    structure: BTreeMapStructure | None = None

    def finding(self) -> Finding:
        return Finding(
            self.severity,
            "orphaned_data",
            self.message,
            list(self.physical_ranges),
            memory_id=self.memory_id,
            details={"kind": self.kind, **self.details},
        )

    def region(self) -> Region:
        children: list[Region] | Callable[[], list[Region]] | None = None
        if self.scan is not None and self.structure is not None:
            scan, structure = self.scan, self.structure
            children = lambda: _node_regions(structure, scan)  # noqa: E731 - lazy children factory
        name = {
            "page0_tail": "page 0 tail (never written by a MemoryManager)",
            "unowned_bucket": f"bucket {self.details.get('bucket')} (no memory owns it)",
            "unreachable_nodes": f"unreachable nodes of memory {self.memory_id}",
        }.get(self.kind, self.kind)
        return Region(
            name,
            "orphan",
            list(self.physical_ranges[:MAX_LISTED_NODES]),
            fields=[Field(k, v) for k, v in self.details.items() if not isinstance(v, list | dict)],
            findings=[self.finding()],
            children=children,
            memory_id=self.memory_id,
            detail=self.message,
        )


def _node_regions(structure: BTreeMapStructure, scan: MapScan) -> list[Region]:
    """One region per salvaged node with its entries (decoded lazily, like the live map's)."""
    from inspector.regions import element_region
    from inspector.structures.base import Element
    from inspector.structures.btreemap.structure import open_btreemap

    out: list[Region] = []
    # The nodes may lie past the memory's declared size (in its last bucket's slack): map their bytes
    # through the same extended memory the scan used, with the structure's decoding choices.
    view = open_btreemap(extended_memory(structure.mem), structure.memory_id, dict(structure.settings or {}))
    view.settings, view.names = structure.settings, structure.names
    bmap = view.map
    for v in scan.accepted:
        node = v.node
        if node is None:
            continue

        def kids(node: Any = node) -> list[Region]:
            els = []
            for i, ne in enumerate(node.entries):
                el = Element(
                    i, ne.value, ne.key, list(ne.key_ranges), list(ne.value_ranges), f"node {node.addr:#x}"
                )
                els.append(element_region(view, el))
            return els

        ranges = bmap.physical_ranges(node.ranges) if bmap is not None else []
        out.append(
            Region(
                f"{node.type} node @ {node.addr:#x} ({v.domain.replace('_', ' ')})",
                "unreachable",
                ranges,
                fields=[
                    Field("addr", node.addr, display=f"{node.addr:#x}"),
                    Field("chunk", v.chunk_state),
                    Field("why accepted", v.reason),
                    Field("num_entries", node.num_entries),
                ],
                children=kids,
                memory_id=structure.memory_id if not isinstance(structure.memory_id, list) else None,
                virtual_start=node.addr,
                detail=f"{plural(node.num_entries, 'entry')}, {v.reason}",
            )
        )
    return out


def _nonzero_span(data: bytes) -> tuple[int, int] | None:
    stripped = data.lstrip(b"\0")
    if not stripped:
        return None
    first = len(data) - len(stripped)
    return first, len(data.rstrip(b"\0"))


def scan_page0_tail(buf: Any, size: int, skip_until: int = 0, base: int = 0) -> Orphan | None:
    """Non-zero bytes in 34,848..65,535 of the manager's first page (``base`` for a RestrictedMemory
    manager), excluding what a known stable_save message covers."""
    start = max(base + MM_HEADER_PAGE_USED, skip_until)
    end = min(size, base + BUCKETS_START)
    if end <= start:
        return None
    data = bytes(buf[start:end])
    span = _nonzero_span(data)
    if span is None:
        return None
    s, e = start + span[0], start + span[1]
    nonzero = len(data) - data.count(0)
    return Orphan(
        "page0_tail",
        "warning",
        f"bytes {s:,}..{e:,} of page 0 hold {nonzero:,} non-zero bytes, where a MemoryManager never writes: "
        "remains of an earlier write at offset 0 (for example a stable_save message longer than 34,848 bytes "
        "that a fresh MemoryManager header and bucket table have since covered)",
        [(s, e)],
        details={"nonzero_bytes": nonzero, "range": [s, e]},
    )


def _describe_bucket_start(buf: Any, start: int, bucket_bytes: int, size: int) -> tuple[str, str] | None:
    """(severity, what) for the first bytes of an unowned bucket, or None if it starts with nothing known."""
    head = bytes(buf[start : min(size, start + HEADER_PROBE)])
    found = probe_structure_header(head)
    if found is not None:
        return "error", f"a {found[1]} header ({head[:3].decode('latin-1')})"
    end = min(size, start + bucket_bytes)
    if head[:4] == DIDL:
        try:
            msg = decode_message(buf, start, end=end)
            return "error", f"a Candid message of {msg.end - start:,} bytes"
        except CandidError:
            pass
    if len(head) >= 8 and head[4:8] == DIDL:
        length = int.from_bytes(head[:4], "little")
        try:
            msg = decode_message(buf, start + 4, end=min(end, start + 4 + length))
            if msg.end == start + 4 + length:
                return "error", f"a u32 length prefix and a {length:,}-byte Candid message"
        except CandidError:
            pass
    from inspector.decode.valuetypes import detect_length_prefixed

    lp = detect_length_prefixed(bytes(buf[start : min(end, start + LENGTH_PREFIX_HEAD)]), end - start)
    if lp is not None:
        return "error", f"a u32 length prefix and a {lp.length:,}-byte {lp.kind} payload ({lp.reason})"
    return None


def scan_unowned_buckets(
    buf: Any,
    size: int,
    fd: int | None,
    table: bytes,
    bucket_size_pages: int,
    base: int = 0,
    skip: frozenset[int] = frozenset(),
) -> list[Orphan]:
    """Buckets inside the file that no memory owns but that hold data. ``base`` is where the manager's
    header sits; ``skip`` lists buckets reported elsewhere (0.7.1 reclaim holes keep their old bytes)."""
    BUCKETS_START = base + _BUCKETS_START  # noqa: N806 - the same name as the layout constant, shifted
    bs = bucket_size_pages * WASM_PAGE_SIZE
    if bs <= 0 or size <= BUCKETS_START:
        return []
    ranges = data_ranges(fd, size) if fd is not None else [(0, size)]
    n_buckets = min(MAX_NUM_BUCKETS, -(-(size - BUCKETS_START) // bs))
    with_data: dict[int, list[Range]] = {}
    for lo, hi in ranges:
        lo, hi = max(lo, BUCKETS_START), min(hi, size)
        if hi <= lo:
            continue
        b = (lo - BUCKETS_START) // bs
        while b < n_buckets and BUCKETS_START + b * bs < hi:
            s = BUCKETS_START + b * bs
            owner = table[b] if b < len(table) else UNALLOCATED_BUCKET
            if owner == UNALLOCATED_BUCKET and b not in skip:
                with_data.setdefault(b, []).append((max(lo, s), min(hi, s + bs)))
            b += 1
    found: list[Orphan] = []
    quiet: list[int] = []
    for b in sorted(with_data):
        s = BUCKETS_START + b * bs
        e = min(size, s + bs)
        described = _describe_bucket_start(buf, s, bs, size)
        if described is not None:
            severity, what = described
            found.append(
                Orphan(
                    "unowned_bucket",
                    severity,
                    f"bucket {b} (physical {s:,}..{e:,}) is not allocated in the bucket table, yet it starts with "
                    f"{what}: a structure of an earlier layout that no memory reaches (a re-initialised "
                    "MemoryManager leaves its old buckets behind like this)",
                    [(s, min(e, s + HEADER_PROBE))],
                    details={"bucket": b, "starts_with": what},
                )
            )
        elif not all(is_zero(buf[lo:hi]) for lo, hi in with_data[b]):
            quiet.append(b)
    if quiet:
        shown = quiet[:MAX_LISTED_BUCKETS]
        found.append(
            Orphan(
                "unowned_bucket",
                "warning",
                f"{len(quiet)} bucket(s) that no memory owns hold non-zero data with no recognisable header "
                f"(first: bucket {quiet[0]})",
                [(BUCKETS_START + b * bs, min(size, BUCKETS_START + (b + 1) * bs)) for b in shown],
                details={"bucket": quiet[0], "buckets": shown, "count": len(quiet)},
            )
        )
    return found


def scan_map_orphans(structure: BTreeMapStructure, fd: int | None) -> Orphan | None:
    """Valid nodes at or beyond a map's allocator frontier (see module docstring)."""
    try:
        bmap = scan_map_of(structure)
    except Exception:  # noqa: BLE001 - a map whose headers cannot even be read has no grid to scan
        return None
    scan = scan_unreachable(bmap, full=False, fd=fd)
    if not scan.accepted:
        return None
    ranges: list[Range] = []
    for v in scan.accepted[:MAX_LISTED_NODES]:
        if v.node is not None:
            ranges.extend(bmap.physical_ranges(v.node.ranges[:1]))
    entries = scan.entry_count
    mid = structure.memory_id
    where = "raw memory" if mid == "raw" else f"memory {mid}"
    live = bmap.length if bmap.root_addr else 0
    message = (
        f"{where}: {len(scan.accepted)} valid node(s) holding {entries:,} entries lie at or beyond the allocator's "
        f"frontier ({scan.frontier:#x}), where the current map (root {bmap.root_addr:#x}, {live:,} entries) has "
        "never written: an earlier map's nodes that its root does not reach. A map re-created over old data "
        "(after a MemoryManager re-initialisation, or BTreeMap::init/clear over a previous map) leaves them; "
        "`salvage` recovers their entries"
    )
    return Orphan(
        "unreachable_nodes",
        "error",
        message,
        ranges,
        memory_id=mid if not isinstance(mid, list) else mid[0],
        details={
            "nodes": len(scan.accepted),
            "entries": entries,
            "frontier": scan.frontier,
            "rejected_nodes": scan.rejected_count,
            "rejected_reasons": scan.rejected_reasons(),
            "node_addrs": [v.addr for v in scan.accepted[:MAX_LISTED_NODES]],
        },
        scan=scan,
        structure=structure,
    )
