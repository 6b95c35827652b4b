"""Candid decoder against real messages written by the official JS encoder (fixtures), plus wire-level
facts checked with hand-built messages. Hand-built messages use the tiny encoder below (test-only)."""

from __future__ import annotations

import hashlib
import json
import mmap
import struct
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, expected_files, load_expected, require_fixtures

from inspector.decode.candid import (
    CandidError,
    CandidMessage,
    CandidValue,
    Limits,
    PackedVector,
    RepeatedVector,
    decode_message,
    looks_like_candid,
    parse_header,
    principal_to_text,
)
from inspector.decode.candid_render import message_json
from inspector.decode.did import idl_hash, names_from_did
from inspector.forge.candid import leb128, sleb128

# ---------------------------------------------------------------------------------------------------------
# A tiny Candid encoder for building test messages by hand (test-only, deliberately naive); the LEB128
# encoders are the forge's (inspector/forge/candid.py), which its own tests check.
leb = leb128
sleb = sleb128


def didl(table: list[bytes], args: list[int], values: bytes = b"") -> bytes:
    return (
        b"DIDL"
        + leb(len(table))
        + b"".join(table)
        + leb(len(args))
        + b"".join(sleb(a) for a in args)
        + values
    )


def t_opt(ref: int) -> bytes:
    return sleb(-18) + sleb(ref)


def t_vec(ref: int) -> bytes:
    return sleb(-19) + sleb(ref)


def t_record(fields: list[tuple[int, int]]) -> bytes:
    return sleb(-20) + leb(len(fields)) + b"".join(leb(fid) + sleb(ref) for fid, ref in fields)


def t_variant(fields: list[tuple[int, int]]) -> bytes:
    return sleb(-21) + leb(len(fields)) + b"".join(leb(fid) + sleb(ref) for fid, ref in fields)


def v_text(s: str) -> bytes:
    raw = s.encode()
    return leb(len(raw)) + raw


def v_principal(raw: bytes) -> bytes:
    return b"\x01" + leb(len(raw)) + raw


# Primitive opcodes, for readability of hand-built messages.
NULL, BOOL, NAT, INT, NAT8, NAT16, NAT32, NAT64 = -1, -2, -3, -4, -5, -6, -7, -8
INT8, INT16, INT32, INT64, FLOAT32, FLOAT64 = -9, -10, -11, -12, -13, -14
TEXT, RESERVED, EMPTY = -15, -16, -17
PRINCIPAL = -24


# ---------------------------------------------------------------------------------------------------------
# Helpers over decoded trees


def check_offsets(msg: CandidMessage, buf: bytes) -> int:
    """Structural invariants of the byte ranges; returns the number of nodes visited.

    Children lie inside their parent, in order, without overlap; record fields exactly tile their record;
    leaf text nodes re-encode to exactly their bytes; the args tile [values_start, end)."""
    pos = msg.values_start
    for a in msg.args:
        assert a.start == pos
        pos = a.end
    assert pos == msg.end
    seen = 0
    stack: list[CandidValue] = list(msg.args)
    while stack:
        node = stack.pop()
        seen += 1
        assert msg.values_start <= node.start <= node.end <= msg.end
        kind = node.kind
        if kind == "record":
            p = node.start
            for child in node.value:
                assert child.start == p
                p = child.end
                stack.append(child)
            assert p == node.end
        elif kind == "vec":
            items = node.value
            if isinstance(items, RepeatedVector):
                assert items.template.start == items.template.end
                stack.append(items.template)
                continue
            if isinstance(items, PackedVector):
                kids = [items[0], items[len(items) - 1]] if len(items) > 1 else list(items)
            else:
                kids = list(items)
            p = None
            for child in kids:
                if p is not None:
                    assert child.start >= p
                p = child.end
                stack.append(child)
            if kids:
                assert kids[-1].end == node.end
        elif kind == "opt":
            if node.value is None:
                assert node.end == node.start + 1 and buf[node.start] == 0
            else:
                assert buf[node.start] == 1 and node.value.start == node.start + 1
                assert node.value.end == node.end
                stack.append(node.value)
        elif kind == "variant":
            assert node.value.value.end == node.end
            stack.append(node.value.value)
        elif kind == "text":
            # The length prefix may be a non-minimal leb128 (still valid), so compare the payload only.
            raw = node.value.encode()
            assert bytes(buf[node.end - len(raw) : node.end]) == raw and node.end - len(raw) > node.start
        elif kind == "principal":
            raw = node.value.raw
            assert bytes(buf[node.end - len(raw) : node.end]) == raw and buf[node.start] == 1
    return seen


