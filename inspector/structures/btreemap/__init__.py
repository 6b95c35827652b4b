"""BTreeMap walker: header, allocator, chunk grid, nodes, ordered iteration and a validated full walk.

Layout reference: FORMAT.md §3 (header, allocator, chunks, v1/v2 nodes, overflow pages, invariants)
and §11.3 (corruption checks). All addresses are offsets in the map's own memory (``mem``): the raw
snapshot for a map at physical 0, or a MemoryManager virtual memory. Physical ranges for findings are
obtained through ``mem.physical_ranges`` so they are right even when a node crosses a bucket boundary.

Robustness contract: whatever the bytes, every public method either returns or raises ``NodeError``
(``node()`` only); walks are bounded by the chunks that fit in memory and guarded by visited sets, so
hostile bytes give findings, never a hang, a RecursionError or an unbounded allocation.

The walker is built in layers, one module each, every layer a base class of the next: ``headers``,
``allocator``, ``chunks`` (the chunk grid), ``reading`` (a node's bytes and overflow pages),
``key_layout`` (v2 key-layout inference), ``loading`` (decoded, cached nodes), ``iteration``, ``walk``
(the validated walk) and ``walker`` (``BTreeMap``). ``nodes`` parses node bodies; ``structure`` is the
map as a ``Structure`` for the views.
"""

from inspector.structures.btreemap.chunks import Chunk
from inspector.structures.btreemap.headers import HEADER_END
from inspector.structures.btreemap.walker import BTreeMap

__all__ = ["HEADER_END", "BTreeMap", "Chunk"]
