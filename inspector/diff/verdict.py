"""The verdict of a snapshot diff: which incident it is, in plain words, with the numbers that matter.

Incidents recognised (FORMAT.md §11):

* ``stable_save``: the old snapshot had a MemoryManager, the new one has a ``stable_save`` Candid
  message at offset 0 instead. The verdict says how long the message is and what of the old layout it
  covers (header fields, bucket table, page 0, which bucket of which memory and which structure parts).
* ``memory_manager_reinitialised``: ``MemoryManager::init`` found no "MGR" and started afresh. Seen
  directly when the old side had no valid header and the new side has one; or, between two healthy
  headers, when every B-tree's allocator restarted (its frontier moved *back*, which normal inserts and
  removals never do: freed chunks go to the free list). The verdict counts the old entries whose nodes
  are still byte-for-byte on disk and unreachable, i.e. what salvage can bring back.
* ``structures_recreated``: some maps restarted, others carried on (an application-level clear).
* ``damaged``: the new snapshot has error findings the old one did not.
* ``layout_changed``: structures with data are gone or memories shrank (never happens between two
  states of one healthy layout: different canisters, or a manager that was started again).
* ``healthy`` / ``identical``: a calm summary of what was added, removed and changed.
* ``unrecognised``: neither side holds a layout this tool knows (raw bytes only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inspector.diff.entries import StructureDiff
from inspector.diff.layout import LayoutIndex, MemoryChange, Piece, RangeSet
from inspector.errors import READ_ERRORS, InspectorError
from inspector.jsonout import JsonObject
from inspector.layouts import (
    BUCKET_TABLE_OFFSET,
    BUCKETS_START,
    CHUNK_MAGIC,
    MM_HEADER_PAGE_USED,
    MM_HEADER_SIZE,
)
from inspector.offset_geometry import mm_fields_hit, stable_save_span
from inspector.structures.base import Structure, StructureId
from inspector.structures.btreemap.structure import BTreeMapStructure

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.model import Finding

Range = tuple[int, int]


@dataclass
class SalvageEstimate:
    memory_id: Any
    old_entries: int | None
    new_entries: int | None
    recoverable_entries: int
    recoverable_nodes: int
    method: str  # how the number was obtained
    # With the old snapshot as reference: old entries whose node pages are byte-identical and unreachable.
    reference_entries: int | None = None

    def to_json(self) -> JsonObject:
        return {
            "memory_id": self.memory_id,
            "old_entries": self.old_entries,
            "new_entries": self.new_entries,
            "recoverable_entries": self.recoverable_entries,
            "recoverable_nodes": self.recoverable_nodes,
            "method": self.method,
            "old_entries_intact_on_disk": self.reference_entries,
        }


@dataclass
class Incident:
    kind: str
    verdict: str
    facts: list[str] = field(default_factory=list)
    salvage: list[SalvageEstimate] = field(default_factory=list)
    stable_save: dict[str, Any] | None = None

    def to_json(self) -> JsonObject:
        return {
            "kind": self.kind,
            "verdict": self.verdict,
            "facts": self.facts,
            "salvage": [s.to_json() for s in self.salvage],
            "stable_save": self.stable_save,
        }


def _live(analysis: Analysis) -> bool:
    mm = analysis.mm
    return bool(mm.present and mm.bucket_size_bytes and not mm.reconstructed)


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _noun(n: int | None, one: str, many: str) -> str:
    return one if n == 1 else many


# --------------------------------------------------------------------------- salvage counting


def old_entries_on_disk(
    old_s: BTreeMapStructure, new_s: Structure | None, changed: RangeSet
) -> tuple[int, int] | None:
    """(entries, nodes) of the old tree still byte-identical on disk and not part of the new tree.

    That is the fixtures' rule for "recoverable": an old node's page and overflow pages are unchanged.
    It walks the old tree's nodes (not its entries one by one) and the new tree's node addresses.
    """
    m = old_s.map
    if not m.walkable or not m.root_addr:
        return None
    live: set[int] = set()
    if isinstance(new_s, BTreeMapStructure):
        for _depth, node in new_s.map.iter_nodes():
            if node.physical_addr is not None:
                live.add(node.physical_addr)
    entries = nodes = 0
    for _depth, node in m.iter_nodes():
        if node.physical_addr in live:
            continue
        if changed.any_overlap(m.physical_ranges(node.ranges)):
            continue
        nodes += 1
        entries += node.num_entries
    return entries, nodes


def unreachable_in(new_s: Structure) -> tuple[int, int]:
    """(entries, nodes) in valid nodes the new map cannot reach, including the ones a re-created map
    left past its allocator frontier (no reference snapshot needed)."""
    walker = new_s.walker()
    if walker is None:
        return 0, 0
    try:
        found = walker.unreachable_nodes(beyond_frontier=True, include_frontier=True)
    except READ_ERRORS:
        return 0, 0
    return sum(n.num_entries for n in found), len(found)


def _salvage_scan(new: Analysis, new_s: BTreeMapStructure) -> tuple[int, int] | None:
    """(entries, nodes) the forensics' salvage recovers from the new map beyond what its root reaches."""
    if not _live(new):
        return None  # a reconstructed layout's "recovered" includes the reachable entries
    try:
        from inspector.analysis.salvage import salvage_structure

        result = salvage_structure(
            new_s, layout="live", label=f"memory {new_s.memory_id}", fd=new.snapshot.fd
        )
        return len(result.recovered()), len(result.scan.accepted)
    except (InspectorError, OSError):  # the input's own damage: fall back to our own count; bugs propagate
        return None


