"""The repair's data: the plan, its writes, the maps it rebuilds and the conflicts it found, and how
entries from the live tree and from salvaged nodes are merged (``merge_entries``)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

from inspector.errors import UsageProblem
from inspector.memory import Range, merge_ranges

_BE32 = struct.Struct(">I").pack
PREFER_CHOICES = ("live", "salvaged")
MAX_VALUE_HEX = 4096


class RepairError(UsageProblem):
    """The repair cannot be planned (ambiguous MemoryIds, nothing to rebuild from…): nothing is written."""


def entries_digest(keys: list[bytes], values: list[bytes]) -> str:
    """The fixtures' ``entries_sha256``: u32 BE len(key), key, u32 BE len(value), value, in key order."""
    h = hashlib.sha256()
    for k, v in zip(keys, values, strict=True):
        h.update(_BE32(len(k)) + k + _BE32(len(v)) + v)
    return h.hexdigest()


def _text(b: bytes) -> str | None:
    try:
        t = b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return t if t.isprintable() else None


@dataclass
class Conflict:
    memory_id: int
    key: bytes
    live: bytes | None  # the live value (None: the key is only in salvaged nodes)
    salvaged: list[bytes]
    kept: str  # "live" | "salvaged" | "none" (two salvaged copies disagree: neither is written)

    def to_json(self) -> dict[str, Any]:
        def val(v: bytes) -> dict[str, Any]:
            out: dict[str, Any] = {"len": len(v), "sha256": hashlib.sha256(v).hexdigest()}
            if len(v) <= MAX_VALUE_HEX:
                out["hex"] = v.hex()
            return out

        out: dict[str, Any] = {"memory_id": self.memory_id, "key_hex": self.key.hex()}
        text = _text(self.key)
        if text is not None:
            out["key_utf8"] = text
        out["live"] = val(self.live) if self.live is not None else None
        out["salvaged"] = [val(v) for v in self.salvaged]
        out["kept"] = self.kept
        return out


@dataclass
class MapPlan:
    """One map of the repaired snapshot and where its entries come from."""

    memory_id: int
    action: str  # "rebuilt" | "kept"
    keys: list[bytes]
    values: list[bytes]
    live: int
    salvaged: int
    conflicts: list[Conflict]
    prefer: str
    page_size: int = 0
    key_layout: str | int = "prefixed"
    node_count: int = 0
    extent: int = 0

    @property
    def count(self) -> int:
        return len(self.keys)

    @property
    def digest(self) -> str:
        return entries_digest(self.keys, self.values)

    def line(self) -> str:
        text = f"memory {self.memory_id}: {self.live:,} live + {self.salvaged:,} salvaged = {self.count:,} entries"
        if self.conflicts:
            kept = {c.kept for c in self.conflicts}
            how = f"{self.prefer} kept" if kept <= {"live", "salvaged"} else "see conflicts"
            text += f", {len(self.conflicts)} conflict{'s' if len(self.conflicts) != 1 else ''}, {how}"
        if self.action == "kept":
            text += " (the map is intact: kept as it is)"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "entries_sha256": self.digest,
            "action": self.action,
            "live": self.live,
            "salvaged": self.salvaged,
            "conflicts": len(self.conflicts),
            "page_size": self.page_size,
            "key_layout": self.key_layout,
        }


@dataclass
class Write:
    start: int  # physical
    data: bytes
    what: str

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass
class RepairPlan:
    case: str  # "header_clobbered" | "reinitialised" | "nothing"
    base_offset: int
    bucket_size_pages: int
    owners: list[int | None]
    sizes: dict[int, int]
    input_size: int
    output_size: int
    writes: list[Write] = field(default_factory=list)
    maps: dict[int, MapPlan] = field(default_factory=dict)
    restored: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stable_save: Range | None = None

    @property
    def written_ranges(self) -> list[Range]:
        ranges = merge_ranges([(w.start, w.end) for w in self.writes])
        if self.output_size > self.input_size:
            ranges = merge_ranges([*ranges, (self.input_size, self.output_size)])
        return ranges

    @property
    def conflicts(self) -> list[Conflict]:
        return [c for m in self.maps.values() for c in m.conflicts]

    def add(self, start: int, data: bytes, what: str) -> None:
        if data:
            self.writes.append(Write(start, data, what))

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "memory_manager": {
                "base_offset": self.base_offset,
                "bucket_size_in_pages": self.bucket_size_pages,
                "num_allocated_buckets": len(self.owners),
                "bucket_owners": list(self.owners),
                "memory_sizes_in_pages": {str(k): v for k, v in sorted(self.sizes.items()) if v},
            },
            "input_size_bytes": self.input_size,
            "output_size_bytes": self.output_size,
            "written_ranges": [list(r) for r in self.written_ranges],
            "writes": [{"range": [w.start, w.end], "what": w.what} for w in self.writes],
            "restored": self.restored,
            "lost": self.lost,
            "conflicts": [c.to_json() for c in self.conflicts],
            "maps": {str(k): m.to_json() for k, m in sorted(self.maps.items())},
            "stable_save_range": list(self.stable_save) if self.stable_save else None,
            "notes": list(self.notes),
        }


# --- entries --------------------------------------------------------------------------------------------


def merge_entries(
    memory_id: int, live: list[tuple[bytes, bytes]], salvaged: list[tuple[bytes, bytes]], prefer: str
) -> tuple[list[bytes], list[bytes], int, int, list[Conflict]]:
    """Live ∪ salvaged, keys in byte order. A key with two different values is a conflict: ``prefer``
    picks between a live and a salvaged value; two salvaged values that disagree are never guessed
    between (neither is written, both are reported)."""
    live_map = dict(live)
    salv: dict[bytes, list[bytes]] = {}
    for k, v in salvaged:
        vals = salv.setdefault(k, [])
        if v not in vals:
            vals.append(v)
    out: dict[bytes, bytes] = {}
    origin: dict[bytes, str] = {}
    conflicts: list[Conflict] = []
    for k, v in live_map.items():
        out[k], origin[k] = v, "live"
    for k, vals in salv.items():
        lv = live_map.get(k)
        if lv is not None:
            if vals == [lv]:
                continue  # the same entry, seen twice
            others = [v for v in vals if v != lv]
            if prefer == "salvaged" and len(others) == 1:
                out[k], origin[k] = others[0], "salvaged"
                conflicts.append(Conflict(memory_id, k, lv, others, "salvaged"))
            else:
                conflicts.append(Conflict(memory_id, k, lv, others, "live"))
            continue
        if len(vals) == 1:
            out[k], origin[k] = vals[0], "salvaged"
        else:
            conflicts.append(Conflict(memory_id, k, None, vals, "none"))
    keys = sorted(out)
    n_live = sum(1 for k in keys if origin[k] == "live")
    return keys, [out[k] for k in keys], n_live, len(keys) - n_live, conflicts
