"""``stable-inspect salvage PATH --memory ID [--reference OLDPATH] [--format table|jsonl]``.

Recovers the entries of a BTreeMap that the library will not give back by itself: the valid nodes its
root no longer reaches (a map re-created over old data), and, when the MemoryManager header is gone,
the whole map through the reconstructed layout. See ``inspector.analysis.salvage`` for the rules; no
entry is ever guessed.

``--format jsonl`` prints one object per recovered entry: ``key_hex``/``value_hex`` (the stored bytes),
``key``/``value`` (decoded as ``entries`` decodes them) and where it came from (``node_addr``,
``node_physical_addr``, ``index_in_node``, ``reachability`` "reachable"/"unreachable", ``chunk``,
``layout`` "live"/"reconstructed"; ``reference`` "identical"/"different"/"absent" with
``--reference``). A summary goes to stderr.

``--memory`` takes a MemoryId, ``raw``, or for a reconstructed memory whose id is unknown its key
``?b<N>`` (``b<N>`` also works: N is its first bucket). When the bucket table is gone and exactly one
BTreeMap of unknown id survives, a MemoryId that the layout cannot place selects that map.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import islice
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.table import Table

from inspector.analysis.salvage import SalvagedEntry, SalvageResult, compare_with_reference, salvage_structure
from inspector.jsonout import JsonObject
from inspector.safe_text import escape_control, json_safe, safe_rich_text
from inspector.structures.base import Structure

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.analysis.reconstruct import ReconMemory

TABLE_VALUE_CHARS = 120
SAMPLE_SIZE = 16


def parse_memory(text: str) -> int | str:
    from inspector.cli import _parse_memory_id

    return _parse_memory_id(text)


def _known(analysis: Analysis) -> str:
    return ", ".join(str(mid) for mid, _ in analysis.memory_refs) or "none"


def resolve_map(analysis: Analysis, key: int | str) -> tuple[Any | None, str, str, list[str]]:
    """(structure or None, label, layout, notes) for the map the user asked for."""
    from inspector.cli import UsageError

    recon = analysis.reconstructed
    recon_keys = {m.id for m in recon.memories} if recon is not None else set()
    notes: list[str] = []
    headless = _headless_choice(analysis, key, notes)
    if headless is not None:
        return headless, headless.label, "headless", notes
    structure = analysis.structure(key)
    if structure is None and recon is not None and not isinstance(key, str):
        maps = [s for s in recon.structures if s.kind == "btreemap" and isinstance(s.memory_id, str)]
        if len(maps) == 1:
            structure = maps[0]
            m = recon.memory(structure.memory_id)
            where = f"bucket {m.buckets[0]}" if m is not None and m.buckets else "the reconstructed layout"
            notes.append(
                f"memory {key} cannot be placed (the bucket table is gone); using the only BTreeMap that survives, "
                f"memory ? at {where} (key {structure.memory_id})"
            )
        elif len(maps) > 1:
            keys = ", ".join(str(s.memory_id) for s in maps)
            raise UsageError(
                f"memory {key} cannot be placed (the bucket table is gone) and several maps survive: pick one of {keys}"
            )
        else:
            notes.append(
                f"memory {key} cannot be placed and no BTreeMap header survives in the reconstructed layout: "
                "nothing to salvage"
            )
            return None, f"memory {key}", "reconstructed", notes
    if structure is None:
        if recon is None and analysis.stable_save is not None and not analysis.mm.present:
            notes.append("no MemoryManager or BTreeMap evidence survives: nothing to salvage")
            return None, f"memory {key}", "reconstructed", notes
        raise UsageError(f"memory {key} is not in this snapshot (memories: {_known(analysis)})")
    if structure.kind != "btreemap":
        raise UsageError(
            f"memory {structure.memory_id} holds a {structure.kind}, not a BTreeMap: salvage recovers map entries"
        )
    layout = "reconstructed" if structure.memory_id in recon_keys else "live"
    m = recon.memory(structure.memory_id) if recon is not None else None
    label = (
        m.label
        if m is not None
        else ("raw memory" if structure.memory_id == "raw" else f"memory {structure.memory_id}")
    )
    return structure, label, layout, notes


def _headless_choice(analysis: Analysis, key: int | str, notes: list[str]) -> ReconMemory | None:
    """The reconstructed memory (``ReconMemory``) to salvage without a map header, if ``key`` names one:
    its own key ("?b1"), or a MemoryId the layout cannot place when it is the only such memory."""
    from inspector.analysis.headless import headless_memories

    found = headless_memories(analysis)
    for rm, _cluster in found:
        if rm.id == key:
            return rm
    if isinstance(key, int) and analysis.structure(key) is None and len(found) == 1:
        maps = [s for s in analysis.structures if s.kind == "btreemap"]
        if not maps:
            rm = found[0][0]
            notes.append(
                f"memory {key} cannot be placed (the bucket table is gone); using the only map whose nodes survive, "
                f"{rm.label} (key {rm.id})"
            )
            return rm
    return None


def reference_map(path: str, structure: Structure, key: int | str) -> tuple[dict[bytes, bytes], str]:
    """Entries of the same map in an earlier snapshot: by MemoryId, else by where the map starts."""
    from inspector.session import load

    session = load(path)
    try:
        return _reference_entries(session.analysis, path, structure, key)
    finally:
        session.close()


def _reference_entries(
    analysis: Analysis, path: str, structure: Structure, key: int | str
) -> tuple[dict[bytes, bytes], str]:
    from inspector.cli import UsageError

    candidates = [structure.memory_id, key]
    ref = None
    for c in candidates:
        s = analysis.structure(c)
        if s is not None and s.kind == "btreemap":
            ref = s
            break
    if ref is None:
        start = structure.physical_start
        for s in analysis.structures:
            if s.kind == "btreemap" and start is not None and s.physical_start == start:
                ref = s
                break
    walker = ref.walker() if ref is not None else None
    if ref is None or walker is None:
        raise UsageError(
            f"{path}: no BTreeMap at memory {key} (or at the same physical start) to compare with"
        )
    entries = {bytes(e.key): bytes(e.value) for e in walker.iter_entries()}
    label = f"{path} memory {ref.memory_id}"
    return entries, label


class _Decoders:
    """Key/value decoders: the schema's choice, else a guess from the recovered entries themselves
    (the live map may be empty or hold other data than what is being salvaged)."""

    def __init__(self, structure: Structure, entries: list[SalvagedEntry]) -> None:
        from inspector.decode.valuetypes import guess_type, parse_type

        settings = structure.settings
        self.names = structure.names or None
        self.types: dict[str, Any] = {}
        for role in ("key", "value"):
            chosen = settings.get(role)
            expr = None
            if isinstance(chosen, str) and chosen not in ("", "auto"):
                try:
                    expr = parse_type(chosen)
                except ValueError:
                    expr = None
            if expr is None:
                samples = [e.key if role == "key" else e.value for e in islice(entries, SAMPLE_SIZE)]
                expr = guess_type(samples, role)
            self.types[role] = expr

    def decode(self, role: str, data: bytes) -> Any:
        return self.types[role].decode(data, names=self.names)


def entry_json(e: SalvagedEntry, result: SalvageResult, dec: _Decoders) -> JsonObject:
    out: JsonObject = {
        "key_hex": e.key.hex(),
        "value_hex": e.value.hex(),
        "key": dec.decode("key", e.key).value,
        "value": dec.decode("value", e.value).value,
        "memory_id": result.memory_id,
        "node_addr": e.node_addr,
        "node_physical_addr": e.node_physical_addr,
        "index_in_node": e.index_in_node,
        "reachability": e.reachability,
        "chunk": e.chunk,
        "layout": result.layout,
    }
    if e.confirmed_by is not None:
        out["confirmed_by_parent"] = e.confirmed_by
    if e.duplicate_key:
        out["duplicate_key"] = True
    if e.reference is not None:
        out["reference"] = e.reference
    return out


def write_jsonl(result: SalvageResult, out: TextIO) -> int:
    rec = result.recovered()
    dec = _Decoders(result.structure, rec)
    for e in rec:
        # ensure_ascii=False leaves bidi overrides and C1 controls raw: json_safe escapes those.
        out.write(json_safe(json.dumps(entry_json(e, result, dec), ensure_ascii=False)))
        out.write("\n")
    return len(rec)


TABLE_ROWS = 1_000  # rows of the table output, as for `entries`


def print_table(result: SalvageResult, console: Console) -> int:
    rec = result.recovered()
    dec = _Decoders(result.structure, rec)
    title = f"salvage of {result.label} ({result.layout} layout): {len(rec):,} entries recovered"
    if len(rec) > TABLE_ROWS:
        # The table is for people; a big salvage is for `--format jsonl`, which streams everything.
        title += f" (first {TABLE_ROWS:,} shown; use --format jsonl for all)"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column(f"key ({dec.types['key']})", overflow="fold")
    table.add_column(f"value ({dec.types['value']})", overflow="fold")
    table.add_column("node", style="dim")
    table.add_column("found")
    with_ref = result.reference_summary is not None
    if with_ref:
        table.add_column("vs reference")
    for i, e in enumerate(rec[:TABLE_ROWS]):
        value = dec.decode("value", e.value).text
        if len(value) > TABLE_VALUE_CHARS:
            value = value[: TABLE_VALUE_CHARS - 1] + "…"
        row = [
            str(i),
            safe_rich_text(dec.decode("key", e.key).text),
            safe_rich_text(value),
            f"{e.node_addr:#x}"
            + (f" @{e.node_physical_addr:#x}" if e.node_physical_addr is not None else ""),
            e.reachability + (" (dup key)" if e.duplicate_key else ""),
        ]
        if with_ref:
            row.append(e.reference or "")
        table.add_row(*row)  # type: ignore[arg-type]
    console.print(table)
    return len(rec)


def summary_lines(result: SalvageResult) -> list[str]:
    rec = result.recovered()
    scan = result.scan
    unreachable = sum(1 for e in rec if e.reachability == "unreachable")
    lines = [
        f"{result.label} ({result.layout} layout): {len(rec):,} entries recovered"
        + (f", {unreachable:,} of them from {len(scan.accepted)} unreachable node(s)" if unreachable else "")
    ]
    if result.layout == "live" and result.reachable_count:
        lines.append(
            f"{result.reachable_count:,} entries reachable from the live root are not listed: the library still "
            "returns them (see `entries`)"
        )
    if scan.rejected_count:
        reasons = "; ".join(
            f"{n} {r}" for r, n in sorted(scan.rejected_reasons().items(), key=lambda x: -x[1])
        )
        lines.append(f"{scan.rejected_count} node(s) left out: {reasons}")
    dups = sum(1 for e in rec if e.duplicate_key)
    if dups:
        lines.append(f"{dups} entries share a key with another recovered entry (marked duplicate_key)")
    ref = result.reference_summary
    if ref is not None:
        lines.append(
            f"vs {ref['reference']}: {ref['identical']:,} identical, {ref['different']:,} different, "
            f"{ref['not_in_reference']:,} not in the reference; {ref['reference_entries_not_recovered']:,} of its "
            f"{ref['reference_entries']:,} entries were not recovered"
            + (
                f" ({ref['reference_entries_not_recovered_but_live']:,} of those are in the live map)"
                if ref["reference_entries_not_recovered_but_live"]
                else ""
            )
        )
    lines.extend(result.notes)
    return lines


NOT_RECOVERED_SHOWN = 100  # keys listed by name; the JSON summary carries up to 1,000


def not_recovered_lines(result: SalvageResult, structure: Structure) -> list[str]:
    """The reference's keys that salvage could not recover, one per line, decoded like the table."""
    ref = result.reference_summary
    if not ref or not ref.get("reference_entries_not_recovered"):
        return []
    # Keys still in the live map are not lost (the library returns them): only the others are listed.
    live = {e.key for e in result.entries if e.reachability == "reachable"}
    missing = [k for k in (bytes.fromhex(h) for h in ref.get("not_recovered_keys_hex", [])) if k not in live]
    total = int(ref["reference_entries_not_recovered"]) - int(ref["reference_entries_not_recovered_but_live"])
    if total <= 0:
        return []
    keys = missing[:NOT_RECOVERED_SHOWN]
    dec = _Decoders(structure, result.entries)
    lines = [
        f"{total:,} key{'' if total == 1 else 's'} of the reference not recovered (nor in the live map):"
    ]
    for key in keys:
        try:
            text = str(dec.decode("key", key).text)
        except Exception:  # a key the guessed type cannot read: its bytes say enough
            text = key.hex()
        lines.append("  " + escape_control(text if len(text) <= 120 else text[:119] + "…"))
    if total > len(keys):
        lines.append(f"  … {total - len(keys):,} more (see the JSON summary's not_recovered_keys_hex)")
    return lines


