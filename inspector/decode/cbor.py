"""A bounded CBOR (RFC 8949) decoder for untrusted snapshot bytes.

Why hand-written instead of a library: the input is whatever happens to sit in a stable-memory snapshot.
A hostile or corrupt length field must not make the tool allocate gigabytes, recurse until the
interpreter dies, or spin. The rules that guarantee this:

* every length and count is checked against the bytes that remain *before* anything is allocated
  (an array of n items needs at least n bytes, a map of n pairs at least 2n);
* nesting (arrays, maps, tags) is limited by ``max_depth`` (default :data:`MAX_DEPTH`), checked
  explicitly, so the Python stack stays small;
* each decoded item consumes at least one byte, so the work is linear in the input size.

Every problem raises :class:`CborError` (a :class:`ValueError`); running out of bytes raises its
subclass :class:`CborTruncated`, which records how far the decoder needed to read. No other exception
escapes :func:`decode_cbor`.

Supported: major types 0–7, definite and indefinite lengths (indefinite strings must consist of
definite chunks of the same major type), tags (the number is kept), simple values, half/single/double
floats. Not checked: duplicate map keys are kept (see below), tag semantics are not interpreted.

Decoded values are JSON-able:

=========================  =================================================================
CBOR                       Python / JSON value
=========================  =================================================================
unsigned / negative int    ``int`` when ``|n| <= 2**53 - 1`` (JavaScript-safe), else the
                           decimal ``str``
byte string                ``{"bytes": "<lowercase hex>"}``
text string                ``str``
array                      ``list``
map                        ``dict`` when every key is a text string and no key repeats,
                           else ``{"map": [[key, value], ...]}`` in stream order
tag                        ``{"tag": n, "value": v}``
false / true / null        ``False`` / ``True`` / ``None``
undefined, other simple    ``{"simple": n}`` (undefined is simple value 23)
float                      ``float``; NaN and infinities as ``{"float": "NaN"}``,
                           ``{"float": "Infinity"}``, ``{"float": "-Infinity"}``
=========================  =================================================================
"""

from __future__ import annotations

import math
import struct
from typing import Any

from inspector.errors import BadFormat, LimitExceeded

__all__ = [
    "MAX_DEPTH",
    "CborError",
    "CborTruncated",
    "decode_cbor",
    "decode_cbor_exact",
    "is_structured_cbor",
]

MAX_DEPTH = 64
"""Default limit on nesting of arrays, maps and tags."""

_HARD_MAX_DEPTH = 256
_JS_SAFE = 2**53 - 1
_BREAK = 0xFF


class CborError(BadFormat, ValueError):
    """Malformed, unsupported or too deeply nested CBOR. ``offset`` is where the problem was found."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


class CborLimitExceeded(CborError, LimitExceeded):
    """CBOR nested deeper than the decoder's limit."""


class CborTruncated(CborError):
    """The input ended early. ``needed_end`` is the smallest end offset that could have satisfied the
    read that failed (for counts, a lower bound)."""

    def __init__(self, message: str, offset: int, needed_end: int) -> None:
        super().__init__(message, offset)
        self.needed_end = needed_end


def _int_value(n: int) -> int | str:
    return n if -_JS_SAFE <= n <= _JS_SAFE else str(n)


def _float_value(x: float) -> float | dict[str, str]:
    if math.isnan(x):
        return {"float": "NaN"}
    if math.isinf(x):
        return {"float": "Infinity" if x > 0 else "-Infinity"}
    return x


