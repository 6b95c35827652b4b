"""The data inspector: what the bytes at one offset read as (ImHex / 010 Editor style).

Headless: a list of (label, text) rows for the bytes at a physical offset, plus the offset's addresses
(physical, ``mN:0x…`` virtual, ``bN:0x…`` bucket) from the offset index. Numbers are written one way
everywhere: grouped decimals, and hex for addresses and raw bytes.
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any

from inspector.decode.principal import MAX_PRINCIPAL_LEN, principal_to_text
from inspector.offset_index import address_forms

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis

MAX_LEB_BYTES = 10  # a u64 needs at most 10 LEB128 bytes; longer is not a number worth showing
# The last byte of a principal says its class (IC spec): opaque (canisters), self-authenticating
# (users), derived, anonymous. Only these make "it parses as a principal" plausible.
PRINCIPAL_CLASSES = frozenset({0x01, 0x02, 0x03, 0x04})


def read_leb128(data: bytes, signed: bool = False) -> tuple[int, int] | None:
    """(value, bytes used) of an (S)LEB128 number at the start of ``data``; None if it does not end."""
    # Imported here: the Candid decoder is only loaded when it is needed (its leb128 loop is the one copy).
    from inspector.decode.candid import leb128_prefix

    return leb128_prefix(data, signed, MAX_LEB_BYTES)


def _principal(data: bytes) -> str | None:
    """The principal the bytes hold, length-prefixed (Candid, most Storable impls) or bare 29/10 bytes."""
    if data:
        n = data[0]
        if 1 <= n <= MAX_PRINCIPAL_LEN and len(data) > n and data[n] in PRINCIPAL_CLASSES:
            return f"{principal_to_text(data[1 : n + 1])} (length-prefixed)"
    for n in (29, 10):
        if len(data) >= n and data[n - 1] in PRINCIPAL_CLASSES and data[n - 1] == (2 if n == 29 else 1):
            return principal_to_text(data[:n])
    return None


def _num(v: int) -> str:
    return f"{v:,}"


def inspect_bytes(data: bytes) -> list[tuple[str, str]]:
    """Rows for the bytes starting at the cursor (``data`` = the next up to 32 bytes)."""
    rows: list[tuple[str, str]] = []
    if not data:
        return rows
    rows.append(("u8", f"{_num(data[0])}  ({data[0]:#04x})"))
    for name, size, fmt in (("16", 2, "H"), ("32", 4, "I"), ("64", 8, "Q")):
        if len(data) >= size:
            le = struct.unpack_from("<" + fmt, data)[0]
            be = struct.unpack_from(">" + fmt, data)[0]
            rows.append((f"u{name} LE / BE", f"{_num(le)} / {_num(be)}"))
    if len(data) >= 8:
        rows.append(("i64 LE", _num(struct.unpack_from("<q", data)[0])))
        f = struct.unpack_from("<d", data)[0]
        rows.append(("f64 LE", f"{f:.17g}" if math.isfinite(f) else str(f)))
    for label, signed in (("LEB128", False), ("SLEB128", True)):
        leb = read_leb128(data, signed)
        rows.append((label, f"{_num(leb[0])}  ({leb[1]} byte{'s' if leb[1] != 1 else ''})" if leb else "—"))
    principal = _principal(data)
    if principal is not None:
        rows.append(("principal", principal))
    return rows


def inspect_at(analysis: Analysis, pos: int, width: int = 32) -> list[tuple[str, str]]:
    """Address rows then value rows for physical offset ``pos`` of the analysis' snapshot."""
    snap = analysis.snapshot
    if not 0 <= pos < snap.size:
        return []
    data = bytes(snap.buf[pos : min(snap.size, pos + width)])
    rows = [("address", " · ".join(address_forms(analysis, pos)))]
    return rows + inspect_bytes(data)


def hex_rows(data: bytes, width: int = 16, max_rows: int = 64) -> list[str]:
    """A blob as ``offset  hex bytes  │ ASCII`` rows (what the hex view shows), at most ``max_rows``."""
    rows = []
    for off in range(0, min(len(data), width * max_rows), width):
        chunk = data[off : off + width]
        hexes = " ".join(f"{b:02x}" for b in chunk).ljust(width * 3 - 1)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        rows.append(f"{off:06x}  {hexes} │ {text}")
    if len(data) > width * max_rows:
        rows.append(f"… {len(data) - width * max_rows:,} more bytes (export to see all)")
    return rows


def display_value(value: Any) -> str:
    """A field value the way every view writes it: grouped decimals, yes/no, "—" for nothing, hex for
    bytes, ranges as ``0x…–0x…``; never Python's ``None``/``False``/list reprs."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex(" ") if value else "(empty)"
    if isinstance(value, list | tuple):
        if len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return f"{value[0]:#x}–{value[1]:#x}"
        return ", ".join(display_value(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {display_value(v)}" for k, v in value.items()) or "(none)"
    return str(value)
