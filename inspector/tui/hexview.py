"""The hex view: 8, 16 or 32 bytes a line (whatever fits its width, ASCII column always), coloured by what they are, with a byte cursor and a selection.

It is a Line API ``ScrollView``: ``render_line`` reads only the 16 bytes of the line it draws straight
from the read-only mmap, so a multi-GiB snapshot paints as fast as a tiny one. Rendered lines are kept
in a small LRU cache that is dropped whenever what colours them changes (selection, loaded regions,
findings, styles).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from inspector.layouts import BUCKETS_START, MM_HEADER_PAGE_USED, MM_HEADER_SIZE
from inspector.memory import merge_ranges
from inspector.model import Region
from inspector.offset_index import OffsetIndex
from inspector.views.colour_roles import (
    EXPLAINING_ROLES,
    ROLE_CLASSES,
    forensic_ranges,
    memory_role,
    region_role,
    unexplained_errors,
)

BYTES_PER_LINE = 16  # the default; ``bytes_per_line`` follows the widget's width
LINE_CHOICES = (32, 16, 8)
CACHE_LINES = 512
Range = tuple[int, int]


def _in_ranges(starts: list[int], ranges: list[Range], pos: int) -> bool:
    i = bisect_right(starts, pos) - 1
    return i >= 0 and ranges[i][0] <= pos < ranges[i][1]


class HexView(ScrollView, can_focus=True):
    """Physical bytes of the snapshot, coloured by the innermost loaded region at each byte."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(ROLE_CLASSES) | {
        "hexview--offset",
        "hexview--offset-cursor",
        "hexview--ascii",
        "hexview--zero",
        "hexview--selection",
        "hexview--cursor",
        "hexview--blank",
    }

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "line_by(-1)", "Up a line", show=False, id="hex.up"),
        Binding("down", "line_by(1)", "Down a line", show=False, id="hex.down"),
        Binding("left", "cursor_by(-1)", "Previous byte", show=False, id="hex.left"),
        Binding("right", "cursor_by(1)", "Next byte", show=False, id="hex.right"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="hex.page_up"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="hex.page_down"),
        Binding("home", "line_edge(0)", "Start of line", show=False, id="hex.line_start"),
        Binding("end", "line_edge(1)", "End of line", show=False, id="hex.line_end"),
        Binding("ctrl+home", "file_edge(0)", "Start of snapshot", show=False, id="hex.top"),
        Binding("ctrl+end", "file_edge(1)", "End of snapshot", show=False, id="hex.bottom"),
        Binding("left_curly_bracket", "region_edge(0)", "Start of region", show=False, id="hex.region_start"),
        Binding("right_curly_bracket", "region_edge(1)", "End of region", show=False, id="hex.region_end"),
    ]

    class CursorMoved(Message):
        """The cursor moved; ``by_user`` is False when a program moved it (tree selection, go-to…)."""

        def __init__(self, offset: int, by_user: bool) -> None:
            super().__init__()
            self.offset = offset
            self.by_user = by_user

    def __init__(
        self, analysis: Any, index: OffsetIndex, *, name: str | None = None, id: str | None = None
    ) -> None:
        super().__init__(name=name, id=id)
        self.index = index
        self.cursor = 0
        self.bpl = BYTES_PER_LINE
        self._selection: list[Range] = []
        self._sel_starts: list[int] = []
        self._errors: list[Range] = []
        self._err_starts: list[int] = []
        self._cache: OrderedDict[int, Strip] = OrderedDict()
        self._generation = 0
        # Rich styles are rebuilt only when the stylesheet or focus changes (``notify_style_update``):
        # computing ``rich_style`` walks the DOM, far too slow to do per byte.
        self._styles: dict[tuple[str, bool, bool, bool], Style] = {}
        self._named: dict[str, Style] = {}
        self.set_analysis(analysis)

    # ------------------------------------------------------------------ data

    def set_analysis(self, analysis: Any) -> None:
        self.analysis = analysis
        self.buf = analysis.snapshot.buf
        self.size_bytes = analysis.snapshot.size
        self.digits = max(8, len(f"{max(self.size_bytes - 1, 0):x}"))
        self._layout(refresh=False)
        mm = analysis.mm
        # The header page is only coloured as MemoryManager bytes when a real header is there.
        self._mm_live = bool(mm.present and not getattr(mm, "reconstructed", False) and mm.bucket_size_bytes)
        self._bucket_size = mm.bucket_size_bytes if mm.present else 0
        self._mm_base = mm.base_offset if mm.present else 0  # RestrictedMemory: the manager starts here
        self._table = mm.table if mm.present else b""
        explained = forensic_ranges(analysis)
        self._explained: list[tuple[list[int], list[Range], str]] = []
        for role in ("stable-save", "stale"):
            ranges = merge_ranges(explained[role])
            self._explained.append(([s for s, _ in ranges], ranges, role))
        errors = unexplained_errors(analysis, explained["stable-save"] + explained["stale"])
        self._errors = merge_ranges([(max(0, s), e) for s, e in errors])
        self._err_starts = [s for s, _ in self._errors]
        self.cursor = min(self.cursor, max(0, self.size_bytes - 1))
        self.invalidate()

    def _layout(self, refresh: bool = True) -> None:
        self.line_width = self.width_for(self.bpl, self.digits)
        self.line_count = max(1, -(-self.size_bytes // self.bpl))
        self.virtual_size = Size(self.line_width, self.line_count)
        if refresh:
            self.invalidate()

    def set_selection(self, ranges: list[Range]) -> None:
        old = self._selection
        self._selection = merge_ranges(list(ranges))
        self._sel_starts = [s for s, _ in self._selection]
        # Only lines that were or become selected change: keep the rest of the cache (moving through
        # a list of entries re-renders two or three lines, not the whole view).
        for s, e in old + self._selection:
            first, last = s // self.bpl, (e - 1) // self.bpl
            if last - first > CACHE_LINES:
                self._cache.clear()
                break
            for line in range(first, last + 1):
                self._cache.pop(line, None)
        self.refresh()

    @property
    def selection(self) -> list[Range]:
        return list(self._selection)

    def invalidate(self) -> None:
        """Drop cached lines (call when what colours the bytes has changed)."""
        self._generation += 1
        self._cache.clear()
        self.refresh()

    def invalidate_ranges(self, ranges: list[Range]) -> None:
        """Drop the cached lines that show bytes of ``ranges`` and repaint those on screen (regions just
        registered colour only their own bytes): a page of entries loaded elsewhere in the file
        repaints nothing here, where ``invalidate`` repainted the whole view."""
        bpl = self.bpl
        lines: set[int] = set()
        for s, e in ranges:
            if e <= s:
                continue
            first, last = s // bpl, (e - 1) // bpl
            if last - first > CACHE_LINES or len(lines) > 4 * CACHE_LINES:
                self.invalidate()
                return
            lines.update(range(first, last + 1))
        # Off-screen lines only leave the cache (a page's entries touch thousands of lines, and a refresh
        # request per line cost more than the repaint it saves); lines on screen are repainted.
        top = round(self.scroll_offset.y)
        bottom = top + max(1, self.scrollable_content_region.height)
        cache = self._cache
        for line in lines:
            if top <= line < bottom:
                self._drop_line(line)
            else:
                cache.pop(line, None)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._named.clear()
        self._cache.clear()

    # ---------------------------------------------------------------- cursor

    @property
    def cursor_line(self) -> int:
        return self.cursor // self.bpl

    def move_cursor(self, pos: int, *, by_user: bool = False, top: bool = False) -> None:
        """Put the cursor on ``pos``; scroll so its line is visible (at the top, with ``top``)."""
        if self.size_bytes == 0:
            return
        pos = max(0, min(pos, self.size_bytes - 1))
        old_line = self.cursor_line
        self.cursor = pos
        self._drop_line(old_line)
        self._drop_line(self.cursor_line)
        self._scroll_to_cursor(top)
        self.post_message(self.CursorMoved(pos, by_user))

    def _scroll_to_cursor(self, top: bool) -> None:
        line = self.cursor_line
        height = max(1, self.scrollable_content_region.height)
        y = round(self.scroll_offset.y)
        if top and not (y <= line < y + height):
            target = max(0, line - 2)  # two lines of context above a jump target
        elif line < y:
            target = line
        elif line >= y + height:
            target = line - height + 1
        else:
            return
        self.scroll_to(y=target, animate=False, immediate=True)

    def _drop_line(self, line: int) -> None:
        self._cache.pop(line, None)
        self.refresh_line(line)

    def action_cursor_by(self, delta: int) -> None:
        self.move_cursor(self.cursor + delta, by_user=True)

    def action_line_by(self, lines: int) -> None:
        self.move_cursor(self.cursor + lines * self.bpl, by_user=True)

    @staticmethod
    def width_for(bpl: int, digits: int = 8) -> int:
        """Cells a line of ``bpl`` bytes needs: offset, hex bytes with a gap every 8, ASCII column."""
        return digits + 2 + bpl * 3 + (bpl // 8 - 1) + 2 + bpl

    def fit_width(self, width: int) -> int:
        """The most bytes per line (32, 16 or 8) whose line fits ``width`` cells."""
        return next((n for n in LINE_CHOICES if self.width_for(n, self.digits) <= width), LINE_CHOICES[-1])

    def on_resize(self) -> None:
        bpl = self.fit_width(self.scrollable_content_region.width or self.size.width)
        if bpl != self.bpl:
            cursor = self.cursor
            self.bpl = bpl
            self._layout()
            self.move_cursor(cursor, top=True)

    def action_page(self, direction: int) -> None:
        height = max(1, self.scrollable_content_region.height - 1)
        self.move_cursor(self.cursor + direction * height * self.bpl, by_user=True)
        self.scroll_to(y=self.scroll_offset.y + direction * height, animate=False, immediate=True)

    def action_line_edge(self, end: int) -> None:
        base = self.cursor - self.cursor % self.bpl
        self.move_cursor(base + (self.bpl - 1 if end else 0), by_user=True)

    def action_file_edge(self, end: int) -> None:
        self.move_cursor(self.size_bytes - 1 if end else 0, by_user=True)

    def action_region_edge(self, end: int) -> None:
        """Jump to the start or last byte of the selected range that holds the cursor."""
        for s, e in self._selection:
            if s <= self.cursor < e or (not end and self.cursor == e):
                self.move_cursor(e - 1 if end else s, by_user=False)
                return
        if self._selection:
            self.move_cursor(self._selection[0][0] if not end else self._selection[-1][1] - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        line = round(self.scroll_offset.y) + offset.y
        col = round(self.scroll_offset.x) + offset.x
        i = self._byte_at_column(col)
        if i is not None:
            self.focus()
            self.move_cursor(line * self.bpl + i, by_user=True)

    def _byte_at_column(self, col: int) -> int | None:
        hex_start = self.digits + 2
        hex_cells = self.bpl * 3 + (self.bpl // 8 - 1)
        ascii_start = hex_start + hex_cells + 2
        if hex_start <= col < hex_start + hex_cells:
            group, within = divmod(col - hex_start, 8 * 3 + 1)  # a one-cell gap after every 8 bytes
            return max(0, min(self.bpl - 1, group * 8 + min(7, within // 3)))
        if ascii_start <= col < ascii_start + self.bpl:
            return col - ascii_start
        return None

    # ----------------------------------------------------------------- render

    def _style(self, role: str, zero: bool, selected: bool, cursor: bool) -> Style:
        key = (role, zero, selected, cursor)
        style = self._styles.get(key)
        if style is None:
            style = self.get_component_rich_style(f"role--{role}", partial=True)
            if zero:
                style = style + self.get_component_rich_style("hexview--zero", partial=True)
            if selected:
                style = style + self.get_component_rich_style("hexview--selection", partial=True)
            if cursor:
                style = style + self.get_component_rich_style("hexview--cursor", partial=True)
            style = self._base + style
            self._styles[key] = style
        return style

    @property
    def _base(self) -> Style:
        style = self._named.get("")
        if style is None:
            style = self._named[""] = self.rich_style
        return style

    def _part(self, name: str) -> Style:
        """The base style plus one of this widget's component classes (cached)."""
        style = self._named.get(name)
        if style is None:
            style = self._named[name] = self._base + self.get_component_rich_style(name, partial=True)
        return style

    def _base_role(self, pos: int, byte: int) -> tuple[str, bool]:
        """(role, dim?) for a byte no loaded region says anything specific about: who owns it."""
        if not self._mm_live:
            return "neutral", byte == 0
        if pos < self._mm_base:
            return "neutral", byte == 0  # the application's own bytes before the manager
        pos -= self._mm_base
        if pos < MM_HEADER_SIZE:
            return "mm-header", byte == 0
        if pos < MM_HEADER_PAGE_USED:
            return "bucket-table", byte == 0xFF
        if pos < BUCKETS_START:
            return "page0", True
        b = (pos - BUCKETS_START) // self._bucket_size
        owner = self._table[b] if b < len(self._table) else 0xFF
        if owner == 0xFF:
            return ("unallocated", False) if byte else ("neutral", True)
        return memory_role(owner), byte == 0

    def _roles(self, start: int, data: bytes) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        segments = self.index.overlapping(start, start + len(data))
        si = 0
        for i, byte in enumerate(data):
            pos = start + i
            while si < len(segments) and segments[si][1] <= pos:
                si += 1
            role: str | None = None
            if si < len(segments) and segments[si][0] <= pos:
                region: Region = segments[si][2]
                role = region_role(self.index, region)
            dim = False
            if role is None:
                # No loaded region says more than "part of this memory": what forensics found wins
                # over plain ownership (a stable_save message over bucket 0 is not "memory 0").
                role = next(
                    (r for starts, ranges, r in self._explained if _in_ranges(starts, ranges, pos)), None
                )
            if role is None:
                role, dim = self._base_role(pos, byte)
            if (
                role not in EXPLAINING_ROLES
                and self._errors
                and _in_ranges(self._err_starts, self._errors, pos)
            ):
                role, dim = "corrupt", False
            out.append((role, dim))
        return out

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        line = round(scroll_y) + y
        width = self.scrollable_content_region.width
        strip = self._cache.get(line)
        if strip is None:
            strip = self._render_full_line(line)
            self._cache[line] = strip
            if len(self._cache) > CACHE_LINES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(line)
        return strip.crop_extend(round(scroll_x), round(scroll_x) + width, self._base)

    def _render_full_line(self, line: int) -> Strip:
        start = line * self.bpl
        if start >= self.size_bytes:
            return Strip.blank(self.line_width, self._base)
        end = min(self.size_bytes, start + self.bpl)
        data = bytes(self.buf[start:end])
        roles = self._roles(start, data)
        on_cursor_line = start <= self.cursor < start + self.bpl
        blank = self._base
        segs: list[Segment] = [
            Segment(
                f"{start:0{self.digits}x}",
                self._part("hexview--offset-cursor" if on_cursor_line else "hexview--offset"),
            ),
            Segment("  ", blank),
        ]
        selected = [
            bool(self._selection) and _in_ranges(self._sel_starts, self._selection, start + i)
            for i in range(len(data))
        ]
        for i in range(self.bpl):
            if i and i % 8 == 0:
                segs.append(Segment(" ", self._gap_style(selected, i)))
            if i < len(data):
                role, dim = roles[i]
                segs.append(
                    Segment(f"{data[i]:02x}", self._style(role, dim, selected[i], start + i == self.cursor))
                )
            else:
                segs.append(Segment("  ", blank))
            segs.append(Segment(" ", self._gap_style(selected, i + 1) if i + 1 < len(data) else blank))
        segs.append(Segment("│ ", self._part("hexview--offset")))
        for i in range(len(data)):
            byte = data[i]
            # Only printable ASCII reaches the screen; everything else is a dot (no control bytes).
            ch = chr(byte) if 0x20 <= byte < 0x7F else "."
            role, dim = roles[i]
            segs.append(
                Segment(ch, self._style(role, dim or ch == ".", selected[i], start + i == self.cursor))
            )
        strip = Strip(segs).simplify()
        return strip.extend_cell_length(self.line_width, blank)

    def _gap_style(self, selected: list[bool], i: int) -> Style:
        """The space between byte i-1 and byte i is highlighted when both are selected."""
        if 0 < i < len(selected) and selected[i - 1] and selected[i]:
            return self._part("hexview--selection")
        return self._base

    # ------------------------------------------------------------ inspection

    def visible_range(self) -> Range:
        first = round(self.scroll_offset.y) * self.bpl
        height = max(1, self.scrollable_content_region.height)
        return first, min(self.size_bytes, first + height * self.bpl)
