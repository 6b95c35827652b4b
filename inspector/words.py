"""Counted nouns written right: "1 entry", "2 entries", "1 allocated chunk", grouped digits."""

from __future__ import annotations

IRREGULAR = {"entry": "entries", "memory": "memories", "child": "children"}


def plural(n: int, word: str, many: str | None = None) -> str:
    """``n`` and ``word`` in the right number: the last word of ``word`` takes the plural."""
    if n == 1:
        return f"{n:,} {word}"
    if many is None:
        head, _, last = word.rpartition(" ")
        last = IRREGULAR.get(last, last + "s")
        many = f"{head} {last}" if head else last
    return f"{n:,} {many}"
