"""Bounded Candid decoder that keeps the byte range of every value.

Why not a PyPI package: they decode values but report neither offsets nor the consumed length, and tiny
hostile inputs (a 14-byte vector of a billion nulls, a type table of 10^8 entries) hang them. A raw
stable-memory snapshot is hostile input by nature: stale bytes, half-overwritten blobs, random data that
happens to start with ``DIDL``. And a ``stable_save`` blob has no length prefix, so the only way to find
its end is to decode every value; :attr:`CandidMessage.end` is that end.

Wire format (Candid spec, "Binary Format"; facts also in ``shared/FORMAT.md`` §8.3)::

    "DIDL"  leb128 T  T x type-table entry  leb128 N  N x sleb128 type ref  values...

Guarantees:

* Every decoded value is a :class:`CandidValue` with absolute ``start``/``end`` offsets into the buffer
  the caller passed in, and its :class:`CandidType`.
* Any malformed, truncated or over-limit input raises :class:`CandidError` (a ``ValueError``) carrying the
  offending offset. No other exception escapes for any byte content.
* No Python recursion depends on the input: values are decoded with an explicit stack of generators, so
  nesting is bounded only by :attr:`Limits.max_depth`, never by Python's recursion limit.
* Work and memory are bounded by :class:`Limits` and by the number of bytes actually present: every
  length is checked against the bytes that remain before anything is allocated for it.

Only the standard library is used here, on purpose: this module has to be auditable on its own.
Rendering (JSON-able and Candid text forms) lives in :mod:`inspector.decode.candid_render`.
"""

from __future__ import annotations

import gc
import mmap
import struct
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn, overload

from inspector.decode.principal import principal_to_text  # the decoder caps principals at 29 bytes
from inspector.errors import BadFormat, LimitExceeded

__all__ = [
    "DEFAULT_LIMITS",
    "MAGIC",
    "MAX_PRINCIPAL_LEN",
    "PRIMITIVES",
    "CandidError",
    "CandidHeader",
    "CandidMessage",
    "CandidType",
    "CandidValue",
    "FuncRef",
    "FutureValue",
    "Limits",
    "PackedVector",
    "Principal",
    "RepeatedVector",
    "VariantValue",
    "decode_message",
    "looks_like_candid",
    "parse_header",
    "principal_to_text",
]

MAGIC = b"DIDL"

# Type opcodes (Candid spec, "Types"): negative numbers, sleb128-encoded on the wire.
NULL, BOOL, NAT, INT = -1, -2, -3, -4
NAT8, NAT16, NAT32, NAT64 = -5, -6, -7, -8
INT8, INT16, INT32, INT64 = -9, -10, -11, -12
FLOAT32, FLOAT64, TEXT, RESERVED, EMPTY = -13, -14, -15, -16, -17
OPT, VEC, RECORD, VARIANT, FUNC, SERVICE, PRINCIPAL = -18, -19, -20, -21, -22, -23, -24

_PRIM_NAMES: dict[int, str] = {
    NULL: "null",
    BOOL: "bool",
    NAT: "nat",
    INT: "int",
    NAT8: "nat8",
    NAT16: "nat16",
    NAT32: "nat32",
    NAT64: "nat64",
    INT8: "int8",
    INT16: "int16",
    INT32: "int32",
    INT64: "int64",
    FLOAT32: "float32",
    FLOAT64: "float64",
    TEXT: "text",
    RESERVED: "reserved",
    EMPTY: "empty",
    PRINCIPAL: "principal",
}
_CONS_NAMES: dict[int, str] = {
    OPT: "opt",
    VEC: "vec",
    RECORD: "record",
    VARIANT: "variant",
    FUNC: "func",
    SERVICE: "service",
}
# Fixed-width primitives: (size in bytes, struct format letter). bool is validated separately (00/01).
_FIXED: dict[int, tuple[int, str]] = {
    BOOL: (1, "B"),
    NAT8: (1, "B"),
    NAT16: (2, "H"),
    NAT32: (4, "I"),
    NAT64: (8, "Q"),
    INT8: (1, "b"),
    INT16: (2, "h"),
    INT32: (4, "i"),
    INT64: (8, "q"),
    FLOAT32: (4, "f"),
    FLOAT64: (8, "d"),
}
# Smallest encoding of one value, used to reject vector lengths the remaining bytes cannot hold.
_PRIM_MIN_SIZE: dict[int, int] = {NULL: 0, RESERVED: 0, NAT: 1, INT: 1, TEXT: 1, PRINCIPAL: 2, EMPTY: 0}
_PRIM_MIN_SIZE.update({op: size for op, (size, _) in _FIXED.items()})

_FUNC_MODES = {1: "query", 2: "oneway", 3: "composite_query"}
MAX_PRINCIPAL_LEN = 29  # ic_principal::Principal::MAX_LENGTH_IN_BYTES; the Rust decoder rejects longer ones
_UNREACHABLE_SIZE = 1 << 62  # min_size of an uninhabited type: no byte count can hold one


