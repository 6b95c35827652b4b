"""BTreeMap node parsing: the hot-path unpackers, the public node/entry records and key-layout probing.

Everything here works on a *logical node stream* that sits contiguously in some buffer: either the
snapshot mmap itself (a node without overflow pages that does not cross a bucket boundary) or a
``bytes`` object assembled from the initial page and its "NOF" overflow pages. The caller
(``btreemap.BTreeMap``) is responsible for finding that buffer; this module only decodes it.

Speed notes (the walk must do ~10^6 entries per second): every fixed layout is unpacked with one
cached ``struct.Struct`` per shape, runs of length-prefixed items first try a single "all items have
the same length" unpack (the usual case for fixed-size value types) and only fall back to a per-item
loop when that guess fails. The chunk+node header format is *derived* from the construct declarations
in ``inspector.layouts`` so the fast path cannot drift from the declared layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from inspector.errors import BadFormat
from inspector.layouts import (
    CHUNK_HEADER,
    CHUNK_HEADER_SIZE,
    FIRST_CHUNK_OFFSET,
    NODE_HEADER,
    OVERFLOW_HEADER,
    V2_NODE_PREFIX,
)

Range = tuple[int, int]

# The first node/overflow payload lives right after the first chunk header.
FIRST_PAYLOAD = FIRST_CHUNK_OFFSET + CHUNK_HEADER_SIZE  # 116
V2_PREFIX_SIZE = V2_NODE_PREFIX.size  # 15: header (7) + first overflow address (8)
NODE_HEADER_SIZE = NODE_HEADER.size  # 7
OVERFLOW_DATA_OFFSET = OVERFLOW_HEADER.size  # 11: "NOF" + next
LEAF, INTERNAL = 0, 1

# A chunk header immediately followed by a v2 node prefix: one unpack for the two headers every node
# visit needs. For a v1 node the trailing "overflow" field is really the first entry's bytes and is
# ignored. The format is the concatenation of the two declared formats (minus the second "<").
CHUNK_NODE = struct.Struct(CHUNK_HEADER.format + V2_NODE_PREFIX.format[1:])
CHUNK_NODE_SIZE = CHUNK_NODE.size  # 31
# Chunk header followed by an overflow-page header, for overflow chains.
CHUNK_OVERFLOW = struct.Struct(CHUNK_HEADER.format + OVERFLOW_HEADER.format[1:])

_U32 = struct.Struct("<I").unpack_from
BE32 = struct.Struct(">I").pack

# Only try the "every item has the same length" unpack for short items: for long values the guess
# would copy a lot of bytes for nothing when it fails, and the per-item loop costs little there.
_UNIFORM_MAX_LEN = 512


class NodeError(BadFormat):
    """A node (or one of its overflow pages) that cannot be parsed; ``code`` is the finding code."""

    def __init__(self, message: str, code: str = "btree_node_invalid", addr: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.addr = addr


class Entry(NamedTuple):
    """One map entry as yielded by ``BTreeMap.iter_entries``."""

    key: bytes
    value: bytes
    node_addr: int
    index_in_node: int


@dataclass(frozen=True)
class NodeEntry:
    """One entry of a parsed node, with where its bytes are.

    ``key_span``/``value_span`` are (logical offset in the node stream, length) of the key/value *bytes*
    (length prefixes excluded: a prefix, when present, is the 4 bytes just before the span).
    ``key_ranges``/``value_ranges`` are the same bytes as half-open ranges in the map's memory; a value
    that spills over several overflow pages has one range per page.
    """

    key: bytes
    value: bytes
    key_span: tuple[int, int]
    value_span: tuple[int, int]
    key_ranges: list[Range]
    value_ranges: list[Range]
    slot_overflow: bool = False  # v1 only: key or value longer than its fixed slot (FORMAT.md §11.3)


@dataclass(frozen=True)
class Node:
    """A parsed node. ``version`` is the node's own version byte (a migrated map mixes 1 and 2)."""

    addr: int
    physical_addr: int | None
    version: int
    type: str  # "leaf" | "internal"
    num_entries: int
    children: list[int]
    overflows: list[int]  # the overflow-page chain in order (v2 only)
    entries: list[NodeEntry]
    page_size: int
    stream_len: int  # bytes of the logical node stream that the node actually uses
    key_layout: str | int  # the key layout used to parse it (v1 nodes: "prefixed", always)
    ranges: list[Range] = field(default_factory=list)  # the initial page and overflow pages, in memory

    @property
    def is_leaf(self) -> bool:
        return self.type == "leaf"

    @property
    def chunk_addr(self) -> int:
        return self.addr - CHUNK_HEADER_SIZE

    @property
    def keys(self) -> list[bytes]:
        return [e.key for e in self.entries]

    @property
    def values(self) -> list[bytes]:
        return [e.value for e in self.entries]

    def summary(self) -> dict[str, Any]:
        """The fields the fixtures' ``nodes.list`` items carry (minus depth, which is the walk's)."""
        return {
            "addr": self.addr,
            "physical_addr": self.physical_addr,
            "version": self.version,
            "type": self.type,
            "num_entries": self.num_entries,
            "children": list(self.children),
            "overflows": list(self.overflows),
            "keys_hex": [k.hex() for k in self.keys],
        }


