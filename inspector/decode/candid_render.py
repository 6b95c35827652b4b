"""Renderings of decoded Candid values: a JSON-able form and Candid text.

JSON-able form (:func:`to_json`) follows the official JS decoder (``@dfinity/candid`` ``IDL.decode``) as
the fixtures record it, after a JSON round trip that turns BigInt into decimal strings:

* ``nat``, ``int``, ``nat64``, ``int64`` (BigInt in JS) -> decimal ``str``; ``nat8/16/32``,
  ``int8/16/32`` -> ``int``; ``float32/64`` -> ``float``; ``bool`` -> ``bool``; ``text`` -> ``str``
* ``null``, ``reserved`` -> ``None``; ``principal`` and ``service`` -> textual principal
* ``func`` -> ``[principal_text, method]`` (what JS gives: ``[Principal, string]``)
* ``opt`` -> ``[]`` or ``[x]``; ``vec`` -> ``list`` (``vec nat8`` -> list of ints; JS gives a
  Uint8Array, which has no JSON form of its own)
* ``record`` -> ``dict`` in wire (field-id) order, keyed by field name from ``names``, else by
  ``"_<id>_"`` (the JS library's own spelling of an unnamed field, e.g. ``_3_``); a record whose ids are
  exactly 0..n-1 (n >= 1, a tuple) -> ``list``; ``record {}`` -> ``{}``
* ``variant`` -> ``{label: payload}`` (``{"Admin": None}`` for a null payload)
* values of future types -> ``None``

Candid text (:func:`to_text`) is close to ``didc decode`` output: ``record { name = "x"; role = variant {
Admin } }``, ``opt 5``, ``vec { 1; 2 }``, ``blob "\\01\\02"``, ``principal "aaaaa-aa"``, ``42`` for
``nat``, ``+42``/``-42`` for ``int``, ``1_234 : nat64`` for sized numbers, underscores every 3 digits.
Values that fit in ``width`` columns stay on one line, others break one field/element per line.

Neither renderer recurses per nesting level: both run generators on an explicit stack, so a value at any
depth :class:`~inspector.decode.candid.Limits` allows renders without hitting Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from itertools import islice
from typing import Any

from inspector.decode.candid import (
    BOOL,
    FLOAT32,
    FLOAT64,
    FUNC,
    INT,
    INT64,
    NAT,
    NAT8,
    NAT64,
    NULL,
    OPT,
    PRINCIPAL,
    RECORD,
    RESERVED,
    SERVICE,
    TEXT,
    VARIANT,
    VEC,
    CandidMessage,
    CandidType,
    CandidValue,
    FuncRef,
    FutureValue,
    PackedVector,
)

__all__ = [
    "args_to_text",
    "json_label",
    "message_types_text",
    "text_label",
    "to_json",
    "to_text",
    "type_text",
]

_BIGINT_OPS = frozenset({NAT, INT, NAT64, INT64})
_KEYWORDS = frozenset(
    (
        "type import opt vec record variant func service oneway query composite_query blob principal null "
        "bool nat nat8 nat16 nat32 nat64 int int8 int16 int32 int64 float32 float64 text reserved empty "
        "true false"
    ).split()
)


def json_label(field_id: int, names: Mapping[int, str] | None) -> str:
    """Key of a record field / variant case in the JSON form: its name, else ``_<id>_`` like JS."""
    if names:
        name = names.get(field_id)
        if name is not None:
            return name
    return f"_{field_id}_"


def _json_leaf(t: CandidType, v: Any) -> Any:
    op = t.opcode
    if op in _BIGINT_OPS:
        return str(v)
    if op == PRINCIPAL or op == SERVICE:
        return v.text
    if op == FUNC:
        return [v.principal.text, v.method]
    if isinstance(v, FutureValue) or op in (NULL, RESERVED):
        return None
    return v  # bool, small ints, floats, text


_JsonGen = Generator[CandidValue, Any, Any]


def _json_gen(node: CandidValue, names: Mapping[int, str] | None) -> _JsonGen:
    t = node.type
    v = node.value
    op = t.opcode
    if t.leaf:
        return _json_leaf(t, v)
    if op == OPT:
        if v is None:
            return []
        return [_json_leaf(v.type, v.value) if v.type.leaf else (yield v)]
    if op == VEC:
        if isinstance(v, PackedVector):
            el = v.elem_type
            if el.opcode in _BIGINT_OPS:
                return [str(x) for x in v.python_values()]
            return v.python_values()
        out: list[Any] = []
        for item in v:
            out.append(_json_leaf(item.type, item.value) if item.type.leaf else (yield item))
        return out
    if op == RECORD:
        if t.is_tuple:
            items: list[Any] = []
            for child in v:
                items.append(_json_leaf(child.type, child.value) if child.type.leaf else (yield child))
            return items
        obj: dict[str, Any] = {}
        for (fid, _), child in zip(t.fields, v, strict=True):
            obj[json_label(fid, names)] = (
                _json_leaf(child.type, child.value) if child.type.leaf else (yield child)
            )
        return obj
    assert op == VARIANT
    child = v.value
    payload = _json_leaf(child.type, child.value) if child.type.leaf else (yield child)
    return {json_label(v.field_id, names): payload}


def to_json(value: CandidValue, names: Mapping[int, str] | None = None) -> Any:
    """JSON-able form of one decoded value (conventions in the module docstring)."""
    stack = [_json_gen(value, names)]
    sent: Any = None
    while True:
        try:
            child = stack[-1].send(sent)
        except StopIteration as done:
            stack.pop()
            if not stack:
                return done.value
            sent = done.value
            continue
        stack.append(_json_gen(child, names))
        sent = None


# ---------------------------------------------------------------------------------------------------------
# Candid text


def _is_ident(name: str) -> bool:
    return (
        name.isascii()
        and (name[:1].isalpha() or name[:1] == "_")
        and name.replace("_", "a").isalnum()
        and name not in _KEYWORDS
    )


def _quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        else:
            # Control, format (bidi overrides...) and separator characters would garble a terminal.
            out.append(f"\\u{{{ord(ch):x}}}")
    out.append('"')
    return "".join(out)


def text_label(field_id: int, names: Mapping[int, str] | None) -> str:
    """Field label in Candid text: identifier, quoted name, or the numeric id."""
    name = names.get(field_id) if names else None
    if name is None:
        return str(field_id)
    return name if _is_ident(name) else _quote(name)


def _blob_text(data: bytes, limit: int) -> str:
    """``blob "..."`` with printable ASCII as is and other bytes as ``\\xx``; stops after ``limit`` chars."""
    out = ['blob "']
    used = 6
    for b in data:
        if 0x20 <= b < 0x7F and b not in (0x22, 0x5C):
            piece = chr(b)
        else:
            piece = f"\\{b:02x}"
        out.append(piece)
        used += len(piece)
        if used > limit:
            break
    out.append('"')
    return "".join(out)


class _TextRenderer:
    # Compact (one-line) attempts are bounded by the width budget, and every nesting level costs at least
    # 4 columns ("opt "), so their recursion is shallow; this cap makes that explicit for huge widths.
    _COMPACT_DEPTH = 64

    def __init__(
        self,
        names: Mapping[int, str] | None,
        width: int,
        max_vec_items: int | None,
        max_text_len: int | None,
        indent: int,
    ) -> None:
        self.names = names
        self.width = width
        self.max_vec_items = max_vec_items
        self.max_text_len = max_text_len
        self.indent = indent

    # -- leaves --------------------------------------------------------------------------------------

    def leaf(self, node: CandidValue) -> str:
        t = node.type
        v = node.value
        op = t.opcode
        if op == NULL:
            return "null"
        if op == RESERVED:
            return "null : reserved"
        if op == BOOL:
            return "true" if v else "false"
        if op == NAT:
            return f"{v:_}"
        if op == INT:
            return f"{v:+_}"
        if op == TEXT:
            return self.text(v)
        if op in (FLOAT32, FLOAT64):
            return f"{v!r} : {t.kind}"
        if op == PRINCIPAL:
            return f'principal "{v.text}"'
        if op == SERVICE:
            return f'service "{v.text}"'
        if op == FUNC:
            assert isinstance(v, FuncRef)
            method = v.method if _is_ident(v.method) else _quote(v.method)
            return f'func "{v.principal.text}".{method}'
        if isinstance(v, FutureValue):
            return f"null /* value of future type {op}: {len(v.data)} bytes, {v.ref_count} refs */"
        return f"{v:_} : {t.kind}"  # nat8..nat64, int8..int64

    def text(self, s: str) -> str:
        cap = self.max_text_len
        if cap is not None and len(s) > cap:
            return f"{_quote(s[:cap])}… /* {len(s):_} chars */"
        return _quote(s)

    def label(self, fid: int) -> str:
        return text_label(fid, self.names)

    def vec_items(self, node: CandidValue) -> tuple[Sequence[CandidValue] | Any, int]:
        """Elements to show (lazily, never a full copy) and how many are hidden by ``max_vec_items``."""
        items = node.value
        cap = self.max_vec_items
        if cap is not None and len(items) > cap:
            return islice(items, cap), len(items) - cap
        return items, 0

    def blob(self, node: CandidValue, limit: int) -> str:
        data = node.value.raw
        cap = self.max_vec_items
        if cap is not None and len(data) > cap:
            return _blob_text(data[:cap], limit) + f"… /* {len(data):_} bytes */"
        return _blob_text(data, limit)

    @staticmethod
    def is_blob(node: CandidValue) -> bool:
        v = node.value
        return isinstance(v, PackedVector) and v.elem_type.opcode == NAT8

    # -- one line ------------------------------------------------------------------------------------

    def compact(self, node: CandidValue, budget: int, depth: int = 0) -> str | None:
        """One-line text of ``node`` if it fits in ``budget`` columns, else ``None`` (cheaply: it gives up
        as soon as the budget is exceeded, so huge values cost no more than ``budget`` characters)."""
        if budget <= 0 or depth > self._COMPACT_DEPTH:
            return None
        t = node.type
        op = t.opcode
        v = node.value
        if t.leaf:
            s = self.leaf(node)
        elif op == OPT:
            if v is None:
                s = "null"
            else:
                inner = self.compact(v, budget - 4, depth + 1)
                if inner is None:
                    return None
                s = "opt " + inner
        elif op == VEC:
            if self.is_blob(node):
                s = self.blob(node, budget)
            else:
                items, hidden = self.vec_items(node)
                parts: list[str] = []
                used = 8  # "vec {  }"
                for item in items:
                    piece = self.compact(item, budget - used, depth + 1)
                    if piece is None:
                        return None
                    parts.append(piece)
                    used += len(piece) + 2
                    if used > budget:
                        return None
                if hidden:
                    parts.append(f"/* {hidden:_} more */")
                s = "vec { " + "; ".join(parts) + " }" if parts else "vec {}"
        elif op == RECORD:
            parts = []
            used = 11  # "record {  }"
            for (fid, _), child in zip(t.fields, v, strict=True):
                prefix = "" if t.is_tuple else self.label(fid) + " = "
                piece = self.compact(child, budget - used - len(prefix), depth + 1)
                if piece is None:
                    return None
                parts.append(prefix + piece)
                used += len(prefix) + len(piece) + 2
                if used > budget:
                    return None
            s = "record { " + "; ".join(parts) + " }" if parts else "record {}"
        else:
            label = self.label(v.field_id)
            child = v.value
            if child.type.opcode == NULL:
                s = f"variant {{ {label} }}"
            else:
                piece = self.compact(child, budget - len(label) - 15, depth + 1)
                if piece is None:
                    return None
                s = f"variant {{ {label} = {piece} }}"
        return s if len(s) <= budget else None

    # -- several lines -------------------------------------------------------------------------------

    def render(self, node: CandidValue, col: int, level: int) -> str:
        out: list[str] = []
        stack = [self._lines(node, col, level, out)]
        while stack:
            try:
                child, child_col, child_level = next(stack[-1])
            except StopIteration:
                stack.pop()
                continue
            stack.append(self._lines(child, child_col, child_level, out))
        return "".join(out)

    def _lines(
        self, node: CandidValue, col: int, level: int, out: list[str]
    ) -> Generator[tuple[CandidValue, int, int], None, None]:
        """Append ``node``'s text to ``out``, starting at column ``col``; yield children to render in
        place (the driver renders each one fully before resuming this generator)."""
        one_line = self.compact(node, self.width - col)
        if one_line is not None:
            out.append(one_line)
            return
        t = node.type
        op = t.opcode
        v = node.value
        if t.leaf:
            out.append(self.leaf(node))  # a long text: nothing to break
            return
        # Deep enough that even a short form does not fit: these have nothing to break either.
        if op == OPT and v is None:
            out.append("null")
            return
        if op in (VEC, RECORD) and not len(v):
            out.append("vec {}" if op == VEC else "record {}")
            return
        if op == VARIANT and v.value.type.opcode == NULL:
            out.append(f"variant {{ {self.label(v.field_id)} }}")
            return
        inner = " " * (self.indent * (level + 1))
        close = "\n" + " " * (self.indent * level) + "}"
        if op == OPT:
            out.append("opt ")
            yield v, col + 4, level
        elif op == VEC:
            if self.is_blob(node):
                out.append(self.blob(node, len(node.value.raw) * 4 + 8))
                return
            items, hidden = self.vec_items(node)
            out.append("vec {")
            for item in items:
                out.append("\n" + inner)
                yield item, len(inner), level + 1
                out.append(";")
            if hidden:
                out.append(f"\n{inner}/* {hidden:_} more */")
            out.append(close)
        elif op == RECORD:
            out.append("record {")
            for (fid, _), child in zip(t.fields, v, strict=True):
                prefix = "" if t.is_tuple else self.label(fid) + " = "
                out.append("\n" + inner + prefix)
                yield child, len(inner) + len(prefix), level + 1
                out.append(";")
            out.append(close)
        else:
            prefix = self.label(v.field_id) + " = "
            out.append("variant {\n" + inner + prefix)
            yield v.value, len(inner) + len(prefix), level + 1
            out.append(close)


def to_text(
    value: CandidValue,
    names: Mapping[int, str] | None = None,
    *,
    width: int = 80,
    max_vec_items: int | None = None,
    max_text_len: int | None = None,
    indent: int = 2,
) -> str:
    """Candid text of one value.

    ``max_vec_items`` shows only the first N elements of each vector (and N bytes of a blob), followed by
    a ``/* K more */`` comment; ``max_text_len`` shortens long texts likewise. Shortened output is for
    reading, not valid Candid."""
    r = _TextRenderer(names, width, max_vec_items, max_text_len, indent)
    return r.render(value, 0, 0)


def args_to_text(
    args: Sequence[CandidValue],
    names: Mapping[int, str] | None = None,
    *,
    width: int = 80,
    max_vec_items: int | None = None,
    max_text_len: int | None = None,
    indent: int = 2,
) -> str:
    """Candid text of an argument tuple, as didc prints it: ``(a, b)`` or one argument per line."""
    r = _TextRenderer(names, width, max_vec_items, max_text_len, indent)
    parts = []
    used = 2
    for a in args:
        piece = r.compact(a, width - used)
        if piece is None:
            break
        parts.append(piece)
        used += len(piece) + 2
    else:
        if used - 2 <= width:
            return "(" + ", ".join(parts) + ")"
    pad = " " * indent
    return "(\n" + "".join(pad + r.render(a, indent, 1) + ",\n" for a in args) + ")"


# ---------------------------------------------------------------------------------------------------------
# Types


def _ref(t: CandidType) -> str:
    if t.opcode == VEC and t.inner is not None and t.inner.opcode == NAT8:
        return "blob"
    return t.name


def type_text(t: CandidType, names: Mapping[int, str] | None = None) -> str:
    """didc-like text of ``t`` one level deep; nested table entries appear as ``table<N>``."""
    op = t.opcode
    if t.index is None:
        return t.kind
    if op == OPT or op == VEC:
        assert t.inner is not None
        if op == VEC and t.inner.opcode == NAT8:
            return "blob"
        return f"{t.kind} {_ref(t.inner)}"
    if op == RECORD:
        if t.is_tuple:
            body = "; ".join(_ref(ft) for _, ft in t.fields)
        else:
            body = "; ".join(f"{text_label(fid, names)} : {_ref(ft)}" for fid, ft in t.fields)
        return f"record {{ {body} }}" if body else "record {}"
    if op == VARIANT:
        body = "; ".join(
            text_label(fid, names) if ft.opcode == NULL else f"{text_label(fid, names)} : {_ref(ft)}"
            for fid, ft in t.fields
        )
        return f"variant {{ {body} }}" if body else "variant {}"
    if op == FUNC:
        modes = "".join(" " + {1: "query", 2: "oneway", 3: "composite_query"}[m] for m in t.func_modes)
        args = ", ".join(_ref(a) for a in t.func_args)
        rets = ", ".join(_ref(a) for a in t.func_rets)
        return f"func ({args}) -> ({rets}){modes}"
    if op == SERVICE:
        body = "; ".join(f"{m if _is_ident(m) else _quote(m)} : {_ref(mt)}" for m, mt in t.methods)
        return f"service {{ {body} }}" if body else "service {}"
    return f"future{op} /* {len(t.future_bytes)} bytes */"


def message_types_text(
    table: Sequence[CandidType], arg_types: Sequence[CandidType], names: Mapping[int, str] | None = None
) -> str:
    """The type table as ``type tableN = ...;`` lines, then the argument types ``(...)``."""
    lines = [f"type {t.name} = {type_text(t, names)};" for t in table]
    lines.append("(" + ", ".join(_ref(a) for a in arg_types) + ")")
    return "\n".join(lines)


# --- whole messages (the decoder does not import this module: rendering sits on top of decoding) ------


def message_json(msg: CandidMessage, names: Mapping[int, str] | None = None) -> list[Any]:
    """One JSON-able value per argument, in the official JS decoder's conventions."""
    return [to_json(a, names) for a in msg.args]


def message_text(msg: CandidMessage, names: Mapping[int, str] | None = None, **options: Any) -> str:
    """Candid text of the argument tuple, ``(...)`` like didc; options as for ``args_to_text``."""
    return args_to_text(msg.args, names, **options)


def message_types(msg: CandidMessage, names: Mapping[int, str] | None = None) -> str:
    """The type table and argument types in .did-like syntax."""
    return message_types_text(msg.table, msg.arg_types, names)
