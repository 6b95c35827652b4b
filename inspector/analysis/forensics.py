"""Forensics over an ``Analysis``: stable_save blobs, a clobbered or re-initialised MemoryManager, the
reconstructed layout, orphaned data, and the plain-words diagnosis.

``run_forensics(analysis)`` is called by ``analyze()``; it only reads headers, page starts, the page-0
tail and the slack after each map's frontier, so ``summary`` stays fast on huge sparse snapshots.
Effects on the analysis:

* ``findings`` gains ``stable_save_blob``, ``memory_manager_clobbered`` and ``orphaned_data``;
* ``stable_save`` is the ``StableSaveBlob`` at physical offset 0 (if any);
* ``reconstructed`` is the ``Reconstruction`` when the MemoryManager header is gone but evidence of it
  survives; its memories and structures are appended to ``memory_refs`` and ``structures`` (MemoryIds
  from the surviving bucket table, "?b<N>" when unknown);
* ``diagnosis`` holds the plain-words lines (empty for a healthy snapshot);
* ``extras["_unreachable_regions"]`` builds the regions of the "Unreachable data" node;
  ``extras["candid_messages_in_memories"]`` lists Candid messages found at the start of memories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inspector.analysis.diagnosis import build_diagnosis, short_type
from inspector.analysis.orphans import Orphan, scan_map_orphans, scan_page0_tail, scan_unowned_buckets
from inspector.analysis.reconstruct import HEADLESS_KIND, Reconstruction, reconstruct
from inspector.analysis.stable_save import (
    StableSaveBlob,
    compact_overwritten,
    describe_overwritten,
    find_at_physical,
    find_at_physical_zero,
    find_in_memory,
)
from inspector.layouts import (
    BUCKET_TABLE_OFFSET,
    MAX_NUM_BUCKETS,
    MM_HEADER,
    MM_HEADER_PAGE_USED,
    MM_HEADER_SIZE,
    MM_LAYOUT_VERSION,
    MM_MAGIC,
    STRUCTURE_MAGICS,
    WASM_PAGE_SIZE,
)
from inspector.model import Finding, Region
from inspector.structures.btreemap.structure import BTreeMapStructure

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis

REPORT_ATTR = "forensics_report"


@dataclass
class ForensicsReport:
    blob: StableSaveBlob | None = None
    clobbered: bool = False
    clobber_fields: list[str] = field(default_factory=list)
    clobber_evidence: list[str] = field(default_factory=list)
    # A Candid message at a RestrictedMemory manager's base (page start > 0) that clobbered it: [start, end).
    clobber_write: tuple[int, int] | None = None
    recon: Reconstruction | None = None
    orphans: list[Orphan] = field(default_factory=list)
    memory_blobs: list[StableSaveBlob] = field(default_factory=list)
    scanned: bool = False
    # Where in ``analysis.findings`` the orphan scan's findings go (a deferred scan puts them there too).
    orphan_slot: int | None = None


def report_of(analysis: Analysis) -> ForensicsReport | None:
    return getattr(analysis, REPORT_ATTR, None)


def run_forensics(analysis: Analysis, *, scan: bool = True, deep: bool = False) -> ForensicsReport:
    """Run every forensic check once (later calls return the first report). ``scan=False`` skips the
    orphan scan; ``deep=True`` also runs the validated walk of structures found by reconstruction."""
    existing = report_of(analysis)
    if existing is not None:
        return existing
    report = ForensicsReport()
    setattr(analysis, REPORT_ATTR, report)
    snap = analysis.snapshot
    phys = snap.memory
    fd = snap.fd
    options = getattr(analysis, "options", None) or {}

    if not analysis.mm.present and phys.size:
        report.blob = find_at_physical_zero(phys)
        head = bytes(phys.buf[0:3])
        if report.blob is None and head != MM_MAGIC and head not in STRUCTURE_MAGICS:
            _check_restricted_clobber(analysis, report, options, deep)
        if head not in STRUCTURE_MAGICS and not report.clobbered:
            _check_clobbered(analysis, report, options, deep)
    if report.blob is not None:
        _report_blob(analysis, report)
    _memory_blobs(analysis, report)
    report.orphan_slot = len(analysis.findings)
    if scan:
        report.scanned = True
        _orphan_scan(analysis, report, fd)
    from inspector.analysis.real_layouts import recognition_findings

    recognition_findings(analysis, report)
    _conclude(analysis, report)
    if report.memory_blobs:
        analysis.extras["candid_messages_in_memories"] = [b.to_json() for b in report.memory_blobs]
    return report


def _conclude(analysis: Analysis, report: ForensicsReport) -> None:
    """The diagnosis and the "Unreachable data" node from what the report holds now."""
    analysis.diagnosis = build_diagnosis(analysis, report)
    if report.blob is not None or report.memory_blobs or report.orphans:
        # Only then: a healthy snapshot's tree has no "Unreachable data" node at all.
        analysis.extras["_unreachable_regions"] = unreachable_regions


def refresh_diagnosis(analysis: Analysis) -> list[str]:
    """Rebuild the diagnosis after more findings arrived (e.g. ``check`` ran the deep walks)."""
    report = report_of(analysis)
    if report is not None:
        analysis.diagnosis = build_diagnosis(analysis, report)
    return list(analysis.diagnosis)


# --- MemoryManager clobbered: evidence and reconstruction -------------------------------------------------


def header_field_problems(head: bytes) -> list[str]:
    """Which MemoryManager header fields are not what a manager writes, as they now read."""
    if len(head) < MM_HEADER_SIZE:
        return [f"only {len(head)} bytes: the 2,080-byte header is cut off"]
    h = MM_HEADER.parse_dict(head, 0)
    out: list[str] = []
    magic = h["magic"]
    if magic != MM_MAGIC:
        out.append(f"magic {magic.decode('latin-1')!r} (expected 'MGR')")
    if h["layout_version"] != MM_LAYOUT_VERSION:
        out.append(f"layout version {h['layout_version']} (expected {MM_LAYOUT_VERSION})")
    nb, bs = h["num_allocated_buckets"], h["bucket_size_in_pages"]
    out.append(
        f"num_allocated_buckets {nb:,}"
        + (f" (more than {MAX_NUM_BUCKETS:,})" if nb > MAX_NUM_BUCKETS else "")
    )
    out.append(f"bucket_size_in_pages {bs:,}")
    if any(h["reserved"]):
        out.append("reserved bytes 8..40 not zero")
    return out


# Candid messages at page starts tried as a clobbered RestrictedMemory base (each costs a reconstruction).
MAX_RESTRICTED_CANDIDATES = 4


def _check_restricted_clobber(
    analysis: Analysis, report: ForensicsReport, options: dict[str, Any], deep: bool
) -> None:
    """No message at 0 and no valid manager anywhere: a Candid message at a later page start B, with
    structure headers or B-tree nodes on the bucket grid of a manager at B behind it, is a RestrictedMemory
    manager that a ``stable_save``-like write at its base clobbered (docs/LAYOUTS.md §1)."""
    from inspector.sparse import data_ranges

    phys = analysis.snapshot.memory
    fd = analysis.snapshot.fd
    size = phys.size
    tried = 0
    for lo, hi in data_ranges(fd, size) if fd is not None else [(0, size)]:
        p = max(WASM_PAGE_SIZE, lo + (-lo % WASM_PAGE_SIZE))
        while p + WASM_PAGE_SIZE < min(hi, size):
            if bytes(phys.buf[p : p + 4]) == b"DIDL":
                found = find_at_physical(phys, p)
                if found is not None and found.complete:
                    _check_clobbered(analysis, report, options, deep, base=p, write_end=found.end)
                    if report.clobbered:
                        report.clobber_write = (p, found.end)
                        return
                tried += 1
                if tried >= MAX_RESTRICTED_CANDIDATES:
                    return
            p += WASM_PAGE_SIZE


def _check_clobbered(
    analysis: Analysis,
    report: ForensicsReport,
    options: dict[str, Any],
    deep: bool,
    *,
    base: int = 0,
    write_end: int | None = None,
) -> None:
    """No 'MGR' at ``base`` and no structure there: was a MemoryManager here? Rebuild its layout if so."""
    phys = analysis.snapshot.memory
    if phys.size <= base + WASM_PAGE_SIZE:
        return  # no bucket area: nothing a manager could have managed
    blob = report.blob
    # Without a decodable message the extent of the damage is unknown; the header is gone for sure and
    # the table is then judged by whether it still looks like one.
    if write_end is not None:
        damaged_end = write_end
    else:
        damaged_end = blob.end if blob is not None else base + MM_HEADER_SIZE
    recon = reconstruct(phys, analysis.snapshot.fd, damaged_end, base)
    evidence: list[str] = []
    if recon.table.state != "lost" and recon.table.num_buckets:
        owners = [recon.table.owners.get(b) for b in range(recon.table.lost_entries, recon.table.num_buckets)]
        shown = ", ".join("?" if o is None else str(o) for o in owners[:16]) + (
            " …" if len(owners) > 16 else ""
        )
        evidence.append(
            f"the bucket table at {base + BUCKET_TABLE_OFFSET:,} survives"
            + (" in part" if recon.table.state == "partial" else "")
            + f": {recon.table.num_buckets} allocated bucket(s), owners {shown}"
        )
    if recon.starts and recon.bucket_size_in_pages:
        bs = recon.bucket_size_in_pages
        aligned = [
            s for s in recon.starts if recon.bucket_of_page(s.page) is not None and s.kind != HEADLESS_KIND
        ]
        if aligned:
            where = "; ".join(f"{s.summary} at bucket {recon.bucket_of_page(s.page)}" for s in aligned[:4])
            evidence.append(f"structure headers sit at bucket starts of {bs}-page buckets: {where}")
    evidence.extend(_node_evidence(recon, damaged_end))
    if not evidence:
        return
    report.clobbered = True
    report.recon = recon
    report.clobber_evidence = evidence
    head = phys.read(base, min(MM_HEADER_SIZE, phys.size - base))
    report.clobber_fields = header_field_problems(head)
    ranges = [(base, base + MM_HEADER_SIZE)]
    if damaged_end > base + BUCKET_TABLE_OFFSET:
        ranges.append((base + BUCKET_TABLE_OFFSET, min(damaged_end, base + MM_HEADER_PAGE_USED)))
    if write_end is not None:
        what = f"a {write_end - base:,}-byte Candid message written at the manager's base"
    else:
        what = "a stable_save message" if blob is not None else "other bytes"
    where = (
        f" (on a RestrictedMemory starting at page {base // WASM_PAGE_SIZE:,}; bytes 0..{base:,} belong to the "
        "application)"
        if base
        else ""
    )
    analysis.findings.append(
        Finding(
            "error",
            "memory_manager_clobbered",
            f"bytes {base:,}..{base + MM_HEADER_SIZE:,} are not a MemoryManager header: "
            f"{', '.join(report.clobber_fields)}. "
            f"A MemoryManager was here{where}: {'; '.join(evidence)}. {what[0].upper() + what[1:]} overwrote it; the "
            "next MemoryManager::init will silently start a fresh, empty manager",
            ranges,
            details={
                "header_fields": report.clobber_fields,
                "evidence": evidence,
                "damaged_range": [base, damaged_end],
                "base_offset": base,
                "bucket_table": recon.table.state,
            },
        )
    )
    _adopt_reconstruction(analysis, recon, options, deep)


def _node_evidence(recon: Reconstruction, damaged_end: int) -> list[str]:
    """B-tree node pages whose header is gone, on a chunk grid that starts at a bucket start. They count
    as a manager's trace only together with a write that ran past page 0 (which is what took their
    header), or when the nodes' own addresses confirm where their map starts."""
    bs = recon.bucket_size_in_pages
    base = recon.base_offset
    out: list[str] = []
    for c in recon.node_clusters:
        bucket = recon.bucket_of_page(c.base_page)
        if bucket is None or not c.allocated_nodes:
            continue
        if damaged_end - base <= WASM_PAGE_SIZE and not c.votes:
            continue
        why = (
            f"the write at offset {base:,} is {damaged_end - base:,} bytes long, past "
            + ("page 0" if not base else "the manager's first page")
            if damaged_end - base > WASM_PAGE_SIZE
            else f"{c.votes} node address(es) confirm it"
        )
        out.append(
            f"{c.describe()} sit on a chunk grid that starts at bucket {bucket} of {bs}-page buckets ({why})"
        )
    return out


