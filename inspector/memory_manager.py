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
from inspector.memory import Memory, OutOfBounds, VirtualMemory
from inspector.model import Finding


@dataclass
class MemoryInfo:
    id: int
    size_pages: int
    buckets: list[int]
    memory: VirtualMemory
    # A MemoryManager initialised inside this memory (FORMAT.md §14.2), set by inspector.nested.
    inner: MemoryManagerInfo | None = None

    @property
    def size_bytes(self) -> int:
        return self.size_pages * WASM_PAGE_SIZE

    def to_json(self) -> dict[str, Any]:
        bs = self.memory.bucket_size_bytes
        start0 = self.memory.base + BUCKETS_START
        out: dict[str, Any] = {
            "id": self.id,
            "size_pages": self.size_pages,
            "size_bytes": self.size_bytes,
            "buckets": list(self.buckets),
            "bucket_physical_ranges": [[start0 + b * bs, start0 + (b + 1) * bs] for b in self.buckets],
        }
        if self.memory._nested:
            # Inner buckets are translated through the host's own buckets (one may become several ranges).
            out["bucket_physical_ranges"] = [
                [s, e] for b in self.buckets for s, e in _safe_ranges(self.memory.phys, start0 + b * bs, bs)
            ]
        if self.inner is not None:
            out["inner_memory_manager"] = self.inner.to_json()
        return out