# --- cached struct shapes -----------------------------------------------------------------------------


@lru_cache(maxsize=64)
def children_struct(n: int) -> struct.Struct:
    return struct.Struct(f"<{n}Q")


@lru_cache(maxsize=4096)
def _fixed_struct(size: int, k: int) -> struct.Struct:
    return struct.Struct("<" + f"{size}s" * k)


@lru_cache(maxsize=4096)
def _uniform_prefixed_struct(length: int, k: int) -> struct.Struct:
    return struct.Struct("<" + f"I{length}s" * k)


@lru_cache(maxsize=1024)
def _v1_struct(k: int, max_key: int, max_value: int) -> struct.Struct:
    return struct.Struct("<" + f"I{max_key}sI{max_value}s" * k)


def overflow_pages_needed(stream_len: int, page_size: int) -> int:
    """FORMAT.md §3.6: 0 if the stream fits the initial page, else ceil((n − P)/(P − 11))."""
    if stream_len <= page_size:
        return 0
    per_page = page_size - OVERFLOW_DATA_OFFSET
    return -(-(stream_len - page_size) // per_page)


# --- v2 bodies ------------------------------------------------------------------------------------------


def prefixed_run(buf: Any, p: int, end: int, k: int) -> tuple[list[bytes], int, int]:
    """k items of (u32 LE length, bytes) starting at p, all before ``end``.

    Returns (items, position after the last item, common length or -1).
    """
    if p + 4 > end:
        raise NodeError("length prefix runs past the end of the node stream")
    (first,) = _U32(buf, p)
    if first <= _UNIFORM_MAX_LEN:
        size = (4 + first) * k
        if p + size <= end:
            t = _uniform_prefixed_struct(first, k).unpack_from(buf, p)
            if t[0::2].count(first) == k:
                return list(t[1::2]), p + size, first
    out: list[bytes] = []
    for _ in range(k):
        if p + 4 > end:
            raise NodeError("length prefix runs past the end of the node stream")
        (n,) = _U32(buf, p)
        p += 4
        if n > end - p:
            raise NodeError(f"item of {n} bytes runs past the end of the node stream")
        out.append(buf[p : p + n])
        p += n
    return out, p, -1


def parse_v2_body(
    buf: Any, base: int, end: int, internal: bool, k: int, key_fixed: int
) -> tuple[tuple[int, ...], list[bytes], list[bytes], int, int, int]:
    """Children, keys and values of a v2 node whose logical stream is buf[base:end].

    ``key_fixed`` is the fixed key size, or 0 for length-prefixed keys. Returns
    (children, keys, values, stream length, common key length or -1, common value length or -1).
    """
    p = base + V2_PREFIX_SIZE
    if internal:
        n = 8 * (k + 1)
        if p + n > end:
            raise NodeError("child addresses run past the end of the node stream")
        children = children_struct(k + 1).unpack_from(buf, p)
        p += n
    else:
        children = ()
    if key_fixed:
        n = key_fixed * k
        if p + n > end:
            raise NodeError("fixed-size keys run past the end of the node stream")
        keys = list(_fixed_struct(key_fixed, k).unpack_from(buf, p))
        p += n
        klen = key_fixed
    else:
        keys, p, klen = prefixed_run(buf, p, end, k)
    values, p, vlen = prefixed_run(buf, p, end, k)
    return children, keys, values, p - base, klen, vlen


def v2_spans(
    internal: bool, keys: list[bytes], values: list[bytes], key_fixed: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(logical offset, length) of each key's and value's bytes in a v2 node stream."""
    p = V2_PREFIX_SIZE + (8 * (len(keys) + 1) if internal else 0)
    key_spans: list[tuple[int, int]] = []
    for key in keys:
        if not key_fixed:
            p += 4
        key_spans.append((p, len(key)))
        p += len(key)
    value_spans: list[tuple[int, int]] = []
    for value in values:
        p += 4
        value_spans.append((p, len(value)))
        p += len(value)
    return key_spans, value_spans


def scan_prefixed(buf: Any, p: int, end: int, k: int) -> int:
    """Position after k length-prefixed items, or -1 if they do not fit (no copying: for probing)."""
    for _ in range(k):
        if p + 4 > end:
            return -1
        (n,) = _U32(buf, p)
        p += 4 + n
        if p > end:
            return -1
    return p


# --- v1 bodies ------------------------------------------------------------------------------------------


def parse_v1_body(
    buf: Any, base: int, end: int, internal: bool, k: int, max_key: int, max_value: int
) -> tuple[tuple[int, ...], list[bytes], list[bytes], list[int]]:
    """Children, keys and values of a v1 node at buf[base:end] (FORMAT.md §3.5).

    Returns (children, keys, values, indexes of entries whose length exceeds its slot). For such an
    entry the bytes returned here are only the slot's share; the caller re-reads the real bytes from
    memory (they overlap the following entries, which is exactly the upstream bug being reported).
    """
    stride = 8 + max_key + max_value
    p = base + NODE_HEADER_SIZE
    need = k * stride + (8 * (k + 1) if internal else 0)
    if p + need > end:
        raise NodeError("v1 entries run past the end of the node page")
    t = _v1_struct(k, max_key, max_value).unpack_from(buf, p)
    keys: list[bytes] = []
    values: list[bytes] = []
    overflowing: list[int] = []
    for i in range(k):
        klen, kbytes, vlen, vbytes = t[4 * i : 4 * i + 4]
        if klen > max_key or vlen > max_value:
            overflowing.append(i)
        keys.append(kbytes[:klen] if klen < max_key else kbytes)
        values.append(vbytes[:vlen] if vlen < max_value else vbytes)
    children = children_struct(k + 1).unpack_from(buf, p + k * stride) if internal else ()
    return children, keys, values, overflowing


def v1_offsets(i: int, max_key: int, max_value: int) -> tuple[int, int]:
    """Node-relative offsets of entry i's key bytes and value bytes in a v1 node."""
    start = NODE_HEADER_SIZE + i * (8 + max_key + max_value)
    return start + 4, start + 8 + max_key


# --- logical stream → memory ranges ---------------------------------------------------------------------


def logical_ranges(addr: int, overflows: list[int], page_size: int, start: int, length: int) -> list[Range]:
    """Memory ranges of logical bytes [start, start+length) of a node stream (FORMAT.md §3.6)."""
    out: list[Range] = []
    o = start
    end = start + length
    per_page = page_size - OVERFLOW_DATA_OFFSET
    while o < end:
        if o < page_size:
            seg = addr + o
            take = min(end, page_size) - o
        else:
            j, r = divmod(o - page_size, per_page)
            if j >= len(overflows):
                break  # cannot happen for a node that parsed; keep the function total anyway
            seg = overflows[j] + OVERFLOW_DATA_OFFSET + r
            take = min(end - o, per_page - r)
        if out and out[-1][1] == seg:
            out[-1] = (out[-1][0], seg + take)
        else:
            out.append((seg, seg + take))
        o += take
    return out


def strictly_increasing(keys: list[bytes]) -> bool:
    return all(a < b for a, b in zip(keys, keys[1:], strict=False))
