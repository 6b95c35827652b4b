"""Type expressions (grammar, bounds), auto-detection, and the quick_start length-prefixed blob detector."""

from __future__ import annotations

import json
import random
import sys
import types
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.decode.candid import CandidError
from inspector.decode.valuetypes import (
    COMMON_TYPES,
    BlobType,
    CandidType,
    CborType,
    LengthPrefixed,
    OptType,
    PrincipalType,
    RawType,
    TextType,
    TupleType,
    TypeExpr,
    TypeSyntaxError,
    UIntType,
    UnitType,
    detect_length_prefixed,
    guess_type,
    parse_type,
)
from tests.conftest import require_fixtures

PAGE = 65536
QUICKSTART_CBOR = bytes.fromhex("a1") + b"\x70data_on_the_heap" + bytes.fromhex("83010203")
CANDID_42 = bytes.fromhex("4449444c0001782a00000000000000")  # stable_save((42u64,)) per FORMAT.md §8.3


# --- grammar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "max_size", "fixed"),
    [
        ("u8", "u8", 1, True),
        ("U16", "u16", 2, True),
        ("u32", "u32", 4, True),
        ("u64", "u64", 8, True),
        ("u128", "u128", 16, True),
        ("f32", "f32", 4, True),
        ("f64", "f64", 8, True),
        ("bool", "bool", 1, True),
        ("text", "text", None, False),
        ("String", "text", None, False),
        ("str", "text", None, False),
        ("text<64>", "text<64>", 64, False),
        ("blob", "blob", None, False),
        ("Vec<u8>", "blob", None, False),
        ("Blob<32>", "blob<32>", 32, False),
        ("bytes<32>", "bytes<32>", 32, True),
        ("[u8; 32]", "bytes<32>", 32, True),
        ("[u8;0]", "bytes<0>", 0, True),
        ("Principal", "principal", 29, False),
        ("unit", "unit", 0, False),  # upstream keeps () non-fixed for backward compatibility
        ("()", "unit", 0, False),
        ("candid", "candid", None, False),
        ("candid<100>", "candid<100>", 100, False),
        ("cbor", "cbor", None, False),
        ("raw", "raw", None, False),
        ("raw<7>", "raw<7>", 7, False),
        ("Option<u64>", "opt<u64>", 9, True),
        ("opt<text>", "opt<text>", None, False),
        ("Reverse<u64>", "u64", 8, True),
        ("(u64, u64)", "tuple<u64,u64>", 16, True),
        ("tuple<u32,u64>", "tuple<u32,u64>", 12, True),
        ("(Blob<10>, u8)", "tuple<blob<10>,u8>", 12, False),
        ("tuple<blob<300>,blob<10>>", "tuple<blob<300>,blob<10>>", 313, False),
        ("(u32, String, u64)", "tuple<u32,text,u64>", None, False),
        ("(u32, Blob<10>, u64)", "tuple<u32,blob<10>,u64>", 4 + 10 + 8 + 2, False),
        ("(u8, u16, u32)", "tuple<u8,u16,u32>", 7, True),
        ("  opt < tuple < u8 , principal > >  ", "opt<tuple<u8,principal>>", 1 + 29 + 1 + 1, False),
    ],
)
def test_parse_canonical_and_bounds(text: str, canonical: str, max_size: int | None, fixed: bool) -> None:
    t = parse_type(text)
    assert str(t) == canonical
    assert (t.max_size, t.is_fixed_size) == (max_size, fixed)
    assert parse_type(canonical) == t
    assert hash(parse_type(canonical)) == hash(t)


def test_parsed_objects_are_frozen() -> None:
    t = parse_type("u64")
    with pytest.raises(AttributeError):
        t.width = 4  # type: ignore[misc]