def estimate_salvage(
    old: Analysis, new: Analysis, sd: StructureDiff, changed: RangeSet
) -> SalvageEstimate | None:
    """How many old entries of this map are still on disk, unreachable: salvage's own scan of the new
    snapshot when available, else the old tree's intact nodes, else unreachable nodes in the new map."""
    new_s = sd.new
    reference: tuple[int, int] | None = None
    if isinstance(sd.old, BTreeMapStructure):
        reference = old_entries_on_disk(sd.old, new_s, changed)
    found: tuple[int, int, str] | None = None  # (entries, nodes, where the count comes from)
    scanned = _salvage_scan(new, new_s) if isinstance(new_s, BTreeMapStructure) else None
    if scanned is not None:
        found = (*scanned, "salvage scan of the new snapshot (valid nodes its map does not reach)")
    elif reference is not None:
        found = (
            *reference,
            "old nodes whose pages are byte-identical in the new snapshot and unreachable there",
        )
    elif new_s is not None and new_s.kind == "btreemap":
        found = (*unreachable_in(new_s), "valid nodes in the new snapshot that its map does not reach")
    est = SalvageEstimate(sd.memory_id, sd.old_count, sd.new_count, *found) if found is not None else None
    if est is not None and reference is not None:
        est.reference_entries = reference[0]
    return est


# --------------------------------------------------------------------------- what a write covered


def overwritten_parts(index: LayoutIndex, span: Range) -> tuple[list[str], set[Any]]:
    """Plain-words list of what ``span`` covers in a (MemoryManager) layout, and the memories it hits."""
    s, e = span
    parts: list[str] = []
    hit: set[Any] = set()
    if not index.has_buckets:
        return [f"bytes {s:,}–{e:,} of the raw memory"], {"raw"}
    if s < MM_HEADER_SIZE:
        if s == 0 and e >= MM_HEADER_SIZE:
            parts.append("the MemoryManager header")
        else:
            parts.append(f"part of the MemoryManager header ({', '.join(mm_fields_hit(s, e))})")
    ts, te = max(s, BUCKET_TABLE_OFFSET), min(e, MM_HEADER_PAGE_USED)
    if ts < te:
        n = te - ts
        first = ts - BUCKET_TABLE_OFFSET
        allocated = max(0, min(te - BUCKET_TABLE_OFFSET, index.nb) - first)
        if n >= MM_HEADER_PAGE_USED - BUCKET_TABLE_OFFSET:
            text = "the whole bucket table"
        else:
            text = f"{n:,} entries of the bucket table"
        if index.nb:
            text += (
                f" (with the owners of all {index.nb} allocated {_noun(index.nb, 'bucket', 'buckets')})"
                if allocated >= index.nb
                else f" ({allocated} of the {index.nb} allocated owners)"
                if allocated
                else ""
            )
        parts.append(text)
    ps, pe = max(s, MM_HEADER_PAGE_USED), min(e, BUCKETS_START)
    if ps < pe:
        parts.append(
            "the unused rest of page 0"
            if pe - ps == BUCKETS_START - MM_HEADER_PAGE_USED
            else "part of the unused rest of page 0"
        )
    if e > BUCKETS_START and index.bs:
        by_bucket: dict[int, list[Piece]] = {}
        for p in index.pieces(max(s, BUCKETS_START), min(e, index.size)):
            b = (p.start - BUCKETS_START) // index.bs
            by_bucket.setdefault(b, []).append(p)
        for b, pieces in by_bucket.items():
            n = sum(p.end - p.start for p in pieces)
            mid = pieces[0].memory_id
            whole = n >= index.bs
            where = (
                f"all of bucket {b}"
                if whole
                else (
                    f"the first {n:,} bytes of bucket {b}"
                    if pieces[0].start == BUCKETS_START + b * index.bs
                    else f"{n:,} bytes of bucket {b}"
                )
            )
            if mid is None:
                parts.append(f"{where} (unallocated)")
                continue
            hit.add(mid)
            prefix = f"memory {mid} · "
            areas: list[str] = []
            for p in pieces:
                a = p.area[len(prefix) :] if p.area.startswith(prefix) else p.area
                if a not in areas and not a.startswith(("unused", "past")):
                    areas.append(a)
            parts.append(f"{where} (memory {mid}: {', '.join(areas) if areas else 'unused space'})")
    if e > index.size:
        parts.append(f"{e - index.size:,} bytes past the old end of memory")
    return parts, hit


