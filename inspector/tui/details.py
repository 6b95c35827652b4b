"""The details panel: what the selected region is, its decoded fields, findings and decoded value.

Fields and findings are shown at once; the value is decoded in a thread worker (a Candid value can be
hundreds of KB), replacing a "decoding…" line when it is ready. Everything from the snapshot is
rendered as literal ``Text`` (``safe_rich_text``), never as markup.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.containers import VerticalScroll
from textual.widgets import Static

from inspector.byte_inspector import display_value, hex_rows
from inspector.model import Region
from inspector.safe_text import safe_rich_text
from inspector.views.colour_roles import ROLE_CLASSES, label_role
from inspector.views.value_display import CORE_LOCK, Shown, show_value

MAX_VALUE_LINES = 300
MAX_RANGES_SHOWN = 6
FIELD_LIMIT = 1024  # characters of one field value in the fields table (the rest: "… N more bytes")
# Values up to this many bytes (all of an entry's together) are decoded at once on the event loop, so
# moving through a page of small entries repaints the panel once, not "decoding…" and then the value.
INLINE_DECODE_BYTES = 512
SEVERITY_ROLE = {"error": "role--corrupt", "warning": "details--warning", "info": "details--info"}


BLOB_DECODERS = frozenset({"blob", "raw"})


def _is_blob(s: Shown) -> bool:
    """Shown as hex rows: undecodable bytes, or a blob/raw value longer than a line."""
    if s.data is None or len(s.data) <= 16:
        return False
    return not s.ok or s.decoder in BLOB_DECODERS or s.value == s.data.hex()


def _limit_lines(text: str) -> str:
    lines = text.splitlines()
    if len(lines) <= MAX_VALUE_LINES:
        return text
    return "\n".join(
        lines[:MAX_VALUE_LINES] + [f"… {len(lines) - MAX_VALUE_LINES:,} more lines (export to see all)"]
    )


def _field_text(f: Any) -> str:
    if f.display is not None:
        return str(f.display)
    return display_value(f.value)


class DetailsPanel(VerticalScroll):
    COMPONENT_CLASSES: ClassVar[set[str]] = set(ROLE_CLASSES) | {
        "details--label",
        "details--dim",
        "details--warning",
        "details--info",
        "details--error",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.current: Region | None = None
        self._head = Static(markup=False, id="details-head")
        self._value = Static(markup=False, id="details-value")
        # What the two parts show right now (kept for tests and exports: Static does not expose it).
        self.head_renderable: RenderableType = Text("")
        self.value_renderable: RenderableType = Text("")

    def compose(self) -> Any:
        yield self._head
        yield self._value

    def _s(self, name: str) -> Any:
        return self.get_component_rich_style(name, partial=True)

    def show(self, region: Region | None) -> None:
        self.current = region
        if region is None:
            self._set(Text(""), Text(""))
            return
        targets = self._value_targets(region)
        shown = self._decode_inline(targets)
        if shown is not None:
            self._set(self._render_head(region), self._render_values(shown))
        else:
            self._set(self._render_head(region), Text("decoding…", style=self._s("details--dim")))
            self._decode(region, targets)
        self.scroll_home(animate=False)

    @staticmethod
    def _decode_inline(targets: list[tuple[str, Any]]) -> list[tuple[str, Shown | None]] | None:
        """The decoded targets when they are small and the core is free now; None: decode in a worker."""
        total = 0
        for _label, ref in targets:
            data = getattr(ref, "data", None)
            if not isinstance(data, bytes | bytearray | memoryview):
                return None
            total += len(data)
        if total > INLINE_DECODE_BYTES:
            return None
        # A worker may hold the core (building a far page of entries): never wait for it here.
        if not CORE_LOCK.acquire(blocking=False):
            return None
        try:
            return [(label, show_value(ref)) for label, ref in targets]
        finally:
            CORE_LOCK.release()

    def _set(self, head: RenderableType | None, value: RenderableType) -> None:
        if head is not None:
            self.head_renderable = head
            self._head.update(head)
        self.value_renderable = value
        self._value.update(value)

    def _value_targets(self, region: Region) -> list[tuple[str, Any]]:
        """(label, value ref) pairs to decode: an entry shows its key and its value."""
        out: list[tuple[str, Any]] = []
        if region.kind == "entry" and region.children_loaded:
            for child in region.children():
                if child.kind in ("key", "value") and child.value is not None:
                    out.append((child.kind, child.value))
        if not out and region.value is not None:
            out.append(("value" if region.kind != "key" else "key", region.value))
        return out

    @work(thread=True, exclusive=True, group="details", exit_on_error=False)
    def _decode(self, region: Region, targets: list[tuple[str, Any]]) -> None:
        shown = [(label, show_value(ref)) for label, ref in targets]
        self.app.call_from_thread(self._show_values, region, shown)

    def _show_values(self, region: Region, shown: list[tuple[str, Shown | None]]) -> None:
        if region is not self.current:
            return
        self._set(None, self._render_values(shown))

    def _render_values(self, shown: list[tuple[str, Shown | None]]) -> RenderableType:
        parts: list[RenderableType] = []
        for label, s in shown:
            if s is None:
                continue
            head = Text()
            head.append(f"{label}", style=self._s(f"role--{label}") if label in ("key", "value") else "")
            if s.decoder:
                head.append_text(safe_rich_text(f" ({s.decoder})", self._s("details--dim")))
            if s.data is not None:
                head.append(f"  {len(s.data):,} bytes", style=self._s("details--dim"))
            parts.append(head)
            if s.data is not None and _is_blob(s):
                # Bytes nobody could decode (or a blob): hex + ASCII rows, as in the hex view.
                parts.append(Text("\n".join(hex_rows(s.data)), style=self._s("details--dim")))
            else:
                parts.append(safe_rich_text(_limit_lines(s.text) or "(empty)", single_line=False))
            if not s.ok and s.error:
                parts.append(safe_rich_text(f"decode error: {s.error}", self._s("details--error")))
            parts.append(Text(""))
        return Group(*parts) if parts else Text("")

    def _render_head(self, region: Region) -> RenderableType:
        role = label_role(region.kind, region.memory_id)
        parts: list[RenderableType] = []
        title = safe_rich_text(region.name, self._s(f"role--{role}"))
        title.append(f"  ({region.kind})", style=self._s("details--dim"))
        parts.append(title)
        facts: list[str] = []
        if region.memory_id is not None:
            facts.append(f"memory {region.memory_id}")
        if region.virtual_start is not None:
            facts.append(f"virtual @{region.virtual_start:#x}")
        total = sum(e - s for s, e in region.ranges)
        if region.ranges:
            facts.append(
                f"{total:,} bytes in {len(region.ranges)} range{'s' if len(region.ranges) != 1 else ''}"
            )
        if facts:
            parts.append(safe_rich_text(" · ".join(facts), self._s("details--dim")))
        for s, e in region.ranges[:MAX_RANGES_SHOWN]:
            parts.append(Text(f"  {s:#x}–{e:#x}  ({e - s:,} bytes)", style=self._s("details--dim")))
        if len(region.ranges) > MAX_RANGES_SHOWN:
            parts.append(
                Text(
                    f"  … {len(region.ranges) - MAX_RANGES_SHOWN} more ranges", style=self._s("details--dim")
                )
            )
        if region.detail and region.kind != "diagnosis":
            parts.append(safe_rich_text(region.detail))
        if region.fields:
            parts.append(Text(""))
            if region.kind == "diagnosis":
                for f in region.fields:
                    line = Text(f"{f.name}. ", style=self._s("details--label"))
                    line.append_text(safe_rich_text(f.text()))  # diagnosis lines: prose
                    parts.append(line)
            else:
                table = Table.grid(padding=(0, 1))
                table.add_column(no_wrap=True)
                table.add_column(overflow="fold")
                table.add_column(no_wrap=True)
                for f in region.fields:
                    span = Text(f"@{f.span[0]:#x}", style=self._s("details--dim")) if f.span else Text("")
                    table.add_row(
                        safe_rich_text(f.name, self._s("details--label")),
                        # Folded in a narrow column, a long value is what costs the event loop most.
                        safe_rich_text(_field_text(f), single_line=False, limit=FIELD_LIMIT),
                        span,
                    )
                parts.append(table)
        if region.findings:
            parts.append(Text(""))
            for finding in region.findings:
                line = Text(
                    f"{finding.severity}: ",
                    style=self._s(SEVERITY_ROLE.get(finding.severity, "details--info")),
                )
                line.append_text(safe_rich_text(finding.code, self._s("details--label")))
                parts.append(line)
                parts.append(safe_rich_text("  " + finding.message))
        parts.append(Text(""))
        return Group(*parts)
