"""Memory the byte-compare children share for the columns of the old map's chunk headers.

An anonymous shared mapping made before the children are forked: each child writes the columns of the
chunks in its half (``map_chains.ColumnSink``), the first reads them all back (``_Columns.shared``).
Pages never written cost nothing. Only ``mmap`` is imported here: the parent makes it before its own
imports, as early as it forks.
"""

from __future__ import annotations

import mmap

WORD = 8  # bytes per chunk in each column (one u64)
COLUMNS = 5  # cont, valid, nexts, heads, links, in that order


class SharedColumns:
    """Room for the five columns of up to ``capacity`` chunks."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.mm = mmap.mmap(-1, max(1, COLUMNS * WORD * capacity))

    def region(self, i: int) -> memoryview:
        """Column ``i``'s bytes (8 a chunk)."""
        at = i * WORD * self.capacity
        return memoryview(self.mm)[at : at + WORD * self.capacity]

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:  # a view of it still alive somewhere: the mapping goes with it
            pass
