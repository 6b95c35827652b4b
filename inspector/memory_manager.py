"""The MemoryManager header and bucket table (FORMAT.md §2), and the virtual memories they define."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inspector.layouts import (
    BUCKET_TABLE_OFFSET,
    BUCKETS_START,
    MAX_NUM_BUCKETS,
    MAX_NUM_MEMORIES,
    MM_HEADER,
    MM_HEADER_PAGE_USED,
    MM_HEADER_SIZE,
    MM_LAYOUT_VERSION,
    MM_MAGIC,
    UNALLOCATED_BUCKET,
    WASM_PAGE_SIZE,
)
from inspector.memory import PhysicalMemory, VirtualMemory
from inspector.model import Finding


@dataclass
class MemoryInfo:
    id: int
    size_pages: int
    buckets: list[int]
    memory: VirtualMemory

    @property
    def size_bytes(self) -> int:
        return self.size_pages * WASM_PAGE_SIZE

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size_pages": self.size_pages,
            "size_bytes": self.size_bytes,
            "buckets": list(self.buckets),
            "bucket_physical_ranges": [
                [
                    BUCKETS_START + b * self.memory.bucket_size_bytes,
                    BUCKETS_START + (b + 1) * self.memory.bucket_size_bytes,
                ]
                for b in self.buckets
            ],
        }


@dataclass
class MemoryManagerInfo:
    present: bool
    reason: str = ""
    magic: bytes = b""
    layout_version: int = 0
    num_allocated_buckets: int = 0
    bucket_size_in_pages: int = 0
    reserved: bytes = b""
    memory_sizes_in_pages: list[int] = field(default_factory=list)
    table: bytes = b""  # the raw 32,768-byte bucket table
    memories: list[MemoryInfo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    reconstructed: bool = False  # rebuilt from surviving structures, not read from a header

    @property
    def bucket_size_bytes(self) -> int:
        return self.bucket_size_in_pages * WASM_PAGE_SIZE

    @property
    def bucket_owners(self) -> list[int]:
        return list(self.table[: self.num_allocated_buckets])

    def memory(self, memory_id: int) -> MemoryInfo | None:
        for m in self.memories:
            if m.id == memory_id:
                return m
        return None

    def owner_of_physical(self, pos: int) -> tuple[int | None, int | None]:
        """(bucket id, owning memory id or None) for a physical offset inside the bucket area."""
        if pos < BUCKETS_START or not self.bucket_size_bytes:
            return None, None
        b = (pos - BUCKETS_START) // self.bucket_size_bytes
        if b >= MAX_NUM_BUCKETS:
            return None, None
        owner = self.table[b] if b < len(self.table) else UNALLOCATED_BUCKET
        return b, (None if owner == UNALLOCATED_BUCKET else owner)

    def to_json(self) -> dict[str, Any]:
        if not self.present:
            out: dict[str, Any] = {"present": False, "reason": self.reason}
            if self.magic:
                out["bytes_0_4_hex"] = self.magic.hex()
            return out
        return {
            "present": True,
            "magic": self.magic.decode("latin-1"),
            "layout_version": self.layout_version,
            "num_allocated_buckets": self.num_allocated_buckets,
            "bucket_size_in_pages": self.bucket_size_in_pages,
            "bucket_size_in_bytes": self.bucket_size_bytes,
            "bucket_owners": self.bucket_owners,
            "memory_sizes_in_pages": {str(i): s for i, s in enumerate(self.memory_sizes_in_pages) if s},
            "memories": [m.to_json() for m in self.memories],
            "reconstructed": self.reconstructed,
        }


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def build_memories(
    phys: PhysicalMemory, table: bytes, sizes: list[int], bucket_size_pages: int
) -> list[MemoryInfo]:
    """Each memory's buckets in ascending id order = virtual order (FORMAT.md §2.2)."""
    by_owner: dict[int, list[int]] = {}
    for b, owner in enumerate(table):
        if owner != UNALLOCATED_BUCKET:
            by_owner.setdefault(owner, []).append(b)
    bs = bucket_size_pages * WASM_PAGE_SIZE
    ids = sorted(set(by_owner) | {i for i, s in enumerate(sizes) if s})
    out = []
    for i in ids:
        if i >= MAX_NUM_MEMORIES:
            continue
        size_pages = sizes[i] if i < len(sizes) else 0
        buckets = by_owner.get(i, [])
        # A size the buckets cannot hold is a finding; map only what the buckets cover so reads past them
        # raise OutOfBounds instead of wandering into other memories.
        size_bytes = min(size_pages * WASM_PAGE_SIZE, len(buckets) * bs) if bs else 0
        vm = VirtualMemory(phys, i, buckets, bs or 1, size_bytes)
        out.append(MemoryInfo(i, size_pages, buckets, vm))
    return out