def truncated_equal(actual: Any, summary: Any) -> None:
    """Compare a full JSON value with the fixtures' summary, where long vectors are
    ``{_truncated_vector, length, first, last}``."""
    if isinstance(summary, dict) and summary.get("_truncated_vector"):
        assert isinstance(actual, list)
        assert len(actual) == summary["length"]
        assert actual[: len(summary["first"])] == summary["first"]
        assert actual[len(actual) - len(summary["last"]) :] == summary["last"]
    elif isinstance(summary, dict):
        assert isinstance(actual, dict) and set(actual) == set(summary)
        for k in summary:
            truncated_equal(actual[k], summary[k])
    elif isinstance(summary, list):
        assert isinstance(actual, list) and len(actual) == len(summary)
        for a, s in zip(actual, summary, strict=True):
            truncated_equal(a, s)
    else:
        assert actual == summary


def candid_structures() -> list[tuple[str, dict]]:
    out = []
    for path in expected_files():
        exp = json.loads(path.read_text())
        for st in exp.get("structures", []):
            if (st.get("value_encoding") or {}).get("format") == "candid":
                out.append((f"{exp['fixture']}:{st['name']}", st))
    return out


# ---------------------------------------------------------------------------------------------------------
# Real messages from the fixtures


NO_FIXTURES = [pytest.param("none", {}, marks=pytest.mark.skip(reason="fixtures absent"))]


@pytest.mark.parametrize("label,st", candid_structures() or NO_FIXTURES)
def test_fixture_values_match_official_js_decoder(label: str, st: dict) -> None:
    require_fixtures()
    enc = st["value_encoding"]
    names = names_from_did(enc["type_definitions_did"])
    js = enc["decoded_by_official_js"]
    if st["kind"] == "cell":
        raw = bytes.fromhex(st["value_hex"])
        msg = decode_message(raw)
        assert msg.end == len(raw) == st["value_len"]
        assert message_json(msg, names) == [js["decoded"]]
        check_offsets(msg, raw)
    else:
        assert st["kind"] == "btreemap"
        by_key = {k: v for k, v in js["decoded"]}
        assert len(by_key) == len(st["entries"]) == st["count"]
        for entry in st["entries"]:
            raw = bytes.fromhex(entry["value_hex"])
            msg = decode_message(raw)
            assert msg.end == len(raw) == entry["value_len"]
            [value] = message_json(msg, names)
            assert value == by_key[bytes.fromhex(entry["key_hex"]).decode()]
            check_offsets(msg, raw)


def test_cell_value_decodes_in_place_with_absolute_offsets() -> None:
    exp = load_expected("cell_and_map")
    cell = next(s for s in exp["structures"] if s["kind"] == "cell")
    [[lo, hi]] = cell["value_physical_ranges"]
    blob = (FIXTURES / "cell_and_map" / "stable_memory.bin").read_bytes()
    msg = decode_message(blob, lo, end=hi)
    assert (msg.start, msg.end) == (lo, hi)
    assert check_offsets(msg, blob) == msg.value_count
    names = names_from_did(cell["value_encoding"]["type_definitions_did"])
    assert message_json(msg, names) == [cell["value_encoding"]["decoded_by_official_js"]["decoded"]]
    # The record's "name" field is a text node whose bytes sit right there in the file.
    fields = dict(msg.args[0].fields())
    name_node = fields[1224700491]
    assert blob[name_node.start : name_node.end] == v_text("Guild of Builders")
    # path_at walks down to that node from any byte inside it.
    assert msg.path_at(name_node.start + 3) == [msg.args[0], name_node]
    assert msg.path_at(hi) == [] and msg.path_at(lo) == []  # magic: not part of any value


def test_every_buffer_type_gives_the_same_result(tmp_path: Path) -> None:
    exp = load_expected("cell_and_map")
    cell = next(s for s in exp["structures"] if s["kind"] == "cell")
    [[lo, hi]] = cell["value_physical_ranges"]
    path = FIXTURES / "cell_and_map" / "stable_memory.bin"
    data = path.read_bytes()
    want = message_json(decode_message(data, lo))
    assert message_json(decode_message(bytearray(data), lo)) == want
    assert message_json(decode_message(memoryview(data), lo)) == want
    assert message_json(decode_message(memoryview(data).cast("b"), lo)) == want  # other formats get cast
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        got = decode_message(mm, lo)
        assert got.end == hi and message_json(got) == want
        assert looks_like_candid(mm, lo)
    # The mmap closed cleanly: the decoder kept no exported buffer alive.


