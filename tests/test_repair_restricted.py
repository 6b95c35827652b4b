"""``repair`` on a MemoryManager at a page-aligned base (``RestrictedMemory``, docs/LAYOUTS.md §1).

The incident images are the forge's base-0 incidents shifted by the base, with an application header in
page 0 (what ``MemoryManager::init(RestrictedMemory::new(mem, S..))`` over the same history writes). So
the base-0 repair is an oracle: the repaired restricted snapshot must be the application's page(s)
untouched followed by exactly the base-0 repair's bytes, and the real library, opened with
``--base-pages S``, must read the forge's expected entries (skipped with a message without
``../shared/tools``).
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_repair import READBACK_VERSIONS, TOOLS, _message, _string_map, digest, forge_clobbered, run_repair

from inspector.analysis.analyze import analyze
from inspector.analysis.verdict import verdict
from inspector.cli import main
from inspector.forge.btree import forge_btreemap
from inspector.forge.image import MemoryManagerImage, apply_stable_save
from inspector.forge.layouts import iic_header, restricted_image
from inspector.forge.structures import cell
from inspector.snapshot import open_snapshot

PAGE = 65_536
BASE_PAGES = (1, 16)


def readback_at(path: Path, base_pages: int, map_id: int, kind: str = "bytesbytes") -> list[dict[str, Any]]:
    tools = [TOOLS / f"readback-{v}" for v in READBACK_VERSIONS]
    if not all(t.is_file() for t in tools):
        pytest.skip(f"readback tools not found in {TOOLS} (../shared/tools): real-library proof skipped")
    cmd = ["--file", str(path), "--base-pages", str(base_pages), "--map", f"{map_id}:{kind}"]
    return [
        json.loads(subprocess.run([str(t), *cmd], capture_output=True, text=True, check=True).stdout)
        for t in tools
    ]


def assert_library_reads_at(
    path: Path, base_pages: int, map_id: int, expected: list[tuple[bytes, bytes]], kind: str = "bytesbytes"
) -> None:
    for report in readback_at(path, base_pages, map_id, kind):
        version = report["library_version"]
        assert report["base_offset"] == base_pages * PAGE and report["mgr_present_before"], version
        assert report["init_changed_bytes"] == 0 and not report["silent_reinit"], version
        m = report["maps"][str(map_id)]
        assert not m["created_new_map"] and "panic" not in m, (version, m)
        assert (m["count"], m["entries_sha256"]) == (len(expected), digest(expected)), version


def shifted(manager: bytes, base_pages: int) -> bytes:
    return restricted_image(manager, base_pages * PAGE, iic_header())


def _map_entries(path: Path, map_id: int) -> dict[bytes, bytes]:
    view = open_snapshot(path)
    try:
        return {bytes(e.key): bytes(e.value) for e in analyze(view).structure(map_id).map.iter_entries()}
    finally:
        view.close()


@pytest.mark.parametrize("base_pages", BASE_PAGES)
def test_reinitialised_restricted_manager_is_repaired_at_its_base(
    base_pages: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A re-init at the base (fresh MGR at B over the old buckets); the old map spilled into a bucket the
    fresh manager does not own, so salvage must follow it there from B too."""
    rng = random.Random(11)
    old = _string_map(rng, 400)
    mm = MemoryManagerImage(2)
    mm.place(3, cell(b"cell"))
    mm.place(9, forge_btreemap(old))
    after = bytes(apply_stable_save(mm.to_bytes(), _message(70_000)))
    new = sorted([(b"zz-new", b"fresh"), (old[200][0], b"new value")])
    mm2 = MemoryManagerImage(2, base=after)
    mm2.place(3, cell(b"x"))
    mm2.place(9, forge_btreemap(new))
    flat, restricted = tmp_path / "flat.bin", tmp_path / "restricted.bin"
    flat.write_bytes(mm2.to_bytes())
    restricted.write_bytes(shifted(mm2.to_bytes(), base_pages))
    base = base_pages * PAGE

    assert main(["check", str(restricted), "--json"]) == 1
    diagnosis = json.loads(capsys.readouterr().out)["diagnosis"]
    assert any(f"of the manager's first page (at {base:,})" in line for line in diagnosis)
    assert (verdict(diagnosis)[1] or "").startswith(
        f"stable-inspect repair {restricted} --dry-run -o rescued.bin"
    )

    rc, plan0, err = run_repair(capsys, str(flat), "-o", str(tmp_path / "flat.out"))
    assert rc == 0, err
    out = tmp_path / "restricted.out"
    rc, plan, err = run_repair(capsys, str(restricted), "-o", str(out))
    assert rc == 0, err
    assert plan is not None and plan0 is not None
    assert plan["case"] == "reinitialised" and plan["proof"]["ok"]
    assert plan["maps"]["9"] == plan0["maps"]["9"] and plan["maps"]["9"]["salvaged"] > 300
    assert all(s >= base for s, _e in plan["written_ranges"]), "nothing below the base is written"
    got = out.read_bytes()
    assert got[:base] == restricted.read_bytes()[:base] and got[base:] == (tmp_path / "flat.out").read_bytes()
    entries = _map_entries(out, 9)
    old_map = dict(old)
    assert all(v == dict(new).get(k, old_map.get(k)) for k, v in entries.items())
    assert_library_reads_at(out, base_pages, 9, sorted(entries.items()))


