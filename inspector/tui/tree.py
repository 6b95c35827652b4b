"""The region tree: snapshot → MemoryManager → memories → structures → … → key / value.

Children are loaded only when a node is expanded. Regions whose children are already built are added
at once; the others (entry pages that decode 1,000 keys, B-tree node lists) are built in a thread
worker behind a "loading…" placeholder, so the UI never waits for them. Every label is a ``Text``
built with ``safe_rich_text``: names and details come from snapshot bytes and are never parsed as
markup nor allowed to carry control characters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from inspector.model import Region
from inspector.safe_text import safe_rich_text
from inspector.views.colour_roles import ROLE_CLASSES, label_role
from inspector.views.value_display import CORE_LOCK

# Above this many children a node shows the first ones and says how many it left out: the Tree widget
# keeps every line in Python, and the core already pages big maps by 1,000 entries.
MAX_CHILDREN = 5_000
# Children a worker's page adds per event-loop turn (~25 µs each on the bench machine: ~6 ms a chunk).
ADD_CHUNK = 250
SEVERITY_CLASS = {"error": "role--corrupt", "warning": "regiontree--warning", "info": "regiontree--info"}

TreeData = Region | None


async def _after_due() -> None:
    """Give the event loop back until the keys and timers already due have run. (A timer, not
    ``sleep(0)``: what that queues runs before the timers that fell due meanwhile.)"""
    await asyncio.sleep(0.001)


def region_label(region: Region, style_of: Callable[[str], Any]) -> Text:
    """The one-line label of a region: name in its colour, start offset, detail (all literal)."""
    role = label_role(region.kind, region.memory_id)
    if region.kind == "finding" and region.findings:
        sev = region.findings[0].severity
        text = safe_rich_text(f"{sev}: ", style_of(SEVERITY_CLASS.get(sev, "regiontree--info")))
        text.append_text(safe_rich_text(region.findings[0].code, style_of("regiontree--name")))
        text.append_text(safe_rich_text("  " + region.detail, style_of("regiontree--detail")))
        return text
    text = safe_rich_text(region.name, style_of(f"role--{role}"))
    if region.start is not None and region.kind not in ("snapshot", "diagnosis", "findings"):
        text.append(f"  @{region.start:#x}", style=style_of("regiontree--offset"))
    errors = sum(1 for f in region.findings if f.severity == "error")
    if errors:
        text.append(f"  ⚠{errors}", style=style_of("role--corrupt"))
    if region.detail:
        text.append_text(safe_rich_text("  " + region.detail, style_of("regiontree--detail")))
    return text


class RegionTree(Tree[TreeData]):
    """A ``Tree`` of regions that loads children lazily and reports every region it registers."""

    COMPONENT_CLASSES: ClassVar[set[str]] = (
        set(Tree.COMPONENT_CLASSES)
        | set(ROLE_CLASSES)
        | {
            "regiontree--offset",
            "regiontree--detail",
            "regiontree--name",
            "regiontree--warning",
            "regiontree--info",
        }
    )

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right", "expand_cursor", "Expand", show=False, id="tree.expand"),
        Binding("left", "collapse_cursor", "Collapse / parent", show=False, id="tree.collapse"),
    ]

    def __init__(
        self,
        root: Region,
        on_register: Callable[[Region, Region | None, int], None],
        on_loaded: Callable[[TreeNode[TreeData]], None],
        *,
        settle: Callable[[], None] | None = None,
        id: str | None = None,
    ) -> None:
        self._on_register = on_register
        self._on_loaded = on_loaded
        self._settle = settle  # called once a worker's page is built, before its nodes are added
        self._populated: set[int] = set()
        self._loading: set[int] = set()
        self._region_nodes: dict[int, TreeNode[TreeData]] = {}  # id(region) -> node
        self._label_styles: dict[str, Any] = {}
        self._batch_depth = 0  # > 0 while many nodes are added: one line rebuild at the end
        self._batch_invalid = False
        super().__init__(Text(root.name), data=root, id=id)
        self.guide_depth = 2
        self.auto_expand = True

    def _style(self, name: str) -> Any:
        # Cached: get_component_rich_style walks the DOM each call, and a page adds 1,000 labels.
        style = self._label_styles.get(name)
        if style is None:
            try:
                style = self.get_component_rich_style(name, partial=True)
            except KeyError:
                style = ""
            self._label_styles[name] = style
        return style

    def get_label_width(self, node: TreeNode[TreeData]) -> int:
        # Textual's default renders every label to measure it, each time the tree's lines are rebuilt
        # (any expand or add): with a thousand pages open that blocked the event loop for 0.1 s+.
        # The label's own width plus the toggle icon's is the same number, at a fraction of the cost.
        label = node.label
        width = label.cell_len if isinstance(label, Text) else cell_len(label)
        if node.allow_expand:
            width += cell_len(self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE)
        return width

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._label_styles.clear()

    def process_label(self, label: str | Text) -> Text:
        # Textual copies every label to cut it at its first line; ours are built single-line (region_label,
        # safe_rich_text), so that copy is skipped: a page adds a thousand of them on the event loop.
        if isinstance(label, Text) and "\n" not in label.plain:
            return label
        return super().process_label(label)

    def _invalidate(self) -> None:
        # Textual rebuilds the line cache and asks for a layout on each added node; a batch does it once.
        if self._batch_depth:
            self._batch_invalid = True
            return
        super()._invalidate()

    def _batch_begin(self) -> None:
        self._batch_depth += 1

    def _batch_end(self) -> None:
        self._batch_depth -= 1
        if not self._batch_depth and self._batch_invalid:
            self._batch_invalid = False
            super()._invalidate()

    def _cached_style(self, name: str) -> Any:
        """The label style if already known, else None (for a worker thread: no DOM lookups there)."""
        return self._label_styles.get(name)

    def _prepare_labels(self, children: list[Region]) -> list[Text] | None:
        """Labels of the children a worker built, made on the worker with the styles already cached, or
        None when a style is not cached yet (the event loop makes them then)."""
        missing = False

        def style_of(name: str) -> Any:
            nonlocal missing
            style = self._cached_style(name)
            if style is None:
                missing = True
                return ""
            return style

        labels = [region_label(child, style_of) for child in children[:MAX_CHILDREN]]
        return None if missing else labels

    # ---------------------------------------------------------------- build

    def set_root(self, root: Region) -> None:
        self.clear()
        self._populated.clear()
        self._loading.clear()
        self._region_nodes.clear()
        self.root.data = root
        self.root.set_label(region_label(root, self._style))
        self._region_nodes[id(root)] = self.root
        self._on_register(root, None, 0)

    def node_for(self, region: Region) -> TreeNode[TreeData] | None:
        return self._region_nodes.get(id(region))

    def is_populated(self, node: TreeNode[TreeData]) -> bool:
        return node.id in self._populated

    def populate(self, node: TreeNode[TreeData]) -> bool:
        """Add the node's children if they are built already; True when done, False if a worker must."""
        region = node.data
        if node.id in self._populated or not isinstance(region, Region):
            return True
        if not region.children_loaded:
            self._load(node)
            return False
        self._add_region_children(node, region.children())
        return True

    def populate_now(self, node: TreeNode[TreeData]) -> None:
        """Build and add the children on this thread (only for regions known to be cheap)."""
        region = node.data
        if node.id in self._populated or not isinstance(region, Region):
            return
        with CORE_LOCK:
            try:
                children = region.children()
            except Exception as exc:
                self._add_error(node, exc)
                return
        self._add_region_children(node, children)

    def _load(self, node: TreeNode[TreeData]) -> None:
        if node.id in self._loading:
            return
        self._loading.add(node.id)
        node.add_leaf(Text("loading…", style="italic"), data=None)
        for name in self.COMPONENT_CLASSES:  # so the worker finds every label style cached
            self._style(name)
        self._load_worker(node)

    @work(thread=True, group="tree-load", exit_on_error=False)
    def _load_worker(self, node: TreeNode[TreeData]) -> None:
        region = node.data
        assert isinstance(region, Region)
        children: list[Region] | None = None
        labels: list[Text] | None = None
        error: Exception | None = None
        try:
            with CORE_LOCK:
                children = region.children()
            # The labels too (a thousand Texts for a page), while the event loop goes on.
            labels = self._prepare_labels(children)
        except Exception as exc:  # a decoder bug must show up as a line, not end the app
            children, labels, error = None, None, exc
        # ``_finish_load`` is a coroutine, run on the loop: this returns once every chunk is added. (mypy
        # cannot solve Textual's ``T | Awaitable[T]`` parameter for a coroutine function.)
        self.app.call_from_thread(self._finish_load, node, children, error, labels)  # type: ignore[arg-type]

    async def _finish_load(
        self,
        node: TreeNode[TreeData],
        children: list[Region] | None,
        error: Exception | None,
        labels: list[Text] | None = None,
    ) -> None:
        self._loading.discard(node.id)
        region = node.data
        if node.id in self._populated:
            return
        if not self._still_wanted(node, region):
            self._gave_up(node)
            return
        self._populated.add(node.id)  # (a collapse and expand meanwhile must not add the page a second time)
        # A page is a thousand nodes (~30 ms on the event loop) and the collection that freezes what the
        # worker built for it (~30 ms): each step on an event-loop turn of its own, after the keys and timers
        # already due, so no key waits for more than one step.
        await _after_due()
        if not self._still_wanted(node, region):
            self._gave_up(node)
            return
        node.remove_children()
        if error is not None or children is None:
            self._add_error(node, error)
        else:
            if self._settle is not None:
                # The page's regions and labels stay: the app's collector freezes them now, so its passes
                # while the nodes are added and painted walk only those (see ``inspector.tui.collector``).
                self._settle()
            for _ in self._adding(node, children, labels):
                await _after_due()
                if not self._still_wanted(node, region):
                    self._gave_up(node)
                    return
        self._on_loaded(node)

    def _gave_up(self, node: TreeNode[TreeData]) -> None:
        """The node was replaced (decoder changed) or the tree reloaded while its page was built or added:
        nothing more of the old page is added (the node's new owner loads its own), but the load ends
        (its "loading…" task)."""
        if self.is_attached:  # (not attached: the app is closing)
            self._on_loaded(node)

    def _still_wanted(self, node: TreeNode[TreeData], region: TreeData) -> bool:
        """The node is still this tree's, for the same region (a reload clears the tree, a decoder change
        replaces a subtree; either can happen while a worker builds or a page is being added)."""
        if not self.is_attached or region is None or node.data is not region:
            return False
        if self._tree_nodes.get(node.id) is not node:  # removed (Textual forgets removed nodes' ids)
            return False
        top = node
        while top.parent is not None:
            top = top.parent
        return top is self.root  # (``clear`` leaves the old nodes' ids behind, and reuses them)

    def _add_error(self, node: TreeNode[TreeData], error: Exception | None) -> None:
        self._populated.add(node.id)
        msg = f"could not load: {type(error).__name__}: {error}" if error else "could not load"
        node.add_leaf(safe_rich_text(msg, self._style("role--corrupt")), data=None)

    def _add_region_children(
        self, node: TreeNode[TreeData], children: list[Region], labels: list[Text] | None = None
    ) -> None:
        for _ in self._adding(node, children, labels):
            pass

    def _adding(
        self, node: TreeNode[TreeData], children: list[Region], labels: list[Text] | None
    ) -> Iterator[None]:
        """Add the children ``ADD_CHUNK`` at a time (the tree's lines rebuilt once a chunk), yielding before
        each chunk."""
        self._populated.add(node.id)
        parent = node.data if isinstance(node.data, Region) else None
        depth = self._depth(node) + 1
        shown = children[:MAX_CHILDREN]
        if labels is None or len(labels) != len(shown):
            labels = [region_label(child, self._style) for child in shown]
        if not children:
            node.allow_expand = False
        for start in range(0, len(shown), ADD_CHUNK):
            yield
            self._batch_begin()
            try:
                for child, label in zip(
                    shown[start : start + ADD_CHUNK], labels[start : start + ADD_CHUNK], strict=True
                ):
                    self._add_region_child(node, child, label, parent, depth)
            finally:
                self._batch_end()
        if len(children) > MAX_CHILDREN:
            node.add_leaf(
                Text(f"… {len(children) - MAX_CHILDREN:,} more not shown", style="italic"), data=None
            )

    def _add_region_child(
        self, node: TreeNode[TreeData], child: Region, label: Text, parent: Region | None, depth: int
    ) -> None:
        expandable = child.has_children and not (child.children_loaded and not child.children())
        child_node = node.add(label, data=child, allow_expand=expandable)
        self._region_nodes[id(child)] = child_node
        self._on_register(child, parent, depth)
        # Children built eagerly with their parent (an entry's key and value) are registered too, so
        # the hex view colours them and the cursor can select them before anyone expands the entry.
        if child.children_loaded:
            stack = [(c, child, depth + 1) for c in child.children()[:64]]
            while stack:
                c, p, d = stack.pop()
                self._on_register(c, p, d)
                if c.children_loaded and d < depth + 3:
                    stack.extend((g, c, d + 1) for g in c.children()[:64])

    @staticmethod
    def _depth(node: TreeNode[TreeData]) -> int:
        d = 0
        p = node.parent
        while p is not None:
            d += 1
            p = p.parent
        return d

    def replace_subtree(self, node: TreeNode[TreeData], region: Region) -> None:
        """Swap the region under a node (after the decoder changed) and forget its children."""
        self._forget(node)
        node.remove_children()
        self._populated.discard(node.id)
        node.data = region
        self._region_nodes[id(region)] = node
        node.set_label(region_label(region, self._style))
        node.allow_expand = region.has_children

    def _forget(self, node: TreeNode[TreeData]) -> None:
        for child in node.children:
            self._forget(child)
            if isinstance(child.data, Region):
                self._region_nodes.pop(id(child.data), None)
            self._populated.discard(child.id)

    # ------------------------------------------------------------- actions

    def action_expand_cursor(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and not node.is_expanded:
            node.expand()
        elif node.children:
            self.move_cursor(node.children[0])

    def action_collapse_cursor(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.is_expanded:
            node.collapse()
        elif node.parent is not None:
            self.move_cursor(node.parent)

    def ensure_lines(self) -> None:
        """Make node line numbers current after expanding (``move_cursor`` reads them directly)."""
        self.get_node_at_line(0)
