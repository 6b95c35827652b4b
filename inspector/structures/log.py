"""StableLog: an index memory ("GLI") of cumulative end offsets and a data memory ("GLD") (FORMAT.md §6)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from inspector.layouts import (
    LOG_DATA_ENTRIES_OFFSET,
    LOG_DATA_HEADER,
    LOG_DATA_MAGIC,
    LOG_INDEX_ENTRIES_OFFSET,
    LOG_INDEX_HEADER,
    LOG_INDEX_MAGIC,
)
from inspector.memory import Memory, OutOfBounds
from inspector.structures.base import Element, Structure

_BATCH = 65_536  # index entries per read


class Log(Structure):
    """A log: both halves when paired, or one half on its own (``data_mem`` or ``index_mem`` None)."""

    kind = "log"

    def __init__(
        self,
        index_mem: Memory | None,
        data_mem: Memory | None,
        memory_id: int | str | list[int],
    ) -> None:
        super().__init__(index_mem or data_mem, memory_id)  # type: ignore[arg-type]
        self.index_mem = index_mem
        self.data_mem = data_mem
        self.value_mem = data_mem  # element spans are in the data memory
        self.length = 0
        self.layout_version = 0
        self.readable = 0
        if index_mem is not None:
            magic, self.layout_version, _reserved, self.length = LOG_INDEX_HEADER.unpack_from(
                index_mem.read(0, LOG_INDEX_HEADER.size)
            )
            if magic != LOG_INDEX_MAGIC:
                self.finding(
                    "error", "structure_bad_magic", f"log index magic is {magic!r}, not b'GLI'", [(0, 3)]
                )
            room = max(0, (index_mem.size - LOG_INDEX_ENTRIES_OFFSET) // 8)
            self.readable = min(self.length, room)
            if self.length > room:
                self.finding(
                    "error",
                    "log_index_invalid",
                    f"the index claims {self.length:,} entries but its memory holds at most {room:,}",
                    [(32, 40)],
                )
        if data_mem is not None:
            dmagic, dversion, _ = LOG_DATA_HEADER.unpack_from(data_mem.read(0, LOG_DATA_HEADER.size))
            if index_mem is None:
                self.layout_version = dversion
            if dmagic != LOG_DATA_MAGIC:
                self.finding("error", "structure_bad_magic", f"log data magic is {dmagic!r}, not b'GLD'")
        self.magic = "GLI" if index_mem is not None else "GLD"
        if index_mem is not None and data_mem is not None:
            self._check_index()

    @property
    def role(self) -> str:
        if self.index_mem is not None and self.data_mem is not None:
            return "pair"
        return "index" if self.index_mem is not None else "data"

    @property
    def physical_start(self) -> int | None:
        return self.mem.to_physical(0) if self.mem.size else None

    def _ends(self, start: int, n: int) -> tuple[int, ...]:
        assert self.index_mem is not None
        raw = self.index_mem.read(LOG_INDEX_ENTRIES_OFFSET + 8 * start, 8 * n)
        return struct.unpack(f"<{n}Q", raw)

    def _check_index(self) -> None:
        assert self.data_mem is not None
        data_room = self.data_mem.size - LOG_DATA_ENTRIES_OFFSET
        prev = 0
        i = 0
        while i < self.readable:
            n = min(_BATCH, self.readable - i)
            for j, end in enumerate(self._ends(i, n)):
                if end < prev:
                    self.finding(
                        "error",
                        "log_index_invalid",
                        f"index entry {i + j} ends at {end:,}, before the previous entry's end {prev:,}",
                    )
                    self.readable = i + j
                    return
                if end > data_room:
                    self.finding(
                        "error",
                        "log_index_invalid",
                        f"index entry {i + j} ends at {end:,}, past the data memory's {data_room:,} bytes of room",
                    )
                    self.readable = i + j
                    return
                prev = end
            i += n

    def header_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layout_version": self.layout_version, "length": self.length}
        if self.index_mem is not None:
            out["index_size_bytes"] = LOG_INDEX_ENTRIES_OFFSET + 8 * self.length
        if self.index_mem is not None and self.data_mem is not None and self.readable:
            out["data_size_bytes"] = LOG_DATA_ENTRIES_OFFSET + self._ends(self.readable - 1, 1)[0]
        if self.role != "pair":
            out["role"] = self.role
        return out

    def to_json(self, deep: bool = False) -> dict[str, Any]:
        out = super().to_json(deep)
        if self.index_mem is not None and self.data_mem is not None:
            out["index_physical_start"] = self.index_mem.to_physical(0)
            out["data_physical_start"] = self.data_mem.to_physical(0)
        out["magic"] = {"index": "GLI", "data": "GLD"} if self.role == "pair" else self.magic
        return out

    def count(self) -> int:
        return self.readable if self.data_mem is not None else 0

    def elements(self, start: int = 0, stop: int | None = None) -> Iterator[Element]:
        """Entries ``start``..``stop`` (exclusive; default: to the end)."""
        if self.index_mem is None or self.data_mem is None:
            return
        end_i = self.readable if stop is None else min(stop, self.readable)
        prev = self._ends(start - 1, 1)[0] if start > 0 else 0
        i = start
        while i < end_i:
            n = min(_BATCH, end_i - i)
            for j, end in enumerate(self._ends(i, n)):
                a, b = LOG_DATA_ENTRIES_OFFSET + prev, LOG_DATA_ENTRIES_OFFSET + end
                try:
                    value = self.data_mem.read(a, b - a)
                except OutOfBounds:
                    return
                yield Element(i + j, value, value_spans=[(a, b)])
                prev = end
            i += n
