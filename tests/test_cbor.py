"""The bounded CBOR decoder: RFC 8949 Appendix A vectors, hostile inputs, fuzzing."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.decode.cbor import (
    MAX_DEPTH,
    CborError,
    CborTruncated,
    decode_cbor,
    decode_cbor_exact,
    is_structured_cbor,
)

# RFC 8949 Appendix A, in this decoder's JSON-able representation.
RFC_VECTORS: list[tuple[str, Any]] = [
    ("00", 0),
    ("01", 1),
    ("0a", 10),
    ("17", 23),
    ("1818", 24),
    ("1819", 25),
    ("1864", 100),
    ("1903e8", 1000),
    ("1a000f4240", 1000000),
    ("1b000000e8d4a51000", 1000000000000),
    ("1b001fffffffffffff", 2**53 - 1),
    ("1b0020000000000000", str(2**53)),  # beyond JavaScript-safe: decimal string
    ("1bffffffffffffffff", "18446744073709551615"),
    ("3bffffffffffffffff", "-18446744073709551616"),
    ("20", -1),
    ("29", -10),
    ("3863", -100),
    ("3903e7", -1000),
    ("f90000", 0.0),
    ("f93c00", 1.0),
    ("fb3ff199999999999a", 1.1),
    ("f93e00", 1.5),
    ("f97bff", 65504.0),
    ("fa47c35000", 100000.0),
    ("fa7f7fffff", 3.4028234663852886e38),
    ("fb7e37e43c8800759c", 1.0e300),
    ("f90001", 5.960464477539063e-8),
    ("f90400", 0.00006103515625),
    ("f9c400", -4.0),
    ("fbc010666666666666", -4.1),
    ("f97c00", {"float": "Infinity"}),
    ("f97e00", {"float": "NaN"}),
    ("f9fc00", {"float": "-Infinity"}),
    ("fa7f800000", {"float": "Infinity"}),
    ("fb7ff8000000000000", {"float": "NaN"}),
    ("f4", False),
    ("f5", True),
    ("f6", None),
    ("f7", {"simple": 23}),
    ("f0", {"simple": 16}),
    ("f8ff", {"simple": 255}),
    ("c074323031332d30332d32315432303a30343a30305a", {"tag": 0, "value": "2013-03-21T20:04:00Z"}),
    ("c11a514b67b0", {"tag": 1, "value": 1363896240}),
    ("c1fb41d452d9ec200000", {"tag": 1, "value": 1363896240.5}),
    ("d74401020304", {"tag": 23, "value": {"bytes": "01020304"}}),
    ("d818456449455446", {"tag": 24, "value": {"bytes": "6449455446"}}),
    (
        "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
        {"tag": 32, "value": "http://www.example.com"},
    ),
    ("40", {"bytes": ""}),
    ("4401020304", {"bytes": "01020304"}),
    ("60", ""),
    ("6161", "a"),
    ("6449455446", "IETF"),
    ("62225c", '"\\'),
    ("62c3bc", "\u00fc"),
    ("63e6b0b4", "\u6c34"),
    ("64f0908591", "\U00010151"),
    ("80", []),
    ("83010203", [1, 2, 3]),
    ("8301820203820405", [1, [2, 3], [4, 5]]),
    ("98190102030405060708090a0b0c0d0e0f101112131415161718181819", list(range(1, 26))),
    ("a0", {}),
    ("a201020304", {"map": [[1, 2], [3, 4]]}),
    ("a26161016162820203", {"a": 1, "b": [2, 3]}),
    ("826161a161626163", ["a", {"b": "c"}]),
    (
        "a56161614161626142616361436164614461656145",
        {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
    ),
    ("5f42010243030405ff", {"bytes": "0102030405"}),
    ("7f657374726561646d696e67ff", "streaming"),
    ("9fff", []),
    ("9f018202039f0405ffff", [1, [2, 3], [4, 5]]),
    ("9f01820203820405ff", [1, [2, 3], [4, 5]]),
    ("83018202039f0405ff", [1, [2, 3], [4, 5]]),
    ("83019f0203ff820405", [1, [2, 3], [4, 5]]),
    ("bf61610161629f0203ffff", {"a": 1, "b": [2, 3]}),
    ("826161bf61626163ff", ["a", {"b": "c"}]),
    ("bf6346756ef563416d7421ff", {"Fun": True, "Amt": -2}),
]


@pytest.mark.parametrize(("hex_input", "expected"), RFC_VECTORS)
def test_rfc8949_appendix_a(hex_input: str, expected: Any) -> None:
    data = bytes.fromhex(hex_input)
    value, end = decode_cbor(data)
    assert end == len(data)
    assert value == expected
    assert type(value) is type(expected)


def test_negative_zero_half_float() -> None:
    value, _ = decode_cbor(bytes.fromhex("f98000"))
    assert value == 0.0 and struct.pack(">d", value)[0] == 0x80


def test_offset_and_end() -> None:
    data = b"\xffjunk" + bytes.fromhex("83010203") + b"tail"
    value, end = decode_cbor(data, 5)
    assert value == [1, 2, 3] and end == 9
    with pytest.raises(CborError):
        decode_cbor(data, 100)
    with pytest.raises(CborError):
        decode_cbor(data, -1)


def test_map_keys_non_text_or_duplicate_use_pair_list() -> None:
    assert decode_cbor_exact(bytes.fromhex("a2616101616102")) == {"map": [["a", 1], ["a", 2]]}
    assert decode_cbor_exact(bytes.fromhex("a1820102f5")) == {"map": [[[1, 2], True]]}


def test_quick_start_shaped_struct() -> None:
    # serde struct { data_on_the_heap: Vec<u8> } as ciborium writes it (FORMAT.md §8.4).
    payload = bytes.fromhex("a1") + b"\x70data_on_the_heap" + bytes.fromhex("83010203")
    assert decode_cbor_exact(payload) == {"data_on_the_heap": [1, 2, 3]}


@pytest.mark.parametrize(
    ("hex_input", "needle"),
    [
        ("", "end of input"),
        ("1a0000", "needs 4 bytes"),
        ("1c", "reserved"),
        ("1d", "reserved"),
        ("fe", "reserved"),
        ("ff", "unexpected break"),
        ("1f", "indefinite"),
        ("3f", "indefinite"),
        ("df00", "indefinite"),
        ("62c328", "UTF-8"),
        ("7f62c328ff", "UTF-8"),
        ("7f61c3ff", "UTF-8"),  # each chunk must be valid on its own
        ("5f5f4101ffff", "chunk"),  # nested indefinite chunk
        ("5f6161ff", "chunk"),  # text chunk in a byte string
        ("f818", "one-byte form"),
        ("8301", "array of 3 items"),
        ("821801", "end of input"),
        ("9f01", "end of input"),
        ("bf6161", "end of input"),
        ("bf616101ff", None),  # valid, see below
        ("bf6161ff", "unexpected break"),  # break where a value is due
        ("5f", "end of input"),
        ("a1", "map of 1 pairs"),
    ],
)
def test_malformed_input_raises_cbor_error(hex_input: str, needle: str | None) -> None:
    data = bytes.fromhex(hex_input)
    if needle is None:
        assert decode_cbor_exact(data) == {"a": 1}
        return
    with pytest.raises(CborError, match=needle):
        decode_cbor(data)


def test_truncation_is_reported_with_the_needed_end() -> None:
    with pytest.raises(CborTruncated) as info:
        decode_cbor(bytes.fromhex("44010203"))
    assert info.value.needed_end == 5
    with pytest.raises(CborTruncated) as info:
        decode_cbor(bytes.fromhex("8a0102"))
    assert info.value.needed_end >= 11


def test_exact_rejects_trailing_bytes() -> None:
    with pytest.raises(CborError, match="trailing"):
        decode_cbor_exact(bytes.fromhex("0000"))


@pytest.mark.parametrize(
    "hex_input",
    [
        "5bffffffffffffffff",  # 2^64-1 byte string
        "7b7fffffffffffffff",
        "9bffffffffffffffff",  # 2^64-1 item array
        "bbffffffffffffffff",
        "5a7fffffff00",
        "9a7fffffff00",
    ],
)
def test_huge_lengths_fail_fast_without_allocation(hex_input: str) -> None:
    # The claimed length is checked against the input before anything is allocated for it.
    tracemalloc.start()
    try:
        with pytest.raises(CborTruncated):
            decode_cbor(bytes.fromhex(hex_input))
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak:,} bytes allocated"


@pytest.mark.parametrize("opener", [b"\x81", b"\x9f", b"\xa1\x00", b"\xc1", b"\xd8\x20"])
def test_deep_nesting_is_refused(opener: bytes) -> None:
    data = opener * 100_000 + b"\x00"
    with pytest.raises(CborError, match=f"nesting deeper than {MAX_DEPTH}"):
        decode_cbor(data)


def test_nesting_at_the_limit_is_accepted() -> None:
    value, _ = decode_cbor(b"\x81" * MAX_DEPTH + b"\x00")
    for _ in range(MAX_DEPTH):
        assert isinstance(value, list)
        value = value[0]
    assert value == 0
    with pytest.raises(CborError):
        decode_cbor(b"\x81" * (MAX_DEPTH + 1) + b"\x00")
    with pytest.raises(CborError):
        decode_cbor(b"\x81\x81\x81\x00", max_depth=2)


def test_wide_input_is_linear() -> None:
    data = b"\x9f" + b"\x00" * 500_000 + b"\xff"
    value, end = decode_cbor(data)
    assert len(value) == 500_000 and end == len(data)


def test_is_structured_cbor() -> None:
    assert is_structured_cbor(bytes.fromhex("a0"))
    assert is_structured_cbor(bytes.fromhex("83010203"))
    assert is_structured_cbor(bytes.fromhex("6161"))
    assert not is_structured_cbor(b"\x00")  # a bare integer says nothing
    assert not is_structured_cbor(bytes.fromhex("1903e8"))
    assert not is_structured_cbor(bytes.fromhex("8301020300"))  # trailing byte
    assert not is_structured_cbor(b"")


@settings(max_examples=1500)
@given(st.binary(max_size=300))
def test_fuzz_only_cbor_errors(data: bytes) -> None:
    try:
        value, end = decode_cbor(data)
    except CborError:
        return
    assert 0 < end <= len(data)


# A tiny independent encoder so hypothesis can build valid, nested CBOR.
def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for ai, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | ai]) + n.to_bytes(width, "big")
    raise AssertionError(n)


def _encode(v: Any) -> bytes:
    if v is None:
        return b"\xf6"
    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, str):
        raw = v.encode("utf-8")
        return _head(3, len(raw)) + raw
    if isinstance(v, bytes):
        return _head(2, len(v)) + v
    if isinstance(v, list):
        return _head(4, len(v)) + b"".join(_encode(x) for x in v)
    if isinstance(v, dict):
        return _head(5, len(v)) + b"".join(_encode(k) + _encode(x) for k, x in v.items())
    raise AssertionError(v)


def _expected(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"bytes": v.hex()}
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return v if abs(v) <= 2**53 - 1 else str(v)
    if isinstance(v, list):
        return [_expected(x) for x in v]
    if isinstance(v, dict):
        return {k: _expected(x) for k, x in v.items()}
    return v


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=30,
)


@given(_values)
def test_round_trip_against_independent_encoder(v: Any) -> None:
    data = _encode(v)
    value, end = decode_cbor(data)
    assert end == len(data)
    assert value == _expected(v)


@settings(max_examples=500)
@given(_values, st.data())
def test_truncated_or_mutated_valid_cbor_never_escapes(v: Any, data: st.DataObject) -> None:
    encoded = bytearray(_encode(v))
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded)))
    if encoded:
        pos = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded[pos] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decode_cbor(bytes(encoded[:cut]))
    except CborError:
        pass
