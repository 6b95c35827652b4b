"""The diagnosis: what happened, what is intact, what is lost and what to do, in plain words.

It is built only from what the forensics found (``ForensicsReport``) and the findings, so every
sentence can be traced to bytes. A healthy snapshot gets no diagnosis at all.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.analysis.stable_save import compact_overwritten
from inspector.layouts import BUCKETS_START, MM_HEADER_PAGE_USED
from inspector.structures.base import Structure, StructureId
from inspector.structures.cell import Cell
from inspector.words import plural

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.analysis.forensics import ForensicsReport
    from inspector.analysis.orphans import Orphan
    from inspector.analysis.reconstruct import Reconstruction
    from inspector.analysis.stable_save import Overwritten
    from inspector.decode.candid import CandidType
    from inspector.structures.base import Structure


def short_type(t: CandidType) -> str:
    """A Candid type in a few words ("record of 7 fields", "vec nat8")."""
    kind = t.kind
    if kind in ("record", "variant"):
        n = len(t.fields)
        return f"{kind} of {n} field{'s' if n != 1 else ''}"
    if kind in ("vec", "opt") and t.inner is not None:
        return f"{kind} {short_type(t.inner)}"
    return str(kind)


def _path(analysis: Analysis) -> str:
    snap = analysis.snapshot
    return shlex.quote(str(snap.path))


def _structure_line(s: Structure) -> str:
    kind = s.kind
    if kind == "btreemap":
        bmap = s.walker()
        n = (bmap.length if bmap.root_addr else 0) if bmap is not None else s.count()
        return f"BTreeMap with {plural(n, 'entry')}"
    if kind == "cell":
        return f"Cell with a {s.value_length if isinstance(s, Cell) else 0:,}-byte value"
    if kind in ("vec", "minheap"):
        return f"{'Vec' if kind == 'vec' else 'MinHeap'} of {plural(s.count(), 'element')}"
    if kind == "log":
        return f"Log of {plural(s.count(), 'entry')}"
    if kind == "empty":
        return "no data"
    content = s.content or {}
    if content.get("kind") == "length_prefixed":
        return f"a u32 length prefix and a {content.get('length', 0):,}-byte {content.get('payload_kind', '')} payload"
    if content.get("kind") == "candid":
        return "a Candid message"
    return "unrecognised data"


def _memory_label(recon: Reconstruction | None, key: int | str | list[int] | None) -> str:
    m = recon.memory(key) if recon is not None else None
    if m is not None:
        return m.label
    return f"memory {key}"


def _salvage_memory_arg(recon: Reconstruction | None, key: StructureId) -> str:
    if isinstance(key, str) and key.startswith("?"):
        return shlex.quote(key)
    return str(key)


def _repair_command(analysis: Analysis, path: str, extra: str = "") -> str:
    """The README's rescue: ``repair --dry-run`` into a new snapshot (a folder for a folder)."""
    out = "rescued" if Path(str(analysis.snapshot.path)).is_dir() else "rescued.bin"
    return f"stable-inspect repair {path} --dry-run -o {out}{extra}"


def _repair_advice(analysis: Analysis, recon: Reconstruction | None, path: str) -> str:
    """The rescue for a clobbered header; with the ``--assign`` hints when the bucket table is gone."""
    unknown = [m.id for m in (recon.memories if recon is not None else []) if not m.id_known]
    if not unknown:
        return (
            f"rescue it with `{_repair_command(analysis, path)}` (the plan: what is restored and what stays "
            "lost), then run the same command without --dry-run to write the repaired snapshot"
        )
    assigns = "".join(f" --assign {shlex.quote(f'{k}=<MemoryId>')}" for k in unknown[:3])
    return (
        f"rescue it with `{_repair_command(analysis, path, assigns)}` (the plan: what is restored and what "
        "stays lost; the bucket table is gone, so give each memory its MemoryId from the canister's code, "
        "or pass --reference OLD_SNAPSHOT, an earlier snapshot of this canister, instead of --assign), then "
        "run the same command without --dry-run to write the repaired snapshot"
    )


