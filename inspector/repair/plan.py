"""What ``repair`` writes, decided from an ``Analysis`` before a byte is written.

Two incidents are repaired (FORMAT.md §11.1, §11.2):

* **header clobbered**: a write at offset 0 (a ``stable_save`` message) destroyed the MemoryManager
  header and maybe its bucket table. The header and table are rebuilt from the reconstruction at the
  same base offset. MemoryIds the bytes no longer hold come from ``--reference`` (an earlier snapshot's
  table) or ``--assign``; when one is still unknown nothing is written. Memory sizes are set so that
  every surviving structure fits. A map whose own header is gone too is rebuilt from its salvaged
  nodes. Structures whose headers were overwritten are listed as lost.
* **re-initialised**: a fresh manager and fresh, near-empty maps were created over the old data. Each
  map with salvageable old nodes is rebuilt from its live entries and the salvaged ones (``prefer``
  decides conflicts), as a fresh valid B-tree in the live header's layout, growing the memory or
  allocating new buckets when it needs more room.

Everything not named in the plan's writes stays byte-identical. A map's memory is rewritten from its
virtual 0 to the end of its old contents (stale nodes past the new tree are cleared, so the repaired map
has no orphans that a later salvage could mistake for data).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

from inspector.layouts import (
    CELL_HEADER,
    CHUNK_HEADER_SIZE,
    MM_HEADER_PAGE_USED,
    UNALLOCATED_BUCKET,
    VEC_DATA_OFFSET,
    WASM_PAGE_SIZE,
)
from inspector.memory import Range, merge_ranges
from inspector.repair.btree_writer import build_btree
from inspector.repair.mm_writer import bucket_start, manager_page, physical_size

_BE32 = struct.Struct(">I").pack
PREFER_CHOICES = ("live", "salvaged")
SCAN_BLOCK = 1 << 20
MAX_VALUE_HEX = 4096


class RepairError(Exception):
    """The repair cannot be planned (ambiguous MemoryIds, nothing to rebuild from…): nothing is written."""


def entries_digest(keys: list[bytes], values: list[bytes]) -> str:
    """The fixtures' ``entries_sha256``: u32 BE len(key), key, u32 BE len(value), value, in key order."""
    h = hashlib.sha256()
    for k, v in zip(keys, values, strict=True):
        h.update(_BE32(len(k)) + k + _BE32(len(v)) + v)
    return h.hexdigest()


def _text(b: bytes) -> str | None:
    try:
        t = b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return t if t.isprintable() else None


@dataclass
class Conflict:
    memory_id: int
    key: bytes
    live: bytes | None  # the live value (None: the key is only in salvaged nodes)
    salvaged: list[bytes]
    kept: str  # "live" | "salvaged" | "none" (two salvaged copies disagree: neither is written)

    def to_json(self) -> dict[str, Any]:
        def val(v: bytes) -> dict[str, Any]:
            out: dict[str, Any] = {"len": len(v), "sha256": hashlib.sha256(v).hexdigest()}
            if len(v) <= MAX_VALUE_HEX:
                out["hex"] = v.hex()
            return out

        out: dict[str, Any] = {"memory_id": self.memory_id, "key_hex": self.key.hex()}
        text = _text(self.key)
        if text is not None:
            out["key_utf8"] = text
        out["live"] = val(self.live) if self.live is not None else None
        out["salvaged"] = [val(v) for v in self.salvaged]
        out["kept"] = self.kept
        return out


@dataclass
class MapPlan:
    """One map of the repaired snapshot and where its entries come from."""

    memory_id: int
    action: str  # "rebuilt" | "kept"
    keys: list[bytes]
    values: list[bytes]
    live: int
    salvaged: int
    conflicts: list[Conflict]
    prefer: str
    page_size: int = 0
    key_layout: str | int = "prefixed"
    node_count: int = 0
    extent: int = 0

    @property
    def count(self) -> int:
        return len(self.keys)

    @property
    def digest(self) -> str:
        return entries_digest(self.keys, self.values)

    def line(self) -> str:
        text = f"memory {self.memory_id}: {self.live:,} live + {self.salvaged:,} salvaged = {self.count:,} entries"
        if self.conflicts:
            kept = {c.kept for c in self.conflicts}
            how = f"{self.prefer} kept" if kept <= {"live", "salvaged"} else "see conflicts"
            text += f", {len(self.conflicts)} conflict{'s' if len(self.conflicts) != 1 else ''}, {how}"
        if self.action == "kept":
            text += " (the map is intact: kept as it is)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "entries_sha256": self.digest,
            "action": self.action,
            "live": self.live,
            "salvaged": self.salvaged,
            "conflicts": len(self.conflicts),
            "page_size": self.page_size,
            "key_layout": self.key_layout,
        }


