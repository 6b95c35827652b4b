"""The data-inspector panel: the bytes under the hex cursor read as numbers, LEB128, a principal, and
the cursor's addresses (physical, ``mN:0x…``, ``bN:0x…``). The rows come from the headless
``inspector.byte_inspector``; this widget only lays them out."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from inspector.byte_inspector import inspect_at
from inspector.safe_text import safe_rich_text


class DataInspector(Static):
    DEFAULT_CSS = """
    DataInspector { height: auto; }
    """

    # The rows a compact inspector (the diff view's, one per side) shows, on two or three lines.
    COMPACT = ("address", "u8", "u32 LE / BE", "u64 LE / BE", "LEB128", "principal")

    def __init__(self, *, id: str | None = None, compact: bool = False) -> None:
        super().__init__(markup=False, id=id)
        self.rows: list[tuple[str, str]] = []
        self.compact = compact
        self._shape: tuple[tuple[str, ...], int] | None = None  # (labels, width) when every row is one line

    def show_at(self, analysis: Any, pos: int) -> None:
        self.rows = inspect_at(analysis, pos)
        if self.compact:
            line = Text()
            for label, value in self.rows:
                if label in self.COMPACT:
                    if line:
                        line.append("  ·  ", style="dim")
                    line.append(f"{label} ", style="bold")
                    line.append_text(safe_rich_text(value))
            self.update(line)
            return
        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True, style="bold")
        table.add_column(overflow="fold")
        for label, value in self.rows:
            table.add_row(Text(label), safe_rich_text(value))
        # The same labels with every value on one line, as last time: the same height, so no layout
        # pass (this runs on every cursor move).
        shape = self._one_line_shape()
        self.update(table, layout=shape is None or shape != self._shape)
        self._shape = shape

    def _one_line_shape(self) -> tuple[tuple[str, ...], int] | None:
        width = self.content_region.width
        if not self.rows or width <= 0:
            return None
        label_width = max(cell_len(label) for label, _ in self.rows)
        room = width - label_width - 2  # the column gap (with a cell of slack)
        if any(cell_len(value) > room for _, value in self.rows):
            return None
        return tuple(label for label, _ in self.rows), width