def _safe_ranges(host: Any, start: int, n: int) -> list[tuple[int, int]]:
    """Physical pieces of host bytes [start, start+n), split where the host's own buckets end (not merged:
    adjacent outer buckets stay separate pieces, as FORMAT.md §14.2 lists them)."""
    out: list[tuple[int, int]] = []
    step = getattr(host, "bucket_size_bytes", n) or n
    pos, end = start, start + n
    try:
        while pos < end:
            take = min(end - pos, step - pos % step)
            p = host.to_physical(pos)
            out.append((p, p + take))
            pos += take
    except OutOfBounds:
        return out
    return out


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
    # Where the MGR header sits in the memory it manages: 0 normally, S × 65,536 for a manager on
    # RestrictedMemory(S..), and a virtual offset in its host memory for a nested manager.
    base_offset: int = 0
    host_memory_id: int | str | None = None  # set for a manager nested inside a virtual memory
    base_source: str = "offset 0"  # how the base was found: "offset 0", "page scan", "--base"

    @property
    def bucket_size_bytes(self) -> int:
        return self.bucket_size_in_pages * WASM_PAGE_SIZE

    @property
    def buckets_start(self) -> int:
        """Offset of bucket 0 in the managed memory (physical unless nested)."""
        return self.base_offset + BUCKETS_START

    @property
    def bucket_table_offset(self) -> int:
        return self.base_offset + BUCKET_TABLE_OFFSET

    @property
    def bucket_owners(self) -> list[int]:
        return list(self.table[: self.num_allocated_buckets])

    @property
    def holes(self) -> list[int]:
        """Bucket ids below num_allocated_buckets marked unallocated (v0.7.1 reclaim_memory)."""
        return [b for b in range(min(self.num_allocated_buckets, len(self.table))) if self.table[b] == 0xFF]

    def memory(self, memory_id: int) -> MemoryInfo | None:
        for m in self.memories:
            if m.id == memory_id:
                return m
        return None

    def owner_of_physical(self, pos: int) -> tuple[int | None, int | None]:
        """(bucket id, owning memory id or None) for a physical offset inside the bucket area."""
        if pos < self.buckets_start or not self.bucket_size_bytes or self.host_memory_id is not None:
            return None, None
        b = (pos - self.buckets_start) // self.bucket_size_bytes
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
        out = {
            "present": True,
            "base_offset": self.base_offset,
            "base_found_by": self.base_source,
            "magic": self.magic.decode("latin-1"),
            "layout_version": self.layout_version,
            "num_allocated_buckets": self.num_allocated_buckets,
            "bucket_size_in_pages": self.bucket_size_in_pages,
            "bucket_size_in_bytes": self.bucket_size_bytes,
            "bucket_table_offset": self.bucket_table_offset,
            "buckets_start_offset": self.buckets_start,
            # null marks a hole: a bucket below num_allocated_buckets that reclaim_memory freed (0.7.1).
            "bucket_owners": [None if o == UNALLOCATED_BUCKET else o for o in self.bucket_owners],
            "memory_sizes_in_pages": {str(i): s for i, s in enumerate(self.memory_sizes_in_pages) if s},
            "memories": [m.to_json() for m in self.memories],
            "reconstructed": self.reconstructed,
        }
        if self.holes:
            out["free_bucket_holes"] = self.holes
        if self.host_memory_id is not None:
            out["host_memory_id"] = self.host_memory_id
            out["offsets_relative_to"] = f"memory {self.host_memory_id} (virtual)"
        return out


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def build_memories(
    phys: Memory,
    table: bytes,
    sizes: list[int],
    bucket_size_pages: int,
    base: int = 0,
    id_prefix: str = "",
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
        mid: int | str = f"{id_prefix}{i}" if id_prefix else i
        vm = VirtualMemory(phys, mid, buckets, bs or 1, size_bytes, base=base)
        out.append(MemoryInfo(i, size_pages, buckets, vm))
    return out


def read_memory_manager(
    phys: Memory, base: int = 0, *, host_memory_id: int | str | None = None
) -> MemoryManagerInfo:
    """Parse the MemoryManager whose header sits at ``base`` of ``phys`` (FORMAT.md §2, §14).

    ``phys`` is the snapshot, or a host virtual memory for a nested manager. Every field is validated
    against FORMAT.md §2 and §11.
    """
    prefix = f"{host_memory_id}/" if host_memory_id is not None else ""
    at = f" at {base:,}" if base else ""
    if phys.size < base + 3:
        return MemoryManagerInfo(
            False, reason=f"the snapshot is only {phys.size} bytes: too small for a header{at}"
        )
    magic = phys.read(base, 3)
    if magic != MM_MAGIC:
        shown = magic.decode("latin-1").encode("unicode_escape").decode()
        return MemoryManagerInfo(
            False,
            reason=f"bytes {base}..{base + 3} are '{shown}', not 'MGR'",
            magic=phys.read(base, min(4, phys.size - base)),
        )
    if phys.size < base + MM_HEADER_PAGE_USED:
        info = MemoryManagerInfo(
            False, reason=f"'MGR' magic{at}, but the snapshot ({phys.size} bytes) ends inside its first page"
        )
        info.findings.append(
            Finding(
                "error",
                "memory_manager_clobbered",
                info.reason + ": header or bucket table cut off",
                _phys(phys, base, phys.size - base),
            )
        )
        return info

    h = MM_HEADER.parse_dict(phys.read(base, MM_HEADER_SIZE), 0)
    table = phys.read(base + BUCKET_TABLE_OFFSET, MAX_NUM_BUCKETS)
    info = MemoryManagerInfo(
        True,
        magic=h["magic"],
        layout_version=h["layout_version"],
        num_allocated_buckets=h["num_allocated_buckets"],
        bucket_size_in_pages=h["bucket_size_in_pages"],
        reserved=h["reserved"],
        memory_sizes_in_pages=h["memory_sizes_in_pages"],
        table=table,
        base_offset=base,
        host_memory_id=host_memory_id,
    )
    if info.layout_version != MM_LAYOUT_VERSION:
        # A layout v2 was proposed upstream and never released: a header we cannot read, not damage.
        info.findings.append(
            Finding(
                "error",
                "unsupported_version",
                f"the MemoryManager header{at} has layout version {info.layout_version}; only version "
                f"{MM_LAYOUT_VERSION} exists in released ic-stable-structures, so its bucket table and "
                "memories are not decoded (the bytes are not judged as damaged)",
                _phys(phys, base, MM_HEADER_SIZE),
                details={"layout_version": info.layout_version, "base_offset": base},
            )
        )
        info.bucket_size_in_pages = 0 if info.bucket_size_in_pages == 0 else info.bucket_size_in_pages
        info.memories = []
        return info
    bad_fields: list[str] = []
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
                f"the MemoryManager header{at} has 'MGR' but invalid fields: " + "; ".join(bad_fields),
                _phys(phys, base, MM_HEADER_SIZE),
            )
        )
    if info.bucket_size_in_pages == 0:
        return info

    info.memories = build_memories(
        phys, table, info.memory_sizes_in_pages, info.bucket_size_in_pages, base, prefix
    )
    _check_table(info, phys.size, phys)
    return info


