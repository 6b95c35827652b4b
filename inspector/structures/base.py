"""What every structure decoder shares: an element with its byte spans, and the structure interface."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from inspector.memory import Memory, OutOfBounds, Range
from inspector.model import Finding, Region

if TYPE_CHECKING:
    from inspector.structures.btreemap import BTreeMap

# A structure's memory id: a MemoryId (int), "raw" for a raw snapshot, "?bN" for a reconstructed memory
# whose id is unknown, or [index id, data id] for a Log over two memories.
StructureId = int | str | list[int]


class HasMemoryId(Protocol):
    memory_id: Any  # a StructureId (Any: the diff's StructureDiff keeps whatever its structures had)


_T = TypeVar("_T", bound=HasMemoryId)


def find_by_memory_id(items: Iterable[_T], memory_id: StructureId) -> _T | None:
    """The first item with this memory id; a Log over two memories ([index, data]) answers to either."""
    for item in items:
        mid = item.memory_id
        if mid == memory_id or (isinstance(mid, list) and memory_id in mid):
            return item
    return None


@dataclass
class Element:
    """One entry of a structure: a map entry (key + value) or a sequence element (value only).

    Spans are *virtual* ranges in the structure's memory; ``Structure.physical`` maps them for views.
    """

    index: int
    value: bytes
    key: bytes | None = None
    key_spans: list[Range] = field(default_factory=list)
    value_spans: list[Range] = field(default_factory=list)
    source: str = ""  # where it came from (e.g. "node 0x74"), for salvage and the TUI
    node_addr: int | None = None  # B-tree entries: the node holding it, and its slot in that node
    slot: int = 0
    # When ``value`` holds only the head of a longer value (a diff listing reads no more than it
    # keeps), the value's full length.
    value_len: int | None = None


class Structure:
    """A decoded structure at virtual offset 0 of a memory (or physical 0 of a raw snapshot).

    This is the one typed interface the analysis, the diff and the views use: the optional capabilities
    (a second memory, a B-tree walker, a region builder, per-element spans) are declared here with neutral
    defaults, so callers ask the structure instead of probing it with ``getattr``.
    """

    kind: str = "unknown"
    magic: str = ""
    is_sequence: bool = True
    # A Log's two memories; element values live in ``value_mem`` when it is set (else in ``mem``).
    index_mem: Memory | None = None
    data_mem: Memory | None = None
    value_mem: Memory | None = None
    head: bytes = b""  # raw content: its first bytes, as shown
    content: dict[str, Any] | None = None  # raw content: what its bytes look like (detect.py)

    def __init__(self, mem: Memory, memory_id: StructureId) -> None:
        self.mem = mem
        self.memory_id = memory_id
        self.findings: list[Finding] = []
        # Decoding choices from the session: this memory's schema settings and Candid field names.
        self.settings: dict[str, Any] = {}
        self.names: dict[int, str] = {}

    @property
    def physical_start(self) -> int | None:
        try:
            return self.mem.to_physical(0)
        except OutOfBounds:  # an empty memory, or one whose buckets the file does not hold
            return None

    def header_json(self) -> dict[str, Any]:
        return {}

    def count(self) -> int:
        return 0

    def deep(self) -> None:
        """Walk the whole structure now; structures decoded whole when opened have nothing left to do."""

    def walker(self) -> BTreeMap | None:
        """The B-tree walker behind a BTreeMap (its raw entry stream, allocator, nodes); None otherwise."""
        return None

    def region(self) -> Region | None:
        """The structure's own region tree when it builds one (B-trees); None: the generic one is used."""
        return None

    def element_spans(self, el: Element) -> tuple[list[Range], list[Range]]:
        """Virtual ranges of an element's key and value bytes; B-trees look them up in the node."""
        return el.key_spans, el.value_spans

    def elements(self, start: int = 0) -> Iterator[Element]:
        return iter(())

    def physical(self, spans: list[Range]) -> list[Range]:
        """Virtual spans → physical ranges in the snapshot file (for highlighting)."""
        out: list[Range] = []
        for s, e in spans:
            try:
                out.extend(self.mem.physical_ranges(s, e - s))
            except OutOfBounds:
                continue
        return out

    def finding(self, severity: str, code: str, message: str, spans: list[Range] | None = None) -> Finding:
        f = Finding(severity, code, message, self.physical(spans or []), memory_id=_json_id(self.memory_id))
        self.findings.append(f)
        return f

    def to_json(self, deep: bool = False) -> dict[str, Any]:
        return {
            "memory_id": self.memory_id,
            "kind": self.kind,
            "physical_start": self.physical_start,
            "magic": self.magic,
            "header": self.header_json(),
        }


def _json_id(memory_id: StructureId) -> int | str | None:
    if isinstance(memory_id, list):
        return memory_id[0] if memory_id else None
    return memory_id
