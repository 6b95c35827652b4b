"""The human ``diff --report``: one rich renderable built from a computed ``SnapshotDiff``.

Kept apart from the command so that ``diff --json`` never imports rich. Every string that comes from a
snapshot goes through ``safe_rich_text`` and is never parsed as markup.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from inspector.diff.engine import SnapshotDiff
from inspector.safe_text import safe_rich_text

REPORT_RANGES = 20  # changes (groups of ranges) listed in the report
REPORT_AREAS = 12  # areas listed per side
REPORT_FIELDS = 16  # MemoryManager header fields listed
REPORT_ITEMS = 20  # entry differences listed per structure
REPORT_BUCKETS = 10


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