def test_common_types_all_parse() -> None:
    assert [str(parse_type(t)) for t in COMMON_TYPES] == list(COMMON_TYPES)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("u7", "unknown type"),
        ("i64", "unknown type"),
        ("u64<8>", "no parameters"),
        ("text<a>", "unknown type 'a'"),
        ("text<1,2>", "size parameter"),
        ("bytes", "needs a size"),
        ("bytes<u8>", "needs a size"),
        ("Vec<u16>", "only Vec<u8>"),
        ("opt", "one type parameter"),
        ("opt<3>", "one type parameter"),
        ("tuple<u8>", "2 or 3"),
        ("tuple<u8,u8,u8,u8>", "2 or 3"),
        ("(u8)", "2 or 3"),
        ("(u8, u8, u8, u8)", "2 or 3"),
        ("tuple<u64,text>", "bounded members"),
        ("(String, u64)", "bounded members"),
        ("[u16; 3]", r"only \[u8; N\]"),
        ("[u8, 3]", "expected ';'"),
        ("[u8; x]", "array length"),
        ("u64 u64", "after the type"),
        ("opt<u64", "expected '>'"),
        ("u8$", "unexpected character"),
        ("blob<99999999999>", "outside u32"),
        ("opt<bytes<4294967295>>", "outside u32"),
        ("<u8>", "type name"),
    ],
)
def test_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(TypeSyntaxError, match=needle):
        parse_type(text)


def test_parse_limits() -> None:
    with pytest.raises(TypeSyntaxError, match="nested deeper"):
        parse_type("opt<" * 40 + "u8" + ">" * 40)
    with pytest.raises(TypeSyntaxError, match="longer than"):
        parse_type("u8" + " " * 2000)
    assert str(parse_type("opt<" * 20 + "u8" + ">" * 20)) == "opt<" * 20 + "u8" + ">" * 20


def test_error_position() -> None:
    with pytest.raises(TypeSyntaxError) as info:
        parse_type("tuple<u8, q>")
    assert info.value.position == 10


_LEAVES = [
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
    "f32",
    "f64",
    "bool",
    "text",
    "text<5>",
    "blob",
    "blob<9>",
    "bytes<3>",
    "principal",
    "unit",
    "candid",
    "cbor<30>",
    "raw",
]


def _combine(children: st.SearchStrategy[TypeExpr]) -> st.SearchStrategy[TypeExpr]:
    bounded = children.filter(lambda t: t.max_size is not None)
    return st.one_of(
        children.map(OptType),
        st.tuples(bounded, bounded).map(TupleType),
        st.tuples(children, children, children).map(TupleType),
    )


_type_exprs = st.recursive(st.sampled_from(_LEAVES).map(parse_type), _combine, max_leaves=8)


@settings(max_examples=300)
@given(_type_exprs)
def test_canonical_form_round_trips(t: TypeExpr) -> None:
    assert parse_type(str(t)) == t
    assert parse_type(str(t).upper()) == t


@given(st.text(max_size=60))
def test_parse_fuzz_only_type_syntax_errors(text: str) -> None:
    try:
        parse_type(text)
    except TypeSyntaxError:
        pass


@settings(max_examples=200)
@given(st.lists(st.sampled_from(["opt", "<", ">", ",", "(", ")", "u8", "text", "tuple", "[", "]", ";", "3"])))
def test_parse_fuzz_tokens(tokens: list[str]) -> None:
    try:
        parse_type(" ".join(tokens))
    except TypeSyntaxError:
        pass


# --- auto-detection --------------------------------------------------------------------------------


def test_guess_from_real_maps() -> None:
    fixtures = require_fixtures()
    members = json.loads((fixtures / "cell_and_map" / "expected.json").read_text())["structures"][1]
    keys = [bytes.fromhex(e["key_hex"]) for e in members["entries"][:8]]
    values = [bytes.fromhex(e["value_hex"]) for e in members["entries"][:8]]
    assert guess_type(keys, "key") == TextType()
    assert guess_type(values, "value") == CandidType()

    many = json.loads((fixtures / "btree_u64_many" / "expected.json").read_text())["structures"][0]
    entries = many["first_entries"] + many["last_entries"]
    assert guess_type([bytes.fromhex(e["key_hex"]) for e in entries], "key") == UIntType(8)
    assert guess_type([bytes.fromhex(e["value_hex"]) for e in entries], "value") == UIntType(8)

    v1 = json.loads((fixtures / "btree_v1" / "expected.json").read_text())["structures"][0]
    assert guess_type([bytes.fromhex(e["key_hex"]) for e in v1["entries"][:10]], "key") == TextType()
    assert guess_type([bytes.fromhex(e["value_hex"]) for e in v1["entries"][:10]], "value") == BlobType()


