"""Byte-level rules of ic-stable-structures ``Storable`` encodings (FORMAT.md §7).

This module holds the building blocks; :mod:`inspector.decode.valuetypes` turns them into decodable type
expressions. Facts used (src/storable.rs, src/storable/tuples.rs @v0.5.6/@v0.6.0/@v0.7.2):

* Integers u8…u128 and f32/f64 are **big-endian** (``to_be_bytes``); bool is one byte 0/1.
* ``String`` is raw UTF-8, ``Vec<u8>``/``Blob<N>``/``[u8; N]`` raw bytes, ``()`` zero bytes,
  ``Principal`` its raw bytes (≤ 29).
* ``Option<T>``: ``Some(t)`` = t's bytes + ``01``; ``None`` = the single byte ``00``. Bound: T.max + 1,
  T's fixed flag (upstream quirk: a ``None`` is still one byte even when T is "fixed").
* Bounded 2-tuple ``(A, B)``: A's bytes zero-padded to A.max, B's bytes zero-padded to B.max, then
  size(A) and size(B) big-endian, each 0 bytes wide if that member is fixed-size, else 1 (max ≤ 255),
  2 (max ≤ 65 535) or 4 bytes. Total length is always exactly the tuple's max size. A 2-tuple with an
  unbounded member cannot be encoded by any release up to v0.7.2 (``todo!()``).
* 3-tuple ``(A, B, C)`` (v0.6.4+): if A and B are both fixed-size, A‖B‖C. Otherwise a "size-lengths"
  byte (2 bits per member, value = width − 1, A in bits 3..2, B in bits 1..0, width chosen from the
  *actual* length: 1/2/4), then for A: [BE size if A is not fixed] + bytes, the same for B, then C's
  bytes (C takes its fixed size, or the rest).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from inspector.errors import BadFormat
from inspector.safe_text import bytes_preview, escape_control

__all__ = [
    "Bound",
    "Decoded",
    "StorableError",
    "UNBOUNDED",
    "bounded_size_width",
    "decode_bool",
    "decode_float",
    "decode_option",
    "decode_text",
    "decode_uint",
    "encode_tuple2",
    "encode_tuple3",
    "option_bound",
    "size_width",
    "split_tuple2",
    "split_tuple3",
    "tuple2_bound",
    "tuple3_bound",
    "uint_json",
]

FAILURE_PREVIEW_BYTES = 32


class StorableError(BadFormat, ValueError):
    """Bytes that do not follow a Storable encoding."""


@dataclass(frozen=True, slots=True)
class Bound:
    """A Storable ``BOUND``: ``max_size`` None means ``Bound::Unbounded``."""

    max_size: int | None
    is_fixed_size: bool = False

    def __post_init__(self) -> None:
        if self.max_size is None and self.is_fixed_size:
            raise ValueError("an unbounded type cannot be fixed-size")
        if self.max_size is not None and not 0 <= self.max_size <= 0xFFFFFFFF:
            raise ValueError(f"max_size {self.max_size} is outside u32")

    @property
    def is_bounded(self) -> bool:
        return self.max_size is not None


UNBOUNDED = Bound(None, False)


def option_bound(inner: Bound) -> Bound:
    """``Option<T>``: T.max + 1 with T's fixed flag; unbounded if T is."""
    if inner.max_size is None:
        return UNBOUNDED
    return Bound(inner.max_size + 1, inner.is_fixed_size)


def tuple2_bound(a: Bound, b: Bound) -> Bound:
    """``(A, B)``: A.max + B.max + both size widths; fixed iff both are; unbounded if either is."""
    if a.max_size is None or b.max_size is None:
        return UNBOUNDED
    total = a.max_size + b.max_size + bounded_size_width(a) + bounded_size_width(b)
    return Bound(total, a.is_fixed_size and b.is_fixed_size)