@dataclass
class Write:
    start: int  # physical
    data: bytes
    what: str

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass
class RepairPlan:
    case: str  # "header_clobbered" | "reinitialised" | "nothing"
    base_offset: int
    bucket_size_pages: int
    owners: list[int | None]
    sizes: dict[int, int]
    input_size: int
    output_size: int
    writes: list[Write] = field(default_factory=list)
    maps: dict[int, MapPlan] = field(default_factory=dict)
    restored: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stable_save: Range | None = None

    @property
    def written_ranges(self) -> list[Range]:
        ranges = merge_ranges([(w.start, w.end) for w in self.writes])
        if self.output_size > self.input_size:
            ranges = merge_ranges([*ranges, (self.input_size, self.output_size)])
        return ranges

    @property
    def conflicts(self) -> list[Conflict]:
        return [c for m in self.maps.values() for c in m.conflicts]

    def add(self, start: int, data: bytes, what: str) -> None:
        if data:
            self.writes.append(Write(start, data, what))

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "memory_manager": {
                "base_offset": self.base_offset,
                "bucket_size_in_pages": self.bucket_size_pages,
                "num_allocated_buckets": len(self.owners),
                "bucket_owners": list(self.owners),
                "memory_sizes_in_pages": {str(k): v for k, v in sorted(self.sizes.items()) if v},
            },
            "input_size_bytes": self.input_size,
            "output_size_bytes": self.output_size,
            "written_ranges": [list(r) for r in self.written_ranges],
            "writes": [{"range": [w.start, w.end], "what": w.what} for w in self.writes],
            "restored": self.restored,
            "lost": self.lost,
            "conflicts": [c.to_json() for c in self.conflicts],
            "maps": {str(k): m.to_json() for k, m in sorted(self.maps.items())},
            "stable_save_range": list(self.stable_save) if self.stable_save else None,
            "notes": list(self.notes),
        }


# --- entries --------------------------------------------------------------------------------------------


def merge_entries(
    memory_id: int, live: list[tuple[bytes, bytes]], salvaged: list[tuple[bytes, bytes]], prefer: str
) -> tuple[list[bytes], list[bytes], int, int, list[Conflict]]:
    """Live ∪ salvaged, keys in byte order. A key with two different values is a conflict: ``prefer``
    picks between a live and a salvaged value; two salvaged values that disagree are never guessed
    between (neither is written, both are reported)."""
    live_map = dict(live)
    salv: dict[bytes, list[bytes]] = {}
    for k, v in salvaged:
        vals = salv.setdefault(k, [])
        if v not in vals:
            vals.append(v)
    out: dict[bytes, bytes] = {}
    origin: dict[bytes, str] = {}
    conflicts: list[Conflict] = []
    for k, v in live_map.items():
        out[k], origin[k] = v, "live"
    for k, vals in salv.items():
        lv = live_map.get(k)
        if lv is not None:
            if vals == [lv]:
                continue  # the same entry, seen twice
            others = [v for v in vals if v != lv]
            if prefer == "salvaged" and len(others) == 1:
                out[k], origin[k] = others[0], "salvaged"
                conflicts.append(Conflict(memory_id, k, lv, others, "salvaged"))
            else:
                conflicts.append(Conflict(memory_id, k, lv, others, "live"))
            continue
        if len(vals) == 1:
            out[k], origin[k] = vals[0], "salvaged"
        else:
            conflicts.append(Conflict(memory_id, k, None, vals, "none"))
    keys = sorted(out)
    n_live = sum(1 for k in keys if origin[k] == "live")
    return keys, [out[k] for k in keys], n_live, len(keys) - n_live, conflicts


# --- physical placement ----------------------------------------------------------------------------------


