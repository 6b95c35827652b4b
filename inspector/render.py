"""Rich (non-interactive) rendering of the region tree and findings for the CLI.

Everything that comes from snapshot bytes goes through ``safe_text`` so that markup or escape
sequences stored in a key cannot style or drive the terminal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from inspector.model import Region
from inspector.regions import build_tree
from inspector.safe_text import safe_rich_text

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis
    from inspector.session import Session

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
KIND_STYLE = {
    "mm_header": "bold magenta",
    "bucket_table": "magenta",
    "memory": "bold blue",
    "btreemap": "bold green",
    "cell": "bold green",
    "vec": "bold green",
    "minheap": "bold green",
    "log": "bold green",
    "unknown": "yellow",
    "empty": "dim",
    "diagnosis": "bold red",
    "findings": "bold",
    "unreachable": "bold yellow",
}
# How deep the summary expands each kind of region (entries stay collapsed: they can be millions).
EXPAND = {
    "snapshot",
    "mm_header",
    "memories",
    "memory",
    "btreemap",
    "cell",
    "vec",
    "minheap",
    "log",
    "unknown",
    "empty",
    "raw",
    "diagnosis",
    "findings",
    "unreachable",
    "structure_header",
    "allocator",
}


def _label(region: Region) -> Text:
    text = Text()
    text.append_text(safe_rich_text(region.name, KIND_STYLE.get(region.kind, "")))
    if region.start is not None and region.kind not in ("findings", "finding", "diagnosis"):
        text.append(f"  @{region.start:#x}", style="dim")
    if region.detail:
        text.append("  ")
        text.append_text(safe_rich_text(region.detail, "dim" if region.kind != "diagnosis" else "red"))
    return text


def _fill(tree: Tree, region: Region, depth: int, max_children: int = 40) -> None:
    if (
        region.kind in ("structure_header", "mm_header", "diagnosis")
        or region.kind == "snapshot"
        and depth == 0
    ):
        for f in region.fields:
            line = Text()
            # Field names can come from input too (metadata.json keys): escaped like every value.
            line.append_text(safe_rich_text(f.name, "dim"))
            line.append(": ", style="dim")
            line.append_text(safe_rich_text(f.text()))
            tree.add(line)
    if region.kind not in EXPAND or depth > 6:
        return
    children = region.children()
    for child in children[:max_children]:
        if child.kind == "finding":
            sev = child.findings[0].severity if child.findings else "info"
            t = Text()
            t.append(f"{sev}: ", style=SEVERITY_STYLE.get(sev, ""))
            t.append(child.findings[0].code if child.findings else child.name, style="bold")
            t.append("  ")
            t.append_text(safe_rich_text(child.detail))
            tree.add(t)
            continue
        node = tree.add(_label(child))
        _fill(node, child, depth + 1)
    if len(children) > max_children:
        tree.add(Text(f"… {len(children) - max_children} more", style="dim"))


def print_summary(session: Session, *, deep: bool = False, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    analysis = session.analysis
    if deep:
        analysis.deep()
    root = build_tree(analysis)
    tree = Tree(_label(root))
    _fill(tree, root, 0)
    console.print(tree)
    if deep:
        for line in deep_lines(analysis):
            console.print(safe_rich_text(line), soft_wrap=True)


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def deep_lines(analysis: Analysis) -> list[str]:
    """What ``summary --deep --json`` adds, as text: per B-tree its nodes, depth, overflow pages, free
    list and the SHA-256 of its entries (the figures that prove two copies hold the same data)."""
    out: list[str] = []
    for structure in analysis.structures:
        info = structure.to_json(deep=True)
        nodes = info.get("nodes")
        if not isinstance(nodes, dict):
            continue
        alloc = info.get("allocator") or {}
        out.append(f"{structure.kind} memory {structure.memory_id}, full walk:")
        out.append(
            f"  nodes: {_plural(int(nodes.get('count', 0)), 'node')} "
            f"({int(nodes.get('internal_count', 0)):,} internal, {int(nodes.get('leaf_count', 0)):,} leaf), "
            f"depth {int(nodes.get('depth', 0)):,}"
        )
        out.append(f"  overflow pages: {int(nodes.get('overflow_page_count', 0)):,}")
        out.append(f"  entries: {_plural(int(info.get('count', 0)), 'entry', 'entries')}")
        if alloc:
            head = alloc.get("free_list_head")
            out.append(
                f"  allocator: {_plural(int(alloc.get('num_allocated_chunks', 0)), 'allocated chunk')} of "
                f"{int(alloc.get('allocation_size', 0)):,} bytes; free list "
                f"{_plural(int(alloc.get('free_list_len', 0)), 'chunk')}"
                + (f" from {int(head):#x}" if isinstance(head, int) else "")
            )
        out.append(f"  entries_sha256: {info.get('entries_sha256', '')}")
    return out
