"""Layouts real canisters use beyond "a MemoryManager at byte 0" (FORMAT.md §14, docs/LAYOUTS.md).

* ``locate_manager``: the manager at offset 0, at a page-aligned base found by a sparse-aware page scan
  (``RestrictedMemory``), or at ``--base``;
* ``application_region``: the bytes before a restricted base, owned by the application, not an incident;
* ``attach_nested``: managers initialised inside a virtual memory of another one (ids ``"5/1"``);
* ``bucket_order_risk``: memories whose content shows that the bucket order the library reads after a
  reload is not the order they were written in (0.7.1 ``reclaim_memory``);
* ``recognition_findings``: nothing recognised is an error, an all-zero memory is ``empty_memory``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

from inspector.jsonout import JsonObject
from inspector.layouts import (
    MM_HEADER_PAGE_USED,
    MM_MAGIC,
    STRUCTURE_MAGICS,
    WASM_PAGE_SIZE,
)
from inspector.memory import Memory, OutOfBounds
from inspector.memory_manager import MemoryManagerInfo, read_memory_manager
from inspector.mm_locate import DIDL, choose_base
from inspector.model import Field, Finding, Region
from inspector.snapshot import InputError, Snapshot
from inspector.structures.base import Structure, StructureId

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.analysis.forensics import ForensicsReport
    from inspector.analysis.stable_save import StableSaveBlob

MAX_NESTING = 4  # managers inside managers, counting the outermost one
HEAD_SHOWN = 32
# Structures whose header sits at offset 0 of a memory (not node/chunk magics, which sit anywhere).
_HEADER_MAGICS = frozenset({b"BTR", b"SCL", b"SVC", b"SMH", b"GLI", b"GLD"})
# Bytes checked for "never written": a memory beyond this is judged by its first 64 MiB.
ZERO_CHECK_LIMIT = 64 << 20


# --- where the manager is ------------------------------------------------------------------------------


def locate_manager(snapshot: Snapshot, base: int | None = None) -> MemoryManagerInfo:
    phys = snapshot.memory
    if base is not None:
        if base < 0 or base + MM_HEADER_PAGE_USED > phys.size:
            raise InputError(
                f"--base {base:,}: a MemoryManager header there would run past the end of the "
                f"{phys.size:,}-byte snapshot"
            )
        mm = read_memory_manager(phys, base)
        if not mm.present:
            raise InputError(f"--base {base:,}: no MemoryManager header there ({mm.reason})")
        mm.base_source = "--base"
        return mm
    choice = choose_base(phys, snapshot.fd)
    if not choice.base:
        return read_memory_manager(phys)
    mm = read_memory_manager(phys, choice.base)
    mm.base_source = choice.source
    return mm


# --- the application's own bytes before a restricted base ---------------------------------------------


def application_region(analysis: Analysis) -> JsonObject | None:
    mm = analysis.mm
    if not mm.present or not mm.base_offset or mm.host_memory_id is not None:
        return None
    phys = analysis.snapshot.memory
    base = mm.base_offset
    head = phys.read(0, min(base, HEAD_SHOWN))
    out: JsonObject = {
        "range": [0, base],
        "owner": "application (not managed by ic-stable-structures)",
        "first_bytes_hex": head.hex(),
        "first_bytes_ascii": _ascii(head),
        "content": "bytes" if any(head) or not _range_zero(analysis.snapshot, 0, base) else "zero",
    }
    if head[:4] == DIDL:
        from inspector.analysis.stable_save import find_at_physical_zero

        blob = find_at_physical_zero(phys)
        if blob is not None and blob.end <= base:
            out["content"] = "candid"
            out["candid"] = blob.to_json()
            out["candid"]["decoded"] = _candid_text(blob)
    return out


def _candid_text(blob: StableSaveBlob) -> str:
    """The decoded value, shortened for display (vectors to 8 items, texts to 80 characters)."""
    if blob.message is None:
        return f"does not decode: {blob.error}"
    from inspector.decode.candid_render import message_text

    return message_text(blob.message, max_vec_items=8, max_text_len=80)[:2000]


def _ascii(data: bytes) -> str:
    return "".join(chr(c) if 32 <= c < 127 else "." for c in data)


def application_region_node(analysis: Analysis) -> Region | None:
    info = analysis.extras.get("application_region")
    if not info:
        return None
    base = info["range"][1]
    fields = [
        Field("range", f"[0, {base:,})"),
        Field("first_bytes_hex", info["first_bytes_hex"]),
        Field("first_bytes_ascii", info["first_bytes_ascii"]),
    ]
    children: list[Region] = []
    detail = f"{base:,} bytes, first bytes {info['first_bytes_hex'][:16]}"
    if info.get("candid"):
        c = info["candid"]
        fields.append(Field("candid", c.get("decoded", "")))
        children.append(
            Region(
                f"Candid message ({c['length']:,} bytes)",
                "candid_message",
                [tuple(c["range"])],  # type: ignore[list-item]
                detail=str(c.get("decoded", ""))[:120],
            )
        )
        detail = f"{base:,} bytes, starts with a Candid message of {c['length']:,} bytes"
    return Region(
        "Application region (not managed by ic-stable-structures)",
        "application",
        [(0, min(base, analysis.snapshot.size))],
        fields=fields,
        children=children,
        detail=detail,
    )


# --- nested managers ----------------------------------------------------------------------------------


class NestedManager(Structure):
    """A MemoryManager at virtual offset 0 of a memory: that memory is the inner manager's whole world."""

    kind = "memory_manager"
    magic = "MGR"
    is_sequence = True

    def __init__(
        self, mem: Memory, memory_id: int | str, inner: MemoryManagerInfo, structures: list[Structure]
    ) -> None:
        super().__init__(mem, memory_id)
        self.inner = inner
        self.inner_structures = {s.memory_id: s for s in structures}

    def _view(self) -> _Inner:
        return _Inner(self.inner, self.mem, self.inner_structures)

    def header_json(self) -> JsonObject:
        i = self.inner
        return {
            "layout_version": i.layout_version,
            "num_allocated_buckets": i.num_allocated_buckets,
            "bucket_size_in_pages": i.bucket_size_in_pages,
            "inner_memory_ids": [m.memory.memory_id for m in i.memories],
        }

    def region(self) -> Region:
        from inspector.regions import memories_region, mm_region

        # _Inner carries the part of an Analysis these two read (mm, host, findings, structures).
        view = cast("Analysis", self._view())
        region = mm_region(view)
        region.add(memories_region(view))
        region.memory_id = self.memory_id if not isinstance(self.memory_id, list) else None
        region.detail = f"nested: {region.detail}, memories " + ", ".join(
            str(m.memory.memory_id) for m in self.inner.memories
        )
        return region