def _adopt_reconstruction(
    analysis: Analysis, recon: Reconstruction, options: dict[str, Any], deep: bool
) -> None:
    """Decode the reconstructed memories like a manager's and add them to the analysis."""
    from inspector.detect import detect_structures

    refs = recon.memory_refs()
    if not refs:
        analysis.reconstructed = recon
        return
    structures, findings = detect_structures(refs, options)
    recon.structures = structures
    analysis.reconstructed = recon
    analysis.memory_refs.extend(refs)
    analysis.structures.extend(structures)
    analysis.findings.extend(findings)
    if deep:
        for s in structures:
            s.deep()


def _report_blob(analysis: Analysis, report: ForensicsReport) -> None:
    blob = report.blob
    assert blob is not None
    if report.clobbered:
        blob.overwritten = describe_overwritten(blob.end, report.recon, bytes(analysis.snapshot.buf[0:8]))
    analysis.stable_save = blob
    size = analysis.snapshot.size
    if blob.complete:
        types = ", ".join(short_type(t) for t in blob.message.arg_types) if blob.message is not None else ""
        kind = f"a complete Candid message of {blob.length:,} bytes ({types})"
    else:
        kind = f"a Candid message that does not decode ({blob.error}); it is at least {blob.length:,} bytes"
    if report.clobbered:
        hit = compact_overwritten(blob.overwritten)
        message = (
            f"ic-cdk stable_save wrote {kind} at offset 0, over the MemoryManager: it overwrote {hit}. "
            "stable_restore would decode it; everything after its end is older memory"
        )
        severity = "error"
    else:
        message = (
            f"stable memory starts with {kind}, as ic-cdk stable_save writes it; no MemoryManager evidence "
            f"elsewhere in the {size:,}-byte snapshot"
        )
        severity = "info"
    analysis.findings.append(
        Finding(
            severity,
            "stable_save_blob",
            message,
            [(blob.start, blob.end)],
            details={
                "length": blob.length,
                "complete": blob.complete,
                "arg_types": blob.arg_types,
                "overwritten": [o.to_json() for o in blob.overwritten],
            },
        )
    )


