"""The walk's set of reached chunks (one byte per chunk) answers exactly what a set of ints answers."""

from __future__ import annotations

import random

import pytest

from inspector.structures.chunk_set import FIRST_PAYLOAD, ChunkSet


@pytest.mark.parametrize("chunk_size", [16 + 128, 16 + 275, 16 + 1024])
def test_same_answers_as_a_set(chunk_size: int) -> None:
    rng = random.Random(chunk_size)
    chunks = 500
    cs = ChunkSet(chunk_size, chunks)
    ref: set[int] = set()
    grid = [FIRST_PAYLOAD + i * chunk_size for i in range(chunks + 20)]  # 20 past the bitmap
    for _ in range(2_000):
        addr = rng.choice(grid) if rng.random() < 0.8 else rng.randrange(0, grid[-1] + 3 * chunk_size)
        assert (addr in cs) == (addr in ref)
        cs.add(addr)
        ref.add(addr)
    probes = grid + [rng.randrange(-5, grid[-1] * 2) for _ in range(3_000)]
    assert [p in cs for p in probes] == [p in ref for p in probes]
    assert len(cs) == len(ref)
    assert sorted(cs) == sorted(ref)
    assert cs.other  # off-grid and past-the-end addresses were really exercised
    assert "x" not in cs


def test_absent_lists_allocated_chunks_nobody_reached() -> None:
    size = 16 + 200
    cs = ChunkSet(size, 100)
    reached = {3, 4, 10, 11, 50}
    for i in reached:
        cs.add(FIRST_PAYLOAD + i * size)
    flags = [1 if i in reached or i in (7, 60) else 0 for i in range(100)]
    flags[20] = 2  # a corrupt "allocated" byte: neither allocated nor free
    want = [FIRST_PAYLOAD + i * size for i in (7, 60)]
    assert cs.absent(0, flags) == want
    assert cs.absent(5, flags[5:65]) == want
    exact = [1 if i in reached else 0 for i in range(100)]
    assert cs.absent(0, exact) == []
    assert cs.absent(90, [1] * 20) == [FIRST_PAYLOAD + i * size for i in range(90, 110)]  # past the bitmap
