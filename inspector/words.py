"""Words on screen: counted nouns written right ("1 entry", "2 entries", "1 allocated chunk") and the
names that tell two snapshots apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def distinguishing_names(old: Any, new: Any) -> tuple[str, str]:
    """Short names for two snapshots (``Snapshot`` objects or paths) that tell them apart: the shortest
    path suffix that differs (``pre_upgrade/stable_memory.bin``), else the metadata's timestamp."""
    pa, pb = (Path(getattr(x, "path", x)) for x in (old, new))
    a_parts, b_parts = pa.parts or (str(pa),), pb.parts or (str(pb),)
    for n in range(1, max(len(a_parts), len(b_parts)) + 1):
        a, b = "/".join(a_parts[-n:]), "/".join(b_parts[-n:])
        if a != b:
            return a, b
    stamps = [str((getattr(x, "metadata", None) or {}).get("taken_at_timestamp", "")) for x in (old, new)]
    if all(stamps) and stamps[0] != stamps[1]:
        return f"{pa.name} @ {stamps[0]}", f"{pb.name} @ {stamps[1]}"
    return f"{pa.name} (old)", f"{pb.name} (new)"
