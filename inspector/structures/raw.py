"""Memories that hold no ic-stable-structures structure: all zeros, or bytes we do not recognise."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inspector.memory import Memory, OutOfBounds
from inspector.structures.base import Element, Structure

HEAD_BYTES = 32  # shown for an unknown memory
ZERO_PROBE = 65_536  # an "empty" memory is zero in at least this prefix (see detect.py)


class RawContent(Structure):
    is_sequence = True

    def __init__(self, mem: Memory, memory_id: int | str, kind: str, note: str = "") -> None:
        super().__init__(mem, memory_id)
        self.kind = kind
        self.note = note
        try:
            self.head = mem.read(0, min(HEAD_BYTES, mem.size))
        except OutOfBounds:
            self.head = b""
        self.magic = self.head[:3].decode("latin-1") if kind == "unknown" else ""
        self.content: dict[str, Any] = {}

    def header_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size_bytes": self.mem.size}
        if self.kind == "unknown":
            out["first_bytes_hex"] = self.head.hex()
        if self.note:
            out["note"] = self.note
        if self.content:
            out["content"] = self.content
        return out

    def to_json(self, deep: bool = False) -> dict[str, Any]:
        out = super().to_json(deep)
        out["magic"] = self.magic
        return out

    def count(self) -> int:
        return 0

    def elements(self, start: int = 0) -> Iterator[Element]:
        return iter(())
