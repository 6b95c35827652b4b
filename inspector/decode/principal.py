"""Internet Computer principal ids: raw bytes <-> textual form.

Textual form (IC interface specification, "Textual representation of principals"):
``grouped(base32_lowercase_nopad(crc32_be(raw) || raw))`` where ``grouped`` inserts a ``-`` after every
5 characters. Examples: the management canister (empty principal) is ``aaaaa-aa``; the anonymous
principal ``04`` is ``2vxsx-fae``.

A principal has at most 29 raw bytes (``Principal::MAX_LENGTH_IN_BYTES``); both directions reject longer
input with :class:`ValueError`.
"""

from __future__ import annotations

import base64
import binascii
import zlib

__all__ = ["MAX_PRINCIPAL_LEN", "principal_from_text", "principal_to_text"]

MAX_PRINCIPAL_LEN = 29


def principal_to_text(raw: bytes) -> str:
    """Textual form of a raw principal. Raises ValueError if ``raw`` is longer than 29 bytes."""
    raw = bytes(raw)
    if len(raw) > MAX_PRINCIPAL_LEN:
        raise ValueError(f"principal is {len(raw)} bytes; at most {MAX_PRINCIPAL_LEN} allowed")
    crc = zlib.crc32(raw).to_bytes(4, "big")
    b32 = base64.b32encode(crc + raw).decode("ascii").lower().rstrip("=")
    return "-".join(b32[i : i + 5] for i in range(0, len(b32), 5))


def principal_from_text(text: str) -> bytes:
    """Raw bytes of a textual principal. Accepts upper or lower case but requires the canonical grouping
    (dashes after every 5 characters) and a matching CRC32. Raises ValueError otherwise."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("principal text must be an ASCII string")
    lowered = text.strip().lower()
    compact = lowered.replace("-", "")
    if len(compact) < 7 or len(compact) > 56:
        # 4 CRC bytes need 7 base32 chars; 4 + 29 bytes need 53.
        raise ValueError(f"principal text has a wrong length: {text!r}")
    padded = compact.upper() + "=" * (-len(compact) % 8)
    try:
        decoded = base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"principal text is not valid base32: {text!r}") from exc
    if len(decoded) < 4:
        raise ValueError(f"principal text too short: {text!r}")
    crc, raw = decoded[:4], decoded[4:]
    if len(raw) > MAX_PRINCIPAL_LEN:
        raise ValueError(f"principal is {len(raw)} bytes; at most {MAX_PRINCIPAL_LEN} allowed")
    if zlib.crc32(raw).to_bytes(4, "big") != crc:
        raise ValueError(f"principal text has a bad checksum: {text!r}")
    if principal_to_text(raw) != lowered:
        raise ValueError(f"principal text is not in canonical form: {text!r}")
    return raw
