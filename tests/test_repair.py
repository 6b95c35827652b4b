"""``repair``: salvage without headers, the repair plan, the written snapshot, and proof by re-reading it.

Three kinds of evidence:
* forged incidents (``inspector.forge``) at bucket sizes, MemoryIds, key layouts and message lengths
  other than the fixtures', with an oracle computed from the forge's own allocation (which entries sit
  in nodes the message did not touch); these need no ``../shared``;
* the real-library incident fixtures, with the expected entries computed from ``expected.json``
  (pre_upgrade's entries, the ``salvage.recoverable_keys`` and post_upgrade's live entries);
* the real library itself: ``../shared/tools/readback-*`` re-opens every repaired snapshot (skipped with a
  message where the tools are absent).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, SHARED, load_expected, require_fixtures

from inspector.cli import main
from inspector.forge.btree import forge_btreemap, forge_u64_btreemap
from inspector.forge.candid import NAT8, VecOf, candid_message
from inspector.forge.image import MemoryManagerImage, apply_stable_save
from inspector.forge.structures import cell
from inspector.memory import PhysicalMemory
from inspector.repair.btree_writer import build_btree, plan_tree
from inspector.repair.plan import entries_digest, merge_entries
from inspector.snapshot import open_snapshot
from inspector.structures.btreemap import BTreeMap

TOOLS = SHARED / "tools"
READBACK_VERSIONS = ("0.6.0", "0.7.2")
PAGE = 65_536


# --- helpers -------------------------------------------------------------------------------------------


def digest(pairs: list[tuple[bytes, bytes]]) -> str:
    pairs = sorted(pairs)
    return entries_digest([k for k, _ in pairs], [v for _, v in pairs])


def readback(path: Path, map_id: int, kind: str = "bytesbytes") -> list[dict[str, Any]]:
    """The real library's view of ``path`` (one report per version), or a skip when the tools are absent."""
    tools = [TOOLS / f"readback-{v}" for v in READBACK_VERSIONS]
    if not all(t.is_file() for t in tools):
        pytest.skip(f"readback tools not found in {TOOLS} (../shared/tools): real-library proof skipped")
    out = []
    for tool in tools:
        proc = subprocess.run(
            [str(tool), "--file", str(path), "--map", f"{map_id}:{kind}"],
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(json.loads(proc.stdout))
    return out


def assert_library_reads(
    path: Path, map_id: int, expected: list[tuple[bytes, bytes]], kind: str = "bytesbytes"
) -> None:
    for report in readback(path, map_id, kind):
        version = report["library_version"]
        assert report["init_changed_bytes"] == 0 and not report["silent_reinit"], version
        m = report["maps"][str(map_id)]
        assert not m["created_new_map"] and "panic" not in m, (version, m)
        assert (m["count"], m["entries_sha256"]) == (len(expected), digest(expected)), version


def run_repair(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any] | None, str]:
    rc = main(["repair", *args, "--json"])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if cap.out.strip() else None), cap.err


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the B-tree writer ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 11, 12, 67, 143, 144, 1_727, 1_728, 3_000])
def test_tree_shape_respects_the_library_invariants(n: int) -> None:
    root = plan_tree(n)
    assert root is not None
    seen: list[int] = []
    depths: set[int] = set()

    def visit(node: Any, depth: int, is_root: bool) -> None:
        k = len(node.separators)
        assert 1 <= k <= 11 and (is_root or k >= 5)
        if node.children:
            assert len(node.children) == k + 1
            for i, child in enumerate(node.children):
                visit(child, depth + 1, False)
                if i < k:
                    seen.append(node.separators[i])
        else:
            depths.add(depth)
            seen.extend(node.separators)

    visit(root, 0, True)
    assert seen == list(range(n)) and len(depths) == 1