def _phys(mem: Memory, start: int, n: int) -> list[tuple[int, int]]:
    try:
        return list(mem.physical_ranges(start, max(0, n)))
    except OutOfBounds:
        return []


def _check_table(info: MemoryManagerInfo, file_size: int, host: Memory | None = None) -> None:
    nb = info.num_allocated_buckets
    bs = info.bucket_size_bytes
    table = info.table
    t0 = info.bucket_table_offset
    b0 = info.buckets_start
    where = f"memory {info.host_memory_id}'s inner manager: " if info.host_memory_id is not None else ""

    def at(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        # A nested manager's offsets are virtual in its host memory: report them physically.
        if host is None or info.host_memory_id is None:
            return ranges
        return [r for s, e in ranges for r in _phys(host, s, e - s)]

    allocated = [b for b, o in enumerate(table) if o != UNALLOCATED_BUCKET]
    beyond = [b for b in allocated if b >= nb]
    holes = info.holes
    if beyond:
        info.findings.append(
            Finding(
                "error",
                "bucket_table_mismatch",
                f"{where}{len(beyond)} bucket(s) at or past num_allocated_buckets={nb} have owners "
                f"(first: {beyond[0]})",
                at([(t0 + b, t0 + b + 1) for b in beyond[:64]]),
            )
        )
    if holes:
        shown = ", ".join(str(b) for b in holes[:16]) + (" …" if len(holes) > 16 else "")
        info.findings.append(
            Finding(
                "warning",
                "bucket_table_holes",
                f"{where}{len(holes)} bucket(s) below num_allocated_buckets={nb} are marked free "
                f"(bucket {shown}): MemoryManager::reclaim_memory of ic-stable-structures 0.7.1 leaves "
                "such holes and 0.7.1 hands them to the next memory that grows; 0.6.x and 0.7.2 never "
                "reuse them. The freed buckets' old bytes are still there",
                at([(t0 + b, t0 + b + 1) for b in holes[:64]]),
                details={"holes": holes},
            )
        )
    out_of_range = [b for b in allocated if b0 + (b + 1) * bs > file_size]
    if out_of_range:
        info.findings.append(
            Finding(
                "error",
                "bucket_out_of_range",
                f"{where}{len(out_of_range)} allocated bucket(s) lie past the end of the {file_size:,}-byte "
                + ("host memory" if info.host_memory_id is not None else "snapshot")
                + f" (first: bucket {out_of_range[0]} of memory {table[out_of_range[0]]}): "
                + (
                    "the snapshot is truncated"
                    if info.host_memory_id is None
                    else "the host memory is too small"
                ),
                at([(t0 + b, t0 + b + 1) for b in out_of_range[:64]]),
            )
        )
    for m in info.memories:
        needed = _ceil_div(m.size_pages, info.bucket_size_in_pages)
        if needed != len(m.buckets):
            slot = info.base_offset + 40 + 8 * m.id
            info.findings.append(
                Finding(
                    "error" if needed > len(m.buckets) else "warning",
                    "memory_size_mismatch",
                    f"{where}memory {m.memory.memory_id} is {m.size_pages} pages, which needs {needed} "
                    f"bucket(s), but it owns {len(m.buckets)}",
                    at([(slot, slot + 8)]),
                    memory_id=m.memory.memory_id,
                )
            )
    if info.host_memory_id is not None:
        return  # a host memory grows in whole outer buckets: its size says nothing about the inner one
    expected = b0 + nb * bs
    expected_pages = expected // WASM_PAGE_SIZE
    if file_size != expected and not out_of_range:
        bigger = file_size > expected
        info.findings.append(
            Finding(
                "warning" if bigger else "error",
                "physical_size_mismatch",
                f"the snapshot is {file_size // WASM_PAGE_SIZE:,} pages but a MemoryManager with {nb} bucket(s) of "
                f"{info.bucket_size_in_pages} pages"
                + (f" at {info.base_offset:,}" if info.base_offset else "")
                + f" needs {expected_pages:,}"
                + (
                    ": bytes past the last bucket belong to no memory (a re-initialised manager leaves old "
                    "buckets behind)"
                    if bigger
                    else ""
                ),
                [(min(expected, file_size), max(expected, file_size))],
            )
        )
