"""The ``BTreeMap`` class: a StableBTreeMap in one memory, built from the layers of this package
(headers, allocator, chunk grid, node reading, key layout, loading, iteration, the validated walk).
"""

from __future__ import annotations

from typing import Any

from inspector.memory import OutOfBounds
from inspector.structures.btreemap.walk import _Walk


class BTreeMap(_Walk):
    """A StableBTreeMap in one memory.

    Construction reads only the two headers; everything else is lazy. ``header`` and ``allocator`` are
    dicts with the keys of the fixtures' expected.json. ``key_fixed_size``: ``"auto"`` infers the v2
    key layout from the bytes, ``None`` forces length-prefixed keys, an int forces fixed-size keys.
    """

    @property
    def header(self) -> dict[str, Any]:
        kind = self.page_size_kind
        if kind in ("v1_derived", "v2_derived") and self.layout_version == 1:
            kind = "v2_derived" if self._has_v2_nodes() else "v1_derived"
        root_phys: int | None = None
        if self.root_addr:
            try:
                root_phys = self.mem.to_physical(self.root_addr)
            except OutOfBounds:
                root_phys = None
        return {
            "layout_version": self.layout_version,
            "in_memory_version": None if kind is None else (1 if kind == "v1_derived" else 2),
            "page_size_kind": kind,
            "page_size": self.page_size if self.magic_ok else None,
            "max_key_size": self.max_key_size,
            "max_value_size": self.max_value_size,
            "root_addr": self.root_addr,
            "root_physical_addr": root_phys,
            "length": self.length,
        }

    def _has_v2_nodes(self) -> bool:
        """Whether the tree holds v2 nodes (a migrated map): exact after walk(), a bounded probe before."""
        if self._walk_result is not None:
            return self._walk_result.nodes["v2_node_count"] > 0
        self._probe()
        if self._v2_seen:
            return True
        # The probe reads a bounded number of nodes; fall back to the allocated chunks, where any live
        # v2 node of a healthy map must be.
        if self._v2_in_grid is None:
            self._v2_in_grid = False
            for chunk in self.chunk_grid():
                if chunk.allocated and chunk.payload == "BTN":
                    try:
                        if self.mem.read(chunk.payload_addr + 3, 1) == b"\x02":
                            self._v2_in_grid = True
                            break
                    except OutOfBounds:
                        continue
        return self._v2_in_grid
