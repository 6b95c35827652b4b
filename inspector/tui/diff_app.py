"""The diff UI: two synchronised panes (old | new), each with its memory map, region tree and hex view.

``create_diff_app(old_session, new_session)`` is the one entry point (the CLI and the tests share it).
The comparison itself (``inspector.diff.engine.diff_sessions``) runs in a thread worker; until it is done the
panes already browse both snapshots. Then:

* every changed byte is marked in both hex views and every changed cell in both memory maps;
* the list of changes (consecutive changed ranges grouped by what they hit on both sides) can be
  stepped through with ``]`` / ``[`` (or ``n`` / ``N``): both hex views jump to the change, its span is
  selected;
* the entry-level differences of the structure the change (or the tree cursor) is in are listed at the
  bottom right; choosing one moves each hex view to that entry's bytes on its side;
* moving one hex cursor by hand moves the other to the same physical offset.

The widgets are the single-snapshot UI's (``RegionTree``, ``HexView``, ``MemoryMap``), subclassed only
to add the "changed" marking; every text from a snapshot is rendered literally (``safe_rich_text``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, Header, OptionList, Static, Tree
from textual.widgets.option_list import Option
from textual.widgets.tree import TreeNode
from textual.worker import get_current_worker

from inspector.diff.engine import SnapshotDiff, diff_sessions
from inspector.diff.entries import StructureDiff
from inspector.diff.layout import ChangeGroup, RangeSet
from inspector.model import Region
from inspector.offset_index import OffsetIndex, describe_position
from inspector.regions import build_tree
from inspector.safe_text import escape_control, safe_rich_text
from inspector.session import Session
from inspector.tui.data_inspector import DataInspector
from inspector.tui.hexview import HexView
from inspector.tui.memory_map import MapCell, MapModel, MemoryMap
from inspector.tui.tree import RegionTree
from inspector.views.export import slug
from inspector.views.value_display import CORE_LOCK
from inspector.words import distinguishing_names, plural

SIDES = ("old", "new")
MAX_LISTED_CHANGES = 1_000  # changes shown in the list; n / p keep stepping past them
MAX_ENTRY_TEXT = 60
CHANGED = "\x00changed"  # suffix a role gets for a byte that differs between the snapshots
AUTO_EXPAND = frozenset({"mm_header", "memories", "memory", "btreemap", "cell", "vec", "minheap", "log"})


class DiffHexView(HexView):
    """The hex view with every differing byte marked; the current change is the selection."""

    COMPONENT_CLASSES: ClassVar[set[str]] = HexView.COMPONENT_CLASSES | {
        "diffhex--changed",
        "diffhex--changed-current",
    }

    class CursorMoved(HexView.CursorMoved):
        """The base view's message, knowing which of the two hex views sent it."""

        hex_view: DiffHexView | None = None

        @property
        def control(self) -> DiffHexView | None:
            return self.hex_view

    def post_message(self, message: Message) -> bool:
        # The base view posts ``self.CursorMoved``, i.e. the subclass above: tag it with its sender.
        if isinstance(message, DiffHexView.CursorMoved):
            message.hex_view = self
        return super().post_message(message)

    def __init__(self, analysis: Any, index: OffsetIndex, *, id: str | None = None) -> None:
        self._changes: RangeSet | None = None
        self._changed_styles: dict[tuple[str, bool, bool, bool], Style] = {}
        super().__init__(analysis, index, id=id)

    def set_changes(self, changes: RangeSet | None) -> None:
        self._changes = changes
        self.invalidate()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._changed_styles.clear()

    def _roles(self, start: int, data: bytes) -> list[tuple[str, bool]]:
        roles = super()._roles(start, data)
        changes = self._changes
        end = start + len(data)
        if changes is None or not changes.overlaps(start, end):
            return roles
        marks = bytearray(len(data))
        for s, e in changes.clip(start, end):
            marks[s - start : e - start] = b"\x01" * (e - s)
        return [
            (role + CHANGED, dim) if m else (role, dim) for (role, dim), m in zip(roles, marks, strict=True)
        ]

    def _style(self, role: str, zero: bool, selected: bool, cursor: bool) -> Style:
        if not role.endswith(CHANGED):
            return super()._style(role, zero, selected, cursor)
        key = (role, zero, selected, cursor)
        style = self._changed_styles.get(key)
        if style is None:
            base = super()._style(role[: -len(CHANGED)], zero, selected, cursor)
            mark = "diffhex--changed-current" if selected else "diffhex--changed"
            style = base + self.get_component_rich_style(mark, partial=True)
            if cursor:
                # The cursor must stay visible on a marked byte.
                style += self.get_component_rich_style("hexview--cursor", partial=True)
            self._changed_styles[key] = style
        return style


