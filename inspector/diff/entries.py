"""Structure level of a snapshot diff: header changes and entries added, removed and changed.

Structures are matched by MemoryId and kind. A structure none of whose bytes changed (same buckets on
both sides, no changed range inside them) is reported as unchanged without reading a single entry.
Otherwise both sides are streamed in key order and merge-joined, so memory stays flat however many
entries there are: only the first ``max_items`` differences keep their bytes, all of them are counted.

The merge-join compares keys as bytes. That is the map's own order for the key types people use
(unsigned big-endian integers, strings, blobs, byte arrays), but not for every Storable (FORMAT.md
§3.9). The join checks the order as it goes; when a side is not strictly increasing it starts again
as a hash join, which holds one 16-byte digest per old entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice, zip_longest
from typing import TYPE_CHECKING, Any

from inspector.diff import map_nodes as diff_map_nodes
from inspector.diff import sequences as diff_sequences
from inspector.diff.byte_ranges import DiffCancelled
from inspector.diff.layout import RangeSet
from inspector.errors import READ_ERRORS
from inspector.jsonout import JsonObject, JsonValue
from inspector.memory import OutOfBounds, PhysicalMemory
from inspector.structures.base import Element, Structure, StructureId

if TYPE_CHECKING:
    from inspector.analysis.analyze import Analysis

Range = tuple[int, int]
ProgressFn = Callable[[str, int, int], object]
CancelFn = Callable[[], bool]

MAX_STORED_VALUE = 64 << 10  # bytes kept per listed value; longer ones keep their head and length
VALUE_HEAD = 64
MAX_TEXT = 200  # characters of decoded text per listed key or value
MAX_JSON_VALUE_BYTES = 4096  # decoded JSON values are included for values up to this size
CHECK_EVERY = 8192  # entries between cancel checks
HASH_JOIN_MAX = 5_000_000  # old entries a hash join will hold; beyond that the counts are partial


class _Unordered(Exception):
    """A side's keys are not strictly increasing as bytes: merge-join does not apply."""


@dataclass
class EntryChange:
    """One listed difference. Values are the stored bytes (cut to ``MAX_STORED_VALUE``)."""

    op: str  # "added" | "removed" | "changed"
    index: int | None  # sequences: the index; maps: the entry's position on its side
    key: bytes | None
    old: bytes | None = None
    new: bytes | None = None
    old_len: int | None = None
    new_len: int | None = None
    old_ranges: list[Range] = field(default_factory=list)  # physical, in the old snapshot
    new_ranges: list[Range] = field(default_factory=list)  # physical, in the new snapshot


@dataclass
class StructureDiff:
    memory_id: Any
    kind: str
    status: str  # "matched" | "unchanged" | "appeared" | "vanished"
    old: Structure | None = None
    new: Structure | None = None
    old_count: int | None = None
    new_count: int | None = None
    header: dict[str, list[JsonValue]] = field(default_factory=dict)
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    items: list[EntryChange] = field(default_factory=list)
    items_truncated: bool = False
    complete: bool = True
    # Every chunk header and the allocator header are byte-identical on both sides (a map in the same
    # bytes whose changes all fall inside chunk payloads): both allocators are in the same state.
    allocator_same: bool = False
    method: str = ""
    note: str = ""
    _rendered: list[dict[str, Any]] | None = None

    @property
    def has_changes(self) -> bool:
        return bool(
            self.added
            or self.removed
            or self.changed
            or self.header
            or self.status in ("appeared", "vanished")
        )

    @property
    def label(self) -> str:
        mid = self.memory_id
        where = (
            "raw memory"
            if mid == "raw"
            else ("memories " + "+".join(map(str, mid)) if isinstance(mid, list) else f"memory {mid}")
        )
        return f"{where} ({self.kind})"

    def counts_text(self) -> str:
        if self.status == "appeared":
            return f"appeared with {self.new_count:,} {_noun(self.kind, self.new_count or 0)}"
        if self.status == "vanished":
            return f"vanished (had {self.old_count:,} {_noun(self.kind, self.old_count or 0)})"
        if self.kind == "cell":
            return "value changed" if self.changed else "value unchanged"
        parts = []
        for n, what in ((self.added, "added"), (self.removed, "removed"), (self.changed, "changed")):
            if n:
                parts.append(f"{n:,} {what}")
        text = ", ".join(parts) if parts else "no entry changed"
        if self.old_count != self.new_count:
            text += f" ({self.old_count:,} → {self.new_count:,} {_noun(self.kind, 2)})"
        if not self.complete:
            text += " (partial)"
        return text

    def rendered_items(self) -> list[JsonObject]:
        """The listed differences with keys and values decoded (cached: decoding is the slow part)."""
        if self._rendered is None:
            self._rendered = [render_item(self, it) for it in self.items]
        return self._rendered

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "memory_id": self.memory_id,
            "kind": self.kind,
            "status": self.status,
            "old_count": self.old_count,
            "new_count": self.new_count,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "header": self.header,
            "complete": self.complete,
            "method": self.method,
            "items": self.rendered_items(),
            "items_truncated": self.items_truncated,
        }
        if self.note:
            out["note"] = self.note
        return out


