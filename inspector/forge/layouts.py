"""Forged images of the layouts real canisters use (FORMAT.md §14, docs/LAYOUTS.md): a manager on
``RestrictedMemory``, a manager nested in a virtual memory, 0.7.1 reclaim holes with a reused lower
bucket, the quick-start upgrade state, BTreeSets, and negative controls.

Every function takes the ids, sizes and offsets as parameters, so tests exercise shapes other than the
real-library fixtures' (held-out snapshots use other values too).
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Sequence
from pathlib import Path

from inspector.forge.btree import ForgedBTreeMap, forge_btreemap, forge_btreemap_columns, forge_u64_btreemap
from inspector.forge.image import MemoryManagerImage, mm_header_bytes
from inspector.forge.structures import cell, vec
from inspector.layouts import BUCKET_TABLE_OFFSET, BUCKETS_START, UNALLOCATED_BUCKET, WASM_PAGE_SIZE

PAGE = WASM_PAGE_SIZE


def sample_manager(bucket_pages: int, ids: Sequence[int], n: int = 300) -> MemoryManagerImage:
    """A manager with a u64 → u64 map at ids[0], a Vec<u64> at ids[1] and a Cell at ids[2]."""
    img = MemoryManagerImage(bucket_pages)
    keys = list(range(0, 3 * n, 3))
    img.place(ids[0], forge_u64_btreemap(keys, [k * 7 for k in keys]))
    if len(ids) > 1:
        img.place(ids[1], vec([i.to_bytes(8, "little") for i in range(n)], 8, True))
    if len(ids) > 2:
        img.place(ids[2], cell(b"restricted cell value " * 10))
    return img


def restricted_image(manager: bytes, base: int, app_prefix: bytes = b"") -> bytes:
    """``MemoryManager::init(RestrictedMemory::new(mem, S..))``: the manager's own image shifted by
    ``base`` = S × 65,536; the application's bytes (``app_prefix``) at 0, zeros up to the base."""
    if base % PAGE or len(app_prefix) > base:
        raise ValueError("the base is a whole number of pages and the prefix must fit before it")
    return app_prefix + bytes(base - len(app_prefix)) + manager


def write_restricted_sparse(
    path: str | os.PathLike[str], manager: bytes, base: int, app_prefix: bytes
) -> int:
    """The same image written with a hole between the application bytes and the manager."""
    p = Path(path)
    with open(p, "wb") as f:
        f.write(app_prefix)
        f.truncate(base + len(manager))
        f.seek(base)
        f.write(manager)
    return base + len(manager)


def iic_header(version: int = 8) -> bytes:
    """An application header in the style of Internet Identity's (``IIC``, version, little-endian fields)."""
    return b"IIC" + bytes([version]) + struct.pack("<QQQ", 10_000, 7, 1 << 40) + bytes(38)


def nested_image(
    outer_bucket_pages: int, host_id: int, inner_bucket_pages: int, inner_ids: Sequence[int], other_id: int
) -> bytes:
    """An outer manager with a map at ``other_id`` and a manager initialised inside memory ``host_id``,
    holding a map at inner_ids[0] and a Vec at inner_ids[1]. Outer growth is interleaved, so the host's
    buckets are not contiguous."""
    inner = MemoryManagerImage(inner_bucket_pages)
    keys = [f"inner-key-{i:05}".encode() for i in range(150)]
    inner.place(inner_ids[0], forge_btreemap([(k, k[::-1] * 3) for k in keys]))
    inner.place(inner_ids[1], vec([i.to_bytes(8, "little") for i in range(2_000)], 8, True))
    inner_bytes = inner.to_bytes()
    outer = MemoryManagerImage(outer_bucket_pages)
    outer.grow(other_id, 1)
    outer.grow(host_id, 1)
    keys2 = list(range(400))
    outer.place(other_id, forge_u64_btreemap(keys2, keys2))
    outer.write(host_id, 0, inner_bytes)
    return outer.to_bytes()


