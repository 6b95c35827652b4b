"""Decoded nodes: loaded with the key layout, cached, and listed from the root."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inspector.memory import OutOfBounds
from inspector.structures.btreemap.headers import NODE_CACHE_SIZE, KeyLayout
from inspector.structures.btreemap.key_layout import _KeyLayout
from inspector.structures.btreemap.nodes import (
    INTERNAL,
    Node,
    NodeEntry,
    NodeError,
    logical_ranges,
    overflow_pages_needed,
    parse_v1_body,
    parse_v2_body,
    v1_offsets,
    v2_spans,
)


class _NodeLoading(_KeyLayout):
    """Decoded nodes: loaded with the key layout, cached, and listed from the root."""

    def _load(self, addr: int, allow_free: bool = False) -> tuple[Any, ...]:
        """Parse a node for the walk: (version, type, k, children, keys, values, overflows, stream_len,
        common key length or -1, common value length or -1, slot-overflowing v1 entry indexes)."""
        nver, ntype, k, buf, base, end, overflows = self._read_node(addr, allow_free)
        if nver == 2:
            kfix = self._kfix
            if kfix is None:
                kfix = self._resolve_key_layout(addr)
            children, keys, values, n, klen, vlen = parse_v2_body(buf, base, end, ntype == INTERNAL, k, kfix)
            if overflows:
                needed = overflow_pages_needed(n, self.page_size)
                if needed != len(overflows):
                    raise NodeError(
                        f"node {addr:#x} has {len(overflows)} overflow pages but its {n}-byte stream needs "
                        f"{needed}",
                        addr=addr,
                    )
            return 2, ntype, k, children, keys, values, overflows, n, klen, vlen, ()
        mk, mv = self.max_key_size or 0, self.max_value_size or 0
        children, keys, values, over = parse_v1_body(buf, base, end, ntype == INTERNAL, k, mk, mv)
        if over:
            self._reread_slot_overflow(addr, buf, base, keys, values, over)
        n = 7 + k * (8 + mk + mv) + (8 * (k + 1) if ntype == INTERNAL else 0)
        return 1, ntype, k, children, keys, values, [], n, -1, -1, tuple(over)

    # --- nodes -------------------------------------------------------------------------------------------

    def node(self, addr: int) -> Node:
        """Parse one node with its entries and where their bytes are. Raises NodeError if invalid."""
        cached = self._node_cache.get(addr)
        if cached is not None:
            self._node_cache.move_to_end(addr)
            return cached
        node = self._build_node(addr)
        self._node_cache[addr] = node
        if len(self._node_cache) > NODE_CACHE_SIZE:
            self._node_cache.popitem(last=False)
        return node

    def _unreachable_node(self, addr: int, allocated: bool) -> Node:
        # A node in a chunk marked free is only ever parsed on explicit request and is not cached, so
        # node() keeps refusing it.
        return self.node(addr) if allocated else self._build_node(addr, allow_free=True)

    def _build_node(self, addr: int, allow_free: bool = False) -> Node:
        if not self.walkable:
            raise NodeError("the map header is not usable", addr=addr)
        ver, ntype, k, children, keys, values, overflows, n, _kl, _vl, over = self._load(addr, allow_free)
        page = self.page_size
        entries: list[NodeEntry] = []
        if ver == 2:
            kfix = self._kfix or 0
            kspans, vspans = v2_spans(ntype == INTERNAL, keys, values, kfix)
            for key, value, ks, vs in zip(keys, values, kspans, vspans, strict=True):
                entries.append(
                    NodeEntry(
                        key,
                        value,
                        ks,
                        vs,
                        logical_ranges(addr, overflows, page, ks[0], ks[1]),
                        logical_ranges(addr, overflows, page, vs[0], vs[1]),
                    )
                )
            layout: KeyLayout = "prefixed" if kfix == 0 else kfix
        else:
            mk, mv = self.max_key_size or 0, self.max_value_size or 0
            for i, (key, value) in enumerate(zip(keys, values, strict=True)):
                koff, voff = v1_offsets(i, mk, mv)
                entries.append(
                    NodeEntry(
                        key,
                        value,
                        (koff, len(key)),
                        (voff, len(value)),
                        [(addr + koff, addr + koff + len(key))] if key else [],
                        [(addr + voff, addr + voff + len(value))] if value else [],
                        i in over,
                    )
                )
            layout = "prefixed"
        try:
            phys: int | None = self.mem.to_physical(addr)
        except OutOfBounds:
            phys = None
        ranges = [(addr, min(addr + page, self._size))] + [(o, o + page) for o in overflows]
        return Node(
            addr,
            phys,
            ver,
            "internal" if ntype == INTERNAL else "leaf",
            k,
            list(children),
            list(overflows),
            entries,
            page,
            n,
            layout,
            ranges,
        )

    def iter_nodes(self) -> Iterator[tuple[int, Node]]:
        """(depth, node) in pre-order from the root, children left to right; invalid nodes are skipped
        (``walk()`` reports them) and each node is visited once even if the bytes form a cycle."""
        if not self.walkable or not self.root_addr:
            return
        seen: set[int] = set()
        stack: list[tuple[int, int]] = [(self.root_addr, 0)]
        while stack:
            addr, depth = stack.pop()
            if addr in seen:
                continue
            seen.add(addr)
            try:
                node = self.node(addr)
            except NodeError:
                continue
            yield depth, node
            stack.extend((c, depth + 1) for c in reversed(node.children))