def tuple3_bound(a: Bound, b: Bound, c: Bound) -> Bound:
    """``(A, B, C)``: sum of maxima plus the size overhead (1 + widths by the members' maxima for
    non-fixed A/B, nothing when A and B are both fixed); fixed iff all three are."""
    if a.max_size is None or b.max_size is None or c.max_size is None:
        return UNBOUNDED
    overhead = 0
    if not (a.is_fixed_size and b.is_fixed_size):
        overhead = 1
        for member in (a, b):
            if not member.is_fixed_size:
                assert member.max_size is not None
                overhead += size_width(member.max_size)
    total = a.max_size + b.max_size + c.max_size + overhead
    return Bound(total, a.is_fixed_size and b.is_fixed_size and c.is_fixed_size)


@dataclass(frozen=True, slots=True)
class Decoded:
    """Result of decoding one value.

    ``value`` is JSON-able (u64/u128 and other JS-unsafe integers are decimal strings, bytes are hex).
    ``text`` is a one-line, already escaped (control/bidi characters made visible) human rendering.
    When ``ok`` is False, ``error`` says why; ``value`` is then either None or a best-effort partial
    result (for example a tuple whose second member failed).
    """

    value: Any
    text: str
    ok: bool = True
    error: str | None = None

    @classmethod
    def failure(cls, error: str, data: bytes, value: Any = None) -> Decoded:
        preview = bytes_preview(data, FAILURE_PREVIEW_BYTES)
        return cls(value=value, text=f"<{escape_control(error)}> {preview}".rstrip(), ok=False, error=error)


def size_width(size: int) -> int:
    """Bytes needed to store a size: 1 if ≤ 255, 2 if ≤ 65 535, else 4 (``bytes_to_store_size``)."""
    if size <= 0xFF:
        return 1
    if size <= 0xFFFF:
        return 2
    return 4


def bounded_size_width(bound: Bound) -> int:
    """Width of a member's size field inside a bounded 2-tuple: 0 if fixed-size, else by its max."""
    if bound.max_size is None:
        raise StorableError("an unbounded member has no size width in a bounded tuple")
    return 0 if bound.is_fixed_size else size_width(bound.max_size)


def uint_json(n: int, width: int) -> int | str:
    """JSON form of an unsigned integer: a number up to u32, a decimal string for u64/u128."""
    return n if width <= 4 else str(n)


def decode_uint(data: bytes, width: int) -> int:
    if len(data) != width:
        raise StorableError(f"expected {width} bytes for u{width * 8}, got {len(data)}")
    return int.from_bytes(data, "big")


def decode_float(data: bytes, width: int) -> float:
    if len(data) != width:
        raise StorableError(f"expected {width} bytes for f{width * 8}, got {len(data)}")
    return struct.unpack(">f" if width == 4 else ">d", data)[0]


def decode_bool(data: bytes) -> bool:
    if len(data) != 1:
        raise StorableError(f"expected 1 byte for bool, got {len(data)}")
    if data[0] > 1:
        raise StorableError(f"bool byte must be 0 or 1, got {data[0]}")
    return data[0] == 1


def decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StorableError(f"invalid UTF-8 at byte {exc.start}: {exc.reason}") from None


def decode_option(data: bytes) -> tuple[bool, bytes]:
    """Split an ``Option<T>`` encoding into (is_some, inner bytes)."""
    if not data:
        raise StorableError("empty Option encoding")
    marker = data[-1]
    if marker == 1:
        return True, data[:-1]
    if marker == 0:
        if len(data) != 1:
            raise StorableError(f"None marker 00 preceded by {len(data) - 1} bytes")
        return False, b""
    raise StorableError(f"Option marker must be 00 or 01, got {marker:02x}")


def _read_be(data: bytes, offset: int, width: int) -> int:
    return int.from_bytes(data[offset : offset + width], "big")


def split_tuple2(data: bytes, a: Bound, b: Bound) -> tuple[bytes, bytes]:
    """Member bytes of a bounded 2-tuple. Raises StorableError if the layout does not hold."""
    if a.max_size is None or b.max_size is None:
        raise StorableError("2-tuples with an unbounded member cannot be stored (upstream todo!())")
    a_w, b_w = bounded_size_width(a), bounded_size_width(b)
    total = a.max_size + b.max_size + a_w + b_w
    if len(data) != total:
        raise StorableError(f"2-tuple must be exactly {total} bytes, got {len(data)}")
    sizes_at = a.max_size + b.max_size
    a_len = a.max_size if a.is_fixed_size else _read_be(data, sizes_at, a_w)
    b_len = b.max_size if b.is_fixed_size else _read_be(data, sizes_at + a_w, b_w)
    if a_len > a.max_size:
        raise StorableError(f"first member size {a_len} exceeds its max {a.max_size}")
    if b_len > b.max_size:
        raise StorableError(f"second member size {b_len} exceeds its max {b.max_size}")
    if any(data[a_len : a.max_size]):
        raise StorableError("non-zero padding after the first member")
    if any(data[a.max_size + b_len : sizes_at]):
        raise StorableError("non-zero padding after the second member")
    return data[:a_len], data[a.max_size : a.max_size + b_len]


