"""JSON lines of a block of fixed-width entries, built as byte columns with numpy.

``entries --format jsonl`` of a million-entry ``StableBTreeMap<u64, u64>`` spends most of its time
formatting: two ``hex()``, two ``int.from_bytes`` and a ``%`` per line. When the key and value types
have a columnar form (unsigned integers up to u64, unit) a block of entries is written as one byte
matrix instead: each line's fixed text, hex digits and right-aligned decimal digits side by side, with a
mask that drops the unused leading digit places; ``matrix[mask]`` is then the block's text, row by row.
The lines are the ones ``entries.map_jsonl_chunks`` writes per entry (tests/test_jsonl_columns.py
compares both on every map it can).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from inspector.decode.valuetypes import TypeExpr, UIntType, UnitType

U8 = npt.NDArray[np.uint8]
Part = tuple[U8, npt.NDArray[np.bool_] | None]  # (n, w) characters, and which to keep (None: all)

ROWS_PER_PIECE = 65_536  # lines formatted per matrix (a few MB)
# "00".."ff" as one little-endian u16 per byte value: a 1-D take per byte instead of a 2-D one.
_HEX16 = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), dtype="<u2")
_DIGITS = 20  # decimal digits of 2**64 - 1
_PAIRS = np.frombuffer(b"".join(f"{i:02d}".encode() for i in range(100)), dtype="<u2")  # "00".."99"
_POW10 = np.array([10**i for i in range(1, _DIGITS)], dtype=np.uint64)


class AsciiLines(NamedTuple):
    """JSON lines that are plain ASCII by construction (hex digits, decimal digits, the line's fixed
    punctuation): written as bytes, with nothing to escape and no newlines to count."""

    data: memoryview
    lines: int


class Column:
    """How one column of items becomes JSON: a fixed text, or decimal digits (with a quote either side
    for u64, as ``storable.uint_json`` writes it)."""

    def __init__(self, const: str | None = None, quoted: bool = False) -> None:
        self.const = const
        self.quoted = quoted

    def texts(self) -> list[str | None]:
        """The column's layout: fixed texts, and None where the digits go."""
        if self.const is not None:
            return [self.const]
        return ['"', None, '"'] if self.quoted else [None]


def column_json(t: TypeExpr, width: int) -> Column | None:
    """The columnar JSON of ``width``-byte items of type ``t``, or None when this type has none (then
    every item is decoded on its own, as before)."""
    if isinstance(t, UIntType) and t.width == width <= 8:
        return Column(quoted=width > 4)  # a number up to u32, a decimal string above
    if isinstance(t, UnitType) and width == 0:
        return Column(const="null")
    return None


def _digits(col: U8, out: U8, keep: npt.NDArray[np.bool_]) -> None:
    """Big-endian unsigned integers of up to 8 bytes as right-aligned decimal digits into ``out``
    (``_DIGITS`` columns); ``keep`` marks the digits that are not leading zeros."""
    n, w = col.shape
    padded = np.zeros((n, 8), dtype=np.uint8)
    padded[:, 8 - w :] = col
    v = padded.view(">u8").ravel().astype(np.uint64)
    pairs = np.empty((n, _DIGITS // 2), dtype="<u2")
    rest = v
    for i in range(_DIGITS // 2 - 1, -1, -1):  # two digits per (slow, unvectorised) u64 division
        rest, r = np.divmod(rest, np.uint64(100))
        pairs[:, i] = _PAIRS[r]
    out[:] = pairs.view(np.uint8)
    used = 1 + np.searchsorted(_POW10, v, side="right")
    np.greater_equal(np.arange(_DIGITS), (_DIGITS - used)[:, None], out=keep)


class MapLines:
    """``{"key_hex":…,"value_hex":…,"key":…,"value":…}`` and a newline per entry, for blocks of
    ``kw``-byte keys and ``vw``-byte values. The line's fixed text is laid out once; each piece of
    rows only writes the hex and digit columns into the same matrix."""

    def __init__(self, kw: int, vw: int, key: Column, value: Column) -> None:
        layout: list[str | tuple[str, int]] = [
            '{"key_hex":"',
            ("khex", 2 * kw),
            '","value_hex":"',
            ("vhex", 2 * vw),
            '","key":',
            *[t if t is not None else ("kdec", _DIGITS) for t in key.texts()],
            ',"value":',
            *[t if t is not None else ("vdec", _DIGITS) for t in value.texts()],
            "}\n",
        ]
        self.at: dict[str, slice] = {}
        consts: list[tuple[slice, bytes]] = []
        pos = 0
        for item in layout:
            if isinstance(item, str):
                raw = item.encode("ascii")
                consts.append((slice(pos, pos + len(raw)), raw))
                pos += len(raw)
            else:
                self.at[item[0]] = slice(pos, pos + item[1])
                pos += item[1]
        self.text = np.empty((ROWS_PER_PIECE, pos), dtype=np.uint8)
        for sl, raw in consts:
            self.text[:, sl] = np.frombuffer(raw, dtype=np.uint8)
        self.keep = np.ones((ROWS_PER_PIECE, pos), dtype=bool)
        self.variable = "kdec" in self.at or "vdec" in self.at

    def __call__(self, keys: U8, values: U8) -> Iterator[AsciiLines]:
        """The lines of a block, a piece of ``ROWS_PER_PIECE`` at a time (bounded memory)."""
        for s in range(0, len(keys), ROWS_PER_PIECE):
            k, v = keys[s : s + ROWS_PER_PIECE], values[s : s + ROWS_PER_PIECE]
            n = len(k)
            text, keep = self.text[:n], self.keep[:n]
            text[:, self.at["khex"]] = _HEX16[k].view(np.uint8).reshape(n, -1)
            text[:, self.at["vhex"]] = _HEX16[v].view(np.uint8).reshape(n, -1)
            for name, col in (("kdec", k), ("vdec", v)):
                if name in self.at:
                    _digits(col, text[:, self.at[name]], keep[:, self.at[name]])
            chosen = text[keep] if self.variable else text.copy()  # not a view of the reused matrix
            yield AsciiLines(np.ascontiguousarray(chosen).reshape(-1).data, n)
