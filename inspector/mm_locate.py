"""Where the MemoryManager sits: offset 0, a page-aligned base further in (RestrictedMemory), or nowhere.

``MemoryManager::init(RestrictedMemory::new(mem, S..MAX_PAGES))`` writes the usual layout shifted by
``S × 65,536`` (FORMAT.md §14.1): Internet Identity uses S = 1 (its own header in page 0), an older ICP
ledger put the manager 2 GiB in. The search looks only at page starts, only where the file holds data
(``SEEK_DATA``: the gap before a restricted base is zero memory, usually a hole), and accepts a header
only when it is valid on its own terms, so random bytes do not produce a manager.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspector.layouts import (
    BUCKET_TABLE_OFFSET,
    BUCKETS_START,
    MAX_NUM_BUCKETS,
    MM_HEADER,
    MM_HEADER_PAGE_USED,
    MM_HEADER_SIZE,
    MM_LAYOUT_VERSION,
    MM_MAGIC,
    STRUCTURE_MAGICS,
    UNALLOCATED_BUCKET,
    WASM_PAGE_SIZE,
)
from inspector.mapped_pages import page_releaser
from inspector.memory import PhysicalMemory
from inspector.sparse import data_ranges

# The header is searched for at page starts only: RestrictedMemory ranges are whole pages.
_NEEDLE = MM_MAGIC + bytes([MM_LAYOUT_VERSION])
_ALL_FREE = bytes([UNALLOCATED_BUCKET]) * MAX_NUM_BUCKETS
# Candid message magic: what ic-cdk's stable_save and many application headers start with.
DIDL = b"DIDL"


@dataclass
class BaseChoice:
    base: int | None  # None: no manager anywhere
    source: str  # "offset 0", "page scan", "--base"
    note: str = ""


def header_valid_at(buf: object, size: int, base: int) -> bool:
    """A MemoryManager header that is valid on its own terms at ``base`` (FORMAT.md §2, §14.1).

    Magic and version 1, bucket size > 0, at most 32,768 allocated buckets, zero reserved bytes, every
    table entry past the allocated count free, and every allocated bucket inside the file.
    """
    if base < 0 or base + MM_HEADER_PAGE_USED > size:
        return False
    mv = memoryview(buf)  # type: ignore[arg-type]
    if bytes(mv[base : base + 4]) != _NEEDLE:
        return False
    h = MM_HEADER.parse_dict(bytes(mv[base : base + MM_HEADER_SIZE]), 0)
    nb, bs = h["num_allocated_buckets"], h["bucket_size_in_pages"]
    if bs == 0 or nb > MAX_NUM_BUCKETS or any(h["reserved"]):
        return False
    t0 = base + BUCKET_TABLE_OFFSET
    if bytes(mv[t0 + nb : t0 + MAX_NUM_BUCKETS]) != _ALL_FREE[nb:]:
        return False
    return base + BUCKETS_START + nb * bs * WASM_PAGE_SIZE <= size


def scan_for_base(phys: PhysicalMemory, fd: int | None, start: int = WASM_PAGE_SIZE) -> int | None:
    """The first page start at or after ``start`` holding a valid header, skipping holes.

    Cost: one 4-byte compare per data page (an 8 GiB snapshot has 131,072 pages; its holes cost nothing).
    """
    size = phys.size
    ranges = data_ranges(fd, size) if fd is not None else [(0, size)]
    buf = phys.buf
    # Four bytes per page: without this hint each touch would read ahead 128 KiB of a dense file.
    _advise(buf, "MADV_RANDOM")
    try:
        for lo, hi in ranges:
            p = max(start, lo + (-lo % WASM_PAGE_SIZE))
            while p + MM_HEADER_PAGE_USED <= size and p < hi:
                if buf[p : p + 4] == _NEEDLE and header_valid_at(buf, size, p):
                    return p
                p += WASM_PAGE_SIZE
        return None
    finally:
        _advise(buf, "MADV_NORMAL")
        # A touch maps the whole page-cache folio it lands in (often 64 KiB or more): over a file held
        # in the page cache the scan had mapped nearly all of it (a 20M-entry map: 780 MB of RSS
        # before any decoding). Let go of what it mapped; the page cache keeps the data.
        page_releaser(buf)(start, size)


def _advise(buf: object, name: str) -> None:
    import mmap

    flag = getattr(mmap, name, None)
    advise = getattr(buf, "madvise", None)
    if flag is None or advise is None:
        return
    try:
        advise(flag)
    except (OSError, ValueError):
        pass  # a hint only


def _structure_page_before(phys: PhysicalMemory, fd: int | None, end: int) -> bool:
    """Whether a structure magic sits at any page start in [65,536, end): old buckets of a base-0 manager."""
    ranges = data_ranges(fd, end) if fd is not None else [(0, end)]
    buf = phys.buf
    try:
        for lo, hi in ranges:
            p = max(WASM_PAGE_SIZE, lo + (-lo % WASM_PAGE_SIZE))
            while p < min(hi, end):
                if bytes(buf[p : p + 3]) in STRUCTURE_MAGICS:
                    return True
                p += WASM_PAGE_SIZE
        return False
    finally:
        page_releaser(buf)(WASM_PAGE_SIZE, end)  # what the touches mapped (see scan_for_base)


def choose_base(phys: PhysicalMemory, fd: int | None) -> BaseChoice:
    """Where the MemoryManager is, and why. Offset 0 wins whenever it holds ``MGR`` (even a damaged one,
    so damage there is reported as before); a structure magic at 0 means no manager at all."""
    size = phys.size
    if size < 3:
        return BaseChoice(None, "offset 0")
    head = bytes(phys.buf[0:4])
    if head[:3] == MM_MAGIC or head[:3] in STRUCTURE_MAGICS:
        return BaseChoice(0 if head[:3] == MM_MAGIC else None, "offset 0")
    base = scan_for_base(phys, fd)
    if base is None:
        return BaseChoice(None, "offset 0")
    if head == DIDL and (
        _base0_table_survives(phys) or (base != BUCKETS_START and _structure_page_before(phys, fd, base))
    ):
        # A Candid message at 0 and, behind it, a base-0 bucket table or structure headers at page starts of
        # the base-0 bucket area: the incident (stable_save over a manager at 0). The later MGR is then a
        # nested manager inside one of the old memories.
        return BaseChoice(None, "offset 0", note=f"'MGR' at {base:,} ignored: the layout at 0 was clobbered")
    return BaseChoice(base, "page scan")


# The tail of a base-0 bucket table: a manager writes 0xFF for every bucket it never allocated, and a
# manager with 31,744+ buckets is unheard of, so 1,024 × 0xFF right before 34,848 is its signature.
_TABLE_TAIL = 1024


def _base0_table_survives(phys: PhysicalMemory) -> bool:
    if phys.size < MM_HEADER_PAGE_USED:
        return False
    tail = bytes(phys.buf[MM_HEADER_PAGE_USED - _TABLE_TAIL : MM_HEADER_PAGE_USED])
    return tail == _ALL_FREE[:_TABLE_TAIL]
