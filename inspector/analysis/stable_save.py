"""ic-cdk ``stable_save`` messages: a Candid message written at offset 0 of stable memory (FORMAT.md §8, §11.1).

``stable_save`` writes ``DIDL…`` at physical offset 0 with no length prefix, so the only way to know where
the message ends is to decode every value against its type table; everything after that end is older
memory that the write did not touch. The same recognition runs on the start of a virtual memory (a
canister that keeps a Candid message in its upgrade memory, bare or behind a u32 length, FORMAT.md §8.4).

Decoding is bounded by the Candid decoder's ``Limits``: hostile bytes give an undecodable blob, never
a hang.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inspector.decode.candid import MAGIC as DIDL
from inspector.decode.candid import CandidError, CandidMessage, decode_message
from inspector.decode.candid_render import message_json, message_text, message_types, type_text
from inspector.jsonout import JsonObject
from inspector.layouts import (
    BUCKET_TABLE_OFFSET,
    BUCKETS_START,
    MAX_NUM_BUCKETS,
    MAX_NUM_MEMORIES,
    MM_HEADER_PAGE_USED,
    MM_SIZE_SLOTS_OFFSET,
    WASM_PAGE_SIZE,
    MemoryManagerHeader,
    field_spans,
)
from inspector.memory import Memory, OutOfBounds, PhysicalMemory, Range
from inspector.model import Field, Region

if TYPE_CHECKING:
    from inspector.analysis.reconstruct import Reconstruction

# The decoded value goes into ``to_json`` only up to this message size: a multi-GiB message would make
# every ``summary --json`` enormous. Larger messages still report their range, types and length.
MAX_JSON_MESSAGE_BYTES = 16 << 20
# A message inside a virtual memory that crosses a bucket boundary is copied out before decoding; this
# caps that copy (memory stays flat on huge memories; a longer message is reported as undecodable).
MAX_COPY_BYTES = 64 << 20

_SIZE_SLOTS_START = MM_SIZE_SLOTS_OFFSET  # memory_sizes_in_pages[0] (FORMAT.md §2.1)
_FIELD_LABELS = {
    "magic": "magic",
    "layout_version": "layout version",
    "num_allocated_buckets": "bucket count",
    "bucket_size_in_pages": "bucket size",
    "reserved": "reserved bytes",
}


@dataclass
class Overwritten:
    """One named thing a message at offset 0 wrote over."""

    what: str  # "mm_header_field" | "memory_sizes" | "bucket_table" | "page0_tail" | "bucket"
    text: str
    range: Range
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        out: JsonObject = {"what": self.what, "text": self.text, "range": list(self.range)}
        if self.details:
            out["details"] = self.details
        return out


@dataclass
class StableSaveBlob:
    """A Candid message found at the start of stable memory (``memory_id`` None) or of a virtual memory.

    ``start``/``end`` are offsets in that memory (physical for stable memory), half-open. When the
    message does not decode, ``message`` is None, ``error`` says why and ``end`` is where decoding
    stopped: the blob is at least that long.
    """

    start: int
    end: int
    memory_id: int | str | None = None
    length_prefix: bool = False
    message: CandidMessage | None = None
    error: str | None = None
    physical_ranges: list[Range] = field(default_factory=list)
    overwritten: list[Overwritten] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    # What to add to the message's own offsets to get physical offsets: 0 when it was decoded straight
    # from the snapshot, None when it was decoded from a copy of bytes spread over several buckets.
    message_phys_base: int | None = 0

    @property
    def complete(self) -> bool:
        return self.message is not None

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def arg_types(self) -> list[str]:
        if self.message is None:
            return []
        return [type_text(t, self.names or None) for t in self.message.arg_types]

    def value_json(self) -> Any:
        """The decoded arguments in the official JS decoder's conventions (one list item per argument)."""
        if self.message is None:
            return None
        return message_json(self.message, self.names or None)

    def value_text(self, **options: Any) -> str:
        if self.message is None:
            return ""
        return message_text(self.message, self.names or None, **options)

    def to_json(self) -> JsonObject:
        out: JsonObject = {
            "range": [self.start, self.end],
            "length": self.length,
            "memory_id": self.memory_id,
            "physical_ranges": [list(r) for r in self.physical_ranges],
            "first_bytes_ascii": "DIDL",
            "length_prefix": self.length_prefix,
            "complete": self.complete,
        }
        if self.error:
            out["error"] = self.error
        if self.message is not None:
            out["arg_types"] = self.arg_types
            out["type_definitions"] = message_types(self.message, self.names or None)
            out["value_count"] = self.message.value_count
            if self.length <= MAX_JSON_MESSAGE_BYTES:
                out["decoded"] = self.value_json()
            else:
                out["decoded_omitted"] = f"message longer than {MAX_JSON_MESSAGE_BYTES:,} bytes"
        if self.overwritten:
            out["overwritten"] = [o.to_json() for o in self.overwritten]
        return out

    def region(self) -> Region:
        """The message as a region of kind ``stable_save`` (children: one per argument)."""
        from inspector.decode.storable import Decoded

        where = "stable memory" if self.memory_id is None else f"memory {self.memory_id}"
        fields = [
            Field("range", [self.start, self.end], display=f"{self.start:,}..{self.end:,}"),
            Field("length", self.length, display=f"{self.length:,} bytes"),
            Field("length_prefix", self.length_prefix),
        ]
        children: list[Region] = []
        value = None
        if self.message is not None:
            fields.append(Field("arg_types", self.arg_types, display=", ".join(self.arg_types)))
            fields.append(Field("types", message_types(self.message, self.names or None)))
            text = self.value_text()
            value = Decoded(self.value_json(), text if len(text) <= 400 else text[:399] + "…")
            base = self.message_phys_base
            for i, arg in enumerate(self.message.args):
                ranges = [(base + arg.start, base + arg.end)] if base is not None else []
                children.append(
                    Region(
                        f"argument {i}: {type_text(arg.type, self.names or None)}",
                        "value",
                        ranges,
                        value=Decoded(message_json(self.message, self.names or None)[i], ""),
                        detail=f"{arg.end - arg.start:,} bytes",
                    )
                )
        else:
            fields.append(Field("error", self.error or ""))
        for o in self.overwritten:
            fields.append(Field(f"overwrote {o.what}", o.text, o.range))
        return Region(
            f"stable_save message in {where}",
            "stable_save",
            list(self.physical_ranges),
            fields=fields,
            value=value,
            children=children,
            memory_id=self.memory_id,
            detail=f"{self.length:,} bytes" + ("" if self.complete else " (does not decode: end unknown)"),
        )