class CandidError(BadFormat, ValueError):
    """Malformed, truncated or over-limit Candid. ``offset`` is the absolute byte offset of the problem."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message, offset)
        self.message = message
        self.offset = offset

    def __str__(self) -> str:
        return f"{self.message} (at byte {self.offset})"


class CandidLimitExceeded(CandidError, LimitExceeded):
    """Candid that claims more than one of the :class:`Limits` allows."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource bounds. The defaults decode any realistic message (the 386 KB fixture makes ~34 k values,
    depth 3) while keeping hostile input to about a second and ~100 MB (a value node costs ~100 bytes).

    * ``max_type_table``: type-table entries; 10 000 like the Rust decoder's ``MAX_TYPE_TABLE_LEN``.
    * ``max_depth``: nesting of opt/vec/record/variant values. Decoding and rendering use explicit stacks,
      so this is not about Python's stack; it keeps trees small enough for consumers that recurse
      (``json.dumps`` included, which shares Python's recursion limit).
    * ``max_values``: value nodes materialised. Elements of packed vectors (fixed-width primitives: one
      byte of memory per input byte, no objects) are not counted.
    * ``max_zero_sized_elements``: elements of vectors whose element type encodes to no bytes at all
      (null, reserved, ``record {}``, ...), counted as nodes per element and summed over the message.
      Nothing else bounds them (a 14-byte message can claim 2^30 nulls); they are not materialised (one
      shared node stands for all of a vector's elements) but every rendering visits each of them.
    * ``max_bignum_bytes``: leb128 bytes of one ``nat``/``int`` (1024 bytes = 7168 bits). Keeps the
      conversion cheap and ``str()`` below Python's 4300-digit limit.
    """

    max_type_table: int = 10_000
    max_depth: int = 256
    max_values: int = 1_000_000
    max_zero_sized_elements: int = 1_000_000
    max_bignum_bytes: int = 1_024


DEFAULT_LIMITS = Limits()


class CandidType:
    """One Candid type: a primitive (shared singleton) or a type-table entry.

    Composite types refer to each other by object and may form cycles (``type List = opt record
    {head: nat; tail: List}``), so equality is identity and ``repr`` never recurses.

    Attributes: ``opcode`` (negative int, see module constants; < -24 is a future type), ``index``
    (type-table index, ``None`` for primitives), ``inner`` (opt/vec element), ``fields`` (record/variant:
    tuple of ``(field_id, CandidType)`` sorted by id), ``func_args``/``func_rets``/``func_modes``,
    ``methods`` (service: ``(name, CandidType)``), ``future_bytes``; derived: ``inhabited`` (a finite value
    exists), ``zero_sized`` (every value encodes to 0 bytes), ``min_size`` (fewest bytes of a value),
    ``leaf`` (values have no child values), ``fixed`` (fixed-width primitive: size, struct letter).
    """

    __slots__ = (
        "opcode",
        "index",
        "inner",
        "fields",
        "func_args",
        "func_rets",
        "func_modes",
        "methods",
        "future_bytes",
        "inhabited",
        "zero_sized",
        "min_size",
        "leaf",
        "fixed",
        "is_tuple",
    )

    def __init__(self, opcode: int, index: int | None = None) -> None:
        self.index = index
        self._set_opcode(opcode)

    def _set_opcode(self, opcode: int) -> None:
        # Table entries are created as placeholders before their bytes are read (entries may refer
        # forward), so everything that follows from the opcode is (re)set here.
        self.opcode = opcode
        self.inner: CandidType | None = None
        self.fields: tuple[tuple[int, CandidType], ...] = ()
        self.func_args: tuple[CandidType, ...] = ()
        self.func_rets: tuple[CandidType, ...] = ()
        self.func_modes: tuple[int, ...] = ()
        self.methods: tuple[tuple[str, CandidType], ...] = ()
        self.future_bytes = b""
        self.leaf = opcode not in (OPT, VEC, RECORD, VARIANT)
        self.fixed: tuple[int, str] | None = _FIXED.get(opcode)
        self.inhabited = opcode != EMPTY
        self.zero_sized = opcode in (NULL, RESERVED)
        self.min_size = _PRIM_MIN_SIZE.get(opcode, 1)
        self.is_tuple = False

    @property
    def kind(self) -> str:
        """``nat64``, ``record``, ``future``, ..."""
        name = _PRIM_NAMES.get(self.opcode) or _CONS_NAMES.get(self.opcode)
        return name if name is not None else "future"

    @property
    def name(self) -> str:
        """Short reference: the primitive's name, or ``table<N>`` for a type-table entry."""
        return self.kind if self.index is None else f"table{self.index}"

    def __repr__(self) -> str:
        where = "" if self.index is None else f" table{self.index}"
        return f"<CandidType {self.kind}{where}>"


# Shared singletons: primitive types are never in the type table, only referenced by opcode.
PRIMITIVES: dict[int, CandidType] = {op: CandidType(op) for op in _PRIM_NAMES}


class Principal(NamedTuple):
    """A principal (or service reference) as raw bytes; ``str()`` gives the textual form."""

    raw: bytes

    def __str__(self) -> str:
        return principal_to_text(self.raw)

    @property
    def text(self) -> str:
        return principal_to_text(self.raw)


class FuncRef(NamedTuple):
    """A public function reference: the service's principal and the method name."""

    principal: Principal
    method: str


class FutureValue(NamedTuple):
    """A value of a type this decoder does not know (opcode < -24): its memory bytes and reference count."""

    data: bytes
    ref_count: int


class VariantValue(NamedTuple):
    """The chosen case of a variant: position in the type's field list, field id (hash), payload."""

    # `case_index`, not `index`: a NamedTuple field called `index` hides tuple.index().
    case_index: int
    field_id: int
    value: CandidValue


class CandidValue:
    """A decoded value and where its encoding sits: bytes ``[start, end)`` of the caller's buffer.

    ``value`` by kind:

    * null, reserved: ``None``; bool: ``bool``; nat*/int*: ``int``; float*: ``float``; text: ``str``
    * principal, service: :class:`Principal`; func: :class:`FuncRef`; future types: :class:`FutureValue`
    * opt: ``CandidValue`` or ``None``
    * vec: a sequence of ``CandidValue`` (a ``list``, a :class:`PackedVector` for fixed-width primitive
      elements, or a :class:`RepeatedVector` for zero-sized elements)
    * record: ``tuple[CandidValue, ...]`` aligned with ``type.fields`` (ascending field id);
      :meth:`fields` pairs them with their ids. (No per-field pair objects: they would double the memory
      of a big message.)
    * variant: :class:`VariantValue`
    """

    __slots__ = ("type", "start", "end", "value")

    def __init__(self, type: CandidType, start: int, end: int, value: Any) -> None:
        self.type = type
        self.start = start
        self.end = end
        self.value = value

    @property
    def kind(self) -> str:
        return self.type.kind

    def fields(self) -> list[tuple[int, CandidValue]]:
        """A record's ``(field_id, value)`` pairs in wire order; empty for other kinds."""
        if self.type.opcode != RECORD:
            return []
        return [(fid, child) for (fid, _), child in zip(self.type.fields, self.value, strict=True)]

    def children(self) -> list[tuple[int, CandidValue]]:
        """Direct child values as ``(label, child)``: field id for records and variants, index for
        vectors, 0 for a present opt. Builds a list, so for huge vectors index ``value`` directly."""
        t = self.type.opcode
        v = self.value
        if t == RECORD:
            return self.fields()
        if t == VARIANT:
            return [(v.field_id, v.value)]
        if t == OPT:
            return [] if v is None else [(0, v)]
        if t == VEC:
            return list(enumerate(v))
        return []

    def __repr__(self) -> str:
        return f"<CandidValue {self.type.name} [{self.start}, {self.end})>"


class PackedVector(Sequence[CandidValue]):
    """Elements of a vector of a fixed-width primitive (bool, nat8..nat64, int8..int64, float32/64).

    Only the encoded bytes are kept (``raw``; for ``vec nat8`` that is the blob itself), and element
    nodes are built on access: element ``i`` occupies ``[start + i*size, start + (i+1)*size)``. Memory is
    therefore one byte per input byte, never one object per element: a multi-megabyte blob, or a hostile
    length that the remaining bytes happen to cover, costs no more than the bytes themselves.
    """

    __slots__ = ("elem_type", "start", "elem_size", "raw", "_unpack")

    def __init__(self, elem_type: CandidType, start: int, raw: bytes) -> None:
        assert elem_type.fixed is not None
        self.elem_type = elem_type
        self.start = start
        self.elem_size, letter = elem_type.fixed
        self.raw = raw
        self._unpack = struct.Struct("<" + letter).unpack_from

    def __len__(self) -> int:
        return len(self.raw) // self.elem_size

    def scalar(self, i: int) -> Any:
        """Element ``i`` as a Python value (``bool`` for ``vec bool``), without building a node."""
        v = self._unpack(self.raw, i * self.elem_size)[0]
        return v == 1 if self.elem_type.opcode == BOOL else v

    def _node(self, i: int) -> CandidValue:
        s = self.start + i * self.elem_size
        return CandidValue(self.elem_type, s, s + self.elem_size, self.scalar(i))

    @overload
    def __getitem__(self, i: int) -> CandidValue: ...
    @overload
    def __getitem__(self, i: slice) -> list[CandidValue]: ...
    def __getitem__(self, i: int | slice) -> CandidValue | list[CandidValue]:
        n = len(self)
        if isinstance(i, slice):
            return [self._node(j) for j in range(*i.indices(n))]
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("PackedVector index out of range")
        return self._node(i)

    def __iter__(self) -> Iterator[CandidValue]:
        for i in range(len(self)):
            yield self._node(i)

    def python_values(self) -> list[Any]:
        """All elements as Python values (``bool`` for ``vec bool``). Allocates one object per element."""
        op = self.elem_type.opcode
        if op == NAT8:
            return list(self.raw)
        if op == BOOL:
            return [b == 1 for b in self.raw]
        letter = self.elem_type.fixed[1]  # type: ignore[index]
        return list(struct.unpack(f"<{len(self)}{letter}", self.raw))


class RepeatedVector(Sequence[CandidValue]):
    """Elements of a vector of a zero-sized type: they all encode to nothing at the same offset, so one
    decoded ``template`` stands for every element."""

    __slots__ = ("template", "length")

    def __init__(self, template: CandidValue, length: int) -> None:
        self.template = template
        # `length`, not `count`: `count(x)` is the Sequence method and must keep working.
        self.length = length

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, i: int) -> CandidValue: ...
    @overload
    def __getitem__(self, i: slice) -> list[CandidValue]: ...
    def __getitem__(self, i: int | slice) -> CandidValue | list[CandidValue]:
        if isinstance(i, slice):
            return [self.template] * len(range(*i.indices(self.length)))
        if not -self.length <= i < self.length:
            raise IndexError("RepeatedVector index out of range")
        return self.template

    def __iter__(self) -> Iterator[CandidValue]:
        for _ in range(self.length):
            yield self.template


@dataclass(frozen=True, slots=True)
class CandidHeader:
    """Everything before the values: ``[start, values_start)``."""

    start: int
    values_start: int
    table: tuple[CandidType, ...]
    arg_types: tuple[CandidType, ...]


@dataclass(frozen=True, slots=True)
class CandidMessage:
    """A fully decoded message occupying ``[start, end)`` of the buffer."""

    start: int
    values_start: int
    end: int
    table: tuple[CandidType, ...]
    arg_types: tuple[CandidType, ...]
    args: tuple[CandidValue, ...]
    value_count: int

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def header(self) -> CandidHeader:
        return CandidHeader(self.start, self.values_start, self.table, self.arg_types)

    def path_at(self, offset: int) -> list[CandidValue]:
        """Values whose byte range contains ``offset``, outermost first (empty if none does).

        Zero-width values never contain an offset. Meant for a hex view: the last element is the
        innermost value to highlight."""
        path: list[CandidValue] = []
        candidates: Sequence[CandidValue] = self.args
        while True:
            hit = _find_containing(candidates, offset)
            if hit is None:
                return path
            path.append(hit)
            t = hit.type.opcode
            if t == RECORD or t == VEC:
                candidates = hit.value
            elif t == OPT:
                candidates = [] if hit.value is None else [hit.value]
            elif t == VARIANT:
                candidates = [hit.value.value]
            else:
                return path


def _find_containing(nodes: Sequence[CandidValue], offset: int) -> CandidValue | None:
    # Siblings are laid out in increasing, non-overlapping order, so bisect on start.
    lo, hi = 0, len(nodes)
    while lo < hi:
        mid = (lo + hi) // 2
        if nodes[mid].end <= offset:
            lo = mid + 1
        else:
            hi = mid
    # Zero-width siblings can share a start; skip them to the one that actually spans the offset.
    while lo < len(nodes):
        node = nodes[lo]
        if node.start > offset:
            return None
        if node.start <= offset < node.end:
            return node
        lo += 1
    return None


# ---------------------------------------------------------------------------------------------------------
# Byte reading


def _as_readable(buf: Any) -> Any:
    """Something indexable by int (giving ints), sliceable and accepted by ``struct.unpack_from``,
    without copying: snapshots can be gigabytes behind an mmap."""
    if isinstance(buf, bytes | bytearray | mmap.mmap):
        return buf
    if isinstance(buf, memoryview):
        if buf.format == "B" and buf.ndim == 1 and buf.c_contiguous:
            return buf
        if buf.c_contiguous:
            return buf.cast("B")
        return buf.tobytes()
    raise TypeError(f"expected bytes, bytearray, memoryview or mmap, not {type(buf).__name__}")


class _Reader:
    """Cursor over ``data[pos:end]`` with bounded leb128 reads. All reads raise CandidError at the end."""

    __slots__ = ("data", "pos", "end", "limits")

    def __init__(self, data: Any, pos: int, end: int, limits: Limits) -> None:
        self.data = data
        self.pos = pos
        self.end = end
        self.limits = limits

    def fail(self, message: str, at: int | None = None) -> NoReturn:
        raise CandidError(message, self.pos if at is None else at)

    def over_limit(self, message: str, at: int | None = None) -> NoReturn:
        raise CandidLimitExceeded(message, self.pos if at is None else at)

    def remaining(self) -> int:
        return self.end - self.pos

    def u8(self, what: str) -> int:
        p = self.pos
        if p >= self.end:
            self.fail(f"unexpected end of input reading {what}")
        self.pos = p + 1
        return self.data[p]

    def take(self, n: int, what: str) -> bytes:
        p = self.pos
        if n > self.end - p:
            self.fail(f"{what} needs {n} bytes but only {self.end - p} remain")
        self.pos = p + n
        return bytes(self.data[p : p + n])

    def _leb128(self, kind: str, what: str, max_bytes: int, limit: str = "") -> tuple[int, int, int, int]:
        """The one leb128 loop (nat, int, and the 64-bit lengths, ids and type references): reads the 7-bit
        groups at the cursor and returns (their value as unsigned, bits read, last byte, end position).

        The cursor is not moved, so a caller's range check still reports the number's start. ``kind`` and
        ``what`` name the number in messages; more than ``max_bytes`` bytes fails, as over the limit
        ``limit`` when one is named."""
        data, p, end = self.data, self.pos, self.end
        start = p
        result = 0
        shift = 0
        while True:
            if p >= end:
                self.fail(f"unexpected end of input in {kind} {what}".rstrip(), p)
            b = data[p]
            p += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return result, shift, b, p
            if p - start >= max_bytes:
                name = f"{kind} {what}".rstrip()
                if limit:
                    self.over_limit(f"{name} longer than {max_bytes} bytes ({limit})")
                self.fail(f"{name} longer than {max_bytes} bytes")

    def leb(self, what: str) -> int:
        """Unsigned leb128 that must fit in 64 bits (what the Rust decoder accepts for lengths/ids)."""
        result, _bits, _last, p = self._leb128("leb128", what, 10)
        if result >> 64:
            self.fail(f"leb128 {what} does not fit in 64 bits")
        self.pos = p
        return result

    def sleb(self, what: str) -> int:
        """Signed leb128 that must fit in 64 bits (type references and opcodes)."""
        result, bits, last, p = self._leb128("sleb128", what, 10)
        if last & 0x40:
            result -= 1 << bits
        if not -(1 << 63) <= result < (1 << 63):
            self.fail(f"sleb128 {what} does not fit in 64 bits")
        self.pos = p
        return result

    def big_leb(self, signed: bool) -> int:
        """nat (leb128) / int (sleb128) of unbounded width, capped at ``max_bignum_bytes``."""
        kind = "int" if signed else "nat"
        result, bits, last, p = self._leb128(
            kind, "", self.limits.max_bignum_bytes, "Limits.max_bignum_bytes"
        )
        if signed and last & 0x40:
            result -= 1 << bits
        self.pos = p
        return result

    def text(self) -> str:
        n = self.leb("text length")
        p = self.pos
        if n > self.end - p:
            self.fail(f"text of {n} bytes but only {self.end - p} remain")
        try:
            s = str(self.data[p : p + n], "utf-8")
        except UnicodeDecodeError as exc:
            self.fail(f"text is not valid UTF-8 ({exc.reason})", p + exc.start)
        self.pos = p + n
        return s

    def principal_bytes(self, what: str) -> bytes:
        flag_at = self.pos
        flag = self.u8(what)
        if flag != 1:
            # Both reference decoders (Rust, JS) reject opaque references (flag 0) in a message.
            self.fail(
                f"{what}: reference flag {flag:#04x}, expected 0x01 (opaque references unsupported)", flag_at
            )
        n = self.leb(f"{what} length")
        if n > MAX_PRINCIPAL_LEN:
            self.fail(f"{what} of {n} bytes, longer than {MAX_PRINCIPAL_LEN}")
        return self.take(n, what)


# ---------------------------------------------------------------------------------------------------------
# Header: magic, type table, argument types


def _read_type_ref(r: _Reader, table: list[CandidType], what: str) -> CandidType:
    at = r.pos
    ref = r.sleb(what)
    if ref >= 0:
        if ref >= len(table):
            r.fail(f"{what} refers to type-table entry {ref}, table has {len(table)}", at)
        return table[ref]
    prim = PRIMITIVES.get(ref)
    if prim is None:
        r.fail(f"{what}: {ref} is not a primitive type opcode (composite types must be in the table)", at)
    return prim


def _read_header(r: _Reader) -> CandidHeader:
    start = r.pos
    if r.remaining() < 4 or bytes(r.data[start : start + 4]) != MAGIC:
        r.fail("no DIDL magic")
    r.pos += 4
    at = r.pos
    count = r.leb("type table length")
    if count > r.limits.max_type_table:
        r.over_limit(f"type table of {count} entries exceeds the limit of {r.limits.max_type_table}", at)
    if count * 2 > r.remaining():
        # Every entry takes at least 2 bytes (opcode + one more), so this bounds work before allocating.
        r.fail(f"type table of {count} entries cannot fit in the {r.remaining()} bytes left", at)

    # Entries may refer forward and to themselves: create placeholders, then fill each in as it is read.
    table = [CandidType(0, i) for i in range(count)]
    for i, t in enumerate(table):
        _read_entry(r, t, table, i)
    for t in table:
        if t.opcode == SERVICE:
            for name, mt in t.methods:
                if mt.opcode != FUNC:
                    r.fail(f"service table{t.index} method {name!r} has non-function type {mt.name}", at)
    _analyse(table)

    at = r.pos
    nargs = r.leb("argument count")
    if nargs > r.remaining():
        r.fail(f"{nargs} argument types cannot fit in the {r.remaining()} bytes left", at)
    args = tuple(_read_type_ref(r, table, f"argument {i} type") for i in range(nargs))
    return CandidHeader(start, r.pos, tuple(table), args)


def _read_fields(
    r: _Reader, table: list[CandidType], i: int, what: str
) -> tuple[tuple[int, CandidType], ...]:
    at = r.pos
    n = r.leb(f"{what} field count")
    if n * 2 > r.remaining():
        r.fail(f"{what} with {n} fields cannot fit in the {r.remaining()} bytes left", at)
    fields: list[tuple[int, CandidType]] = []
    prev = -1
    for _ in range(n):
        at = r.pos
        fid = r.leb(f"{what} field id")
        if fid >> 32:
            r.fail(f"{what} field id {fid} out of 32-bit range", at)
        if fid <= prev:
            r.fail(f"{what} field id {fid} duplicate or not in ascending order", at)
        prev = fid
        fields.append((fid, _read_type_ref(r, table, f"type of field {fid} in table{i}")))
    return tuple(fields)


def _read_entry(r: _Reader, t: CandidType, table: list[CandidType], i: int) -> None:
    at = r.pos
    op = r.sleb("type opcode")
    if op in (OPT, VEC):
        t._set_opcode(op)
        t.inner = _read_type_ref(r, table, f"table{i} {_CONS_NAMES[op]} element type")
    elif op in (RECORD, VARIANT):
        t._set_opcode(op)
        t.fields = _read_fields(r, table, i, _CONS_NAMES[op])
        t.is_tuple = op == RECORD and bool(t.fields) and all(fid == k for k, (fid, _) in enumerate(t.fields))
    elif op == FUNC:
        t._set_opcode(op)
        lists: list[tuple[CandidType, ...]] = []
        for part in ("argument", "result"):
            at_n = r.pos
            n = r.leb(f"func {part} count")
            if n > r.remaining():
                r.fail(f"func with {n} {part}s cannot fit in the {r.remaining()} bytes left", at_n)
            lists.append(tuple(_read_type_ref(r, table, f"table{i} func {part}") for _ in range(n)))
        t.func_args, t.func_rets = lists
        at_n = r.pos
        n = r.leb("func annotation count")
        if n > r.remaining():
            r.fail(f"func with {n} annotations cannot fit in the {r.remaining()} bytes left", at_n)
        modes = []
        for _ in range(n):
            at_m = r.pos
            m = r.u8("func annotation")
            if m not in _FUNC_MODES:
                r.fail(f"unknown func annotation {m}", at_m)
            modes.append(m)
        t.func_modes = tuple(modes)
    elif op == SERVICE:
        t._set_opcode(op)
        at_n = r.pos
        n = r.leb("service method count")
        if n * 2 > r.remaining():
            r.fail(f"service with {n} methods cannot fit in the {r.remaining()} bytes left", at_n)
        methods: list[tuple[str, CandidType]] = []
        for _ in range(n):
            at_m = r.pos
            name = r.text()
            if methods and name <= methods[-1][0]:
                r.fail(f"service method {name!r} duplicate or not in ascending order", at_m)
            methods.append((name, _read_type_ref(r, table, f"table{i} method {name!r}")))
        t.methods = tuple(methods)
    elif op < PRINCIPAL:
        # A "future" type: an opcode this version of Candid does not know, skippable by its length.
        t._set_opcode(op)
        n = r.leb("future type length")
        t.future_bytes = r.take(n, "future type")
        t.min_size = 2
    else:
        r.fail(f"type-table entry {i} has opcode {op}, which is not a composite type", at)


def _analyse(table: list[CandidType]) -> None:
    """Decide which entries are inhabited, zero-sized, and their minimal encoded size.

    Uninhabited entries are records that (through records only) contain themselves, e.g. ``type T =
    record { T }``: no finite value exists, and a naive decoder would descend forever without consuming
    a byte. opt/vec/variant always consume a byte per level, so they cannot loop that way. This is a
    least fixed point, computed with a worklist so that 10 000 entries stay linear, not quadratic.
    """
    waiting: dict[int, int] = {}  # record entry index -> fields not yet known inhabited
    dependents: dict[int, list[CandidType]] = {}
    ready: list[CandidType] = []
    for t in table:
        if t.opcode in (RECORD, VARIANT):
            t.inhabited = False
            t.zero_sized = False
            t.min_size = _UNREACHABLE_SIZE
            pending = 0
            for _, ft in t.fields:
                if ft.index is None:
                    if ft.inhabited:
                        continue
                    if t.opcode == RECORD:
                        pending += 1  # a record with an `empty` field never becomes inhabited
                    continue
                pending += 1
                dependents.setdefault(ft.index, []).append(t)
            if t.opcode == RECORD:
                waiting[t.index] = pending  # type: ignore[index]
                if pending == 0:
                    ready.append(t)
            elif any(ft.index is None and ft.inhabited for _, ft in t.fields):
                ready.append(t)
        else:
            ready.append(t)  # opt, vec, func, service, future: always inhabited

    while ready:
        t = ready.pop()
        if t.opcode in (RECORD, VARIANT) and t.inhabited:
            continue
        if t.opcode == RECORD:
            t.zero_sized = all(ft.zero_sized for _, ft in t.fields)
            t.min_size = min(_UNREACHABLE_SIZE, sum(ft.min_size for _, ft in t.fields))
        elif t.opcode == VARIANT:
            t.min_size = 1
        t.inhabited = True
        for dep in dependents.get(t.index, ()):  # type: ignore[arg-type]
            if dep.inhabited:
                continue
            if dep.opcode == VARIANT:
                ready.append(dep)
            else:
                left = waiting[dep.index] - 1  # type: ignore[index]
                waiting[dep.index] = left  # type: ignore[index]
                if left == 0:
                    ready.append(dep)


# ---------------------------------------------------------------------------------------------------------
# Values


_ValueGen = Generator[CandidType, CandidValue, CandidValue]


class _ValueDecoder(_Reader):
    """Decodes values with an explicit stack: each composite value is a generator that yields the types of
    its composite children and receives their decoded nodes, so input depth never reaches the C stack."""

    __slots__ = ("count", "zero_sized_count", "_leaf_readers")

    def __init__(self, data: Any, pos: int, end: int, limits: Limits) -> None:
        super().__init__(data, pos, end, limits)
        self.count = 0
        self.zero_sized_count = 0
        fixed = {op: self._fixed_reader(op, size, letter) for op, (size, letter) in _FIXED.items()}
        self._leaf_readers: dict[int, Callable[[], Any]] = {
            **fixed,
            NULL: lambda: None,
            RESERVED: lambda: None,
            NAT: lambda: self.big_leb(False),
            INT: lambda: self.big_leb(True),
            TEXT: self.text,
            PRINCIPAL: lambda: Principal(self.principal_bytes("principal")),
            SERVICE: lambda: Principal(self.principal_bytes("service reference")),
            FUNC: self._func,
        }

    def _fixed_reader(self, op: int, size: int, letter: str) -> Callable[[], Any]:
        unpack = struct.Struct("<" + letter).unpack_from
        what = _PRIM_NAMES[op]

        def read() -> Any:
            p = self.pos
            if self.end - p < size:
                self.fail(f"unexpected end of input reading {what}")
            self.pos = p + size
            v = unpack(self.data, p)[0]
            if op == BOOL:
                if v > 1:
                    self.fail(f"bool byte {v:#04x} is neither 0 nor 1", p)
                return v == 1
            return v

        return read

    def _func(self) -> FuncRef:
        at = self.pos
        flag = self.u8("func reference")
        if flag != 1:
            self.fail(f"func reference flag {flag:#04x}, expected 0x01 (opaque references unsupported)", at)
        principal = Principal(self.principal_bytes("func service reference"))
        return FuncRef(principal, self.text())

    def _bump(self) -> None:
        self.count += 1
        if self.count > self.limits.max_values:
            self.over_limit(f"more than {self.limits.max_values} values (Limits.max_values)")

    def leaf(self, t: CandidType) -> CandidValue:
        start = self.pos
        self.count += 1
        if self.count > self.limits.max_values:
            self.over_limit(f"more than {self.limits.max_values} values (Limits.max_values)")
        reader = self._leaf_readers.get(t.opcode)
        if reader is not None:
            v = reader()
            return CandidValue(t, start, self.pos, v)
        if t.opcode == EMPTY:
            self.fail("a value of type empty cannot exist")
        # Future type: leb128 byte count m, leb128 reference count n, then m bytes.
        m = self.leb("future value length")
        n = self.leb("future value reference count")
        data = self.take(m, "future value")
        return CandidValue(t, start, self.pos, FutureValue(data, n))

    def value(self, t: CandidType) -> CandidValue:
        if t.leaf:
            return self.leaf(t)
        max_depth = self.limits.max_depth
        stack: list[_ValueGen] = [self._composite(t)]
        sent: CandidValue | None = None
        while True:
            try:
                child = stack[-1].send(sent)  # type: ignore[arg-type]
            except StopIteration as done:
                stack.pop()
                if not stack:
                    return done.value
                sent = done.value
                continue
            if len(stack) >= max_depth:
                self.over_limit(f"values nested deeper than {max_depth} (Limits.max_depth)")
            stack.append(self._composite(child))
            sent = None

    def _composite(self, t: CandidType) -> _ValueGen:
        if not t.inhabited:
            self.fail(f"no value of {t.name} can exist: it contains itself (through records) or empty")
        op = t.opcode
        if op == RECORD:
            return self._record(t)
        if op == VEC:
            return self._vec(t)
        if op == OPT:
            return self._opt(t)
        return self._variant(t)

    def _record(self, t: CandidType) -> _ValueGen:
        start = self.pos
        self._bump()
        items: list[CandidValue] = []
        for _, ft in t.fields:
            items.append(self.leaf(ft) if ft.leaf else (yield ft))
        return CandidValue(t, start, self.pos, tuple(items))

    def _opt(self, t: CandidType) -> _ValueGen:
        start = self.pos
        self._bump()
        flag = self.u8("opt flag")
        if flag == 0:
            return CandidValue(t, start, self.pos, None)
        if flag != 1:
            self.fail(f"opt flag {flag:#04x} is neither 0 nor 1", start)
        inner = t.inner
        assert inner is not None
        node = self.leaf(inner) if inner.leaf else (yield inner)
        return CandidValue(t, start, self.pos, node)

    def _variant(self, t: CandidType) -> _ValueGen:
        start = self.pos
        self._bump()
        idx = self.leb("variant index")
        if idx >= len(t.fields):
            self.fail(f"variant index {idx} but the variant has {len(t.fields)} cases", start)
        fid, ft = t.fields[idx]
        node = self.leaf(ft) if ft.leaf else (yield ft)
        return CandidValue(t, start, self.pos, VariantValue(idx, fid, node))

    def _vec(self, t: CandidType) -> _ValueGen:
        start = self.pos
        self._bump()
        n = self.leb("vector length")
        el = t.inner
        assert el is not None
        data_start = self.pos
        remaining = self.end - data_start
        if n == 0:
            return CandidValue(t, start, data_start, [])
        if not el.inhabited:
            self.fail(f"vector of {n} elements of {el.name}, a type with no values", start)
        if el.fixed is not None:
            size = el.fixed[0]
            if n * size > remaining:
                self.fail(
                    f"vector of {n} {el.kind} needs {n * size} bytes but only {remaining} remain", start
                )
            raw = bytes(self.data[data_start : data_start + n * size])
            if el.opcode == BOOL and max(raw) > 1:
                bad = next(i for i, b in enumerate(raw) if b > 1)
                self.fail(f"bool byte {raw[bad]:#04x} is neither 0 nor 1", data_start + bad)
            self.pos = data_start + n * size
            return CandidValue(t, start, self.pos, PackedVector(el, data_start, raw))
        if el.zero_sized:
            cap = self.limits.max_zero_sized_elements
            if self.zero_sized_count + n > cap:  # each element is at least one node
                self.fail(
                    f"vector of {n} zero-sized {el.name}: over {cap} (Limits.max_zero_sized_elements)", start
                )
            before = self.count
            template = self.leaf(el) if el.leaf else (yield el)
            self.zero_sized_count += n * (self.count - before)
            if self.zero_sized_count > cap:
                self.fail(
                    f"vector of {n} zero-sized {el.name}: over {cap} (Limits.max_zero_sized_elements)", start
                )
            return CandidValue(t, start, self.pos, RepeatedVector(template, n))
        if n * el.min_size > remaining:
            self.fail(
                f"vector of {n} {el.name} needs at least {n * el.min_size} bytes but only {remaining} remain",
                start,
            )
        items: list[CandidValue] = []
        if el.leaf:
            leaf = self.leaf
            items = [leaf(el) for _ in range(n)]
        else:
            for _ in range(n):
                items.append((yield el))
        return CandidValue(t, start, self.pos, items)


# ---------------------------------------------------------------------------------------------------------
# Public entry points


def _bounds(buf: Any, offset: int, end: int | None) -> tuple[Any, int]:
    data = _as_readable(buf)
    size = len(data)
    stop = size if end is None else end
    if not 0 <= offset <= stop <= size:
        raise CandidError(f"offset {offset} / end {end} outside the buffer of {size} bytes", offset)
    return data, stop


def parse_header(
    buf: bytes | bytearray | memoryview | mmap.mmap,
    offset: int = 0,
    *,
    end: int | None = None,
    limits: Limits | None = None,
) -> CandidHeader:
    """Parse magic, type table and argument types at ``offset``; values are not read."""
    data, stop = _bounds(buf, offset, end)
    r = _Reader(data, offset, stop, limits or DEFAULT_LIMITS)
    try:
        return _read_header(r)
    except CandidError:
        raise
    except (IndexError, struct.error, ValueError, OverflowError) as exc:  # pragma: no cover - safety net
        raise CandidError(f"malformed Candid header ({type(exc).__name__}: {exc})", r.pos) from exc


def leb128_prefix(data: Any, signed: bool = False, max_bytes: int = 10) -> tuple[int, int] | None:
    """(value, bytes used) of the (S)LEB128 number at the start of ``data``, read by the decoder's one
    leb128 loop; None when it does not end within ``max_bytes`` bytes (or within ``data``)."""
    r = _Reader(_as_readable(data), 0, min(len(data), max_bytes), DEFAULT_LIMITS)
    try:
        value, bits, last, end = r._leb128("leb128", "", max_bytes)
    except CandidError:
        return None
    if signed and last & 0x40:
        value -= 1 << bits
    return value, end


def decode_message(
    buf: bytes | bytearray | memoryview | mmap.mmap,
    offset: int = 0,
    *,
    end: int | None = None,
    limits: Limits | None = None,
) -> CandidMessage:
    """Decode one whole Candid message starting at ``offset``.

    ``end`` (exclusive, absolute) bounds how far the message may extend; by default the end of ``buf``.
    Bytes after the message are ignored, as ``stable_restore`` does; ``result.end`` tells where it ended.
    Raises :class:`CandidError` on anything malformed or over ``limits``.
    """
    data, stop = _bounds(buf, offset, end)
    lim = limits or DEFAULT_LIMITS
    dec = _ValueDecoder(data, offset, stop, lim)
    # The tree is acyclic, yet allocating up to a million container objects triggers the cyclic collector
    # over and over (measured: 4x slower for 500k records). Pause it while building; restore it always.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        header = _read_header(dec)
        args = tuple(dec.value(t) for t in header.arg_types)
    except CandidError:
        raise
    except (IndexError, struct.error, ValueError, OverflowError, RecursionError) as exc:  # pragma: no cover
        # Safety net only: every read is bounds-checked above. If this fires it is a decoder bug, but the
        # caller still gets the one exception type it was promised.
        raise CandidError(f"malformed Candid ({type(exc).__name__}: {exc})", dec.pos) from exc
    finally:
        if gc_was_enabled:
            gc.enable()
    return CandidMessage(
        start=offset,
        values_start=header.values_start,
        end=dec.pos,
        table=header.table,
        arg_types=header.arg_types,
        args=args,
        value_count=dec.count,
    )


def looks_like_candid(
    buf: bytes | bytearray | memoryview | mmap.mmap, offset: int = 0, *, end: int | None = None
) -> bool:
    """Cheap check for scanners: ``DIDL`` at ``offset`` followed by a type table and argument list that
    parse. Values are not decoded, so a True answer is a candidate, not a proof."""
    try:
        data = _as_readable(buf)
        if bytes(data[offset : offset + 4]) != MAGIC:
            return False
        parse_header(data, offset, end=end)
    except (CandidError, TypeError):
        return False
    return True
