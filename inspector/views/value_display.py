"""Decoded values as the TUI shows them, whatever the core hands over, plus the lock for core calls.

Regions carry ``value`` as a ``ValueRef`` (decoded on demand by ``inspector.decode.values``), but a
region builder may also store an already decoded object, raw bytes or a plain value. This module
turns any of those into one shape, and never raises: a decoder that is missing or fails falls back
to the bytes in hex, with the reason.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from inspector.safe_text import DISPLAY_LIMIT, bytes_preview, cap_text, escape_control

# The decoded text a view keeps of one value (the display caps it further; exports also carry the value).
SHOWN_LIMIT = 16 * DISPLAY_LIMIT

# The core's lazy structures (region factories, node caches, decoders) were written for one thread.
# Every call into them from a TUI worker thread holds this lock, so two workers never interleave.
CORE_LOCK = threading.RLock()


@dataclass
class Shown:
    text: str  # one line, already escaped
    value: Any  # JSON-able
    ok: bool = True
    error: str | None = None
    data: bytes | None = None  # the stored bytes, when known
    decoder: str = ""


def _data_of(ref: Any) -> bytes | None:
    data = getattr(ref, "data", None)
    return bytes(data) if isinstance(data, bytes | bytearray | memoryview) else None


def _fallback(data: bytes | None, reason: str | None) -> Shown:
    if data is None:
        return Shown(text="", value=None, ok=reason is None, error=reason)
    return Shown(text=bytes_preview(data, 64), value=data.hex(), ok=reason is None, error=reason, data=data)


def show_value(ref: Any) -> Shown | None:
    """The decoded form of a region's ``value`` (None when the region has none)."""
    if ref is None:
        return None
    if isinstance(ref, bytes | bytearray | memoryview):
        return _fallback(bytes(ref), None)
    data = _data_of(ref)
    decoded: Any = ref
    if hasattr(ref, "decoded"):
        try:
            with CORE_LOCK:
                decoded = ref.decoded()
        except Exception as exc:  # a decoder bug must not take the UI down
            return _fallback(data, f"decoder failed: {type(exc).__name__}: {exc}")
    if hasattr(decoded, "text"):
        # Newlines kept: a Candid value or type table renders over several lines (the details panel
        # shows it as such; one-line views shorten it themselves).
        # Capped before escaping (a Python loop on non-ASCII text): a 15 MB value costs nothing here.
        text = escape_control(cap_text(str(decoded.text), SHOWN_LIMIT), single_line=False)
        err = getattr(decoded, "error", None)
        return Shown(
            text=text,
            value=getattr(decoded, "value", None),
            ok=bool(getattr(decoded, "ok", True)),
            error=None if err is None else str(err),
            data=data,
            decoder=_decoder_name(ref),
        )
    if isinstance(decoded, str | int | float | bool):
        return Shown(text=escape_control(cap_text(str(decoded), SHOWN_LIMIT)), value=decoded, data=data)
    return Shown(text=escape_control(cap_text(repr(decoded), SHOWN_LIMIT)), value=None, data=data)


def _decoder_name(ref: Any) -> str:
    """The decoder the user chose for this key/value's structure ("auto" when the core guesses)."""
    structure = getattr(ref, "structure", None)
    role = getattr(ref, "role", None)
    if structure is None or role not in ("key", "value"):
        return ""
    settings = getattr(structure, "settings", None) or {}
    return escape_control(str(settings.get(role, "auto")))


def short_text(text: str, limit: int = 48) -> str:
    text = escape_control(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