@pytest.mark.parametrize("variant,length", [("after_stable_save", 386_837), ("after_stable_save_small", 307)])
def test_stable_save_blob_end_is_found_by_decoding(variant: str, length: int) -> None:
    exp = load_expected(f"migration/{variant}")
    save = exp["stable_save"]
    assert save["range"] == [0, length] and save["length_prefix"] is False
    mem = (FIXTURES / "migration" / variant / "stable_memory.bin").read_bytes()
    msg = decode_message(mem)  # the whole 1 MiB snapshot: the message must find its own end
    assert msg.start == 0 and msg.end == length
    assert hashlib.sha256(mem[: msg.end]).hexdigest() == save["sha256"]
    names = names_from_did(save["type_definitions_did"])
    [value] = message_json(msg, names)
    js = save["decoded_by_official_js"]
    if "decoded" in js:
        assert value == js["decoded"]
    else:
        truncated_equal(value, js["decoded_summary"])
        assert len(value["audit_log"]) == 8500
    assert check_offsets(msg, mem) > 0


def test_large_stable_save_decodes_in_bounded_work() -> None:
    # Work, not wall time (timing belongs in `stable-inspect bench`): one decoded value per Candid value
    # of the message, 8,500 audit events of 3 fields plus the rest.
    require_fixtures()
    mem = (FIXTURES / "migration" / "after_stable_save" / "stable_memory.bin").read_bytes()
    msg = decode_message(mem)
    assert 8_500 * 4 <= msg.value_count < 40_000
    assert msg.args[0].kind == "record" and msg.args[0].type.index == 5


@pytest.mark.parametrize("variant", ["post_upgrade", "post_upgrade_small"])
def test_overwritten_stable_save_blob_is_not_candid(variant: str) -> None:
    exp = load_expected(f"migration/{variant}")
    assert exp["stable_save_blob"]["intact_in_this_snapshot"]["intact"] is False
    mem = (FIXTURES / "migration" / variant / "stable_memory.bin").read_bytes()
    assert mem[:3] == b"MGR"
    with pytest.raises(CandidError, match="DIDL") as err:
        decode_message(mem)
    assert err.value.offset == 0
    assert not looks_like_candid(mem)


def test_stable_save_over_memory_manager_vec_nat8() -> None:
    require_fixtures()
    mem = (FIXTURES / "standalone" / "v0.6.0" / "corrupt_didl_over_mm.bin").read_bytes()
    assert mem[:11] == bytes.fromhex("4449444c016d7b0100ac02")
    msg = decode_message(mem)
    # 4 magic + 3 table + 2 args + 2 length (leb128 300 = AC 02) + 300 bytes. The standalone README's
    # "bytes 0..310" is inclusive: byte 310 is the last blob byte (0x30 + 299 % 7 = 0x35).
    assert msg.end == 311
    [blob] = msg.args
    assert isinstance(blob.value, PackedVector) and len(blob.value) == 300
    assert blob.value.raw == bytes(0x30 + x % 7 for x in range(300))
    assert (blob.start, blob.end) == (9, 311)
    assert blob.value[299].start == 310 and blob.value[299].value == 0x35
    assert message_json(msg) == [[0x30 + x % 7 for x in range(300)]]
    assert looks_like_candid(mem)


def test_truncated_fixture_message_always_raises() -> None:
    exp = load_expected("cell_and_map")
    cell = next(s for s in exp["structures"] if s["kind"] == "cell")
    raw = bytes.fromhex(cell["value_hex"])
    for cut in range(len(raw)):
        with pytest.raises(CandidError) as err:
            decode_message(raw[:cut])
        assert 0 <= err.value.offset <= cut
        with pytest.raises(CandidError):
            decode_message(raw, end=cut)  # same bound through `end` on the full buffer


def test_header_and_looks_like_candid_on_fixture() -> None:
    exp = load_expected("cell_and_map")
    cell = next(s for s in exp["structures"] if s["kind"] == "cell")
    raw = bytes.fromhex(cell["value_hex"])
    header = parse_header(raw)
    msg = decode_message(raw)
    assert header.values_start == msg.values_start
    assert [t.kind for t in header.table] == ["opt", "record", "vec", "record", "vec", "record"]
    assert [t.name for t in header.arg_types] == ["table5"]
    assert looks_like_candid(raw)
    assert not looks_like_candid(raw[:20])  # type table cut short
    assert not looks_like_candid(b"DIDX" + raw[4:])
    assert not looks_like_candid(raw, 1)
    assert not looks_like_candid(b"")


# ---------------------------------------------------------------------------------------------------------
# Wire facts with hand-built messages


