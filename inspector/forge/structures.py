"""Writers for the simple structures: Cell, Vec, MinHeap and Log (FORMAT.md §4–§6).

Each returns a :class:`~inspector.forge.image.Written`: the segments the real library writes into the
structure's own memory (headers built from the construct declarations in ``inspector.layouts``), and
the memory size it ends up with. Only the bytes the library writes are emitted, so placing a structure
over old memory leaves stale bytes where the library would leave them (e.g. reserved header bytes,
slot padding, the tail of a shorter Cell value).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from inspector.forge.image import Segment, Written
from inspector.layouts import (
    CELL_MAGIC,
    LOG_DATA_ENTRIES_OFFSET,
    LOG_DATA_MAGIC,
    LOG_INDEX_ENTRIES_OFFSET,
    LOG_INDEX_MAGIC,
    MINHEAP_MAGIC,
    VEC_DATA_OFFSET,
    VEC_MAGIC,
    CellHeader,
    LogDataHeader,
    LogIndexHeader,
    VecHeader,
    vec_slot_prefix_width,
)

LAYOUT_VERSION = 1


def cell(value: bytes) -> Written:
    """``Cell::new(memory, value)``: "SCL" v1, u32 LE length, then the encoded value."""
    header = CellHeader.build(
        {"magic": CELL_MAGIC, "layout_version": LAYOUT_VERSION, "value_length": len(value)}
    )
    return Written([(0, header + value)], min_pages=1)


def _vec_header(magic: bytes, length: int, max_size: int, is_fixed: bool) -> bytes:
    full = VecHeader.build(
        {
            "magic": magic,
            "layout_version": LAYOUT_VERSION,
            "length": length,
            "max_entry_size": max_size,
            "is_fixed_size": 1 if is_fixed else 0,
            "reserved": bytes(47),
        }
    )
    # The library writes the fields one by one and never touches the 47 reserved bytes.
    return full[:17]


def encode_slots(elements: Sequence[bytes], max_size: int, is_fixed: bool) -> list[bytes]:
    """Each element as the library writes it into its slot: LE length prefix (if not fixed) + bytes."""
    width = vec_slot_prefix_width(max_size, is_fixed)
    out: list[bytes] = []
    for e in elements:
        if is_fixed and len(e) != max_size:
            raise ValueError(f"fixed-size element of {len(e)} bytes, expected {max_size}")
        if len(e) > max_size:
            raise ValueError(f"element of {len(e)} bytes exceeds max_size {max_size}")
        out.append(len(e).to_bytes(width, "little") + e if width else e)
    return out


def _base_vec(magic: bytes, elements: Sequence[bytes], max_size: int, is_fixed: bool) -> Written:
    width = vec_slot_prefix_width(max_size, is_fixed)
    slot = max_size + width
    parts: list[Segment] = [(0, _vec_header(magic, len(elements), max_size, is_fixed))]
    if is_fixed:
        # Fixed slots are back to back with no padding: one contiguous write.
        encoded = encode_slots(elements, max_size, is_fixed)
        if encoded:
            parts.append((VEC_DATA_OFFSET, b"".join(encoded)))
    else:
        for i, e in enumerate(encode_slots(elements, max_size, is_fixed)):
            parts.append((VEC_DATA_OFFSET + i * slot, e))
    return Written(parts, min_pages=1)


def vec(elements: Sequence[bytes], max_size: int, is_fixed: bool) -> Written:
    """``StableVec`` holding elements (already Storable-encoded, e.g. u64 big-endian)."""
    return _base_vec(VEC_MAGIC, elements, max_size, is_fixed)


def heap_order(pushed: Sequence[bytes], key: Callable[[bytes], object] | None = None) -> list[bytes]:
    """Array order after pushing elements one by one into a binary min-heap (``MinHeap::push``).

    ``key`` orders elements like the Rust type's ``Ord``; byte order is right for unsigned big-endian
    integers, strings and blobs.
    """
    k = key or (lambda b: b)
    heap: list[bytes] = []
    for e in pushed:
        heap.append(e)
        i = len(heap) - 1
        while i > 0:
            parent = (i - 1) // 2
            if k(heap[i]) < k(heap[parent]):  # type: ignore[operator]
                heap[i], heap[parent] = heap[parent], heap[i]
                i = parent
            else:
                break
    return heap


def minheap(
    elements: Sequence[bytes], max_size: int, is_fixed: bool, *, already_heap: bool = False
) -> Written:
    """``StableMinHeap``: elements are pushed in the given order unless already in heap (array) order."""
    slots = list(elements) if already_heap else heap_order(elements)
    return _base_vec(MINHEAP_MAGIC, slots, max_size, is_fixed)


def log(entries: Sequence[bytes]) -> tuple[Written, Written]:
    """``StableLog``: (index memory, data memory). Index holds cumulative u64 LE ends at 40 + 8·i."""
    index_header = LogIndexHeader.build(
        {
            "magic": LOG_INDEX_MAGIC,
            "layout_version": LAYOUT_VERSION,
            "reserved": bytes(28),
            "length": len(entries),
        }
    )
    data_header = LogDataHeader.build(
        {"magic": LOG_DATA_MAGIC, "layout_version": LAYOUT_VERSION, "reserved": bytes(28)}
    )
    ends: list[int] = []
    total = 0
    for e in entries:
        total += len(e)
        ends.append(total)
    # The library writes magic + version (4 bytes) and the length field; the reserved bytes stay untouched.
    index_parts: list[Segment] = [(0, index_header[:4]), (32, index_header[32:40])]
    if ends:
        index_parts.append((LOG_INDEX_ENTRIES_OFFSET, struct.pack(f"<{len(ends)}Q", *ends)))
    data_parts: list[Segment] = [(0, data_header[:4])]
    blob = b"".join(entries)
    if blob:
        data_parts.append((LOG_DATA_ENTRIES_OFFSET, blob))
    return Written(index_parts, min_pages=1), Written(data_parts, min_pages=1)
