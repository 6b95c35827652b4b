"""The BTreeMap as a ``Structure``: the walker (``btreemap.py``) seen through the common interface, and
its region tree (header, allocator and free list, nodes, entries) for the views."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inspector.layouts import (
    ALLOCATOR_HEADER,
    ALLOCATOR_OFFSET,
    BTREE_HEADER,
    CAPACITY,
    CHUNK_HEADER_SIZE,
    AllocatorHeader,
    BTreeMapHeader,
)
from inspector.memory import Memory, OutOfBounds
from inspector.model import Field, Region
from inspector.structures.base import Element, Structure
from inspector.structures.btreemap import BTreeMap
from inspector.structures.btreemap.nodes import NodeError
from inspector.words import plural


class BTreeMapStructure(Structure):
    memory_id: int | str  # a map lives in one memory (only a Log pairs two)
    kind = "btreemap"
    magic = "BTR"
    is_sequence = False

    def __init__(self, mem: Memory, memory_id: int | str, options: dict[str, Any] | None = None) -> None:
        super().__init__(mem, memory_id)
        options = options or {}
        key_size = options.get("key_size", "auto")
        self.map = BTreeMap(mem, memory_id=memory_id, key_fixed_size=key_size)
        self._deep = False
        # Built once, so that every view sees the same Finding objects.
        self._header = list(self.map.header_findings())

    @property
    def findings(self) -> list[Any]:
        # Header findings are known at once; the full walk's findings once it has run (deep/check).
        if self._deep:
            return self.map.walk().findings
        return [*self._own, *self._header]

    @findings.setter
    def findings(self, value: list[Any]) -> None:
        self._own = value

    def deep(self) -> None:
        self.map.walk()
        self._deep = True

    def walker(self) -> BTreeMap:
        return self.map

    def header_json(self) -> dict[str, Any]:
        return self.map.header

    @property
    def is_set(self) -> bool:
        """A ``StableBTreeSet<K>`` (0.6.9+) is stored as a ``BTreeMap<K, ()>``: every value is zero-length
        (FORMAT.md §14.4). Judged from the sampled values; ``--deep`` confirms it over every entry."""
        cached = self.__dict__.get("_is_set")
        if cached is not None:
            return bool(cached)
        try:
            from inspector.decode.values import type_for
            from inspector.decode.valuetypes import UnitType

            guess = isinstance(type_for(self, "value"), UnitType)
        except Exception:  # a map too broken to sample is not called a set
            guess = False
        if guess and self._deep:
            guess = all(not v for _keys, values in self.map.iter_batches() for v in values)
            self.__dict__["_is_set"] = guess
        return guess

    def to_json(self, deep: bool = False) -> dict[str, Any]:
        out = super().to_json(deep)
        if deep:
            self.deep()
            result = self.map.walk()
            alloc = self.map.allocator
            out["allocator"] = {
                k: alloc[k]
                for k in ("allocation_size", "num_allocated_chunks", "free_list_head", "free_list_len")
            }
            out["nodes"] = dict(result.nodes)
            out["count"] = result.entry_count
            out["entries_sha256"] = result.entries_sha256
            out["key_layout"] = result.key_layout
        if self.is_set:
            out["set"] = True
        return out

    def count(self) -> int:
        if self._deep:
            return self.map.walk().entry_count
        if not self.map.root_addr:
            return 0
        # The header's length is a claim (up to 2^64 - 1), and views build one region per page of entries
        # from this count. Every entry lives in a node of at most CAPACITY entries, one node per chunk, so
        # the chunks that fit in the memory bound it.
        return min(self.map.length, CAPACITY * self.map._max_chunks)

    def elements(self, start: int = 0) -> Iterator[Element]:
        i = start
        for e in self.map.iter_entries(start):
            yield Element(
                i,
                e.value,
                e.key,
                source=f"node {e.node_addr:#x}",
                node_addr=e.node_addr,
                slot=e.index_in_node,
            )
            i += 1

    def element_spans(self, el: Element) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Virtual ranges of an element's key and value bytes (looked up in its node on demand)."""
        if el.node_addr is None:
            return [], []
        try:
            ne = self.map.node(el.node_addr).entries[el.slot]
        except (NodeError, IndexError):
            return [], []
        return list(ne.key_ranges), list(ne.value_ranges)

    # --- regions ---------------------------------------------------------------------------------------

    def region(self) -> Region:
        from inspector.regions import entries_region, header_fields

        mem = self.mem
        children: list[Region] = []
        try:
            hdr = BTREE_HEADER.parse_dict(mem.read(0, BTREE_HEADER.size))
            fields = header_fields(BTreeMapHeader, mem, 0, hdr)
            # The two u32 fields mean different things per layout version (FORMAT.md §3.1).
            names = (
                {"size_a": "page_size", "size_b": "page_size_marker"}
                if hdr["layout_version"] == 2
                else {"size_a": "max_key_size", "size_b": "max_value_size"}
            )
            for f in fields:
                f.name = names.get(f.name, f.name)
                if f.name == "page_size_marker":
                    f.display = f"{f.value:#x}"
            children.append(
                Region(
                    "BTR header",
                    "structure_header",
                    mem.physical_ranges(0, BTREE_HEADER.size),
                    fields=fields,
                    memory_id=_mid(self),
                )
            )
            alloc = ALLOCATOR_HEADER.parse_dict(mem.read(ALLOCATOR_OFFSET, ALLOCATOR_HEADER.size))
            children.append(
                Region(
                    "allocator (BTA)",
                    "allocator",
                    mem.physical_ranges(ALLOCATOR_OFFSET, ALLOCATOR_HEADER.size),
                    fields=header_fields(AllocatorHeader, mem, ALLOCATOR_OFFSET, alloc),
                    children=self._free_list_regions,
                    memory_id=_mid(self),
                    detail=f"{plural(alloc['num_allocated_chunks'], 'allocated chunk')} of {alloc['allocation_size']:,} bytes",
                )
            )
        except OutOfBounds:
            pass
        if self.map.root_addr:
            children.append(
                Region(
                    "nodes",
                    "group",
                    children=lambda: [self._node_region(self.map.root_addr, 0)],
                    memory_id=_mid(self),
                )
            )
        n = self.count()
        if n:
            children.append(entries_region(self, n))
        h = self.map.header
        detail = f"v{h['layout_version']}, page {h['page_size']}, {plural(h['length'], 'entry')}"
        if self.is_set:
            detail += _set_detail(self)
        else:
            detail += _types_detail(self)
        try:
            ranges = mem.physical_ranges(0, min(mem.size, ALLOCATOR_OFFSET + ALLOCATOR_HEADER.size))
        except OutOfBounds:
            ranges = []
        return Region(
            f"{'BTreeSet' if self.is_set else 'BTreeMap'} "
            f"{'raw memory' if self.memory_id == 'raw' else f'memory {self.memory_id}'}",
            "btreemap",
            ranges,
            fields=[Field(k, v) for k, v in h.items()],
            findings=list(self.findings),
            children=children,
            memory_id=_mid(self),
            detail=detail,
        )

    def _free_list_regions(self) -> Iterator[Region]:
        chain = self.map.allocator["free_list"]
        for i, addr in enumerate(chain[:10_000]):
            yield Region(
                f"free chunk {i} @ {addr:#x}" + (" (frontier)" if i == len(chain) - 1 else ""),
                "free_chunk",
                self.map.physical_span(addr, CHUNK_HEADER_SIZE),
                fields=[Field("addr", addr, display=f"{addr:#x}")],
                memory_id=_mid(self),
            )

    def _node_region(self, addr: int, depth: int) -> Region:
        from inspector.regions import element_region

        try:
            node = self.map.node(addr)
        except NodeError as exc:
            return Region(
                f"node @ {addr:#x} (invalid)", "node", self.map.physical_span(addr, 16), detail=str(exc)
            )

        def kids() -> Iterator[Region]:
            for i, ne in enumerate(node.entries):
                el = Element(
                    i, ne.value, ne.key, list(ne.key_ranges), list(ne.value_ranges), f"node {addr:#x}"
                )
                yield element_region(self, el)
            for ovf in node.overflows:
                yield Region(
                    f"overflow page @ {ovf:#x}",
                    "overflow",
                    self.map.physical_span(ovf - CHUNK_HEADER_SIZE, CHUNK_HEADER_SIZE + 11),
                )
            if depth < 64:
                for c in node.children:
                    yield self._node_region(c, depth + 1)

        return Region(
            f"{node.type} node @ {addr:#x}",
            "node",
            self.map.physical_ranges(node.ranges) or self.map.physical_span(addr, 7),
            fields=[
                Field("addr", addr, display=f"{addr:#x}"),
                Field("version", node.version),
                Field("type", node.type),
                Field("num_entries", node.num_entries),
                Field("children", [f"{c:#x}" for c in node.children]),
                Field("overflow_pages", [f"{o:#x}" for o in node.overflows]),
            ],
            children=kids,
            memory_id=_mid(self),
            virtual_start=addr,
            detail=f"v{node.version}, {plural(node.num_entries, 'entry')}"
            + (f", {plural(len(node.overflows), 'overflow page')}" if node.overflows else ""),
        )


def _types_detail(s: Structure) -> str:
    """ " · key text → value candid", the decoders in use (guessed or from the schema)."""
    try:
        from inspector.decode.values import type_for

        return f" · key {type_for(s, 'key')} → value {type_for(s, 'value')}"
    except Exception:  # a map too broken to sample has no types to show
        return ""


def _set_detail(s: Structure) -> str:
    """ " · BTreeSet<u64>": a set shows its key type only (its values are all ())."""
    try:
        from inspector.decode.values import type_for

        return f" · BTreeSet<{type_for(s, 'key')}>"
    except Exception:  # a set too broken to sample still says what it is
        return " · BTreeSet"


def _mid(s: Structure) -> int | str | None:
    return s.memory_id if not isinstance(s.memory_id, list) else s.memory_id[0]


def open_btreemap(
    mem: Memory, memory_id: int | str, options: dict[str, Any] | None = None
) -> BTreeMapStructure:
    return BTreeMapStructure(mem, memory_id, options)
