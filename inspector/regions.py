"""The region tree built from an ``Analysis``: what the summary prints and the TUI browses.

Children are lazy wherever they can be large (entries, nodes, bucket tables), so building the tree of
a snapshot with a million-entry map costs only its top levels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any

from construct import Struct

from inspector.errors import READ_ERRORS
from inspector.layouts import (
    CELL_HEADER,
    LOG_DATA_HEADER,
    LOG_INDEX_HEADER,
    MM_HEADER_PAGE_USED,
    MM_HEADER_SIZE,
    MM_SIZE_SLOT_SIZE,
    MM_SIZE_SLOTS_OFFSET,
    UNALLOCATED_BUCKET,
    VEC_HEADER,
    CellHeader,
    LogDataHeader,
    LogIndexHeader,
    MemoryManagerHeader,
    VecHeader,
    field_spans,
)
from inspector.memory import Memory, OutOfBounds, Range
from inspector.model import Field, Finding, Region
from inspector.structures.base import Element, Structure, StructureId

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis

ENTRIES_PAGE = 1_000  # entries per lazily built page of the tree
# Pages per group once a sequence has more pages than this: the tree then shows groups of pages, so no
# node ever has more than this many children (a Tree widget's cost per change grows with its lines).
PAGES_PER_GROUP = 1_000


def _first_physical(mem: Memory, start: int, size: int) -> Range | None:
    try:
        ranges = mem.physical_ranges(start, size)
    except OutOfBounds:
        return None
    return (ranges[0][0], ranges[-1][1]) if len(ranges) == 1 else ranges[0]


def _show(value: Any) -> str | None:
    if isinstance(value, bytes):
        if len(value) <= 4 and value.isascii() and all(32 <= c < 127 for c in value):
            return f"{value.decode()!r} ({value.hex()})"
        return value.hex() if any(value) else f"{len(value)} zero bytes"
    return None


def header_fields(layout: Struct, mem: Memory, base: int, values: dict[str, Any]) -> list[Field]:
    """Fields of a declared header with their physical spans (taken from the construct declaration)."""
    out = []
    for span in field_spans(layout):
        if span.name not in values:
            continue
        v = values[span.name]
        if isinstance(v, list):
            continue  # arrays get their own rows (see the MemoryManager's memory sizes)
        out.append(Field(span.name, v, _first_physical(mem, base + span.offset, span.size), _show(v)))
    return out


def value_ref(structure: Structure, data: bytes, role: str) -> ValueRef:
    return ValueRef(data, structure, role)


class ValueRef:
    """Stored bytes of a key or value plus how to decode them; decoding happens on demand, in the core."""

    __slots__ = ("data", "structure", "role", "_decoded")

    def __init__(self, data: bytes, structure: Structure | None, role: str) -> None:
        self.data = data
        self.structure = structure
        self.role = role  # "key" | "value"
        self._decoded: Any = None

    def decoded(self) -> Any:
        if self._decoded is None:
            from inspector.decode.values import decode_for

            self._decoded = decode_for(self.structure, self.role, self.data)
        return self._decoded


def element_region(structure: Structure, el: Element) -> Region:
    if not el.value_spans:
        el.key_spans, el.value_spans = structure.element_spans(el)
    vmem = structure.value_mem or structure.mem
    vranges = _phys(vmem, el.value_spans)
    children: list[Region] = []
    name = f"[{el.index}]"
    if el.key is not None:
        kranges = _phys(structure.mem, el.key_spans)
        children.append(
            Region(
                "key", "key", kranges, value=ValueRef(el.key, structure, "key"), detail=f"{len(el.key)} bytes"
            )
        )
        name = f"[{el.index}] {_short_key(structure, el.key)}"
    children.append(
        Region(
            "value",
            "value",
            vranges,
            value=ValueRef(el.value, structure, "value"),
            detail=f"{len(el.value)} bytes",
        )
    )
    ranges = sorted([r for c in children for r in c.ranges])
    return Region(
        name,
        "entry",
        ranges,
        fields=[Field("index", el.index)] + ([Field("source", el.source)] if el.source else []),
        value=ValueRef(el.value, structure, "value"),
        children=children,
        memory_id=_mid(structure),
    )


def _short_key(structure: Structure, key: bytes) -> str:
    try:
        from inspector.decode.values import decode_for

        text = decode_for(structure, "key", key).text
    except READ_ERRORS:
        text = key.hex()
    return text if len(text) <= 48 else text[:47] + "…"


def _phys(mem: Memory, spans: list[Range]) -> list[Range]:
    out: list[Range] = []
    for s, e in spans:
        try:
            out.extend(mem.physical_ranges(s, e - s))
        except OutOfBounds:
            continue
    return out


def _mid(structure: Structure) -> int | str | None:
    mid = structure.memory_id
    return mid[0] if isinstance(mid, list) else mid


def entries_region(structure: Structure, count: int, label: str = "entries") -> Region:
    """Entries in lazily built pages of ``ENTRIES_PAGE``, so a huge map shows its first page at once.

    Beyond ``PAGES_PER_GROUP`` pages (a million entries) the pages are grouped by that many, one level
    more, so every node of the tree has at most a thousand children whatever the map's size.
    """
    mid = _mid(structure)

    def page(start: int, end: int) -> Region:
        def page_children() -> Iterator[Region]:
            for el in islice(structure.elements(start), end - start):
                yield element_region(structure, el)

        return Region(f"{label} {start:,}–{end - 1:,}", "group", children=page_children, memory_id=mid)

    def pages(lo: int = 0, hi: int = count) -> Iterator[Region]:
        for start in range(lo, hi, ENTRIES_PAGE):
            yield page(start, min(hi, start + ENTRIES_PAGE))

    def groups() -> Iterator[Region]:
        span = ENTRIES_PAGE * PAGES_PER_GROUP
        for lo in range(0, count, span):
            hi = min(count, lo + span)
            yield Region(
                f"{label} {lo:,}–{hi - 1:,}",
                "group",
                children=partial(pages, lo, hi),
                memory_id=mid,
                child_count_hint=hi - lo,
            )

    if count <= ENTRIES_PAGE:
        return Region(
            f"{label} ({count:,})",
            "entries",
            children=lambda: (element_region(structure, el) for el in islice(structure.elements(0), count)),
            memory_id=mid,
            child_count_hint=count,
        )
    nested = count > ENTRIES_PAGE * PAGES_PER_GROUP
    return Region(
        f"{label} ({count:,})",
        "entries",
        children=groups if nested else pages,
        memory_id=mid,
        child_count_hint=count,
    )


def _finding_regions(findings: list[Finding]) -> list[Region]:
    return [finding_region(f) for f in findings]


def finding_region(f: Finding) -> Region:
    return Region(
        f"{f.severity}: {f.code}",
        "finding",
        list(f.physical_ranges),
        fields=[Field("severity", f.severity), Field("code", f.code), Field("message", f.message)],
        findings=[f],
        detail=f.message,
        memory_id=f.memory_id,
    )


def structure_region(structure: Structure) -> Region:
    """The region of one structure: its header, then its entries (B-trees build their own)."""
    own = structure.region()
    if own is not None:
        return own
    mem = structure.mem
    kind = structure.kind
    hj = structure.header_json()
    children: list[Region] = []
    layout: Struct | None = None
    raw_header: dict[str, Any] = {}
    size = 0
    if kind == "cell":
        layout, size = CellHeader, CELL_HEADER.size
        raw_header = CELL_HEADER.parse_dict(mem.read(0, size))
    elif kind in ("vec", "minheap"):
        layout, size = VecHeader, VEC_HEADER.size
        raw_header = VEC_HEADER.parse_dict(mem.read(0, size))
    elif kind == "log":
        index_mem = structure.index_mem
        layout, size = (
            (LogIndexHeader, LOG_INDEX_HEADER.size) if index_mem else (LogDataHeader, LOG_DATA_HEADER.size)
        )
        fast = LOG_INDEX_HEADER if index_mem else LOG_DATA_HEADER
        raw_header = fast.parse_dict(mem.read(0, size))
    if layout is not None:
        hdr_range = _first_physical(mem, 0, size)
        children.append(
            Region(
                f"{structure.magic or kind} header",
                "structure_header",
                [hdr_range] if hdr_range else [],
                fields=header_fields(layout, mem, 0, raw_header),
                memory_id=_mid(structure),
            )
        )
        dmem = structure.data_mem
        if kind == "log" and dmem is not None and structure.index_mem:
            dr = _first_physical(dmem, 0, LOG_DATA_HEADER.size)
            children.append(
                Region(
                    "GLD header (data memory)",
                    "structure_header",
                    [dr] if dr else [],
                    fields=header_fields(
                        LogDataHeader, dmem, 0, LOG_DATA_HEADER.parse_dict(dmem.read(0, LOG_DATA_HEADER.size))
                    ),
                    memory_id=structure.memory_id[1] if isinstance(structure.memory_id, list) else None,
                )
            )
    count = structure.count()
    if count:
        children.append(entries_region(structure, count, "value" if kind == "cell" else "entries"))
    if not size:  # no declared header: cover the bytes the summary shows (the first bytes)
        size = len(structure.head) or 1
    try:
        ranges = mem.physical_ranges(0, min(mem.size, size))
    except OutOfBounds:
        ranges = []
    detail = ", ".join(f"{k}={v}" for k, v in hj.items() if k not in ("first_bytes_hex",))
    if count and kind in ("cell", "vec", "minheap", "log"):
        detail += _value_detail(structure)
    if kind == "unknown":
        detail = "first bytes " + hj.get("first_bytes_hex", "")[:32]
    return Region(
        f"{kind} {_label_id(structure.memory_id)}",
        kind if kind in ("cell", "vec", "minheap", "log", "unknown", "empty") else "unknown",
        ranges,
        fields=[Field(k, v) for k, v in hj.items()],
        findings=list(structure.findings),
        children=children,
        memory_id=_mid(structure),
        detail=detail,
    )


def _value_detail(structure: Structure) -> str:
    """The decoder in use and, for a cell, its decoded value on one line."""
    try:
        from inspector.decode.values import decode_for, type_for

        out = f" · {type_for(structure, 'value')}"
        if structure.kind == "cell":
            first = next(structure.elements(0), None)
            if first is not None:
                text = decode_for(structure, "value", first.value).text
                out += ": " + (text if len(text) <= 100 else text[:99] + "…")
        return out
    except READ_ERRORS:  # a structure too broken to sample: the header line says enough
        return ""


def _label_id(mid: StructureId | None) -> str:
    if isinstance(mid, list):
        return "memories " + "+".join(str(m) for m in mid)
    return "raw memory" if mid == "raw" else f"memory {mid}"


def build_tree(analysis: Analysis) -> Region:
    """The whole snapshot as a region tree (lazy below the top levels)."""
    snap = analysis.snapshot
    mm = analysis.mm
    root_children: list[Region] = []
    if analysis.diagnosis:
        root_children.append(
            Region(
                "Diagnosis",
                "diagnosis",
                fields=[Field(f"{i + 1}", line) for i, line in enumerate(analysis.diagnosis)],
                detail=analysis.diagnosis[0],
            )
        )
    app = analysis.extras.get("_application_region_node")
    if app is not None:
        root_children.append(app(analysis))
    if mm.present:
        root_children.append(mm_region(analysis))
        root_children.append(memories_region(analysis))
    else:
        for s in analysis.structures:
            if not _is_stable_save_bytes(analysis, s):
                root_children.append(structure_region(s))
    extra: Callable[[Any], list[Region]] | None = analysis.extras.get("_unreachable_regions")
    if extra is not None:
        root_children.append(Region("Unreachable data", "unreachable", children=lambda: extra(analysis)))
    findings = analysis.all_findings()
    root_children.append(
        Region(
            f"Findings ({len(findings)})",
            "findings",
            children=lambda: _finding_regions(findings),
            detail=_finding_counts(findings),
        )
    )
    meta = [Field(k, v) for k, v in (snap.metadata or {}).items() if not isinstance(v, dict | list)]
    return Region(
        str(snap.path.name or snap.path),
        "snapshot",
        [(0, snap.size)] if snap.size else [],
        fields=[Field("path", str(snap.file_path or snap.path)), Field("size_bytes", snap.size), *meta],
        children=root_children,
        detail=f"{snap.size:,} bytes",
    )


def _is_stable_save_bytes(analysis: Analysis, structure: Structure) -> bool:
    """An "unknown" structure that is the stable_save message itself: shown once, as that message
    (under "Unreachable data"), not a second time as unknown raw memory."""
    blob = getattr(analysis, "stable_save", None)
    start = structure.physical_start
    if structure.kind != "unknown" or blob is None or start is None:
        return False
    return any(a <= start < b for a, b in getattr(blob, "physical_ranges", None) or [])


def _finding_counts(findings: list[Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("error", "warning", "info")}
    return ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n) or "none"


def mm_region(analysis: Analysis) -> Region:
    mm = analysis.mm
    # The memory the manager lives in: the snapshot, or the host memory of a nested manager.
    phys = getattr(analysis, "host", None) or analysis.snapshot.memory
    base = mm.base_offset
    h = {
        "magic": mm.magic,
        "layout_version": mm.layout_version,
        "num_allocated_buckets": mm.num_allocated_buckets,
        "bucket_size_in_pages": mm.bucket_size_in_pages,
        "reserved": mm.reserved,
    }
    fields = header_fields(MemoryManagerHeader, phys, base, h)
    if base or mm.host_memory_id is not None:
        where = f"memory {mm.host_memory_id}, virtual" if mm.host_memory_id is not None else "physical"
        fields.insert(0, Field("base_offset", base, display=f"{base:,} ({where}; found by {mm.base_source})"))
    for i, pages in enumerate(mm.memory_sizes_in_pages):
        if pages:
            slot = base + MM_SIZE_SLOTS_OFFSET + MM_SIZE_SLOT_SIZE * i
            fields.append(
                Field(f"memory_sizes_in_pages[{i}]", pages, _first_physical(phys, slot, MM_SIZE_SLOT_SIZE))
            )
    t0 = mm.bucket_table_offset
    holes = set(mm.holes)

    def table_rows() -> Iterator[Region]:
        for b in range(len(mm.table)):
            owner = mm.table[b]
            if owner == UNALLOCATED_BUCKET and b >= mm.num_allocated_buckets:
                continue
            start = mm.buckets_start + b * mm.bucket_size_bytes
            pstart = _first_physical(phys, start, 1)
            entry = _first_physical(phys, t0 + b, 1)
            label = (
                "free (hole left by reclaim_memory)"
                if b in holes
                else "unallocated"
                if owner == UNALLOCATED_BUCKET
                else f"memory {owner}"
            )
            yield Region(
                f"bucket {b} → {label}",
                "bucket_table",
                [entry] if entry else [],
                fields=[
                    Field("bucket", b),
                    Field("owner", owner),
                    Field(
                        "physical_start",
                        pstart[0] if pstart else None,
                        display=f"{pstart[0]:#x}" if pstart else "?",
                    ),
                ],
            )

    head_ranges = phys.physical_ranges(base, MM_HEADER_SIZE) if phys.size >= base + MM_HEADER_SIZE else []
    lo = head_ranges[0][0] if head_ranges else base
    mm_findings = [
        f
        for f in analysis.all_findings()
        if f.physical_ranges and lo <= f.physical_ranges[0][0] < lo + MM_HEADER_PAGE_USED
    ]
    table_range = _first_physical(phys, t0, max(1, mm.num_allocated_buckets))
    table = Region(
        f"bucket table ({mm.num_allocated_buckets} allocated"
        + (f", {len(holes)} hole{'s' if len(holes) != 1 else ''}" if holes else "")
        + ")",
        "bucket_table",
        [table_range] if table_range else [],
        children=table_rows,
        detail="owners "
        + " ".join("·" if b in holes else str(o) for b, o in enumerate(mm.bucket_owners[:24]))
        + (" …" if mm.num_allocated_buckets > 24 else ""),
    )
    title = "MemoryManager (reconstructed)" if mm.reconstructed else "MemoryManager"
    if mm.host_memory_id is not None:
        title = f"MemoryManager inside memory {mm.host_memory_id}"
    elif base:
        title = f"MemoryManager at {base:,}"
    return Region(
        title,
        "mm_header",
        head_ranges or [(0, MM_HEADER_SIZE)],
        fields=fields,
        findings=mm_findings,
        children=[table],
        detail=f"v{mm.layout_version}, {_plural(mm.num_allocated_buckets, 'bucket')} of "
        f"{_plural(mm.bucket_size_in_pages, 'page')}",
    )


def memories_region(analysis: Analysis) -> Region:
    mm = analysis.mm

    def rows() -> Iterator[Region]:
        for m in mm.memories:
            mid = m.memory.memory_id  # "5/1" inside a nested manager
            structure = analysis.structure(mid)
            children = [structure_region(structure)] if structure is not None else []
            pair = structure.memory_id if structure is not None else None
            if isinstance(pair, list) and pair[0] != mid:
                # The data half of a paired log: the log is shown once, under its index memory.
                children = [Region(f"data half of the log at memories {_label_id(pair)[9:]}", "log")]
            try:
                used = m.memory.physical_ranges(0, m.memory.size)
            except OutOfBounds:
                used = []
            yield Region(
                f"memory {mid}",
                "memory",
                used,
                fields=[Field("id", mid), Field("size_pages", m.size_pages), Field("buckets", m.buckets)],
                children=children,
                memory_id=mid,
                detail=f"{m.size_pages} page{'s' if m.size_pages != 1 else ''}, buckets {_bucket_list(m.buckets)}"
                + (f" · {structure.kind}" if structure is not None else ""),
            )

    return Region(f"Memories ({len(mm.memories)})", "memories", children=rows)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _bucket_list(buckets: list[int]) -> str:
    if len(buckets) <= 8:
        return str(buckets)
    return "[" + ", ".join(map(str, buckets[:6])) + f", … +{len(buckets) - 6}]"
