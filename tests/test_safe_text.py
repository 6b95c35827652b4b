"""Snapshot bytes are shown literally: no terminal control, no bidi tricks, no Rich markup."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from inspector.safe_text import bytes_preview, escape_control, is_unsafe_char, safe_rich_text

HOSTILE_KEY = "[red]X" + "\x1b[2J"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain ascii", "plain ascii"),
        ("caf\u00e9 \u6c34 \U0001f600", "caf\u00e9 \u6c34 \U0001f600"),  # letters, CJK, emoji stay
        ("\x1b[2J", "\\x1b[2J"),
        ("a\x00b", "a\\x00b"),
        ("bell\x07", "bell\\x07"),
        ("del\x7f", "del\\x7f"),
        ("c1\x85\x9b", "c1\\x85\\x9b"),  # NEL and CSI (C1)
        ("cr\r", "cr\\r"),
        ("tab\there", "tab\\there"),
        ("line\nbreak", "line\\nbreak"),
        ("txt\u202egpj.exe", "txt\\u202egpj.exe"),  # right-to-left override
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),  # isolates
        ("zero\u200bwidth\u200c\u200d\u200e\u200f", "zero\\u200bwidth\\u200c\\u200d\\u200e\\u200f"),
        ("\ufeffbom", "\\ufeffbom"),
        ("soft\u00adhyphen", "soft\\xadhyphen"),
        ("sep\u2028\u2029", "sep\\u2028\\u2029"),
        ("lone \udc80 surrogate", "lone \\udc80 surrogate"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("back\\slash", "back\\slash"),  # backslashes are not doubled (keeps escaping idempotent)
    ],
)
def test_escape_control(raw: str, shown: str) -> None:
    assert escape_control(raw) == shown


def test_multi_line_mode_keeps_tab_and_newline_but_not_cr() -> None:
    assert escape_control("a\tb\nc\r\n", single_line=False) == "a\tb\nc\\r\n"
    assert escape_control("\x1b\n", single_line=False) == "\\x1b\n"


def test_escape_of_surrogateescape_decoded_bytes() -> None:
    s = b"ok\xff\xfe".decode("utf-8", "surrogateescape")
    assert escape_control(s) == "ok\\udcff\\udcfe"


@given(st.text(alphabet=st.characters(codec=None)))
def test_escaped_text_is_safe_and_idempotent(s: str) -> None:
    once = escape_control(s)
    assert not any(is_unsafe_char(ch) for ch in once)
    assert escape_control(once) == once
    multi = escape_control(s, single_line=False)
    assert all(ch in "\t\n" or not is_unsafe_char(ch) for ch in multi)


def test_safe_rich_text_is_literal() -> None:
    text = safe_rich_text(HOSTILE_KEY)
    assert isinstance(text, Text)
    assert text.plain == "[red]X\\x1b[2J"
    assert text.spans == []


def test_hostile_key_renders_literally_in_rich_console() -> None:
    out = io.StringIO()
    console = Console(record=True, file=out, width=120, color_system=None)
    console.print(safe_rich_text(HOSTILE_KEY))
    assert console.export_text() == "[red]X\\x1b[2J\n"
    assert "\x1b" not in out.getvalue()
    assert out.getvalue() == "[red]X\\x1b[2J\n"


def test_hostile_key_on_a_colour_terminal_keeps_only_rich_own_styling() -> None:
    out = io.StringIO()
    console = Console(record=True, file=out, width=120, force_terminal=True, color_system="truecolor")
    console.print(safe_rich_text(HOSTILE_KEY, style="bold"))
    rendered = out.getvalue()
    assert "\x1b[2J" not in rendered  # the data's clear-screen sequence never reaches the terminal
    assert "[red]X\\x1b[2J" in rendered  # and the markup was not interpreted
    assert console.export_text() == "[red]X\\x1b[2J\n"


def test_style_is_applied_to_the_whole_text() -> None:
    text = safe_rich_text("k", style="bold red")
    assert str(text.style) == "bold red"


def test_bytes_preview() -> None:
    assert bytes_preview(b"ab\x00\\\xff ~") == "ab\\x00\\\\\\xff ~"
    assert bytes_preview(b"\x1b[2J") == "\\x1b[2J"
    assert bytes_preview(b"abcdef", limit=3) == "abc…(+3 bytes)"
    assert bytes_preview(b"", limit=3) == ""
    assert bytes_preview(bytearray(b"xy"), limit=0) == "…(+2 bytes)"


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=300))
def test_bytes_preview_output_is_printable(data: bytes, limit: int) -> None:
    shown = bytes_preview(data, limit)
    assert all(0x20 <= ord(ch) < 0x7F or ch == "…" for ch in shown)
    assert escape_control(shown) == shown
