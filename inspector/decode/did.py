"""Field names from a Candid interface (``.did``) text.

A Candid message stores record fields and variant cases only as 32-bit hashes of their names. To show
``name = "x"`` instead of ``1_224_700_491 = "x"`` we collect every name a ``.did`` file uses as a record
field or variant case and index it by :func:`idl_hash`.

This is a tolerant token scanner, not a validating parser: it must never fail on a user's file, even a
broken one, so it tracks only which ``{...}`` block it is in and picks names in field position. Service
blocks and function signatures are walked through (record types inside them still count); method and
argument names are not field names and are skipped. Numeric field ids (``0 : nat``) are ids already and
add no name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "DidToken",
    "field_names_in_did",
    "idl_hash",
    "names_from_did",
    "tokenize_did",
    "type_names_from_did",
]

_KEYWORDS = frozenset(
    (
        "type import opt vec record variant func service oneway query composite_query blob principal null "
        "bool nat nat8 nat16 nat32 nat64 int int8 int16 int32 int64 float32 float64 text reserved empty"
    ).split()
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F_]+|[0-9][0-9_]*")
_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def idl_hash(name: str | bytes) -> int:
    """Candid field id of a name: h = h * 223 + byte (mod 2^32) over its UTF-8 bytes."""
    data = name.encode("utf-8") if isinstance(name, str) else name
    h = 0
    for b in data:
        h = (h * 223 + b) & 0xFFFFFFFF
    return h


class DidToken(NamedTuple):
    """``kind`` is ``id``, ``text`` (value = decoded UTF-8 bytes), ``nat`` (value = int) or ``sym``."""

    kind: str
    value: str | bytes | int
    pos: int


def _skip_block_comment(text: str, i: int) -> int:
    # Candid block comments nest, unlike C's.
    depth = 0
    n = len(text)
    while i < n:
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n  # unterminated: the rest is comment


def _read_string(text: str, i: int) -> tuple[bytes, int]:
    """Decode a Candid string literal starting after its opening quote. Escapes: ``\\n \\r \\t \\\\ \\"
    \\'``, ``\\HH`` (a byte), ``\\u{HEX}``. Malformed escapes are kept literally rather than rejected."""
    out = bytearray()
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return bytes(out), i + 1
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in _SIMPLE_ESCAPES:
                out += _SIMPLE_ESCAPES[nxt].encode()
                i += 2
                continue
            if re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 1 : i + 3]):
                out.append(int(text[i + 1 : i + 3], 16))
                i += 3
                continue
            m = re.match(r"u\{([0-9a-fA-F_]{1,8})\}", text[i + 1 :])
            if m:
                code = int(m.group(1).replace("_", "") or "0", 16)
                if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                    out += chr(code).encode("utf-8")
                    i += 1 + m.end()
                    continue
        out += ch.encode("utf-8", "surrogatepass")
        i += 1
    return bytes(out), n  # unterminated string: runs to the end


def tokenize_did(text: str) -> Iterator[DidToken]:
    """Tokens of a .did text with comments and whitespace dropped. Never raises on any ``str``."""
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            i = _skip_block_comment(text, i)
        elif ch == '"':
            text_value, j = _read_string(text, i + 1)
            yield DidToken("text", text_value, i)
            i = j
        elif m := _IDENT.match(text, i):
            yield DidToken("id", m.group(), i)
            i = m.end()
        elif m := _NUMBER.match(text, i):
            digits = m.group().replace("_", "")
            try:
                value = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits)
            except ValueError:
                value = -1  # "0x_" and the like: not a usable id
            yield DidToken("nat", value, i)
            i = m.end()
        elif text.startswith("->", i):
            yield DidToken("sym", "->", i)
            i += 2
        else:
            yield DidToken("sym", ch, i)
            i += 1


def _name_of(tok: DidToken) -> bytes | None:
    if tok.kind == "id" and isinstance(tok.value, str) and tok.value not in _KEYWORDS:
        return tok.value.encode()
    if tok.kind == "text" and isinstance(tok.value, bytes):
        return tok.value
    return None


def _field_name_bytes(text: str) -> list[bytes]:
    # Names stay bytes until hashed: a quoted name with a \HH escape need not be valid UTF-8.
    toks = list(tokenize_did(text))
    names: list[bytes] = []
    # One entry per open bracket: what it belongs to, and whether the next token starts a field.
    contexts: list[list[object]] = []  # [kind, at_field_start]
    pending_kind: str | None = None
    for k, tok in enumerate(toks):
        top = contexts[-1] if contexts else None
        if tok.kind == "id" and tok.value in ("record", "variant"):
            pending_kind = str(tok.value)
            if top is not None:
                top[1] = False
            continue
        if tok.kind == "sym" and tok.value == "{":
            contexts.append([pending_kind or "other", True])
            pending_kind = None
            continue
        pending_kind = None
        if tok.kind == "sym" and tok.value in ("}", ")"):
            if contexts:
                contexts.pop()
            continue
        if tok.kind == "sym" and tok.value == "(":
            contexts.append(["paren", False])
            continue
        if top is None or top[0] not in ("record", "variant"):
            continue
        if tok.kind == "sym" and tok.value == ";":
            top[1] = True
            continue
        if not top[1]:
            continue
        top[1] = False
        nxt = toks[k + 1] if k + 1 < len(toks) else None
        name = _name_of(tok)
        if name is None or nxt is None or nxt.kind != "sym":
            continue  # a numeric id, or a tuple field's type (`record { text; nat }`)
        # `name : type` in records and variants; a bare `name` (payload null) only in variants.
        if nxt.value == ":" or (top[0] == "variant" and nxt.value in (";", "}")):
            names.append(name)
    return names


def field_names_in_did(text: str) -> list[str]:
    """Every record-field and variant-case name in ``text``, in order of appearance (with repeats)."""
    return [name.decode("utf-8", "backslashreplace") for name in _field_name_bytes(text)]


def names_from_did(text: str) -> dict[int, str]:
    """``idl_hash(name) -> name`` for every record field and variant case in a .did text.

    On a hash collision between two different names the first one seen is kept."""
    out: dict[int, str] = {}
    for name in _field_name_bytes(text):
        h = idl_hash(name)
        if h not in out:
            out[h] = name.decode("utf-8", "backslashreplace")
    return out


def type_names_from_did(text: str) -> list[str]:
    """Names defined by ``type <name> = ...`` in a .did text, in order."""
    toks = list(tokenize_did(text))
    out = []
    for k in range(len(toks) - 2):
        eq = toks[k + 2]
        if toks[k].kind == "id" and toks[k].value == "type" and eq.kind == "sym" and eq.value == "=":
            name = _name_of(toks[k + 1])
            if name is not None:
                out.append(name.decode("utf-8", "backslashreplace"))
    return out
