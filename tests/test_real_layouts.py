"""Layouts of real canisters (issue 11): a MemoryManager at any page-aligned base, nested managers,
0.7.1 reclaim holes, BTreeSets, upgrade state, and "nothing recognised".

Two halves: forged images with their own ids, sizes and offsets (run everywhere), then the real-library
fixtures of the second batch, checked against their expected.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, load_expected, require_fixtures

from inspector.cli import main
from inspector.forge import layouts as fl
from inspector.forge.candid import NAT, TEXT, Record, candid_message
from inspector.forge.image import apply_stable_save

PAGE = 65_536
BUCKET_TABLE_FIRST = 2_080


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def run_json(
    capsys: pytest.CaptureFixture[str], cmd: str, path: Path, *extra: str
) -> tuple[int, dict[str, Any]]:
    code = main([cmd, "--json", *extra, str(path)])
    out = capsys.readouterr().out
    return code, json.loads(out)


def codes(doc: dict[str, Any], severity: str | None = None) -> list[str]:
    return [f["code"] for f in doc["findings"] if severity is None or f["severity"] == severity]


def structures(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {json.dumps(s["memory_id"]): s for s in doc["structures"]}


def small_message() -> bytes:
    return candid_message([Record.of({"name": TEXT, "n": NAT})], [{"name": "app", "n": 7}])


# --- forged: a manager at a base other than 0 ----------------------------------------------------------


@pytest.mark.parametrize("base_pages", [1, 3, 17])
def test_forged_restricted_manager_is_found_at_its_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_pages: int
) -> None:
    manager = fl.sample_manager(3, [4, 9, 11]).to_bytes()
    path = write(tmp_path, "r.bin", fl.restricted_image(manager, base_pages * PAGE, fl.iic_header()))
    code, doc = run_json(capsys, "check", path)
    assert code == 0 and codes(doc, "error") == []
    mm = doc["memory_manager"]
    base = base_pages * PAGE
    assert mm["present"] and mm["base_offset"] == base
    assert mm["buckets_start_offset"] == base + PAGE and mm["bucket_table_offset"] == base + 2080
    got = structures(doc)
    assert {k: v["kind"] for k, v in got.items()} == {"4": "btreemap", "9": "vec", "11": "cell"}
    assert got["4"]["physical_start"] == base + PAGE  # bucket 0 is memory 4's
    app = doc["application_region"]
    assert app["range"] == [0, base] and app["first_bytes_hex"].startswith(b"IIC".hex())
    # The memories read through the shifted buckets give what the manager image holds at base 0.
    plain = write(tmp_path, "plain.bin", manager)
    for mid in ("4", "9", "11"):
        a, b = tmp_path / f"a{mid}", tmp_path / f"b{mid}"
        assert main(["extract", str(path), "--memory", mid, "-o", str(a)]) == 0
        assert main(["extract", str(plain), "--memory", mid, "-o", str(b)]) == 0
        assert a.read_bytes() == b.read_bytes()


def test_forged_restricted_manager_two_gib_in_a_sparse_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manager = fl.sample_manager(2, [0, 1, 2]).to_bytes()
    path = tmp_path / "far.bin"
    fl.write_restricted_sparse(path, manager, 2 << 30, small_message())
    code, doc = run_json(capsys, "check", path)
    assert code == 0 and codes(doc, "error") == []
    assert doc["memory_manager"]["base_offset"] == 2 << 30
    app = doc["application_region"]
    assert app["content"] == "candid" and app["candid"]["length"] == len(small_message())
    assert "app" in app["candid"]["decoded"]
    assert structures(doc)["0"]["header"]["length"] == 300


def test_didl_then_manager_at_one_page_is_an_application_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manager = fl.sample_manager(2, [3, 5]).to_bytes()
    path = write(tmp_path, "didl.bin", fl.restricted_image(manager, PAGE, small_message()))
    code, doc = run_json(capsys, "check", path)
    assert code == 0, codes(doc)
    assert doc["memory_manager"]["base_offset"] == PAGE
    assert "stable_save_blob" not in codes(doc) and "memory_manager_clobbered" not in codes(doc)


def test_didl_over_a_manager_with_a_nested_one_is_still_the_incident(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The inner manager's MGR sits at a bucket start further in; the outer manager's first bucket (its map's
    # BTR) lies before it: the evidence says stable_save clobbered a manager at 0.
    image = bytearray(fl.nested_image(1, 7, 2, [3, 9], 1))
    clobbered = apply_stable_save(image, small_message())
    path = write(tmp_path, "incident.bin", bytes(clobbered))
    code, doc = run_json(capsys, "check", path)
    assert code == 1
    assert {"stable_save_blob", "memory_manager_clobbered"} <= set(codes(doc, "error"))
    assert doc["memory_manager"]["present"] is False


def test_base_option_overrides_and_refuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manager = fl.sample_manager(2, [0, 1]).to_bytes()
    path = write(tmp_path, "r.bin", fl.restricted_image(manager, 2 * PAGE, b"\x01" * 100))
    code, doc = run_json(capsys, "summary", path, "--base", "0x20000")
    assert code == 0 and doc["memory_manager"]["base_offset"] == 2 * PAGE
    assert doc["memory_manager"]["base_found_by"] == "--base"
    assert main(["summary", str(path), "--base", "65536"]) == 2
    assert "no MemoryManager header there" in capsys.readouterr().err
    assert main(["summary", str(path), "--base", "1000"]) == 2
    assert "multiple of 65,536" in capsys.readouterr().err
    assert main(["summary", str(path), "--base", "lots"]) == 2


def test_random_bytes_with_mgr_at_a_page_start_are_not_a_manager(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(fl.noise(4 * PAGE))
    data[2 * PAGE : 2 * PAGE + 4] = b"MGR\x01"  # magic and version, but the rest of the header is noise
    code, doc = run_json(capsys, "check", write(tmp_path, "n.bin", bytes(data)))
    assert code == 1 and codes(doc, "error") == ["no_layout_recognised"]
    assert doc["memory_manager"]["present"] is False


# --- forged: nested managers --------------------------------------------------------------------------


def test_forged_nested_manager_ids_and_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "nested.bin", fl.nested_image(1, 7, 2, [3, 9], 1))
    code, doc = run_json(capsys, "check", path)
    assert code == 0 and codes(doc, "error") == []
    got = structures(doc)
    assert got['"7/3"']["kind"] == "btreemap" and got['"7/9"']["kind"] == "vec"
    assert got["7"]["kind"] == "memory_manager"
    host = next(m for m in doc["memory_manager"]["memories"] if m["id"] == 7)
    inner = host["inner_memory_manager"]
    assert inner["host_memory_id"] == 7 and inner["bucket_size_in_pages"] == 2
    assert [m["id"] for m in inner["memories"]] == [3, 9]
    # Entries and extract take the nested id.
    assert main(["entries", str(path), "--memory", "7/3", "--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 150 and json.loads(lines[0])["key"] == "inner-key-00000"
    out = tmp_path / "inner.bin"
    assert main(["extract", str(path), "--memory", "7/9", "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:3] == b"SVC" and int.from_bytes(data[4:12], "little") == 2_000
    assert main(["entries", str(path), "--memory", "7/300"]) == 2
    assert "out of range" in capsys.readouterr().err


# --- forged: reclaimed buckets ------------------------------------------------------------------------


def test_forged_reclaim_holes_and_order_risk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image, writer_order = fl.reclaim_image((2, 5, 6))
    code, doc = run_json(capsys, "check", write(tmp_path, "reclaim.bin", image))
    assert code == 1
    holes = [f for f in doc["findings"] if f["code"] == "bucket_table_holes"]
    assert holes and holes[0]["severity"] == "warning" and holes[0]["details"]["holes"] == [4]
    assert doc["memory_manager"]["bucket_owners"] == [2, 6, 6, 6, None]
    (risk,) = [f for f in doc["findings"] if f["code"] == "bucket_order_risk"]
    assert risk["severity"] == "error" and risk["memory_id"] == 6
    assert risk["details"]["likely_writer_order"] == writer_order
    assert codes(doc, "error") == ["bucket_order_risk"]  # the kept map A is fine


# --- forged: sets, upgrade state, nothing recognised ---------------------------------------------------


def test_forged_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "sets.bin", fl.set_image(2, 5, 900))
    code, doc = run_json(capsys, "summary", path, "--deep")
    got = structures(doc)
    assert got["2"]["set"] is True and got["2"]["count"] == 900
    assert got["5"]["set"] is True and got["5"]["count"] == 300
    assert main(["entries", str(path), "--memory", "5", "--format", "jsonl", "--limit", "2"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["value"] is None and first["value_hex"] == "" and first["key"] == "tag/0000"


def test_a_map_with_values_is_not_a_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "m.bin", fl.sample_manager(2, [0]).to_bytes())
    _code, doc = run_json(capsys, "summary", path, "--deep")
    assert "set" not in structures(doc)["0"]


@pytest.mark.parametrize("fmt", ["cbor", "candid"])
def test_forged_upgrade_state(tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    payload = fl.cbor_state(list(range(60))) if fmt == "cbor" else small_message()
    path = write(tmp_path, "u.bin", fl.upgrade_state_image(3, 8, payload))
    code, doc = run_json(capsys, "check", path)
    assert code == 0 and codes(doc) == []
    state = structures(doc)["3"]
    assert (state["kind"], state["length"], state["format"]) == ("upgrade_state", len(payload), fmt)
    assert main(["entries", str(path), "--memory", "3", "--format", "jsonl"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    value = json.loads(line)
    assert bytes.fromhex(value["value_hex"]) == payload


def test_forged_upgrade_state_overlong_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = fl.cbor_state(list(range(60)))
    path = write(tmp_path, "u.bin", fl.upgrade_state_image(0, 1, payload, length=5_000_000))
    code, doc = run_json(capsys, "check", path)
    assert code == 1 and codes(doc, "error") == ["upgrade_state_truncated"]


def test_nothing_recognised_empty_and_unsupported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "check", write(tmp_path, "noise.bin", fl.noise(5 * PAGE, seed=11)))
    assert code == 1 and codes(doc) == ["no_layout_recognised"]
    assert "first bytes" in doc["findings"][0]["message"]
    code, doc = run_json(capsys, "check", write(tmp_path, "zero.bin", bytes(3 * PAGE)))
    assert code == 0 and codes(doc) == ["empty_memory"]
    code, doc = run_json(
        capsys, "check", write(tmp_path, "grown.bin", fl.empty_grown_image([(4, 3), (6, 9)]))
    )
    assert code == 0 and codes(doc) == ["empty_memory", "empty_memory"]
    assert sorted(f["memory_id"] for f in doc["findings"]) == [4, 6]
    code, doc = run_json(capsys, "check", write(tmp_path, "v2.bin", fl.unsupported_version_image(2)))
    assert code == 1 and codes(doc) == ["unsupported_version"]
    assert "memory_manager_clobbered" not in codes(doc)


def test_text_views_show_the_new_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manager = fl.sample_manager(2, [0, 1]).to_bytes()
    path = write(tmp_path, "r.bin", fl.restricted_image(manager, 2 * PAGE, fl.iic_header()))
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Application region (not managed by ic-stable-structures)" in out
    assert "MemoryManager at 131,072" in out
    nested = write(tmp_path, "n.bin", fl.nested_image(1, 7, 2, [3, 9], 1))
    assert main(["summary", str(nested)]) == 0
    out = capsys.readouterr().out
    assert "MemoryManager inside memory 7" in out and "memory 7/3" in out
    image, _ = fl.reclaim_image((2, 5, 6))
    from inspector.regions import build_tree
    from inspector.session import load

    session = load(write(tmp_path, "rc.bin", image))
    try:
        tree = build_tree(session.analysis)
        mm = next(r for r in tree.children() if r.kind == "mm_header")
        (table,) = mm.children()
        assert table.name == "bucket table (5 allocated, 1 hole)"
        rows = [r.name for r in table.children()]
        assert rows[4] == "bucket 4 → free (hole left by reclaim_memory)" and rows[1] == "bucket 1 → memory 6"
    finally:
        session.close()
    assert main(["check", str(write(tmp_path, "rc2.bin", image))]) == 1
    assert "bucket_order_risk" in capsys.readouterr().out


# --- real-library fixtures (second batch) -------------------------------------------------------------


def fixture_json(
    capsys: pytest.CaptureFixture[str], name: str, cmd: str = "summary", *extra: str
) -> tuple[int, Any]:
    require_fixtures()
    return run_json(capsys, cmd, FIXTURES / name, *extra)


def _memories_match(tmp_path: Path, path: Path, memories: list[dict[str, Any]], prefix: str = "") -> None:
    for m in memories:
        out = tmp_path / f"m{prefix.replace('/', '_')}{m['id']}.bin"
        assert main(["extract", str(path), "--memory", f"{prefix}{m['id']}", "-o", str(out), "--force"]) == 0
        assert hashlib.sha256(out.read_bytes()).hexdigest() == m["virtual_sha256"], m["id"]
        inner = m.get("inner_memory_manager")
        if inner:
            _memories_match(tmp_path, path, inner["memories"], f"{prefix}{m['id']}/")


def _structures_match(doc: dict[str, Any], expected: dict[str, Any]) -> None:
    got = structures(doc)
    for s in expected["structures"]:
        if s["kind"] == "raw_pattern":
            continue
        mine = got[json.dumps(s["memory_id"])]
        assert mine["kind"] == s["kind"] and mine["physical_start"] == s["physical_start"]
        if s["kind"] == "btreemap":  # other kinds' digests: tests/test_entries_fixtures.py
            assert mine["count"] == s["count"] and mine["entries_sha256"] == s["entries_sha256"], s["name"]


@pytest.mark.parametrize("name", ["restricted_app_header", "restricted_far", "nested_memory_manager"])
def test_fixture_managers_base_buckets_and_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, doc = fixture_json(capsys, name, "check")
    expected = load_expected(name)
    emm, gmm = expected["memory_manager"], doc["memory_manager"]
    assert code == 0 and codes(doc, "error") == []
    assert gmm["base_offset"] == emm.get("base_offset", 0)
    assert gmm["bucket_table_offset"] == emm["bucket_table_offset"]
    assert gmm["buckets_start_offset"] == emm["buckets_start_offset"]
    assert gmm["bucket_owners"] == emm["bucket_owners"]
    gmem = {m["id"]: m for m in gmm["memories"]}
    for m in emm["memories"]:
        assert gmem[m["id"]]["bucket_physical_ranges"] == m["bucket_physical_ranges"]
        inner = m.get("inner_memory_manager")
        if inner:
            ginner = gmem[m["id"]]["inner_memory_manager"]
            assert ginner["bucket_owners"] == inner["bucket_owners"]
            assert ginner["bucket_size_in_pages"] == inner["bucket_size_in_pages"]
            gim = {x["id"]: x for x in ginner["memories"]}
            for im in inner["memories"]:
                assert gim[im["id"]]["bucket_physical_ranges"] == im["bucket_physical_ranges"]
    _memories_match(tmp_path, FIXTURES / name, emm["memories"])
    _code, deep = fixture_json(capsys, name, "summary", "--deep")
    _structures_match(deep, expected)


@pytest.mark.parametrize("name", ["restricted_app_header", "restricted_far"])
def test_fixture_application_region(capsys: pytest.CaptureFixture[str], name: str) -> None:
    _code, doc = fixture_json(capsys, name)
    expected = load_expected(name)["application_region"]
    app = doc["application_region"]
    assert app["range"] == expected["range"]
    assert expected["first_bytes_hex"].startswith(app["first_bytes_hex"][:16])
    if expected.get("content") == "candid":
        assert app["content"] == "candid"
        assert app["candid"]["range"] == expected["candid"]["range"]
        assert app["candid"]["length"] == expected["candid"]["length"]


def test_fixture_reclaim_holes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = fixture_json(capsys, "reclaim_holes_v071", "check")
    expected = load_expected("reclaim_holes_v071")
    emm, rec = expected["memory_manager"], expected["reclaim"]
    assert code == 1
    assert doc["memory_manager"]["bucket_owners"] == emm["bucket_owners"]
    assert doc["memory_manager"]["free_bucket_holes"] == emm["free_bucket_holes"] == rec["holes"]
    (holes,) = [f for f in doc["findings"] if f["code"] == "bucket_table_holes"]
    assert holes["severity"] == "warning" and holes["details"]["holes"] == rec["holes"]
    changed = [m for m in rec["memories"] if m["content_changed_by_reload"]]
    risks = [f for f in doc["findings"] if f["code"] == "bucket_order_risk"]
    assert sorted(f["memory_id"] for f in risks) == sorted(m["memory_id"] for m in changed)
    for f in risks:
        m = next(m for m in changed if m["memory_id"] == f["memory_id"])
        assert f["severity"] == "error"
        assert f["details"]["buckets_in_table_order"] == m["buckets_after_reload"]
        assert f["details"]["likely_writer_order"] == m["buckets_in_writer_session"]
    assert codes(doc, "error") == ["bucket_order_risk"] * len(changed)
    _memories_match(tmp_path, FIXTURES / "reclaim_holes_v071", emm["memories"])
    _code, deep = fixture_json(capsys, "reclaim_holes_v071", "summary", "--deep")
    _structures_match(deep, expected)


@pytest.mark.parametrize("name", ["upgrade_state_writer/cbor", "upgrade_state_writer/candid"])
def test_fixture_upgrade_state(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, doc = fixture_json(capsys, name, "check")
    expected = load_expected(name)
    us = expected["upgrade_state"]
    assert code == 0 and codes(doc) == []
    state = structures(doc)[json.dumps(us["memory_id"])]
    assert (state["kind"], state["length"], state["format"]) == ("upgrade_state", us["length"], us["format"])
    _code, deep = fixture_json(capsys, name, "summary", "--deep")
    _structures_match(deep, expected)
    assert main(["entries", str(FIXTURES / name), "--memory", str(us["memory_id"]), "--format", "jsonl"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    payload = bytes.fromhex(json.loads(line)["value_hex"])
    assert hashlib.sha256(payload).hexdigest() == us["payload_sha256"]


def test_fixture_btreeset(capsys: pytest.CaptureFixture[str]) -> None:
    _code, doc = fixture_json(capsys, "btreeset", "summary", "--deep")
    expected = load_expected("btreeset")
    _structures_match(doc, expected)
    assert all(s["set"] is True for s in doc["structures"])
    mid = str(expected["structures"][1]["memory_id"])
    assert main(["entries", str(FIXTURES / "btreeset"), "--memory", mid, "--format", "jsonl"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == expected["structures"][1]["count"]
    assert all(x["value"] is None and x["value_hex"] == "" for x in lines)


def test_fixture_empty_noise_and_stable_save_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = fixture_json(capsys, "empty_grown", "check")
    expected = load_expected("empty_grown")
    assert code == 0 and set(codes(doc)) == {"empty_memory"}
    assert sorted(f["memory_id"] for f in doc["findings"]) == [
        m["id"] for m in expected["memory_manager"]["memories"]
    ]
    code, doc = fixture_json(capsys, "random_noise", "check")
    assert code == 1 and codes(doc, "error") == ["no_layout_recognised"]
    assert load_expected("random_noise")["first_bytes_hex"].startswith(
        doc["findings"][0]["details"]["first_bytes_hex"][:8]
    )
    code, doc = fixture_json(capsys, "stable_save_only", "check")
    assert code == 0 and codes(doc) == ["stable_save_blob"] and doc["findings"][0]["severity"] == "info"


def test_diff_attributes_bytes_to_application_region_and_inner_memories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manager = fl.sample_manager(2, [0, 1]).to_bytes()
    old = fl.restricted_image(manager, 3 * PAGE, fl.iic_header())
    new = bytearray(old)
    new[10] ^= 0xFF  # inside the application's header
    a, b = write(tmp_path, "a.bin", old), write(tmp_path, "b.bin", bytes(new))
    assert main(["diff", "--json", str(a), str(b)]) == 0
    doc = json.loads(capsys.readouterr().out)
    text = json.dumps(doc["changes"])
    assert "application region" in text and "MemoryManager header" not in text
    nested = fl.nested_image(1, 7, 2, [3, 9], 1)
    changed = bytearray(nested)
    session_path = write(tmp_path, "n.bin", nested)
    from inspector.session import load

    s = load(session_path)
    try:
        vec_start = s.analysis.structure("7/9").mem.to_physical(64)  # the first Vec slot
    finally:
        s.close()
    changed[vec_start] ^= 0x01
    assert main(["diff", "--json", str(session_path), str(write(tmp_path, "n2.bin", bytes(changed)))]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "memory 7/9" in json.dumps(doc["changes"])
    (vec,) = [sd for sd in doc["structures"] if sd["memory_id"] == "7/9"]
    assert vec["changed"] == 1


def test_nesting_depth_is_limited_to_four(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = run_json(capsys, "check", write(tmp_path, "deep4.bin", fl.deeply_nested_image(4, host_id=2)))
    assert code == 0 and codes(doc) == []
    assert structures(doc)['"2/2/2/0"']["kind"] == "cell"
    code, doc = run_json(capsys, "check", write(tmp_path, "deep5.bin", fl.deeply_nested_image(5, host_id=2)))
    assert code == 0 and codes(doc) == ["nesting_too_deep"]
    (f,) = doc["findings"]
    assert f["memory_id"] == "2/2/2/2" and f["severity"] == "warning"
    assert '"2/2/2/2/0"' not in structures(doc)


def test_didl_over_a_manager_whose_first_bucket_hosts_a_nested_one_is_the_incident(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The nested manager's MGR lands exactly at 65,536 (host memory 7 took bucket 0). A short stable_save
    # message leaves the base-0 bucket table (its 0xFF tail) intact: that table says a manager was at 0.
    image = bytearray(fl.nested_image(1, 7, 2, [3, 9], 1))
    image[BUCKET_TABLE_FIRST : BUCKET_TABLE_FIRST + 2] = bytes([7, 1])  # swap: bucket 0 is now memory 7's
    swapped = bytearray(image)
    swapped[PAGE : 2 * PAGE], swapped[2 * PAGE : 3 * PAGE] = (
        image[2 * PAGE : 3 * PAGE],
        image[PAGE : 2 * PAGE],
    )
    assert swapped[PAGE : PAGE + 3] == b"MGR"
    clobbered = apply_stable_save(swapped, small_message())
    code, doc = run_json(capsys, "check", write(tmp_path, "incident0.bin", bytes(clobbered)))
    assert code == 1 and doc["memory_manager"]["present"] is False
    assert "memory_manager_clobbered" in codes(doc, "error")
