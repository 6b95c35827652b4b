"""The memory map: the whole snapshot as a strip of cells coloured by owner and state.

One cell per 64 KiB page when the pages fit, else one per bucket (after the MemoryManager's page 0),
else one per group of pages. A cell shows the most telling state of the bytes it covers: overwritten by
a ``stable_save`` message, covered by an error finding, in a bucket nobody owns yet non-zero, owned by
memory N, … so a person sees at a glance that bucket 0 was overwritten or that three buckets belong to
no one. Whether an unowned page holds data is found by a background scan (holes of sparse files are
skipped); until then those cells show as "not scanned yet".
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from inspector.layouts import BUCKETS_START, WASM_PAGE_SIZE
from inspector.memory import merge_ranges
from inspector.offset_index import OffsetIndex
from inspector.views.colour_roles import (
    MAP_CLASSES,
    MAP_STATES,
    forensic_ranges,
    memory_role,
    unexplained_errors,
)

Range = tuple[int, int]
MAX_CELL_WIDTH = 6
MAX_ROWS = 4


@dataclass
class MapCell:
    start: int
    end: int
    state: str
    label: str
    note: str


def _overlaps(ranges: list[Range], a: int, b: int) -> bool:
    return any(s < b and a < e for s, e in ranges)


def fit_label(label: str, width: int) -> str:
    """The label, or a shorter spelling of it that fits ``width`` columns ("m12" → "12", "MM" → "M"),
    so that even one-column cells say whose they are; "" when nothing meaningful fits."""
    if len(label) <= width:
        return label
    if label.startswith("m"):
        return label[1:] if len(label) - 1 <= width else ""
    return label[:width]


SCAN_RELEASE_PAGES = 512  # 32 MiB of scanned pages between two releases of the mapping


class MapModel:
    """Cells of the map for a given number of cells available; knows nothing about Textual."""

    def __init__(self, analysis: Any, index: OffsetIndex | None = None) -> None:
        self.analysis = analysis
        # The one offset index of the views: asked only for the cell under the cursor (its caption), so
        # painting the cells stays O(cells) with no region built per cell.
        self.index = index
        self._caption: tuple[int, str] | None = None
        self.size = analysis.snapshot.size
        self.pages = -(-self.size // WASM_PAGE_SIZE)
        mm = analysis.mm
        self.mm_present = bool(mm.present and mm.bucket_size_bytes)
        self.mm_live = self.mm_present and not getattr(mm, "reconstructed", False)
        self.bucket_size = mm.bucket_size_bytes if self.mm_present else 0
        self.table: bytes = mm.table if self.mm_present else b""
        # A manager on a RestrictedMemory sits at a page-aligned base (Internet Identity: 65,536); the
        # bytes before it are the application's own, and its buckets start 64 KiB after the base.
        self.base = int(getattr(mm, "base_offset", 0) or 0) if self.mm_present else 0
        self.buckets_start = self.base + BUCKETS_START
        # Without a readable header, the forensics' reconstruction (if any) still knows the geometry
        # and, for some buckets, the owners: the map shows what it can.
        self.recon_owners: list[Any] | None = None
        recon = getattr(analysis, "reconstructed", None)
        if not self.mm_present and recon is not None and recon.bucket_size_bytes:
            self.mm_present, self.mm_live = True, False
            self.bucket_size = recon.bucket_size_bytes
            self.recon_owners = list(recon.owners)
        explained = forensic_ranges(analysis)
        self.stable_save = merge_ranges(explained["stable-save"])
        self.stale = merge_ranges(explained["stale"])
        self.errors = merge_ranges(unexplained_errors(analysis, self.stable_save + self.stale))
        # What the background scan found, kept sparse so that nothing here grows with the file's size
        # (an 8 TiB sparse file has 134 million pages): ``extents`` are the file's data ranges (from
        # SEEK_DATA/SEEK_HOLE; None until the scan has asked), ``nonzero`` the page ranges that hold
        # non-zero bytes, ``scanned_to`` how far the page scan has got. Holes read as zeros.
        self.extents: list[Range] | None = None
        self._extent_starts: list[int] = []
        self._extent_ends: list[int] = []
        self.nonzero: list[Range] = []
        self._nonzero_ends: list[int] = []
        self.scanned_to = 0
        self.scan_complete = False

    def title(self) -> str:
        """One line about the geometry, for the map's border (says so when there is no manager)."""
        pages = f"{self.pages:,} page{'s' if self.pages != 1 else ''}"
        if self.recon_owners is not None:
            return f"Memory map · {pages} · no MemoryManager header (buckets of {self.bucket_size // WASM_PAGE_SIZE} pages reconstructed)"
        if not self.mm_present:
            return f"Memory map · {pages} · no MemoryManager"
        n = self.analysis.mm.num_allocated_buckets
        return f"Memory map · {pages} · MemoryManager: {n} bucket{'s' if n != 1 else ''} of {self.bucket_size // WASM_PAGE_SIZE} pages"

    # ------------------------------------------------------------ geometry

    def units(self, capacity: int) -> list[Range]:
        size = self.size
        if size <= 0 or capacity <= 0:
            return []
        if self.pages <= capacity:
            return [(p * WASM_PAGE_SIZE, min(size, (p + 1) * WASM_PAGE_SIZE)) for p in range(self.pages)]
        if self.mm_present and capacity > (2 if self.base else 1) and size > self.buckets_start:
            # Page 0 always gets its own cell, and cells never straddle a bucket boundary, so that the
            # header page and each bucket's owner stay visible however large the snapshot is.
            n_buckets = -(-(size - self.buckets_start) // self.bucket_size)
            # Zoom on the buckets that have owners: a file far larger than they are (8 TiB with 143
            # buckets used) gets one last cell for the rest, which still shows stray data there.
            used = min(n_buckets, max(1, self._used_buckets()))
            head, tail = (n_buckets, 0) if used * 2 > n_buckets or capacity < 3 else (used, 1)
            app = [(0, self.base)] if self.base else []
            per = -(-head // max(1, capacity - 1 - tail - len(app)))
            step = per * self.bucket_size
            end = min(size, self.buckets_start + head * self.bucket_size)
            units = [*app, (self.base, self.buckets_start)]
            units += [(s, min(end, s + step)) for s in range(self.buckets_start, end, step)]
            return units + ([(end, size)] if end < size else [])
        per = -(-self.pages // capacity)
        step = per * WASM_PAGE_SIZE
        return [(s, min(size, s + step)) for s in range(0, size, step)]

    def _used_buckets(self) -> int:
        """One past the last bucket that has an owner."""
        if self.recon_owners is not None:
            return max((i + 1 for i, o in enumerate(self.recon_owners) if o is not None), default=0)
        return len(self.table.rstrip(b"\xff"))

    def needs_scan(self, page: int) -> bool:
        """Whether a page's data/zero state matters: it lies in an unowned bucket, or there is no live
        manager to tell what it holds."""
        if not self.mm_present:
            return True
        start = page * WASM_PAGE_SIZE
        if start < self.base:
            return True  # the application region: only its bytes say what it holds
        if start < self.buckets_start:
            return not self.mm_live
        b = (start - self.buckets_start) // self.bucket_size
        return self.bucket_owner(b) is None

    def pages_to_scan(self) -> Iterator[int]:
        """The pages :meth:`scan` reads: those that need it *and* hold data (holes are known zero)."""
        for lo, hi in self.extents if self.extents is not None else [(0, self.size)]:
            for p in range(lo // WASM_PAGE_SIZE, -(-hi // WASM_PAGE_SIZE)):
                if self.needs_scan(p):
                    yield p

    def bucket_owner(self, bucket: int) -> int | str | None:
        """The MemoryId owning a bucket ("?bN" when the reconstruction only knows a structure is there)."""
        if self.recon_owners is not None:
            return self.recon_owners[bucket] if bucket < len(self.recon_owners) else None
        owner = self.table[bucket] if bucket < len(self.table) else 0xFF
        return None if owner == 0xFF else owner

    def find_extents(self) -> list[Range]:
        """The file's data ranges (a few ``lseek`` calls per extent; call it off the UI thread)."""
        if self.extents is None:
            from inspector.sparse import data_ranges

            fd = getattr(self.analysis.snapshot, "fd", None)
            extents = data_ranges(fd, self.size) if fd is not None else [(0, self.size)]
            self._extent_starts = [s for s, _ in extents]
            self._extent_ends = [e for _, e in extents]
            self.extents = extents
        return self.extents

    def scan(self, progress: Callable[[int, int], bool] | None = None) -> None:
        """Find which unowned pages hold non-zero bytes, reading only the file's data extents.

        Work and memory grow with the data, never with the file's nominal size. ``progress(done,
        total)`` (pages) returns False to stop; cells not reached yet keep "not scanned yet"."""
        from inspector.mapped_pages import page_releaser
        from inspector.sparse import is_zero

        extents = self.find_extents()
        total = sum(-(-hi // WASM_PAGE_SIZE) - lo // WASM_PAGE_SIZE for lo, hi in extents)
        buf = self.analysis.snapshot.buf
        # Reading a page maps it into this process: let go every SCAN_RELEASE_PAGES pages, or the scan of
        # a 20M-entry map's 870 MB file left the whole file in the TUI's RSS.
        release = page_releaser(buf)
        # About a hundred progress reports at most: each one repaints the status bar.
        every = max(64, total // 100)
        done = 0
        for lo, hi in extents:
            for p in range(lo // WASM_PAGE_SIZE, -(-hi // WASM_PAGE_SIZE)):
                a, b = p * WASM_PAGE_SIZE, min(self.size, (p + 1) * WASM_PAGE_SIZE)
                if self.needs_scan(p):
                    view = memoryview(buf)[a:b]
                    try:
                        zero = is_zero(view)
                    finally:
                        view.release()
                    if not zero:
                        self._add_nonzero(a, b)
                self.scanned_to = b
                done += 1
                if not done % SCAN_RELEASE_PAGES:
                    release(b - SCAN_RELEASE_PAGES * WASM_PAGE_SIZE, b)
                if progress is not None and done % every == 0 and not progress(done, total):
                    release(0, self.size)
                    return
        release(0, self.size)
        self.scanned_to = self.size
        self.scan_complete = True
        if progress is not None:
            progress(total, total)

    def _add_nonzero(self, a: int, b: int) -> None:
        # Pages arrive in increasing order: extend the last range or start a new one.
        if self.nonzero and self.nonzero[-1][1] == a:
            self.nonzero[-1] = (self.nonzero[-1][0], b)
            self._nonzero_ends[-1] = b
        else:
            self.nonzero.append((a, b))
            self._nonzero_ends.append(b)

    # -------------------------------------------------------------- states

    def _data_state(self, a: int, b: int) -> str:
        """ "data", "unknown" or "empty" for ``[a, b)``: two bisections, whatever the size of the range."""
        nz = bisect_right(self._nonzero_ends, a)
        if nz < len(self.nonzero) and self.nonzero[nz][0] < b:
            return "data"
        if self.scan_complete:
            return "empty"
        if self.extents is None:
            return "unknown"
        i = bisect_right(self._extent_ends, a)
        if i >= len(self.extents) or self.extents[i][0] >= b:
            return "empty"  # only holes here: zeros without reading
        # Data exists in [a, b): known once the scan (in file order) is past its last data byte here.
        j = bisect_left(self._extent_starts, b) - 1
        return "empty" if self.scanned_to >= min(b, self.extents[j][1]) else "unknown"

    def cell(self, a: int, b: int) -> MapCell:
        where = f"{a:#x}–{b - 1:#x}"
        if self.stable_save and _overlaps(self.stable_save, a, b):
            return MapCell(a, b, "stable-save", "SS", f"{where} · overwritten by a stable_save message")
        if self.errors and _overlaps(self.errors, a, b):
            base = self._owner_cell(a, b)
            return MapCell(a, b, "error", "!!", f"{base.note} · covered by an error finding")
        cell = self._owner_cell(a, b)
        if cell.state != "unallocated" and self.stale and _overlaps(self.stale, a, b):
            return MapCell(a, b, "stale", "st", f"{cell.note} · stale data nothing points to")
        return cell

    def _owner_cell(self, a: int, b: int) -> MapCell:
        where = f"{a:#x}–{b - 1:#x}"
        if self.mm_present and a < self.base:
            state = self._data_state(a, b)
            what = "application region (not managed by ic-stable-structures)"
            if state == "data":
                return MapCell(a, b, "raw", "AP", f"{where} · {what}, non-zero")
            if state == "unknown":
                return MapCell(a, b, "unknown", "..", f"{where} · {what}, not scanned yet")
            return MapCell(a, b, "empty", "", f"{where} · {what}, zero")
        if not self.mm_present or (a < self.buckets_start and not self.mm_live):
            state = self._data_state(a, b)
            if state == "data":
                return MapCell(a, b, "raw", "··", f"{where} · raw memory, non-zero")
            if state == "unknown":
                return MapCell(a, b, "unknown", "..", f"{where} · not scanned yet")
            return MapCell(a, b, "empty", "", f"{where} · zero")
        if a < self.buckets_start:
            page = "page 0" if not self.base else f"the page at {self.base:#x}"
            return MapCell(
                a, b, "mm-header", "MM", f"{where} · MemoryManager header and bucket table ({page})"
            )
        first = (a - self.buckets_start) // self.bucket_size
        last = (b - 1 - self.buckets_start) // self.bucket_size
        buckets = f"bucket {first}" if first == last else f"buckets {first}–{last}"
        owners = self._owners(first, last)
        # What the unowned buckets of this cell hold, from the sparse scan results: a few bisections
        # per cell, never a pass over its pages or buckets.
        unowned: list[str] = []
        if self._unowned_overlap(self.nonzero, self._nonzero_ends, a, b):
            unowned.append("data")
        elif not self.scan_complete and self._any_unowned(first, last):
            if self.extents is None or self._unowned_overlap(
                self.extents, self._extent_ends, max(a, self.scanned_to), b
            ):
                unowned.append("unknown")
        # Most telling first: stray data in a bucket nobody owns, then the owners.
        if "data" in unowned:
            return MapCell(a, b, "unallocated", "??", f"{where} · {buckets}: no owner, non-zero bytes")
        if owners:
            o = owners[0]
            more = "+" if len(owners) > 1 else ""
            name = "?" if isinstance(o, str) else str(o)
            who = f"memory {name}" + (f" and {len(owners) - 1} more" if more else "")
            if self.recon_owners is not None:
                who += " (reconstructed)"
            state = memory_role(o)
            # A memory whose id is lost has no colour of its own: it shows as plain data.
            state = "raw" if state not in MAP_STATES else state
            return MapCell(a, b, state, f"m{name}{more}", f"{where} · {buckets} → {who}")
        if "unknown" in unowned:
            return MapCell(a, b, "unknown", "..", f"{where} · {buckets}: no owner (not scanned yet)")
        return MapCell(a, b, "empty", "", f"{where} · {buckets}: no owner, zero")

    def _known_buckets(self) -> int:
        return len(self.recon_owners) if self.recon_owners is not None else len(self.table)

    def _owners(self, first: int, last: int) -> list[int | str]:
        """Distinct owners of buckets first..last, the first one (in bucket order) first."""
        stop = min(last, self._known_buckets() - 1) + 1
        if first >= stop:
            return []
        if self.recon_owners is not None:
            seq: list[int | str] = [o for o in self.recon_owners[first:stop] if o is not None]
        else:
            seg = self.table[first:stop]
            lead = seg.lstrip(b"\xff")[:1]
            rest = sorted(set(seg) - {0xFF} - set(lead))
            return [*lead, *rest]
        out: list[int | str] = []
        for o in seq:
            if o not in out:
                out.append(o)
        return out

    def _any_unowned(self, first: int, last: int) -> bool:
        known = self._known_buckets()
        if last >= known:
            return True
        if self.recon_owners is not None:
            return any(o is None for o in self.recon_owners[first : last + 1])
        return 0xFF in self.table[first : last + 1]

    def _unowned_overlap(self, ranges: list[Range], ends: list[int], a: int, b: int) -> bool:
        """Whether a part of ``ranges`` inside ``[a, b)`` lies in a bucket nobody owns."""
        i = bisect_right(ends, a)
        while i < len(ranges) and ranges[i][0] < b:
            s, e = max(a, ranges[i][0], self.buckets_start), min(b, ranges[i][1])
            if s < e and self._any_unowned(
                (s - self.buckets_start) // self.bucket_size, (e - 1 - self.buckets_start) // self.bucket_size
            ):
                return True
            i += 1
        return False

    def cells(self, capacity: int) -> list[MapCell]:
        return [self.cell(a, b) for a, b in self.units(capacity)]

    def caption(self, cell: MapCell) -> str:
        """The cell's note and what the offset index says holds its first byte (the tree's answer too)."""
        if self.index is None or cell.start >= self.size:
            return cell.note
        if self._caption is None or self._caption[0] != cell.start:
            try:
                what = self.index.locate(cell.start).what
            except Exception:  # a caption is never worth failing the screen for
                what = ""
            self._caption = (cell.start, what)
        what = self._caption[1]
        # The note starts with the cell's range, so "what" reads as "what its first byte is"; it is left
        # out where the note already says it ("MemoryManager header and bucket table").
        return f"{cell.note} · {what}" if what and what not in cell.note else cell.note


class MemoryMap(Widget, can_focus=True):
    """The map widget: cells in rows, a caption for the cell under the map cursor."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(MAP_CLASSES) | {
        "map--cursor",
        "map--position",
        "map--caption",
    }

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move(-1)", "Previous cell", show=False, id="map.left"),
        Binding("right", "move(1)", "Next cell", show=False, id="map.right"),
        Binding("up", "row(-1)", "Row up", show=False, id="map.up"),
        Binding("down", "row(1)", "Row down", show=False, id="map.down"),
        Binding("home", "edge(0)", "First cell", show=False, id="map.first"),
        Binding("end", "edge(1)", "Last cell", show=False, id="map.last"),
        Binding("enter", "jump", "Jump to cell", show=False, id="map.jump"),
    ]

    class Jump(Message):
        """The user picked a cell: show its first byte."""

        def __init__(self, offset: int) -> None:
            super().__init__()
            self.offset = offset

    def __init__(self, model: MapModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.map_cursor = 0
        self.position = 0  # physical offset of the hex cursor, marked on the map
        self._cells: list[MapCell] = []
        self._layout: tuple[int, int] = (1, 1)  # (cell width, cells per row)
        self._for_width = -1
        self._styles: dict[tuple[str, bool, bool], Style] = {}
        self._base_style: Style | None = None

    def set_model(self, model: MapModel) -> None:
        self.model = model
        self.map_cursor = 0
        self.relayout()

    def relayout(self) -> None:
        self._for_width = -1
        self.refresh(layout=True)

    # ------------------------------------------------------------ geometry

    def _compute(self, width: int) -> None:
        if width == self._for_width:
            return
        width = max(1, width)
        n = len(self.model.units(width * MAX_ROWS))
        # As few rows as the cells need at width 2 (so two-letter labels such as "m4" fit), or at width
        # 1 when even that overflows, then the widest cells that still fit those rows.
        base = 2 if width >= 2 and -(-n // (width // 2)) <= MAX_ROWS else 1
        rows = max(1, min(MAX_ROWS, -(-n // (width // base))))
        cell_w, per_row = 1, width
        for cw in range(MAX_CELL_WIDTH, 0, -1):
            per = max(1, width // cw)
            if -(-n // per) <= rows:
                cell_w, per_row = cw, per
                break
        self._cells = self.model.cells(per_row * MAX_ROWS)
        self._layout = (cell_w, per_row)
        self._for_width = width
        self.map_cursor = min(self.map_cursor, max(0, len(self._cells) - 1))

    @property
    def cells(self) -> list[MapCell]:
        self._compute(self.content_size.width or self.size.width)
        return self._cells

    def rows(self) -> int:
        _, per_row = self._layout
        return max(1, -(-len(self._cells) // per_row))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        self._compute(width)
        return self.rows() + 1

    def cell_index_at(self, pos: int) -> int | None:
        for i, c in enumerate(self.cells):
            if c.start <= pos < c.end:
                return i
        return None

    def refresh_states(self) -> None:
        """Recompute cell states (after the scan or new findings) at the same geometry."""
        self._for_width = -1
        self.refresh()

    def set_position(self, pos: int) -> None:
        # The map shows the position by its cell: a move within the same cell changes nothing on screen
        # (moving through a page of entries mostly stays in one cell), so it repaints nothing.
        before = (self.cell_index_at(self.position), self.map_cursor)
        self.position = pos
        i = self.cell_index_at(pos)
        if i is not None and not self.has_focus:
            self.map_cursor = i
        if (i, self.map_cursor) != before:
            self.refresh()

    # -------------------------------------------------------------- render

    def _cell_style(self, cell: MapCell, cursor: bool, position: bool) -> Style:
        key = (cell.state, cursor and self.has_focus, position)
        style = self._styles.get(key)
        if style is None:
            style = self._base + self.get_component_rich_style(f"map--{cell.state}", partial=True)
            if position:
                style += self.get_component_rich_style("map--position", partial=True)
            if key[1]:
                style += self.get_component_rich_style("map--cursor", partial=True)
            self._styles[key] = style
        return style

    @property
    def _base(self) -> Style:
        # rich_style walks the DOM: computed once per style change, not once per cell.
        if self._base_style is None:
            self._base_style = self.rich_style
        return self._base_style

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._base_style = None

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        cells = self.cells
        cell_w, per_row = self._layout
        rows = self.rows()
        if y == rows:
            return self._caption(width)
        if y > rows:
            return Strip.blank(width, self._base)
        segs: list[Segment] = []
        pos_cell = self.cell_index_at(self.position)
        # A label per run of same-owner cells (at most once per row), written across the run's cells:
        # a run of narrow cells still shows "m4" or "MM" when each cell is a single column wide.
        i, stop = y * per_row, min(len(cells), (y + 1) * per_row)
        while i < stop:
            key = (cells[i].state, cells[i].label)
            j = i + 1
            while j < stop and (cells[j].state, cells[j].label) == key:
                j += 1
            width_run = (j - i) * cell_w
            label = cells[i].label
            text = fit_label(label, width_run).ljust(width_run)
            for k in range(i, j):
                part = text[(k - i) * cell_w : (k - i + 1) * cell_w]
                segs.append(Segment(part, self._cell_style(cells[k], k == self.map_cursor, k == pos_cell)))
            i = j
        return Strip(segs).extend_cell_length(width, self._base)

    def _caption(self, width: int) -> Strip:
        style = self._base + self.get_component_rich_style("map--caption", partial=True)
        if not self._cells:
            return Strip([Segment("(empty snapshot)", style)]).crop_extend(0, width, self._base)
        cell = self._cells[self.map_cursor]
        return Strip([Segment(self.model.caption(cell), style)]).crop_extend(0, width, self._base)

    # --------------------------------------------------------------- input

    def _set_cursor(self, i: int, jump: bool = True) -> None:
        if not self._cells:
            return
        self.map_cursor = max(0, min(len(self._cells) - 1, i))
        self.refresh()
        if jump:
            self.post_message(self.Jump(self._cells[self.map_cursor].start))

    def action_move(self, delta: int) -> None:
        self._set_cursor(self.map_cursor + delta)

    def action_row(self, delta: int) -> None:
        self._set_cursor(self.map_cursor + delta * self._layout[1])

    def action_edge(self, end: int) -> None:
        self._set_cursor(len(self._cells) - 1 if end else 0)

    def action_jump(self) -> None:
        self._set_cursor(self.map_cursor)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        cell_w, per_row = self._layout
        col = offset.x // cell_w
        if col >= per_row:
            return
        i = offset.y * per_row + col
        if i < len(self._cells):
            self._set_cursor(i)

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


__all__ = ["MAP_STATES", "MapCell", "MapModel", "MemoryMap"]