def test_format_md_examples() -> None:
    # FORMAT.md §8.3: stable_save((42u64,)) and stable_save((vec![1u8,2,3],)).
    msg = decode_message(bytes.fromhex("4449444c0001782a00000000000000"))
    assert msg.end == 15 and message_json(msg) == ["42"] and msg.args[0].kind == "nat64"
    msg = decode_message(bytes.fromhex("4449444c016d7b010003010203") + b"stale")
    assert msg.end == 13 and message_json(msg) == [[1, 2, 3]]


def test_all_primitives_json() -> None:
    values = (
        b""  # null
        + b"\x01"  # bool
        + leb(2**70)  # nat
        + sleb(-(2**70))  # int
        + b"\xff"  # nat8
        + struct.pack("<H", 65535)
        + struct.pack("<I", 2**32 - 1)
        + struct.pack("<Q", 2**64 - 1)
        + struct.pack("<b", -128)
        + struct.pack("<h", -32768)
        + struct.pack("<i", -(2**31))
        + struct.pack("<q", -(2**63))
        + struct.pack("<f", 1.5)
        + struct.pack("<d", -0.25)
        + v_text("héllo\n")
        + b""  # reserved
        + v_principal(b"")
        + v_principal(b"\x04")
    )
    args = [NULL, BOOL, NAT, INT, NAT8, NAT16, NAT32, NAT64, INT8, INT16, INT32, INT64, FLOAT32, FLOAT64]
    args += [TEXT, RESERVED, PRINCIPAL, PRINCIPAL]
    msg = decode_message(didl([], args, values))
    assert msg.end == len(didl([], args, values))
    assert message_json(msg) == [
        None,
        True,
        str(2**70),
        str(-(2**70)),
        255,
        65535,
        2**32 - 1,
        str(2**64 - 1),
        -128,
        -32768,
        -(2**31),
        str(-(2**63)),
        1.5,
        -0.25,
        "héllo\n",
        None,
        "aaaaa-aa",
        "2vxsx-fae",
    ]
    assert [a.kind for a in msg.args][:4] == ["null", "bool", "nat", "int"]


def test_composites_json_conventions() -> None:
    # 0: opt nat8; 1: vec text; 2: record {0: nat; 1: text} (tuple); 3: record {5: bool; 1000: null};
    # 4: variant {7: null; 9: nat16}; 5: record {} ; 6: vec table5
    table = [
        t_opt(NAT8),
        t_vec(TEXT),
        t_record([(0, NAT), (1, TEXT)]),
        t_record([(5, BOOL), (1000, NULL)]),
        t_variant([(7, NULL), (9, NAT16)]),
        t_record([]),
        t_vec(5),
    ]
    values = (
        b"\x00"
        + b"\x01\x07"
        + leb(2) + v_text("a") + v_text("b")
        + leb(3) + v_text("x")
        + b"\x01"
        + leb(0)
        + leb(1) + struct.pack("<H", 513)
        + b""
        + leb(4)
    )  # fmt: skip
    msg = decode_message(didl(table, [0, 0, 1, 2, 3, 4, 4, 5, 6], values))
    assert message_json(msg, {1000: "nothing"}) == [
        [],
        [7],
        ["a", "b"],
        ["3", "x"],
        {"_5_": True, "nothing": None},
        {"_7_": None},
        {"_9_": 513},
        {},
        [{}, {}, {}, {}],
    ]
    rep = msg.args[8]
    assert isinstance(rep.value, RepeatedVector) and len(rep.value) == 4
    assert rep.value[3].start == rep.value[3].end == rep.end  # zero-sized: all at the vector's end
    assert rep.value[0] is rep.value[3]  # one shared node stands for every element
    # It is a real Sequence: count() and index() are the Sequence methods, not shadowed by attributes.
    assert rep.value.count(rep.value[0]) == 4 and rep.value.index(rep.value[2]) == 0
    assert msg.value_count == 1 + 2 + 3 + 3 + 3 + 2 + 2 + 1 + 2


def test_recursive_list_type_decodes() -> None:
    # type List = opt record { head : nat; tail : List }  (ids: head, tail hashed)
    head, tail = idl_hash("head"), idl_hash("tail")
    table = [t_opt(1), t_record([(head, NAT), (tail, 0)])]
    values = b"".join(b"\x01" + leb(i) for i in range(50)) + b"\x00"
    msg = decode_message(didl(table, [0], values))
    node: Any = message_json(msg, {head: "head", tail: "tail"})[0]
    seen = []
    while node:
        seen.append(int(node[0]["head"]))
        node = node[0]["tail"]
    assert seen == list(range(50))


