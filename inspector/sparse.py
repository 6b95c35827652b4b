"""Helpers for sparse snapshot files: where the data is, zero checks, and hole-skipping search.

Stable-memory snapshots can be hundreds of GiB while holding only a few MiB of data; the rest are
filesystem holes that read as zeros. Everything here is read-only and never loads a file whole.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Iterator

# Stable memory grows in 64 KiB pages, so reporting data at page granularity loses nothing a caller
# can act on, and it keeps the range lists short on filesystems with 4 KiB extents.
from inspector.layouts import WASM_PAGE_SIZE

# Zero-filled reference block for is_zero(). 1 MiB stays cache-resident; longer buffers are checked in
# pieces of this size (see is_zero for why startswith is used).
_ZERO_BLOCK_SIZE = 1 << 20
_ZEROS = bytes(_ZERO_BLOCK_SIZE)

Searchable = mmap.mmap | bytes | bytearray


def data_ranges(fd: int, size: int, *, granularity: int = WASM_PAGE_SIZE) -> list[tuple[int, int]]:
    """Return the half-open byte ranges of the file behind ``fd`` that hold data, within ``[0, size)``.

    Everything outside the returned ranges is a hole and reads as zeros. Ranges are rounded out to
    ``granularity`` boundaries (clamped to ``size``), merged, and sorted. Where the platform or
    filesystem cannot report holes, the whole file ``[(0, size)]`` is returned, which is always safe.

    ``lseek`` moves the descriptor's file offset; it is restored before returning, so callers reading
    sequentially from ``fd`` are not disturbed (concurrent users of the same descriptor still are, as
    with any lseek).
    """
    if size <= 0:
        return []
    if granularity <= 0:
        raise ValueError(f"granularity must be positive, got {granularity}")
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:
        return [(0, size)]
    try:
        saved = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return [(0, size)]
    try:
        return _seek_data_ranges(fd, size, granularity, seek_data, seek_hole)
    except OSError:
        # EINVAL (filesystem without hole support), ESPIPE, ...: treating everything as data is
        # slower but never wrong.
        return [(0, size)]
    finally:
        try:
            os.lseek(fd, saved, os.SEEK_SET)
        except OSError:
            pass


def _seek_data_ranges(
    fd: int, size: int, granularity: int, seek_data: int, seek_hole: int
) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, seek_data)
        except OSError as exc:
            # ENXIO: no data at or after pos (the rest of the file is a hole, or pos is past EOF).
            if exc.errno == errno.ENXIO:
                break
            raise
        if start >= size:
            break
        end = min(os.lseek(fd, start, seek_hole), size)
        lo = start - start % granularity
        hi = min(-(-end // granularity) * granularity, size)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
        # Continue from the rounded end: anything before it is already covered.
        pos = max(end, hi)
    return out


def is_zero(buf: bytes | bytearray | memoryview | mmap.mmap) -> bool:
    """True when every byte of ``buf`` is zero (an empty buffer counts as zero).

    ``bytes.startswith`` with a buffer argument is a plain memcmp against the buffer's own memory,
    with no copy: measured ~60-90 GB/s on cached data, where ``not any(buf)`` manages ~0.3 GB/s,
    ``buf.count(0)`` ~2.6 GB/s and a memoryview ``==`` ~1.1 GB/s (it compares item by item).
    """
    view = memoryview(buf)
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        view = view.cast("B")
    n = view.nbytes
    if n <= _ZERO_BLOCK_SIZE:
        return _ZEROS.startswith(view)
    for off in range(0, n, _ZERO_BLOCK_SIZE):
        if not _ZEROS.startswith(view[off : off + _ZERO_BLOCK_SIZE]):
            return False
    return True


def find_all(
    mm: Searchable,
    needle: bytes,
    start: int = 0,
    end: int | None = None,
    *,
    step_align: int | None = None,
    fd: int | None = None,
) -> Iterator[int]:
    """Yield, in increasing order, every offset in ``[start, end)`` where ``needle`` occurs in ``mm``.

    Matches must lie entirely inside ``[start, end)``. Overlapping matches are all reported. With
    ``step_align``, only offsets where ``(offset - start) % step_align == 0`` are yielded.

    With ``fd`` (the file behind ``mm``), holes reported by :func:`data_ranges` are not searched,
    so scanning a mostly-empty multi-GiB snapshot touches only its data. This is exact: a hole reads
    as zeros, so a needle containing any non-zero byte cannot lie wholly inside one, and each data
    range is searched with ``len(needle) - 1`` bytes of margin on both sides to catch matches that
    straddle a hole edge. A needle made only of zero bytes disables hole skipping.
    """
    size = len(mm)
    end = size if end is None else min(end, size)
    start = max(start, 0)
    n = len(needle)
    if n == 0:
        raise ValueError("needle must not be empty")
    if step_align is not None and step_align <= 0:
        raise ValueError(f"step_align must be positive, got {step_align}")
    if end - start < n:
        return
    if fd is not None and any(needle):
        windows = [(max(lo - (n - 1), start), min(hi + (n - 1), end)) for lo, hi in data_ranges(fd, size)]
    else:
        windows = [(start, end)]
    next_pos = start  # nothing before this may be yielded again (windows can overlap by the margin)
    for lo, hi in windows:
        pos = max(lo, next_pos)
        while hi - pos >= n:
            if step_align is not None:
                pos = _align_up(pos, start, step_align)
                if hi - pos < n:
                    break
            found = mm.find(needle, pos, hi)
            if found < 0:
                break
            if step_align is None or (found - start) % step_align == 0:
                yield found
            pos = found + 1
        next_pos = max(next_pos, pos)


def _align_up(pos: int, base: int, step: int) -> int:
    rem = (pos - base) % step
    return pos if rem == 0 else pos + step - rem