class _Inner:
    """What ``mm_region``/``memories_region`` need from an analysis, for an inner manager."""

    def __init__(self, mm: MemoryManagerInfo, host: Memory, structures: dict[Any, Structure]) -> None:
        self.mm = mm
        self.host = host
        self._structures = structures

    def all_findings(self) -> list[Finding]:
        return list(self.mm.findings)

    def structure(self, memory_id: StructureId) -> Structure | None:
        return self._structures.get(memory_id)


def attach_nested(analysis: Analysis, options: dict[str, Any] | None) -> None:
    """Find managers at offset 0 of virtual memories, decode them and their structures (depth ≤ 4)."""
    from inspector.detect import detect_structures

    def visit(mm: MemoryManagerInfo, depth: int) -> None:
        for m in mm.memories:
            vm = m.memory
            try:
                if vm.size < MM_HEADER_PAGE_USED or vm.read(0, 3) != MM_MAGIC:
                    continue
            except OutOfBounds:
                continue
            if depth >= MAX_NESTING:
                analysis.findings.append(
                    Finding(
                        "warning",
                        "nesting_too_deep",
                        f"memory {vm.memory_id} holds another MemoryManager, nested {depth + 1} levels deep; "
                        f"only {MAX_NESTING} levels are decoded",
                        vm.physical_ranges(0, 3),
                        memory_id=vm.memory_id,
                    )
                )
                continue
            inner = read_memory_manager(vm, 0, host_memory_id=vm.memory_id)
            if not inner.present:
                continue
            m.inner = inner
            inner.base_source = f"'MGR' at offset 0 of memory {vm.memory_id}"
            analysis.findings.extend(inner.findings)
            refs = [(im.memory.memory_id, im.memory) for im in inner.memories]
            structures, findings = detect_structures(refs, options)
            host = NestedManager(vm, vm.memory_id, inner, structures)
            analysis.structures[:] = [host if s.memory_id == vm.memory_id else s for s in analysis.structures]
            analysis.structures.extend(structures)
            analysis.findings.extend(findings)
            analysis.memory_refs.extend(refs)
            visit(inner, depth + 1)

    if analysis.mm.present and analysis.mm.memories:
        visit(analysis.mm, 1)


