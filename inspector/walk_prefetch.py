"""The deep walk of a map on a snapshot's raw memory, started in a child while the parent loads
(``summary --deep``).

Of the ~0.5 s that ``summary --deep`` takes on a 1,000,000-entry map, the walk itself is ~0.2 s and
importing numpy for it ~0.1 s; the rest is the interpreter, the other imports and the analysis. They
do not depend on each other, so the CLI forks a child right after parsing its arguments (``start``):
it opens the file, finds the map at byte 0 and runs the vectorised walk (``vector_walk``), while the
parent imports, loads and analyses on the other core. When the parent's own deep walk of that map
begins, it takes the child's figures (``adopt``): the entry count and digest, the node figures and
the set of chunks reached, exactly what ``vector_walk`` would have returned in the parent, since it
is the same code over the same bytes. They are used only for the very file the child opened (device,
inode, size, modification time) and a map with the same header fields; a child that failed or gave
up leaves the parent to walk as before (and then to name whatever is wrong).

Nothing heavy is imported here (no layouts, no numpy): the fork comes before the heavy imports.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inspector.forked import Child, file_identity, fork_call

if TYPE_CHECKING:
    from inspector.structures.chunk_set import ChunkSet

MIN_BYTES = 8 << 20  # below this the walk is over before a child would have imported numpy
# Above this the walk can take seconds, and its progress line ("walking …: entries N of M") is drawn
# by the process that walks: the parent walks itself, as before.
MAX_BYTES = 128 << 20
GAVE_UP = "gave up"  # ``adopt``: the child's vectorised walk gave up on this map (the parent's would too)

_PENDING: list[Child] = []
_RESULTS: list[tuple[Any, ...]] = []  # what children sent, until the walk of their map takes it


@dataclass(frozen=True)
class WalkFigures:
    """What ``vector_walk`` returns, as the parent's walk uses it (``sha256`` gives ``hexdigest()``)."""

    count: int
    sha256: Any
    nodes: int
    leaves: int
    overflow_pages: int
    depth: int


@dataclass(frozen=True)
class _Digest:
    hex: str

    def hexdigest(self) -> str:
        return self.hex


def start(path: str) -> bool:
    """Fork the child where ``path`` is a big enough regular file; whether it was forked. (Whether the
    file starts with a map is the child's to find out: the layouts' import would delay the fork.)"""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not (MIN_BYTES <= st.st_size <= MAX_BYTES and stat.S_ISREG(st.st_mode)):
        return False
    child = fork_call(lambda: _walk(path))
    if child is not None:
        _PENDING.append(child)
    return child is not None


def _walk(path: str) -> tuple[tuple[int, ...], tuple[object, ...], tuple[Any, ...], tuple[Any, ...]] | None:
    """In the child: (file identity, map geometry, the walk's figures, the chunks it reached)."""
    from inspector.memory import PhysicalMemory
    from inspector.snapshot import open_snapshot
    from inspector.structures.btreemap import BTreeMap
    from inspector.structures.btreemap.vector_walk import vector_walk

    with open_snapshot(path) as snap:
        if snap.buf is None or snap.fd is None:
            return None
        m = BTreeMap(PhysicalMemory(snap.buf, snap.size, fd=snap.fd), memory_id="raw")
        if not (m.walkable and m.root_addr):
            return None
        visited = m.empty_chunk_set()
        fast = vector_walk(m, visited)
        if fast is None:
            return file_identity(snap.fd), _geometry(m), (), ()
        figures = (
            fast.count,
            fast.sha256.hexdigest(),
            fast.nodes,
            fast.leaves,
            fast.overflow_pages,
            fast.depth,
        )
        reached = (visited.chunk_size, bytes(visited.bits), sorted(visited.other))
        return file_identity(snap.fd), _geometry(m), figures, reached


def adopt(m: Any, visited: ChunkSet) -> WalkFigures | str | None:
    """In the parent, where its deep walk of map ``m`` begins (``visited`` still empty): the child's figures
    for this very map, its reached chunks put into ``visited``; ``GAVE_UP`` where the child's vectorised
    walk of it gave up (the same code over the same bytes: the validated walk is next); None where the
    child says nothing about this map."""
    if not _PENDING and not _RESULTS:
        return None
    from inspector.memory import PhysicalMemory

    mem = m.mem
    fd = mem.fd if isinstance(mem, PhysicalMemory) else None
    if fd is None or m.memory_id != "raw" or len(visited) or visited.other:
        return None
    while _PENDING:
        got = _PENDING.pop().collect()
        if isinstance(got, tuple) and len(got) == 4:
            _RESULTS.append(got)
    try:
        here = (file_identity(fd), _geometry(m))
    except OSError:
        return None
    for got in _RESULTS:
        identity, geometry, figures, reached = got
        if (identity, geometry) != here:
            continue  # another file's (or another map's): kept for the walk it belongs to
        _RESULTS.remove(got)
        if not figures:
            return GAVE_UP
        chunk_size, bits, other = reached
        if (chunk_size, len(bits)) != (visited.chunk_size, len(visited.bits)):
            return None
        visited.bits[:] = bits
        visited.other.update(other)
        count, digest, nodes, leaves, overflow_pages, depth = figures
        return WalkFigures(count, _Digest(digest), nodes, leaves, overflow_pages, depth)
    return None


def _geometry(m: Any) -> tuple[object, ...]:
    """Every header field the walk depends on, and the memory's size."""
    return (
        m.layout_version,
        m.root_addr,
        m.length,
        m.page_size,
        m.chunk_size,
        m.mem.size,
        m.free_list_head,
        m.num_allocated_chunks,
        int(m.allocator_ok),
        int(m.walkable),
    )