class Layout:
    """The repaired manager's buckets: where a memory's virtual bytes land physically."""

    def __init__(self, base: int, bucket_size_pages: int, owners: list[int | None]) -> None:
        self.base = base
        self.bs_pages = bucket_size_pages
        self.bs = bucket_size_pages * WASM_PAGE_SIZE
        self.owners = owners

    def buckets(self, mid: int) -> list[int]:
        return [b for b, o in enumerate(self.owners) if o == mid]

    def capacity(self, mid: int) -> int:
        return len(self.buckets(mid)) * self.bs

    def grow_to(self, mid: int, nbytes: int) -> list[int]:
        """Allocate buckets at the end of the table until the memory holds ``nbytes``; the new ones."""
        new: list[int] = []
        while self.capacity(mid) < nbytes:
            self.owners.append(mid)
            new.append(len(self.owners) - 1)
        return new

    def physical(self, mid: int, offset: int, n: int) -> list[Range]:
        out: list[Range] = []
        buckets = self.buckets(mid)
        pos, end = offset, offset + n
        while pos < end:
            k, off = divmod(pos, self.bs)
            take = min(end - pos, self.bs - off)
            s = bucket_start(self.base, buckets[k], self.bs_pages) + off
            out.append((s, s + take))
            pos += take
        return out

    def place(self, plan: RepairPlan, mid: int, offset: int, data: bytes, what: str) -> None:
        pos = 0
        for s, e in self.physical(mid, offset, len(data)):
            plan.add(s, data[pos : pos + e - s], what)
            pos += e - s

    @property
    def physical_size(self) -> int:
        return physical_size(self.base, len(self.owners), self.bs_pages)


def _last_nonzero_end(buf: Any, size: int, ranges: list[Range]) -> int:
    """For a memory made of the physical ``ranges`` (in virtual order): the virtual offset just past its
    last non-zero byte (0 when it is all zero). Read backwards in blocks, so the cost is the tail's."""
    starts = [0]
    for s, e in ranges:
        starts.append(starts[-1] + e - s)
    for i in range(len(ranges) - 1, -1, -1):
        s, e = ranges[i]
        hi = min(e, size)
        while hi > s:
            lo = max(s, hi - SCAN_BLOCK)
            block = bytes(buf[lo:hi]).rstrip(b"\0")
            if block:
                return starts[i] + (lo - s) + len(block)
            hi = lo
    return 0