# --------------------------------------------------------------------------- classification


def map_restarted(sd: StructureDiff) -> bool:
    """A B-tree whose allocator frontier moved back over older chunks: cleared or created afresh.

    A live allocator only ever moves its frontier forward (freed chunks go to the free list), so a
    frontier further back than before, with the previous allocator's "CHK" headers still right after
    it, means the map was started again on top of its old chunks (FORMAT.md §3.3, §11.2).
    """
    if sd.kind != "btreemap" or sd.old is None or sd.new is None or sd.allocator_same:
        return False  # (the same allocator bytes on both sides: the same frontier, nothing to walk)
    a, b = sd.old.walker(), sd.new.walker()
    if a is None or b is None or not (a.allocator_ok and b.allocator_ok):
        return False
    try:
        fa, fb = a.frontier, b.frontier
        if not (fa >= 0 and 0 <= fb < fa):
            return False
        return bytes(sd.new.mem.read(fb + b.chunk_size, 3)) == CHUNK_MAGIC
    except READ_ERRORS:
        return False


def _map_clause(sd: StructureDiff, est: SalvageEstimate | None, old_known: bool) -> str:
    new_n = sd.new_count or 0
    if old_known and sd.old_count is not None:
        text = f"the map at memory {sd.memory_id} went from {sd.old_count:,} {_noun(sd.old_count, 'entry', 'entries')} to {new_n:,}"
    else:
        text = f"the map at memory {sd.memory_id} now has {new_n:,} {_noun(new_n, 'entry', 'entries')}"
    if est is not None and est.recoverable_entries:
        if old_known and sd.old_count:
            text += f"; {est.recoverable_entries:,} of the old entries are still on disk (run salvage)"
        else:
            text += f"; {est.recoverable_entries:,} old entries are still on disk in unreachable nodes (run salvage)"
    elif est is not None:
        text += "; none of the old entries is left intact on disk"
    return text


def _other_changes(structs: list[StructureDiff], skip: set[int]) -> list[str]:
    out = []
    for sd in structs:
        if id(sd) in skip or not sd.has_changes or sd.kind in ("unknown", "empty", "raw"):
            continue
        text = f"{sd.label}: {sd.counts_text()}"
        if sd.kind == "cell" and "value_length" in sd.header:
            a, b = sd.header["value_length"]
            text += f" ({a:,} → {b:,} bytes)"
        out.append(text)
    return out


def _new_errors(old: Analysis, new: Analysis) -> list[Finding]:
    known = {(f.code, f.message) for f in old.all_findings()}
    return [f for f in new.all_findings() if f.severity == "error" and (f.code, f.message) not in known]


def classify(
    old: Analysis,
    new: Analysis,
    structs: list[StructureDiff],
    changed: RangeSet,
    old_index: LayoutIndex,
    memories: list[MemoryChange],
    total_bytes: int,
    identical: bool,
) -> Incident:
    """Name what happened between the two analyses, in words a person can act on."""
    if identical:
        size = old.snapshot.size
        return Incident("identical", f"The snapshots are byte-identical ({size:,} bytes): nothing changed.")
    old_live, new_live = _live(old), _live(new)
    old_ss, new_ss = stable_save_span(old), stable_save_span(new)
    if new_ss is not None and old_live and not new_live:
        return _stable_save_incident(old, new, structs, changed, old_index, new_ss)
    if new_live and not old_live and old.snapshot.size:
        return _reinit_incident(old, new, structs, changed, old_ss, direct=True)
    restarted = [sd for sd in structs if map_restarted(sd)]
    if restarted:
        maps_with_data = [
            sd for sd in structs if sd.kind == "btreemap" and sd.old is not None and (sd.old_count or 0) > 0
        ]
        if old_live and new_live and all(sd in restarted for sd in maps_with_data):
            return _reinit_incident(old, new, structs, changed, old_ss, direct=False, restarted=restarted)
        return _recreated_incident(old, new, structs, changed, restarted)
    return _calm(old, new, structs, memories, changed, old_index, total_bytes)


