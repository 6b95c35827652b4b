"""Make text that came out of a snapshot safe to show on a terminal or in a Rich/Textual widget.

Everything decoded from stable memory is attacker-controlled as far as this tool is concerned: a map key
can hold ``ESC [2J`` (clear screen), a right-to-left override that makes ``txt.exe`` read as ``exe.txt``,
zero-width characters that make two different keys look identical, or Rich markup such as ``[red]``.
The helpers here show such data *literally*:

* :func:`escape_control` turns every invisible or terminal-active character into a visible escape
  (``\\x1b``, ``\\u202e``, ``\\n`` …). Its output contains only printable characters (and, with
  ``single_line=False``, tabs and newlines), so it is **idempotent**: escaping twice gives the same text
  as escaping once. Backslashes are therefore left alone; a literal four-character ``\\x1b`` in the data
  looks the same as an escaped ESC byte. Use :func:`bytes_preview` on the raw bytes when that matters.
* :func:`safe_rich_text` wraps the escaped string in a :class:`rich.text.Text`, which never interprets
  markup, so ``[red]X`` stays the six characters ``[red]X``.
* :func:`bytes_preview` renders raw bytes as printable ASCII plus ``\\xNN`` escapes, with a length cap.

What counts as "unsafe" (escaped) in :func:`escape_control`:

* C0 controls U+0000–U+001F (ESC, CR, BEL, backspace …) and DEL U+007F, C1 controls U+0080–U+009F.
  Tab and newline are kept only when ``single_line=False``. CR is always escaped.
* Unicode format characters (category Cf): bidi embeddings/overrides U+202A–U+202E, isolates
  U+2066–U+2069, LRM/RLM and zero-width characters U+200B–U+200F, word joiner U+2060, BOM U+FEFF,
  soft hyphen U+00AD, Arabic letter mark U+061C, tag characters U+E0001–U+E007F and the rest of Cf.
* Line and paragraph separators U+2028/U+2029 (categories Zl/Zp), lone surrogates (Cs, e.g. from
  ``surrogateescape`` decoding) and unassigned code points (Cn).

Escape spelling: ``\\t`` ``\\n`` ``\\r`` for those three; ``\\xNN`` below U+0100; ``\\uNNNN`` up to
U+FFFF; ``\\UNNNNNNNN`` above.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported where a Text is built: `--json` output never needs it
    from rich.style import Style
    from rich.text import Text

__all__ = [
    "DISPLAY_LIMIT",
    "bytes_preview",
    "cap_text",
    "escape_char",
    "escape_control",
    "is_unsafe_char",
    "json_safe",
    "safe_rich_text",
]

_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


@lru_cache(maxsize=4096)
def is_unsafe_char(ch: str) -> bool:
    """True if ``ch`` (one code point) must be escaped before display (tab/newline included)."""
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def escape_char(ch: str) -> str:
    """The visible escape for one code point (whether or not it needs escaping)."""
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    cp = ord(ch)
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def escape_control(s: str, single_line: bool = True) -> str:
    """Return ``s`` with every control, bidi, zero-width/format, separator and lone-surrogate character
    replaced by a visible escape. Tab and newline are escaped too unless ``single_line`` is False.

    Printable text (including non-ASCII letters, CJK and emoji) is returned unchanged, and the result
    of escaping is itself safe, so ``escape_control(escape_control(s)) == escape_control(s)``.
    """
    # Fast path: the common case is plain printable ASCII.
    if s.isascii() and s.isprintable():
        return s
    out: list[str] = []
    for ch in s:
        if ch in "\t\n" and not single_line:
            out.append(ch)
        elif is_unsafe_char(ch):
            out.append(escape_char(ch))
        else:
            out.append(ch)
    return "".join(out)


# JSON written with ``ensure_ascii=False`` escapes C0 controls but leaves DEL, C1 controls (U+009B is a CSI
# on some terminals), bidi overrides and the like raw. Only these characters need a second look.
# Written as "not ASCII below DEL": the same characters as [\x7f-\U0010ffff], whose class the regex
# compiler spent ~10 ms optimising (0.2 ms this way).
@cache
def _json_suspect() -> re.Pattern[str]:
    return re.compile("[^\x00-\x7e]")


def _json_escape_char(m: re.Match[str]) -> str:
    ch = m.group()
    if not is_unsafe_char(ch):
        return ch
    cp = ord(ch)
    if cp > 0xFFFF:  # JSON spells astral characters as a UTF-16 surrogate pair
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"
    return f"\\u{cp:04x}"


def json_safe(text: str) -> str:
    """JSON text (as ``json.dumps(..., ensure_ascii=False)`` writes it) with every character that
    :func:`is_unsafe_char` flags spelled as a ``\\uXXXX`` escape. It decodes to the same value, keeps
    readable non-ASCII text as it is, and can no longer drive a terminal. The JSON must not hold raw
    controls other than the newlines between lines (``json.dumps`` never writes any inside strings)."""
    if text.isascii() and "\x7f" not in text:
        return text
    return _json_suspect().sub(_json_escape_char, text)


# Longest string shown on a screen or in the CLI's rich output. Rich wraps text in time quadratic in
# its length (a 15.7 MB metadata value took 129 s); nobody reads past a few KiB on a terminal anyway.
# JSON output is data, not display, and is never capped.
DISPLAY_LIMIT = 4096


def cap_text(s: str, limit: int = DISPLAY_LIMIT) -> str:
    """``s`` cut to ``limit`` characters, with "… N more bytes" (UTF-8 bytes of the rest) appended."""
    if len(s) <= limit:
        return s
    return _cap_long(s, limit)


@lru_cache(maxsize=64)
def _cap_long(s: str, limit: int) -> str:
    # Cached: a view repaints the same 15 MB value many times, and counting the rest's UTF-8 bytes
    # copies it (an ASCII-only string is counted without encoding).
    rest = len(s) - limit if s.isascii() else len(s[limit:].encode("utf-8", "surrogatepass"))
    return f"{s[:limit]}… {rest:,} more bytes"


def safe_rich_text(
    s: str, style: str | Style | None = None, single_line: bool = True, limit: int | None = DISPLAY_LIMIT
) -> Text:
    """A :class:`rich.text.Text` showing ``s`` literally: escaped with :func:`escape_control` and never
    parsed for Rich markup or emoji codes (``[red]`` and ``:smile:`` stay as typed). Strings longer
    than ``limit`` characters are cut (:func:`cap_text`) *before* escaping, so the cost is bounded."""
    if limit is not None:
        s = cap_text(s, limit)
    from rich.text import Text

    return Text(escape_control(s, single_line=single_line), style=style or "")


def bytes_preview(b: bytes | bytearray | memoryview, limit: int = 64) -> str:
    """Printable ASCII shown as is, backslash as ``\\\\``, every other byte as ``\\xNN``.

    At most ``limit`` bytes are shown; when more exist, ``"…(+N bytes)"`` is appended. The result is
    plain printable ASCII apart from that ellipsis.
    """
    data = bytes(b)
    limit = max(0, limit)
    shown = data[:limit]
    parts: list[str] = []
    for byte in shown:
        if byte == 0x5C:
            parts.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            parts.append(chr(byte))
        else:
            parts.append(f"\\x{byte:02x}")
    if len(data) > limit:
        parts.append(f"…(+{len(data) - limit} bytes)")
    return "".join(parts)