def find_at_physical_zero(phys: PhysicalMemory) -> StableSaveBlob | None:
    """A Candid message at physical offset 0 of the snapshot, decoded to find its exact end."""
    return find_at_physical(phys, 0)


def find_at_physical(phys: PhysicalMemory, start: int) -> StableSaveBlob | None:
    """A Candid message at physical offset ``start`` (0, or a RestrictedMemory manager's base)."""
    if phys.size < start + len(DIDL) or bytes(phys.buf[start : start + 4]) != DIDL:
        return None
    try:
        msg = decode_message(phys.buf, start, end=phys.size)
    except CandidError as exc:
        end = max(start + len(DIDL), min(exc.offset, phys.size))
        return StableSaveBlob(start, end, None, False, None, str(exc), [(start, end)])
    return StableSaveBlob(start, msg.end, None, False, msg, None, [(start, msg.end)])


def _decode_in_memory(
    mem: Memory, offset: int, end: int
) -> tuple[CandidMessage | None, int, str | None, int | None]:
    """Decode a message at virtual ``offset`` that may not extend past ``end``.

    Returns (message, virtual end reached, error, physical base of the message's offsets). Decodes
    straight from the snapshot mmap when the bytes are contiguous there (the usual case: inside one
    bucket), else from a bounded copy (whose offsets are not physical: base None).
    """
    buf, phys, avail = mem.contiguous(offset)
    if avail >= end - offset:
        try:
            msg = decode_message(buf, phys, end=phys + (end - offset))
        except CandidError as exc:
            return None, offset + max(0, exc.offset - phys), str(exc), 0
        # The message's offsets are physical here; the virtual end is the same distance from offset.
        return msg, offset + (msg.end - phys), None, 0
    n = min(end - offset, MAX_COPY_BYTES)
    try:
        data = mem.read(offset, n)
    except OutOfBounds as exc:
        return None, offset, str(exc), None
    try:
        msg = decode_message(data, 0)
    except CandidError as exc:
        error = str(exc)
        if n < end - offset:
            error += f" (only the first {n:,} bytes were examined)"
        return None, offset + exc.offset, error, None
    return msg, offset + msg.end, None, None