def _noun(kind: str, n: int) -> str:
    if kind == "cell":
        return "value" if n == 1 else "values"
    if kind in ("btreemap",):
        return "entry" if n == 1 else "entries"
    return "element" if n == 1 else "elements"


# --------------------------------------------------------------------------- pairing


def _id_key(mid: StructureId) -> int | str | tuple[int, ...]:
    return tuple(mid) if isinstance(mid, list) else mid


def _sort_key(mid: StructureId | tuple[int, ...]) -> tuple[int, tuple[int | str, ...]]:
    if isinstance(mid, list | tuple):
        return (1, tuple(mid))
    if isinstance(mid, int):
        return (0, (mid,))
    return (2, (str(mid),))


def structure_physical(s: Structure) -> list[Range] | None:
    """Every physical byte the structure's memory (or memories) may use, or None if unmappable."""
    mems = [m for m in (s.index_mem, s.data_mem) if m is not None]
    if not mems:
        mems = [s.mem]
    out: list[Range] = []
    for mem in mems:
        try:
            out.extend(mem.physical_ranges(0, mem.size))
        except OutOfBounds:
            return None
    return out


def _count(s: Structure) -> int:
    try:
        return int(s.count())
    except READ_ERRORS:
        return 0


def _header_changes(a: Structure, b: Structure) -> dict[str, list[JsonValue]]:
    try:
        ha, hb = a.header_json(), b.header_json()
    except READ_ERRORS:
        return {}
    out: dict[str, list[JsonValue]] = {}
    for k in list(ha) + [k for k in hb if k not in ha]:
        if ha.get(k) != hb.get(k):
            out[k] = [ha.get(k), hb.get(k)]
    return out


HAS_ELEMENTS = frozenset({"cell", "btreemap", "vec", "minheap", "log"})