def _memory_blobs(analysis: Analysis, report: ForensicsReport) -> None:
    """Candid messages at the start of memories that hold no structure (an upgrade memory)."""
    for s in list(analysis.structures):
        if s.kind != "unknown" or s.memory_id == "raw" or isinstance(s.memory_id, list):
            continue
        blob = find_in_memory(s.mem, s.memory_id)
        if blob is None:
            continue
        report.memory_blobs.append(blob)
        state = (
            f"a complete Candid message of {blob.length:,} bytes"
            if blob.complete
            else f"a Candid message that does not decode ({blob.error})"
        )
        analysis.findings.append(
            Finding(
                "info",
                "stable_save_blob",
                f"memory {s.memory_id} starts with "
                + ("a u32 length prefix and " if blob.length_prefix else "")
                + state
                + " (an upgrade memory written with Candid)",
                list(blob.physical_ranges[:64]),
                memory_id=s.memory_id,
                details={"virtual_range": [blob.start, blob.end], "length_prefix": blob.length_prefix},
            )
        )


def _orphan_scan(analysis: Analysis, report: ForensicsReport, fd: int | None) -> None:
    _apply_orphans(analysis, report, _find_orphans(analysis, report, fd))


def _apply_orphans(analysis: Analysis, report: ForensicsReport, orphans: list[Orphan]) -> None:
    report.orphans = orphans
    at = report.orphan_slot if report.orphan_slot is not None else len(analysis.findings)
    analysis.findings[at:at] = [o.finding() for o in orphans]


