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

from typing import TYPE_CHECKING, Any

from inspector.layouts import (
    CELL_HEADER,
    CHUNK_HEADER_SIZE,
    MM_HEADER_PAGE_USED,
    UNALLOCATED_BUCKET,
    VEC_DATA_OFFSET,
)
from inspector.repair.btree_writer import build_btree
from inspector.repair.layout import Layout, last_nonzero_end, old_extent, pages
from inspector.repair.mm_writer import bucket_start, manager_page
from inspector.repair.model import (
    PREFER_CHOICES,
    Conflict,
    MapPlan,
    RepairError,
    RepairPlan,
    entries_digest,
    merge_entries,
)
from inspector.structures.btreemap.structure import BTreeMapStructure
from inspector.structures.cell import Cell
from inspector.structures.vec import BaseVec

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.analysis.headless import NodeCluster
    from inspector.analysis.reconstruct import ReconMemory
    from inspector.memory import Memory, PhysicalMemory
    from inspector.structures.base import Structure
    from inspector.structures.btreemap import BTreeMap
    from inspector.structures.btreemap.headers import KeyLayout

__all__ = ["Conflict", "MapPlan", "RepairError", "RepairPlan", "entries_digest", "make_plan", "merge_entries"]

# --- map rebuilding -------------------------------------------------------------------------------------


def _map_layout(bmap: BTreeMap) -> dict[str, Any]:
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
    plan: RepairPlan, layout: Layout, phys: PhysicalMemory, mid: int, mp: MapPlan, header: dict[str, Any]
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
        if s < phys.size and last_nonzero_end(phys.buf, phys.size, [(s, e)]):
            plan.notes.append(
                f"bucket {b} (physical {s:,}..{e:,}) held older bytes that no memory owned; the output overwrites "
                "them (the input keeps them)"
            )
    end = old_extent(phys, layout, mid)
    layout.place(plan, mid, 0, bytes(image.data), f"memory {mid}: rebuilt BTreeMap ({mp.count:,} entries)")
    if end > image.extent:
        layout.place(
            plan, mid, image.extent, bytes(end - image.extent), f"memory {mid}: old map bytes cleared"
        )
    plan.sizes[mid] = max(plan.sizes.get(mid, 0), pages(image.extent))


# --- the two cases --------------------------------------------------------------------------------------


def _live_map_plan(
    structure: BTreeMapStructure, mid: int, prefer: str, fd: int | None, extra_mem: Memory | None = None
) -> tuple[MapPlan, dict[str, Any]] | None:
    """A map under a live (or reconstructed) header: its live entries plus the salvageable ones."""
    from inspector.analysis.salvage import salvage_structure

    label = f"memory {structure.memory_id}"  # the id it was found under (``mid`` is where it goes)
    result = salvage_structure(structure, layout="live", label=label, fd=fd, mem=extra_mem)
    live = [(e.key, e.value) for e in result.entries if e.reachability == "reachable"]
    salvaged = [(e.key, e.value) for e in result.entries if e.reachability == "unreachable"]
    keys, values, n_live, n_salv, conflicts = merge_entries(mid, live, salvaged, prefer)
    action = "rebuilt" if salvaged else "kept"
    mp = MapPlan(mid, action, keys, values, n_live, n_salv, conflicts, prefer)
    bmap = structure.map
    mp.page_size = bmap.page_size
    mp.key_layout = bmap.key_layout
    return mp, _map_layout(bmap)


def _reference_lost(plan: RepairPlan, reference: Analysis | None, mid: int, mp: MapPlan) -> None:
    """With a reference snapshot: its entries of this map that the repaired map does not hold."""
    ref = reference.structure(mid) if reference is not None else None
    if not isinstance(ref, BTreeMapStructure):
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


def plan_reinitialised(analysis: Analysis, prefer: str, reference: Analysis | None = None) -> RepairPlan:
    from inspector.analysis.headless import continuation_buckets, with_buckets

    mm = analysis.mm
    snap = analysis.snapshot
    base = mm.base_offset
    owners: list[int | None] = [
        None if o == UNALLOCATED_BUCKET else o for o in mm.table[: mm.num_allocated_buckets]
    ]
    sizes = {i: p for i, p in enumerate(mm.memory_sizes_in_pages) if p}
    plan = RepairPlan(
        "reinitialised", base, mm.bucket_size_in_pages, owners, dict(sizes), snap.size, snap.size
    )
    layout = Layout(base, mm.bucket_size_in_pages, owners)
    for s in analysis.structures:
        if not isinstance(s, BTreeMapStructure) or not isinstance(s.memory_id, int):
            continue
        if not s.map.walkable or not s.map.allocator_ok:
            continue
        extra = continuation_buckets(analysis, s)
        found = _live_map_plan(s, s.memory_id, prefer, snap.fd, with_buckets(s.mem, extra) if extra else None)
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


def _structure_needs(s: Structure) -> int | None:
    """Bytes of its memory a surviving structure needs, from its own header."""
    if isinstance(s, BTreeMapStructure):
        bmap = s.map
        if bmap.allocator_ok and bmap.frontier >= 0:
            return int(bmap.frontier) + CHUNK_HEADER_SIZE
        return None
    if isinstance(s, Cell):
        return int(CELL_HEADER.size + s.value_length)
    if isinstance(s, BaseVec):
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
    analysis: Analysis, prefer: str, reference: Analysis | None, assign: list[str], reference_label: str = ""
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
    # Where the clobbered manager sat: 0, or a RestrictedMemory base (the write started there); the header
    # is rebuilt there and nothing before it (the application's bytes) is written.
    base = recon.base_offset
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
    elif report is not None and report.clobber_write is not None:
        plan.stable_save = report.clobber_write
    damaged_end = recon.damaged_end
    ref_sizes = {i: p for i, p in enumerate(ref_mm.memory_sizes_in_pages) if p} if ref_mm is not None else {}
    ref_kinds = {
        s.memory_id: s.kind
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
        kind = s.kind if s is not None else None
        if isinstance(s, BTreeMapStructure):
            found = _live_map_plan(s, mid, prefer, snap.fd)
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
                    size = max(size, pages(need))
            plan.restored.append(
                {"memory_id": mid, "what": "BTreeMap", "entries": mp.count, "text": mp.line()}
            )
        elif s is not None and kind not in ("unknown", "empty", None):
            need = _structure_needs(s)
            if need is not None:
                size = max(size, pages(need))
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
    _finish_manager(plan, layout, snap.size, None, clear_tail=damaged_end > base + MM_HEADER_PAGE_USED)
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


def _headless_key_layout(analysis: Analysis, rm: ReconMemory, cluster: NodeCluster) -> KeyLayout:
    from inspector.analysis.headless import open_headless_map
    from inspector.analysis.salvage import extended_memory

    bmap = open_headless_map(extended_memory(rm.memory), cluster, memory_id=rm.id)
    return bmap.key_layout


def make_plan(
    analysis: Analysis,
    *,
    prefer: str = "live",
    reference: Analysis | None = None,
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