def _stable_save_incident(
    old: Analysis,
    new: Analysis,
    structs: list[StructureDiff],
    changed: RangeSet,
    old_index: LayoutIndex,
    span: Range,
) -> Incident:
    s, e = span
    length = e - s
    parts, hit = overwritten_parts(old_index, span)
    at = "offset 0" if s == 0 else f"offset {s:,}"
    lead = f"a stable_save message ({length:,} bytes of Candid) was written at {at}, over {_join(parts)}"
    untouched: list[str] = []
    if e <= BUCKET_TABLE_OFFSET and old_index.nb:
        untouched.append("the bucket table")
    for sd in structs:
        if sd.old is None or sd.kind in ("unknown", "empty"):
            continue
        mids = sd.memory_id if isinstance(sd.memory_id, list) else [sd.memory_id]
        if any(m in hit for m in mids):
            continue
        n = sd.old_count or 0
        noun = "value" if sd.kind == "cell" else _noun(n, "entry", "entries")
        untouched.append(f"memory {sd.memory_id} ({sd.kind}, {n:,} {noun})")
    sentences = [_sentence(lead)]
    if untouched:
        verb = "is" if len(untouched) == 1 else "are"
        sentences.append(_sentence(f"{_join(untouched)} {verb} untouched"))
    differ = changed.bytes_in(s, e)
    sentences.append(
        _sentence(
            "without the 'MGR' magic the memories can no longer be found: the next MemoryManager::init will "
            "silently start a fresh manager over this data (salvage it first)"
        )
    )
    facts = [
        f"stable_save message: bytes {s:,}–{e:,} ({length:,} bytes); {differ:,} of them differ from the old snapshot",
        *[f"overwritten: {p}" for p in parts],
    ]
    return Incident(
        "stable_save",
        " ".join(sentences),
        facts,
        stable_save={"range": [s, e], "length": length, "overwrote": parts, "changed_bytes": differ},
    )


def _reinit_incident(
    old: Analysis,
    new: Analysis,
    structs: list[StructureDiff],
    changed: RangeSet,
    old_ss: Range | None,
    *,
    direct: bool,
    restarted: list[StructureDiff] | None = None,
) -> Incident:
    clauses: list[str] = []
    facts: list[str] = []
    if direct:
        head = "the MemoryManager was re-initialised"
        if old_ss is not None:
            length = old_ss[1] - old_ss[0]
            fresh = MM_HEADER_PAGE_USED
            fate = (
                f"wiping the {length:,}-byte message completely"
                if old_ss[1] <= fresh
                else f"destroying the first {fresh - old_ss[0]:,} of the message's {length:,} bytes"
            )
            head += (
                f" over the stable_save message (MemoryManager::init found no 'MGR' and wrote a fresh header and "
                f"bucket table over [0, {fresh:,}), {fate})"
            )
        else:
            head += " (the old snapshot had no valid MemoryManager header; the new one has a fresh one)"
        clauses.append(head)
    else:
        clauses.append("the MemoryManager was re-initialised")
        for sd in restarted or []:
            facts.append(
                f"memory {sd.memory_id}: the map's allocator restarted (frontier {sd.old.map.frontier:#x} → "  # type: ignore[union-attr]
                f"{sd.new.map.frontier:#x}); maps only ever move it forward unless created afresh"  # type: ignore[union-attr]
            )
        if changed.overlaps(MM_HEADER_PAGE_USED, BUCKETS_START):
            facts.append(
                f"bytes {MM_HEADER_PAGE_USED:,}–{BUCKETS_START - 1:,} of page 0 changed: a MemoryManager never writes "
                "there, so something else (typically a stable_save message) was written over page 0"
            )
    salvage: list[SalvageEstimate] = []
    skip: set[int] = set()
    for sd in structs:
        if sd.kind != "btreemap" or sd.new is None:
            continue
        est = estimate_salvage(old, new, sd, changed)
        if est is not None:
            salvage.append(est)
        clauses.append(_map_clause(sd, est, old_known=sd.old is not None))
        skip.add(id(sd))
    others = _other_changes(structs, skip)
    sentences = [_sentence("; ".join(clauses))]
    if others:
        sentences.append(_sentence("also: " + "; ".join(others)))
    for est in salvage:
        if est.recoverable_entries:
            facts.append(
                f"salvage: {est.recoverable_entries:,} entries in {est.recoverable_nodes:,} nodes ({est.method}); "
                f"try `stable-inspect salvage NEW --memory {est.memory_id} --reference OLD`"
            )
    return Incident("memory_manager_reinitialised", " ".join(sentences), facts, salvage)