def build_diagnosis(analysis: Analysis, report: ForensicsReport) -> list[str]:
    lines: list[str] = []
    path = _path(analysis)
    blob = report.blob
    recon = report.recon
    if report.clobbered:
        lines.extend(_clobbered_lines(analysis, report, path))
    elif blob is not None:
        lines.append(
            f"Stable memory starts with a stable_save Candid message of {blob.length:,} bytes and holds no "
            "MemoryManager: a canister that keeps its state with stable_save/stable_restore."
        )
    map_orphans = [o for o in report.orphans if o.kind == "unreachable_nodes"]
    bucket_orphans = [o for o in report.orphans if o.kind == "unowned_bucket"]
    tail = next((o for o in report.orphans if o.kind == "page0_tail"), None)
    if (map_orphans or bucket_orphans) and not report.clobbered:
        lines.extend(_reinit_lines(analysis, map_orphans, bucket_orphans, tail, path))
    elif tail is not None and not report.clobbered:
        lines.append(
            f"Bytes {tail.physical_ranges[0][0]:,}..{tail.physical_ranges[0][1]:,} of page 0 are not zero, though a "
            "MemoryManager never writes there: something wrote over offset 0 before this manager was created."
        )
    elif map_orphans and report.clobbered:
        for o in map_orphans:
            lines.append(
                f"{_memory_label(recon, o.memory_id)} also holds {o.details['nodes']} older node(s) with "
                f"{o.details['entries']:,} entries beyond its map's frontier; salvage lists them too."
            )
    errors = [f for f in analysis.all_findings() if f.severity == "error"]
    own = {"memory_manager_clobbered", "stable_save_blob", "orphaned_data"}
    others = sorted({f.code for f in errors if f.code not in own})
    if others:
        n = sum(1 for f in errors if f.code not in own)
        lines.append(f"{n} other error finding(s): {', '.join(others)} (see the findings).")
    return lines


def _clobbered_lines(analysis: Analysis, report: ForensicsReport, path: str) -> list[str]:
    blob = report.blob
    recon = report.recon
    lines: list[str] = []
    overwritten = blob.overwritten if blob is not None else []
    if blob is not None:
        types = ", ".join(short_type(t) for t in blob.message.arg_types) if blob.message is not None else ""
        parts = compact_overwritten(overwritten)
        lines.append(
            f"What happened: an ic-cdk stable_save wrote a {blob.length:,}-byte Candid message"
            + (f" ({types})" if types else "")
            + f" at offset 0 of stable memory, over the MemoryManager. It overwrote {parts}."
        )
    elif report.clobber_write is not None:
        s0, e0 = report.clobber_write
        hit = ["the header"]
        if e0 > s0 + MM_HEADER_PAGE_USED:
            hit.append("the bucket table")
        if e0 > s0 + BUCKETS_START:
            hit.append("the start of the buckets")
        lines.append(
            f"What happened: a {e0 - s0:,}-byte Candid message was written at offset {s0:,}, over a "
            f"RestrictedMemory's MemoryManager. It overwrote {', '.join(hit[:-1]) + ' and ' if len(hit) > 1 else ''}"
            f"{hit[-1]} ({'; '.join(report.clobber_fields)}); bytes 0..{s0:,} belong to the application and are "
            "untouched."
        )
    else:
        lines.append(
            "What happened: the MemoryManager header at offset 0 was overwritten "
            f"({'; '.join(report.clobber_fields)}), though its buckets are still there."
        )
    lines.append(
        "Consequence: the next MemoryManager::init will not find 'MGR', will silently start a fresh, empty "
        "manager, and every structure will look empty; the first memory to grow then gets bucket 0 again and "
        "overwrites what is there."
    )
    if recon is not None and recon.bucket_size_in_pages:
        ids = (
            "MemoryIds from the surviving bucket table"
            if recon.table.state != "lost"
            else ("MemoryIds unknown (the bucket table is gone), memories labelled '?'")
        )
        lines.append(
            f"Layout reconstructed from what survives: {recon.bucket_size_in_pages}-page buckets "
            f"({recon.bucket_size_evidence[0]}); {recon.num_buckets} bucket(s); {ids}."
        )
    intact: list[str] = []
    for s in recon.structures if recon is not None else []:
        if s.kind in ("empty",):
            continue
        intact.append(
            f"{_memory_label(recon, s.memory_id)}: {_headless_line(recon, s) or _structure_line(s)}"
        )
    if intact:
        lines.append("Intact: " + "; ".join(intact) + ".")
    elif recon is not None:
        lines.append("Intact: no structure header survives at any bucket start.")
    lost = _lost_text(overwritten, recon)
    if lost:
        lines.append("Lost: " + lost + ".")
    if blob is not None and blob.complete:
        lines.append(
            "The stable_save message itself decodes completely: it is exactly what stable_restore returns "
            "(see 'stable_save' in check --json)."
        )
    maps = [
        s
        for s in (recon.structures if recon is not None else [])
        if s.kind == "btreemap" or _headless_line(recon, s)
    ]
    todo = (
        "What to do: do not upgrade or re-initialise this canister's MemoryManager until the data is saved; "
        + _repair_advice(analysis, recon, path)
    )
    if maps:
        cmds = [
            f"stable-inspect salvage {path} --memory {_salvage_memory_arg(recon, s.memory_id)}"
            for s in maps[:3]
        ]
        todo += "; to only list the map entries, `" + "`, `".join(cmds) + "`"
        unknown = [s for s in maps if isinstance(s.memory_id, str)]
        if unknown and len(unknown) == 1:
            todo += " (passing the map's real MemoryId also selects it)"
    lines.append(todo + ".")
    return lines