def find_in_memory(mem: Memory, memory_id: int | str) -> StableSaveBlob | None:
    """A Candid message at virtual offset 0 of a memory, or behind a u32 LE length (quick_start style)."""
    try:
        head = mem.read(0, min(8, mem.size))
    except OutOfBounds:
        return None
    if head[:4] == DIDL:
        start, limit, prefixed = 0, mem.size, False
    elif len(head) == 8 and head[4:8] == DIDL:
        length = int.from_bytes(head[:4], "little")
        if length < 4 or 4 + length > mem.size:
            return None
        start, limit, prefixed = 4, 4 + length, True
    else:
        return None
    msg, end, error, base = _decode_in_memory(mem, start, limit)
    if prefixed and msg is not None and end != limit:
        # The length prefix is the delimiter (FORMAT.md §8.4): a message that ends elsewhere is not it.
        error = f"the Candid message ends at {end:,}, not at the {limit - 4:,} bytes its length prefix says"
        msg = None
    try:
        ranges = mem.physical_ranges(0, max(end, start + 4))
    except OutOfBounds:
        ranges = []
    return StableSaveBlob(start, end, memory_id, prefixed, msg, error, ranges, message_phys_base=base)


# --- what a message at physical 0 overwrote --------------------------------------------------------------


def _runs(ids: list[int]) -> str:
    """'0–33' style text for a sorted list of ints."""
    if not ids:
        return "none"
    parts: list[str] = []
    start = prev = ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def describe_overwritten(
    end: int, layout: Reconstruction | None, header_bytes: bytes = b""
) -> list[Overwritten]:
    """Name everything a message covering physical [0, end) wrote over.

    ``layout`` is the best knowledge of the old MemoryManager (a ``Reconstruction``, or None when even
    the bucket size is unknown). ``header_bytes`` are the current first 8 bytes, to say what the header
    fields now read as.
    """
    out: list[Overwritten] = []
    hb = header_bytes
    for span in field_spans(MemoryManagerHeader):
        s, e = span.offset, span.offset + span.size
        if s >= end:
            break
        if span.name == "memory_sizes_in_pages":
            out.extend(_sizes_overwritten(end, layout))
            continue
        label = _FIELD_LABELS.get(span.name, span.name)
        now = ""
        if span.name == "reserved":
            now = "no longer zero" if len(hb) < e or any(hb[s:e]) else ""
        elif len(hb) >= e:
            raw = hb[s:e]
            if span.name == "magic":
                now = f"now {raw.decode('latin-1')!r}"
            else:
                now = f"now {int.from_bytes(raw, 'little'):,}"
        if e > end:
            now = "partly" + (f", {now}" if now else "")
        text = label + (f" ({now})" if now else "")
        out.append(
            Overwritten(
                "mm_header_field", text, (s, min(e, end)), {"field": span.name, "label": label, "now": now}
            )
        )
    if end > BUCKET_TABLE_OFFSET:
        n = min(end, MM_HEADER_PAGE_USED) - BUCKET_TABLE_OFFSET
        nb = layout.num_buckets if layout is not None else None
        nb_known = layout is not None and layout.table.num_buckets is not None
        text = f"bucket-table entries of buckets 0–{n - 1}" if n > 1 else "the bucket-table entry of bucket 0"
        if n >= MAX_NUM_BUCKETS:
            text = "the whole bucket table (32,768 entries)"
        details: dict[str, Any] = {"entries": n}
        if nb:
            lost = min(n, nb)
            if lost >= nb:
                text += (
                    f": the owners of all {nb} allocated buckets are gone"
                    if nb_known
                    else ": every owner is gone"
                )
            else:
                text += f": the owners of buckets 0–{lost - 1} of the {nb} allocated are gone"
            details["allocated_entries_lost"] = lost
        out.append(Overwritten("bucket_table", text, (BUCKET_TABLE_OFFSET, BUCKET_TABLE_OFFSET + n), details))
    if end > MM_HEADER_PAGE_USED:
        e = min(end, BUCKETS_START)
        out.append(
            Overwritten(
                "page0_tail",
                f"the unused rest of page 0 ({MM_HEADER_PAGE_USED:,}..{e:,})",
                (MM_HEADER_PAGE_USED, e),
            )
        )
    if end > BUCKETS_START:
        out.extend(_buckets_overwritten(end, layout))
    return out


