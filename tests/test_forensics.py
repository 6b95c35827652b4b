"""Forensics on the real-library fixtures: stable_save blobs, a clobbered MemoryManager, the reconstructed
layout, orphaned data, the diagnosis, and no false alarms on healthy snapshots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, expected_files, is_healthy, load_expected, require_fixtures

from inspector.analysis.forensics import refresh_diagnosis, report_of, run_forensics
from inspector.session import load, load_did

MIGRATION = "migration"
AFTER = ("migration/after_stable_save", "migration/after_stable_save_small")
POST = ("migration/post_upgrade", "migration/post_upgrade_small")


def analyse(path: Path | str, *, deep: bool = True) -> Any:
    """Load with forensics, walking every structure first (what ``check`` does)."""
    session = load(path, forensics=False)
    analysis = session.analysis
    if deep:
        analysis.deep()
    run_forensics(analysis, deep=deep)
    refresh_diagnosis(analysis)
    return analysis


def codes(analysis: Any, severity: str | None = None) -> list[str]:
    return [f.code for f in analysis.all_findings() if severity is None or f.severity == severity]


def finding(analysis: Any, code: str) -> Any:
    found = [f for f in analysis.all_findings() if f.code == code]
    assert found, f"no {code} finding in {codes(analysis)}"
    return found[0]


def healthy_paths() -> list[str]:
    """Every fixture outside migration/ (plus pre_upgrade), standalone images not named corrupt_*, upstream."""
    if not FIXTURES.is_dir():
        return []
    out = [str(p.parent.relative_to(FIXTURES)) for p in expected_files()]
    out = [p for p in out if is_healthy(p)]
    out += [
        str(p.relative_to(FIXTURES))
        for p in sorted((FIXTURES / "standalone").glob("*/*.bin"))
        if not p.name.startswith("corrupt_")
    ]
    out += [str(p.relative_to(FIXTURES)) for p in sorted((FIXTURES / "upstream").iterdir())]
    return out


@pytest.mark.parametrize("name", healthy_paths())
def test_healthy_snapshots_have_no_error_finding_and_no_diagnosis(name: str) -> None:
    require_fixtures()
    analysis = analyse(FIXTURES / name)
    assert codes(analysis, "error") == []
    if name == "stable_save_only":
        # A canister that keeps its state with stable_save alone: today's info finding and its line stay.
        assert codes(analysis) == ["stable_save_blob"] and len(analysis.diagnosis) == 1
        return
    mine = {"stable_save_blob", "memory_manager_clobbered", "orphaned_data"}
    assert not mine & set(codes(analysis)), codes(analysis)
    assert analysis.diagnosis == []
    assert analysis.reconstructed is None and analysis.stable_save is None


@pytest.mark.parametrize("name", AFTER)
def test_stable_save_blob_has_the_exact_range_and_clobbers_the_manager(name: str) -> None:
    expected = load_expected(name)["stable_save"]
    analysis = analyse(FIXTURES / name)
    blob = finding(analysis, "stable_save_blob")
    assert blob.severity == "error"
    assert [list(r) for r in blob.physical_ranges] == [expected["range"]]
    clobbered = finding(analysis, "memory_manager_clobbered")
    assert clobbered.severity == "error"
    # The header fields as they now read (FORMAT.md §11.1): "DID", version 'L' = 76, then type bytes.
    assert "magic 'DID'" in clobbered.message and "layout version 76" in clobbered.message
    ss = analysis.stable_save
    assert ss is not None and ss.complete and ss.length == expected["length"]
    j = ss.to_json()
    assert j["range"] == expected["range"] and j["first_bytes_ascii"] == expected["first_bytes_ascii"]
    assert j["length_prefix"] is False
    assert any(r.kind == "stable_save" for r in analysis.extras["_unreachable_regions"](analysis))


def test_small_blob_decodes_to_the_official_js_value(tmp_path: Path) -> None:
    """The decoded message equals what @dfinity/candid decoded (field names from the fixture's .did)."""
    expected = load_expected("migration/after_stable_save_small")["stable_save"]
    did = tmp_path / "types.did"
    did.write_text(expected["type_definitions_did"])
    analysis = analyse(FIXTURES / "migration/after_stable_save_small")
    ss = analysis.stable_save
    ss.names = load_did(str(did))
    assert ss.value_json() == [expected["decoded_by_official_js"]["decoded"]]


def test_overwritten_parts_are_named() -> None:
    require_fixtures()
    small = analyse(FIXTURES / "migration/after_stable_save_small").stable_save
    texts = {o.what: o for o in small.overwritten}
    # 307 bytes: header fields and the size slots of memories 0–33 (33 only partly), table intact.
    assert set(texts) == {"mm_header_field", "memory_sizes"}
    sizes = texts["memory_sizes"]
    assert sizes.details["memories"] == [0, 33] and sizes.details["partial_last"] is True
    assert sizes.details["in_use"] == [0, 4]
    big = analyse(FIXTURES / "migration/after_stable_save")
    parts = big.stable_save.overwritten
    table = next(o for o in parts if o.what == "bucket_table")
    assert table.range == (2080, 34848)
    (bucket,) = [o for o in parts if o.what == "bucket"]
    prev = load_expected("migration/after_stable_save")["previous_layout"]["memory_manager"]
    bs = prev["bucket_size_in_bytes"]
    assert bucket.details["bucket"] == 0 and bucket.range == (65_536, 386_837)
    assert "the first 321,301 of its " + f"{bs:,}" in bucket.text


def test_reconstruction_after_a_large_blob_finds_the_map_through_its_bucket() -> None:
    """The table is gone: the bucket size comes from where the BTR header sits; the id is unknown."""
    name = "migration/after_stable_save"
    prev = load_expected(name)["previous_layout"]["memory_manager"]
    analysis = analyse(FIXTURES / name)
    recon = analysis.reconstructed
    assert recon is not None and recon.bucket_size_in_pages == prev["bucket_size_in_pages"]
    assert recon.table.state == "lost"
    maps = [s for s in recon.structures if s.kind == "btreemap"]
    assert len(maps) == 1
    (m,) = maps
    old = next(x for x in prev["memories"] if x["id"] == load_expected(name)["trio"]["entries_memory_id"])
    assert isinstance(m.memory_id, str) and m.memory_id.startswith("?")
    assert m.physical_start == old["bucket_physical_ranges"][0][0]
    assert m.map.walk().entry_count == 200
    j = recon.to_json()
    assert j["reconstructed"] is True and j["memories"][0]["id"] == "?"
    json.dumps(analysis.to_json(), default=str)  # the whole analysis stays JSON-able


def test_reconstruction_after_a_small_blob_keeps_memory_ids_from_the_table() -> None:
    name = "migration/after_stable_save_small"
    prev = load_expected(name)["previous_layout"]["memory_manager"]
    analysis = analyse(FIXTURES / name)
    recon = analysis.reconstructed
    assert recon.table.state == "intact" and recon.num_buckets == prev["num_allocated_buckets"]
    assert recon.bucket_size_in_pages == prev["bucket_size_in_pages"]
    assert {m.id: m.buckets for m in recon.memories} == {m["id"]: m["buckets"] for m in prev["memories"]}
    kinds = {s.memory_id: s.kind for s in recon.structures}
    assert kinds == {0: "cell", 4: "btreemap"}
    assert analysis.structure(4).map.walk().entry_count == 200
    # The reconstructed memories read the same virtual bytes the library read (within the used pages).
    for m in prev["memories"]:
        vm = recon.memory(m["id"]).memory
        start, end = m["physical_ranges_of_used_pages"][0]
        assert vm.physical_ranges(0, end - start) == [(start, end)]


def test_corrupt_didl_over_mm() -> None:
    require_fixtures()
    analysis = analyse(FIXTURES / "standalone/v0.6.0/corrupt_didl_over_mm.bin")
    blob = finding(analysis, "stable_save_blob")
    # DIDL 01 6D 7B 01 00 AC 02 + 300 bytes = 311 bytes, [0, 311) half-open: bytes 0..310 inclusive.
    assert blob.physical_ranges == [(0, 311)]
    assert finding(analysis, "memory_manager_clobbered").severity == "error"
    assert "num_allocated_buckets 27,905" in finding(analysis, "memory_manager_clobbered").message
    recon = analysis.reconstructed
    assert recon.bucket_size_in_pages == 128 and {m.id: m.buckets for m in recon.memories} == {1: [0], 0: [1]}


def test_corrupt_mm_reinit_after_didl() -> None:
    require_fixtures()
    analysis = analyse(FIXTURES / "standalone/v0.6.0/corrupt_mm_reinit_after_didl.bin")
    found = codes(analysis)
    assert "orphaned_data" in found and "physical_size_mismatch" in found
    orphans = [f for f in analysis.all_findings() if f.code == "orphaned_data"]
    kinds = {f.details["kind"] for f in orphans}
    assert kinds == {"unowned_bucket", "unreachable_nodes"}
    bucket = next(f for f in orphans if f.details["kind"] == "unowned_bucket")
    assert bucket.details["bucket"] == 1 and "300-byte" in bucket.message
    nodes = next(f for f in orphans if f.details["kind"] == "unreachable_nodes")
    assert nodes.memory_id == 1 and nodes.details["nodes"] == 19


@pytest.mark.parametrize("version", ["v0.6.0", "v0.7.2"])
def test_corrupt_v1_slot_overflow(version: str) -> None:
    require_fixtures()
    analysis = analyse(FIXTURES / f"standalone/{version}/corrupt_v1_slot_overflow.bin")
    assert "v1_slot_overflow" in codes(analysis, "error")
    assert any("v1_slot_overflow" in line for line in analysis.diagnosis)


@pytest.mark.parametrize("name", POST)
def test_post_upgrade_has_orphaned_old_nodes(name: str) -> None:
    expected = load_expected(name)
    analysis = analyse(FIXTURES / name)
    nodes = [
        f
        for f in analysis.all_findings()
        if f.code == "orphaned_data" and f.details["kind"] == "unreachable_nodes"
    ]
    assert len(nodes) == 1 and nodes[0].severity == "error"
    salvage = expected["old_data"]["salvage"]
    assert nodes[0].details["entries"] == salvage["recoverable_entry_count"]
    assert nodes[0].memory_id == expected["trio"]["entries_memory_id"]
    tail = [
        f for f in analysis.all_findings() if f.code == "orphaned_data" and f.details["kind"] == "page0_tail"
    ]
    # Only the large blob reached past 34,848; the small one is wholly under the fresh header.
    big_blob = expected["stable_save_blob"]["length"] > 34_848
    assert bool(tail) == big_blob
    if tail:
        s, e = tail[0].physical_ranges[0]
        assert 34_848 <= s < e <= 65_536
    assert analysis.stable_save is None and analysis.reconstructed is None


def test_post_upgrade_no_scan_skips_the_orphan_scan() -> None:
    require_fixtures()
    session = load(FIXTURES / "migration/post_upgrade", forensics=False)
    report = run_forensics(session.analysis, scan=False)
    assert not report.scanned and "orphaned_data" not in codes(session.analysis)


def test_diagnosis_after_stable_save_says_what_happened_and_what_to_do() -> None:
    require_fixtures()
    analysis = analyse(FIXTURES / "migration/after_stable_save")
    text = "\n".join(analysis.diagnosis)
    assert analysis.diagnosis[0].startswith("What happened:")
    assert "386,837-byte Candid message" in text
    assert "MemoryManager::init" in text and "fresh, empty" in text
    assert "Intact:" in text and "BTreeMap with 200 entries" in text
    assert "Lost:" in text and "stable-inspect salvage" in text
    todo = next(line for line in analysis.diagnosis if line.startswith("What to do"))
    assert "stable-inspect repair " in todo and "--dry-run -o rescued" in todo


def test_diagnosis_post_upgrade_names_the_reinitialised_manager() -> None:
    require_fixtures()
    analysis = analyse(FIXTURES / "migration/post_upgrade")
    text = "\n".join(analysis.diagnosis)
    assert "re-initialised MemoryManager" in text
    assert "190 entries" in text and "--memory 4" in text
    assert "34,848" in text  # the page-0 tail remains


def test_forensics_runs_once_and_from_analyze() -> None:
    require_fixtures()
    session = load(FIXTURES / "migration/after_stable_save_small")
    analysis = session.analysis
    first = report_of(analysis)
    assert first is not None and first.clobbered
    n = len(analysis.findings)
    assert run_forensics(analysis) is first and len(analysis.findings) == n