def read_memory_manager(phys: PhysicalMemory) -> MemoryManagerInfo:
    """Parse physical page 0 as a MemoryManager, validating every field against FORMAT.md §2 and §11."""
    if phys.size < 3:
        return MemoryManagerInfo(
            False, reason=f"the snapshot is only {phys.size} bytes: too small for a header"
        )
    magic = phys.read(0, 3)
    if magic != MM_MAGIC:
        shown = magic.decode("latin-1").encode("unicode_escape").decode()
        return MemoryManagerInfo(
            False, reason=f"bytes 0..3 are '{shown}', not 'MGR'", magic=phys.read(0, min(4, phys.size))
        )
    if phys.size < MM_HEADER_PAGE_USED:
        info = MemoryManagerInfo(
            False, reason=f"'MGR' magic, but the snapshot ({phys.size} bytes) ends inside page 0"
        )
        info.findings.append(
            Finding(
                "error",
                "memory_manager_clobbered",
                info.reason + ": header or bucket table cut off",
                [(0, phys.size)],
            )
        )
        return info

    h = MM_HEADER.parse_dict(phys.buf, 0)
    table = phys.read(BUCKET_TABLE_OFFSET, MAX_NUM_BUCKETS)
    info = MemoryManagerInfo(
        True,
        magic=h["magic"],
        layout_version=h["layout_version"],
        num_allocated_buckets=h["num_allocated_buckets"],
        bucket_size_in_pages=h["bucket_size_in_pages"],
        reserved=h["reserved"],
        memory_sizes_in_pages=h["memory_sizes_in_pages"],
        table=table,
    )
    bad_fields: list[str] = []
    if info.layout_version != MM_LAYOUT_VERSION:
        bad_fields.append(f"layout version {info.layout_version} (expected 1)")
    if info.num_allocated_buckets > MAX_NUM_BUCKETS:
        bad_fields.append(f"num_allocated_buckets {info.num_allocated_buckets} > {MAX_NUM_BUCKETS}")
    if info.bucket_size_in_pages == 0:
        bad_fields.append("bucket_size_in_pages is 0")
    if any(info.reserved):
        bad_fields.append("reserved bytes 8..40 are not zero")
    if bad_fields:
        info.findings.append(
            Finding(
                "error",
                "memory_manager_clobbered",
                "the MemoryManager header has 'MGR' but invalid fields: " + "; ".join(bad_fields),
                [(0, MM_HEADER_SIZE)],
            )
        )
    if info.bucket_size_in_pages == 0:
        return info

    info.memories = build_memories(phys, table, info.memory_sizes_in_pages, info.bucket_size_in_pages)
    _check_table(info, phys.size)
    return info


def _check_table(info: MemoryManagerInfo, file_size: int) -> None:
    nb = info.num_allocated_buckets
    bs = info.bucket_size_bytes
    table = info.table
    allocated = [b for b, o in enumerate(table) if o != UNALLOCATED_BUCKET]
    beyond = [b for b in allocated if b >= nb]
    holes = [b for b in range(min(nb, MAX_NUM_BUCKETS)) if table[b] == UNALLOCATED_BUCKET]
    if beyond or holes:
        parts = []
        if beyond:
            parts.append(
                f"{len(beyond)} bucket(s) at or past num_allocated_buckets={nb} have owners (first: {beyond[0]})"
            )
        if holes:
            parts.append(
                f"{len(holes)} bucket(s) below num_allocated_buckets are unallocated (first: {holes[0]}); "
                "only ic-stable-structures v0.7.1's reclaim_memory leaves such holes"
            )
        info.findings.append(
            Finding(
                "warning" if holes and not beyond else "error",
                "bucket_table_mismatch",
                "; ".join(parts),
                [(BUCKET_TABLE_OFFSET + b, BUCKET_TABLE_OFFSET + b + 1) for b in (beyond + holes)[:64]],
            )
        )
    out_of_range = [b for b in allocated if BUCKETS_START + (b + 1) * bs > file_size]
    if out_of_range:
        info.findings.append(
            Finding(
                "error",
                "bucket_out_of_range",
                f"{len(out_of_range)} allocated bucket(s) lie past the end of the {file_size:,}-byte snapshot "
                f"(first: bucket {out_of_range[0]} of memory {table[out_of_range[0]]}): the snapshot is truncated",
                [(BUCKET_TABLE_OFFSET + b, BUCKET_TABLE_OFFSET + b + 1) for b in out_of_range[:64]],
            )
        )
    for m in info.memories:
        needed = _ceil_div(m.size_pages, info.bucket_size_in_pages)
        if needed != len(m.buckets):
            slot = 40 + 8 * m.id
            info.findings.append(
                Finding(
                    "error" if needed > len(m.buckets) else "warning",
                    "memory_size_mismatch",
                    f"memory {m.id} is {m.size_pages} pages, which needs {needed} bucket(s), but it owns "
                    f"{len(m.buckets)}",
                    [(slot, slot + 8)],
                    memory_id=m.id,
                )
            )
    expected_pages = 1 + nb * info.bucket_size_in_pages
    expected = expected_pages * WASM_PAGE_SIZE
    if file_size != expected and not out_of_range:
        bigger = file_size > expected
        info.findings.append(
            Finding(
                "warning" if bigger else "error",
                "physical_size_mismatch",
                f"the snapshot is {file_size // WASM_PAGE_SIZE:,} pages but a MemoryManager with {nb} bucket(s) of "
                f"{info.bucket_size_in_pages} pages needs {expected_pages:,}"
                + (
                    ": bytes past the last bucket belong to no memory (a re-initialised manager leaves old "
                    "buckets behind)"
                    if bigger
                    else ""
                ),
                [(min(expected, file_size), max(expected, file_size))],
            )
        )
