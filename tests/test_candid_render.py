"""Candid text rendering, type text, and rendering without Python recursion."""

from __future__ import annotations

import json
import struct
import sys

from conftest import FIXTURES, load_expected, require_fixtures
from test_candid import (
    BOOL,
    FLOAT64,
    INT,
    INT32,
    NAT,
    NAT8,
    NAT64,
    NULL,
    PRINCIPAL,
    RESERVED,
    TEXT,
    didl,
    leb,
    sleb,
    t_opt,
    t_record,
    t_variant,
    t_vec,
    v_principal,
    v_text,
)

from inspector.decode.candid import Limits, decode_message
from inspector.decode.candid_render import (
    message_json,
    message_text,
    message_types,
    to_json,
    to_text,
    type_text,
)
from inspector.decode.did import idl_hash, names_from_did


def test_primitive_text_forms() -> None:
    values = (
        b"\x01"
        + leb(1_234_567)
        + sleb(5)
        + sleb(-5)
        + struct.pack("<Q", 2**64 - 1)
        + struct.pack("<i", -13)
        + struct.pack("<d", 1.5)
        + v_text('a"b\\c\n\u202e')
        + v_principal(b"\x04")
    )
    args = [BOOL, NAT, INT, INT, NAT64, INT32, FLOAT64, TEXT, PRINCIPAL, NULL, RESERVED]
    msg = decode_message(didl([], args, values))
    parts = [to_text(a) for a in msg.args]
    assert parts == [
        "true",
        "1_234_567",
        "+5",
        "-5",
        "18_446_744_073_709_551_615 : nat64",
        "-13 : int32",
        "1.5 : float64",
        '"a\\"b\\\\c\\n\\u{202e}"',
        'principal "2vxsx-fae"',
        "null",
        "null : reserved",
    ]


def test_composite_text_forms_with_names() -> None:
    did = 'type R = record { name : text; role : variant { Admin; Guest : nat }; "with space" : nat };'
    names = names_from_did(did)
    ids = {n: idl_hash(n) for n in ("name", "role", "Admin", "Guest", "with space")}
    assert set(names) == set(ids.values())
    # Wire order is ascending id: "with space" (67622700) < name < role; Guest < Admin.
    table = [
        t_record([(ids["with space"], NAT), (ids["name"], TEXT), (ids["role"], 1)]),
        t_variant([(ids["Guest"], NAT), (ids["Admin"], NULL)]),
        t_opt(NAT8),
        t_vec(NAT8),
        t_record([(0, NAT), (1, TEXT)]),
    ]
    values = leb(3) + v_text("x") + leb(1)  # record: 3, "x", variant case 1 (Admin)
    values += b"\x01\x07" + leb(5) + b"\x01\x02ab\\" + leb(3) + v_text("t")
    msg = decode_message(didl(table, [0, 2, 3, 4], values))
    rec = 'record { "with space" = 3; name = "x"; role = variant { Admin } }'
    assert to_text(msg.args[0], names) == rec
    unnamed = 'record { 67622700 = 3; 1224700491 = "x"; 1269754742 = variant { 2943884399 } }'
    assert to_text(msg.args[0]) == unnamed
    assert to_text(msg.args[1]) == "opt 7 : nat8"
    assert to_text(msg.args[2]) == 'blob "\\01\\02ab\\5c"'
    assert to_text(msg.args[2], max_vec_items=2) == 'blob "\\01\\02"… /* 5 bytes */'
    assert to_text(msg.args[3]) == 'record { 3; "t" }'
    assert (
        message_text(msg, names, width=200)
        == f'({rec}, opt 7 : nat8, blob "\\01\\02ab\\5c", record {{ 3; "t" }})'
    )
    assert message_json(msg, names) == [
        {"with space": "3", "name": "x", "role": {"Admin": None}},
        [7],
        [1, 2, 97, 98, 92],
        ["3", "t"],
    ]
    assert message_json(msg)[0] == {
        "_67622700_": "3",
        "_1224700491_": "x",
        "_1269754742_": {"_2943884399_": None},
    }


def test_vectors_and_abbreviation() -> None:
    msg = decode_message(didl([t_vec(TEXT)], [0], leb(30) + b"".join(v_text(f"item{i}") for i in range(30))))
    full = to_text(msg.args[0])
    assert full.startswith('vec {\n  "item0";\n  "item1";') and full.endswith('\n  "item29";\n}')
    short = to_text(msg.args[0], max_vec_items=2)
    assert short == 'vec { "item0"; "item1"; /* 28 more */ }'
    long_text = decode_message(didl([], [TEXT], v_text("y" * 500)))
    assert to_text(long_text.args[0], max_text_len=3) == '"yyy"… /* 500 chars */'


def test_fixture_text_layout_and_names() -> None:
    exp = load_expected("cell_and_map")
    cell = next(s for s in exp["structures"] if s["kind"] == "cell")
    names = names_from_did(cell["value_encoding"]["type_definitions_did"])
    msg = decode_message(bytes.fromhex(cell["value_hex"]))
    text = message_text(msg, names, width=80)
    assert text.startswith("(\n  record {\n    owner = opt principal")
    assert '    name = "Guild of Builders";' in text
    assert "    next_member_id = 24_073 : nat64;" in text
    assert "        at = 1_672_531_791_000_000_000 : nat64;" in text
    for line in text.splitlines():
        assert len(line) <= 80 or 'principal "' in line
    assert (
        message_types(msg, names).splitlines()[1]
        == "type table1 = record { at : nat64; action : text; actor : text };"
    )
    assert type_text(msg.table[5], names).startswith(
        "record { owner : table0; name : text; audit_log : table2;"
    )
    assert type_text(msg.table[4]) == "vec principal"


def test_big_message_renders_quickly_abbreviated() -> None:
    require_fixtures()
    mem = (FIXTURES / "migration" / "after_stable_save" / "stable_memory.bin").read_bytes()
    exp = load_expected("migration/after_stable_save")
    names = names_from_did(exp["stable_save"]["type_definitions_did"])
    msg = decode_message(mem)
    text = message_text(msg, names, max_vec_items=3)
    assert "/* 8_497 more */" in text and "/* 37 more */" in text
    assert len(text.splitlines()) < 60
    assert len(json.dumps(message_json(msg, names))) > 300_000


def test_rendering_needs_no_python_recursion() -> None:
    # Decode at the default depth limit, then render with the interpreter's recursion limit squeezed to
    # just above the current stack: a recursive renderer would fail here.
    table = [t_opt(1), t_record([(0, NAT), (1, 0)])]
    msg = decode_message(didl(table, [0], b"\x01\x05" * 127 + b"\x00"), limits=Limits())
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 120)
    try:
        value = to_json(msg.args[0])
        text = to_text(msg.args[0])
        compact = message_text(msg, width=10_000)
    finally:
        sys.setrecursionlimit(old)
    assert text.count("record {") == 127 and compact.count("record {") == 127
    n = 0
    while value:
        n += 1
        assert value[0][0] == "5"
        value = value[0][1]
    assert n == 127