@pytest.mark.parametrize(
    ("samples", "role", "expected"),
    [
        ([], "value", RawType()),
        ([b"", b""], "value", UnitType()),
        ([b""], "key", BlobType()),
        ([CANDID_42, b"DIDL\x00\x00"], "value", CandidType()),
        ([(7).to_bytes(8, "big"), (2**40).to_bytes(8, "big")], "key", UIntType(8)),
        ([(7).to_bytes(16, "big")], "key", UIntType(16)),
        ([(7).to_bytes(4, "big"), b"\x00\x00\x01\x00"], "value", UIntType(4)),
        ([b"acctname", b"otherkey"], "key", TextType()),  # 8 printable bytes: text, not u64
        ([b"hello", b"", "\u6c34\n".encode()], "value", TextType()),
        ([bytes(8) + b"\x01\x01", bytes.fromhex("00000000000000020101")], "key", PrincipalType()),
        ([bytes(range(28)) + b"\x02"], "key", PrincipalType()),
        ([QUICKSTART_CBOR, bytes.fromhex("83010203")], "value", CborType()),
        ([bytes.fromhex("83010203"), b"\x00"], "value", BlobType()),  # a bare 00 is not evidence
        ([b"\x01"], "value", BlobType()),
        ([b"\xff\xfe\x00"], "value", BlobType()),
        ([(7).to_bytes(8, "big"), (7).to_bytes(4, "big")], "key", BlobType()),
    ],
)
def test_guess_rules(samples: list[bytes], role: Any, expected: TypeExpr) -> None:
    assert guess_type(samples, role) == expected


def test_guess_rejects_unknown_role() -> None:
    with pytest.raises(ValueError):
        guess_type([b"x"], "neither")  # type: ignore[arg-type]


@given(st.lists(st.binary(max_size=40), max_size=6), st.sampled_from(["key", "value"]))
def test_guess_fuzz(samples: list[bytes], role: Any) -> None:
    guessed = guess_type(samples, role)
    for s in samples:
        guessed.decode(s)  # whatever was guessed decodes without raising


# --- Candid path -----------------------------------------------------------------------------------


def test_candid_type_with_the_real_decoder() -> None:
    result = CandidType().decode(CANDID_42)
    assert result.ok, result.error
    assert "42" in json.dumps(result.value) and "42" in result.text
    assert "\n" not in result.text

    trailing = CandidType().decode(CANDID_42 + b"\x00\x00")
    assert not trailing.ok and "2 trailing bytes" in (trailing.error or "")
    assert trailing.value == result.value

    broken = CandidType().decode(b"DIDL\x05")
    assert not broken.ok and broken.value is None


def test_candid_value_of_real_fixture_matches_official_js() -> None:
    members = json.loads((require_fixtures() / "cell_and_map" / "expected.json").read_text())["structures"][1]
    entry = members["entries"][0]
    result = CandidType().decode(bytes.fromhex(entry["value_hex"]))
    assert result.ok, result.error
    assert isinstance(result.value, dict)  # one-argument message unwrapped
    assert "\n" not in result.text and len(result.text) <= 400
    decoded = members["value_encoding"]["decoded_by_official_js"]["decoded"]
    official = dict(decoded)[entry["key_utf8"]]
    assert official["name"] in result.text


class _FakeMessage:
    def __init__(self, end: int) -> None:
        self.end = end

    def to_json(self, names: Any) -> list[Any]:
        return [{"names": names}]

    def to_text(self, names: Any) -> str:  # no layout options: exercises the fallback
        return "(\n  record { x = \x1b[2J },\n)"


