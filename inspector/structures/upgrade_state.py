"""Upgrade state written with ``ic_stable_structures::writer::Writer`` (the quick-start pattern, FORMAT.md §14.5).

``pre_upgrade`` writes a u32 little-endian length at virtual offset 0 of a dedicated memory, then the
payload (CBOR via ciborium in the example, or a Candid message); ``post_upgrade`` reads exactly that
many bytes back. Bytes after ``4 + length`` are stale leftovers of earlier, longer saves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from inspector.memory import Memory, OutOfBounds
from inspector.structures.base import Element, Structure

PREFIX = 4


class UpgradeState(Structure):
    kind = "upgrade_state"
    magic = ""
    is_sequence = True

    def __init__(self, mem: Memory, memory_id: int | str, length: int, fmt: str, verified: bool, reason: str):
        super().__init__(mem, memory_id)
        self.length = length
        self.format = fmt  # "cbor" | "candid" | "unknown"
        self.verified = verified
        self.reason = reason

    @property
    def complete(self) -> bool:
        return PREFIX + self.length <= self.mem.size

    def header_json(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "format": self.format,
            "length_prefix": "u32 little-endian at virtual offset 0",
            "verified": self.verified,
            "evidence": self.reason,
        }

    def to_json(self, deep: bool = False) -> dict[str, Any]:
        out = super().to_json(deep)
        out["length"] = self.length
        out["format"] = self.format
        out["count"] = 1 if self.complete else 0
        out["payload_range_virtual"] = [PREFIX, PREFIX + self.length]
        return out

    def count(self) -> int:
        return 1 if self.complete else 0

    def payload(self) -> bytes:
        return self.mem.read(PREFIX, self.length)

    def elements(self, start: int = 0) -> Iterator[Element]:
        if start > 0 or not self.complete:
            return
        try:
            data = self.payload()
        except OutOfBounds:
            return
        yield Element(0, data, None, [], [(PREFIX, PREFIX + self.length)], source="upgrade state")


def detect_upgrade_state(mem: Memory, memory_id: int | str) -> tuple[UpgradeState | None, str | None]:
    """An UpgradeState when the memory starts with a recognisable u32 LE length + payload.

    Returns ``(state, problem)``: ``problem`` is a sentence when the length prefix is overlong (runs past
    the memory) although the payload start looks like CBOR or Candid (a truncated save).
    """
    from inspector.decode.valuetypes import LENGTH_PREFIX_HEAD_BYTES, detect_length_prefixed

    try:
        head = mem.read(0, min(mem.size, LENGTH_PREFIX_HEAD_BYTES))
    except OutOfBounds:
        return None, None
    lp = detect_length_prefixed(head, mem.size)
    if lp is not None:
        if lp.kind == "unknown" and not lp.verified:
            # "Unknown" payloads followed by zeros are weak evidence: shown, but as format "unknown".
            pass
        return UpgradeState(mem, memory_id, lp.length, lp.kind, lp.verified, lp.reason), None
    if len(head) < 8:
        return None, None
    length = int.from_bytes(head[:4], "little")
    if not length or PREFIX + length <= mem.size:
        return None, None
    fmt = "candid" if head[4:8] == b"DIDL" else "cbor" if _cbor_prefix(head[4:]) else ""
    if fmt:
        st = UpgradeState(mem, memory_id, length, fmt, False, "length prefix runs past the memory")
        return st, (
            f"memory {memory_id} starts with a u32 length prefix of {length:,} bytes followed by what looks "
            f"like {fmt.upper() if fmt == 'cbor' else 'Candid'}, but the memory is only {mem.size:,} bytes: "
            "the upgrade state is truncated (post_upgrade would fail to read it)"
        )
    return None, None


def _cbor_prefix(data: bytes) -> bool:
    """Whether ``data`` is the start of one structured CBOR item (a map or array) cut off by its end.

    A prefix that parses cleanly up to the last byte counts, and so does one whole item followed by zeros
    (a length prefix that claims more than the item): random bytes fail long before either.
    """
    if len(data) < 64 or (data[0] >> 5) not in (4, 5):
        return False
    from inspector.decode.cbor import CborError, CborTruncated, decode_cbor

    try:
        _value, end = decode_cbor(data)
    except CborTruncated:
        return True
    except CborError:
        return False
    # A whole item, then the zeros of a fresh memory: the prefix claims more than the item holds.
    return end >= 8 and not any(data[end : end + 16]) and len(data) >= end + 16
