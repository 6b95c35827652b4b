"""Forensics and salvage on forged images: the incident at other seeds, MemoryIds and bucket sizes
(including the default 128-page geometry), small evidence cases, hostile bytes and a sparse 8 GiB file.

The expected recoverable set is computed the way the fixture generator defines it, independently of
the salvage code: an old entry is recoverable iff its old node's page and overflow pages (as the walker
reads them in the pre-upgrade image) are byte-identical in the later image.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inspector.analysis.forensics import refresh_diagnosis, run_forensics
from inspector.cli import main
from inspector.forge.btree import forge_u64_btreemap
from inspector.forge.candid import NAT8 as CANDID_NAT8
from inspector.forge.candid import VecOf, candid_message, stable_save_message
from inspector.forge.image import MemoryManagerImage, RawImage, apply_stable_save
from inspector.forge.samples import DATA, default_data, heap_data, member_map, members
from inspector.forge.structures import cell, vec
from inspector.session import load

PAGE = 65_536


@dataclass
class Trio:
    pre: bytes
    after: bytes
    post: bytes
    message_len: int
    map_id: int


def forge_trio(seed: int, bucket_pages: int, cell_id: int, map_id: int, audit_events: int) -> Trio:
    """The incident (FORMAT.md §11): healthy → stable_save over offset 0 → fresh manager, re-created
    structures (same init order), three new members."""
    rng = random.Random(seed)
    cell_value = candid_message([DATA], [heap_data(rng, audit_events=5, admins=4)])
    old = members(rng, 200)
    message = stable_save_message([DATA], [heap_data(rng, audit_events=audit_events, admins=40)])
    new = members(rng, 3, taken=set(old))
    mm = MemoryManagerImage(bucket_pages)
    mm.place(cell_id, cell(cell_value))
    mm.place(map_id, member_map(old, fill=rng.choice([6, 8, 10]), free_chunks=2))
    pre = mm.to_bytes()
    after = bytes(apply_stable_save(pre, message))
    mm2 = MemoryManagerImage(bucket_pages, base=after)
    mm2.place(cell_id, cell(candid_message([DATA], [default_data()])))
    mm2.place(map_id, member_map(new))
    return Trio(pre, after, mm2.to_bytes(), len(message), map_id)


def recoverable(pre: bytes, later: bytes, tmp: Path, map_id: int) -> dict[bytes, bytes]:
    """The generator's rule, from the healthy image's node walk."""
    path = tmp / "pre.bin"
    path.write_bytes(pre)
    session = load(path, forensics=False)
    bmap = session.analysis.structure(map_id).map
    out: dict[bytes, bytes] = {}
    for _depth, node in bmap.iter_nodes():
        ranges = bmap.physical_ranges(node.ranges)
        if all(pre[s:e] == later[s:e] for s, e in ranges):
            out.update((e.key, e.value) for e in node.entries)
    session.close()
    return out


def salvaged(
    path: Path, capsys: pytest.CaptureFixture[str], memory: int
) -> tuple[int, dict[bytes, bytes], str]:
    rc = main(["salvage", str(path), "--memory", str(memory), "--format", "jsonl"])
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines() if line.strip()]
    got = {bytes.fromhex(r["key_hex"]): bytes.fromhex(r["value_hex"]) for r in rows}
    assert len(got) == len(rows)
    return rc, got, out.err


TRIOS = [
    # seed, bucket pages, cell id, map id, audit events (≈ 45 bytes each)
    pytest.param(7, 128, 0, 4, 8_000, id="default-128-pages"),
    pytest.param(11, 5, 3, 7, 8_000, id="5-pages-ids-3-7"),
    pytest.param(13, 1, 2, 9, 8_000, id="1-page-map-wiped"),
    pytest.param(17, 16, 200, 1, 40, id="small-blob-16-pages"),
]


@pytest.mark.parametrize(("seed", "bucket", "cell_id", "map_id", "events"), TRIOS)
def test_incident_at_other_geometries(
    seed: int,
    bucket: int,
    cell_id: int,
    map_id: int,
    events: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trio = forge_trio(seed, bucket, cell_id, map_id, events)
    for stage in ("after", "post"):
        image: bytes = getattr(trio, stage)
        path = tmp_path / f"{stage}.bin"
        path.write_bytes(image)
        rc, got, err = salvaged(path, capsys, map_id)
        assert rc == 0, err
        assert got == recoverable(trio.pre, image, tmp_path, map_id), (stage, err)

        session = load(path, forensics=False)
        analysis = session.analysis
        analysis.deep()
        run_forensics(analysis, deep=True)
        refresh_diagnosis(analysis)
        found = {f.code for f in analysis.all_findings() if f.severity == "error"}
        old = recoverable(trio.pre, image, tmp_path, map_id)
        if stage == "after":
            assert analysis.stable_save is not None
            assert [tuple(r) for r in analysis.stable_save.physical_ranges] == [(0, trio.message_len)]
            if old:
                # Something of the manager survives: the blob is an error and the manager is clobbered.
                assert {"stable_save_blob", "memory_manager_clobbered"} <= found, found
                assert analysis.reconstructed.bucket_size_in_pages == bucket
            else:
                # The message covers every byte the manager ever wrote: it is indistinguishable from a
                # canister that only used stable_save, and nothing is claimed beyond the message.
                assert analysis.reconstructed is None
        else:
            assert ("orphaned_data" in found) == bool(old)
        assert analysis.diagnosis
        session.close()


def test_stable_save_only_canister_is_not_a_clobbered_manager(tmp_path: Path) -> None:
    """A canister that only ever used stable_save: the message is reported (info), nothing else."""
    msg = stable_save_message([VecOf(CANDID_NAT8)], [bytes(range(256)) * 300])
    img = RawImage(3)
    img.write(0, msg)
    path = tmp_path / "s.bin"
    img.write_to(path)
    assert main(["check", str(path)]) == 0
    session = load(path)
    (f,) = [f for f in session.analysis.all_findings() if f.code == "stable_save_blob"]
    assert f.severity == "info" and f.physical_ranges == [(0, len(msg))]
    assert session.analysis.reconstructed is None


def test_garbage_over_the_header_with_a_surviving_table(tmp_path: Path) -> None:
    """Not Candid: the header is garbage, but the bucket table still lists the buckets."""
    mm = MemoryManagerImage(2)
    mm.place(3, vec([i.to_bytes(8, "big") for i in range(100)], 8, True))
    mm.place(5, forge_u64_btreemap(range(0, 500, 3), range(500)[: len(range(0, 500, 3))]))
    data = bytearray(mm.to_bytes())
    data[0:40] = b"\xa1\x70garbage written by something else!!!!!!"[:40]
    path = tmp_path / "g.bin"
    path.write_bytes(bytes(data))
    session = load(path)
    analysis = session.analysis
    f = next(f for f in analysis.all_findings() if f.code == "memory_manager_clobbered")
    assert "bucket table" in f.message
    recon = analysis.reconstructed
    assert recon.bucket_size_in_pages == 2 and {m.id for m in recon.memories} == {3, 5}
    assert analysis.structure(5).kind == "btreemap" and analysis.structure(3).kind == "vec"


def test_candid_in_an_upgrade_memory_is_recognised(tmp_path: Path) -> None:
    msg = candid_message([VecOf(CANDID_NAT8)], [b"hello" * 50])
    mm = MemoryManagerImage(1)
    mm.write(0, 0, len(msg).to_bytes(4, "little") + msg)
    mm.write(1, 0, msg)
    path = tmp_path / "u.bin"
    mm.write_to(path)
    session = load(path)
    # A u32 length prefix + Candid is the quick-start Writer pattern: an upgrade_state structure (issue 11).
    state = session.analysis.structure(0)
    assert state is not None and state.kind == "upgrade_state"
    assert (state.length, state.format, state.verified) == (len(msg), "candid", True)
    # A bare message at the start of a memory is still reported as a Candid blob.
    blobs = [f for f in session.analysis.all_findings() if f.code == "stable_save_blob"]
    assert {f.memory_id for f in blobs} == {1} and {f.severity for f in blobs} == {"info"}
    info = session.analysis.extras["candid_messages_in_memories"]
    assert {(b["memory_id"], b["length_prefix"], b["range"][1]) for b in info} == {(1, False, len(msg))}


def unowned_vec_snapshot(tmp_path: Path) -> Path:
    """A manager that no longer knows bucket 1 (a Vec's): table entry, bucket count and size slot reset."""
    mm = MemoryManagerImage(1)
    mm.place(0, cell(b"x" * 10))
    mm.place(1, vec([b"\x01" * 8] * 10, 8, True))
    data = bytearray(mm.to_bytes())
    data[2080 + 1] = 0xFF
    data[4] = 1
    data[40 + 8 : 40 + 16] = bytes(8)
    path = tmp_path / "o.bin"
    path.write_bytes(bytes(data))
    return path


def test_structure_in_an_unowned_bucket(tmp_path: Path) -> None:
    session = load(unowned_vec_snapshot(tmp_path))
    orphans = [f for f in session.analysis.all_findings() if f.code == "orphaned_data"]
    assert len(orphans) == 1 and orphans[0].severity == "error" and "Vec" in orphans[0].message


HOSTILE = {
    # A vector of a trillion nulls: costs no bytes, must hit the decoder's limits, not a loop.
    "null_vector": b"DIDL\x01\x6d\x7f\x01\x00" + b"\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    # A type table claiming 2^40 entries.
    "huge_table": b"DIDL\x80\x80\x80\x80\x80\x80\x01",
    # Deeply nested opts.
    "deep_opt": b"DIDL\x01\x6e\x00\x01\x00" + b"\x01" * 60_000,
    # "MGR" with an absurd bucket count and size 1, all buckets owned by memory 0.
    "absurd_mm": b"MGR\x01\x00\x80\x01\x00" + bytes(2072) + bytes(32_768),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bytes_give_findings_not_hangs(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = HOSTILE[name]
    path = tmp_path / "h.bin"
    path.write_bytes(data + bytes(-len(data) % PAGE + 3 * PAGE))
    t = time.monotonic()
    assert main(["check", str(path)]) in (0, 1)
    assert main(["salvage", str(path), "--memory", "0", "--format", "jsonl"]) in (0, 2)
    capsys.readouterr()
    assert time.monotonic() - t < 10


def test_hostile_map_beyond_the_frontier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh map over chunk headers that claim allocated nodes with looping children and absurd counts."""
    fm = forge_u64_btreemap([1, 2, 3], [1, 2, 3])
    img = RawImage(4)
    img.place(fm)
    cs = fm.chunk_size
    for j in range(2, 120):
        addr = 100 + j * cs
        node = b"BTN\x02\x01" + (11).to_bytes(2, "little") + (addr + 16).to_bytes(8, "little")
        node += (addr + 16).to_bytes(8, "little") * 12  # every child is itself
        img.write(addr, b"CHK\x01\x01\x00\x00\x00" + bytes(8) + node)
    path = tmp_path / "m.bin"
    img.write_to(path)
    t = time.monotonic()
    assert main(["check", str(path)]) in (0, 1)
    capsys.readouterr()
    assert main(["salvage", str(path), "--memory", "raw", "--format", "jsonl"]) == 0
    out = capsys.readouterr().out
    assert out == "" and time.monotonic() - t < 10  # nothing parses consistently: nothing salvaged


def test_sparse_8_gib_snapshot_is_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """8 GiB of stable memory, almost all holes: check (deep walks + orphan scan) stays fast and flat."""
    mm = MemoryManagerImage(128)
    mm.place(0, cell(b"v" * 1000))
    mm.place(1, forge_u64_btreemap(range(20_000), range(20_000)))
    mm.grow(2, 1022 * 128)  # a raw memory filling the rest of 8 GiB (1,024 buckets), never written
    mm.write(2, 5 * PAGE * 128 + 77, b"stray bytes in the middle")
    path = tmp_path / "big.bin"
    mm.write_to(path, sparse=True)
    assert path.stat().st_size >= 8 << 30
    t = time.monotonic()
    assert main(["check", str(path)]) == 0
    healthy = time.monotonic() - t
    capsys.readouterr()
    # The incident on the same file: the message over offset 0; reconstruction scans page starts.
    rng = random.Random(3)
    apply_stable_save(path, stable_save_message([DATA], [heap_data(rng, audit_events=8_000, admins=10)]))
    t = time.monotonic()
    rc = main(["check", "--json", str(path)])
    clobbered = time.monotonic() - t
    got: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert rc == 1 and got["reconstructed"]["bucket_size_in_pages"] == 128
    assert healthy < 20 and clobbered < 20, (healthy, clobbered)