@pytest.mark.parametrize(
    ("page_size", "fixed", "value_len"), [(1024, 0, (0, 900)), (275, 8, (8, 8)), (128, 0, (0, 3000))]
)
def test_written_tree_walks_back_exactly(page_size: int, fixed: int, value_len: tuple[int, int]) -> None:
    rng = random.Random(page_size)
    if fixed:
        keys = sorted({rng.getrandbits(64).to_bytes(8, "big") for _ in range(2_000)})
    else:
        keys = sorted({rng.randbytes(rng.randint(1, 40)) for _ in range(700)})
    values = [rng.randbytes(rng.randint(*value_len)) for _ in keys]
    image = build_btree(keys, values, page_size=page_size, key_fixed_size=fixed)
    bmap = BTreeMap(PhysicalMemory(bytes(image.data) + bytes(page_size), len(image.data) + page_size))
    walk = bmap.walk()
    assert [f.code for f in walk.findings if f.severity == "error"] == []
    assert walk.entry_count == len(keys) and walk.entries_sha256 == digest(
        list(zip(keys, values, strict=True))
    )
    assert bmap.key_layout == ("prefixed" if not fixed else fixed)
    assert bmap.allocator["num_allocated_chunks"] == image.node_count + image.overflow_count


def test_merge_reports_conflicts_and_never_picks_between_salvaged_copies() -> None:
    live = [(b"a", b"1"), (b"b", b"2")]
    salvaged = [(b"a", b"1"), (b"b", b"old"), (b"c", b"3"), (b"d", b"x"), (b"d", b"y")]
    keys, values, n_live, n_salv, conflicts = merge_entries(4, live, salvaged, "live")
    assert list(zip(keys, values, strict=True)) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert (n_live, n_salv) == (2, 1)
    assert {(c.key, c.kept) for c in conflicts} == {(b"b", "live"), (b"d", "none")}
    keys, values, *_ = merge_entries(4, live, salvaged, "salvaged")
    assert dict(zip(keys, values, strict=True))[b"b"] == b"old"


# --- forged incidents -------------------------------------------------------------------------------------


def _message(length: int) -> bytes:
    """A Candid message (``vec nat8``) of exactly ``length`` bytes, as stable_save would write it."""
    n = length - 12
    while True:
        msg = candid_message([VecOf(NAT8)], [bytes(i % 251 for i in range(n))])
        if len(msg) == length:
            return msg
        n += length - len(msg)


def _string_map(rng: random.Random, n: int) -> list[tuple[bytes, bytes]]:
    keys = sorted({f"user-{rng.randrange(10**6):06d}".encode() for _ in range(n)})
    return [(k, rng.randbytes(rng.randint(20, 500))) for k in keys]


def _u64_map(rng: random.Random, n: int) -> list[tuple[bytes, bytes]]:
    keys = sorted({rng.getrandbits(64) for _ in range(n)})
    return [(k.to_bytes(8, "big"), rng.getrandbits(64).to_bytes(8, "big")) for k in keys]


def forge_clobbered(
    bucket_pages: int, cell_id: int, map_id: int, kind: str, cut: int, seed: int
) -> tuple[bytes, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], int]:
    """A healthy manager (Cell first, then the map), then a stable_save message ending ``cut`` bytes into
    the map's memory. Returns (after bytes, old entries, the entries whose leaves the message missed,
    message length)."""
    rng = random.Random(seed)
    entries = _string_map(rng, 400) if kind == "string" else _u64_map(rng, 3_000)
    mm = MemoryManagerImage(bucket_pages)
    mm.place(cell_id, cell(b"DIDL\x00\x01\x71\x05hello"))
    fm = (
        forge_u64_btreemap(
            [int.from_bytes(k, "big") for k, _ in entries], [int.from_bytes(v, "big") for _, v in entries]
        )
        if kind == "u64"
        else forge_btreemap(entries)
    )
    mm.place(map_id, fm)
    healthy = mm.to_bytes()
    map_start = mm.to_physical(map_id, 0)
    length = map_start + cut
    after = bytes(apply_stable_save(healthy, _message(length)))
    # Oracle from the forge's allocation: leaves come first, each followed by its overflow pages;
    # internal nodes come last. A leaf survives iff its chunk header lies past the message.
    leaf_level = fm.levels[-1]
    survivors: list[int] = []
    for (lo, hi), addr in zip(leaf_level.ranges, fm.node_addrs[-1], strict=True):
        if mm.to_physical(map_id, addr - 16) >= length:
            survivors.extend(range(lo, hi))
    for d, level in enumerate(fm.levels[:-1]):
        for seps, addr in zip(level.separators, fm.node_addrs[d], strict=True):
            assert mm.to_physical(map_id, addr - 16) >= length, "the cut must spare the internal nodes"
            survivors.extend(seps)
    return after, entries, [entries[i] for i in sorted(survivors)], length


