"""Field names from .did text, checked against the field ids in real messages."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_candid import candid_structures

from inspector.decode.candid import RECORD, VARIANT, decode_message
from inspector.decode.did import (
    field_names_in_did,
    idl_hash,
    names_from_did,
    tokenize_did,
    type_names_from_did,
)


def test_idl_hash_matches_real_field_ids() -> None:
    structures = candid_structures()
    if not structures:
        import pytest

        pytest.skip("fixtures absent")
    _, cell = next(s for s in structures if s[1]["kind"] == "cell")
    did = cell["value_encoding"]["type_definitions_did"]
    names = names_from_did(did)
    msg = decode_message(bytes.fromhex(cell["value_hex"]))
    wire_ids = {fid for t in msg.table if t.opcode in (RECORD, VARIANT) for fid, _ in t.fields}
    # Every field id the JS encoder wrote is the hash of a name in the .did.
    assert wire_ids <= set(names)
    assert {names[i] for i in wire_ids} >= {"owner", "audit_log", "max_members", "at", "actor", "action"}
    assert idl_hash("name") == 1224700491 and idl_hash("at") == 21747 and idl_hash("") == 0
    assert idl_hash("a") == 97 and idl_hash(b"ab") == 97 * 223 + 98


def test_idl_hash_wraps_at_32_bits() -> None:
    name = "a_rather_long_field_name_that_overflows"
    h = 0
    for b in name.encode():
        h = h * 223 + b
    assert idl_hash(name) == h % 2**32 and idl_hash(name) < 2**32


def test_names_from_did_collects_fields_and_cases_only() -> None:
    did = """
    // line comment: record { ignored : nat }
    /* block /* nested */ still comment: record { hidden : nat } */
    type Pair = record { text; nat };                 // tuple: no names
    type Ids = record { 0 : nat; 0x10 : text };       // numeric ids: no names
    type Shape = variant { Circle : float64; Square; "Odd \\"tag\\"" ; 3 };
    type Deep = record {
      "field with space" : opt record { inner_a : vec variant { deep_tag } };
      plain : blob;
    };
    service : (init_arg : Pair) -> {
      get_shape : (query_id : nat) -> (variant { ok : Shape; err : text }) query;
      "quoted method" : () -> ();
    }
    """
    got = field_names_in_did(did)
    assert got == [
        "Circle",
        "Square",
        'Odd "tag"',
        "field with space",
        "inner_a",
        "deep_tag",
        "plain",
        "ok",
        "err",
    ]
    names = names_from_did(did)
    assert names[idl_hash("field with space")] == "field with space"
    assert idl_hash("ignored") not in names and idl_hash("hidden") not in names
    assert idl_hash("get_shape") not in names and idl_hash("query_id") not in names
    assert 0 not in names and 16 not in names and 3 not in names
    assert type_names_from_did(did) == ["Pair", "Ids", "Shape", "Deep"]


def test_string_escapes_in_names() -> None:
    names = names_from_did(r'type T = record { "\u{e9}t\u{e9}" : nat; "\41\42" : nat; "tab\there" : nat };')
    assert sorted(names.values()) == ["AB", "tab\there", "été"]
    assert names[idl_hash("été".encode())] == "été"


def test_broken_did_text_does_not_crash() -> None:
    for text in [
        "type T = record { a : nat",
        'type T = record { "unterminated',
        "/* unterminated comment",
        "}}}} ))) record { ; ; b : nat } variant",
        "type = = ;",
        "record { c } variant { d } variant { e :",
        '\\u{110000} "\\u{d800}" 0x_ 0x',
    ]:
        names_from_did(text)
        type_names_from_did(text)
    assert set(names_from_did("}}}} ))) record { ; ; b : nat }").values()) == {"b"}
    assert set(names_from_did("record { c } variant { d } variant { e :").values()) == {"d", "e"}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('recordvarint{};:()"\\/* abc0x1u\n')), max_size=80))
def test_any_text_is_accepted(text: str) -> None:
    assert isinstance(names_from_did(text), dict)
    list(tokenize_did(text))
    type_names_from_did(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_unicode_is_accepted(text: str) -> None:
    names_from_did(text)