def find_deferred_orphans(analysis: Analysis) -> list[Orphan] | None:
    """The orphan scan that ``run_forensics(scan=False)`` left out, run now (None: none was left out).
    It only reads: ``apply_deferred_orphans`` adds what it found, where the caller's views live (the TUI
    runs this in a worker after its first paint: on a big map the scan walks a long free list)."""
    report = report_of(analysis)
    if report is None or report.scanned:
        return None
    return _find_orphans(analysis, report, analysis.snapshot.fd)


def apply_deferred_orphans(analysis: Analysis, orphans: list[Orphan]) -> None:
    """Add the findings of a deferred orphan scan and rebuild the diagnosis, as ``run_forensics`` would
    have (the findings go where it puts them: before the recognition findings)."""
    report = report_of(analysis)
    if report is None or report.scanned:
        return
    report.scanned = True
    _apply_orphans(analysis, report, orphans)
    _conclude(analysis, report)


def _find_orphans(analysis: Analysis, report: ForensicsReport, fd: int | None) -> list[Orphan]:
    snap = analysis.snapshot
    buf, size = snap.buf, snap.size
    mm = analysis.mm
    orphans: list[Orphan] = []
    if mm.present or report.clobbered:
        if report.clobber_write is not None:
            tail = scan_page0_tail(buf, size, report.clobber_write[1], report.clobber_write[0])
        else:
            tail = scan_page0_tail(
                buf, size, report.blob.end if report.blob is not None else 0, mm.base_offset
            )
        if tail is not None:
            orphans.append(tail)
    if mm.present and mm.bucket_size_in_pages:
        orphans.extend(
            scan_unowned_buckets(
                buf, size, fd, mm.table, mm.bucket_size_in_pages, mm.base_offset, frozenset(mm.holes)
            )
        )
    for s in analysis.structures:
        if isinstance(s, BTreeMapStructure):
            found = scan_map_orphans(s, fd)
            if found is not None:
                orphans.append(found)
    return orphans


def unreachable_regions(analysis: Analysis) -> list[Region]:
    """Regions for the "Unreachable data" node: the stable_save message(s) and the orphans."""
    report = report_of(analysis)
    if report is None:
        return []
    out: list[Region] = []
    if report.blob is not None:
        out.append(report.blob.region())
    out.extend(b.region() for b in report.memory_blobs)
    out.extend(o.region() for o in report.orphans)
    return out
