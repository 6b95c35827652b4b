"""The one decoded model every view reads: findings, fields and a tree of regions.

A ``Region`` is a named span of the snapshot (one or more physical byte ranges) with decoded fields,
findings and children. Children are produced lazily by a factory, so a map with a million entries
costs nothing until someone expands it. The CLI, the JSON output, the TUI, the diff and the salvage
all read regions; none of them parses bytes on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from inspector.jsonout import JsonObject

Range = tuple[int, int]

SEVERITIES = ("error", "warning", "info")


@dataclass
class Finding:
    severity: str  # "error" | "warning" | "info"
    code: str
    message: str
    physical_ranges: list[Range] = field(default_factory=list)
    memory_id: int | str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "physical_ranges": [[s, e] for s, e in self.physical_ranges],
        }
        if self.memory_id is not None:
            out["memory_id"] = self.memory_id
        if self.details:
            out["details"] = self.details
        return out


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass
class Field:
    """One decoded field; ``span`` is its physical byte range when it has one (for the hex view)."""

    name: str
    value: Any
    span: Range | None = None
    display: str | None = None  # how to show it, when str(value) is not the best rendering

    def text(self) -> str:
        if self.display is not None:
            return self.display
        if isinstance(self.value, bytes):
            return self.value.hex()
        return str(self.value)


# Region kinds the views colour consistently (the TUI legend lists these).
REGION_KINDS = (
    "snapshot",
    "mm_header",
    "bucket_table",
    "memories",
    "memory",
    "structure_header",
    "btreemap",
    "allocator",
    "free_list",
    "chunk",
    "free_chunk",
    "node",
    "overflow",
    "entries",
    "entry",
    "key",
    "value",
    "cell",
    "vec",
    "minheap",
    "log",
    "raw",
    "unknown",
    "empty",
    "unreachable",
    "orphan",
    "stable_save",
    "findings",
    "finding",
    "diagnosis",
    "group",
)


class Region:
    """A node of the decoded tree."""

    __slots__ = (
        "name",
        "kind",
        "ranges",
        "fields",
        "findings",
        "value",
        "memory_id",
        "virtual_start",
        "detail",
        "_factory",
        "_children",
        "child_count_hint",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        ranges: list[Range] | None = None,
        fields: list[Field] | None = None,
        findings: list[Finding] | None = None,
        value: Any = None,
        children: Iterable[Region] | Callable[[], Iterable[Region]] | None = None,
        memory_id: int | str | None = None,
        virtual_start: int | None = None,
        detail: str = "",
        child_count_hint: int | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.ranges = ranges or []
        self.fields = fields or []
        self.findings = findings or []
        self.value = value  # a decoded value object (see inspector.decode), or None
        self.memory_id = memory_id
        self.virtual_start = virtual_start
        self.detail = detail  # one line shown next to the name
        self.child_count_hint = child_count_hint
        self._factory: Callable[[], Iterable[Region]] | None
        self._children: list[Region] | None
        if children is None:
            self._factory, self._children = None, []
        elif callable(children):
            self._factory, self._children = children, None
        else:
            self._factory, self._children = None, list(children)

    @property
    def start(self) -> int | None:
        return self.ranges[0][0] if self.ranges else None

    @property
    def end(self) -> int | None:
        return self.ranges[-1][1] if self.ranges else None

    @property
    def has_children(self) -> bool:
        if self._children is not None:
            return bool(self._children)
        return True

    @property
    def children_loaded(self) -> bool:
        return self._children is not None

    def children(self) -> list[Region]:
        if self._children is None:
            factory, self._factory = self._factory, None
            self._children = list(factory()) if factory else []
        return self._children

    def add(self, child: Region) -> Region:
        self.children().append(child)
        return child

    def walk(self, max_depth: int = 64) -> Iterator[tuple[int, Region]]:
        """Pre-order walk of the *loaded* tree plus lazily loaded children, depth-bounded, iterative."""
        stack: list[tuple[int, Region]] = [(0, self)]
        while stack:
            depth, node = stack.pop()
            yield depth, node
            if depth < max_depth:
                for child in reversed(node.children()):
                    stack.append((depth + 1, child))

    def contains(self, pos: int) -> bool:
        return any(s <= pos < e for s, e in self.ranges)

    def __repr__(self) -> str:
        return f"Region({self.name!r}, {self.kind!r}, ranges={self.ranges[:2]}{'…' if len(self.ranges) > 2 else ''})"
