"""A small Candid *encoder*, enough to forge what canisters store (FORMAT.md §8.3).

Canisters commonly store Candid messages: a `Storable` whose `to_bytes` is `Encode!(self)` (values in a
BTreeMap or a Cell), and ic-cdk `stable_save`, which writes one message at physical offset 0. The forge
needs such bytes without the Rust `candid` crate, so this module writes them from a type description:

* primitive types are the constants below (``NAT64``, ``TEXT``, ...);
* compound types are ``Opt(t)``, ``VecOf(t)``, ``Record.of({...})`` and ``Variant.of({...})``.

Values are plain Python: ``int``, ``bool``, ``float``, ``str``, ``bytes`` (principals, and ``vec nat8``),
``None`` (an absent ``opt``), ``list``/``tuple`` (vec), ``dict`` (record; a variant is a one-key dict
``{"Tag": payload}`` or a ``(tag, payload)`` pair).

The type table lists compound types in pre-order of first use, like the Rust encoder; the official JS
encoder orders it differently, which decodes to the same values (fixtures/README.md).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAGIC = b"DIDL"


def idl_hash(name: str) -> int:
    """Candid field id of a record/variant label: h = h·223 + byte (mod 2^32) over the UTF-8 bytes."""
    h = 0
    for byte in name.encode("utf-8"):
        h = (h * 223 + byte) & 0xFFFF_FFFF
    return h


def leb128(n: int) -> bytes:
    if n < 0:
        raise ValueError("leb128 encodes non-negative integers only")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sleb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7  # arithmetic shift: negative numbers converge to -1
        done = (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40)
        out.append(byte if done else byte | 0x80)
        if done:
            return bytes(out)


# --- Types --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prim:
    """A primitive type: referenced in the type section by its (negative) opcode, never tabled."""

    name: str
    opcode: int


NULL = Prim("null", -1)
BOOL = Prim("bool", -2)
NAT = Prim("nat", -3)
INT = Prim("int", -4)
NAT8 = Prim("nat8", -5)
NAT16 = Prim("nat16", -6)
NAT32 = Prim("nat32", -7)
NAT64 = Prim("nat64", -8)
INT8 = Prim("int8", -9)
INT16 = Prim("int16", -10)
INT32 = Prim("int32", -11)
INT64 = Prim("int64", -12)
FLOAT32 = Prim("float32", -13)
FLOAT64 = Prim("float64", -14)
TEXT = Prim("text", -15)
RESERVED = Prim("reserved", -16)
EMPTY = Prim("empty", -17)
PRINCIPAL = Prim("principal", -24)

_OPT, _VEC, _RECORD, _VARIANT = -18, -19, -20, -21

# Fixed-width numbers: struct code (always little-endian on the wire).
_FIXED: dict[str, str] = {
    "nat8": "<B",
    "nat16": "<H",
    "nat32": "<I",
    "nat64": "<Q",
    "int8": "<b",
    "int16": "<h",
    "int32": "<i",
    "int64": "<q",
    "float32": "<f",
    "float64": "<d",
}


@dataclass(frozen=True)
class Opt:
    inner: CandidType


@dataclass(frozen=True)
class VecOf:
    inner: CandidType


def _field_id(label: str | int) -> int:
    # Integer labels are tuple-style ids ("0", "1", ...) used as they are.
    return label if isinstance(label, int) else idl_hash(label)


@dataclass(frozen=True)
class Record:
    """Fields kept sorted by field id: the wire order for both the type table and the values."""

    fields: tuple[tuple[str | int, CandidType], ...]

    @classmethod
    def of(cls, fields: Mapping[str, CandidType] | Iterable[tuple[str | int, CandidType]]) -> Record:
        items = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
        return cls(tuple(sorted(items, key=lambda f: _field_id(f[0]))))


@dataclass(frozen=True)
class Variant:
    fields: tuple[tuple[str | int, CandidType], ...]

    @classmethod
    def of(cls, fields: Mapping[str, CandidType] | Iterable[tuple[str | int, CandidType]]) -> Variant:
        items = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
        return cls(tuple(sorted(items, key=lambda f: _field_id(f[0]))))

    def index_of(self, tag: str | int) -> int:
        for i, (label, _t) in enumerate(self.fields):
            if label == tag:
                return i
        raise KeyError(f"variant has no tag {tag!r}")


CandidType = Prim | Opt | VecOf | Record | Variant


# --- Encoding -----------------------------------------------------------------------------------------


class _TypeTable:
    def __init__(self) -> None:
        self.index: dict[CandidType, int] = {}
        self.entries: list[bytes] = []

    def ref(self, t: CandidType) -> int:
        """The sleb128 value that refers to t: its opcode if primitive, else its table index."""
        if isinstance(t, Prim):
            return t.opcode
        found = self.index.get(t)
        if found is not None:
            return found
        # Reserve the slot before visiting children (pre-order numbering, as the Rust encoder does).
        idx = len(self.entries)
        self.index[t] = idx
        self.entries.append(b"")
        if isinstance(t, Opt):
            body = sleb128(_OPT) + sleb128(self.ref(t.inner))
        elif isinstance(t, VecOf):
            body = sleb128(_VEC) + sleb128(self.ref(t.inner))
        else:
            parts = [sleb128(_RECORD if isinstance(t, Record) else _VARIANT), leb128(len(t.fields))]
            for label, ft in t.fields:
                parts.append(leb128(_field_id(label)))
                parts.append(sleb128(self.ref(ft)))
            body = b"".join(parts)
        self.entries[idx] = body
        return idx


def _encode_value(t: CandidType, v: Any, out: bytearray) -> None:
    if isinstance(t, Prim):
        name = t.name
        if name in ("null", "reserved"):
            return
        if name == "bool":
            out.append(1 if v else 0)
        elif name == "nat":
            out += leb128(v)
        elif name == "int":
            out += sleb128(v)
        elif name == "text":
            raw = v.encode("utf-8")
            out += leb128(len(raw))
            out += raw
        elif name == "principal":
            out.append(1)  # 1 = an opaque reference follows (0 would be "transparent", unused)
            out += leb128(len(v))
            out += v
        elif name in _FIXED:
            out += struct.pack(_FIXED[name], v)
        else:
            raise ValueError(f"cannot encode a value of type {name}")
    elif isinstance(t, Opt):
        if v is None:
            out.append(0)
        else:
            out.append(1)
            _encode_value(t.inner, v, out)
    elif isinstance(t, VecOf):
        out += leb128(len(v))
        if t.inner == NAT8 and isinstance(v, bytes | bytearray):
            out += v
        else:
            for item in v:
                _encode_value(t.inner, item, out)
    elif isinstance(t, Record):
        for label, ft in t.fields:
            _encode_value(ft, v[label], out)
    else:
        tag, payload = next(iter(v.items())) if isinstance(v, Mapping) else v
        i = t.index_of(tag)
        out += leb128(i)
        _encode_value(t.fields[i][1], payload, out)


def candid_type_section(arg_types: Sequence[CandidType]) -> bytes:
    """ "DIDL", the type table and the argument type list: everything before the values."""
    table = _TypeTable()
    refs = [table.ref(t) for t in arg_types]
    out = bytearray(MAGIC)
    out += leb128(len(table.entries))
    for entry in table.entries:
        out += entry
    out += leb128(len(refs))
    for r in refs:
        out += sleb128(r)
    return bytes(out)


def candid_values(arg_types: Sequence[CandidType], args: Sequence[Any]) -> bytes:
    """The value section alone (the same bytes whatever order an encoder gives its type table)."""
    if len(arg_types) != len(args):
        raise ValueError("one value per argument type")
    out = bytearray()
    for t, v in zip(arg_types, args, strict=True):
        _encode_value(t, v, out)
    return bytes(out)


def candid_message(arg_types: Sequence[CandidType], args: Sequence[Any]) -> bytes:
    """A complete Candid message: "DIDL", type table, argument types, then the values."""
    return candid_type_section(arg_types) + candid_values(arg_types, args)


def stable_save_message(arg_types: Sequence[CandidType], args: Sequence[Any]) -> bytes:
    """What ic-cdk ``stable_save(args)`` writes at physical offset 0 (FORMAT.md §8.1).

    It is exactly ``candid::write_args`` output: the bare message, with no length prefix or trailer, so
    this is the same bytes as :func:`candid_message`; the separate name documents the intent.
    """
    return candid_message(arg_types, args)
