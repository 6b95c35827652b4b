"""Addresses the user types and reads: go-to expressions, cursor descriptions, key search matching.

Pure functions (no Textual), so they are tested directly and reused by the dialogs and status bar.
"""

from __future__ import annotations

import re
from typing import Any

from inspector.errors import UsageProblem
from inspector.layouts import (
    WASM_PAGE_SIZE,
)
from inspector.memory import OutOfBounds
from inspector.offset_index import describe_position, owner_at

__all__ = ["GOTO_HELP", "GotoError", "describe_position", "key_matches", "owner_at", "parse_goto"]

GOTO_HELP = (
    "0x2f14 or 12068 (physical) · m4:0x2f14 (virtual offset in memory 4) · b3 or b3:0x10 (bucket 3) · "
    "p5 (page 5) · +0x40 / -16 (relative to the cursor)"
)


class GotoError(UsageProblem, ValueError):
    """An address the user typed that does not parse or points outside the snapshot."""


def parse_number(text: str) -> int:
    t = text.strip().lower().replace("_", "").replace(",", "")
    if not t:
        raise GotoError("empty number")
    try:
        if t.startswith("0x"):
            return int(t, 16)
        if t.endswith("h") and re.fullmatch(r"[0-9a-f]+h", t):
            return int(t[:-1], 16)
        return int(t, 10)
    except ValueError:
        raise GotoError(f"not a number: {text.strip()!r}") from None


def parse_goto(text: str, analysis: Any, cursor: int = 0) -> int:
    """Turn a go-to expression into a physical offset inside the snapshot (see ``GOTO_HELP``)."""
    t = text.strip().lower()
    size = analysis.snapshot.size
    if not t:
        raise GotoError("type an offset, e.g. 0x10000 or m4:0x2f14")
    if t[0] in "+-":
        pos = cursor + (1 if t[0] == "+" else -1) * parse_number(t[1:])
    elif m := re.fullmatch(r"(?:m|mem|memory)\s*(\d+(?:/\d+)*|raw)\s*:\s*(.+)", t):
        pos = _virtual_to_physical(analysis, m.group(1), parse_number(m.group(2)))
    elif m := re.fullmatch(r"raw\s*:\s*(.+)", t):
        pos = parse_number(m.group(1))
    elif m := re.fullmatch(r"(?:b|bucket)\s*(\d+)\s*(?::\s*(.+))?", t):
        mm = analysis.mm
        if not mm.present or not mm.bucket_size_bytes:
            raise GotoError("this snapshot has no MemoryManager, so it has no buckets")
        bucket = int(m.group(1))
        within = parse_number(m.group(2)) if m.group(2) else 0
        if within >= mm.bucket_size_bytes:
            raise GotoError(f"offset {within:#x} is past the end of a {mm.bucket_size_bytes:#x}-byte bucket")
        pos = mm.buckets_start + bucket * mm.bucket_size_bytes + within
    elif m := re.fullmatch(r"(?:p|page)\s*(\d+)", t):
        pos = int(m.group(1)) * WASM_PAGE_SIZE
    else:
        pos = parse_number(t)
    if not 0 <= pos < max(size, 1) or size == 0:
        raise GotoError(f"{pos:#x} is outside the snapshot (0x0–{max(size - 1, 0):#x})")
    return pos


def _virtual_to_physical(analysis: Any, mid_text: str, offset: int) -> int:
    # "5/1": memory 1 of the manager nested in memory 5 (ids as the tree and the CLI write them).
    mid: int | str = mid_text if mid_text == "raw" or "/" in mid_text else int(mid_text)
    mem = analysis.memory(mid)
    if mem is None:
        known = ", ".join(str(m) for m, _ in analysis.memory_refs) or "none"
        raise GotoError(f"memory {mid} is not in this snapshot (memories: {known})")
    if offset >= mem.size:
        raise GotoError(f"m{mid}:{offset:#x} is past the end of memory {mid} ({mem.size:#x} bytes)")
    try:
        return int(mem.to_physical(offset))
    except OutOfBounds as exc:
        raise GotoError(str(exc)) from None


def key_matches(query: str, text: str, key: bytes | None) -> bool:
    """Whether a key matches a find query: its decoded text contains it, or its hex starts with it."""
    q = query.strip()
    if not q:
        return False
    if q.lower() in text.lower():
        return True
    if key is None:
        return False
    h = q.lower().removeprefix("0x").replace(" ", "")
    return bool(re.fullmatch(r"[0-9a-f]+", h)) and key.hex().startswith(h)
