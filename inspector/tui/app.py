"""The terminal UI: region tree, hex view, details, memory map and diagnosis, kept in sync.

``create_app(session_or_path)`` is the one entry point (the CLI and the tests both use it). The app
reads the session's analysis; every slow step (building big child lists, decoding values, scanning
the snapshot for non-zero pages, searching keys, exporting) runs in a thread worker, so the first
screen of a multi-GiB snapshot paints at once and the UI never waits.

Selection sync: highlighting a tree node selects its bytes in the hex view and moves the cursor to its
first byte; moving the hex cursor selects, in the tree, the innermost region under it, resolved on
demand by the one ``OffsetIndex`` (the tree is expanded down to it). A program-made move carries ``by_user=False`` and a tree highlight caused by the hex
cursor is remembered in ``_from_hex``, so the two never bounce each other around.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, OptionList, ProgressBar, Static, Tree
from textual.widgets.option_list import Option
from textual.widgets.tree import TreeNode

from inspector.analysis.forensics import apply_deferred_orphans, find_deferred_orphans
from inspector.analysis.orphans import Orphan
from inspector.analysis.verdict import verdict
from inspector.errors import READ_ERRORS
from inspector.model import Finding, Region
from inspector.offset_index import OffsetIndex, describe_position
from inspector.regions import build_tree
from inspector.safe_text import escape_control, safe_rich_text
from inspector.search import Match, find_all, next_match
from inspector.session import Session
from inspector.tui.collector import COLLECT_EVERY_S, SETTLE_AFTER_S, Collector
from inspector.tui.data_inspector import DataInspector
from inspector.tui.details import DetailsPanel
from inspector.tui.hexview import HexView
from inspector.tui.memory_map import MapModel, MemoryMap
from inspector.tui.screens import (
    ConfirmScreen,
    ExportRequest,
    ExportScreen,
    FindScreen,
    GotoScreen,
    HelpRow,
    HelpScreen,
    LegendScreen,
    LoadScreen,
)
from inspector.tui.tree import RegionTree
from inspector.views.colour_roles import STRUCTURE_KINDS
from inspector.views.export import ExportError, check_output, export_region, export_structure, slug
from inspector.views.navigation import GOTO_HELP, GotoError, parse_goto
from inspector.views.value_display import CORE_LOCK

# Region kinds opened by themselves on the first screen: the layout down to each structure's header
# and entries node (entries stay one keypress away: they can be millions).
AUTO_EXPAND = frozenset({"mm_header", "memories", "memory", "unreachable"}) | STRUCTURE_KINDS
AUTO_EXPAND_MAX_MEMORIES = 16
DECODER_AUTO = "auto"


def decoder_choices() -> tuple[str, ...]:
    from inspector.decode.valuetypes import COMMON_TYPES

    return (DECODER_AUTO, *COMMON_TYPES)


def node_region(node: TreeNode[Any]) -> Region:
    """The region a node of the region tree stands for (every node there carries one)."""
    data = node.data
    assert isinstance(data, Region), data
    return data


class DiagnosisPanel(OptionList):
    """What is wrong, first: a two-line verdict (what happened, the next command to run), then each
    error finding as a link. The full diagnosis is shown once, in Details (the tree's Diagnosis node)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, markup=False)
        self.findings: list[Finding] = []

    def fill(self, diagnosis: list[str], findings: list[Finding]) -> bool:
        self.clear_options()
        self.findings = [f for f in findings if f.severity == "error"]
        options: list[Option] = []
        headline, command = verdict(diagnosis)
        # Enabled (disabled options are dimmed), but with no id: selecting one does nothing.
        if headline:
            options.append(Option(safe_rich_text(headline, "bold")))
        if command:
            line = Text("Next: ", style="bold")
            line.append_text(safe_rich_text(command, "bold green"))
            options.append(Option(line))
        if diagnosis:
            options.append(
                Option(Text("full diagnosis: the Diagnosis node of the tree (Details)", style="dim"))
            )
        for i, f in enumerate(self.findings):
            text = Text("error ", style="bold red")
            text.append_text(safe_rich_text(f.code, "bold"))
            text.append_text(safe_rich_text("  " + f.message))
            if f.physical_ranges:
                text.append(f"  → {f.physical_ranges[0][0]:#x}", style="underline")
            options.append(Option(text, id=f"finding-{i}"))
        self.add_options(options)
        self.border_title = f"Diagnosis · {len(self.findings)} error{'s' if len(self.findings) != 1 else ''}"
        return bool(options)


class TaskProgress(Message):
    """Progress of a background task, posted from its worker thread (``post_message`` is thread-safe
    and, unlike ``call_from_thread``, does not make the worker wait for the UI)."""

    def __init__(self, key: str, done: int, total: int | None) -> None:
        super().__init__()
        self.key = key
        self.done = done
        self.total = total

    def can_replace(self, message: Message) -> bool:
        # Only the newest count of a task matters: a queued older one is dropped rather than rendered
        # (toolong's merged progress messages), so a fast worker never floods the event loop.
        return isinstance(message, TaskProgress) and message.key == self.key


class StatusBar(Horizontal):
    def compose(self) -> ComposeResult:
        yield Static(Text(""), id="status-text", markup=False)
        yield Static(Text(""), id="task-text", markup=False)
        yield ProgressBar(total=None, show_eta=False, show_percentage=True, id="task-bar")


class InspectorApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "stable-inspect"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("f1", "help", "Help", show=False, id="app.help_f1"),
        Binding("g", "goto", "Go to", id="app.goto"),
        Binding("slash", "find", "Search", id="app.find"),
        Binding("n", "next_match", "Next match", id="app.next_match"),
        Binding("N", "prev_match", "Previous match", show=False, id="app.prev_match"),
        Binding("right_square_bracket", "next_finding", "Next finding", id="app.next_finding"),
        Binding("left_square_bracket", "prev_finding", "Previous finding", show=False, id="app.prev_finding"),
        Binding("v", "cycle_value_decoder", "Decoder", id="app.value_decoder"),
        Binding("K", "cycle_key_decoder", "Key decoder", show=False, id="app.key_decoder"),
        Binding("o", "load", "Load .did / schema", show=False, id="app.load"),
        Binding("e", "export", "Export", id="app.export"),
        Binding("l", "legend", "Legend", id="app.legend"),
        Binding("t", "focus('tree')", "Focus tree", show=False, id="app.focus_tree"),
        Binding("x", "focus('hex')", "Focus hex view", show=False, id="app.focus_hex"),
        Binding("m", "focus('map')", "Focus memory map", show=False, id="app.focus_map"),
        Binding("D", "focus('diagnosis')", "Focus diagnosis", show=False, id="app.focus_diagnosis"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    # Actions that make no sense while a dialog is open (the dialog has the keyboard).
    MAIN_ACTIONS = frozenset(
        {
            "goto",
            "find",
            "next_finding",
            "prev_finding",
            "next_match",
            "prev_match",
            "cycle_value_decoder",
            "cycle_key_decoder",
            "load",
            "export",
            "legend",
            "help",
            "focus",
        }
    )

    def __init__(
        self,
        session: Session,
        *,
        did_path: str | None = None,
        schema_path: str | None = None,
        owns_session: bool = False,
    ) -> None:
        super().__init__()
        self.session = session
        self.analysis = session.analysis
        self.did_path = did_path
        self.schema_path = schema_path
        self._owns_session = owns_session
        self._collector = Collector()
        self.root_region = build_tree(self.analysis)
        self.index = OffsetIndex(self.root_region, self.analysis)
        self.map_model = MapModel(self.analysis, self.index)
        self.selected: Region | None = None
        self._from_hex: Region | None = None
        self._auto_nodes: set[int] = set()
        self._finding_pos = -1
        self._last_query = ""
        self._matches: list[Match] = []
        self._match_query = ""
        self._match_pos = -1
        self._tasks: dict[str, tuple[str, int | None, int | None]] = {}
        self._new_ranges: list[tuple[int, int]] = []  # of regions registered since the hex view repainted
        self.sub_title = self._file_label()

    # ------------------------------------------------------------- compose

    def _file_label(self) -> str:
        # The name only: an absolute path differs between machines (and would leak into screenshots).
        return escape_control(self.session.snapshot.path.name or str(self.session.snapshot.path))

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield RegionTree(
                self.root_region,
                self._register_region,
                self._tree_loaded,
                settle=self._collector.settle,
                id="tree",
            )
            with Vertical(id="right"):
                yield DiagnosisPanel(id="diagnosis")
                yield MemoryMap(self.map_model, id="map")
                with Horizontal(id="lower"):
                    yield HexView(self.analysis, self.index, id="hex")
                    with Vertical(id="side"):
                        yield DetailsPanel(id="details")
                        yield DataInspector(id="inspector")
        yield StatusBar(id="status")
        yield Footer()

    @property
    def region_tree(self) -> RegionTree:
        return self.query_one("#tree", RegionTree)

    @property
    def hex_view(self) -> HexView:
        return self.query_one("#hex", HexView)

    @property
    def details_panel(self) -> DetailsPanel:
        return self.query_one("#details", DetailsPanel)

    @property
    def memory_map(self) -> MemoryMap:
        return self.query_one("#map", MemoryMap)

    @property
    def diagnosis_panel(self) -> DiagnosisPanel:
        return self.query_one("#diagnosis", DiagnosisPanel)

    def on_mount(self) -> None:
        self._collector.take_over()
        self.set_interval(COLLECT_EVERY_S, self._collector.collect_if_due, name="collect")
        self.query_one("#task-bar", ProgressBar).display = False
        self.hex_view.border_title = "Hex"
        self.details_panel.border_title = "Details"
        self.query_one("#inspector", DataInspector).border_title = "At cursor"
        self._fit_layout(self.size.width, self.size.height)
        self._install()

    # Terminal widths/heights where the layout changes: below NARROW the hex view and the details stack
    # (the hex view then shows 8 bytes a line); from WIDE on it shows 32; below SHORT the diagnosis and
    # the data inspector shrink to leave the hex view its rows.
    NARROW, WIDE, SHORT = 120, 230, 32

    def on_resize(self, event: Any) -> None:
        self._fit_layout(event.size.width, event.size.height)

    def _fit_layout(self, width: int, height: int) -> None:
        screen = self.screen
        screen.set_class(width < self.NARROW, "narrow")
        screen.set_class(width >= self.WIDE, "wide")
        screen.set_class(height < self.SHORT, "short")

    def _install(self) -> None:
        """(Re)build every view from ``self.session`` (at start and after loading a .did/schema)."""
        self.index.set_tree(self.root_region, self.analysis)
        self._auto_nodes.clear()
        self._finding_pos = -1
        self.selected = None
        tree = self.region_tree
        tree.set_root(self.root_region)
        self._auto_nodes.add(tree.root.id)
        tree.root.expand()
        if tree.populate(tree.root):
            self._tree_loaded(tree.root)
        self.hex_view.set_analysis(self.analysis)  # (repaints it all)
        self._new_ranges = []
        self.memory_map.set_model(self.map_model)
        self.memory_map.border_title = self.map_model.title()
        diag = self.diagnosis_panel
        diag.display = diag.fill(self.analysis.diagnosis, self.analysis.all_findings())
        # The stray-data scan reads the whole file in a thread: started once the first screen is painted,
        # so it does not compete with that paint for the interpreter.
        self.call_after_refresh(self._scan_map)
        self._select_initial()
        tree.focus()

    def _select_initial(self) -> None:
        """With errors, the diagnosis comes first; otherwise the MemoryManager (or first structure)."""
        tree = self.region_tree
        children = tree.root.children
        has_errors = self.analysis.has_errors or bool(self.analysis.diagnosis)

        def first(kinds: Iterable[str]) -> TreeNode[Any] | None:
            wanted = set(kinds)
            return next((n for n in children if isinstance(n.data, Region) and n.data.kind in wanted), None)

        target = (first({"diagnosis"}) or first({"findings"})) if has_errors else None
        target = target or first({"mm_header", *STRUCTURE_KINDS}) or tree.root
        tree.ensure_lines()
        if tree.cursor_node is target:
            self._show_region(
                target.data if isinstance(target.data, Region) else self.root_region, move_hex=True
            )
        else:
            tree.move_cursor(target)

    # --------------------------------------------------------- tree events

    def _register_region(self, region: Region, parent: Region | None, depth: int) -> None:
        self.index.add(region, parent, depth)
        self._new_ranges.extend(region.ranges)

    def _repaint_new_regions(self) -> None:
        """Repaint the hex lines whose colours the regions registered since the last call change."""
        ranges, self._new_ranges = self._new_ranges, []
        self.hex_view.invalidate_ranges(ranges)

    def _tree_loaded(self, node: TreeNode[Any]) -> None:
        self._repaint_new_regions()
        self._task_end(f"load-{node.id}")
        self._auto_expand_children(node)
        # A page of entries: a thousand regions and tree nodes that stay. On a timer, once the page is on
        # screen: a timer runs after the keys and timers already due, where a queued callback (``call_later``)
        # would run right after the page's repaint, and the two held the loop 0.1 s+.
        self.set_timer(SETTLE_AFTER_S, self._collector.settle, name="settle-heap")

    def _auto_expand_children(self, node: TreeNode[Any]) -> None:
        if node.id not in self._auto_nodes:
            return
        kids = [c for c in node.children if isinstance(c.data, Region) and c.data.kind in AUTO_EXPAND]
        memories = [c for c in kids if node_region(c).kind == "memory"]
        if len(memories) > AUTO_EXPAND_MAX_MEMORIES:
            kids = [c for c in kids if node_region(c).kind != "memory"]
        for child in kids:
            self._auto_nodes.add(child.id)
            child.expand()

    @on(Tree.NodeExpanded, "#tree")
    def _node_expanded(self, event: Tree.NodeExpanded[Any]) -> None:
        # The tree that sent it, not a query: a page finished by a worker can arrive while the app is
        # shutting down, when "#tree" is already gone (the bench's probe died of NoMatches under load).
        tree = event.control
        if not isinstance(tree, RegionTree) or not tree.is_attached:
            return
        node = event.node
        if tree.is_populated(node):
            return
        if tree.populate(node):
            self._tree_loaded(node)
        else:
            region = node.data
            self._task_start(f"load-{node.id}", f"loading {escape_control(region.name) if region else ''}…")

    @on(Tree.NodeHighlighted, "#tree")
    def _node_highlighted(self, event: Tree.NodeHighlighted[Any]) -> None:
        region = event.node.data
        if not isinstance(region, Region):
            return
        from_hex = self._from_hex is region
        self._from_hex = None
        self._show_region(region, move_hex=not from_hex)

    def _show_region(self, region: Region, *, move_hex: bool) -> None:
        self.selected = region
        self.details_panel.show(region)
        if region.kind == "snapshot":
            self.hex_view.set_selection([])
        else:
            self.hex_view.set_selection(region.ranges)
        if move_hex and region.ranges:
            self.hex_view.move_cursor(region.ranges[0][0], top=True)

    @on(OptionList.OptionSelected, "#diagnosis")
    def _diagnosis_selected(self, event: OptionList.OptionSelected) -> None:
        oid = event.option.id or ""
        if oid.startswith("finding-"):
            finding = self.diagnosis_panel.findings[int(oid.split("-", 1)[1])]
            self.jump_to_finding(finding)

    # ----------------------------------------------------------- hex events

    @on(HexView.CursorMoved)
    def _cursor_moved(self, event: HexView.CursorMoved) -> None:
        self._update_status()
        self.query_one("#inspector", DataInspector).show_at(self.analysis, event.offset)
        self.memory_map.set_position(event.offset)
        if not event.by_user:
            return
        self.reveal_offset(event.offset)

    @on(MemoryMap.Jump)
    def _map_jump(self, event: MemoryMap.Jump) -> None:
        self.hex_view.move_cursor(event.offset, by_user=True, top=True)

    def _update_status(self) -> None:
        text = Text("cursor ", style="dim")
        text.append(describe_position(self.analysis, self.hex_view.cursor))
        if (
            0 <= self._match_pos < len(self._matches)
            and self._matches[self._match_pos].pos == self.hex_view.cursor
        ):
            match = self._matches[self._match_pos]
            text.append(f"   match {self._match_pos + 1:,} of {len(self._matches):,}: ", style="bold")
            text.append_text(safe_rich_text(match.label))
        # One line of a fixed size (height 1, width 1fr): no layout pass for it on every cursor move.
        self.query_one("#status-text", Static).update(text, layout=False)

    # -------------------------------------------------------------- reveal

    def reveal_offset(self, pos: int) -> Region | None:
        """Select, in the tree, the innermost region at a byte, expanding the tree down to it."""
        # A worker may hold the core for seconds (finding a far page of a big map): never wait for it on
        # the event loop; try again shortly if the cursor is still there.
        if not CORE_LOCK.acquire(blocking=False):
            self.set_timer(0.25, partial(self._reveal_when_free, pos))
            return None
        try:
            path = self.index.resolve(pos)
        finally:
            CORE_LOCK.release()
        if not path or path[-1] is self.selected:
            return path[-1] if path else None
        self.reveal_path(path, from_hex=True)
        return path[-1]

    def _reveal_when_free(self, pos: int) -> None:
        if self.hex_view.cursor == pos:
            self.reveal_offset(pos)

    def reveal(self, region: Region, *, from_hex: bool = False) -> bool:
        return self.reveal_path(self.index.path(region), from_hex=from_hex)

    def reveal_path(self, path: list[Region], *, from_hex: bool = False) -> bool:
        """Expand the tree along ``path`` (root-first, regions already loaded) and put the cursor on
        its last region."""
        tree = self.region_tree
        node: TreeNode[Any] | None = None
        for i, region in enumerate(path):
            node = tree.node_for(region)
            if node is None and i > 0:
                parent = tree.node_for(path[i - 1])
                if parent is None:
                    return False
                tree.populate_now(parent)
                node = tree.node_for(region)
            if node is None:
                return False
            if i < len(path) - 1 and not node.is_expanded:
                node.expand()
                tree.populate_now(node)
        if node is None:
            return False
        tree.ensure_lines()
        target = path[-1]
        if tree.cursor_node is node:
            self._show_region(target, move_hex=not from_hex)
        else:
            self._from_hex = target if from_hex else None
            tree.move_cursor(node)
        self._repaint_new_regions()
        return True

    # ------------------------------------------------------------ findings

    def _findings_node(self) -> TreeNode[Any] | None:
        for node in self.region_tree.root.children:
            if isinstance(node.data, Region) and node.data.kind == "findings":
                return node
        return None

    def jump_to_finding(self, finding: Finding) -> None:
        node = self._findings_node()
        if node is None:
            return
        self.region_tree.populate_now(node)
        region = next(
            (
                c.data
                for c in node.children
                # Equality, not identity: a structure may hand out fresh Finding objects on each call.
                if isinstance(c.data, Region) and c.data.findings and c.data.findings[0] == finding
            ),
            None,
        )
        if region is None:
            return
        findings = self.analysis.all_findings()
        self._finding_pos = next((i for i, f in enumerate(findings) if f == finding), self._finding_pos)
        self.reveal_path([self.root_region, node_region(node), region])

    def _step_finding(self, step: int) -> None:
        findings = self.analysis.all_findings()
        if not findings:
            self.notify("No findings: the layout checks passed.", markup=False)
            return
        self._finding_pos = (self._finding_pos + step) % len(findings)
        self.jump_to_finding(findings[self._finding_pos])

    def action_next_finding(self) -> None:
        self._step_finding(1)

    def action_prev_finding(self) -> None:
        self._step_finding(-1)

    # ---------------------------------------------------------- structures

    def selected_structure_node(self) -> TreeNode[Any] | None:
        """The tree node of the structure the cursor is in (or the one under a selected memory)."""
        node = self.region_tree.cursor_node
        while node is not None:
            region = node.data
            if isinstance(region, Region) and region.kind in STRUCTURE_KINDS and region.memory_id is not None:
                return node
            if isinstance(region, Region) and region.kind == "memory":
                for child in node.children:
                    if isinstance(child.data, Region) and child.data.kind in STRUCTURE_KINDS:
                        return child
            node = node.parent
        return None

    def structure_of(self, node: TreeNode[Any] | None) -> Any:
        if node is None or not isinstance(node.data, Region) or node.data.memory_id is None:
            return None
        return self.analysis.structure(node.data.memory_id)

    def _cycle_decoder(self, role: str) -> None:
        node = self.selected_structure_node()
        structure = self.structure_of(node)
        if node is None or structure is None:
            self.notify(
                "Select a structure (or something inside one) first.", severity="warning", markup=False
            )
            return
        if role == "key" and getattr(structure, "is_sequence", True):
            self.notify("Only maps have keys.", severity="warning", markup=False)
            return
        choices = decoder_choices()
        current = str(structure.settings.get(role, DECODER_AUTO))
        nxt = choices[(choices.index(current) + 1) % len(choices)] if current in choices else choices[0]
        settings = structure.settings
        if nxt == DECODER_AUTO:
            settings.pop(role, None)
        else:
            settings[role] = nxt
        structure.settings = settings
        trail = self._selection_trail()
        self._rebuild_structure(node, structure)
        self._restore_trail(trail)
        self.notify(f"memory {node_region(node).memory_id}: {role}s decoded as {nxt}", markup=False)

    def _rebuild_structure(self, node: TreeNode[Any], structure: Any) -> None:
        from inspector.regions import structure_region

        old = node_region(node)
        parent = self.index.parent(old)
        depth = self.index.depth_of(old)
        with CORE_LOCK:
            try:
                new = structure_region(structure)
            except Exception as exc:  # keep the old view rather than crash on a decoder bug
                self.notify(f"could not rebuild: {type(exc).__name__}: {exc}", severity="error", markup=False)
                return
        was_expanded = node.is_expanded
        self.index.remove_subtree(old)
        if parent is not None and parent.children_loaded:
            kids = parent.children()
            for i, c in enumerate(kids):
                if c is old:
                    kids[i] = new
        self.region_tree.replace_subtree(node, new)
        self._register_region(new, parent, depth)
        if was_expanded:
            self.region_tree.populate(node)
        self.region_tree.ensure_lines()
        self.region_tree.move_cursor(node)
        self._show_region(new, move_hex=False)
        self.hex_view.invalidate()

    def _selection_trail(self) -> tuple[list[int], float, int, float]:
        """Where the user is: the selected node as child positions from the root, and the tree's and
        hex view's scroll positions (a rebuilt tree has new regions, but the same shape)."""
        tree = self.region_tree
        indices: list[int] = []
        node = tree.cursor_node
        while node is not None and node.parent is not None:
            indices.append(list(node.parent.children).index(node))
            node = node.parent
        hexv = self.hex_view
        return indices[::-1], tree.scroll_offset.y, hexv.cursor, hexv.scroll_offset.y

    def _restore_trail(self, trail: tuple[list[int], float, int, float]) -> None:
        """Select the node at the same child positions again and put both scroll positions back."""
        indices, tree_y, cursor, hex_y = trail
        tree = self.region_tree
        node = tree.root
        for i in indices:
            tree.populate_now(node)
            if not node.is_expanded:
                node.expand()
            kids = [c for c in node.children if isinstance(c.data, Region)]
            if i >= len(kids):
                break
            node = kids[i]
        tree.ensure_lines()
        if isinstance(node.data, Region):
            self._from_hex = node.data  # the highlight must not move the hex cursor: it is restored below
            if tree.cursor_node is node:
                self._show_region(node.data, move_hex=False)
            tree.move_cursor(node)
        tree.scroll_to(y=tree_y, animate=False, immediate=True)
        hexv = self.hex_view
        hexv.move_cursor(cursor)
        hexv.scroll_to(y=hex_y, animate=False, immediate=True)

    def action_cycle_value_decoder(self) -> None:
        self._cycle_decoder("value")

    def action_cycle_key_decoder(self) -> None:
        self._cycle_decoder("key")

    # ---------------------------------------------------------------- find

    def action_find(self) -> None:
        def done(query: str | None) -> None:
            if query:
                self._last_query = query
                self._task_start("find", f"searching for {escape_control(query)!r}…")
                self._find_worker(query)

        self.push_screen(
            FindScreen(
                "Search keys, values and bytes",
                "decoded text of keys and values (any case) · raw bytes as 0x00ff… or text · "
                '"quoted" for text only; n / N step through the matches',
                value=self._last_query,
                placeholder="e.g. alice or 0x4d4752",
            ),
            done,
        )

    @work(thread=True, exclusive=True, group="find", exit_on_error=False)
    def _find_worker(self, query: str) -> None:
        analysis = self.analysis

        def progress(done: int, total: int | None) -> bool:
            self.post_message(TaskProgress("find", done, total))
            return analysis is self.analysis

        try:
            with CORE_LOCK:
                matches = find_all(analysis, query, progress)
        except Exception as exc:  # a decoder bug ends the search, not the app
            self.call_from_thread(self._find_failed, f"search failed: {type(exc).__name__}: {exc}")
            return
        self.call_from_thread(self._find_done, query, matches)

    def _find_failed(self, message: str) -> None:
        self._task_end("find")
        self.notify(message, severity="error", markup=False)

    def _find_done(self, query: str, matches: list[Match]) -> None:
        self._task_end("find")
        self._matches, self._match_query, self._match_pos = matches, query, -1
        if not matches:
            self.notify(f"nothing matches {query!r}", severity="warning", markup=False)
            return
        self._step_match(1)

    def _step_match(self, step: int) -> None:
        if not self._matches:
            self.notify("No search yet: press / to search keys, values and bytes.", markup=False)
            return
        i = next_match(self._matches, self.hex_view.cursor, step)
        if i is None:
            return
        self._match_pos = i
        match = self._matches[i]
        self.hex_view.move_cursor(match.pos, top=True)
        with CORE_LOCK:
            path = self.index.resolve(match.pos)
        if match.what in ("key", "value") and len(path) > 1 and path[-1].kind in ("key", "value"):
            path = path[:-1]  # show the entry: its key and its value
        self.reveal_path(path, from_hex=True)
        self._update_status()

    def action_next_match(self) -> None:
        self._step_match(1)

    def action_prev_match(self) -> None:
        self._step_match(-1)

    # ---------------------------------------------------------------- goto

    def action_goto(self) -> None:
        def validate(text: str) -> str | None:
            try:
                parse_goto(text, self.analysis, self.hex_view.cursor)
            except GotoError as exc:
                return str(exc)
            return None

        def done(text: str | None) -> None:
            if text is None:
                return
            self.goto(text)

        self.push_screen(
            GotoScreen("Go to offset", GOTO_HELP, placeholder="0x10000 or m4:0x2f14", validate=validate), done
        )

    def goto(self, text: str) -> int:
        pos = parse_goto(text, self.analysis, self.hex_view.cursor)
        self.hex_view.move_cursor(pos, by_user=True, top=True)
        self.hex_view.focus()
        return pos

    # ---------------------------------------------------------------- load

    def action_load(self) -> None:
        def validate(text: str) -> str | None:
            p = Path(text.strip()).expanduser()
            if not p.is_file():
                return f"{p}: no such file"
            if p.suffix.lower() not in (".did", ".toml"):
                return "expected a .did file (Candid names) or a .toml schema"
            if p.suffix.lower() == ".did":
                from inspector.decode.did_check import DidSyntaxError, check_did

                try:
                    check_did(p.read_text(encoding="utf-8", errors="replace"))
                except DidSyntaxError as exc:
                    return f"{p.name}: {exc}"
                except OSError as exc:
                    return f"{p.name}: cannot read: {exc.strerror or exc}"
            return None

        def done(text: str | None) -> None:
            if not text:
                return
            p = str(Path(text.strip()).expanduser())
            did, schema = self.did_path, self.schema_path
            if p.lower().endswith(".did"):
                did = p
            else:
                schema = p
            self._task_start("reload", f"reloading with {escape_control(Path(p).name)}…")
            self._reload_worker(did, schema)

        self.push_screen(
            LoadScreen(
                "Load a .did file or a schema",
                ".did: Candid field names · .toml: [memory.ID] key/value types (re-reads the snapshot)",
                placeholder="path/to/service.did or schema.toml",
                validate=validate,
            ),
            done,
        )

    @work(thread=True, exclusive=True, group="reload", exit_on_error=False)
    def _reload_worker(self, did: str | None, schema: str | None) -> None:
        from inspector.session import load
        from inspector.snapshot import InputError

        try:
            session = load(self.session.snapshot.path, did=did, schema=schema)
        except InputError as exc:
            self.call_from_thread(self._reload_failed, str(exc))
            return
        except Exception as exc:  # keep the current view rather than end the app
            self.call_from_thread(self._reload_failed, f"reload failed: {type(exc).__name__}: {exc}")
            return
        self.call_from_thread(self._reload_done, session, did, schema)

    def _reload_failed(self, message: str) -> None:
        self._task_end("reload")
        self.notify(message, severity="error", markup=False)

    def _reload_done(self, session: Session, did: str | None, schema: str | None) -> None:
        self._task_end("reload")
        old, owned = self.session, self._owns_session
        self.session, self.analysis = session, session.analysis
        self._owns_session = True
        self.did_path, self.schema_path = did, schema
        self._rebuild_views()
        if owned:
            old.close()
        self.notify("reloaded with the new decoding settings", markup=False)

    # -------------------------------------------------------------- export

    def action_export(self) -> None:
        region = self.selected or self.root_region
        snode = self.selected_structure_node()
        structure = self.structure_of(snode)
        base = slug(self.session.snapshot.path.name or "snapshot")

        def default_path(what: str, fmt: str) -> str:
            name = node_region(snode).name if what == "structure" and snode is not None else region.name
            return f"{base}-{slug(name)}.{'json' if fmt == 'json' else 'bin'}"

        def validate(req: ExportRequest) -> str | None:
            try:
                check_output(req.path, self._inputs(), overwrite=True)
            except ExportError as exc:
                return str(exc)
            return None

        def done(req: ExportRequest | None) -> None:
            if req is None:
                return
            out = Path(req.path).expanduser()
            if out.exists():

                def confirmed(yes: bool | None) -> None:
                    if yes:
                        self._start_export(req, region, structure, overwrite=True)

                self.push_screen(ConfirmScreen(f"{out} already exists. Replace it?"), confirmed)
                return
            self._start_export(req, region, structure, overwrite=False)

        self.push_screen(
            ExportScreen(
                region.name,
                node_region(snode).name if snode is not None and structure is not None else None,
                default_path,
                validate,
            ),
            done,
        )

    def _inputs(self) -> list[Path | None]:
        snap = self.session.snapshot
        return [snap.file_path, snap.path if snap.path.is_file() else None]

    def _start_export(self, req: ExportRequest, region: Region, structure: Any, *, overwrite: bool) -> None:
        try:
            out = check_output(req.path, self._inputs(), overwrite=overwrite)
        except ExportError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self._task_start("export", f"exporting to {escape_control(out.name)}…")
        self._export_worker(req, region, structure, out)

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def _export_worker(self, req: ExportRequest, region: Region, structure: Any, out: Path) -> None:
        def progress(done: int, total: int) -> bool:
            self.post_message(TaskProgress("export", done, total))
            return True

        try:
            if req.what == "structure" and structure is not None:
                n = export_structure(structure, out, req.fmt, progress)
            else:
                with CORE_LOCK:
                    n = export_region(region, self.session.snapshot.buf, out, req.fmt)
        except (OSError, ExportError) as exc:
            self.call_from_thread(self._export_done, None, str(exc))
            return
        except Exception as exc:  # a decoder bug: say so, keep the UI (the partial file is removed)
            self.call_from_thread(self._export_done, None, f"export failed: {type(exc).__name__}: {exc}")
            return
        # The full path: a relative name says nothing about which directory the TUI was started in.
        self.call_from_thread(self._export_done, f"wrote {n:,} bytes to {out.resolve()}", None)

    def _export_done(self, message: str | None, error: str | None) -> None:
        self._task_end("export")
        if error is not None:
            self.notify(error, severity="error", markup=False)
        else:
            self.notify(message or "", markup=False)

    # ------------------------------------------------------------- screens

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_rows()))

    def action_legend(self) -> None:
        self.push_screen(LegendScreen())

    def help_rows(self) -> list[HelpRow]:
        """Every binding of the app and its panes, from the live binding tables."""
        rows: list[HelpRow] = []
        sections: list[tuple[str, Iterable[BindingType]]] = [
            ("anywhere", self.BINDINGS),
            ("tree", [*RegionTree.BINDINGS, *Tree.BINDINGS]),
            ("hex view", HexView.BINDINGS),
            ("memory map", MemoryMap.BINDINGS),
        ]
        seen: set[tuple[str, str]] = set()
        for section, bindings in sections:
            for b in Binding.make_bindings(bindings):
                if (section, b.key) in seen:
                    continue
                seen.add((section, b.key))
                rows.append(
                    HelpRow(section, self.get_key_display(b), b.id or b.action, b.description or b.action)
                )
        rows.append(
            HelpRow("anywhere", "ctrl+p", "app.command_palette", "Command palette (every action by name)")
        )
        rows.append(HelpRow("anywhere", "tab", "app.focus_next", "Next pane"))
        return rows

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for b in Binding.make_bindings(self.BINDINGS):
            if b.action in ("quit",):
                continue
            if b.key in ("f1",):
                continue
            yield SystemCommand(
                b.description, f"key {self.get_key_display(b)}", partial(self.run_action, b.action)
            )
        from inspector.tui.repair_screen import start_repair

        yield SystemCommand(
            "Repair…", "write a repaired snapshot (shows the dry-run plan first)", partial(start_repair, self)
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.MAIN_ACTIONS and isinstance(self.screen, ModalScreen):
            return False
        return True

    # --------------------------------------------------------------- tasks

    def _task_start(self, key: str, label: str, total: int | None = None) -> None:
        self._tasks[key] = (label, 0, total)
        self._render_tasks()

    def on_task_progress(self, message: TaskProgress) -> None:
        self._task_progress(message.key, message.done, message.total)

    def _task_progress(self, key: str, done: int, total: int | None) -> None:
        if key in self._tasks:
            label, _, old_total = self._tasks[key]
            self._tasks[key] = (label, done, total if total is not None else old_total)
            self._render_tasks()

    def _task_end(self, key: str) -> None:
        if self._tasks.pop(key, None) is not None:
            self._render_tasks()

    def _render_tasks(self) -> None:
        try:
            text = self.query_one("#task-text", Static)
            bar = self.query_one("#task-bar", ProgressBar)
        except NoMatches:
            return  # the app is closing: a worker's last progress arrived after the screen went
        if not self._tasks:
            text.update(Text(""))
            bar.display = False
            return
        label, done, total = list(self._tasks.values())[-1]
        more = f" (+{len(self._tasks) - 1} more)" if len(self._tasks) > 1 else ""
        count = f" {done:,}" + (f"/{total:,}" if total else "") if done else ""
        text.update(Text(f"{label}{count}{more}", style="italic"))
        bar.display = True
        bar.update(total=total or None, progress=done or 0)

    # ---------------------------------------------------------------- scan

    def _scan_map(self) -> None:
        self._collector.freeze()  # the first screen is painted: what it built stays
        self._task_start("scan", "scanning for stray data…")
        self._scan_worker(self.map_model)

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def _scan_worker(self, model: MapModel) -> None:
        # A big snapshot opens before its forensic orphan scan (see ``load_for_ui``): it runs first here.
        try:
            orphans = find_deferred_orphans(self.analysis)
        except READ_ERRORS:
            orphans = []  # what a synchronous scan would have raised: nothing more to show
        if orphans is not None:
            self.call_from_thread(self._orphans_scanned, orphans)
            if model is not self.map_model:
                return  # the views were rebuilt with the stray data; their own scan has started

        def progress(done: int, total: int) -> bool:
            self.post_message(TaskProgress("scan", done, total))
            return model is self.map_model

        try:
            model.scan(progress)
        except (OSError, ValueError):
            pass  # the cells keep "not scanned yet": less information, nothing wrong shown
        self.call_from_thread(self._scan_done, model)

    def _orphans_scanned(self, orphans: list[Orphan]) -> None:
        apply_deferred_orphans(self.analysis, orphans)
        if not orphans:
            return
        self._rebuild_views()  # stray data found after the first paint: show it, as a reload does

    def _rebuild_views(self) -> None:
        """Every view again from ``self.analysis``, keeping the selection where it can."""
        self._collector.thaw()  # the old tree goes: let the collector have it
        self.root_region = build_tree(self.analysis)
        self.map_model = MapModel(self.analysis, self.index)
        trail = self._selection_trail()
        self._install()
        self._restore_trail(trail)

    def _scan_done(self, model: MapModel) -> None:
        self._task_end("scan")
        if model is self.map_model:
            self.memory_map.refresh_states()

    def on_unmount(self) -> None:
        self._collector.hand_back()
        if self._owns_session:
            self.session.close()


def create_app(
    session_or_path: Session | str | Path,
    *,
    did: str | None = None,
    schema: str | None = None,
) -> InspectorApp:
    """The app for a loaded session, or for a path (loaded here; ``InputError`` propagates)."""
    if isinstance(session_or_path, Session):
        return InspectorApp(session_or_path, did_path=did, schema_path=schema)
    session = load_for_ui(session_or_path, did=did, schema=schema)
    return InspectorApp(session, did_path=did, schema_path=schema, owns_session=True)


# From this size on, a snapshot opens before its forensic orphan scan has run: on a big map that scan walks
# the allocator's free list for the frontier (65,000 hops of a 20M-entry map: ~0.2 s) and would hold up
# the first screen. The app runs it first thing after the paint; stray data it finds rebuilds the views.
DEFER_ORPHAN_SCAN_BYTES = 256 << 20


def load_for_ui(path: str | Path, *, did: str | None = None, schema: str | None = None) -> Session:
    """The session the terminal UI opens (``InputError`` propagates, before any screen is drawn)."""
    from inspector.session import load

    return load(path, did=did, schema=schema, orphan_scan=_snapshot_bytes(path) < DEFER_ORPHAN_SCAN_BYTES)


def _snapshot_bytes(path: str | Path) -> int:
    """The size of the snapshot at ``path`` (a file, or a snapshot folder's stable_memory.bin); 0 when
    unknown (the load then reports what is wrong)."""
    p = Path(path)
    try:
        if p.is_dir():
            p = p / "stable_memory.bin"
        return p.stat().st_size
    except OSError:
        return 0