SHAPES = [
    # bucket pages, cell id, map id, key kind, cut into the map's memory (bytes), seed
    (4, 3, 9, "string", 60, 1),  # only the BTR header and part of the allocator
    (1, 0, 200, "string", 9_000, 2),  # 64 KiB buckets: the map spans several; several leaves lost
    (2, 11, 5, "u64", 3_000, 3),  # fixed-size u64 keys, page size 275
]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"bs{s[0]}-map{s[2]}-{s[3]}" for s in SHAPES])
def test_forged_clobbered_map_header_salvage_check_and_repair(
    shape: tuple[Any, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket_pages, cell_id, map_id, kind, cut, seed = shape
    after, _entries, expected, length = forge_clobbered(*shape)
    path = tmp_path / "after.bin"
    path.write_bytes(after)
    before = sha(path)

    # check names the clobber from the nodes alone.
    assert main(["check", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    clobber = [f for f in report["findings"] if f["code"] == "memory_manager_clobbered"]
    assert clobber and "chunk grid" in clobber[0]["message"]

    # salvage gives back exactly the entries of the leaves (and internal nodes) the message missed.
    assert main(["salvage", str(path), "--memory", str(map_id), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    got = sorted((bytes.fromhex(r["key_hex"]), bytes.fromhex(r["value_hex"])) for r in rows)
    assert got == expected

    # repair: the ids are unknown without help, and nothing is written.
    out = tmp_path / "repaired.bin"
    rc, _, err = run_repair(capsys, str(path), "-o", str(out))
    assert rc == 2 and "--assign" in err and not out.exists()
    key = next(m["key"] for m in report["reconstructed"]["memories"] if not m["id_known"])
    rc, plan, err = run_repair(capsys, str(path), "-o", str(out), "--assign", f"{key}={map_id}")
    assert rc == 0, err
    assert plan is not None and plan["proof"]["ok"]
    assert (plan["maps"][str(map_id)]["count"], plan["maps"][str(map_id)]["entries_sha256"]) == (
        len(expected),
        digest(expected),
    )
    assert sha(path) == before  # the input is never written
    assert_library_reads(out, map_id, expected, "u64u64" if kind == "u64" else "bytesbytes")


def test_forged_reinitialised_map_keeps_live_values_and_grows_into_a_new_bucket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """64 KiB buckets: the old map filled two buckets, the fresh one one; the rebuilt map needs two."""
    rng = random.Random(7)
    old = _string_map(rng, 400)
    mm = MemoryManagerImage(1)
    mm.place(2, cell(b"cell"))
    mm.place(6, forge_btreemap(old))
    assert len(mm.buckets(6)) >= 2
    after = bytes(apply_stable_save(mm.to_bytes(), _message(70_000)))
    changed = {old[200][0]: b"new value", old[300][0]: b"another"}
    new = sorted([(b"zz-new", b"fresh"), *changed.items()])
    mm2 = MemoryManagerImage(1, base=after)
    mm2.place(2, cell(b"x"))
    fresh = mm2.place(6, forge_btreemap(new))
    post = mm2.to_bytes()
    path = tmp_path / "post.bin"
    path.write_bytes(post)
    out = tmp_path / "repaired.bin"
    rc, plan, err = run_repair(capsys, str(path), "-o", str(out))
    assert rc == 0, err
    assert plan is not None and plan["case"] == "reinitialised" and plan["proof"]["ok"]
    restored = plan["maps"]["6"]
    assert restored["live"] == len(new)
    assert {c["key_hex"] for c in plan["conflicts"]} == {k.hex() for k in changed}
    assert all(c["kept"] == "live" for c in plan["conflicts"])
    # The fresh map overwrote old chunks up to its frontier: entries there are gone, the rest come back.
    assert restored["count"] > len(old) - 40
    assert plan["memory_manager"]["num_allocated_buckets"] > 2  # a bucket was added for the rebuilt map
    view = open_snapshot(out)
    try:
        from inspector.analysis.analyze import analyze

        got = {bytes(e.key): bytes(e.value) for e in analyze(view).structure(6).map.iter_entries()}
    finally:
        view.close()
    old_map = dict(old)
    for k, v in got.items():
        assert v == dict(new).get(k, old_map.get(k)), k
    assert fresh.length == len(new)
    assert_library_reads(out, 6, sorted(got.items()))


# --- the real-library fixtures ------------------------------------------------------------------------


def _map_entries(expected: dict[str, Any]) -> dict[bytes, bytes]:
    maps = [s for s in expected["structures"] if s["kind"] == "btreemap"]
    if not maps:
        return {}
    return {bytes.fromhex(e["key_hex"]): bytes.fromhex(e["value_hex"]) for e in maps[0]["entries"]}


def expected_after_repair(name: str) -> tuple[int, list[tuple[bytes, bytes]]]:
    """live ∪ recoverable, live kept, from expected.json only (never from repair's own output)."""
    folder = name.split("/")[0]
    pre = load_expected(f"{folder}/pre_upgrade")
    exp = load_expected(name)
    map_id = next(s["memory_id"] for s in pre["structures"] if s["kind"] == "btreemap")
    old = _map_entries(pre)
    recoverable = {k.encode() for k in exp["old_data"]["salvage"]["recoverable_keys"]}
    merged = {k: v for k, v in old.items() if k in recoverable}
    merged.update(_map_entries(exp))
    return map_id, sorted(merged.items())


CASES = [
    ("migration/after_stable_save", True),
    ("migration/after_stable_save_small", False),
    ("migration/post_upgrade", False),
    ("migration/post_upgrade_small", False),
    ("incident_16page/after_stable_save", True),
    ("incident_16page/post_upgrade", False),
]


@pytest.mark.parametrize(("name", "needs_reference"), CASES, ids=[c[0] for c in CASES])
def test_fixture_repair_is_read_back_by_the_real_library(
    name: str, needs_reference: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_fixtures()
    map_id, expected = expected_after_repair(name)
    src = FIXTURES / name / "stable_memory.bin"
    out = tmp_path / "repaired.bin"
    args = [str(src), "-o", str(out)]
    if needs_reference:
        rc, _, err = run_repair(capsys, *args)
        assert rc == 2 and "--reference" in err and not out.exists()
        args += ["--reference", str(FIXTURES / name.split("/")[0] / "pre_upgrade")]
    rc, plan, err = run_repair(capsys, *args)
    assert rc == 0, err
    assert plan is not None and plan["proof"]["ok"] and plan["proof"]["error_findings"] == []
    assert plan["maps"][str(map_id)]["count"] == len(expected)
    assert plan["maps"][str(map_id)]["entries_sha256"] == digest(expected)
    assert_library_reads(out, map_id, expected)


def test_incident_headless_salvage_returns_exactly_the_recoverable_entries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_fixtures()
    name = "incident_16page/after_stable_save"
    _map_id, expected = expected_after_repair(name)
    assert len(expected) == load_expected(name)["old_data"]["salvage"]["recoverable_entry_count"] == 260
    assert main(["salvage", str(FIXTURES / name), "--memory", "7", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((bytes.fromhex(r["key_hex"]), bytes.fromhex(r["value_hex"])) for r in rows) == expected


def test_incident_check_names_the_clobber_and_a_pure_stable_save_canister_stays_healthy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    require_fixtures()
    assert main(["check", str(FIXTURES / "incident_16page/after_stable_save"), "--json"]) == 1
    codes = {(f["severity"], f["code"]) for f in json.loads(capsys.readouterr().out)["findings"]}
    assert ("error", "memory_manager_clobbered") in codes
    assert main(["check", str(FIXTURES / "stable_save_only"), "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["severity"], f["code"]) for f in findings] == [("info", "stable_save_blob")]


# --- evidence rules, dry run, folders, export -------------------------------------------------------------


def _incident_file(tmp_path: Path) -> Path:
    after, _e, _x, _l = forge_clobbered(4, 3, 9, "string", 60, 1)
    rng = random.Random(3)
    mm2 = MemoryManagerImage(4, base=after)
    mm2.place(3, cell(b"x"))
    mm2.place(9, forge_btreemap(_string_map(rng, 3)))
    path = tmp_path / "post.bin"
    path.write_bytes(mm2.to_bytes())
    return path


def test_dry_run_writes_nothing_and_existing_outputs_need_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _incident_file(tmp_path)
    before = sha(path)
    out = tmp_path / "out.bin"
    rc, plan, _ = run_repair(capsys, str(path), "-o", str(out), "--dry-run")
    assert rc == 0 and plan is not None and not plan["written"] and "proof" not in plan and not out.exists()
    assert plan["written_ranges"] and plan["restored"]
    out.write_bytes(b"keep me")
    rc, _, err = run_repair(capsys, str(path), "-o", str(out))
    assert rc == 2 and "already exists" in err and out.read_bytes() == b"keep me"
    rc, plan, _ = run_repair(capsys, str(path), "-o", str(out), "--force")
    assert rc == 0 and plan is not None and plan["proof"]["ok"]
    rc, _, err = run_repair(capsys, str(path), "-o", str(path), "--force")
    assert rc == 2 and "input" in err
    link = tmp_path / "link.bin"
    link.symlink_to(path)
    rc, _, err = run_repair(capsys, str(path), "-o", str(link), "--force")
    assert rc == 2 and "input" in err
    assert sha(path) == before
    assert not list(tmp_path.glob("*.partial"))


def test_snapshot_folder_gives_a_folder_with_every_file_and_the_new_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "snap"
    src.mkdir()
    shutil.copy(_incident_file(tmp_path), src / "stable_memory.bin")
    (src / "wasm_module.bin").write_bytes(b"\0asm\1\0\0\0")
    (src / "wasm_memory.bin").write_bytes(bytes(16))
    size = (src / "stable_memory.bin").stat().st_size
    (src / "metadata.json").write_text(
        json.dumps({"source": "taken_from_canister", "stable_memory_size": size})
    )
    out = tmp_path / "repaired"
    rc, plan, err = run_repair(capsys, str(src), "-o", str(out))
    assert rc == 0, err
    assert plan is not None and plan["proof"]["ok"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    for name in ("wasm_module.bin", "wasm_memory.bin"):
        assert (out / name).read_bytes() == (src / name).read_bytes()
    meta = json.loads((out / "metadata.json").read_text())
    assert (
        meta["stable_memory_size"] == (out / "stable_memory.bin").stat().st_size == plan["output_size_bytes"]
    )
    assert meta["source"] == "taken_from_canister"
    rc, _, err = run_repair(capsys, str(src), "-o", str(src / "inside"))
    assert rc == 2 and "input" in err


def test_export_stable_save_writes_the_exact_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    after, _e, _x, length = forge_clobbered(4, 3, 9, "string", 60, 1)
    path = tmp_path / "after.bin"
    path.write_bytes(after)
    msg = tmp_path / "message.did.bin"
    rc, _, err = run_repair(
        capsys,
        str(path),
        "-o",
        str(tmp_path / "o.bin"),
        "--assign",
        "?b1=9",
        "--export-stable-save",
        str(msg),
    )
    assert rc == 0, err
    assert msg.read_bytes() == after[:length] and msg.read_bytes()[:4] == b"DIDL"


def test_repair_never_opens_the_input_for_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The audit-hook watcher of test_readonly: no write-open, write-mmap, rename or new file touches the
    input or its folder, for a dry run, a repair, a forced repair and an export."""
    from test_readonly import _WATCH

    src_dir = tmp_path / "in"
    src_dir.mkdir()
    path = src_dir / "post.bin"
    shutil.copy(_incident_file(tmp_path), path)
    after, *_ = forge_clobbered(4, 3, 9, "string", 60, 1)
    clobbered = src_dir / "after.bin"
    clobbered.write_bytes(after)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = (sha(path), sha(clobbered))
    with _WATCH.watching([path, clobbered]):
        for args in (
            [str(path), "-o", str(out_dir / "a.bin"), "--dry-run"],
            [str(path), "-o", str(out_dir / "a.bin")],
            [str(path), "-o", str(out_dir / "a.bin"), "--force"],
            [
                str(clobbered),
                "-o",
                str(out_dir / "b.bin"),
                "--assign",
                "?b1=9",
                "--export-stable-save",
                str(out_dir / "m"),
            ],
        ):
            rc, _plan, err = run_repair(capsys, *args)
            assert rc == 0, err
    assert not _WATCH.violations, _WATCH.violations
    assert (sha(path), sha(clobbered)) == before


def test_base_candidates_solve_the_grid_congruence() -> None:
    """The map-base candidates (page boundaries on the chunk grid) equal a page-by-page search."""
    from inspector.analysis.headless import _base_candidates

    def brute(first: int, cs: int) -> list[int]:
        target, out = first - 100, []
        d = (target // PAGE) * PAGE
        while d >= 0 and len(out) < 64:
            if (target - d) % cs == 0:
                out.append(d)
            d -= PAGE
        return out

    rng = random.Random(12)
    for _ in range(500):
        cs = rng.choice([1040, 291, 225, 1024, 1088, 144, 65_552, 131_088])
        first = rng.randrange(100, 50_000_000)
        assert _base_candidates(first, cs) == brute(first, cs), (first, cs)


def test_two_headless_maps_of_different_page_sizes_are_both_found() -> None:
    """Grids of two steps (page 1024 and 275) in one file: each found, placed and salvaged exactly."""
    from inspector.analysis.headless import (
        OffsetMemory,
        find_node_clusters,
        open_headless_map,
        salvage_headless,
    )
    from inspector.forge.image import content_bytes

    rng = random.Random(5)
    a, b = _string_map(rng, 300), _u64_map(rng, 1_500)
    image_a = bytearray(content_bytes(forge_btreemap(a)))
    image_b = bytearray(
        content_bytes(
            forge_u64_btreemap(
                [int.from_bytes(k, "big") for k, _ in b], [int.from_bytes(v, "big") for _, v in b]
            )
        )
    )
    image_a[:100] = bytes(100)  # both maps lose their BTR + BTA headers
    image_b[:100] = bytes(100)
    base_a, base_b = 3 * PAGE, 3 * PAGE + (len(image_a) // PAGE + 2) * PAGE
    data = bytearray(base_b + len(image_b) + PAGE)
    data[base_a : base_a + len(image_a)] = image_a
    data[base_b : base_b + len(image_b)] = image_b
    phys = PhysicalMemory(bytes(data), len(data))
    clusters = find_node_clusters(phys, None, 0)
    assert [(c.base, c.page_size) for c in clusters] == [(base_a, 1024), (base_b, 275)]
    for cluster, expected in zip(clusters, (a, b), strict=True):
        bmap = open_headless_map(OffsetMemory(phys, cluster.base, cluster.extent), cluster)
        result = salvage_headless(bmap, None, label="x", memory_id="?")
        assert sorted((e.key, e.value) for e in result.entries) == expected
