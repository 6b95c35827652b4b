"""``stable-inspect diff OLD NEW``: compare two snapshots (TUI by default, ``--json`` or ``--report``).

Both snapshots are loaded before anything is shown, so an unreadable input ends with one line on
stderr and exit status 2 (``InputError``), never with a half-drawn screen. The report is ``rich``
output; every string that comes from a snapshot goes through ``safe_rich_text`` and is never parsed
as markup. The TUI is imported only on its own path, so ``--json`` and ``--report`` never load Textual.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from inspector.jsonout import json_default
from inspector.safe_text import json_safe, safe_rich_text

if TYPE_CHECKING:  # the engine is imported after the byte compare has been started (see run)
    from inspector.diff.engine import SnapshotDiff

REPORT_RANGES = 20  # changes (groups of ranges) listed in the report
REPORT_AREAS = 12  # areas listed per side
REPORT_FIELDS = 16  # MemoryManager header fields listed
REPORT_ITEMS = 20  # entry differences listed per structure
REPORT_BUCKETS = 10


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from inspector.cli import UsageError
    from inspector.decode.values import validate_schema_types
    from inspector.session import load, load_schema

    if args.schema:
        problems = validate_schema_types(load_schema(args.schema))
        if problems:
            raise UsageError("schema: " + "; ".join(problems))
    old = load(args.old, did=args.did, schema=args.schema)
    try:
        new = load(args.new, did=args.did, schema=args.schema)
    except BaseException:
        old.close()
        raise
    return old, new


def _compute(old: Any, new: Any, byte_result: Any = None) -> SnapshotDiff:
    """The diff, with a progress bar on an interactive stderr (a multi-GiB compare takes seconds)."""
    from inspector.diff.engine import diff_sessions

    if byte_result is not None or not sys.stderr.isatty():
        return diff_sessions(old, new, byte_result=byte_result)
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), transient=True, console=Console(stderr=True)
    ) as bar:
        task = bar.add_task("comparing", total=1)

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"comparing {stage}", completed=done, total=max(total, 1))

        return diff_sessions(old, new, progress=progress)


def _dump(value: Any, indent: str) -> str:
    text = json.dumps(value, indent=2, default=json_default, ensure_ascii=False)
    # ensure_ascii=False leaves bidi overrides and C1 controls raw: json_safe escapes those.
    return json_safe(text).replace("\n", "\n" + indent)


def write_json_stream(diff: SnapshotDiff, out: TextIO) -> None:
    """Write ``diff --json`` key by key and long lists item by item, so the output never exists whole
    in memory (it can list thousands of ranges); the text parses to ``diff.to_json()``."""
    out.write("{")
    first = True
    for key, value in diff.iter_json():
        out.write("" if first else ",")
        first = False
        out.write(f"\n  {json.dumps(key)}: ")
        if isinstance(value, Iterator):
            out.write("[")
            sep = "\n    "
            for item in value:
                out.write(sep + _dump(item, "    "))
                sep = ",\n    "
            out.write("\n  ]" if sep != "\n    " else "]")
        else:
            out.write(_dump(value, "  "))
    out.write("\n}\n")


def run(args: argparse.Namespace) -> int:
    # The CLI starts the byte compare in a child before importing this module (see inspector.diff.prefetch);
    # callers that come here directly get the same overlap from here.
    pending = getattr(args, "pending_bytes", None)
    fail_on = getattr(args, "fail_on", None)
    if pending is None and (args.json or args.report or fail_on):
        from inspector.diff.prefetch import start_byte_diff

        pending = start_byte_diff(args.old, args.new)
    try:
        old, new = _load(args)
    except BaseException:
        if pending is not None:
            pending.result()  # reap the child
        raise
    if not args.json and not args.report and not fail_on:
        from inspector.tui.diff_app import create_diff_app

        app = create_diff_app(old, new)
        try:
            app.run()
        finally:
            old.close()
            new.close()
        return int(app.return_code or 0)
    try:
        byte_result = pending.result() if pending is not None else None
        # The comparison reads both mapped files; one that shrank since it was opened would end in SIGBUS.
        old.snapshot.check_unchanged()
        new.snapshot.check_unchanged()
        diff = _compute(old, new, byte_result)
        if args.json:
            write_json_stream(diff, sys.stdout)
        else:
            Console(highlight=False).print(render_report(diff))
        if fail_on:
            failed = gate_failure(diff.to_json(), fail_on)
            if failed:
                print(f"stable-inspect diff: failing (--fail-on {fail_on}): {failed}", file=sys.stderr)
                return 1
    finally:
        old.close()
        new.close()
    return 0


FAIL_ON = ("loss", "incident", "any")


def gate_failure(report: dict[str, Any], mode: str) -> str | None:
    """Why ``--fail-on MODE`` fails this comparison (None: it passes). ``loss``: entries of the old
    snapshot are gone or an incident lost data; ``incident``: an incident was detected; ``any``: the
    snapshots differ at all."""
    kind = report.get("incident")
    # The diff classifies every comparison; only these two mean "nothing went wrong".
    incident = kind if kind not in (None, "identical", "healthy") else None
    if mode == "any":
        if not report.get("identical"):
            n = int(report.get("changed_range_count") or 0)
            return f"the snapshots differ ({n:,} changed byte range{'' if n == 1 else 's'})"
        return None
    if incident:
        return f"incident detected: {incident}"
    if mode == "loss":
        lost = [
            (s.get("memory_id"), int(s.get("removed") or 0))
            for s in report.get("structures") or []
            if int(s.get("removed") or 0) > 0 or s.get("status") == "removed"
        ]
        if lost:
            parts = [f"memory {mid}: {n:,} entr{'y' if n == 1 else 'ies'} removed" for mid, n in lost]
            return "entries lost (" + "; ".join(parts) + ")"
    return None


# --------------------------------------------------------------------------- report


def _t(text: Any, style: str = "") -> Text:
    return safe_rich_text(str(text), style)


def _range_text(s: int, e: int) -> str:
    return f"{s:#x}–{e:#x}"


def render_report(d: SnapshotDiff) -> RenderableType:
    """The whole report as one renderable (tests render it to a string)."""
    parts: list[RenderableType] = []
    b = d.bytes
    head = Text("stable-inspect diff  ", style="bold")
    head.append_text(_t(d.old.snapshot.path))
    head.append("  →  ")
    head.append_text(_t(d.new.snapshot.path))
    parts.append(head)
    parts.append(
        Panel(_t(d.verdict), title=f"verdict: {d.incident.kind}", title_align="left", border_style="bold")
    )
    for fact in d.incident.facts:
        parts.append(_t(f"• {fact}"))
    size = f"{b.size_a:,} → {b.size_b:,} bytes" if b.size_a != b.size_b else f"both {b.size_a:,} bytes"
    parts.append(
        Text(
            f"\nBytes: {b.range_count:,} changed ranges, {b.total_bytes:,} bytes changed ({size})",
            style="bold",
        )
    )
    if b.merged:
        parts.append(
            Text(
                f"  listed as {b.count:,} runs: ranges less than {b.gap + 1:,} bytes apart are merged "
                "(each run keeps its exact count of differing bytes)"
            )
        )
    if b.tail is not None:
        grew = "grew" if b.size_b > b.size_a else "shrank"
        parts.append(
            Text(f"  the snapshot {grew}: tail {_range_text(b.tail.start, b.tail.end)} is its own range")
        )
    if d.identical:
        return Group(*parts)
    parts.append(_areas_table(d))
    parts.append(_changes_table(d))
    parts.extend(_layout_parts(d))
    parts.extend(_structure_parts(d))
    return Group(*parts)


def _areas_table(d: SnapshotDiff) -> Table:
    table = Table(
        title="Changed bytes by what they hit", title_justify="left", show_lines=False, expand=False
    )
    table.add_column("old layout", overflow="fold")
    table.add_column("bytes", justify="right")
    table.add_column("new layout", overflow="fold")
    table.add_column("bytes", justify="right")
    old, ok_old = d.area_totals("old")
    new, ok_new = d.area_totals("new")
    for i in range(min(REPORT_AREAS, max(len(old), len(new)))):
        a = old[i] if i < len(old) else None
        n = new[i] if i < len(new) else None
        table.add_row(
            _t(a.area if a else ""),
            f"{a.bytes:,}" if a else "",
            _t(n.area if n else ""),
            f"{n.bytes:,}" if n else "",
        )
    if not (ok_old and ok_new):
        table.caption = "(too many ranges: the rest is totalled as 'not attributed')"
    return table


def _changes_table(d: SnapshotDiff) -> Table:
    """Changes: consecutive changed ranges grouped by what they hit on both sides."""
    groups = d.groups(REPORT_RANGES + 1)
    shown = groups[:REPORT_RANGES]
    more = len(groups) > REPORT_RANGES
    title = f"Changes (first {len(shown)}; --json lists more)" if more else f"Changes ({len(shown)})"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", style="dim")
    table.add_column("physical range", no_wrap=True)
    table.add_column("bytes", justify="right")
    table.add_column("in the old layout", overflow="fold")
    table.add_column("in the new layout", overflow="fold")
    for g in shown:
        rng = _range_text(g.start, g.end) + ("  (tail)" if g.tail else "")
        if g.ranges > 1:
            rng += f"\n{g.ranges:,} ranges"
        table.add_row(str(g.index + 1), rng, f"{g.bytes:,}", _t(g.old_what), _t(g.new_what))
    return table


def _layout_parts(d: SnapshotDiff) -> list[RenderableType]:
    parts: list[RenderableType] = []
    if d.layouts["old"] != d.layouts["new"]:
        parts.append(Text(""))
        parts.append(_t(f"Layout: old side {d.layouts['old']}, new side {d.layouts['new']}"))
    if d.memory_manager:
        table = Table(title="MemoryManager header (old → new)", title_justify="left")
        table.add_column("field")
        table.add_column("old", overflow="fold")
        table.add_column("new", overflow="fold")
        items = list(d.memory_manager.items())
        for key, (a, b) in items[:REPORT_FIELDS]:
            table.add_row(_t(key), _t(a), _t(b))
        if len(items) > REPORT_FIELDS:
            table.caption = f"… {len(items) - REPORT_FIELDS} more fields changed (see --json)"
        parts.append(table)
    if d.bucket_changes_count:
        line = Text(f"Bucket table: {d.bucket_changes_count:,} owner entries changed", style="bold")
        parts.append(line)
        if (
            "memory_manager" not in (d.layouts["old"], d.layouts["new"])
            or d.layouts["old"] != d.layouts["new"]
        ):
            parts.append(
                Text("  (one side has no valid header: its bytes there are not a bucket table)", style="dim")
            )
        for c in d.bucket_changes[:REPORT_BUCKETS]:
            parts.append(_t(f"  bucket {c.bucket}: {_owner(c.old)} → {_owner(c.new)}"))
        if d.bucket_changes_count > REPORT_BUCKETS:
            parts.append(Text(f"  … {d.bucket_changes_count - REPORT_BUCKETS:,} more"))
    if d.memories:
        parts.append(Text("Memories", style="bold"))
        for m in d.memories:
            parts.append(_t(f"  {m.describe()}"))
    return parts


def _owner(o: int | None) -> str:
    return "unallocated" if o is None else f"memory {o}"


def _structure_parts(d: SnapshotDiff) -> list[RenderableType]:
    parts: list[RenderableType] = []
    table = Table(title="Structures", title_justify="left")
    for col, just in (
        ("memory", "left"),
        ("kind", "left"),
        ("status", "left"),
        ("old", "right"),
        ("new", "right"),
        ("added", "right"),
        ("removed", "right"),
        ("changed", "right"),
        ("header changes", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for sd in d.structures:
        table.add_row(
            _t(sd.memory_id),
            _t(sd.kind),
            _t(sd.status + ("" if sd.complete else " (partial)")),
            "" if sd.old_count is None else f"{sd.old_count:,}",
            "" if sd.new_count is None else f"{sd.new_count:,}",
            f"{sd.added:,}",
            f"{sd.removed:,}",
            f"{sd.changed:,}",
            _t(", ".join(sd.header) or "-"),
        )
    parts.append(table)
    for sd in d.structures:
        if sd.note:
            parts.append(_t(f"  {sd.label}: {sd.note}"))
    for sd in d.structures:
        items = sd.rendered_items()
        if not items:
            continue
        total = sd.added + sd.removed + sd.changed
        shown = min(len(items), REPORT_ITEMS)
        t = Table(title=f"{sd.label}: {sd.counts_text()} — first {shown} of {total:,}", title_justify="left")
        t.add_column("", no_wrap=True)
        t.add_column("key / index", overflow="fold")
        t.add_column("old", overflow="fold")
        t.add_column("new", overflow="fold")
        for it in items[:shown]:
            key = it.get("key_text") if "key_text" in it else f"[{it.get('index')}]"
            t.add_row(
                _t(it["op"]),
                _t(key),
                _t(it.get("old", {}).get("text", "") if "old" in it else ""),
                _t(it.get("new", {}).get("text", "") if "new" in it else ""),
            )
        parts.append(t)
    return parts
