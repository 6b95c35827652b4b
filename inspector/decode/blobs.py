"""What an unrecognised memory holds: a length-prefixed blob (the quick_start upgrade pattern) or a
Candid message at its start."""

from __future__ import annotations

from typing import Any

from inspector.decode.valuetypes import LENGTH_PREFIX_HEAD_BYTES, detect_length_prefixed
from inspector.memory import Memory, OutOfBounds


def describe_unknown_memory(mem: Memory) -> dict[str, Any] | None:
    try:
        head = mem.read(0, min(mem.size, LENGTH_PREFIX_HEAD_BYTES))
    except OutOfBounds:
        return None
    if head[:4] == b"DIDL":
        from inspector.decode.candid import CandidError, decode_message

        try:
            msg = decode_message(mem.read(0, mem.size) if mem.size <= 1 << 24 else head)
        except (CandidError, OutOfBounds):
            return {"kind": "candid", "verified": False, "reason": "starts with DIDL but does not decode"}
        return {
            "kind": "candid",
            "verified": True,
            "length": msg.end,
            "reason": "a whole Candid message at offset 0",
        }
    lp = detect_length_prefixed(head, mem.size)
    if lp is None:
        return None
    return {
        "kind": "length_prefixed",
        "payload_kind": lp.kind,
        "length": lp.length,
        "verified": lp.verified,
        "reason": lp.reason,
    }