def managers(mm: MemoryManagerInfo) -> list[MemoryManagerInfo]:
    """The manager and every manager nested in it, outermost first."""
    out = [mm]
    for m in mm.memories:
        if m.inner is not None:
            out.extend(managers(m.inner))
    return out


# --- reclaimed buckets: a bucket order the content contradicts ----------------------------------------


def bucket_order_risk(analysis: Analysis) -> None:
    """A memory whose first page holds no structure while a structure header starts one of its later
    buckets was written with another bucket order than the table gives on reload (FORMAT.md §14.3)."""
    if not analysis.mm.present:
        return
    from inspector.memory import merge_ranges, range_contains
    from inspector.sparse import data_ranges

    snap = analysis.snapshot
    # Bucket starts inside holes are zero: no header there, and touching them would map pages for nothing.
    data = merge_ranges(data_ranges(snap.fd, snap.size) if snap.fd is not None else [(0, snap.size)])
    for mm in managers(analysis.mm):
        bs = mm.bucket_size_bytes
        holes = mm.holes
        for m in mm.memories:
            if len(m.buckets) < 2 or not bs:
                continue
            s = analysis.structure(m.memory.memory_id)
            if s is None or s.kind not in ("unknown", "empty") or s.magic == "MGR":
                continue  # a structure, or a manager nested too deep to decode: its pages are in order
            for k in range(1, len(m.buckets)):
                try:
                    if not range_contains(data, m.memory.to_physical(k * bs)):
                        continue
                    magic = m.memory.peek(k * bs, 3)
                except OutOfBounds:
                    break
                if magic not in _HEADER_MAGICS:
                    continue
                writer = m.buckets[k:] + m.buckets[:k]
                what = f"{STRUCTURE_MAGICS.get(magic, 'structure')} ({magic.decode('latin-1')})"
                mid = m.memory.memory_id
                hole_text = (
                    f" The bucket table has {len(holes)} free hole(s) below num_allocated_buckets "
                    f"(bucket {', '.join(map(str, holes[:8]))}): MemoryManager::reclaim_memory of 0.7.1 ran."
                    if holes
                    else ""
                )
                analysis.findings.append(
                    Finding(
                        "error",
                        "bucket_order_risk",
                        f"memory {mid}'s first page (bucket {m.buckets[0]}) holds no structure, but a {what} "
                        f"header starts its bucket {m.buckets[k]}: the memory was written with the buckets in "
                        f"the order {_blist(writer)}, while every library version reads them in table order "
                        f"{_blist(m.buckets)} after a reload. A lower bucket freed by reclaim_memory (0.7.1) "
                        f"was given to it after its own. On the next upgrade its {what} is not found and "
                        "the library silently creates an empty one: its data would be lost. Do not upgrade; "
                        "copy the memory out in the writer's order first." + hole_text,
                        m.memory.physical_ranges(k * bs, 3),
                        memory_id=mid,
                        details={
                            "buckets_in_table_order": list(m.buckets),
                            "likely_writer_order": writer,
                            "header_in_bucket": m.buckets[k],
                            "holes": holes,
                        },
                    )
                )
                break


def _blist(b: list[int]) -> str:
    return "[" + ", ".join(map(str, b[:12])) + (", …]" if len(b) > 12 else "]")


# --- nothing recognised / empty memory ----------------------------------------------------------------


