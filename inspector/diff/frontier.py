"""The allocator frontier each side's forensic orphan scan starts from, kept off the diff's critical path.

Loading a snapshot runs the forensics, whose stray-node scan (``analysis.orphans``) looks at a map's chunks
from its allocator frontier on. The frontier is the end of the free list, and the free list of a big map
that lost many values is ~100K hops all over the file (~0.2 s a side on the bench's 1 GiB map): the one
fixed cost of loading that grows with the map. ``diff --json`` therefore loads both sides with the scan
deferred (``forensics.find_deferred_orphans``) and finishes it here, once the byte compare is in, with
the free lists found off the critical path:

* the OLD side's is walked in the second byte-compare child (``prefetch``), from the columns of the
  chunk headers the children took while comparing (or by the map's own walk, ``_free_list``, where
  the columns cannot vouch for it), and handed back with the file's identity and the allocator's
  geometry; it is used only for that very file and a map with the same header fields;
* the NEW side's is the old one's when the two files are the same size and no changed byte falls in the
  map and allocator headers or in any chunk header: the walk reads nothing else (the header fields, then
  each hop's 16-byte chunk header; the fallback frontier reads chunk headers too), so over those
  identical bytes it would return the identical list.

Otherwise each side walks its own list as before. Either way the scan then runs, and its findings are
added where the synchronous scan would have put them, so the diff is the same with or without this.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Any

from inspector.diff.map_chains import file_identity, structure_hits
from inspector.layouts import CHUNK_HEADER_SIZE, CHUNK_MAGIC, FIRST_CHUNK_OFFSET
from inspector.memory import PhysicalMemory

if TYPE_CHECKING:
    from inspector.diff.byte_ranges import DiffResult
    from inspector.diff.map_chains import _Columns
    from inspector.session import Session
    from inspector.structures.btreemap import BTreeMap

    FreeListState = tuple[list[int], list[tuple[str, str, int | None, dict[str, Any]]], int]
    # What the child sends: the list as an array (see ``precompute``), or the map's own state.
    SentState = tuple[list[int] | array[int], list[tuple[str, str, int | None, dict[str, Any]]], int]
    FreeListHint = tuple[tuple[int, ...], tuple[int, ...], SentState]  # (file, geometry, state)

# (Only what the compare children need is imported at the top: the parent's side imports the rest.)

# The hint the compare child sent for the old snapshot's raw-memory map (see ``offer``).
_OFFERED: list[FreeListHint] = []


def _geometry(m: BTreeMap) -> tuple[int, ...]:
    """Every header field the free-list walk depends on, and the memory's size (its chunk count)."""
    return (
        m.chunk_size,
        m.page_size,
        m.mem.size,
        m.free_list_head,
        m.num_allocated_chunks,
        int(m.allocator_ok),
        int(m.walkable),
    )


def precompute(m: BTreeMap, fd: int, cols: _Columns | None) -> FreeListHint | None:
    """For a compare child: the free list of the old raw-memory map, as its own ``_free_list``
    returns it; None if its allocator is unreadable."""
    if not m.allocator_ok:
        return None
    clean = _clean_from_columns(m, cols) if cols is not None else None
    # A list the columns cannot vouch for (not clean, or a hop off the columns) is walked the map's way.
    # A clean list goes back as an array: pickling ~98,000 ints one by one took the child ~17 ms of the
    # bench's big-value map diff (the parent waits for this list), an array ~2 ms.
    state: SentState = (array("Q", clean), [], clean[-1]) if clean is not None else m._free_list()
    return file_identity(fd), _geometry(m), state


def _clean_from_columns(m: BTreeMap, cols: _Columns) -> list[int] | None:
    """``_clean_free_list`` of a map on a raw mapping, read from the columns of its chunk headers
    (``heads[c]`` and ``links[c]`` are the very u64 words that walk reads at chunk ``c``), a Python
    step per hop without a read each. None where that walk would give None."""
    heads, links = cols.heads, cols.links
    buf = m.mem.buf if isinstance(m.mem, PhysicalMemory) else None
    if heads is None or links is None or buf is None:
        return None
    cs, n, first = m.chunk_size, len(heads), FIRST_CHUNK_OFFSET
    words = (m.mem.size - first) // 8  # the walk's u64 view of the chunk area
    free = int.from_bytes(CHUNK_MAGIC + bytes([1, 0]), "little")  # magic, version 1, not allocated
    mask = (1 << (8 * (len(CHUNK_MAGIC) + 2))) - 1
    chain: list[int] = []
    append = chain.append
    addr = m.free_list_head
    for _ in range(m._max_chunks):
        c, r = divmod(addr - first, cs)
        if r or c < 0:
            return None
        if c < n:
            head, link = heads[c], links[c]
        else:  # a chunk the columns left out (the last one, cut by the end of the file): read its words
            if (addr - first) // 8 + 1 >= words:
                return None
            head = int.from_bytes(buf[addr : addr + 8], "little")
            link = int.from_bytes(buf[addr + 8 : addr + 16], "little")
        if head & mask != free:
            return None
        append(addr)
        addr = link
        if not addr:
            return None if max(chain) > chain[-1] else chain
    return None


def offer(hint: FreeListHint) -> None:
    _OFFERED[:] = [hint]


def _raw_map(session: Session) -> BTreeMap | None:
    """The map on the raw memory of this snapshot's file, if that is what the snapshot holds."""
    from inspector.structures.btreemap.structure import BTreeMapStructure

    snap = session.snapshot
    for s in session.analysis.structures:
        if (
            isinstance(s, BTreeMapStructure)
            and s.memory_id == "raw"
            and isinstance(s.mem, PhysicalMemory)
            and s.mem is snap.memory
        ):
            return s.map
    return None


def _adopt_old(m: BTreeMap, fd: int | None) -> None:
    hint = _OFFERED.pop() if _OFFERED else None
    if hint is None or fd is None or m._free_list_state is not None:
        return
    identity, geometry, state = hint
    try:
        same_file = file_identity(fd) == identity
    except OSError:
        return
    if same_file and geometry == _geometry(m):
        chain, problems, frontier = state
        m._free_list_state = (chain.tolist() if isinstance(chain, array) else chain, problems, frontier)


def _adopt_new(old: BTreeMap, new: BTreeMap, result: DiffResult) -> None:
    state = old._free_list_state
    if state is None or new._free_list_state is not None or _geometry(old) != _geometry(new):
        return
    if result.size_a != result.size_b or not old.allocator_ok or not old.chunk_size:
        return
    # Ranges before the first chunk (map and allocator headers), in a chunk header, or running from one
    # chunk into the next: the new side's walk could read a changed byte.
    if structure_hits(result.pairs(), old.chunk_size, CHUNK_HEADER_SIZE):
        return
    chain, problems, frontier = state
    new._free_list_state = (list(chain), list(problems), frontier)


def finish_orphan_scans(old: Session, new: Session, result: DiffResult | None) -> None:
    """Run the orphan scans that loading left out (``load(..., orphan_scan=False)``), each side's free
    list taken from where it is already known (see the module docstring)."""
    from inspector.analysis.forensics import apply_deferred_orphans, find_deferred_orphans

    old_map, new_map = _raw_map(old), _raw_map(new)
    if old_map is not None:
        _adopt_old(old_map, old.snapshot.fd)
        if new_map is not None and result is not None and new.snapshot.size == old.snapshot.size:
            _adopt_new(old_map, new_map, result)
    _OFFERED.clear()
    for session in (old, new):
        orphans = find_deferred_orphans(session.analysis)
        if orphans is not None:
            apply_deferred_orphans(session.analysis, orphans)