def _recreated_incident(
    old: Analysis,
    new: Analysis,
    structs: list[StructureDiff],
    changed: RangeSet,
    restarted: list[StructureDiff],
) -> Incident:
    clauses = []
    salvage = []
    for sd in restarted:
        est = estimate_salvage(old, new, sd, changed)
        if est is not None:
            salvage.append(est)
        clauses.append(
            f"the map at memory {sd.memory_id} was cleared or created afresh; " + _map_clause(sd, est, True)
        )
    others = _other_changes(structs, {id(sd) for sd in restarted})
    sentences = [_sentence("; ".join(clauses))]
    if others:
        sentences.append(_sentence("also: " + "; ".join(others)))
    return Incident("structures_recreated", " ".join(sentences), [], salvage)


def _calm(
    old: Analysis,
    new: Analysis,
    structs: list[StructureDiff],
    memories: list[MemoryChange],
    changed: RangeSet,
    old_index: LayoutIndex,
    total_bytes: int,
) -> Incident:
    """No named incident: a healthy upgrade, a changed layout, or new damage, with what changed."""
    errors = _new_errors(old, new)
    # A structure that held data and is gone (not just an empty memory that now holds one).
    lost = [sd for sd in structs if sd.status == "vanished" and sd.kind not in ("empty", "unknown")]
    new_kinds = {_key(sd.memory_id): sd.kind for sd in structs if sd.status == "appeared"}
    shrank = [m for m in memories if m.change in ("shrank", "vanished")]
    geometry = (
        old.mm.bucket_size_in_pages == new.mm.bucket_size_in_pages
        if _live(old) and _live(new)
        else _live(old) == _live(new)
    )
    known = [sd for sd in structs if sd.kind not in ("empty", "unknown")]
    sentences: list[str] = []
    if not old.snapshot.size:
        kind = "healthy"
        sentences.append(_sentence("the old stable memory was empty"))
    elif not known and not _live(old) and not _live(new):
        kind = "unrecognised"
        sentences.append(
            _sentence(f"neither snapshot holds a layout this tool recognises; {total_bytes:,} bytes differ")
        )
        return Incident(kind, " ".join(sentences))
    elif errors:
        kind = "damaged"
        first = errors[0]
        sentences.append(
            _sentence(
                f"the new snapshot has {len(errors)} error {_noun(len(errors), 'finding', 'findings')} the old one did "
                f"not: {first.code}: {first.message}"
            )
        )
    elif lost or shrank or not geometry:
        kind = "layout_changed"
        what = []
        for sd in lost:
            now = new_kinds.get(_key(sd.memory_id))
            where = sd.label.split(" (")[0]
            what.append(
                f"{where} now holds a {now} (was a {sd.kind})" if now else f"the {sd.kind} at {where} is gone"
            )
        if not geometry:
            what.append("the MemoryManager geometry differs")
        sentences.append(
            _sentence("the layout changed: " + "; ".join(what) if what else "the layout changed")
        )
        if shrank:
            sentences.append(
                _sentence(
                    "memories never shrink in ic-stable-structures, so this is not a later state of the same layout "
                    "(different canisters, or a MemoryManager that was started again)"
                )
            )
    else:
        kind = "healthy"
        layout = "the layout is intact"
        if _live(old) and _live(new):
            layout += " (same MemoryManager geometry)"
        sentences.append(_sentence("no incident: " + layout))
    mem_text = [m.describe() for m in memories]
    if mem_text:
        sentences.append(_sentence("; ".join(mem_text)))
    changes = _other_changes(structs, set())
    if changes:
        sentences.append(_sentence("; ".join(changes)))
    else:
        sentences.append(_sentence(f"no entry changed; {total_bytes:,} bytes differ outside the live data"))
    return Incident(kind, " ".join(sentences))


def _key(mid: StructureId | None) -> int | str | tuple[int, ...] | None:
    return tuple(mid) if isinstance(mid, list) else mid