def encode_tuple2(a_bytes: bytes, a: Bound, b_bytes: bytes, b: Bound) -> bytes:
    """What upstream ``to_bytes`` writes for a bounded 2-tuple; :func:`split_tuple2` reverses it."""
    if a.max_size is None or b.max_size is None:
        raise StorableError("2-tuples with an unbounded member cannot be stored (upstream todo!())")
    if len(a_bytes) > a.max_size or len(b_bytes) > b.max_size:
        raise StorableError("member longer than its max size")
    # Like upstream, a member shorter than its slot is zero-padded even when it claims to be fixed-size
    # (only Option<fixed T> = None does that), and no size is stored for it.
    a_w, b_w = bounded_size_width(a), bounded_size_width(b)
    out = bytearray(a_bytes.ljust(a.max_size, b"\0") + b_bytes.ljust(b.max_size, b"\0"))
    if a_w:
        out += len(a_bytes).to_bytes(a_w, "big")
    if b_w:
        out += len(b_bytes).to_bytes(b_w, "big")
    return bytes(out)


def split_tuple3(data: bytes, a: Bound, b: Bound, c: Bound) -> tuple[bytes, bytes, bytes]:
    """Member bytes of a 3-tuple (v0.6.4+ layout). Raises StorableError if the layout does not hold."""
    pos = 0
    widths: list[int | None] = [None, None]
    if not (a.is_fixed_size and b.is_fixed_size):
        if not data:
            raise StorableError("3-tuple is empty; expected a size-lengths byte")
        lengths = data[0]
        if lengths & 0xF0:
            raise StorableError(f"size-lengths byte {lengths:02x} has bits set above bit 3")
        for i, bits in enumerate(((lengths >> 2) & 3, lengths & 3)):
            width = bits + 1
            if width == 3:
                if not (a, b)[i].is_fixed_size:
                    raise StorableError(f"size-lengths byte {lengths:02x} gives member {i} a width of 3")
            widths[i] = width
        pos = 1
    parts: list[bytes] = []
    for i, member in enumerate((a, b)):
        if member.is_fixed_size:
            assert member.max_size is not None
            size = member.max_size
        else:
            member_width = widths[i]
            assert member_width is not None
            width = member_width
            if pos + width > len(data):
                raise StorableError(f"3-tuple truncated in the size of member {i}")
            size = _read_be(data, pos, width)
            pos += width
        if pos + size > len(data):
            raise StorableError(f"3-tuple member {i} needs {size} bytes, {len(data) - pos} left")
        parts.append(data[pos : pos + size])
        pos += size
    rest = data[pos:]
    if c.is_fixed_size and c.max_size is not None and len(rest) != c.max_size:
        raise StorableError(f"3-tuple last member must be {c.max_size} bytes, got {len(rest)}")
    return parts[0], parts[1], rest


def encode_tuple3(a_bytes: bytes, a: Bound, b_bytes: bytes, b: Bound, c_bytes: bytes, c: Bound) -> bytes:
    """Inverse of :func:`split_tuple3` (what upstream ``to_bytes`` writes)."""
    out = bytearray()
    if not (a.is_fixed_size and b.is_fixed_size):
        out.append(((size_width(len(a_bytes)) - 1) << 2) | (size_width(len(b_bytes)) - 1))
    for data, member in ((a_bytes, a), (b_bytes, b)):
        if not member.is_fixed_size:
            out += len(data).to_bytes(size_width(len(data)), "big")
        out += data
    out += c_bytes
    return bytes(out)
