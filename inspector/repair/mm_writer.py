"""A MemoryManager header and bucket table (FORMAT.md §2), for ``repair``.

``base_offset`` is where the manager's ``MGR`` header sits in stable memory: 0 for a manager on the
whole memory, ``S × 65,536`` for one on ``RestrictedMemory::new(mem, S..MAX_PAGES)`` (FORMAT.md §14.1).
Everything the manager addresses (table, buckets) is relative to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from inspector.layouts import (
    BUCKET_TABLE_OFFSET,
    BUCKETS_START,
    MAX_NUM_BUCKETS,
    MAX_NUM_MEMORIES,
    MM_HEADER,
    MM_HEADER_PAGE_USED,
    MM_LAYOUT_VERSION,
    MM_MAGIC,
    UNALLOCATED_BUCKET,
    WASM_PAGE_SIZE,
)


def header_bytes(bucket_size_pages: int, owners: Sequence[int | None], sizes: Mapping[int, int]) -> bytes:
    """The 2,080-byte header: ``owners`` is one entry per allocated bucket (None: a hole), ``sizes`` the
    memory sizes in pages by MemoryId."""
    if not 1 <= bucket_size_pages <= 0xFFFF:
        raise ValueError(f"bucket size {bucket_size_pages} pages does not fit the header's u16")
    if len(owners) > MAX_NUM_BUCKETS:
        raise ValueError("more buckets than a MemoryManager can hold")
    slots = [0] * MAX_NUM_MEMORIES
    for mid, pages in sizes.items():
        if not 0 <= mid < MAX_NUM_MEMORIES:
            raise ValueError(f"MemoryId {mid} is out of range")
        slots[mid] = pages
    return MM_HEADER.pack(MM_MAGIC, MM_LAYOUT_VERSION, len(owners), bucket_size_pages, bytes(32), *slots)


def table_bytes(owners: Sequence[int | None]) -> bytes:
    """The 32,768-byte bucket table: each allocated bucket's owner, 0xFF for holes and the rest."""
    table = bytearray([UNALLOCATED_BUCKET]) * MAX_NUM_BUCKETS
    for b, owner in enumerate(owners):
        if owner is not None:
            table[b] = owner
    return bytes(table)


def manager_page(
    bucket_size_pages: int, owners: Sequence[int | None], sizes: Mapping[int, int], *, clear_tail: bool
) -> bytes:
    """Header + table (34,848 bytes), and with ``clear_tail`` the zeroed rest of the manager's page."""
    out = header_bytes(bucket_size_pages, owners, sizes) + table_bytes(owners)
    assert len(out) == MM_HEADER_PAGE_USED and BUCKET_TABLE_OFFSET == MM_HEADER.size
    return out + (bytes(BUCKETS_START - MM_HEADER_PAGE_USED) if clear_tail else b"")


def bucket_start(base_offset: int, bucket: int, bucket_size_pages: int) -> int:
    """Physical offset of a bucket of a manager whose header is at ``base_offset``."""
    return base_offset + BUCKETS_START + bucket * bucket_size_pages * WASM_PAGE_SIZE


def physical_size(base_offset: int, num_buckets: int, bucket_size_pages: int) -> int:
    """Bytes of stable memory a manager with this many buckets needs (its page plus the buckets)."""
    return bucket_start(base_offset, num_buckets, bucket_size_pages)
