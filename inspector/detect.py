"""Structure detection at virtual offset 0 of every memory (or physical 0 without a MemoryManager)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inspector.layouts import (
    BTREE_MAGIC,
    CELL_MAGIC,
    LOG_DATA_ENTRIES_OFFSET,
    LOG_DATA_MAGIC,
    LOG_INDEX_ENTRIES_OFFSET,
    LOG_INDEX_HEADER,
    LOG_INDEX_MAGIC,
    MINHEAP_MAGIC,
    VEC_MAGIC,
)
from inspector.memory import Memory, OutOfBounds
from inspector.model import Finding
from inspector.structures.base import Structure
from inspector.structures.cell import Cell
from inspector.structures.log import Log
from inspector.structures.raw import ZERO_PROBE, RawContent
from inspector.structures.vec import MinHeap, Vec

MemoryRef = tuple[int | str, Memory]


def _magic(mem: Memory) -> bytes:
    try:
        return mem.read(0, min(3, mem.size))
    except OutOfBounds:
        return b""


def is_zero_prefix(mem: Memory, limit: int = ZERO_PROBE) -> bool:
    """Whether the memory's first ``limit`` bytes (or all of it, if smaller) are zero.

    Checking a whole multi-GiB memory would make ``summary`` slow; a structure always writes its
    header at offset 0, so a zero first page already says "no structure here".
    """
    n = min(mem.size, limit)
    try:
        head = mem.read(0, n)
    except OutOfBounds:
        return False
    return head.count(0) == n


def open_structure(
    mem: Memory, memory_id: int | str, options: dict[str, Any] | None = None
) -> tuple[Structure, list[Finding]]:
    """Decode the structure at offset 0 of one memory. Never raises for bad bytes."""
    options = options or {}
    magic = _magic(mem)
    try:
        if magic == BTREE_MAGIC:
            from inspector.structures.btreemap.structure import open_btreemap

            return open_btreemap(mem, memory_id, options), []
        if magic == CELL_MAGIC:
            return Cell(mem, memory_id), []
        if magic == VEC_MAGIC:
            return Vec(mem, memory_id), []
        if magic == MINHEAP_MAGIC:
            return MinHeap(mem, memory_id), []
    except OutOfBounds as exc:
        raw = RawContent(mem, memory_id, "unknown", note=f"{magic.decode('latin-1')} header cut off")
        f = raw.finding(
            "error",
            "structure_truncated",
            f"memory {memory_id} starts with {magic!r} but its header is cut off: {exc}",
        )
        return raw, [f]
    if mem.size == 0:
        return RawContent(mem, memory_id, "empty", note="size 0"), []
    if is_zero_prefix(mem):
        return RawContent(mem, memory_id, "empty"), []
    if memory_id != "raw":
        from inspector.structures.upgrade_state import detect_upgrade_state

        state, problem = detect_upgrade_state(mem, memory_id)
        if state is not None:
            if problem:
                return state, [state.finding("error", "upgrade_state_truncated", problem, [(0, 4)])]
            return state, []
    raw = RawContent(mem, memory_id, "unknown")
    _describe_unknown(raw)
    return raw, []


def _describe_unknown(raw: RawContent) -> None:
    """Say what an unknown memory seems to hold: a length-prefixed blob, a Candid message, …"""
    from inspector.decode.blobs import describe_unknown_memory

    raw.content = describe_unknown_memory(raw.mem) or {}


def _log_half_length(mem: Memory) -> int | None:
    try:
        fields = LOG_INDEX_HEADER.unpack_from(mem.read(0, LOG_INDEX_HEADER.size))
    except OutOfBounds:
        return None
    return fields[3]


def _log_pair_consistent(index: Memory, data: Memory) -> bool:
    """The index's last end offset must fall inside the data memory (FORMAT.md §11.3)."""
    n = _log_half_length(index)
    if n is None:
        return False
    if n == 0:
        return True
    try:
        last = int.from_bytes(index.read(LOG_INDEX_ENTRIES_OFFSET + 8 * (n - 1), 8), "little")
    except OutOfBounds:
        return False
    return LOG_DATA_ENTRIES_OFFSET + last <= data.size


def pair_logs(indexes: Sequence[MemoryRef], datas: Sequence[MemoryRef]) -> list[tuple[MemoryRef, MemoryRef]]:
    """Pair GLI and GLD memories only where the pairing is unambiguous.

    One index and one data memory pair up. With more, an index pairs with a data memory when that is
    the only consistent choice for both.
    """
    if len(indexes) == 1 and len(datas) == 1:
        return [(indexes[0], datas[0])]
    # A list, not a dict keyed by MemoryRef: a VirtualMemory (a dataclass with eq) is not hashable.
    options = [(i, [d for d in datas if _log_pair_consistent(i[1], d[1])]) for i in indexes]
    pairs = []
    for i, ds in options:
        if len(ds) == 1:
            d = ds[0]
            if sum(1 for _i, other in options if d in other) == 1:
                pairs.append((i, d))
    return pairs


def detect_structures(
    memories: Sequence[MemoryRef], options: dict[str, Any] | None = None
) -> tuple[list[Structure], list[Finding]]:
    structures: list[Structure] = []
    findings: list[Finding] = []
    indexes: list[MemoryRef] = []
    datas: list[MemoryRef] = []
    for ref in memories:
        magic = _magic(ref[1])
        if magic == LOG_INDEX_MAGIC:
            indexes.append(ref)
        elif magic == LOG_DATA_MAGIC:
            datas.append(ref)
    pairs = pair_logs(indexes, datas)
    paired = {id(i) for i, _ in pairs} | {id(d) for _, d in pairs}
    logs: dict[int | str, Structure] = {}
    for (iid, imem), (did, dmem) in pairs:
        try:
            logs[iid] = Log(imem, dmem, [iid, did])  # type: ignore[list-item]
        except OutOfBounds as exc:
            findings.append(Finding("error", "log_index_invalid", f"log at memories {iid}/{did}: {exc}"))
    for ref in memories:
        mid, mem = ref
        if ref in indexes or ref in datas:
            if id(ref) in paired:
                if mid in logs:
                    structures.append(logs[mid])
                continue
            try:
                is_index = ref in indexes
                structures.append(Log(mem if is_index else None, None if is_index else mem, mid))
            except OutOfBounds as exc:
                findings.append(Finding("error", "log_index_invalid", f"log half at memory {mid}: {exc}"))
            continue
        s, fs = open_structure(mem, mid, (options or {}).get(str(mid)))
        structures.append(s)
        findings.extend(fs)
    return structures, findings