def _pages(nbytes: int) -> int:
    return -(-nbytes // WASM_PAGE_SIZE)


# --- map rebuilding -------------------------------------------------------------------------------------


def _map_layout(bmap: Any) -> dict[str, Any]:
    """Header layout of a walker: what a rebuilt tree is written in."""
    kl = bmap.key_layout
    out: dict[str, Any] = {
        "page_size": bmap.page_size,
        "key_fixed_size": 0 if kl == "prefixed" else int(kl),
        "header_version": 2,
    }
    if bmap.page_size_kind in ("v1_derived", "v2_derived"):
        out.update(
            header_version=1, max_key_size=bmap.max_key_size or 0, max_value_size=bmap.max_value_size or 0
        )
    return out


def rebuild_map(
    plan: RepairPlan, layout: Layout, phys: Any, mid: int, mp: MapPlan, header: dict[str, Any]
) -> None:
    """Write a fresh tree for ``mp`` into memory ``mid`` (growing it when needed) and clear the old
    contents past it, in every bucket the memory now has (a bucket it grows into may hold old nodes)."""
    image = build_btree(mp.keys, mp.values, **header)
    mp.page_size, mp.node_count, mp.extent = header["page_size"], image.node_count, image.extent
    mp.key_layout = header["key_fixed_size"] or "prefixed"
    new = layout.grow_to(mid, image.extent)
    if new:
        plan.notes.append(
            f"memory {mid}: the rebuilt map needs {image.extent:,} bytes, more than its buckets held: allocated "
            f"bucket(s) {', '.join(map(str, new))} at the end of the table"
        )
    for b in new:
        s, e = (
            bucket_start(layout.base, b, layout.bs_pages),
            bucket_start(layout.base, b + 1, layout.bs_pages),
        )
        if s < phys.size and _last_nonzero_end(phys.buf, phys.size, [(s, e)]):
            plan.notes.append(
                f"bucket {b} (physical {s:,}..{e:,}) held older bytes that no memory owned; the output overwrites "
                "them (the input keeps them)"
            )
    end = _old_extent(phys, layout, mid)
    layout.place(plan, mid, 0, bytes(image.data), f"memory {mid}: rebuilt BTreeMap ({mp.count:,} entries)")
    if end > image.extent:
        layout.place(
            plan, mid, image.extent, bytes(end - image.extent), f"memory {mid}: old map bytes cleared"
        )
    plan.sizes[mid] = max(plan.sizes.get(mid, 0), _pages(image.extent))


def _old_extent(phys: Any, layout: Layout, mid: int) -> int:
    ranges = [
        (bucket_start(layout.base, b, layout.bs_pages), bucket_start(layout.base, b + 1, layout.bs_pages))
        for b in layout.buckets(mid)
    ]
    return _last_nonzero_end(phys.buf, phys.size, ranges)


# --- the two cases --------------------------------------------------------------------------------------


def _live_map_plan(
    structure: Any, prefer: str, fd: int | None, extra_mem: Any = None
) -> tuple[MapPlan, dict[str, Any]] | None:
    """A map under a live (or reconstructed) header: its live entries plus the salvageable ones."""
    from inspector.analysis.salvage import salvage_structure

    mid = structure.memory_id
    result = salvage_structure(structure, layout="live", label=f"memory {mid}", fd=fd, mem=extra_mem)
    live = [(e.key, e.value) for e in result.entries if e.reachability == "reachable"]
    salvaged = [(e.key, e.value) for e in result.entries if e.reachability == "unreachable"]
    keys, values, n_live, n_salv, conflicts = merge_entries(mid, live, salvaged, prefer)
    action = "rebuilt" if salvaged else "kept"
    mp = MapPlan(mid, action, keys, values, n_live, n_salv, conflicts, prefer)
    bmap = structure.map
    mp.page_size = bmap.page_size
    mp.key_layout = bmap.key_layout
    return mp, _map_layout(bmap)


def _with_buckets(mem: Any, extra: list[int]) -> Any:
    from inspector.analysis.salvage import extended_memory
    from inspector.memory import VirtualMemory

    base: Any = extended_memory(mem)
    buckets = [*base.buckets, *extra]
    return VirtualMemory(
        base.phys, base.memory_id, buckets, base.bucket_size_bytes, len(buckets) * base.bucket_size_bytes
    )


def _reference_lost(plan: RepairPlan, reference: Any, mid: int, mp: MapPlan) -> None:
    """With a reference snapshot: its entries of this map that the repaired map does not hold."""
    ref = reference.structure(mid) if reference is not None else None
    if ref is None or getattr(ref, "kind", "") != "btreemap":
        return
    have = set(mp.keys)
    missing = sum(1 for e in ref.map.iter_entries() if bytes(e.key) not in have)
    if missing:
        plan.lost.append(
            {
                "memory_id": mid,
                "what": "map entries",
                "count": missing,
                "text": f"memory {mid}: {missing:,} entries of the reference's map are in no surviving node "
                "(their nodes were overwritten)",
            }
        )


def plan_reinitialised(analysis: Any, prefer: str, reference: Any | None = None) -> RepairPlan:
    from inspector.analysis.headless import continuation_buckets

    mm = analysis.mm
    snap = analysis.snapshot
    base = int(getattr(mm, "base_offset", 0) or 0)
    owners: list[int | None] = [
        None if o == UNALLOCATED_BUCKET else o for o in mm.table[: mm.num_allocated_buckets]
    ]
    sizes = {i: p for i, p in enumerate(mm.memory_sizes_in_pages) if p}
    plan = RepairPlan(
        "reinitialised", base, mm.bucket_size_in_pages, owners, dict(sizes), snap.size, snap.size
    )
    layout = Layout(base, mm.bucket_size_in_pages, owners)
    for s in analysis.structures:
        if getattr(s, "kind", "") != "btreemap" or not isinstance(s.memory_id, int):
            continue
        if not s.map.walkable or not s.map.allocator_ok:
            continue
        extra = continuation_buckets(analysis, s)
        found = _live_map_plan(s, prefer, snap.fd, _with_buckets(s.mem, extra) if extra else None)
        if found is None:
            continue
        if extra:
            plan.notes.append(
                f"memory {s.memory_id}: the old map continues in unowned bucket(s) {', '.join(map(str, extra))} "
                "(its chunk grid runs on through them): scanned too"
            )
        mp, header = found
        if mp.action != "rebuilt":
            continue
        plan.maps[s.memory_id] = mp
        rebuild_map(plan, layout, snap.memory, s.memory_id, mp, header)
        plan.restored.append(
            {
                "memory_id": s.memory_id,
                "what": "BTreeMap",
                "entries": mp.count,
                "live": mp.live,
                "salvaged": mp.salvaged,
                "text": mp.line(),
            }
        )
        if reference is not None:
            _reference_lost(plan, reference, s.memory_id, mp)
        else:
            plan.lost.append(
                {
                    "memory_id": s.memory_id,
                    "what": "map entries",
                    "text": f"memory {s.memory_id}: old entries whose nodes sat in chunks the re-created map re-used "
                    "are gone (pass --reference OLD_SNAPSHOT to count them)",
                }
            )
    if not plan.maps:
        plan.case = "nothing"
        plan.notes.append(
            "the MemoryManager is intact and no map has salvageable old nodes: nothing to repair"
        )
        return plan
    _finish_manager(plan, layout, snap.size, sizes, clear_tail=False)
    return plan


def _finish_manager(
    plan: RepairPlan, layout: Layout, input_size: int, before: dict[int, int] | None, *, clear_tail: bool
) -> None:
    """Write the header (and table) when they change; grow the file to hold every bucket."""
    plan.owners = layout.owners
    page = manager_page(layout.bs_pages, layout.owners, plan.sizes, clear_tail=clear_tail)
    if before is None or before != plan.sizes or clear_tail:
        plan.add(layout.base, page, "MemoryManager header and bucket table")
    plan.output_size = max(input_size, layout.physical_size)


def _structure_needs(s: Any) -> int | None:
    """Bytes of its memory a surviving structure needs, from its own header."""
    kind = getattr(s, "kind", "")
    if kind == "btreemap":
        bmap = s.map
        if bmap.allocator_ok and bmap.frontier >= 0:
            return int(bmap.frontier) + CHUNK_HEADER_SIZE
        return None
    if kind == "cell":
        return int(CELL_HEADER.size + s.value_length)
    if kind in ("vec", "minheap"):
        return int(VEC_DATA_OFFSET + s.length * s.slot_size)
    return None


def _parse_assignments(texts: list[str]) -> dict[str, int]:
    from inspector.cli import _parse_memory_id

    out: dict[str, int] = {}
    for text in texts:
        left, sep, right = text.partition("=")
        if not sep:
            raise RepairError(f"--assign {text!r}: expected '?b<bucket>=<MemoryId>', e.g. '?b1=4'")
        key = _parse_memory_id(left)
        mid = _parse_memory_id(right)
        if not isinstance(key, str) or not key.startswith("?") or not isinstance(mid, int):
            raise RepairError(f"--assign {text!r}: expected '?b<bucket>=<MemoryId>', e.g. '?b1=4'")
        out[key] = mid
    return out


def plan_clobbered(
    analysis: Any, prefer: str, reference: Any | None, assign: list[str], reference_label: str = ""
) -> RepairPlan:
    from inspector.analysis.forensics import report_of
    from inspector.analysis.headless import headless_memories, salvage_memory

    snap = analysis.snapshot
    recon = analysis.reconstructed
    report = report_of(analysis)
    if recon is None or not recon.bucket_size_in_pages:
        raise RepairError(
            "the MemoryManager header is gone and its layout cannot be rebuilt (no bucket size): nothing to write"
        )
    base = 0  # the manager that was clobbered sat at offset 0 (the write started there)
    bs = recon.bucket_size_in_pages
    assignments = _parse_assignments(assign)
    ref_mm = reference.mm if reference is not None else None
    if ref_mm is not None and not ref_mm.present:
        raise RepairError(
            f"{reference_label}: the reference snapshot has no MemoryManager to take MemoryIds from"
        )
    if ref_mm is not None and ref_mm.bucket_size_in_pages != bs:
        raise RepairError(
            f"{reference_label}: its buckets are {ref_mm.bucket_size_in_pages} pages, but the surviving layout here "
            f"has {bs}-page buckets: not the same manager"
        )
    ref_owners = list(ref_mm.table[: ref_mm.num_allocated_buckets]) if ref_mm is not None else []
    owners: list[int | None] = []
    unknown: list[str] = []
    for b, o in enumerate(recon.owners):
        ref = ref_owners[b] if b < len(ref_owners) and ref_owners[b] != UNALLOCATED_BUCKET else None
        if isinstance(o, int):
            if ref is not None and ref != o:
                raise RepairError(
                    f"bucket {b}: the surviving table says memory {o}, the reference says memory {ref}"
                )
            owners.append(o)
        elif isinstance(o, str):
            mid = assignments.get(o, ref)
            if mid is None:
                unknown.append(o)
            owners.append(mid)
        else:
            owners.append(ref)
    for akey in assignments:
        if akey not in recon.owners:
            known = sorted({o for o in recon.owners if isinstance(o, str)})
            raise RepairError(
                f"--assign {akey}: no memory of unknown id starts there (unknown: {', '.join(known) or 'none'})"
            )
    if unknown:
        parts = []
        for ukey in dict.fromkeys(unknown):
            m = recon.memory(ukey)
            what = (m.first_bucket_content or "data") if m is not None else "data"
            parts.append(f"{ukey} ({what})")
        raise RepairError(
            "the bucket table is gone, so these memories have no known MemoryId: "
            + "; ".join(parts)
            + ". Pass --reference OLD_SNAPSHOT (an earlier snapshot of this canister) or "
            + " ".join(f"--assign '{k}=<MemoryId>'" for k in dict.fromkeys(unknown))
            + "; nothing was written"
        )
    # The same MemoryId for buckets of two different surviving memories would splice them together.
    first_of: dict[int, str] = {}
    for b, o in enumerate(recon.owners):
        mid = owners[b]
        if mid is None or o is None:
            continue
        label = o if isinstance(o, str) else f"memory {o}"
        prev = first_of.setdefault(mid, label)
        if prev != label:
            raise RepairError(
                f"MemoryId {mid} would own the buckets of both {prev} and {label}: pick another"
            )
    nb = len(owners)
    layout = Layout(base, bs, owners)
    plan = RepairPlan("header_clobbered", base, bs, owners, {}, snap.size, snap.size)
    if report is not None and report.blob is not None:
        plan.stable_save = (report.blob.start, report.blob.end)
    damaged_end = recon.damaged_end
    ref_sizes = {i: p for i, p in enumerate(ref_mm.memory_sizes_in_pages) if p} if ref_mm is not None else {}
    ref_kinds = {
        s.memory_id: getattr(s, "kind", "?")
        for s in (reference.structures if reference is not None else [])
        if isinstance(s.memory_id, int)
    }
    by_key = {m.id: m for m in recon.memories}
    structures = {s.memory_id: s for s in recon.structures}
    headless = {rm.id: (rm, c) for rm, c in headless_memories(analysis)}
    for mid in sorted({o for o in owners if o is not None}):
        buckets = layout.buckets(mid)
        key = next((o for b, o in enumerate(recon.owners) if owners[b] == mid and o is not None), None)
        s = structures.get(key) if key is not None else None
        rm = by_key.get(key) if key is not None else None
        cap_pages = len(buckets) * bs
        size = ref_sizes.get(mid, 0) if -(-ref_sizes.get(mid, 0) // bs) == len(buckets) else 0
        if rm is not None and rm.size_source == "the surviving size slot":
            size = max(size, rm.size_pages)
        first = bucket_start(base, buckets[0], bs)
        overwritten = first < damaged_end
        if key in headless:
            hrm, cluster = headless[key]
            result = salvage_memory(analysis, hrm, cluster, snap.fd)
            salvaged = [(e.key, e.value) for e in result.recovered()]
            keys, values, n_live, n_salv, conflicts = merge_entries(mid, [], salvaged, prefer)
            mp = MapPlan(mid, "rebuilt", keys, values, n_live, n_salv, conflicts, prefer)
            header = {"page_size": cluster.page_size, "header_version": 2}
            kl = _headless_key_layout(analysis, hrm, cluster)
            header["key_fixed_size"] = 0 if kl == "prefixed" else int(kl)
            plan.maps[mid] = mp
            rebuild_map(plan, layout, snap.memory, mid, mp, header)
            plan.restored.append(
                {
                    "memory_id": mid,
                    "what": "BTreeMap",
                    "entries": mp.count,
                    "salvaged": mp.salvaged,
                    "text": mp.line()
                    + f"; its header and allocator were overwritten: rebuilt from {len(result.scan.accepted)} "
                    "intact node(s)",
                }
            )
            _reference_lost(plan, reference, mid, mp)
            continue
        kind = getattr(s, "kind", None)
        if kind == "btreemap":
            found = _live_map_plan(s, prefer, snap.fd)
            assert found is not None
            mp, header = found
            mp.memory_id = mid
            for c in mp.conflicts:
                c.memory_id = mid
            plan.maps[mid] = mp
            if mp.action == "rebuilt":
                rebuild_map(plan, layout, snap.memory, mid, mp, header)
            else:
                need = _structure_needs(s)
                if need is not None:
                    size = max(size, _pages(need))
            plan.restored.append(
                {"memory_id": mid, "what": "BTreeMap", "entries": mp.count, "text": mp.line()}
            )
        elif s is not None and kind not in ("unknown", "empty", None):
            need = _structure_needs(s)
            if need is not None:
                size = max(size, _pages(need))
            plan.restored.append(
                {
                    "memory_id": mid,
                    "what": kind,
                    "text": f"memory {mid}: {kind} intact at bucket {buckets[0]}, reachable again",
                }
            )
        elif overwritten:
            was = ref_kinds.get(mid)
            what = {"cell": "Cell", "btreemap": "BTreeMap", "vec": "Vec", "minheap": "MinHeap"}.get(
                was or "", "structure"
            )
            then = (
                "the library will re-create it empty (with its default value) on its next init"
                if was in ("cell", "btreemap", "log", None)
                else "the library's init will fail with BadMagic until it is re-created"
            )
            plan.lost.append(
                {
                    "memory_id": mid,
                    "what": was or "unknown",
                    "text": f"memory {mid} ({what}{', per the reference' if was else ''}): its header at bucket "
                    f"{buckets[0]} was overwritten; {then}",
                }
            )
        if not size:
            size = cap_pages  # nothing says how much of its buckets it used: all of them
        plan.sizes[mid] = max(plan.sizes.get(mid, 0), min(size, cap_pages))
    holes = [b for b, o in enumerate(owners) if o is None]
    if holes:
        plan.notes.append(
            f"bucket(s) {', '.join(map(str, holes))}: owner unknown (its table entry was overwritten and no "
            "structure survives there): left unallocated"
        )
    if nb != len(layout.owners):
        plan.notes.append(f"{len(layout.owners) - nb} bucket(s) added for the rebuilt maps")
    plan.restored.insert(
        0,
        {
            "what": "MemoryManager",
            "text": f"MemoryManager header and bucket table at offset {base}: {bs}-page buckets, "
            f"{len(layout.owners)} bucket(s), owners {['-' if o is None else o for o in layout.owners]}",
        },
    )
    _finish_manager(plan, layout, snap.size, None, clear_tail=damaged_end > MM_HEADER_PAGE_USED)
    if plan.stable_save is not None:
        s0, e0 = plan.stable_save
        plan.lost.append(
            {
                "what": "stable_save message",
                "text": f"the {e0 - s0:,}-byte stable_save message at [{s0:,}, {e0:,}) is overwritten by the "
                "rebuilt header (keep it with --export-stable-save FILE: those bytes are what stable_restore reads)",
            }
        )
    return plan


def _headless_key_layout(analysis: Any, rm: Any, cluster: Any) -> str | int:
    from inspector.analysis.headless import open_headless_map
    from inspector.analysis.salvage import extended_memory

    bmap = open_headless_map(extended_memory(rm.memory), cluster, memory_id=rm.id)
    return bmap.key_layout


def make_plan(
    analysis: Any,
    *,
    prefer: str = "live",
    reference: Any | None = None,
    reference_label: str = "",
    assign: list[str] | None = None,
) -> RepairPlan:
    """The repair for this snapshot (raises ``RepairError`` when it cannot be planned)."""
    from inspector.analysis.forensics import report_of

    if prefer not in PREFER_CHOICES:
        raise RepairError(f"--prefer must be one of {', '.join(PREFER_CHOICES)}")
    report = report_of(analysis)
    if analysis.mm.present:
        if assign:
            raise RepairError(
                "--assign names MemoryIds of a lost bucket table, but this MemoryManager is intact"
            )
        return plan_reinitialised(analysis, prefer, reference)
    if report is not None and report.clobbered:
        return plan_clobbered(analysis, prefer, reference, assign or [], reference_label)
    raise RepairError(
        "no MemoryManager and no trace of one (no surviving bucket table, structure header or B-tree nodes): "
        "nothing repair can rebuild"
    )