def test_reserved_future_func_service_values() -> None:
    # 0: future type -30 with 3 type bytes; 1: func () -> () query; 2: service { m : 1 }
    future = sleb(-30) + leb(3) + b"abc"
    func = sleb(-22) + leb(0) + leb(0) + leb(1) + b"\x01"
    service = sleb(-23) + leb(1) + v_text("m") + sleb(1)
    values = leb(2) + leb(0) + b"zz" + b"\x01" + v_principal(b"\x04") + v_text("greet") + v_principal(b"")
    msg = decode_message(didl([future, func, service], [0, 1, 2], values))
    assert msg.end == len(didl([future, func, service], [0, 1, 2], values))
    assert message_json(msg) == [None, ["2vxsx-fae", "greet"], "aaaaa-aa"]
    assert msg.args[0].value.data == b"zz"
    assert [t.kind for t in msg.table] == ["future", "func", "service"]


def test_principal_text() -> None:
    assert principal_to_text(b"") == "aaaaa-aa"
    assert principal_to_text(b"\x04") == "2vxsx-fae"
    # The Internet Identity canister: canister id 7 on subnet range 0x0101.
    assert principal_to_text(bytes.fromhex("00000000000000070101")) == "rdmx6-jaaaa-aaaaa-aaadq-cai"


@pytest.mark.parametrize(
    "message,pattern",
    [
        (didl([], [BOOL], b"\x02"), "bool"),
        (didl([], [TEXT], v_text("ok")[:-1]), "text"),
        (didl([], [TEXT], b"\x02\xff\xfe"), "UTF-8"),
        (didl([], [PRINCIPAL], b"\x00"), "opaque"),
        (didl([], [PRINCIPAL], b"\x01\x1e" + bytes(30)), "longer than 29"),
        (didl([t_opt(NAT)], [0], b"\x02"), "opt flag"),
        (didl([t_variant([(1, NULL)])], [0], b"\x01"), "variant index"),
        (didl([t_record([(2, NAT), (1, NAT)])], [0]), "ascending"),
        (didl([t_record([(2, NAT), (2, NAT)])], [0]), "duplicate"),
        (didl([t_record([(2**32, NAT)])], [0]), "32-bit"),
        (didl([sleb(NAT)], []), "not a composite"),
        (didl([], [-18]), "not a primitive"),
        (didl([t_vec(3)], [0]), "refers to type-table entry 3"),
        (didl([], [1]), "refers to type-table entry 1"),
        (didl([], [EMPTY]), "empty"),
        (didl([t_vec(EMPTY)], [0], leb(1)), "no values"),
        (didl([sleb(-23) + leb(1) + v_text("m") + sleb(NAT)], []), "non-function"),
        (didl([sleb(-22) + leb(0) + leb(0) + leb(1) + b"\x09"], []), "annotation"),
        (b"DIDL" + b"\x80" * 11, "longer than 10 bytes"),
        (b"DIDL\x00\x01" + b"\xff" * 9 + b"\x01", "64 bits"),
        (b"DIDM\x00\x00", "DIDL"),
        (b"DID", "DIDL"),
    ],
)
def test_malformed_messages_raise(message: bytes, pattern: str) -> None:
    with pytest.raises(CandidError, match=pattern) as err:
        decode_message(message)
    assert 0 <= err.value.offset <= len(message)
    assert isinstance(err.value, ValueError)


def test_error_offset_points_at_the_bad_byte() -> None:
    msg = didl([t_vec(BOOL)], [0], leb(3) + b"\x01\x00\x05")
    with pytest.raises(CandidError) as err:
        decode_message(msg)
    assert err.value.offset == len(msg) - 1
    assert "at byte" in str(err.value) and err.value.message.startswith("bool")


def test_offset_and_end_arguments() -> None:
    msg = didl([], [NAT8], b"\x07")
    buf = b"junk" + msg + b"tail"
    got = decode_message(buf, 4)
    assert (got.start, got.values_start, got.end) == (4, 4 + 7, 4 + len(msg))
    assert got.args[0].start == 11 and message_json(got) == [7]
    with pytest.raises(CandidError):
        decode_message(buf, 4, end=4 + len(msg) - 1)
    with pytest.raises(CandidError, match="outside"):
        decode_message(buf, 100)
    with pytest.raises(CandidError, match="outside"):
        decode_message(buf, -1)


def test_limits_are_configurable() -> None:
    msg = didl([t_vec(TEXT)], [0], leb(3) + v_text("a") * 3)
    assert decode_message(msg).value_count == 4
    with pytest.raises(CandidError, match="max_values"):
        decode_message(msg, limits=Limits(max_values=3))
    with pytest.raises(CandidError, match="type table"):
        decode_message(msg, limits=Limits(max_type_table=0))