def run(args: argparse.Namespace) -> int:
    from inspector.session import load

    key = parse_memory(args.memory)
    if args.reference:
        # A bad --reference is the one line the user sees, before any note about the map.
        from inspector.snapshot import open_snapshot

        open_snapshot(args.reference).close()
    session = load(args.path, did=getattr(args, "did", None), schema=getattr(args, "schema", None))
    try:
        # The scans read the mapped file; one that shrank since it was opened would end in SIGBUS.
        session.snapshot.check_unchanged()
        analysis = session.analysis
        structure, label, layout, notes = resolve_map(analysis, key)
        for note in notes:
            print(f"stable-inspect: {note}", file=sys.stderr)
        if structure is None:
            return 0
        if layout == "headless":
            from inspector.analysis.headless import headless_memories, salvage_memory

            cluster = next(c for rm, c in headless_memories(analysis) if rm is structure)
            result = salvage_memory(analysis, structure, cluster, session.snapshot.fd)
            structure = result.structure
        else:
            from inspector.analysis.headless import continuation_buckets, with_buckets

            extra = continuation_buckets(analysis, structure) if layout == "live" else []
            mem = None
            if extra:
                mem = with_buckets(structure.mem, extra)
                notes.append(
                    f"the old map continues in unowned bucket(s) {', '.join(map(str, extra))} (its chunk grid "
                    "runs on through them): scanned too"
                )
            result = salvage_structure(structure, layout=layout, label=label, fd=session.snapshot.fd, mem=mem)
            result.notes.extend(notes[-1:] if extra else [])
        if args.reference:
            entries, ref_label = reference_map(args.reference, structure, key)
            compare_with_reference(result, entries, ref_label)
        if args.format == "jsonl":
            write_jsonl(result, sys.stdout)
        else:
            print_table(result, Console(highlight=False))
        for line in summary_lines(result):
            print(f"stable-inspect: {line}", file=sys.stderr)
        for line in not_recovered_lines(result, structure):
            print(f"stable-inspect: {line}", file=sys.stderr)
        return 0
    finally:
        session.close()
