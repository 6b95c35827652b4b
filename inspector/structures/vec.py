"""StableVec ("SVC") and StableMinHeap ("SMH"), which share BaseVec's layout (FORMAT.md §5)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inspector.layouts import MINHEAP_MAGIC, VEC_DATA_OFFSET, VEC_HEADER, VEC_MAGIC, vec_slot_prefix_width
from inspector.memory import Memory, OutOfBounds
from inspector.structures.base import Element, Structure

# Read slots in batches so a million-element vec costs a few hundred reads, not a million.
_BATCH_BYTES = 1 << 20
# Zero-sized elements (``()``, max size 0) take no bytes, so no memory size bounds a claimed length (up
# to 2^64 - 1): list at most this many, like the Candid decoder's cap on zero-sized vector elements.
MAX_ZERO_SIZED_ELEMENTS = 1_000_000


class BaseVec(Structure):
    def __init__(self, mem: Memory, memory_id: int | str) -> None:
        super().__init__(mem, memory_id)
        (magic, self.layout_version, self.length, self.max_entry_size, fixed, reserved) = (
            VEC_HEADER.unpack_from(mem.read(0, VEC_HEADER.size))
        )
        expected = VEC_MAGIC if self.kind == "vec" else MINHEAP_MAGIC
        if magic != expected:
            self.finding(
                "error", "structure_bad_magic", f"{self.kind} magic is {magic!r}, not {expected!r}", [(0, 3)]
            )
        if self.layout_version != 1:
            self.finding(
                "error",
                "structure_bad_magic",
                f"{self.kind} layout version {self.layout_version} (expected 1)",
                [(3, 4)],
            )
        self.is_fixed_size = fixed == 1
        if fixed not in (0, 1):
            self.finding(
                "error", "structure_header_invalid", f"is_fixed_size byte is {fixed}, not 0 or 1", [(16, 17)]
            )
        if any(reserved):
            self.finding(
                "warning", "structure_header_invalid", "reserved header bytes 17..64 are not zero", [(17, 64)]
            )
        self.prefix_width = vec_slot_prefix_width(self.max_entry_size, self.is_fixed_size)
        self.slot_size = self.max_entry_size + self.prefix_width
        self.data_end = VEC_DATA_OFFSET + self.length * self.slot_size
        # Elements that fit in the memory; the rest are reported, not read.
        room = max(0, mem.size - VEC_DATA_OFFSET)
        if self.slot_size == 0:
            self.readable = min(self.length, MAX_ZERO_SIZED_ELEMENTS)
            if self.length > MAX_ZERO_SIZED_ELEMENTS:
                self.finding(
                    "warning",
                    "vec_out_of_bounds",
                    f"{self.length:,} zero-sized elements claimed; only the first {self.readable:,} are listed",
                    [(4, 12)],
                )
        else:
            self.readable = min(self.length, room // self.slot_size)
        if self.data_end > mem.size:
            self.finding(
                "error",
                "vec_out_of_bounds",
                f"{self.length:,} slots of {self.slot_size} bytes end at {self.data_end:,}, past the memory's "
                f"{mem.size:,} bytes; only {self.readable:,} can be read",
                [(4, 12)],
            )

    def header_json(self) -> dict[str, Any]:
        return {
            "layout_version": self.layout_version,
            "length": self.length,
            "max_entry_size": self.max_entry_size,
            "is_fixed_size": self.is_fixed_size,
            "slot_size": self.slot_size,
        }

    def count(self) -> int:
        return self.readable

    def elements(self, start: int = 0, stop: int | None = None) -> Iterator[Element]:
        """Elements ``start``..``stop`` (exclusive; default: to the end)."""
        slot, w = self.slot_size, self.prefix_width
        end = self.readable if stop is None else min(stop, self.readable)
        if slot == 0:
            for i in range(start, end):
                yield Element(i, b"", value_spans=[])
            return
        per_batch = max(1, _BATCH_BYTES // slot)
        i = start
        while i < end:
            n = min(per_batch, end - i)
            base = VEC_DATA_OFFSET + i * slot
            try:
                chunk = self.mem.read(base, n * slot)
            except OutOfBounds:
                return
            for j in range(n):
                off = j * slot
                if w:
                    length = int.from_bytes(chunk[off : off + w], "little")
                    if length > self.max_entry_size:
                        self.finding(
                            "error",
                            "vec_out_of_bounds",
                            f"element {i + j} has length {length} > max_entry_size {self.max_entry_size}",
                            [(base + off, base + off + w)],
                        )
                        length = self.max_entry_size
                    value = chunk[off + w : off + w + length]
                    span = (base + off + w, base + off + w + length)
                else:
                    value = chunk[off : off + slot]
                    span = (base + off, base + off + slot)
                yield Element(i + j, value, value_spans=[span])
            i += n


class Vec(BaseVec):
    kind = "vec"
    magic = "SVC"


class MinHeap(BaseVec):
    kind = "minheap"
    magic = "SMH"
