"""``stable-inspect entries PATH --memory ID``: every entry of one structure, decoded.

``--format jsonl`` prints one JSON object per line: ``key_hex`` (omitted for sequences) and
``value_hex`` are the exact stored bytes; ``key`` and ``value`` are the decoded forms. Entries are
streamed: the first line appears at once even for a map of millions, and ``--limit`` stops early.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.table import Table

from inspector.decode.values import decode_for, type_for, validate_schema_types
from inspector.safe_text import escape_control, json_safe, safe_rich_text
from inspector.slow_progress import note
from inspector.structures.base import Element, Structure

if TYPE_CHECKING:
    from inspector.commands.jsonl_columns import AsciiLines
    from inspector.decode.valuetypes import FieldNames, TypeExpr
    from inspector.session import Session

# Finding codes that mean "not every element is listed"; entries repeats them on stderr.
LISTING_CUT_CODES = frozenset({"vec_out_of_bounds"})
TABLE_DEFAULT_LIMIT = 1_000  # the table is for people; jsonl streams everything unless --limit


def resolve_structure(session: Session, memory_text: str) -> Structure:
    from inspector.cli import UsageError, _parse_memory_id

    memory_id = _parse_memory_id(memory_text)
    structure = session.analysis.structure(memory_id)
    if structure is None:
        known = ", ".join(str(mid) for mid, _ in session.analysis.memory_refs) or "none"
        raise UsageError(f"memory {memory_text} is not in this snapshot (memories: {known})")
    return structure


def _session_for(args: argparse.Namespace) -> Session:
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


def _json_texts(type_expr: TypeExpr, items: list[bytes], names: FieldNames) -> list[str]:
    """JSON of each item's decoded value: the type's bulk fast path, else one decode per item."""
    texts = type_expr.json_texts(items)
    if texts is not None:
        return texts
    dumps = json.dumps
    return [dumps(type_expr.decode(d, names=names).value, ensure_ascii=False) for d in items]


def map_jsonl_chunks(structure: Structure, limit: int | None) -> Iterator[str | AsciiLines] | None:
    """The jsonl of a B-tree map as text chunks of many lines, or None for other structures.

    Same lines as ``jsonl_lines``, produced a node's run of entries at a time: no ``Element`` per
    entry and the values decoded in bulk (``TypeExpr.json_texts``). This is what makes exporting a
    million-entry map take seconds rather than tens of seconds.
    """
    from inspector.structures.btreemap import BTreeMap

    bmap = structure.walker()
    if structure.is_sequence or not isinstance(bmap, BTreeMap):
        return None
    key_type = type_for(structure, "key")
    value_type = type_for(structure, "value")
    names = structure.names or None
    line = '{"key_hex":"%s","value_hex":"%s","key":%s,"value":%s}'

    def lines(keys: list[bytes], values: list[bytes]) -> str:
        key_hex = [k.hex() for k in keys]
        value_hex = [v.hex() for v in values]
        key_json = _json_texts(key_type, keys, names)
        value_json = _json_texts(value_type, values, names)
        out = list(map(line.__mod__, zip(key_hex, value_hex, key_json, value_json, strict=True)))
        out.append("")
        return "\n".join(out)

    def columns() -> Iterator[str | AsciiLines]:
        """A healthy map of fixed-width entries, a batch of subtrees at a time (vector_walk), as long
        as the types have a columnar JSON form; then whatever is left the entry-by-entry way."""
        from inspector.commands.jsonl_columns import MapLines, column_json
        from inspector.structures.btreemap.vector_walk import EntryBlocks

        left = limit
        blocks = EntryBlocks(bmap)
        formatter: MapLines | None = None  # every block has the same widths: one layout for all
        for keys, values in blocks:
            if left is not None:
                if left <= 0:
                    return
                keys, values = keys[:left], values[:left]
                left -= len(keys)
            key_json = column_json(key_type, keys.shape[1])
            value_json = column_json(value_type, values.shape[1])
            if key_json is not None and value_json is not None:
                if formatter is None:
                    formatter = MapLines(keys.shape[1], values.shape[1], key_json, value_json)
                yield from formatter(keys, values)
            else:
                kb, vb = keys.tobytes(), values.tobytes()
                kw, vw = keys.shape[1], values.shape[1]
                yield lines(
                    [kb[i : i + kw] for i in range(0, len(kb), kw)] if kw else [b""] * len(keys),
                    [vb[i : i + vw] for i in range(0, len(vb), vw)] if vw else [b""] * len(values),
                )
        if blocks.stopped_at is not None and (left is None or left > 0):
            yield from chunks(blocks.stopped_at, left)

    def chunks(start: int = 0, left: int | None = limit) -> Iterator[str]:
        # Node runs are short (a leaf's ≤ 11 entries, or one separator), so they are gathered into
        # runs of a few thousand: per-run costs vanish, few write calls, and output still streams.
        keys: list[bytes] = []
        values: list[bytes] = []
        for run_keys, run_values in bmap.iter_batches(start):
            if left is not None:
                if left <= 0:
                    break
                if len(run_keys) > left:
                    run_keys, run_values = run_keys[:left], run_values[:left]
                left -= len(run_keys)
            keys += run_keys
            values += run_values
            if len(keys) >= 4096:
                yield lines(keys, values)
                keys, values = [], []
        if keys:
            yield lines(keys, values)

    return columns()


def write_jsonl(
    structure: Structure, limit: int | None, out: TextIO, guard: Callable[[], None] | None = None
) -> int:
    """``guard`` is called every few thousand lines (the CLI checks that the file has not shrunk)."""
    n = 0
    write = out.write
    binary = getattr(out, "buffer", None)  # sys.stdout's bytes layer, for lines that are bytes already
    chunks = map_jsonl_chunks(structure, limit)
    if chunks is not None:
        total = structure.count()
        for chunk in chunks:
            if guard is not None:
                guard()
            note("entries written", n, total)
            if not isinstance(chunk, str):  # AsciiLines from the columnar path
                if binary is not None:
                    out.flush()
                    binary.write(chunk.data)
                else:
                    write(chunk.data.tobytes().decode("ascii"))
                n += chunk.lines
                continue
            # Bidi overrides, C1 controls and the like stay raw under ensure_ascii=False: escape them.
            write(json_safe(chunk))
            n += chunk.count("\n")
        return n
    for line in jsonl_lines(structure, islice(structure.elements(0), limit)):
        if guard is not None and not n & 0xFFF:
            guard()
            note("entries written", n)
        write(json_safe(line))
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
    try:
        structure = resolve_structure(session, args.memory)
        # The walk reads the mapped file; one that shrank since it was opened would end in SIGBUS.
        session.snapshot.check_unchanged()
        if args.format == "jsonl":
            write_jsonl(structure, args.limit, sys.stdout, guard=session.snapshot.check_unchanged)
        else:
            print_table(structure, args.limit, Console(highlight=False))
        for f in structure.findings:
            # Errors, and any finding that says the listing stops short (e.g. a zero-sized-slot Vec
            # claiming more elements than are listed): output that ends early says so.
            if f.severity == "error" or f.code in LISTING_CUT_CODES:
                print(f"stable-inspect: {f.code}: {escape_control(f.message)}", file=sys.stderr)
        return 0
    finally:
        session.close()
