"""Search a snapshot from anywhere: decoded keys, decoded values and raw bytes (hex or text).

Headless. A match is a physical offset plus what matched there; the views move the hex cursor to it
and let the offset index say what is at that byte (so a key found by its text and the same key found
by its bytes land on the same region). Matches come sorted by offset, so "next" means "further on in
the file".
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inspector.errors import READ_ERRORS
from inspector.structures.base import Element, Structure

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis

MAX_MATCHES = 10_000  # enough to step through; a query matching more is too broad to be useful
PROGRESS_EVERY = 2_000  # entries between progress reports


@dataclass(frozen=True)
class Match:
    pos: int  # physical offset of the first byte of what matched
    what: str  # "key" | "value" | "bytes"
    label: str  # one line for the status bar: where and what
    end: int = 0  # for keys and values: the end of their first physical range


@dataclass(frozen=True)
class Query:
    text: str  # lower-cased text to find in decoded keys and values ("" = none)
    raw: tuple[bytes, ...]  # byte strings to find in the file


def parse_query(query: str) -> Query:
    """``0x00ff…`` or ``00 ff …`` → bytes (and the same hex as text); anything else → text, and its
    UTF-8 bytes. Quotes force text: ``"cafe"`` finds the text cafe, not the bytes ca fe."""
    q = query.strip()
    if len(q) >= 2 and q[0] == q[-1] == '"':
        text = q[1:-1]
        return Query(text.lower(), (text.encode(),) if text else ())
    compact = q.lower().removeprefix("0x").replace(" ", "")
    raw: list[bytes] = []
    if compact and len(compact) % 2 == 0 and re.fullmatch(r"[0-9a-f]+", compact):
        raw.append(bytes.fromhex(compact))
    if q and not q.lower().startswith("0x"):
        raw.append(q.encode())
    return Query(q.lower() if not q.lower().startswith("0x") else "", tuple(dict.fromkeys(raw)))


def _raw_matches(buf: Any, size: int, needle: bytes, limit: int) -> Iterator[int]:
    if not needle:
        return
    find = getattr(buf, "find", None)
    if find is None:
        buf = bytes(buf[:size])
        find = buf.find
    pos = find(needle, 0)
    n = 0
    while 0 <= pos < size and n < limit:
        yield pos
        n += 1
        pos = find(needle, pos + 1)


def _text_of(structure: Structure, role: str, data: bytes) -> str:
    try:
        from inspector.decode.values import decode_for

        return str(decode_for(structure, role, data).text)
    except READ_ERRORS:  # a value the decoder cannot read is still searchable by its bytes
        return ""


def find_all(
    analysis: Analysis, query: str, progress: Callable[[int, int | None], bool] | None = None
) -> list[Match]:
    """Every match of ``query`` (up to ``MAX_MATCHES``), sorted by offset. ``progress(done, total)``
    returning False stops the search early (a newer search replaced it)."""
    q = parse_query(query)
    found: dict[tuple[int, str], Match] = {}
    snap = analysis.snapshot
    for needle in q.raw:
        for pos in _raw_matches(snap.buf, snap.size, needle, MAX_MATCHES):
            found.setdefault((pos, "bytes"), Match(pos, "bytes", f"bytes {needle.hex(' ')} at {pos:#x}"))
    if q.text:
        total = sum(max(0, s.count()) for s in analysis.structures)
        done = 0
        for structure in analysis.structures:
            for el in structure.elements(0):
                done += 1
                if progress is not None and done % PROGRESS_EVERY == 0 and not progress(done, total):
                    return _dedupe(sorted(found.values(), key=lambda m: m.pos))
                for role, data in (("key", el.key), ("value", el.value)):
                    if data is None or q.text not in _text_of(structure, role, data).lower():
                        continue
                    span = _element_span(structure, el, role)
                    if span is not None:
                        label = f"{role} of entry {el.index:,} in memory {structure.memory_id}"
                        found.setdefault((span[0], role), Match(span[0], role, label, span[1]))
                if len(found) >= MAX_MATCHES:
                    break
    return _dedupe(sorted(found.values(), key=lambda m: m.pos))[:MAX_MATCHES]


def _dedupe(matches: list[Match]) -> list[Match]:
    """Text found both in a decoded key/value and in its raw bytes: keep the key or value only."""
    covered = sorted((m.pos, m.end) for m in matches if m.what != "bytes")
    starts = [s for s, _ in covered]
    out: list[Match] = []
    for m in matches:
        if m.what == "bytes":
            i = bisect_right(starts, m.pos) - 1
            if i >= 0 and covered[i][0] <= m.pos < covered[i][1]:
                continue
        out.append(m)
    return out


def _element_span(structure: Structure, el: Element, role: str) -> tuple[int, int] | None:
    spans = el.key_spans if role == "key" else el.value_spans
    if not spans:
        el.key_spans, el.value_spans = structure.element_spans(el)
        spans = el.key_spans if role == "key" else el.value_spans
    mem = structure.value_mem if role == "value" else None
    if not spans:
        return None
    try:
        ranges = (mem or structure.mem).physical_ranges(spans[0][0], spans[0][1] - spans[0][0])
    except READ_ERRORS:
        return None
    return (int(ranges[0][0]), int(ranges[0][1])) if ranges else None


def next_match(matches: list[Match], cursor: int, step: int) -> int | None:
    """Index of the first match after (``step`` 1) or before (-1) the cursor, wrapping around."""
    if not matches:
        return None
    if step > 0:
        return next((i for i, m in enumerate(matches) if m.pos > cursor), 0)
    return next((i for i in range(len(matches) - 1, -1, -1) if matches[i].pos < cursor), len(matches) - 1)