def _sizes_overwritten(end: int, layout: Reconstruction | None) -> list[Overwritten]:
    last_byte = min(end, BUCKET_TABLE_OFFSET) - 1
    last = min(MAX_NUM_MEMORIES - 1, (last_byte - _SIZE_SLOTS_START) // 8)
    partial = (last_byte - _SIZE_SLOTS_START + 1) % 8 != 0 and end < BUCKET_TABLE_OFFSET
    if last < 0:
        return []
    text = f"the sizes of memories 0–{last}" if last else "the size of memory 0"
    if partial:
        text += f" ({last} only partly)"
    used = [
        m.id
        for m in (layout.memories if layout is not None else [])
        if isinstance(m.id, int) and m.id <= last
    ]
    if used:
        text += f", including those of memories {_runs(sorted(used))}, which are in use"
    details = {"memories": [0, last], "partial_last": partial, "in_use": used}
    return [Overwritten("memory_sizes", text, (_SIZE_SLOTS_START, min(end, BUCKET_TABLE_OFFSET)), details)]


def _buckets_overwritten(end: int, layout: Reconstruction | None) -> list[Overwritten]:
    bs_pages = layout.bucket_size_in_pages if layout is not None else None
    if not bs_pages:
        return [
            Overwritten(
                "bucket",
                f"the first {end - BUCKETS_START:,} bytes of the bucket area (bucket size unknown)",
                (BUCKETS_START, end),
            )
        ]
    bs = bs_pages * WASM_PAGE_SIZE
    out: list[Overwritten] = []
    b = 0
    while BUCKETS_START + b * bs < end and b < MAX_NUM_BUCKETS:
        s = BUCKETS_START + b * bs
        e = min(end, s + bs)
        owner_text = layout.owner_text if layout is not None else None
        owner = owner_text(b) if owner_text is not None else "owner unknown"
        text = f"bucket {b} ({owner}): " + (
            f"all {bs:,} bytes" if e - s == bs else f"bytes {s:,}..{e:,}, the first {e - s:,} of its {bs:,}"
        )
        out.append(Overwritten("bucket", text, (s, e), {"bucket": b, "bytes": e - s}))
        b += 1
    return out


def summarize_overwritten(parts: list[Overwritten]) -> str:
    """One sentence fragment naming everything in ``parts``, header fields grouped."""
    fields = [p.text for p in parts if p.what == "mm_header_field"]
    out: list[str] = []
    if fields:
        out.append("the MemoryManager header's " + ", ".join(fields))
    out.extend(p.text for p in parts if p.what != "mm_header_field")
    if parts and not any(p.what == "bucket_table" for p in parts):
        out.append("(the bucket table is intact)")
    return "; ".join(out)


def compact_overwritten(parts: list[Overwritten]) -> str:
    """A short fragment for the diagnosis: "the header (magic now 'DID', …), the whole bucket table, …"."""
    out: list[str] = []
    fields = [p for p in parts if p.what == "mm_header_field"]
    if fields:
        shown = []
        for p in fields:
            now = str(p.details.get("now", ""))
            label = str(p.details.get("label", p.text))
            if now.startswith("now "):
                shown.append(f"{label} {now[4:]}")
            elif now == "no longer zero":
                shown.append(f"{label} non-zero")
            else:
                shown.append(f"{label} ({now})" if now else label)
        out.append("the MemoryManager header (now: " + ", ".join(shown) + ")")
    for p in parts:
        if p.what == "memory_sizes":
            first, last = p.details["memories"]
            used = p.details.get("in_use") or []
            text = f"the sizes of memories {first}–{last}" if last else "the size of memory 0"
            extras = []
            if p.details.get("partial_last"):
                extras.append(f"{last} only partly")
            if used:
                extras.append(f"{_runs(sorted(used))} in use")
            out.append(text + (f" ({'; '.join(extras)})" if extras else ""))
        elif p.what == "bucket_table":
            n = p.details.get("entries", 0)
            out.append(
                "the whole bucket table" if n >= MAX_NUM_BUCKETS else f"bucket-table entries 0–{n - 1}"
            )
        elif p.what == "page0_tail":
            out.append("the rest of page 0")
        elif p.what == "bucket":
            out.append(f"the first {p.details['bytes']:,} bytes of bucket {p.details['bucket']}")
    if parts and not any(p.what == "bucket_table" for p in parts):
        out.append("but not the bucket table")
    if len(out) > 1:
        return ", ".join(out[:-1]) + (", " if out[-1].startswith("but ") else " and ") + out[-1]
    return out[0] if out else "nothing known"
