"""``stable-inspect entries PATH --memory ID``: every entry of one structure, decoded.

``--format jsonl`` prints one JSON object per line: ``key_hex`` (omitted for sequences) and
``value_hex`` are the exact stored bytes; ``key`` and ``value`` are the decoded forms. Entries are
streamed: the first line appears at once even for a map of millions, and ``--limit`` stops early.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from itertools import islice
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from inspector.decode.values import decode_for, type_for, validate_schema_types
from inspector.safe_text import safe_rich_text
from inspector.structures.base import Element, Structure

TABLE_DEFAULT_LIMIT = 1_000  # the table is for people; jsonl streams everything unless --limit


def resolve_structure(session: Any, memory_text: str) -> Structure:
    from inspector.cli import UsageError, _parse_memory_id

    memory_id = _parse_memory_id(memory_text)
    structure = session.analysis.structure(memory_id)
    if structure is None:
        known = ", ".join(str(mid) for mid, _ in session.analysis.memory_refs) or "none"
        raise UsageError(f"memory {memory_text} is not in this snapshot (memories: {known})")
    return structure


def _session_for(args: argparse.Namespace) -> Any:
    from inspector.cli import UsageError
    from inspector.session import load, load_schema

    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "key_size", None) is not None:
        overrides[str(args.memory)] = {"key_size": args.key_size}
    problems = validate_schema_types(load_schema(args.schema)) if args.schema else []
    if problems:
        raise UsageError("schema: " + "; ".join(problems))
    return load(args.path, did=args.did, schema=args.schema, overrides=overrides)


def jsonl_lines(structure: Structure, elements: Iterator[Element]) -> Iterator[str]:
    """One JSON line per element. Simple decoded types are formatted directly: this is the hot path of
    exporting millions of entries, and ``json.dumps`` of a dict per entry costs more than the rest."""
    is_map = not structure.is_sequence
    key_type = type_for(structure, "key") if is_map else None
    value_type = type_for(structure, "value")
    names = structure.names or None
    dumps = json.dumps
    for el in elements:
        value = value_type.decode(el.value, names=names).value
        if is_map and el.key is not None and key_type is not None:
            key = key_type.decode(el.key, names=names).value
            yield (
                f'{{"key_hex":"{el.key.hex()}","value_hex":"{el.value.hex()}",'
                f'"key":{dumps(key, ensure_ascii=False)},"value":{dumps(value, ensure_ascii=False)}}}'
            )
        else:
            yield f'{{"index":{el.index},"value_hex":"{el.value.hex()}","value":{dumps(value, ensure_ascii=False)}}}'


def write_jsonl(structure: Structure, limit: int | None, out: TextIO) -> int:
    n = 0
    write = out.write
    for line in jsonl_lines(structure, islice(structure.elements(0), limit)):
        write(line)
        write("\n")
        n += 1
    return n


def print_table(structure: Structure, limit: int | None, console: Console) -> int:
    is_map = not structure.is_sequence
    total = structure.count()
    shown = min(total, limit if limit is not None else TABLE_DEFAULT_LIMIT)
    title = f"{structure.kind} at memory {structure.memory_id}: {total:,} entries"
    if shown < total:
        title += f" (first {shown:,}; use --limit or --format jsonl for more)"
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("#", justify="right", style="dim")
    if is_map:
        table.add_column(f"key ({type_for(structure, 'key')})", overflow="fold")
    table.add_column(f"value ({type_for(structure, 'value')})", overflow="fold")
    for el in islice(structure.elements(0), shown):
        row = [str(el.index)]
        if is_map and el.key is not None:
            row.append(safe_rich_text(decode_for(structure, "key", el.key).text))  # type: ignore[arg-type]
        row.append(safe_rich_text(decode_for(structure, "value", el.value).text))  # type: ignore[arg-type]
        table.add_row(*row)
    console.print(table)
    return shown


def run(args: argparse.Namespace) -> int:
    from inspector.cli import UsageError

    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    session = _session_for(args)
    structure = resolve_structure(session, args.memory)
    if args.format == "jsonl":
        write_jsonl(structure, args.limit, sys.stdout)
    else:
        print_table(structure, args.limit, Console(highlight=False))
    for f in structure.findings:
        if f.severity == "error":
            print(f"stable-inspect: {f.code}: {f.message}", file=sys.stderr)
    return 0
