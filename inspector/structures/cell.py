"""StableCell ("SCL", FORMAT.md §4): an 8-byte header and one encoded value."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inspector.layouts import CELL_HEADER, CELL_MAGIC
from inspector.memory import Memory, OutOfBounds
from inspector.structures.base import Element, Structure


class Cell(Structure):
    kind = "cell"
    magic = "SCL"

    def __init__(self, mem: Memory, memory_id: int | str) -> None:
        super().__init__(mem, memory_id)
        magic, self.layout_version, self.value_length = CELL_HEADER.unpack_from(mem.read(0, CELL_HEADER.size))
        if magic != CELL_MAGIC:
            self.finding("error", "structure_bad_magic", f"cell magic is {magic!r}, not b'SCL'", [(0, 3)])
        if self.layout_version != 1:
            self.finding(
                "error",
                "structure_bad_magic",
                f"cell layout version {self.layout_version} (expected 1)",
                [(3, 4)],
            )
        self.value_end = CELL_HEADER.size + self.value_length
        if self.value_end > mem.size:
            self.finding(
                "error",
                "cell_value_out_of_bounds",
                f"cell value of {self.value_length:,} bytes ends at {self.value_end:,}, past the memory's "
                f"{mem.size:,} bytes",
                [(4, 8)],
            )

    def header_json(self) -> dict[str, Any]:
        return {"layout_version": self.layout_version, "value_length": self.value_length}

    def count(self) -> int:
        return 1 if self.value_end <= self.mem.size else 0

    def elements(self, start: int = 0) -> Iterator[Element]:
        if start > 0 or self.value_end > self.mem.size:
            return
        try:
            value = self.mem.read(CELL_HEADER.size, self.value_length)
        except OutOfBounds:
            return
        yield Element(0, value, value_spans=[(CELL_HEADER.size, self.value_end)])