class DiffMapModel(MapModel):
    """Memory-map cells, with every cell that holds a changed byte marked "Δ"."""

    def __init__(self, analysis: Any, index: OffsetIndex | None = None) -> None:
        super().__init__(analysis, index)
        self.changes: RangeSet | None = None

    def cell(self, a: int, b: int) -> MapCell:
        base = super().cell(a, b)
        if self.changes is None or not self.changes.overlaps(a, b):
            return base
        label = base.label[1:] if base.label.startswith("m") else base.label
        return MapCell(a, b, "changed", ("Δ" + label)[:4], f"{base.note} · changed")


class DiffMemoryMap(MemoryMap):
    COMPONENT_CLASSES: ClassVar[set[str]] = MemoryMap.COMPONENT_CLASSES | {"map--changed"}


class DiffApp(App[int]):
    CSS_PATH = ["app.tcss", "diff.tcss"]
    TITLE = "stable-inspect diff"

    # One keymap with the single-snapshot view: ? g e l q mean the same there; ] / [ step through the
    # things worth a look (findings there, changes here), n / N through matches (here: the changes too).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", id="diff.help"),
        Binding("g", "goto", "Go to", id="diff.goto"),
        Binding("right_square_bracket", "step(1)", "Next change", id="diff.next_change"),
        Binding("left_square_bracket", "step(-1)", "Previous change", show=False, id="diff.prev_change"),
        Binding("n", "step(1)", "Next change", show=False, id="diff.next_change_n"),
        Binding("N", "step(-1)", "Previous change", show=False, id="diff.prev_change_n"),
        Binding("e", "export", "Export", id="diff.export"),
        Binding("l", "legend", "Legend", id="diff.legend"),
        Binding("c", "focus('changes')", "Focus changes", show=False, id="diff.focus_changes"),
        Binding("E", "focus('entries')", "Focus entry differences", show=False, id="diff.focus_entries"),
        Binding("t", "focus_pane('tree')", "Focus tree (old, then new)", show=False, id="diff.focus_tree"),
        Binding("x", "focus_pane('hex')", "Focus hex view (old, then new)", show=False, id="diff.focus_hex"),
        Binding(
            "m", "focus_pane('map')", "Focus memory map (old, then new)", show=False, id="diff.focus_map"
        ),
        Binding("s", "swap_side", "Other side", show=False, id="diff.swap_side"),
        Binding("q", "quit", "Quit", id="diff.quit"),
    ]

    # Below NARROW columns one pane is shown at a time (``s`` shows the other); below SHORT rows the
    # maps and data inspectors make way for the trees and hex views.
    NARROW, SHORT = 120, 32

    def __init__(
        self, old: Session, new: Session, *, diff: SnapshotDiff | None = None, owns_sessions: bool = False
    ) -> None:
        super().__init__()
        self.sessions = {"old": old, "new": new}
        self.roots = {side: build_tree(self.sessions[side].analysis) for side in SIDES}
        # One index per side serves the tree, the hex view, the map's caption and the diff's attribution.
        self.indexes = {
            side: OffsetIndex(self.roots[side], self.sessions[side].analysis, name=f"the {side}")
            for side in SIDES
        }
        self.models = {side: DiffMapModel(self.sessions[side].analysis, self.indexes[side]) for side in SIDES}
        self.diff: SnapshotDiff | None = diff
        self.current = -1  # index of the current change group
        self.shown_structure: StructureDiff | None = None
        self._owns = owns_sessions
        self._syncing = False
        self.titles = dict(zip(SIDES, distinguishing_names(old.snapshot, new.snapshot), strict=True))

    # ------------------------------------------------------------- compose

    def _title(self, side: str) -> Text:
        snap = self.sessions[side].snapshot
        # The shortest path suffix that tells the two apart (never an absolute path: it differs between
        # machines and would leak into screenshots).
        name = escape_control(self.titles[side])
        text = Text(f"{side.upper()}  ", style="bold")
        text.append_text(safe_rich_text(name, "bold"))
        text.append(f"  {snap.size:,} bytes", style="dim")
        return text

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text("comparing…"), id="verdict", markup=False)
        with Horizontal(id="panes"):
            for side in SIDES:
                with Vertical(id=f"{side}-pane", classes="pane"):
                    yield Static(self._title(side), id=f"{side}-title", classes="pane-title", markup=False)
                    yield DiffMemoryMap(self.models[side], id=f"{side}-map")
                    yield RegionTree(
                        self.roots[side],
                        partial(self._register_region, side),
                        partial(self._tree_loaded, side),
                        id=f"{side}-tree",
                    )
                    yield DiffHexView(self.sessions[side].analysis, self.indexes[side], id=f"{side}-hex")
                    yield DataInspector(id=f"{side}-inspector", compact=True)
        with Horizontal(id="bottom"):
            yield OptionList(id="changes", markup=False)
            yield OptionList(id="entries", markup=False)
        yield Static(Text(""), id="diff-status", markup=False)
        yield Footer()

    def hex(self, side: str) -> DiffHexView:
        return self.query_one(f"#{side}-hex", DiffHexView)

    def side_tree(self, side: str) -> RegionTree:
        return self.query_one(f"#{side}-tree", RegionTree)

    def memory_map(self, side: str) -> DiffMemoryMap:
        return self.query_one(f"#{side}-map", DiffMemoryMap)

    @property
    def changes_list(self) -> OptionList:
        return self.query_one("#changes", OptionList)

    @property
    def entries_list(self) -> OptionList:
        return self.query_one("#entries", OptionList)

    def on_resize(self, event: Any) -> None:
        self._fit_layout(event.size.width, event.size.height)

    def _fit_layout(self, width: int, height: int) -> None:
        narrow = width < self.NARROW
        self.screen.set_class(narrow, "narrow")
        self.screen.set_class(height < self.SHORT, "short")
        for side in SIDES:
            title = self._title(side)
            if narrow:
                title.append("   s: show the other snapshot", style="italic")
            for widget in self.query(f"#{side}-title"):
                if isinstance(widget, Static):
                    widget.update(title)

    def action_swap_side(self) -> None:
        """On a narrow screen: show the other snapshot's pane (the hex views stay in step)."""
        for side in SIDES:
            self.query_one(f"#{side}-pane").toggle_class("hidden-side")

    def on_mount(self) -> None:
        self.query_one("#old-pane").add_class("hidden-side")
        self._fit_layout(self.size.width, self.size.height)
        self.query_one("#verdict", Static).border_title = "Verdict"
        self.changes_list.border_title = "Changes"
        self.entries_list.border_title = "Entry differences"
        for side in SIDES:
            self.memory_map(side).border_title = "Memory map"
            self.hex(side).border_title = "Hex"
            tree = self.side_tree(side)
            tree.set_root(self.roots[side])
            tree.root.expand()
            if tree.populate(tree.root):
                self._tree_loaded(side, tree.root)
            self._scan_map(side)
        if self.diff is not None:
            self._diff_ready(self.diff)
        else:
            self._compute()
        self.changes_list.focus()

    # ------------------------------------------------------------ the diff

    @work(thread=True, exclusive=True, group="diff", exit_on_error=False)
    def _compute(self) -> None:
        worker = get_current_worker()

        def progress(stage: str, done: int, total: int) -> None:
            pct = f" {100 * done // total}%" if total else ""
            self.call_from_thread(self._set_verdict_text, Text(f"comparing {stage}…{pct}", style="dim"))

        try:
            diff = diff_sessions(
                self.sessions["old"],
                self.sessions["new"],
                progress=progress,
                cancel=lambda: worker.is_cancelled,
                lock=CORE_LOCK,
                indexes=(self.indexes["old"], self.indexes["new"]),
            )
            with CORE_LOCK:
                # Decode what the panels will show here, off the UI thread.
                diff.groups(MAX_LISTED_CHANGES)
                for sd in diff.structures:
                    sd.rendered_items()
        except Exception as exc:
            if not worker.is_cancelled:
                message = f"comparison failed: {type(exc).__name__}: {exc}"
                self.call_from_thread(self._set_verdict_text, safe_rich_text(message, "bold red"))
            return
        if not worker.is_cancelled:
            self.call_from_thread(self._diff_ready, diff)

    def _set_verdict_text(self, text: Text) -> None:
        self.query_one("#verdict", Static).update(text)

    def _diff_ready(self, diff: SnapshotDiff) -> None:
        self.diff = diff
        verdict = self.query_one("#verdict", Static)
        verdict.border_title = f"Verdict · {diff.incident.kind}"
        text = safe_rich_text(diff.verdict, "bold")
        b = diff.bytes
        groups = len(diff.groups(MAX_LISTED_CHANGES))
        text.append(
            f"\n{plural(b.total_bytes, 'byte')} differ in {plural(b.count, 'byte range')}, grouped into "
            f"{plural(groups, 'change')}{'+' if not diff.groups_complete else ''} "
            "(neighbouring ranges that hit the same part of the layout are one change)",
            style="dim",
        )
        for fact in diff.incident.facts:  # the report's bullets: what caused it, what it overwrote
            text.append("\n")
            text.append_text(safe_rich_text("• " + fact))
        if b.size_a != b.size_b:
            text.append(f" · size {b.size_a:,} → {b.size_b:,}", style="dim")
        verdict.update(text)
        for side in SIDES:
            self.hex(side).set_changes(diff.changes)
            self.models[side].changes = diff.changes
            self.memory_map(side).refresh_states()
        self._fill_changes(diff)
        first = next(
            (sd for sd in diff.structures if sd.has_changes), diff.structures[0] if diff.structures else None
        )
        self.show_structure(first)
        if len(diff.changes):
            self.goto_change(0)
        self._update_status()

    def _fill_changes(self, diff: SnapshotDiff) -> None:
        lst = self.changes_list
        lst.clear_options()
        groups = diff.groups(MAX_LISTED_CHANGES)
        options: list[Option] = []
        for g in groups:
            options.append(Option(self._change_label(g), id=f"change-{g.index}"))
        if not diff.groups_complete:
            options.append(Option(Text("… more changes: ] / [ keep stepping", style="italic"), disabled=True))
        if not options:
            options.append(Option(Text("no changes: the snapshots are byte-identical"), disabled=True))
        lst.add_options(options)
        total = f"{len(groups):,}" + ("+" if not diff.groups_complete else "")
        lst.border_title = f"Changes · {total} (] / [)"

    @staticmethod
    def _change_label(g: ChangeGroup) -> Text:
        text = Text(f"{g.index + 1:>4} ", style="bold")
        text.append(f"{g.start:#x}–{g.end:#x} ")
        detail = f"{g.bytes:,} B" + (f" in {g.ranges:,} ranges" if g.ranges > 1 else "")
        text.append(detail, style="dim")
        text.append("\n     ")
        text.append_text(safe_rich_text(g.old_what, "red"))
        text.append(" → ")
        text.append_text(safe_rich_text(g.new_what, "green"))
        return text

    # ----------------------------------------------------- shared actions

    def action_focus_pane(self, kind: str) -> None:
        """Focus the old side's pane of this kind, or the new side's when the old one has focus."""
        old = self.query_one(f"#old-{kind}")
        target = self.query_one(f"#new-{kind}") if self.focused is old else old
        target.focus()

    def action_help(self) -> None:
        from inspector.tui.screens import HelpRow, HelpScreen

        rows: list[HelpRow] = []
        sections: list[tuple[str, list[BindingType]]] = [
            ("anywhere", self.BINDINGS),
            ("tree", [*RegionTree.BINDINGS, *Tree.BINDINGS]),
            ("hex view", HexView.BINDINGS),
            ("memory map", MemoryMap.BINDINGS),
        ]
        for section, bindings in sections:
            for bd in Binding.make_bindings(bindings):
                rows.append(HelpRow(section, self.get_key_display(bd), bd.id or bd.action, bd.description))
        rows.append(
            HelpRow("anywhere", "ctrl+p", "app.command_palette", "Command palette (every action by name)")
        )
        self.push_screen(HelpScreen(rows))

    def action_legend(self) -> None:
        from inspector.tui.screens import LegendScreen

        self.push_screen(LegendScreen())

    def action_goto(self) -> None:
        from inspector.tui.screens import GotoScreen
        from inspector.views.navigation import GOTO_HELP, GotoError, parse_goto

        analysis = self.sessions["new"].analysis

        def validate(text: str) -> str | None:
            try:
                parse_goto(text, analysis, self.hex("new").cursor)
            except GotoError as exc:
                return str(exc)
            return None

        def done(text: str | None) -> None:
            if text:
                self.goto(text)

        self.push_screen(
            GotoScreen("Go to offset (both sides)", GOTO_HELP, placeholder="0x10000", validate=validate), done
        )

    def goto(self, text: str) -> int:
        """Move both hex views to an address (``m4:0x…`` is read in the new snapshot's layout)."""
        from inspector.views.navigation import parse_goto

        pos = parse_goto(text, self.sessions["new"].analysis, self.hex("new").cursor)
        for side in SIDES:
            self._syncing = True
            try:
                self.hex(side).move_cursor(pos, top=True)
            finally:
                self._syncing = False
        self._update_status()
        return pos

    def action_export(self) -> None:
        """Write the whole comparison as JSON (what ``diff --json`` prints) next to the working directory."""
        from inspector.tui.screens import GotoScreen

        if self.diff is None:
            self.notify("The comparison is still running.", markup=False)
            return
        default = f"diff-{slug(self.titles['old'])}-vs-{slug(self.titles['new'])}.json"

        def done(text: str | None) -> None:
            if text:
                self._export(text.strip())

        self.push_screen(
            GotoScreen(
                "Export the comparison as JSON", "a new file; existing files are not replaced", value=default
            ),
            done,
        )

    def _export(self, name: str) -> None:
        import json
        from pathlib import Path

        from inspector.jsonout import json_default

        out = Path(name).expanduser().resolve()
        assert self.diff is not None
        try:
            with CORE_LOCK:
                text = json.dumps(self.diff.to_json(), indent=2, default=json_default, ensure_ascii=False)
            with open(out, "x", encoding="utf-8") as fh:  # never replaces a file (nor a snapshot)
                fh.write(escape_control(text, single_line=False) + "\n")
        except FileExistsError:
            self.notify(f"{out} already exists: choose another name", severity="error", markup=False)
            return
        except OSError as exc:
            self.notify(f"{out}: cannot write: {exc.strerror or exc}", severity="error", markup=False)
            return
        self.notify(f"wrote the comparison to {out}", markup=False)

    # ------------------------------------------------------------- changes

    def action_step(self, step: int) -> None:
        if self.diff is None or not len(self.diff.changes):
            self.notify("No changes to step through.", markup=False)
            return
        target = max(0, self.current + step)
        if self.diff.group(target) is None:
            target = self.current
        self.goto_change(target)

    def goto_change(self, i: int) -> None:
        """Make change ``i`` current: select its span and move both hex views (and maps) to it."""
        assert self.diff is not None
        g = self.diff.group(i)
        if g is None:
            return
        self.current = i
        for side in SIDES:
            hexv = self.hex(side)
            hexv.set_selection([(g.start, min(g.end, hexv.size_bytes))] if g.start < hexv.size_bytes else [])
            self._syncing = True
            try:
                hexv.move_cursor(g.start, top=True)
            finally:
                self._syncing = False
            self.memory_map(side).set_position(g.start)
        lst = self.changes_list
        if i < lst.option_count and lst.highlighted != i:
            lst.highlighted = i
        sd = self._structure_at(g.start)
        if sd is not None and sd is not self.shown_structure:
            self.show_structure(sd)
        self._update_status()

    def _structure_at(self, pos: int) -> StructureDiff | None:
        if self.diff is None:
            return None
        for side in ("new", "old"):
            # What is at the byte, from the same offset index the tree and hex view use.
            with CORE_LOCK:
                path = self.indexes[side].resolve(pos)
            mid = next((r.memory_id for r in reversed(path) if r.memory_id is not None), None)
            if mid is not None:
                sd = self.diff.structure(mid)
                if sd is not None:
                    return sd
        return None

    @on(OptionList.OptionSelected, "#changes")
    def _change_chosen(self, event: OptionList.OptionSelected) -> None:
        oid = event.option.id or ""
        if oid.startswith("change-"):
            self.goto_change(int(oid.split("-", 1)[1]))

    # ------------------------------------------------------------- entries

    def show_structure(self, sd: StructureDiff | None) -> None:
        """List the entry-level differences of one structure."""
        self.shown_structure = sd
        lst = self.entries_list
        lst.clear_options()
        if sd is None:
            lst.border_title = "Entry differences"
            return
        lst.border_title = escape_control(f"{sd.label}: {sd.counts_text()}")
        options: list[Option] = []
        if sd.header:
            fields = ", ".join(f"{k} {a} → {b}" for k, (a, b) in list(sd.header.items())[:4])
            options.append(Option(safe_rich_text("header: " + fields, "dim"), disabled=True))
        if sd.note:
            options.append(Option(safe_rich_text(sd.note, "dim italic"), disabled=True))
        for i, item in enumerate(sd.rendered_items()):
            options.append(Option(self._entry_label(item), id=f"entry-{i}"))
        if sd.items_truncated:
            total = sd.added + sd.removed + sd.changed
            options.append(
                Option(Text(f"… {total - len(sd.items):,} more not listed", style="italic"), disabled=True)
            )
        if not options:
            options.append(Option(Text("no entry differs", style="dim"), disabled=True))
        lst.add_options(options)

    @staticmethod
    def _entry_label(item: dict[str, Any]) -> Text:
        op = item["op"]
        style = {"added": "green", "removed": "red", "changed": "yellow"}.get(op, "")
        text = Text(f"{op:<8}", style=f"bold {style}")
        key = item.get("key_text") if "key_text" in item else f"[{item.get('index')}]"
        text.append_text(safe_rich_text(_short(str(key), 40), "bold"))
        if "old" in item:
            text.append("\n   old ", style="red")
            text.append_text(safe_rich_text(_short(item["old"].get("text", ""), MAX_ENTRY_TEXT)))
        if "new" in item:
            text.append("\n   new ", style="green")
            text.append_text(safe_rich_text(_short(item["new"].get("text", ""), MAX_ENTRY_TEXT)))
        return text

    @on(OptionList.OptionSelected, "#entries")
    def _entry_chosen(self, event: OptionList.OptionSelected) -> None:
        sd = self.shown_structure
        oid = event.option.id or ""
        if sd is None or not oid.startswith("entry-"):
            return
        item = sd.items[int(oid.split("-", 1)[1])]
        for side, ranges in (("old", item.old_ranges), ("new", item.new_ranges)):
            hexv = self.hex(side)
            if ranges:
                hexv.set_selection(ranges)
                self._syncing = True
                try:
                    hexv.move_cursor(ranges[0][0], top=True)
                finally:
                    self._syncing = False

    # ----------------------------------------------------------- the trees

    def _register_region(self, side: str, region: Region, parent: Region | None, depth: int) -> None:
        self.indexes[side].add(region, parent, depth)

    def _tree_loaded(self, side: str, node: TreeNode[Any]) -> None:
        self.hex(side).invalidate()
        # Open the layout down to each structure, as the single-snapshot view does.
        for child in node.children:
            data = child.data
            if isinstance(data, Region) and data.kind in AUTO_EXPAND and not child.is_expanded:
                child.expand()

    @on(Tree.NodeExpanded)
    def _node_expanded(self, event: Tree.NodeExpanded[Any]) -> None:
        tree = event.control
        if not isinstance(tree, RegionTree):
            return
        side = "old" if tree.id == "old-tree" else "new"
        if not tree.is_populated(event.node) and tree.populate(event.node):
            self._tree_loaded(side, event.node)

    @on(Tree.NodeHighlighted)
    def _node_highlighted(self, event: Tree.NodeHighlighted[Any]) -> None:
        tree = event.control
        region = event.node.data
        if not isinstance(tree, RegionTree) or not isinstance(region, Region) or self._syncing:
            return
        side = "old" if tree.id == "old-tree" else "new"
        hexv = self.hex(side)
        hexv.set_selection([] if region.kind == "snapshot" else region.ranges)
        if region.ranges and tree.has_focus:
            self._syncing = True
            try:
                for s in SIDES:
                    self.hex(s).move_cursor(region.ranges[0][0], top=True)
            finally:
                self._syncing = False
        if self.diff is not None and region.memory_id is not None:
            sd = self.diff.structure(region.memory_id)
            if sd is not None and sd is not self.shown_structure:
                self.show_structure(sd)

    # ------------------------------------------------------------- hex sync

    @on(DiffHexView.CursorMoved)
    def _cursor_moved(self, event: DiffHexView.CursorMoved) -> None:
        source = event.hex_view
        if source is None:
            return
        side = "old" if source.id == "old-hex" else "new"
        self.memory_map(side).set_position(event.offset)
        self.query_one(f"#{side}-inspector", DataInspector).show_at(
            self.sessions[side].analysis, event.offset
        )
        if event.by_user and not self._syncing:
            other = "new" if side == "old" else "old"
            self._syncing = True
            try:
                self.hex(other).move_cursor(event.offset)
            finally:
                self._syncing = False
        self._update_status()

    @on(MemoryMap.Jump)
    def _map_jump(self, event: MemoryMap.Jump) -> None:
        for side in SIDES:
            self.hex(side).move_cursor(event.offset, top=True)

    def _update_status(self) -> None:
        pos = self.hex("new").cursor
        text = Text("cursor ", style="dim")
        text.append_text(safe_rich_text(describe_position(self.sessions["new"].analysis, pos)))
        if self.diff is not None and len(self.diff.changes):
            g = self.diff.group(self.current) if self.current >= 0 else None
            if g is not None:
                total = f"{len(self.diff.groups(MAX_LISTED_CHANGES)):,}" + (
                    "+" if not self.diff.groups_complete else ""
                )
                text.append(f"   change {g.index + 1} of {total}: {g.start:#x}–{g.end:#x}", style="bold")
        self.query_one("#diff-status", Static).update(text)

    # --------------------------------------------------------------- maps

    @work(thread=True, group="map-scan", exit_on_error=False)
    def _scan_map(self, side: str) -> None:
        model = self.models[side]
        model.scan()  # reads the snapshot's pages only: no core caches, no lock
        self.call_from_thread(self.memory_map(side).refresh_states)

    def on_unmount(self) -> None:
        if self._owns:
            for s in self.sessions.values():
                s.close()


def _short(text: str, limit: int) -> str:
    text = escape_control(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def create_diff_app(old: Session, new: Session, *, diff: SnapshotDiff | None = None) -> DiffApp:
    """The diff app for two loaded sessions (``diff``: a comparison already computed, else the app
    computes it in a worker)."""
    return DiffApp(old, new, diff=diff)
