"""Value type expressions: parse, bound, decode, and guess the Storable type of keys and values.

A *type expression* names how a key or value was encoded by ``Storable::to_bytes`` (FORMAT.md §7). It is
used by the ``--schema`` TOML file and by the TUI "switch decoder" action. :func:`parse_type` turns the
text into a frozen, hashable :class:`TypeExpr`; ``str(expr)`` gives the canonical spelling back, which
parses to an equal object.

Grammar (names are case-insensitive, whitespace is ignored)::

    type    := NAME [ "<" arg { "," arg } ">" ]
             | "(" ")"                                   -- unit
             | "(" type "," type [ "," type ] ")"        -- tuple
             | "[" "u8" ";" INT "]"                      -- bytes<INT>
    arg     := type | INT

Types (canonical name first, then accepted aliases), with their Storable bound:

====================  ================================  ===========================  =====================
canonical             aliases                           Rust type                    bound (max, fixed)
====================  ================================  ===========================  =====================
``u8`` … ``u128``                                       u8, u16, u32, u64, u128      (1/2/4/8/16, fixed)
``f32`` ``f64``                                         f32, f64                     (4/8, fixed)
``bool``                                                bool                         (1, fixed)
``text``              ``string``, ``str``               String                       unbounded
``text<N>``           ``string<N>``                     custom UTF-8 type, max N     (N, not fixed)
``blob``              ``vec<u8>``                       Vec<u8>                      unbounded
``blob<N>``                                             Blob<N>, BoundedVecN<N>      (N, not fixed)
``bytes<N>``          ``[u8; N]``                       [u8; N]                      (N, fixed)
``principal``                                           Principal                    (29, not fixed)
``unit``              ``()``                            ()                           (0, not fixed)
``candid``                                              custom type, ``Encode!``     unbounded
``candid<N>``                                           same, declared max N         (N, not fixed)
``cbor``              (also ``cbor<N>``)                custom type, ciborium        unbounded
``raw``               (also ``raw<N>``)                 anything: shown as hex       unbounded
``opt<T>``            ``option<T>``                     Option<T>                    (T.max + 1, T.fixed)
``tuple<A,B>``        ``(A, B)``                        (A, B); both bounded         see FORMAT.md §7
``tuple<A,B,C>``      ``(A, B, C)``                     (A, B, C) (v0.6.4+)          see FORMAT.md §7
``reverse<T>``        parses to T                       Reverse<T>                   same as T
====================  ================================  ===========================  =====================

``<N>`` on text/candid/cbor/raw declares a custom type's ``Bound::Bounded { max_size: N, is_fixed_size:
false }``; this only matters inside a 2-tuple (which needs bounded members) and for the reported bound.
A 2-tuple with an unbounded member is rejected at parse time: no release up to v0.7.2 can encode one.

Decoding never raises for bad data: :meth:`TypeExpr.decode` returns a :class:`~inspector.decode.storable.
Decoded` with ``ok=False`` and an ``error`` (wrong length, invalid UTF-8, bad Option marker, bad tuple
sizes, malformed CBOR …). JSON forms: u8/u16/u32 numbers; u64/u128 decimal strings; floats numbers
(NaN/±inf as ``{"float": "NaN"}`` …); bool; text string; blob/bytes/raw lowercase hex; principal its
textual form; unit null; opt ``[]`` or ``[v]`` (as Candid JS does); tuples lists; cbor per
:mod:`inspector.decode.cbor`; candid is ``CandidMessage.to_json(names)`` of
:mod:`inspector.decode.candid`, unwrapped when the message has exactly one argument (the usual
``Encode!(&self)``), and its text is the didc-style rendering folded onto one line. A Candid message
followed by extra bytes decodes with ``ok=False`` ("trailing bytes") but keeps its value.

Auto-detection (:func:`guess_type`) and the quick_start length-prefixed blob detector
(:func:`detect_length_prefixed`) are at the end of the module.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, Literal

from inspector.decode.cbor import CborError, CborTruncated, decode_cbor, decode_cbor_exact, is_structured_cbor
from inspector.decode.principal import principal_to_text
from inspector.decode.storable import (
    UNBOUNDED,
    Bound,
    Decoded,
    StorableError,
    decode_bool,
    decode_float,
    decode_option,
    decode_text,
    decode_uint,
    option_bound,
    split_tuple2,
    split_tuple3,
    tuple2_bound,
    tuple3_bound,
    uint_json,
)
from inspector.errors import BadFormat
from inspector.safe_text import bytes_preview, escape_control

__all__ = [
    "COMMON_TYPES",
    "TEXT_LIMIT",
    "BlobType",
    "BoolType",
    "CandidType",
    "CborType",
    "FixedBytesType",
    "FloatType",
    "LengthPrefixed",
    "OptType",
    "PrincipalType",
    "RawType",
    "TextType",
    "TupleType",
    "TypeExpr",
    "TypeSyntaxError",
    "UIntType",
    "UnitType",
    "LENGTH_PREFIX_HEAD_BYTES",
    "detect_length_prefixed",
    "guess_type",
    "parse_type",
]

TEXT_LIMIT = 400
"""Maximum length of :attr:`Decoded.text` (the JSON ``value`` is never shortened)."""

COMMON_TYPES: tuple[str, ...] = (
    "candid",
    "cbor",
    "text",
    "blob",
    "u64",
    "u128",
    "u32",
    "u16",
    "u8",
    "f64",
    "f32",
    "bool",
    "principal",
    "unit",
    "raw",
)
"""Type expressions worth offering in a "switch decoder" menu, most useful first."""

Role = Literal["key", "value"]


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _float_json(x: float) -> float | dict[str, str]:
    if math.isnan(x):
        return {"float": "NaN"}
    if math.isinf(x):
        return {"float": "Infinity" if x > 0 else "-Infinity"}
    return x


def _json_text(value: Any) -> str:
    return _clip(escape_control(json.dumps(value, ensure_ascii=False, separators=(", ", ": "))))


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def _bytes_text(data: bytes) -> str:
    """Short rendering of opaque bytes: ``b"..."`` when mostly printable ASCII, else ``0x`` + hex."""
    if not data:
        return 'b""'
    # Counted in C (translate deletes the printable bytes): listed values can be 64 KiB each.
    printable = len(data) - len(data.translate(None, _PRINTABLE_ASCII))
    if printable * 4 >= len(data) * 3:
        return _clip('b"' + bytes_preview(data, TEXT_LIMIT) + '"')
    shown = data[: TEXT_LIMIT // 2]
    more = f"…(+{len(data) - len(shown)} bytes)" if len(shown) < len(data) else ""
    return "0x" + shown.hex() + more


# ---------------------------------------------------------------------------------------------------
# Type expressions
# ---------------------------------------------------------------------------------------------------


# Candid field names by id (``Structure.names``, from a .did file): hints for the Candid decoder only.
FieldNames = Mapping[int, str] | None


class TypeExpr(ABC):
    """A decodable Storable type. Instances are frozen and hashable; ``str()`` is the canonical form."""

    def __post_init__(self) -> None:
        _ = self.bound  # constructing the Bound validates sizes (u32 range, fixed implies bounded)

    @property
    @abstractmethod
    def bound(self) -> Bound:
        """The Storable ``BOUND`` of this type."""

    @property
    def max_size(self) -> int | None:
        """Maximum encoded size in bytes, or None for an unbounded type."""
        return self.bound.max_size

    @property
    def is_fixed_size(self) -> bool:
        """``Bounded { is_fixed_size: true }``: v2 B-tree keys of such types have no length prefix."""
        return self.bound.is_fixed_size

    @abstractmethod
    def __str__(self) -> str: ...

    @abstractmethod
    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        """Decode ``data`` whose length already passed :meth:`_length_error`. May raise StorableError."""

    def _length_error(self, data: bytes) -> str | None:
        bound = self.bound
        if bound.max_size is None:
            return None
        if bound.is_fixed_size and len(data) != bound.max_size:
            return f"{self} needs exactly {bound.max_size} bytes, got {len(data)}"
        if len(data) > bound.max_size:
            return f"{len(data)} bytes exceed the {bound.max_size}-byte bound of {self}"
        return None

    def decode(self, data: bytes | bytearray | memoryview, names: FieldNames = None) -> Decoded:
        """Decode one encoded value. Never raises for bad bytes: failures come back with ``ok=False``.

        ``names`` is passed through to the Candid decoder (field-name hints); other types ignore it.
        """
        raw = bytes(data)
        problem = self._length_error(raw)
        if problem is not None:
            return Decoded.failure(problem, raw)
        try:
            return self._decode(raw, names)
        except StorableError as exc:
            return Decoded.failure(str(exc), raw)

    def json_texts(self, items: Sequence[bytes]) -> list[str] | None:
        """Bulk fast path: ``json.dumps(self.decode(d).value, ensure_ascii=False)`` for each item.

        For exporting millions of entries, where a ``Decoded`` and a ``json.dumps`` per value cost more
        than everything else. Returns None when this type has no fast path or any item would not
        decode cleanly; the caller then uses :meth:`decode` per item, so the output is the same.
        """
        return None

    def __repr__(self) -> str:
        return f"<TypeExpr {self}>"


def _all_len(items: Sequence[bytes], n: int) -> bool:
    return list(map(len, items)).count(n) == len(items)


def _all_len_le(items: Sequence[bytes], n: int) -> bool:
    return not items or max(map(len, items)) <= n


@dataclass(frozen=True, repr=False)
class UIntType(TypeExpr):
    width: int  # bytes: 1, 2, 4, 8 or 16

    def __post_init__(self) -> None:
        if self.width not in (1, 2, 4, 8, 16):
            raise ValueError(f"no unsigned integer type is {self.width} bytes wide")

    @property
    def bound(self) -> Bound:
        return Bound(self.width, True)

    def __str__(self) -> str:
        return f"u{self.width * 8}"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        n = decode_uint(data, self.width)
        return Decoded(uint_json(n, self.width), str(n))

    def json_texts(self, items: Sequence[bytes]) -> list[str] | None:
        w = self.width
        if not _all_len(items, w):
            return None
        fb = int.from_bytes
        # Mirrors uint_json: a number up to u32, a decimal string above (not JS-safe).
        if w <= 4:
            return [str(fb(d, "big")) for d in items]
        return [f'"{fb(d, "big")}"' for d in items]


@dataclass(frozen=True, repr=False)
class FloatType(TypeExpr):
    width: int  # 4 or 8

    def __post_init__(self) -> None:
        if self.width not in (4, 8):
            raise ValueError(f"no float type is {self.width} bytes wide")

    @property
    def bound(self) -> Bound:
        return Bound(self.width, True)

    def __str__(self) -> str:
        return f"f{self.width * 8}"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        x = decode_float(data, self.width)
        return Decoded(_float_json(x), repr(x))


@dataclass(frozen=True, repr=False)
class BoolType(TypeExpr):
    @property
    def bound(self) -> Bound:
        return Bound(1, True)

    def __str__(self) -> str:
        return "bool"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        b = decode_bool(data)
        return Decoded(b, "true" if b else "false")

    def json_texts(self, items: Sequence[bytes]) -> list[str] | None:
        texts = {b"\x00": "false", b"\x01": "true"}
        out = [texts.get(bytes(d)) for d in items]
        return None if None in out else out  # type: ignore[return-value]


@dataclass(frozen=True, repr=False)
class TextType(TypeExpr):
    limit: int | None = None  # declared max size of a custom bounded text type

    @property
    def bound(self) -> Bound:
        return UNBOUNDED if self.limit is None else Bound(self.limit, False)

    def __str__(self) -> str:
        return "text" if self.limit is None else f"text<{self.limit}>"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        s = decode_text(data)
        return Decoded(s, _clip('"' + escape_control(s) + '"'))

    def json_texts(self, items: Sequence[bytes]) -> list[str] | None:
        if self.limit is not None and not _all_len_le(items, self.limit):
            return None
        try:
            strings = [bytes(d).decode("utf-8") for d in items]
        except UnicodeDecodeError:
            return None
        # What json.dumps(s, ensure_ascii=False) calls for a str.
        return list(map(encode_basestring, strings))


@dataclass(frozen=True, repr=False)
class BlobType(TypeExpr):
    limit: int | None = None  # Blob<N> when set, Vec<u8> when None

    @property
    def bound(self) -> Bound:
        return UNBOUNDED if self.limit is None else Bound(self.limit, False)

    def __str__(self) -> str:
        return "blob" if self.limit is None else f"blob<{self.limit}>"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        return Decoded(data.hex(), _bytes_text(data))

    def json_texts(self, items: Sequence[bytes]) -> list[str] | None:
        if self.limit is not None and not _all_len_le(items, self.limit):
            return None
        return [f'"{d.hex()}"' for d in items]


@dataclass(frozen=True, repr=False)
class FixedBytesType(TypeExpr):
    size: int  # [u8; N]

    def __post_init__(self) -> None:
        Bound(self.size, True)  # validates the range

    @property
    def bound(self) -> Bound:
        return Bound(self.size, True)

    def __str__(self) -> str:
        return f"bytes<{self.size}>"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        return Decoded(data.hex(), _bytes_text(data))

    def json_texts(self, items: Sequence[bytes]) -> list[str] | None:
        if not _all_len(items, self.size):
            return None
        return [f'"{d.hex()}"' for d in items]


@dataclass(frozen=True, repr=False)
class PrincipalType(TypeExpr):
    @property
    def bound(self) -> Bound:
        return Bound(29, False)

    def __str__(self) -> str:
        return "principal"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        text = principal_to_text(data)
        return Decoded(text, text)


@dataclass(frozen=True, repr=False)
class UnitType(TypeExpr):
    @property
    def bound(self) -> Bound:
        return Bound(0, False)

    def __str__(self) -> str:
        return "unit"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        return Decoded(None, "()")


@dataclass(frozen=True, repr=False)
class CandidType(TypeExpr):
    limit: int | None = None

    @property
    def bound(self) -> Bound:
        return UNBOUNDED if self.limit is None else Bound(self.limit, False)

    def __str__(self) -> str:
        return "candid" if self.limit is None else f"candid<{self.limit}>"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        # Imported here: the Candid decoder is only loaded when a value is Candid.
        from inspector.decode.candid import CandidError, decode_message
        from inspector.decode.candid_render import message_json

        try:
            message = decode_message(data)
            args_json = message_json(message, names)
            value = args_json[0] if isinstance(args_json, list) and len(args_json) == 1 else args_json
            text = _candid_one_line(message, names)
            end = int(message.end)
        except CandidError as exc:  # the only error the Candid decoder raises for any bytes (candid.py)
            return Decoded.failure(f"not a Candid message: {exc}", data)
        if end != len(data):
            return Decoded(
                value, text, ok=False, error=f"{len(data) - end} trailing bytes after the Candid message"
            )
        return Decoded(value, text)


def _candid_one_line(message: Any, names: FieldNames) -> str:
    """didc-style text of a message on one line (the renderer escapes newlines inside strings, so the
    only newlines are layout and can be folded)."""
    from inspector.decode.candid_render import message_text

    try:
        text = message_text(message, names, width=10 * TEXT_LIMIT, max_vec_items=16, max_text_len=TEXT_LIMIT)
    except TypeError:  # a renderer without layout options
        text = message_text(message, names)
    return _clip(escape_control(re.sub(r"\n\s*", " ", str(text))))


@dataclass(frozen=True, repr=False)
class CborType(TypeExpr):
    limit: int | None = None

    @property
    def bound(self) -> Bound:
        return UNBOUNDED if self.limit is None else Bound(self.limit, False)

    def __str__(self) -> str:
        return "cbor" if self.limit is None else f"cbor<{self.limit}>"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        try:
            value = decode_cbor_exact(data)
        except CborError as exc:
            return Decoded.failure(f"CBOR: {exc}", data)
        return Decoded(value, _json_text(value))


@dataclass(frozen=True, repr=False)
class RawType(TypeExpr):
    limit: int | None = None

    @property
    def bound(self) -> Bound:
        return UNBOUNDED if self.limit is None else Bound(self.limit, False)

    def __str__(self) -> str:
        return "raw" if self.limit is None else f"raw<{self.limit}>"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        shown = data[: TEXT_LIMIT // 2]
        more = f"…(+{len(data) - len(shown)} bytes)" if len(shown) < len(data) else ""
        return Decoded(data.hex(), (shown.hex() or "(empty)") + more)

    def json_texts(self, items: Sequence[bytes]) -> list[str] | None:
        if self.limit is not None and not _all_len_le(items, self.limit):
            return None
        return [f'"{d.hex()}"' for d in items]


@dataclass(frozen=True, repr=False)
class OptType(TypeExpr):
    inner: TypeExpr

    def __post_init__(self) -> None:
        _ = self.bound  # validates the size range

    @property
    def bound(self) -> Bound:
        return option_bound(self.inner.bound)

    def __str__(self) -> str:
        return f"opt<{self.inner}>"

    def _length_error(self, data: bytes) -> str | None:
        # Upstream quirk: Option<fixed T> is declared fixed (T.max + 1) but None is still the single
        # byte 00, so only the maximum is enforced here; Some(...) is checked by T.
        max_size = self.bound.max_size
        if max_size is not None and len(data) > max_size:
            return f"{len(data)} bytes exceed the {max_size}-byte bound of {self}"
        return None

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        inner_bound = self.inner.bound
        if (
            inner_bound.is_fixed_size
            and inner_bound.max_size is not None
            and len(data) == inner_bound.max_size + 1
            and not any(data)
        ):
            # A None padded to the fixed slot (how a 2-tuple or v2 fixed key stores it).
            return Decoded([], "None")
        is_some, inner_bytes = decode_option(data)
        if not is_some:
            return Decoded([], "None")
        inner = self.inner.decode(inner_bytes, names)
        if not inner.ok:
            return Decoded(None, f"Some({inner.text})", ok=False, error=f"inside Some: {inner.error}")
        return Decoded([inner.value], _clip(f"Some({inner.text})"))


@dataclass(frozen=True, repr=False)
class TupleType(TypeExpr):
    members: tuple[TypeExpr, ...]

    def __post_init__(self) -> None:
        if len(self.members) not in (2, 3):
            raise ValueError("tuples have 2 or 3 members")
        if len(self.members) == 2 and not all(m.bound.is_bounded for m in self.members):
            raise ValueError(
                "a 2-tuple needs bounded members: no release up to v0.7.2 can encode (A, B) with an "
                "unbounded member (declare a bound, e.g. text<64> or blob<32>)"
            )
        _ = self.bound  # validates the size range

    @property
    def bound(self) -> Bound:
        bounds = [m.bound for m in self.members]
        if len(bounds) == 2:
            return tuple2_bound(bounds[0], bounds[1])
        return tuple3_bound(bounds[0], bounds[1], bounds[2])

    def __str__(self) -> str:
        return "tuple<" + ",".join(str(m) for m in self.members) + ">"

    def _decode(self, data: bytes, names: FieldNames) -> Decoded:
        bounds = [m.bound for m in self.members]
        if len(bounds) == 2:
            parts: tuple[bytes, ...] = split_tuple2(data, bounds[0], bounds[1])
        else:
            parts = split_tuple3(data, bounds[0], bounds[1], bounds[2])
        results = [m.decode(p, names) for m, p in zip(self.members, parts, strict=True)]
        value = [r.value for r in results]
        text = _clip("(" + ", ".join(r.text for r in results) + ")")
        for i, r in enumerate(results):
            if not r.ok:
                return Decoded(value, text, ok=False, error=f"tuple member {i}: {r.error}")
        return Decoded(value, text)


# ---------------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------------


class TypeSyntaxError(BadFormat, ValueError):
    """A type expression that does not parse. ``position`` is the character offset of the problem."""

    def __init__(self, message: str, text: str, position: int) -> None:
        super().__init__(f"{message} at column {position + 1} in {text!r}")
        self.position = position


MAX_EXPR_LENGTH = 1000
MAX_NESTING = 32

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>[0-9]+)|(?P<punct>[<>,()\[\];]))")

_SIMPLE: dict[str, Callable[[], TypeExpr]] = {
    "u8": lambda: UIntType(1),
    "u16": lambda: UIntType(2),
    "u32": lambda: UIntType(4),
    "u64": lambda: UIntType(8),
    "u128": lambda: UIntType(16),
    "f32": lambda: FloatType(4),
    "f64": lambda: FloatType(8),
    "bool": BoolType,
    "principal": PrincipalType,
    "unit": UnitType,
}
_OPTIONALLY_BOUNDED: dict[str, Callable[[int | None], TypeExpr]] = {
    "text": TextType,
    "string": TextType,
    "str": TextType,
    "blob": BlobType,
    "candid": CandidType,
    "cbor": CborType,
    "raw": RawType,
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, value, position)
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                if text[pos:].strip() == "":
                    break
                bad = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
                raise TypeSyntaxError(f"unexpected character {text[bad]!r}", text, bad)
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.index = 0

    def error(self, message: str) -> TypeSyntaxError:
        position = self.tokens[self.index][2] if self.index < len(self.tokens) else len(self.text)
        return TypeSyntaxError(message, self.text, position)

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end of type expression")
        self.index += 1
        return token

    def expect(self, punct: str) -> None:
        token = self.peek()
        if token is None or token[0] != "punct" or token[1] != punct:
            raise self.error(f"expected {punct!r}")
        self.index += 1

    def at(self, punct: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "punct" and token[1] == punct

    def build(self, factory: Callable[[], TypeExpr], start: int) -> TypeExpr:
        try:
            return factory()
        except ValueError as exc:
            raise TypeSyntaxError(str(exc), self.text, start) from None

    def parse_type(self, depth: int) -> TypeExpr:
        if depth > MAX_NESTING:
            raise self.error(f"type nested deeper than {MAX_NESTING} levels")
        kind, value, start = self.take()
        if kind == "punct" and value == "(":
            if self.at(")"):
                self.index += 1
                return UnitType()
            members = [self.parse_type(depth + 1)]
            while self.at(","):
                self.index += 1
                members.append(self.parse_type(depth + 1))
            self.expect(")")
            if len(members) not in (2, 3):
                raise TypeSyntaxError("tuples have 2 or 3 members", self.text, start)
            return self.build(lambda: TupleType(tuple(members)), start)
        if kind == "punct" and value == "[":
            elem = self.take()
            if elem[0] != "name" or elem[1].lower() != "u8":
                raise TypeSyntaxError("only [u8; N] arrays are Storable", self.text, elem[2])
            self.expect(";")
            size = self.take()
            if size[0] != "int":
                raise TypeSyntaxError("expected the array length", self.text, size[2])
            self.expect("]")
            return self.build(lambda: FixedBytesType(int(size[1])), start)
        if kind != "name":
            raise TypeSyntaxError(f"expected a type name, found {value!r}", self.text, start)
        name = value.lower()
        args: list[TypeExpr | int] = []
        if self.at("<"):
            self.index += 1
            args.append(self.parse_arg(depth + 1))
            while self.at(","):
                self.index += 1
                args.append(self.parse_arg(depth + 1))
            self.expect(">")
        return self.build_named(name, args, start)

    def parse_arg(self, depth: int) -> TypeExpr | int:
        token = self.peek()
        if token is not None and token[0] == "int":
            self.index += 1
            return int(token[1])
        return self.parse_type(depth)

    def build_named(self, name: str, args: list[TypeExpr | int], start: int) -> TypeExpr:
        def fail(message: str) -> TypeSyntaxError:
            return TypeSyntaxError(message, self.text, start)

        types = [a for a in args if isinstance(a, TypeExpr)]
        ints = [a for a in args if isinstance(a, int)]
        if name in _SIMPLE:
            if args:
                raise fail(f"{name} takes no parameters")
            return self.build(_SIMPLE[name], start)
        if name in _OPTIONALLY_BOUNDED:
            if not args:
                return self.build(lambda: _OPTIONALLY_BOUNDED[name](None), start)
            if len(args) != 1 or len(ints) != 1:
                raise fail(f"{name} takes one size parameter, e.g. {name}<64>")
            return self.build(lambda: _OPTIONALLY_BOUNDED[name](ints[0]), start)
        if name == "bytes":
            if len(args) != 1 or len(ints) != 1:
                raise fail("bytes needs a size, e.g. bytes<32> (use blob for Vec<u8>)")
            return self.build(lambda: FixedBytesType(ints[0]), start)
        if name == "vec":
            if len(args) == 1 and isinstance(args[0], UIntType) and args[0].width == 1:
                return BlobType()
            raise fail("only Vec<u8> is Storable")
        if name in ("opt", "option", "reverse"):
            if len(args) != 1 or len(types) != 1:
                raise fail(f"{name} takes one type parameter, e.g. {name}<u64>")
            if name == "reverse":
                return types[0]
            return self.build(lambda: OptType(types[0]), start)
        if name == "tuple":
            if len(args) not in (2, 3) or len(types) != len(args):
                raise fail("tuple takes 2 or 3 type parameters, e.g. tuple<u32,u64>")
            return self.build(lambda: TupleType(tuple(types)), start)
        raise fail(f"unknown type {name!r}")


def parse_type(text: str) -> TypeExpr:
    """Parse a type expression (grammar in the module docstring). Raises :class:`TypeSyntaxError`."""
    if not isinstance(text, str):
        raise TypeSyntaxError("a type expression must be a string", repr(text), 0)
    if len(text) > MAX_EXPR_LENGTH:
        raise TypeSyntaxError(f"type expression longer than {MAX_EXPR_LENGTH} characters", text[:40], 0)
    parser = _Parser(text)
    if not parser.tokens:
        raise TypeSyntaxError("empty type expression", text, 0)
    expr = parser.parse_type(0)
    if parser.peek() is not None:
        raise parser.error("unexpected text after the type")
    return expr


# ---------------------------------------------------------------------------------------------------
# Auto-detection
# ---------------------------------------------------------------------------------------------------

DIDL_MAGIC = b"DIDL"


def _is_printable_text(data: bytes) -> bool:
    try:
        s = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\t\n\r" for ch in s)


def _looks_like_principal(data: bytes) -> bool:
    # Canister ids are 10 bytes ending in 01 01 (opaque id); user principals are 29 bytes ending in the
    # self-authenticating class byte 02.
    return (len(data) == 10 and data[-2:] == b"\x01\x01") or (len(data) == 29 and data[-1] == 0x02)


def guess_type(samples: Sequence[bytes], role: Role = "value") -> TypeExpr:
    """Guess one type for a map's keys or values (or a cell's value) from a handful of samples.

    The first rule that holds for **every** sample wins:

    1. no samples → ``raw``;
    2. all empty → ``unit`` for values (a BTreeSet stores ``()``), ``blob`` for keys;
    3. all start with ``DIDL`` → ``candid``;
    4. all are valid UTF-8 made of printable characters (tab/CR/LF allowed) → ``text``. This comes
       before the width rules so that eight-letter names are not shown as u64; big-endian numbers
       almost always contain a byte that is not printable (0x00 for small numbers);
    5. all 8 bytes → ``u64``; all 16 → ``u128``; all 4 → ``u32``;
    6. all shaped like principals (10 bytes ending ``01 01``: canister ids; 29 bytes ending ``02``:
       self-authenticating ids) → ``principal``;
    7. all are exactly one CBOR item whose top level is a string, array, map or tag (bare numbers are
       ignored: nearly any 1–9 byte input is one) → ``cbor``;
    8. otherwise → ``blob``.

    ``role`` is "key" or "value"; only rule 2 differs between them today.
    """
    if role not in ("key", "value"):
        raise ValueError(f"role must be 'key' or 'value', not {role!r}")
    data = [bytes(s) for s in samples]
    if not data:
        return RawType()
    if all(len(s) == 0 for s in data):
        return UnitType() if role == "value" else BlobType()
    if all(s.startswith(DIDL_MAGIC) for s in data):
        return CandidType()
    if all(_is_printable_text(s) for s in data):
        return TextType()
    for width in (8, 16, 4):
        if all(len(s) == width for s in data):
            return UIntType(width)
    if all(_looks_like_principal(s) for s in data):
        return PrincipalType()
    if all(is_structured_cbor(s) for s in data):
        return CborType()
    return BlobType()


# ---------------------------------------------------------------------------------------------------
# quick_start "upgrades memory": u32 LE length + payload
# ---------------------------------------------------------------------------------------------------

PayloadKind = Literal["cbor", "candid", "unknown"]

# Magic bytes of ic-stable-structures structures: a memory starting with one is not a length prefix.
_STRUCTURE_MAGICS = (b"MGR", b"BTR", b"SCL", b"SVC", b"SMH", b"GLI", b"GLD", b"BTN", b"CHK", b"NOF")
_ZERO_TAIL_EVIDENCE = 16

LENGTH_PREFIX_HEAD_BYTES = 64 * 1024
"""Suggested ``head`` size for :func:`detect_length_prefixed`: payloads up to this size are verified."""


@dataclass(frozen=True)
class LengthPrefixed:
    """A ``u32 LE length`` + payload at virtual offset 0 (the quick_start upgrade pattern, FORMAT.md §8.4).

    ``kind`` says what the payload looks like; ``verified`` is True when the whole payload was inside the
    inspected head and parsed as that kind to exactly ``length`` bytes. ``reason`` is one line of
    evidence for humans. Bytes after ``end`` are stale leftovers of earlier, longer saves.
    """

    length: int
    kind: PayloadKind
    verified: bool
    reason: str
    payload_offset: int = 4

    @property
    def end(self) -> int:
        """Offset just past the payload."""
        return self.payload_offset + self.length

    @property
    def type_expr(self) -> TypeExpr:
        """Decoder for the payload: ``cbor``, ``candid`` or ``raw``."""
        if self.kind == "cbor":
            return CborType()
        if self.kind == "candid":
            return CandidType()
        return RawType()

    def decode(self, payload: bytes, names: FieldNames = None) -> Decoded:
        """Decode the full payload (``memory[4 : 4 + length]``); a wrong length is a failed result."""
        if len(payload) != self.length:
            return Decoded.failure(f"payload must be {self.length} bytes, got {len(payload)}", bytes(payload))
        return self.type_expr.decode(payload, names)


def _candid_end(payload: bytes) -> int | None:
    """End offset of the Candid message at the start of ``payload``, None if it does not parse."""
    from inspector.decode.candid import CandidError, decode_message

    try:
        return int(decode_message(payload).end)
    except CandidError:  # the only error the Candid decoder raises for any bytes: "not Candid"
        return None


def detect_length_prefixed(head: bytes | bytearray | memoryview, memory_size: int) -> LengthPrefixed | None:
    """Recognise the quick_start upgrade pattern at the start of a memory: u32 LE length L, then L bytes.

    ``head`` is the start of the memory, for example its first ``min(memory_size,
    LENGTH_PREFIX_HEAD_BYTES)`` bytes; ``memory_size`` is the memory's size in bytes. The detector is
    conservative; it returns None unless:

    * ``L > 0`` and ``4 + L <= memory_size``, and the memory does not start with a structure magic
      (MGR, BTR, SCL, SVC, SMH, GLI, GLD …), and one of these holds:
    * **candid** – the payload starts with ``DIDL``. Verified when the whole payload is in ``head`` and
      the Candid decoder ends exactly at L. (If it fails to parse, the "unknown" rule below decides.)
    * **cbor** – the payload is exactly one CBOR item whose top level is a string, array, map or tag.
      Verified when the whole payload is in ``head``; when it is longer than ``head``, the CBOR read
      must fail only for lack of bytes and need no more than L of them (unverified).
    * **unknown** – the whole payload is in ``head``, it is not all zero, and the bytes right after it
      are zero (at least 16 of them, or all that remain in the memory, and they must be in ``head``).
      A fresh memory reads as zero, so a real first save looks exactly like this, while random data or
      another structure almost never does. Stale bytes from an earlier, longer save defeat this rule:
      such a memory yields None unless its payload is CBOR or Candid.
    """
    data = bytes(head)
    if len(data) < 4 or memory_size < 5:
        return None
    if data[:3] in _STRUCTURE_MAGICS:
        return None
    length = int.from_bytes(data[:4], "little")
    if length == 0 or 4 + length > memory_size:
        return None
    payload = data[4 : 4 + length]
    complete = len(payload) == length
    notes: list[str] = []

    if payload.startswith(DIDL_MAGIC):
        if not complete:
            return LengthPrefixed(
                length, "candid", False, f"DIDL magic; {length}-byte payload extends past head"
            )
        end = _candid_end(payload)
        if end == length:
            return LengthPrefixed(length, "candid", True, f"Candid message of exactly {length} bytes")
        notes.append("starts with DIDL but is not one Candid message of that length")
    elif payload and 2 <= (payload[0] >> 5) <= 6:
        if complete:
            if is_structured_cbor(payload):
                return LengthPrefixed(length, "cbor", True, f"one CBOR item of exactly {length} bytes")
        else:
            try:
                decode_cbor(payload)
            except CborTruncated as exc:
                if exc.needed_end <= length:
                    return LengthPrefixed(
                        length, "cbor", False, f"CBOR prefix parses; {length}-byte payload extends past head"
                    )
            except CborError:
                pass
            return None

    if not complete or not any(payload):
        return None
    evidence = min(_ZERO_TAIL_EVIDENCE, memory_size - (4 + length))
    tail = data[4 + length : 4 + length + evidence]
    if evidence <= 0 or len(tail) < evidence or any(tail):
        return None
    notes.append(f"neither CBOR nor Candid; followed by {evidence}+ zero bytes")
    return LengthPrefixed(length, "unknown", False, "; ".join(notes))