def diff_structures(
    old: Analysis,
    new: Analysis,
    changed: RangeSet,
    *,
    max_items: int = 100,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> list[StructureDiff]:
    """One ``StructureDiff`` per structure on either side, in MemoryId order."""
    olds = {(_id_key(s.memory_id), s.kind): s for s in old.structures}
    news = {(_id_key(s.memory_id), s.kind): s for s in new.structures}
    # A structure the forensics found under an unknown id ("?b1") on one side is the same structure as
    # the one of that kind starting at the same physical offset on the other side.
    renamed: dict[tuple[int | str | tuple[int, ...], str], tuple[int | str | tuple[int, ...], str]] = {}
    spare_new = {k: s for k, s in news.items() if k not in olds}
    for k, s in olds.items():
        if k in news:
            continue
        start = _physical_start(s)
        for k2, t in spare_new.items():
            if (
                t.kind == s.kind
                and start is not None
                and _physical_start(t) == start
                and k2 not in renamed.values()
            ):
                renamed[k] = k2
                break
    keys = sorted((set(olds) | set(news)) - set(renamed.values()), key=lambda k: (_sort_key(k[0]), k[1]))
    out: list[StructureDiff] = []
    for k in keys:
        a, b = olds.get(k), news.get(renamed.get(k, k))
        ref = a if a is not None else b
        assert ref is not None
        mid = ref.memory_id
        if a is None:
            d = StructureDiff(mid, ref.kind, "appeared", None, b, None, _count(b))  # type: ignore[arg-type]
            d.added = d.new_count or 0
            d.method = "count"
            _list_side(d, b, "added", max_items)  # type: ignore[arg-type]
        elif b is None:
            d = StructureDiff(mid, ref.kind, "vanished", a, None, _count(a), None)
            d.removed = d.old_count or 0
            d.method = "count"
            _list_side(d, a, "removed", max_items)
        else:
            d = diff_pair(a, b, changed, max_items=max_items, progress=progress, cancel=cancel)
            if k in renamed:
                _note_rename(d, a, b)
        out.append(d)
    return out


def _physical_start(s: Structure) -> int | None:
    try:
        return s.physical_start
    except READ_ERRORS:
        return None


def _note_rename(d: StructureDiff, a: Structure, b: Structure) -> None:
    """Name a structure paired across a lost MemoryId by the id that is known."""
    if isinstance(a.memory_id, str) and not isinstance(b.memory_id, str):
        d.memory_id = b.memory_id
        d.note = f"the old snapshot only knew this structure as memory {a.memory_id} (its MemoryId was lost)"
    elif isinstance(b.memory_id, str):
        d.note = f"the new snapshot only knows this structure as memory {b.memory_id} (its MemoryId is lost)"


def diff_pair(
    a: Structure,
    b: Structure,
    changed: RangeSet,
    *,
    max_items: int = 100,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> StructureDiff:
    d = StructureDiff(a.memory_id, a.kind, "matched", a, b, _count(a), _count(b))
    d.header = _header_changes(a, b)
    pa, pb = structure_physical(a), structure_physical(b)
    if pa is not None and pa == pb and not changed.any_overlap(pa):
        # Same bytes in the same places: nothing inside can differ.
        d.status = "unchanged"
        d.unchanged = d.old_count or 0
        d.method = "untouched"
        d.allocator_same = a.kind == "btreemap"
        return d
    if a.kind not in HAS_ELEMENTS:
        d.method = "none"
        return d
    label = f"memory {a.memory_id}"
    if a.is_sequence:
        # Same physical bytes on both sides: only the slots under changed ranges can differ.
        p = diff_sequences.plan(a, b, changed) if pa is not None and pa == pb else None
        if p is not None:
            c = _Collector(d, a, b, max_items)
            check = _checker(progress, label, len(p.indices), cancel)
            diff_sequences.diff_by_hits(d, a, b, p, c, max_items, check)
            return d
        _by_index(d, a, b, max_items, progress, label, cancel)
        return d
    # Same physical bytes and the same tree shape: only the changed nodes can hold different entries.
    if pa is not None and pa == pb:
        d.allocator_same = diff_map_nodes.allocator_untouched(a, b, changed)
    mp = diff_map_nodes.plan(a, b, changed) if pa is not None and pa == pb else None
    if mp is not None:
        c = _Collector(d, a, b, max_items)
        if diff_map_nodes.diff_by_nodes(d, a, b, mp, c, _checker(progress, label, len(mp.nodes), cancel)):
            return d
    try:
        _merge_join(d, a, b, max_items, progress, label, cancel)
    except _Unordered:
        fresh = StructureDiff(a.memory_id, a.kind, "matched", a, b, d.old_count, d.new_count, d.header)
        _hash_join(fresh, a, b, max_items, progress, label, cancel)
        fresh.note = "keys are not in byte order, so entries were matched by hash"
        return fresh
    return d


# --------------------------------------------------------------------------- element helpers


def _length(el: Element) -> int:
    return el.value_len if el.value_len is not None else len(el.value)


def _stored(value: bytes) -> bytes:
    return value if len(value) <= MAX_STORED_VALUE else value[:VALUE_HEAD]


def element_physical(s: Structure, el: Element) -> list[Range]:
    """Physical ranges of an element's key and value (looked up in its node for B-trees)."""
    key_spans, value_spans = el.key_spans, el.value_spans
    if not value_spans:
        try:
            key_spans, value_spans = s.element_spans(el)
        except READ_ERRORS:
            key_spans, value_spans = [], []
    vmem = s.value_mem or s.mem
    out: list[Range] = []
    for mem, group in ((s.mem, key_spans), (vmem, value_spans)):
        if type(mem) is PhysicalMemory:  # the snapshot itself: its ranges are the physical ones
            out += [r for r in group if r[1] > r[0]]
            continue
        for start, end in group:
            try:
                out.extend(mem.physical_ranges(start, end - start))
            except OutOfBounds:
                continue
    return sorted(out)


class _Collector:
    """Counts every difference; keeps the first ``limit`` of *each kind* with their bytes and where
    they are, so three added entries still show after two hundred removed ones."""

    # Values longer than this are kept as their head only (their length is kept too): a reader may
    # hand over just that much with ``Element.value_len``.
    head_beyond = (MAX_STORED_VALUE, VALUE_HEAD)

    def __init__(self, d: StructureDiff, a: Structure | None, b: Structure | None, limit: int) -> None:
        self.d, self.a, self.b, self.limit = d, a, b, limit
        self.kept = {"added": 0, "removed": 0, "changed": 0}

    def _room(self, op: str) -> bool:
        if self.kept[op] < self.limit:
            self.kept[op] += 1
            return True
        self.d.items_truncated = True
        return False

    def added(self, el: Element) -> None:
        self._record("added", None, el)

    def removed(self, el: Element) -> None:
        self._record("removed", el, None)

    def changed(self, x: Element, y: Element) -> None:
        self._record("changed", x, y)

    def _record(self, op: str, x: Element | None, y: Element | None) -> None:
        """Count one difference; list it (old side ``x``, new side ``y``) while there is room."""
        setattr(self.d, op, getattr(self.d, op) + 1)
        if not self._room(op):
            return
        at = y if y is not None else x
        assert at is not None
        self.d.items.append(
            EntryChange(
                op,
                at.index,
                at.key,
                old=_stored(x.value) if x is not None else None,
                new=_stored(y.value) if y is not None else None,
                old_len=_length(x) if x is not None else None,
                new_len=_length(y) if y is not None else None,
                old_ranges=element_physical(self.a, x) if x is not None and self.a is not None else [],
                new_ranges=element_physical(self.b, y) if y is not None and self.b is not None else [],
            )
        )


def _list_side(d: StructureDiff, s: Structure, op: str, limit: int) -> None:
    """For a structure only one side has: list its first elements as added or removed (not counted
    again: the count comes from the header)."""
    if s.kind not in HAS_ELEMENTS:
        return
    c = _Collector(d, s if op == "removed" else None, s if op == "added" else None, limit)
    saved = (d.added, d.removed)
    try:
        for el in islice(s.elements(0), limit + 1):
            c.added(el) if op == "added" else c.removed(el)
    except READ_ERRORS:
        pass
    d.added, d.removed = saved


def _checker(
    progress: ProgressFn | None, label: str, total: int, cancel: CancelFn | None
) -> Callable[[int], None]:
    def check(n: int) -> None:
        if cancel is not None and cancel():
            raise DiffCancelled(n, total)
        if progress is not None:
            progress(label, n, total)

    return check


class _Side:
    """One side of a merge-join: a key-ordered stream that checks its own order as it goes.

    B-trees are read through the walker's ``iter_entries`` (plain tuples): building an ``Element`` per
    entry would cost more than the join itself, so one is made only for the few differences listed.
    """

    __slots__ = ("it", "key", "value", "cur", "index", "raw")

    def __init__(self, s: Structure) -> None:
        walker = s.walker()
        self.raw = walker is not None
        self.it: Iterator[Any] = iter(walker.iter_entries() if walker is not None else s.elements(0))
        self.index = -1
        self.key: bytes = b""
        self.value: bytes = b""
        self.cur: Any = None
        self.advance(first=True)

    def advance(self, first: bool = False) -> None:
        prev = self.key
        self.cur = nxt = next(self.it, None)
        self.index += 1
        if nxt is None:
            return
        self.key, self.value = nxt.key or b"", nxt.value
        if not first and not prev < self.key:
            raise _Unordered

    def element(self) -> Element:
        x = self.cur
        if not self.raw:
            return x
        return Element(
            self.index,
            x.value,
            x.key,
            source=f"node {x.node_addr:#x}",
            node_addr=x.node_addr,
            slot=x.index_in_node,
        )


def _merge_join(
    d: StructureDiff,
    a: Structure,
    b: Structure,
    limit: int,
    progress: ProgressFn | None,
    label: str,
    cancel: CancelFn | None,
) -> None:
    d.method = "merge-join"
    c = _Collector(d, a, b, limit)
    check = _checker(progress, label, (d.old_count or 0) + (d.new_count or 0), cancel)
    x, y = _Side(a), _Side(b)
    n = unchanged = 0
    while x.cur is not None and y.cur is not None:
        n += 1
        if n % CHECK_EVERY == 0:
            check(n)
        kx, ky = x.key, y.key
        if kx == ky:
            if x.value == y.value:
                unchanged += 1
            else:
                c.changed(x.element(), y.element())
            x.advance()
            y.advance()
        elif kx < ky:
            c.removed(x.element())
            x.advance()
        else:
            c.added(y.element())
            y.advance()
    while x.cur is not None:
        c.removed(x.element())
        x.advance()
    while y.cur is not None:
        c.added(y.element())
        y.advance()
    d.unchanged = unchanged


def _digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


def _hash_join(
    d: StructureDiff,
    a: Structure,
    b: Structure,
    limit: int,
    progress: ProgressFn | None,
    label: str,
    cancel: CancelFn | None,
) -> None:
    d.method = "hash-join"
    check = _checker(progress, label, (d.old_count or 0) + (d.new_count or 0), cancel)
    seen: dict[bytes, tuple[bytes, int]] = {}
    n = 0
    for el in a.elements(0):
        n += 1
        if n % CHECK_EVERY == 0:
            check(n)
        if len(seen) >= HASH_JOIN_MAX:
            d.complete = False
            break
        seen[el.key or b""] = (_digest(el.value), el.index)
    c = _Collector(d, None, b, limit)
    want_old: set[bytes] = set()
    for el in b.elements(0):
        n += 1
        if n % CHECK_EVERY == 0:
            check(n)
        k = el.key or b""
        hit = seen.pop(k, None)
        if hit is None:
            c.added(el)
        elif hit[0] == _digest(el.value):
            d.unchanged += 1
        else:
            d.changed += 1
            if c._room("changed"):
                want_old.add(k)
                d.items.append(
                    EntryChange(
                        "changed",
                        el.index,
                        el.key,
                        None,
                        _stored(el.value),
                        None,
                        len(el.value),
                        [],
                        element_physical(b, el),
                    )
                )
    d.removed = len(seen)
    for k in seen:
        if not c._room("removed"):
            break
        want_old.add(k)
        d.items.append(EntryChange("removed", seen[k][1], k))
    if not want_old:
        return
    # A third pass fills in the old bytes of the few listed changed/removed entries.
    by_key = {it.key: it for it in d.items if it.key in want_old}
    for el in a.elements(0):
        if el.key is None:
            continue
        it = by_key.get(el.key)
        if it is not None:
            it.old, it.old_len = _stored(el.value), len(el.value)
            it.old_ranges = element_physical(a, el)
            del by_key[el.key]
            if not by_key:
                break


def _by_index(
    d: StructureDiff,
    a: Structure,
    b: Structure,
    limit: int,
    progress: ProgressFn | None,
    label: str,
    cancel: CancelFn | None,
) -> None:
    d.method = "by index"
    c = _Collector(d, a, b, limit)
    check = _checker(progress, label, max(d.old_count or 0, d.new_count or 0), cancel)
    n = 0
    for x, y in zip_longest(a.elements(0), b.elements(0)):
        n += 1
        if n % CHECK_EVERY == 0:
            check(n)
        if x is None:
            c.added(y)
        elif y is None:
            c.removed(x)
        elif x.value == y.value:
            d.unchanged += 1
        else:
            c.changed(x, y)


# --------------------------------------------------------------------------- rendering


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _decode(s: Structure | None, role: str, data: bytes | None, length: int | None) -> JsonObject:
    if data is None:
        return {"length": length}
    full = length is None or len(data) == length
    out: JsonObject = {"length": length if length is not None else len(data)}
    if not full:
        out["text"] = f"{length:,} bytes (too large to list; first {len(data)} shown as hex)"
        out["hex_head"] = data.hex()
        return out
    try:
        from inspector.decode.values import decode_for

        dec = decode_for(s, role, data)
        out["text"] = _clip(str(dec.text))
        if len(data) <= MAX_JSON_VALUE_BYTES and dec.ok:
            out["value"] = dec.value
    except READ_ERRORS as exc:  # undecodable bytes must not take the diff down: show them
        out["text"] = _clip(data[:VALUE_HEAD].hex())
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["hex_head"] = data[:VALUE_HEAD].hex()
    return out


def render_item(d: StructureDiff, it: EntryChange) -> JsonObject:
    """A listed difference as JSON: key and values decoded with each side's decoder."""
    out: JsonObject = {"op": it.op}
    if it.index is not None:
        out["index"] = it.index
    if it.key is not None:
        ks = d.old if it.op == "removed" else d.new
        key = _decode(ks, "key", it.key, len(it.key))
        out["key"] = key.get("value", key.get("text"))
        out["key_text"] = key.get("text", "")
        out["key_hex"] = it.key[:256].hex()
    if it.op in ("removed", "changed"):
        out["old"] = _decode(d.old, "value", it.old, it.old_len)
        out["old_ranges"] = [list(r) for r in it.old_ranges[:16]]
    if it.op in ("added", "changed"):
        out["new"] = _decode(d.new, "value", it.new, it.new_len)
        out["new_ranges"] = [list(r) for r in it.new_ranges[:16]]
    return out