def reclaim_image(ids: tuple[int, int, int], n: int = 200) -> tuple[bytes, list[int]]:
    """0.7.1 ``reclaim_memory`` and reuse, with 1-page buckets (FORMAT.md §14.3).

    ids = (kept map A, reclaimed memory B, map C). Growth: A, B, C, C, B, then B is reclaimed (its
    buckets 1 and 4 become holes) and C grows once more and is given freed bucket 1. C was written in the
    order [2, 3, 1], but the table gives [1, 2, 3] on reload. Returns (image, C's writer order).
    """
    a, b, c = ids
    img = MemoryManagerImage(1)
    img.grow(a, 1)  # bucket 0
    img.grow(b, 1)  # bucket 1
    keys = list(range(n))
    cmap = forge_u64_btreemap(keys, [k ^ 0x5A5A for k in keys])
    img.grow(c, 2)  # buckets 2, 3
    img.grow(b, 1)  # bucket 4
    amap = forge_u64_btreemap(keys[:50], keys[:50])
    img.place(a, amap)
    img.write(b, 0, b"\x42" * PAGE)  # the reclaimed memory's bytes stay in its buckets
    img.write(b, PAGE, b"\x43" * PAGE)
    data = bytearray(img.to_bytes())
    # C's map bytes in the writer's order [2, 3, then the reused bucket 1].
    cbytes = bytearray(3 * PAGE)
    for off, chunk in cmap.segments():
        cbytes[off : off + len(chunk)] = chunk
    for k, bucket in enumerate([2, 3, 1]):
        start = BUCKETS_START + bucket * PAGE
        data[start : start + PAGE] = cbytes[k * PAGE : (k + 1) * PAGE]
    table = [a, c, c, c, UNALLOCATED_BUCKET]
    data[BUCKET_TABLE_OFFSET : BUCKET_TABLE_OFFSET + len(table)] = bytes(table)
    sizes = [0] * 255
    sizes[a], sizes[c] = 1, 3
    data[: len(mm_header_bytes(1))] = mm_header_bytes(1, len(table), sizes)
    return bytes(data), [2, 3, 1]


def cbor_state(values: Sequence[int]) -> bytes:
    """ciborium's encoding of ``struct State { data_on_the_heap: Vec<u8> }``: {"data_on_the_heap": [..]}."""
    out = bytearray(b"\xa1\x70data_on_the_heap")
    n = len(values)
    out += (
        bytes([0x80 + n]) if n < 24 else b"\x98" + bytes([n]) if n < 256 else b"\x99" + n.to_bytes(2, "big")
    )
    for v in values:
        out += bytes([v]) if v < 24 else b"\x18" + bytes([v])
    return bytes(out)


def upgrade_state_image(state_id: int, map_id: int, payload: bytes, *, length: int | None = None) -> bytes:
    """The quick-start pattern: memory ``state_id`` holds u32 LE length + payload (``length`` overrides
    the prefix, to forge a truncated save); a u128 → u128 map at ``map_id``."""
    img = MemoryManagerImage(2)
    keys = list(range(40))
    img.place(
        map_id,
        forge_btreemap(
            [(k.to_bytes(16, "big"), (k * 3).to_bytes(16, "big")) for k in keys],
            bounds=(16, 16),
            fixed_key_size=16,
        ),
    )
    img.write(state_id, 0, struct.pack("<I", len(payload) if length is None else length) + payload)
    return img.to_bytes()


def set_image(u64_id: int, text_id: int, n: int) -> bytes:
    """``StableBTreeSet<u64>`` and ``StableBTreeSet<String>``: maps whose values are all zero-length."""
    img = MemoryManagerImage(2)
    keys = sorted(random.Random(7).sample(range(1 << 40), n))
    img.place(u64_id, _u64_set(keys))
    words = sorted({f"tag/{i:04x}".encode() for i in range(n // 3)})
    img.place(text_id, forge_btreemap([(w, b"") for w in words]))
    return img.to_bytes()


def _u64_set(keys: Sequence[int]) -> ForgedBTreeMap:
    # Page size 209: ¾ of the v1 node size for u64 keys and () values (FORMAT.md §14.4).
    return forge_btreemap_columns(
        [k.to_bytes(8, "big") for k in keys], [b""] * len(keys), page_size=209, fixed_key_size=8
    )


def empty_grown_image(ids_pages: Sequence[tuple[int, int]], bucket_pages: int = 4) -> bytes:
    """Memories grown and never written."""
    img = MemoryManagerImage(bucket_pages)
    for mid, pages in ids_pages:
        img.grow(mid, pages)
    return img.to_bytes()


def noise(nbytes: int, seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(nbytes)


def unsupported_version_image(version: int = 2) -> bytes:
    """A manager header with a layout version other than 1 (a v2 was proposed upstream, never released)."""
    data = bytearray(sample_manager(2, [0, 1]).to_bytes())
    data[3] = version
    return bytes(data)


def deeply_nested_image(levels: int, host_id: int = 1) -> bytes:
    """``levels`` managers, each initialised in memory ``host_id`` of the one around it; the innermost
    holds a Cell in memory 0."""
    inner = MemoryManagerImage(1)
    inner.place(0, cell(b"deep"))
    data = inner.to_bytes()
    for _ in range(levels - 1):
        outer = MemoryManagerImage(1)
        outer.write(host_id, 0, data)
        data = outer.to_bytes()
    return data