CLOBBER_SHAPES = [
    # base pages, (bucket pages, cell id, map id, key kind, cut into the map's memory, seed)
    (1, (4, 3, 9, "string", 60, 1)),
    (16, (1, 0, 200, "string", 9_000, 2)),
    (16, (2, 11, 5, "u64", 3_000, 3)),
    (1, (3, 7, 42, "string", 500, 4)),  # 3-page buckets: the base is not on the bucket grid of base 0
]


@pytest.mark.parametrize(
    "base_pages,shape", CLOBBER_SHAPES, ids=[f"base{b}-bs{s[0]}-map{s[2]}" for b, s in CLOBBER_SHAPES]
)
def test_clobbered_restricted_manager_is_found_and_rebuilt_at_its_base(
    base_pages: int, shape: tuple[Any, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Candid message written at the base of a RestrictedMemory manager (the application's header in
    page 0 stays): check names the clobber at the base, repair rebuilds the header there and writes
    nothing before it, and the real library reads the forge's surviving entries."""
    bucket_pages, _cell_id, map_id, kind, _cut, _seed = shape
    after, _entries, expected, length = forge_clobbered(*shape)
    base = base_pages * PAGE
    path = tmp_path / "after.bin"
    path.write_bytes(shifted(after, base_pages))

    assert main(["check", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    clobber = [f for f in report["findings"] if f["code"] == "memory_manager_clobbered"]
    assert len(clobber) == 1 and clobber[0]["details"]["damaged_range"] == [base, base + length]
    assert (
        clobber[0]["physical_ranges"][0] == [base, base + 2_080]
        and "RestrictedMemory" in clobber[0]["message"]
    )
    assert report["reconstructed"]["base_offset"] == base
    assert report["reconstructed"]["bucket_size_in_pages"] == bucket_pages

    key = next(m["key"] for m in report["reconstructed"]["memories"] if not m["id_known"])
    headline, command = verdict(report["diagnosis"])
    assert f"written at offset {base:,}, over a RestrictedMemory's MemoryManager" in headline
    assert command is not None and command.startswith("stable-inspect repair ")
    assert f"--assign '{key}=<MemoryId>'" in command
    out = tmp_path / "repaired.bin"
    rc, plan, err = run_repair(capsys, str(path), "-o", str(out), "--assign", f"{key}={map_id}")
    assert rc == 0, err
    assert plan is not None and plan["case"] == "header_clobbered" and plan["proof"]["ok"]
    assert plan["memory_manager"]["base_offset"] == base
    assert all(s >= base for s, _e in plan["written_ranges"]), "the application's bytes are never written"
    assert out.read_bytes()[:base] == path.read_bytes()[:base]
    assert (plan["maps"][str(map_id)]["count"], plan["maps"][str(map_id)]["entries_sha256"]) == (
        len(expected),
        digest(expected),
    )
    assert_library_reads_at(out, base_pages, map_id, expected, "u64u64" if kind == "u64" else "bytesbytes")


def test_a_candid_message_at_a_page_start_without_a_bucket_grid_is_no_incident(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The restricted-base search needs a manager's trace behind the message, not just ``DIDL`` at a page
    start: an application header, then a Candid message at page 16 and nothing on any bucket grid."""
    image = iic_header() + bytes(16 * PAGE - len(iic_header())) + _message(90_000) + bytes(3 * PAGE)
    path = tmp_path / "app.bin"
    path.write_bytes(image)
    main(["check", str(path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert "memory_manager_clobbered" not in {f["code"] for f in report["findings"]}
    assert not report.get("reconstructed")