def _fake_candid(monkeypatch: pytest.MonkeyPatch, decode: Any) -> None:
    """Stand-ins for the decoder and its renderer: all that valuetypes may rely on of them."""
    module = types.ModuleType("inspector.decode.candid")
    module.decode_message = decode  # type: ignore[attr-defined]
    module.CandidError = CandidError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inspector.decode.candid", module)
    render = types.ModuleType("inspector.decode.candid_render")
    render.message_json = lambda msg, names=None: msg.to_json(names)  # type: ignore[attr-defined]
    render.message_text = lambda msg, names=None, **options: msg.to_text(names, **options)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inspector.decode.candid_render", render)


def test_candid_integration_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_candid(monkeypatch, lambda data: _FakeMessage(len(data) - 1))
    result = parse_type("candid").decode(b"DIDLxy", names={1: "a"})
    assert result.value == {"names": {1: "a"}}
    assert result.text == "( record { x = \\x1b[2J }, )"
    assert not result.ok and result.error == "1 trailing bytes after the Candid message"

    def refuse(data: bytes) -> Any:
        raise CandidError("type table truncated", 5)

    _fake_candid(monkeypatch, refuse)
    failed = parse_type("opt<candid>").decode(b"DIDL\x01")
    assert not failed.ok and "type table truncated" in (failed.error or "")

    def explode(data: bytes) -> Any:
        raise RuntimeError("decoder bug")

    _fake_candid(monkeypatch, explode)  # a bug is not bad bytes: it propagates (issue 15 item 7)
    with pytest.raises(RuntimeError, match="decoder bug"):
        parse_type("opt<candid>").decode(b"DIDL\x01")


# --- length-prefixed (quick_start) detector --------------------------------------------------------


def _with_prefix(payload: bytes, total: int = 4096) -> bytes:
    return (len(payload).to_bytes(4, "little") + payload).ljust(total, b"\0")


def test_quickstart_fixture_upgrades_memory() -> None:
    image = (require_fixtures() / "standalone" / "v0.6.0" / "mm_quickstart.bin").read_bytes()
    assert image[:3] == b"MGR" and int.from_bytes(image[6:8], "little") == 128
    bucket = lambda b: PAGE + b * 128 * PAGE  # noqa: E731
    memory0 = image[bucket(1) : bucket(1) + PAGE]  # memory 0 = bucket 1, 1 page
    found = detect_length_prefixed(memory0[:4096], PAGE)
    assert found is not None
    assert (found.length, found.end, found.kind, found.verified) == (300, 304, "unknown", False)
    assert "neither CBOR nor Candid" in found.reason
    payload = memory0[4:304]
    assert payload == bytes(x % 251 for x in range(300))
    decoded = found.decode(payload)
    assert decoded.ok and decoded.value == payload.hex()
    assert not found.decode(payload[:-1]).ok
    # Memory 1 holds the BTreeMap: not a length prefix.
    assert detect_length_prefixed(image[bucket(0) : bucket(0) + 4096], PAGE) is None
    # The whole image starts with the MemoryManager header.
    assert detect_length_prefixed(image[:4096], len(image)) is None


def test_stale_upgrades_blob_after_mm_reinit() -> None:
    image = (require_fixtures() / "standalone" / "v0.6.0" / "corrupt_mm_reinit_after_didl.bin").read_bytes()
    start = PAGE + 128 * PAGE
    found = detect_length_prefixed(image[start : start + 4096], PAGE)
    assert found is not None and found.length == 300 and found.kind == "unknown"


def test_didl_over_mm_is_not_length_prefixed() -> None:
    image = (require_fixtures() / "standalone" / "v0.6.0" / "corrupt_didl_over_mm.bin").read_bytes()
    assert image[:4] == b"DIDL"
    assert detect_length_prefixed(image[:4096], len(image)) is None


def test_cbor_payload_is_verified() -> None:
    found = detect_length_prefixed(_with_prefix(QUICKSTART_CBOR), 8 * 1024 * 1024)
    assert found == LengthPrefixed(len(QUICKSTART_CBOR), "cbor", True, found.reason if found else "")
    assert found is not None and found.type_expr == CborType()
    assert found.decode(QUICKSTART_CBOR).value == {"data_on_the_heap": [1, 2, 3]}