def recognition_findings(analysis: Analysis, report: ForensicsReport) -> None:
    snap = analysis.snapshot
    mm = analysis.mm
    # Memories grown but never written (every manager level).
    if mm.present:
        for level in managers(mm):
            for m in level.memories:
                s = analysis.structure(m.memory.memory_id)
                if s is None or s.kind != "empty" or not m.memory.size:
                    continue
                if _memory_all_zero(m.memory, snap.fd):
                    analysis.findings.append(
                        Finding(
                            "info",
                            "empty_memory",
                            f"memory {m.memory.memory_id} was grown to {m.size_pages:,} page(s) but never "
                            "written: all its bytes are zero",
                            m.memory.physical_ranges(0, min(m.memory.size, WASM_PAGE_SIZE))[:1],
                            memory_id=m.memory.memory_id,
                        )
                    )
        return
    if report.blob is not None or report.clobbered or analysis.reconstructed is not None:
        return
    if any(s.kind not in ("unknown", "empty") for s in analysis.structures):
        return
    if snap.size == 0:
        return  # the snapshot reader already says so (stable_memory_empty)
    if _file_all_zero(snap):
        analysis.findings.append(
            Finding(
                "info",
                "empty_memory",
                f"all {snap.size:,} bytes of stable memory are zero: nothing was ever written",
                [(0, snap.size)],
            )
        )
        return
    head = snap.memory.read(0, min(snap.size, 4096))
    analysis.findings.append(
        Finding(
            "error",
            "no_layout_recognised",
            "no layout recognised: " + describe_bytes(head) + ". It is not a MemoryManager ('MGR' at 0 or at "
            "any page start), not an ic-stable-structures structure (BTR, SCL, SVC, SMH, GLI, GLD), and not a "
            "stable_save Candid message (DIDL)",
            [(0, min(snap.size, WASM_PAGE_SIZE))],
            details={"first_bytes_hex": head[:HEAD_SHOWN].hex()},
        )
    )


def describe_bytes(head: bytes) -> str:
    shown = head[:16]
    text = f"the first bytes are {shown.hex(' ')} ('{_ascii(shown)}')"
    if not head:
        return text
    counts = [0] * 256
    for c in head:
        counts[c] += 1
    n = len(head)
    entropy = -sum(c / n * math.log2(c / n) for c in counts if c)
    printable = sum(1 for c in head if 32 <= c < 127 or c in (9, 10, 13))
    if head[:4] == b"\x00asm":
        kind = "a WebAssembly module"
    elif entropy > 7.0:
        kind = f"random-looking or compressed data ({entropy:.1f} bits of entropy per byte)"
    elif printable > 0.9 * n:
        kind = "mostly printable text"
    elif head.count(0) > 0.5 * n:
        kind = f"sparse binary data ({head.count(0) * 100 // n}% zero bytes)"
    else:
        kind = f"binary data of an unknown format ({entropy:.1f} bits of entropy per byte)"
    return f"{text}, which look like {kind}"


def _memory_all_zero(mem: Memory, fd: int | None) -> bool:
    """Whether a memory's bytes (its first 64 MiB at most) are zero. Only the parts of its buckets that the
    file holds as data are read: holes are zero by definition, so a huge sparse memory costs nothing."""
    from inspector.sparse import data_ranges, is_zero

    root: Any = getattr(mem, "root", mem)  # the snapshot file (a PhysicalMemory) under any nesting
    n = min(mem.size, ZERO_CHECK_LIMIT)
    try:
        pieces = mem.physical_ranges(0, n)
    except OutOfBounds:
        return False
    lo, hi = (pieces[0][0], max(e for _s, e in pieces)) if pieces else (0, 0)
    data = data_ranges(fd, root.size) if fd is not None else [(0, root.size)]
    data = [(max(a, lo), min(b, hi)) for a, b in data if b > lo and a < hi]
    step = 1 << 22
    for s, e in pieces:
        for a, b in data:
            a, b = max(a, s), min(b, e)
            for pos in range(a, b, step):
                if not is_zero(root.buf[pos : min(b, pos + step)]):
                    return False
    return True


def _range_zero(snap: Snapshot, start: int, end: int, limit: int = ZERO_CHECK_LIMIT) -> bool:
    """Whether physical [start, end) is zero, reading only data (not holes) and at most ``limit`` bytes."""
    from inspector.sparse import data_ranges, is_zero

    ranges = data_ranges(snap.fd, snap.size) if snap.fd is not None else [(0, snap.size)]
    budget = limit
    for lo, hi in ranges:
        lo, hi = max(lo, start), min(hi, end)
        for pos in range(lo, hi, 1 << 22):
            take = min(hi, pos + (1 << 22)) - pos
            if budget <= 0:
                return True  # judged by what was read
            if not is_zero(snap.buf[pos : pos + take]):
                return False
            budget -= take
    return True


def _file_all_zero(snap: Snapshot) -> bool:
    from inspector.sparse import data_ranges, is_zero

    fd = snap.fd
    ranges = data_ranges(fd, snap.size) if fd is not None else [(0, snap.size)]
    buf = snap.buf
    for lo, hi in ranges:
        for pos in range(lo, hi, 1 << 22):
            if not is_zero(buf[pos : min(hi, pos + (1 << 22))]):
                return False
    return True