class _Decoder:
    __slots__ = ("data", "pos", "max_depth")

    def __init__(self, data: bytes, pos: int, max_depth: int) -> None:
        self.data = data
        self.pos = pos
        self.max_depth = max_depth

    # -- low level -------------------------------------------------------------------------------

    def _take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise CborTruncated(f"{what} needs {n} bytes, {len(self.data) - self.pos} left", self.pos, end)
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def _peek(self) -> int:
        if self.pos >= len(self.data):
            raise CborTruncated("unexpected end of input", self.pos, self.pos + 1)
        return self.data[self.pos]

    def _head(self) -> tuple[int, int, int | None, int]:
        """Read an initial byte and its argument. Returns (major, additional info, argument or None for
        indefinite length, start offset of the item)."""
        start = self.pos
        ib = self._peek()
        self.pos += 1
        major, ai = ib >> 5, ib & 0x1F
        if ai < 24:
            return major, ai, ai, start
        if ai <= 27:
            if major == 7:
                # Floats and simple(24): the raw bytes are interpreted by the caller.
                return major, ai, None, start
            raw = self._take(1 << (ai - 24), "argument")
            return major, ai, int.from_bytes(raw, "big"), start
        if ai <= 30:
            raise CborError(f"reserved additional information {ai}", start)
        return major, ai, None, start

    def _remaining(self) -> int:
        return len(self.data) - self.pos

    # -- items -----------------------------------------------------------------------------------

    def item(self, depth: int) -> Any:
        major, ai, arg, start = self._head()
        if major == 0:
            if arg is None:
                raise CborError("indefinite length is not allowed for an unsigned integer", start)
            return _int_value(arg)
        if major == 1:
            if arg is None:
                raise CborError("indefinite length is not allowed for a negative integer", start)
            return _int_value(-1 - arg)
        if major == 2:
            return {"bytes": self._string(major, arg, start).hex()}
        if major == 3:
            raw = self._string(major, arg, start)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CborError(f"text string is not valid UTF-8 ({exc.reason})", start) from None
        if major in (4, 5, 6):
            if depth >= self.max_depth:
                raise CborLimitExceeded(f"nesting deeper than {self.max_depth} levels", start)
            if major == 4:
                return self._array(arg, start, depth + 1)
            if major == 5:
                return self._map(arg, start, depth + 1)
            if arg is None:
                raise CborError("indefinite length is not allowed for a tag", start)
            return {"tag": arg, "value": self.item(depth + 1)}
        return self._simple(ai, start)

    def _string(self, major: int, arg: int | None, start: int) -> bytes:
        kind = "byte string" if major == 2 else "text string"
        if arg is not None:
            if arg > self._remaining():
                raise CborTruncated(f"{kind} of {arg} bytes, {self._remaining()} left", start, self.pos + arg)
            return self._take(arg, kind)
        chunks: list[bytes] = []
        while True:
            if self._peek() == _BREAK:
                self.pos += 1
                return b"".join(chunks)
            c_major, _ai, c_arg, c_start = self._head()
            if c_major != major or c_arg is None:
                raise CborError(f"indefinite {kind} holds a chunk that is not a definite {kind}", c_start)
            if c_arg > self._remaining():
                raise CborTruncated(
                    f"{kind} chunk of {c_arg} bytes, {self._remaining()} left", c_start, self.pos + c_arg
                )
            chunk = self._take(c_arg, kind)
            if major == 3:
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise CborError(f"text chunk is not valid UTF-8 ({exc.reason})", c_start) from None
            chunks.append(chunk)

    def _array(self, count: int | None, start: int, depth: int) -> list[Any]:
        items: list[Any] = []
        if count is None:
            while self._peek() != _BREAK:
                items.append(self.item(depth))
            self.pos += 1
            return items
        if count > self._remaining():
            raise CborTruncated(
                f"array of {count} items, only {self._remaining()} bytes left", start, self.pos + count
            )
        for _ in range(count):
            items.append(self.item(depth))
        return items

    def _map(self, count: int | None, start: int, depth: int) -> Any:
        pairs: list[tuple[Any, Any]] = []
        if count is None:
            while self._peek() != _BREAK:
                key = self.item(depth)
                pairs.append((key, self.item(depth)))
            self.pos += 1
        else:
            if 2 * count > self._remaining():
                raise CborTruncated(
                    f"map of {count} pairs, only {self._remaining()} bytes left", start, self.pos + 2 * count
                )
            for _ in range(count):
                key = self.item(depth)
                pairs.append((key, self.item(depth)))
        if all(isinstance(k, str) for k, _ in pairs):
            as_dict = {k: v for k, v in pairs}
            if len(as_dict) == len(pairs):
                return as_dict
        return {"map": [[k, v] for k, v in pairs]}

    def _simple(self, ai: int, start: int) -> Any:
        if ai < 20:
            return {"simple": ai}
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 23:
            return {"simple": 23}
        if ai == 24:
            value = self._take(1, "simple value")[0]
            if value < 32:
                raise CborError(f"simple value {value} must use the one-byte form", start)
            return {"simple": value}
        if ai == 25:
            return _float_value(struct.unpack(">e", self._take(2, "half float"))[0])
        if ai == 26:
            return _float_value(struct.unpack(">f", self._take(4, "float"))[0])
        if ai == 27:
            return _float_value(struct.unpack(">d", self._take(8, "double"))[0])
        # ai == 31 (28..30 were rejected in _head)
        raise CborError("unexpected break", start)


def decode_cbor(
    data: bytes | bytearray | memoryview, offset: int = 0, *, max_depth: int = MAX_DEPTH
) -> tuple[Any, int]:
    """Decode one CBOR data item starting at ``offset``. Returns ``(value, end)`` where ``end`` is the
    offset just past the item (trailing bytes are not looked at). See the module docstring for how CBOR
    maps onto JSON-able values. Raises :class:`CborError` (or :class:`CborTruncated`) on bad input."""
    buf = bytes(data)
    if not 0 <= offset <= len(buf):
        raise CborError(f"offset {offset} outside the {len(buf)}-byte input", offset)
    depth_limit = max(1, min(int(max_depth), _HARD_MAX_DEPTH))
    decoder = _Decoder(buf, offset, depth_limit)
    try:
        value = decoder.item(0)
    except RecursionError:  # pragma: no cover - only if the caller is already near the stack limit
        raise CborError("nesting too deep for the Python stack", decoder.pos) from None
    return value, decoder.pos


def decode_cbor_exact(data: bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``data`` as exactly one CBOR item; trailing bytes are a :class:`CborError`."""
    value, end = decode_cbor(data, 0, max_depth=max_depth)
    if end != len(data):
        raise CborError(f"{len(data) - end} trailing bytes after the CBOR item", end)
    return value


def is_structured_cbor(data: bytes | bytearray | memoryview) -> bool:
    """True if ``data`` is exactly one well-formed CBOR item whose top level is a byte string, text
    string, array, map or tag (major types 2–6). Bare integers, floats and simple values are excluded
    because almost any one-byte or few-byte input is such an item, which says nothing."""
    if len(data) == 0 or not 2 <= (data[0] >> 5) <= 6:
        return False
    try:
        decode_cbor_exact(data)
    except CborError:
        return False
    return True
