"""The forge: writes stable-memory images laid out like ic-stable-structures does (FORMAT.md).

It serves three purposes: writing the shipped sample snapshots, forging (corrupt) inputs in tests, and
building big inputs for benchmarks. Every header is produced from the construct declarations in
``inspector.layouts``; hot loops use the ``struct`` packers derived from those declarations.

Public API (re-exported here from the ``forge_*`` modules):

Images
    ``MemoryManagerImage(bucket_size_pages, base=None)``: ``grow``, ``write``, ``place``,
    ``write_physical``, ``to_bytes``, ``write_to(path, sparse=True)``; ``RawImage`` for a structure
    directly on stable memory; ``build_mm_image`` places several memories in a given order.
Structures (each gives the bytes a structure writes into its own memory)
    ``cell``, ``vec``, ``minheap`` (+ ``heap_order``), ``log``; ``forge_btreemap`` /
    ``forge_btreemap_columns`` / ``forge_u64_btreemap`` (v2, bulk loaded, overflow pages, free
    list) and ``forge_btreemap_v1``.
Corruption
    ``stable_save_message`` / ``candid_message`` (own Candid encoder), ``apply_stable_save``,
    ``reinit_memory_manager``.

Command line::

    python -m inspector.forge samples [--out DIR]      # the shipped samples (default snapshots/samples)
    python -m inspector.forge big OUT [--entries N] [--raw-gib G] [--bucket-pages P]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from pathlib import Path

from inspector.forge.btree import (
    DEFAULT_UNBOUNDED_PAGE_SIZE,
    U64_U64_PAGE_SIZE,
    ForgedBTreeMap,
    bounded_page_size,
    forge_btreemap,
    forge_btreemap_columns,
    forge_btreemap_v1,
    forge_u64_btreemap,
    overflow_pages_needed,
    plan_shape,
)
from inspector.forge.candid import (
    BOOL,
    EMPTY,
    FLOAT32,
    FLOAT64,
    INT,
    INT8,
    INT16,
    INT32,
    INT64,
    NAT,
    NAT8,
    NAT16,
    NAT32,
    NAT64,
    NULL,
    PRINCIPAL,
    RESERVED,
    TEXT,
    CandidType,
    Opt,
    Record,
    Variant,
    VecOf,
    candid_message,
    candid_type_section,
    candid_values,
    idl_hash,
    leb128,
    sleb128,
    stable_save_message,
)
from inspector.forge.image import (
    PAGE,
    MemoryContent,
    MemoryManagerImage,
    RawImage,
    Written,
    apply_stable_save,
    content_bytes,
    fresh_mm_prefix,
    mm_header_bytes,
    pages_for,
    reinit_memory_manager,
)
from inspector.forge.structures import cell, encode_slots, heap_order, log, minheap, vec

# The shipped samples live in the project's snapshots/ folder, next to the inspector package.
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "snapshots" / "samples"


def build_mm_image(
    bucket_size_pages: int, memories: Iterable[tuple[int, MemoryContent | bytes]]
) -> MemoryManagerImage:
    """A MemoryManager image with memories placed (and so grown) in the given order.

    Plain bytes are a memory's virtual bytes from offset 0 (grown to whole pages).
    """
    mm = MemoryManagerImage(bucket_size_pages)
    for memory_id, content in memories:
        if isinstance(content, bytes | bytearray):
            mm.place(memory_id, Written([(0, bytes(content))]))
        else:
            mm.place(memory_id, content)
    return mm


def u64_be(values: Iterable[int]) -> list[bytes]:
    """Storable encoding of u64s (big-endian), for keys and values of u64 maps."""
    return [v.to_bytes(8, "big") for v in values]


def big_image(out: Path, entries: int, raw_gib: float, bucket_pages: int) -> MemoryManagerImage:
    """A benchmark input: a u64 → u64 map (k → k²) at MemoryId 1 and a sparse raw memory at MemoryId 2."""
    mm = MemoryManagerImage(bucket_pages)
    mm.place(1, forge_u64_btreemap(range(entries), ((k * k) & 0xFFFF_FFFF_FFFF_FFFF for k in range(entries))))
    raw_pages = int(raw_gib * (1 << 30)) // PAGE
    if raw_pages:
        mm.grow(2, raw_pages)
        mm.write(2, 0, b"raw memory 2 starts here")
        mm.write(2, raw_pages * PAGE - 16, b"raw memory 2 end")
    mm.write_to(out, sparse=True)
    return mm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inspector.forge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_samples = sub.add_parser("samples", help="write the shipped sample snapshots")
    p_samples.add_argument("--out", type=Path, default=SAMPLES_DIR)
    p_big = sub.add_parser("big", help="write a big (sparse) benchmark image")
    p_big.add_argument("out", type=Path)
    p_big.add_argument("--entries", type=int, default=1_000_000)
    p_big.add_argument("--raw-gib", type=float, default=0.0)
    p_big.add_argument("--bucket-pages", type=int, default=128)
    args = parser.parse_args(argv)

    if args.command == "samples":
        from inspector.forge.samples import write_samples

        for path in write_samples(args.out):
            print(f"{path.stat().st_size:>10,}  {path}")
        return 0
    start = time.perf_counter()
    mm = big_image(args.out, args.entries, args.raw_gib, args.bucket_pages)
    elapsed = time.perf_counter() - start
    print(f"wrote {args.out}: {mm.physical_size:,} bytes, {mm.num_buckets} buckets, {elapsed:.1f} s")
    return 0


__all__ = [
    "BOOL",
    "DEFAULT_UNBOUNDED_PAGE_SIZE",
    "EMPTY",
    "FLOAT32",
    "FLOAT64",
    "INT",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "NAT",
    "NAT8",
    "NAT16",
    "NAT32",
    "NAT64",
    "NULL",
    "PAGE",
    "PRINCIPAL",
    "RESERVED",
    "SAMPLES_DIR",
    "TEXT",
    "U64_U64_PAGE_SIZE",
    "CandidType",
    "ForgedBTreeMap",
    "MemoryContent",
    "MemoryManagerImage",
    "Opt",
    "RawImage",
    "Record",
    "Variant",
    "VecOf",
    "Written",
    "apply_stable_save",
    "big_image",
    "bounded_page_size",
    "build_mm_image",
    "candid_message",
    "candid_type_section",
    "candid_values",
    "cell",
    "content_bytes",
    "encode_slots",
    "forge_btreemap",
    "forge_btreemap_columns",
    "forge_btreemap_v1",
    "forge_u64_btreemap",
    "fresh_mm_prefix",
    "heap_order",
    "idl_hash",
    "leb128",
    "log",
    "minheap",
    "mm_header_bytes",
    "overflow_pages_needed",
    "pages_for",
    "plan_shape",
    "reinit_memory_manager",
    "sleb128",
    "stable_save_message",
    "u64_be",
    "vec",
]