def test_cbor_payload_longer_than_head() -> None:
    items = b"".join(bytes([0x18, i % 256]) if i % 256 >= 24 else bytes([i % 24]) for i in range(5000))
    payload = b"\xa1\x70data_on_the_heap\x59" + len(items).to_bytes(2, "big") + items
    head = _with_prefix(payload, 20000)[:1024]
    found = detect_length_prefixed(head, PAGE)
    assert found is not None and (found.kind, found.verified, found.length) == ("cbor", False, len(payload))
    assert found.decode(payload).ok
    # A CBOR prefix that claims more bytes than L cannot be this payload.
    lying = (100).to_bytes(4, "little") + b"\x5a" + (5000).to_bytes(4, "big")
    assert detect_length_prefixed(lying.ljust(64, b"\x07"), PAGE) is None


def test_candid_payload() -> None:
    found = detect_length_prefixed(_with_prefix(CANDID_42), PAGE)
    assert found is not None and found.kind == "candid" and found.length == len(CANDID_42)
    assert found.type_expr == CandidType()


def test_candid_payload_is_verified_with_the_real_decoder() -> None:
    found = detect_length_prefixed(_with_prefix(CANDID_42), PAGE)
    assert found is not None and found.verified
    assert found.decode(CANDID_42).ok
    # DIDL that does not parse to exactly L bytes: only the zero-tail rule can still claim it.
    wrong = detect_length_prefixed(_with_prefix(CANDID_42 + b"\x01"), PAGE)
    assert wrong is not None and wrong.kind == "unknown" and "DIDL" in wrong.reason
    longer = b"DIDL" + bytes(range(1, 200))
    assert detect_length_prefixed(_with_prefix(longer)[:100], PAGE) is not None  # unverified claim


@pytest.mark.parametrize(
    ("head", "size", "why"),
    [
        (b"", PAGE, "too short"),
        (b"\x05\x00\x00", PAGE, "too short"),
        (bytes(4096), PAGE, "zero length"),
        ((PAGE).to_bytes(4, "little") + b"\x01" * 100, PAGE, "4 + L beyond the memory"),
        ((10).to_bytes(4, "little") + bytes(10) + bytes(100), PAGE, "all-zero payload"),
        ((10).to_bytes(4, "little") + b"\x01" * 10 + b"\x09" + bytes(100), PAGE, "stale byte after payload"),
        ((10).to_bytes(4, "little") + b"\x01" * 10 + bytes(3), PAGE, "too little tail evidence in head"),
        ((10).to_bytes(4, "little") + b"\x01" * 10, 14, "payload fills the memory: no evidence"),
        (b"BTR\x02" + bytes(100), PAGE, "structure magic"),
        (b"SCL\x01" + bytes(100), PAGE, "structure magic"),
        ((3000).to_bytes(4, "little") + b"\x01" * 100, PAGE, "non-CBOR payload longer than head"),
    ],
)
def test_detector_is_conservative(head: bytes, size: int, why: str) -> None:
    assert detect_length_prefixed(head, size) is None, why


def test_tail_evidence_limited_by_memory_end() -> None:
    head = (10).to_bytes(4, "little") + b"\x01" * 10 + bytes(2)
    found = detect_length_prefixed(head, 16)
    assert found is not None and found.kind == "unknown"


def test_random_memories_are_not_claimed() -> None:
    rng = random.Random(20240601)
    for _ in range(2000):
        head = rng.randbytes(4096)
        assert detect_length_prefixed(head, 8 * 1024 * 1024) is None
    for _ in range(2000):
        # Small random lengths make the prefix plausible; the payload still has to prove itself.
        payload = rng.randbytes(rng.randint(1, 200))
        head = len(payload).to_bytes(4, "little") + payload + rng.randbytes(200)
        found = detect_length_prefixed(head, PAGE)
        assert found is None or found.kind == "cbor"


@settings(max_examples=500)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=2**33))
def test_detector_fuzz_never_raises(head: bytes, size: int) -> None:
    found = detect_length_prefixed(head, size)
    if found is not None:
        assert found.length > 0 and found.end <= size
        assert found.kind in ("cbor", "candid", "unknown")
