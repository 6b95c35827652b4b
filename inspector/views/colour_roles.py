"""What each colour *means*: region kinds and memory-map states mapped to colour roles.

Only the meaning lives here; the colours themselves are declared once in ``app.tcss`` as component
classes (``role--NAME`` for bytes and labels, ``map--NAME`` for memory-map cells), so the hex view,
the tree, the memory map and the legend always agree.
"""

from __future__ import annotations

from typing import Any

# Memory ids are spread over this many colours (memory 0 and memory 8 share one; the map and the
# legend always print the id next to the colour, so a shared colour is never ambiguous).
MEMORY_COLOURS = 8

# Roles for bytes in the hex view and for labels in the tree. "base" is not a role: it means "colour
# these bytes by who owns them" (the memory that owns the bucket), because a container region such as
# a whole memory or a structure says nothing more specific about its bytes than its owner does.
ROLES: tuple[str, ...] = (
    "mm-header",
    "bucket-table",
    *(f"memory-{i}" for i in range(MEMORY_COLOURS)),
    "structure-header",
    "allocator",
    "node",
    "overflow",
    "key",
    "value",
    "free",
    "stale",
    "stable-save",
    "corrupt",
    "unallocated",
    "page0",
    "neutral",
)

# Which role each region kind gets. Kinds missing here (a colleague may add new ones) fall back to
# "neutral"; kinds mapped to None are containers and show their bytes by owner.
KIND_ROLE: dict[str, str | None] = {
    "snapshot": None,
    "memories": None,
    "memory": None,
    "btreemap": None,
    "cell": None,
    "vec": None,
    "minheap": None,
    "log": None,
    "raw": None,
    "unknown": None,
    "empty": None,
    "entries": None,
    "entry": None,
    "group": None,
    "mm_header": "mm-header",
    "bucket_table": "bucket-table",
    "structure_header": "structure-header",
    "allocator": "allocator",
    "free_list": "free",
    "free_chunk": "free",
    "chunk": "node",
    "node": "node",
    "overflow": "overflow",
    "key": "key",
    "value": "value",
    "unreachable": "stale",
    "orphan": "stale",
    "stable_save": "stable-save",
    "finding": "corrupt",
    "findings": None,
    "diagnosis": None,
}

# Forensic explanations win over the red "corrupt" overlay: a byte that is known to be a stable_save
# message or stale data is better described by that than by "an error finding covers it".
EXPLAINING_ROLES = frozenset({"stable-save", "stale"})

# Kinds never offered as "the region under the cursor": they describe bytes, they are not a layout.
NOT_LAYOUT_KINDS = frozenset({"finding", "findings", "diagnosis"})

# Kinds of structure regions (the node that the decoder switch and "find key" act on).
STRUCTURE_KINDS = frozenset({"btreemap", "cell", "vec", "minheap", "log", "raw", "unknown", "empty"})

# Memory-map cell states, most telling first: a cell spanning several states shows the first one.
MAP_STATES: tuple[str, ...] = (
    "stable-save",
    "error",
    "unallocated",
    "mm-header",
    *(f"memory-{i}" for i in range(MEMORY_COLOURS)),
    "raw",
    "stale",
    "page0",
    "empty",
    "unknown",
    "beyond",
)

ROLE_CLASSES: frozenset[str] = frozenset(f"role--{r}" for r in ROLES)
MAP_CLASSES: frozenset[str] = frozenset(f"map--{s}" for s in MAP_STATES)

# Legend rows: (role or state, what it means). Shown by the legend screen, in this order.
LEGEND: tuple[tuple[str, str], ...] = (
    ("mm-header", "MemoryManager header (magic, version, bucket size, memory sizes)"),
    ("bucket-table", "MemoryManager bucket table (one owner byte per bucket)"),
    ("memory-0", "bytes of memory N (colour cycles over 8 memory ids; the map labels each id)"),
    ("structure-header", "structure header (BTR, SCL, SVC, SMH, GLI, GLD)"),
    ("allocator", "B-tree allocator header"),
    ("node", "B-tree node / allocated chunk"),
    ("overflow", "B-tree overflow page"),
    ("key", "key bytes of an entry"),
    ("value", "value bytes of an entry"),
    ("free", "free chunk / free list"),
    ("stale", "stale or unreachable data (survives, but nothing points to it)"),
    ("stable-save", "a stable_save (Candid DIDL) message written over the layout"),
    ("corrupt", "bytes covered by an error finding"),
    ("unallocated", "a bucket no memory owns, yet holding non-zero bytes"),
    ("page0", "unused rest of the MemoryManager's page 0"),
    ("neutral", "anything else (unknown region kinds, raw memory)"),
)

MAP_LEGEND: tuple[tuple[str, str], ...] = (
    ("mm-header", "MM  MemoryManager header page"),
    ("memory-0", "mN  bucket owned by memory N"),
    ("raw", "··  raw memory (no MemoryManager), non-zero"),
    ("unallocated", "??  no owner, but non-zero bytes"),
    ("stable-save", "SS  overwritten by a stable_save message"),
    ("error", "!!  an error finding covers it"),
    ("empty", "    zero / unused"),
    ("unknown", "..  not scanned yet"),
)


# Finding codes whose bytes are explained by forensics (the hex view and map show them as stale data,
# not as anonymous corruption).
STALE_CODES = frozenset({"orphaned_data"})


def forensic_ranges(analysis: Any) -> dict[str, list[tuple[int, int]]]:
    """Physical ranges the forensics explained: {"stable-save": [...], "stale": [...]}."""
    blob = getattr(analysis, "stable_save", None)
    saved = [tuple(r) for r in getattr(blob, "physical_ranges", None) or []] if blob is not None else []
    stale = [r for f in analysis.all_findings() if f.code in STALE_CODES for r in f.physical_ranges]
    return {
        "stable-save": [(int(s), int(e)) for s, e in saved],
        "stale": [(int(s), int(e)) for s, e in stale],
    }


def unexplained_errors(analysis: Any, explained: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges of error findings, less those wholly inside a range the forensics explained."""
    out = []
    for f in analysis.all_findings():
        if f.severity != "error":
            continue
        for s, e in f.physical_ranges:
            if not any(a <= s and e <= b for a, b in explained):
                out.append((s, e))
    return out


def memory_role(memory_id: Any) -> str:
    """The colour role of a memory id (ints cycle over MEMORY_COLOURS; "raw" and lists get neutral)."""
    if isinstance(memory_id, list):
        memory_id = memory_id[0] if memory_id else None
    if isinstance(memory_id, int) and not isinstance(memory_id, bool):
        return f"memory-{memory_id % MEMORY_COLOURS}"
    return "neutral"


def kind_role(kind: str, memory_id: Any = None) -> str | None:
    """Role for a region kind: None means "colour by owner"; unknown kinds are neutral."""
    if kind == "memory":
        return memory_role(memory_id)
    if kind not in KIND_ROLE:
        return "neutral"
    return KIND_ROLE[kind]


def label_role(kind: str, memory_id: Any = None) -> str:
    """Role for a tree label: like kind_role, but containers take their memory's colour."""
    role = kind_role(kind, memory_id)
    if role is None:
        return memory_role(memory_id) if memory_id is not None else "neutral"
    return role


def region_role(index: Any, region: Any) -> str | None:
    """The colour role of a region's bytes: its stable_save / stale lineage first (see
    ``OffsetIndex.lineage``), else its kind's role (None: colour them by owner)."""
    return index.lineage(region) or kind_role(region.kind, region.memory_id)