def _headless_line(recon: Reconstruction | None, s: Structure) -> str:
    """For a memory holding B-tree nodes whose map header is gone: what survives of the map."""
    m = recon.memory(s.memory_id) if recon is not None else None
    cluster = next(
        (
            c
            for c in (recon.node_clusters if recon is not None else [])
            if m is not None and m.buckets and c.base == m.memory.to_physical(0)
        ),
        None,
    )
    if cluster is None:
        return ""
    return (
        f"a BTreeMap whose header and allocator were overwritten; {cluster.allocated_nodes} of its node pages "
        "survive (salvage reads them without the header; repair writes them back as a fresh map)"
    )


def _lost_text(parts: list[Overwritten], recon: Reconstruction | None) -> str:
    lost: list[str] = []
    if any(p.what == "bucket_table" for p in parts):
        lost.append("the owners of the overwritten bucket-table entries")
    sizes = [p for p in parts if p.what == "memory_sizes"]
    if sizes and sizes[0].details.get("in_use"):
        lost.append(
            "the recorded sizes of memories "
            + ", ".join(str(i) for i in sizes[0].details["in_use"])
            + " (estimated from their buckets)"
        )
    for p in parts:
        if p.what == "bucket":
            lost.append(
                f"bucket {p.details['bucket']}'s first {p.details['bytes']:,} bytes"
                + (f" ({recon.owner_text(p.details['bucket'])})" if recon is not None else "")
                + ", including the start of whatever structure lived there"
            )
    if parts and not lost:
        lost.append("only the header fields above; every structure's bytes are intact")
    return "; ".join(lost)


def _reinit_lines(
    analysis: Analysis,
    map_orphans: list[Orphan],
    bucket_orphans: list[Orphan],
    tail: Orphan | None,
    path: str,
) -> list[str]:
    mm = analysis.mm
    lines: list[str] = []
    what: list[str] = []
    for o in map_orphans:
        s = o.structure
        assert s is not None, "an unreachable_nodes orphan always names its map"
        bmap = s.walker()
        live = (bmap.length if bmap.root_addr else 0) if bmap is not None else 0
        what.append(
            f"memory {o.memory_id}'s BTreeMap ({live:,} entries) was created over an older map: "
            f"{o.details['nodes']} valid node(s) holding {o.details['entries']:,} entries lie at or beyond its "
            "allocator frontier, where the new map has never written"
        )
    for o in bucket_orphans:
        b = o.details.get("bucket")
        what.append(
            f"bucket {b}, which the manager ({mm.num_allocated_buckets} allocated bucket(s)) does not own, still holds "
            f"{o.details.get('starts_with', 'data')}"
        )
    lines.append("What happened: " + "; ".join(what) + ".")
    why = (
        "This is what a re-initialised MemoryManager leaves: MemoryManager::init found no 'MGR' (for example "
        "after stable_save overwrote it), silently started a fresh manager, and the structures were re-created "
        "empty on top of the old buckets"
    )
    if tail is not None:
        start, end = tail.physical_ranges[0]
        base = int(mm.base_offset or 0)
        page = "page 0" if not base else f"the manager's first page (at {base:,})"
        why += (
            f". Bytes {start:,}..{end:,} of {page}, where a manager never writes, are not zero: remains of an earlier "
            f"write at offset {base:,} of more than 34,848 bytes, such as a stable_save message"
        )
    lines.append(why + ".")
    recoverable = sum(o.details["entries"] for o in map_orphans)
    if map_orphans:
        lines.append(
            f"Intact: {recoverable:,} old entries in nodes the new map has not touched. Lost: old entries whose "
            "nodes sat in chunks the new map re-used, and whatever the fresh header and structures overwrote."
        )
    todo = "What to do: "
    if map_orphans:
        cmds = [f"stable-inspect salvage {path} --memory {o.memory_id}" for o in map_orphans[:3]]
        todo += (
            f"rebuild the map from its live and old entries with `{_repair_command(analysis, path)}` (the plan: "
            "what is restored and what stays lost; add --reference OLD_SNAPSHOT to count the entries no node "
            "holds any more), then run the same command without --dry-run to write the repaired snapshot; to "
            "only list the old entries, `" + "`, `".join(cmds) + "`"
        )
    else:
        todo += "copy the unowned buckets' bytes out before any memory grows into them"
    lines.append(todo + ".")
    return lines
