"""Whole stable-memory images: a MemoryManager with its buckets, or a structure on raw memory.

An image is kept as a *log of writes* (what the real library would write, in order) rather than as a
byte array, and is only materialised on output. That keeps big images cheap: an 8 GiB MemoryManager
image with a few MB of content is written as a sparse file (the file is sized with ``truncate`` and
only written ranges are touched), and ``to_bytes`` is there for small images in tests.

Order matters and is preserved: a later write wins, exactly as in memory. That is how corrupt inputs
are forged, e.g. a ``stable_save`` message written over a MemoryManager header, or a fresh manager
initialised over old buckets (FORMAT.md §11).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar, overload

from inspector.layouts import (
    BUCKET_TABLE_OFFSET,
    BUCKETS_START,
    DEFAULT_BUCKET_SIZE_IN_PAGES,
    MAX_NUM_BUCKETS,
    MAX_NUM_MEMORIES,
    MM_LAYOUT_VERSION,
    MM_MAGIC,
    UNALLOCATED_BUCKET,
    WASM_PAGE_SIZE,
    BucketTable,
    MemoryManagerHeader,
)

PAGE = WASM_PAGE_SIZE
Bytes = bytes | bytearray | memoryview
Segment = tuple[int, Bytes]  # (offset, data)

# Output is assembled in blocks of this size when holes must be written out as real zeros.
_ZERO_BLOCK = 1 << 20


def pages_for(nbytes: int) -> int:
    """Whole 64 KiB pages needed to hold nbytes (memories only grow in pages)."""
    return -(-nbytes // PAGE)


class MemoryContent(Protocol):
    """What a structure writes into its own memory: virtual (offset, bytes) segments, in write order.

    ``size`` is the number of bytes the memory must have (already rounded up to whole pages, because
    that is what the library's growth produces).
    """

    @property
    def size(self) -> int: ...

    def segments(self) -> Iterable[Segment]: ...


@dataclass
class Written:
    """A plain MemoryContent: a list of segments plus a minimum number of pages."""

    parts: list[Segment] = field(default_factory=list)
    min_pages: int = 0

    @property
    def size(self) -> int:
        end = max((off + len(data) for off, data in self.parts), default=0)
        return max(self.min_pages, pages_for(end)) * PAGE

    def segments(self) -> Iterable[Segment]:
        return iter(self.parts)

    def to_bytes(self) -> bytes:
        return content_bytes(self)


C = TypeVar("C", bound=MemoryContent)


def content_bytes(content: MemoryContent) -> bytes:
    """The memory's virtual bytes (whole pages), with everything not written left zero."""
    buf = bytearray(content.size)
    for off, data in content.segments():
        buf[off : off + len(data)] = data
    return bytes(buf)


# --- Output sinks -------------------------------------------------------------------------------------


class _Sink(Protocol):
    def write_at(self, offset: int, data: Bytes) -> None: ...


class _BufferSink:
    def __init__(self, buf: bytearray) -> None:
        self.buf = buf

    def write_at(self, offset: int, data: Bytes) -> None:
        self.buf[offset : offset + len(data)] = data


class _FileSink:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.pos = -1

    def write_at(self, offset: int, data: Bytes) -> None:
        if offset != self.pos:  # sequential writes (the common case) need no seek
            self.f.seek(offset)
        self.f.write(data)
        self.pos = offset + len(data)


# An operation yields physical (offset, bytes) pieces when the image is materialised.
_Op = Callable[[], Iterable[Segment]]


class _Image:
    """Shared output machinery: a base image (optional), then the logged writes in order."""

    def __init__(self, base: Bytes | None) -> None:
        self._base = bytes(base) if base is not None else b""
        if len(self._base) % PAGE:
            raise ValueError("a stable-memory image is a whole number of 64 KiB pages")
        self._ops: list[_Op] = []

    @property
    def physical_size(self) -> int:
        raise NotImplementedError

    def write_physical(self, offset: int, data: Bytes) -> None:
        """A raw write at a physical offset, bypassing every structure (for forging corruption)."""
        payload = bytes(data)
        self._ops.append(lambda: [(offset, payload)])
        self._note_physical_write(offset, len(payload))

    def _note_physical_write(self, offset: int, n: int) -> None:
        pass

    def _apply(self, sink: _Sink) -> None:
        size = self.physical_size
        for op in self._ops:
            for off, data in op():
                if off + len(data) > size:
                    raise ValueError(f"write at {off:#x} (+{len(data)}) beyond the image ({size} bytes)")
                sink.write_at(off, data)

    def to_bytes(self) -> bytes:
        buf = bytearray(self.physical_size)
        buf[: len(self._base)] = self._base
        self._apply(_BufferSink(buf))
        return bytes(buf)

    def write_to(self, path: str | os.PathLike[str], *, sparse: bool = True) -> int:
        """Write the image to a file; returns its size. Holes stay unwritten (sparse) unless asked."""
        size = self.physical_size
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            f.write(self._base)
            if not sparse:
                zeros = bytes(_ZERO_BLOCK)
                pos = len(self._base)
                while pos < size:
                    n = min(_ZERO_BLOCK, size - pos)
                    f.write(zeros[:n])
                    pos += n
            # truncate() extends with a hole: an 8 GiB image of mostly zeros costs almost no disk.
            f.truncate(size)
            self._apply(_FileSink(f))
        return size


# --- A structure directly on stable memory ------------------------------------------------------------


class RawImage(_Image):
    """Stable memory with no MemoryManager: one structure whose virtual offset 0 is physical offset 0."""

    def __init__(self, pages: int = 0, *, base: Bytes | None = None) -> None:
        super().__init__(base)
        self.pages = max(pages, len(self._base) // PAGE)

    @property
    def physical_size(self) -> int:
        return self.pages * PAGE

    def grow(self, pages: int) -> int:
        old = self.pages
        self.pages += pages
        return old

    def ensure_size(self, nbytes: int) -> None:
        self.pages = max(self.pages, pages_for(nbytes))

    def write(self, offset: int, data: Bytes) -> None:
        self.ensure_size(offset + len(data))
        self.write_physical(offset, data)

    def place(self, content: C) -> C:
        self.ensure_size(content.size)
        self._ops.append(content.segments)
        return content


# --- MemoryManager ------------------------------------------------------------------------------------


def mm_header_bytes(bucket_size_pages: int, num_buckets: int = 0, sizes: Iterable[int] = ()) -> bytes:
    """The 2,080-byte MemoryManager header (FORMAT.md §2.1), from the construct declaration."""
    memory_sizes = list(sizes)
    memory_sizes += [0] * (MAX_NUM_MEMORIES - len(memory_sizes))
    return MemoryManagerHeader.build(
        {
            "magic": MM_MAGIC,
            "layout_version": MM_LAYOUT_VERSION,
            "num_allocated_buckets": num_buckets,
            "bucket_size_in_pages": bucket_size_pages,
            "reserved": bytes(32),
            "memory_sizes_in_pages": memory_sizes,
        }
    )


def fresh_mm_prefix(bucket_size_pages: int = DEFAULT_BUCKET_SIZE_IN_PAGES) -> bytes:
    """What ``MemoryManager::init`` writes on a non-MGR memory: header + 32,768 × 0xFF, [0, 34848)."""
    return mm_header_bytes(bucket_size_pages) + BucketTable.build(
        bytes([UNALLOCATED_BUCKET]) * MAX_NUM_BUCKETS
    )


class MemoryManagerImage(_Image):
    """A MemoryManager over stable memory, grown the way the real library grows it (FORMAT.md §2.2).

    Each ``grow`` appends bucket ids sequentially (``num_allocated_buckets``++), so interleaving grows
    of several memories reproduces interleaved bucket ownership. Writes to a memory are mapped through
    its buckets when the image is materialised (bucket lists only ever grow, so the mapping of a written
    address never changes afterwards).

    ``base``: existing stable-memory bytes under the new manager. This models ``MemoryManager::init``
    on a memory without "MGR" (e.g. after ``stable_save``): a fresh header and table are written over
    [0, 34848) and nothing else is cleared.
    """

    def __init__(
        self, bucket_size_pages: int = DEFAULT_BUCKET_SIZE_IN_PAGES, *, base: Bytes | None = None
    ) -> None:
        super().__init__(base)
        if not 1 <= bucket_size_pages <= 0xFFFF:
            raise ValueError("bucket size is a u16 number of pages")
        self.bucket_size_pages = bucket_size_pages
        self.owners: list[int] = []  # bucket id → memory id
        self.sizes: list[int] = [0] * MAX_NUM_MEMORIES  # pages
        self._buckets: dict[int, list[int]] = {}
        # Index of the last header op in _ops, and whether a raw physical write came after it; a header
        # rewrite with nothing in between supersedes the previous one, so long grow sequences stay cheap.
        self._header_op = -1
        self._header_dirty = False
        prefix = fresh_mm_prefix(bucket_size_pages)
        self._ops.append(lambda: [(0, prefix)])

    # -- geometry --

    @property
    def bucket_size_bytes(self) -> int:
        return self.bucket_size_pages * PAGE

    @property
    def num_buckets(self) -> int:
        return len(self.owners)

    @property
    def physical_size(self) -> int:
        # The manager grows the raw memory to 1 + nb × bucket_size pages; it never shrinks it.
        pages = 1 + self.num_buckets * self.bucket_size_pages
        return max(pages * PAGE, len(self._base))

    def buckets(self, memory_id: int) -> list[int]:
        return list(self._buckets.get(memory_id, []))

    def size_bytes(self, memory_id: int) -> int:
        return self.sizes[memory_id] * PAGE

    def to_physical(self, memory_id: int, vaddr: int) -> int:
        k, off = divmod(vaddr, self.bucket_size_bytes)
        return BUCKETS_START + self._buckets[memory_id][k] * self.bucket_size_bytes + off

    # -- header log --

    def _log_header(self) -> None:
        header = mm_header_bytes(self.bucket_size_pages, self.num_buckets, self.sizes)
        op: _Op = lambda: [(0, header)]  # noqa: E731
        if self._header_op >= 0 and not self._header_dirty:
            self._ops[self._header_op] = op
        else:
            self._header_op = len(self._ops)
            self._ops.append(op)
        self._header_dirty = False

    def _note_physical_write(self, offset: int, n: int) -> None:
        if offset < BUCKET_TABLE_OFFSET:
            self._header_dirty = True

    # -- the MemoryManager API --

    def grow(self, memory_id: int, pages: int) -> int:
        """``Memory::grow`` on a managed memory: returns the old size in pages, or -1 if out of buckets."""
        if not 0 <= memory_id < MAX_NUM_MEMORIES:
            raise ValueError("MemoryId is 0..254 (255 marks unallocated buckets)")
        old = self.sizes[memory_id]
        new = old + pages
        bs = self.bucket_size_pages
        needed = -(-new // bs) - -(-old // bs)
        if self.num_buckets + needed > MAX_NUM_BUCKETS:
            return -1
        first = self.num_buckets
        for _ in range(needed):
            bucket = self.num_buckets
            self.owners.append(memory_id)
            self._buckets.setdefault(memory_id, []).append(bucket)
        self.sizes[memory_id] = new
        if needed:
            # The library writes each new bucket's table byte, then rewrites the whole header.
            owners = bytes([memory_id]) * needed
            self._ops.append(lambda: [(BUCKET_TABLE_OFFSET + first, owners)])
        self._log_header()
        return old

    def ensure_size(self, memory_id: int, nbytes: int) -> None:
        """Grow a memory (if needed) so that it holds nbytes, as ``safe_write`` does."""
        missing = pages_for(nbytes) - self.sizes[memory_id]
        if missing > 0 and self.grow(memory_id, missing) < 0:
            raise ValueError(f"memory {memory_id} cannot grow to {nbytes} bytes: out of buckets")

    def write(self, memory_id: int, vaddr: int, data: Bytes) -> None:
        """A write into a memory at a virtual offset, growing it first if needed (``safe_write``)."""
        self.ensure_size(memory_id, vaddr + len(data))
        payload = bytes(data)
        self._ops.append(lambda: self._map(memory_id, [(vaddr, payload)]))

    def place(self, memory_id: int, content: C) -> C:
        """Grow a memory to hold a structure, then log the structure's writes (mapped at output time)."""
        self.ensure_size(memory_id, content.size)
        self._ops.append(lambda: self._map(memory_id, content.segments()))
        return content

    def _map(self, memory_id: int, segments: Iterable[Segment]) -> Iterator[Segment]:
        """Virtual segments → physical pieces, split at bucket boundaries (FORMAT.md §2.3)."""
        bs = self.bucket_size_bytes
        buckets = self._buckets.get(memory_id, [])
        limit = self.sizes[memory_id] * PAGE
        for vaddr, data in segments:
            n = len(data)
            if vaddr + n > limit:
                raise ValueError(f"write at {vaddr:#x} (+{n}) is past the end of memory {memory_id}")
            k, off = divmod(vaddr, bs)
            if off + n <= bs:  # the common case: inside one bucket
                yield BUCKETS_START + buckets[k] * bs + off, data
                continue
            view = memoryview(data)
            pos = 0
            while pos < n:
                k, off = divmod(vaddr + pos, bs)
                take = min(n - pos, bs - off)
                yield BUCKETS_START + buckets[k] * bs + off, view[pos : pos + take]
                pos += take


# --- stable_save and MemoryManager re-init on existing images ------------------------------------------


@overload
def apply_stable_save(target: bytes | bytearray, message: Bytes) -> bytearray: ...
@overload
def apply_stable_save(target: str | os.PathLike[str], message: Bytes) -> None: ...
def apply_stable_save(target: bytes | bytearray | str | os.PathLike[str], message: Bytes) -> bytearray | None:
    """Write a Candid message at physical offset 0 exactly like ic-cdk ``stable_save`` (FORMAT.md §8.1).

    No length prefix. The memory is never shrunk and never zero-filled: bytes after the message keep
    their old content. It grows (with zero pages) only if the message needs more pages than it has.
    A bytearray is changed in place and returned; bytes give a new bytearray; a path is edited in place.
    """
    need = pages_for(len(message)) * PAGE
    if isinstance(target, bytes | bytearray):
        buf = target if isinstance(target, bytearray) else bytearray(target)
        if len(buf) < need:
            buf.extend(bytes(need - len(buf)))
        buf[: len(message)] = message
        return buf
    with open(target, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size < need:
            f.truncate(need)
        f.seek(0)
        f.write(message)
    return None


@overload
def reinit_memory_manager(
    target: bytes | bytearray, bucket_size_pages: int = DEFAULT_BUCKET_SIZE_IN_PAGES
) -> bytearray: ...
@overload
def reinit_memory_manager(
    target: str | os.PathLike[str], bucket_size_pages: int = DEFAULT_BUCKET_SIZE_IN_PAGES
) -> None: ...
def reinit_memory_manager(
    target: bytes | bytearray | str | os.PathLike[str], bucket_size_pages: int = DEFAULT_BUCKET_SIZE_IN_PAGES
) -> bytearray | None:
    """What ``MemoryManager::init`` does on a memory whose first bytes are not "MGR" (FORMAT.md §2.2).

    A fresh header (no buckets, all sizes 0) and 32,768 × 0xFF over [0, 34848); nothing else is cleared.
    An empty memory is first grown to one page. To go on and re-create structures under the new manager,
    use ``MemoryManagerImage(bucket_size_pages, base=old_bytes)`` instead, which starts from this state.
    """
    prefix = fresh_mm_prefix(bucket_size_pages)
    if isinstance(target, bytes | bytearray):
        buf = target if isinstance(target, bytearray) else bytearray(target)
        if len(buf) < PAGE:
            buf.extend(bytes(PAGE - len(buf)))
        buf[: len(prefix)] = prefix
        return buf
    with open(target, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size < PAGE:
            f.truncate(PAGE)
        f.seek(0)
        f.write(prefix)
    return None
