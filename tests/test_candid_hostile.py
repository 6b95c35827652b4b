"""Hostile and random input: the decoder must stay fast and raise only CandidError."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from conftest import FIXTURES, expected_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_candid import (
    BOOL,
    EMPTY,
    NAT,
    NAT8,
    NAT64,
    NULL,
    PRINCIPAL,
    RESERVED,
    TEXT,
    check_offsets,
    didl,
    leb,
    sleb,
    t_opt,
    t_record,
    t_variant,
    t_vec,
    v_text,
)

from inspector.decode.candid import (
    CandidError,
    Limits,
    RepeatedVector,
    decode_message,
    looks_like_candid,
    parse_header,
)
from inspector.decode.candid_render import message_json, message_text, message_types, to_json, to_text


def raises_quickly(buf: bytes, pattern: str, limits: Limits | None = None) -> CandidError:
    """The decoder refuses ``buf`` with a message matching ``pattern``, having allocated next to nothing
    for what the input only claims (wall time is `stable-inspect bench`'s business, not a test's)."""
    tracemalloc.start()
    try:
        with pytest.raises(CandidError, match=pattern) as err:
            decode_message(buf, limits=limits)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(buf) + (8 << 20), f"{peak:,} bytes allocated for a {len(buf):,}-byte input"
    return err.value


def decode_or_error(buf: bytes) -> Any:
    """Decode; on success exercise every rendering. Any exception but CandidError fails the test."""
    try:
        msg = decode_message(buf)
    except CandidError as exc:
        assert 0 <= exc.offset <= len(buf)
        assert looks_like_candid(buf) in (True, False)
        return None
    assert looks_like_candid(buf)
    assert msg.end <= len(buf)
    check_offsets(msg, buf)
    json.dumps(message_json(msg))
    message_text(msg, max_vec_items=4, max_text_len=40)
    message_types(msg)
    if msg.args:
        msg.path_at(msg.args[0].start)
    return msg


# ---------------------------------------------------------------------------------------------------------
# Size bombs


def test_fourteen_byte_vector_of_a_billion_nulls() -> None:
    bomb = didl([t_vec(NULL)], [0], leb(2**30))
    assert len(bomb) == 14
    err = raises_quickly(bomb, "max_zero_sized_elements")
    assert err.offset == 9  # the vector's length
    # Under the cap it decodes without materialising anything per element.
    msg = decode_message(didl([t_vec(NULL)], [0], leb(1_000_000)))
    assert isinstance(msg.args[0].value, RepeatedVector) and len(msg.args[0].value) == 1_000_000
    assert msg.value_count == 2  # the vector and the one node standing for all its nulls
    assert len(message_json(msg)[0]) == 1_000_000


def test_zero_sized_records_count_too() -> None:
    # vec record { null; reserved; record {} } is zero-sized as a whole.
    table = [t_vec(1), t_record([(0, NULL), (1, RESERVED), (2, 2)]), t_record([])]
    raises_quickly(didl(table, [0], leb(2**40)), "max_zero_sized_elements")
    # 200k such records are 800k nodes: fine. 300k are 1.2M: too many to render, though none is built.
    assert len(decode_message(didl(table, [0], leb(200_000))).args[0].value) == 200_000
    raises_quickly(didl(table, [0], leb(300_000)), "max_zero_sized_elements")
    # The budget is per message: three vectors of 400k nulls are over it together.
    outer = didl([t_vec(1), t_vec(NULL)], [0], leb(3) + leb(400_000) * 3)
    raises_quickly(outer, "max_zero_sized_elements")


@pytest.mark.parametrize(
    "elem,what",
    [
        (NAT64, "needs 8796093022208 bytes"),
        (TEXT, "needs at least"),
        (BOOL, "needs"),
        (PRINCIPAL, "at least"),
    ],
)
def test_vector_length_checked_against_remaining_bytes(elem: int, what: str) -> None:
    raises_quickly(didl([t_vec(elem)], [0], leb(2**40) + b"\x00" * 64), what)


def test_vector_of_records_checked_against_their_minimum_size() -> None:
    # record { nat64; nat64; text } needs >= 17 bytes each: 10 of them cannot fit in 100 bytes.
    table = [t_vec(1), t_record([(0, NAT64), (1, NAT64), (2, TEXT)])]
    raises_quickly(didl(table, [0], leb(10) + bytes(100)), "at least 170 bytes")


def test_type_table_of_a_hundred_million_entries() -> None:
    raises_quickly(b"DIDL" + leb(10**8), "exceeds the limit of 10000")
    raises_quickly(b"DIDL" + leb(9_999) + b"\x6e\x7f", "cannot fit")
    # 10 000 entries are fine (and quick); 10 001 are not.
    ok = didl([t_opt(NAT)] * 10_000, [9_999], b"\x00")
    assert decode_message(ok).end == len(ok)
    raises_quickly(didl([t_opt(NAT)] * 10_001, [0], b"\x00"), "10001 entries")


def test_huge_field_and_method_counts() -> None:
    raises_quickly(b"DIDL\x01\x6c" + leb(2**31), "fields cannot fit")
    raises_quickly(b"DIDL\x01\x69" + leb(2**31), "methods cannot fit")
    raises_quickly(b"DIDL\x01\x6a" + leb(2**31), "cannot fit")
    raises_quickly(b"DIDL\x00" + leb(2**40), "argument types cannot fit")
    raises_quickly(b"DIDL\x01" + sleb(-30) + leb(2**40), "future type")


def test_bignum_length_is_capped() -> None:
    big = didl([], [NAT], b"\xff" * 1023 + b"\x01")
    assert decode_message(big).args[0].value.bit_length() == 7162
    raises_quickly(didl([], [NAT], b"\xff" * 5000 + b"\x01"), "max_bignum_bytes")
    raises_quickly(didl([], [NAT], b"\xff" * 10), "end of input")


# ---------------------------------------------------------------------------------------------------------
# Depth and cycles


def opt_chain(levels: int) -> bytes:
    return didl([t_opt(0)], [0], b"\x01" * levels + b"\x00")


def test_deep_nesting_raises_candid_error_not_recursion_error() -> None:
    err = raises_quickly(opt_chain(100_000), "max_depth")
    assert err.offset == 4 + 3 + 2 + 256  # the byte that would open level 257
    assert decode_message(opt_chain(255)).end == len(opt_chain(255))


def test_depth_is_not_bounded_by_python_stack() -> None:
    # With the cap lifted, nesting far beyond Python's recursion limit still decodes and renders.
    deep = opt_chain(20_000)
    msg = decode_message(deep, limits=Limits(max_depth=30_000))
    assert msg.end == len(deep)
    value: Any = to_json(msg.args[0])
    for _ in range(20_000):
        value = value[0]
    assert value == []
    text = to_text(msg.args[0])
    assert text == "opt " * 20_000 + "null"


def test_list_type_at_default_depth() -> None:
    # type List = opt record { head : nat; tail : List }: 2 levels per element, 128 elements = 256 levels.
    table = [t_opt(1), t_record([(0, NAT), (1, 0)])]
    fits = didl(table, [0], b"\x01\x05" * 127 + b"\x00")
    assert decode_message(fits).end == len(fits)
    raises_quickly(didl(table, [0], b"\x01\x05" * 129 + b"\x00"), "max_depth")


@pytest.mark.parametrize(
    "table",
    [
        [t_record([(0, 0)])],  # type T = record { T }
        [t_record([(0, 1)]), t_record([(0, NAT), (1, 0)])],  # A = record { B }; B = record { nat; A }
        [t_variant([(0, 0)])],  # type V = variant { a : V }: never ends either
        [t_record([(0, EMPTY)])],
    ],
)
def test_types_without_finite_values(table: list[bytes]) -> None:
    raises_quickly(didl(table, [0], b"\x00" * 64), "no value|contains itself")
    # ...but they may appear where no value is needed: an absent opt, an empty vector.
    n = len(table)
    ok = didl([*table, t_opt(0), t_vec(0)], [n, n + 1], b"\x00\x00")
    msg = decode_message(ok)
    assert message_json(msg) == [[], []]


def test_value_budget() -> None:
    msg = didl([t_vec(1), t_vec(NAT8)], [0], leb(5) + (leb(2) + b"ab") * 5)
    assert decode_message(msg).value_count == 6  # packed nat8 elements are not counted
    raises_quickly(msg, "max_values", limits=Limits(max_values=5))


# ---------------------------------------------------------------------------------------------------------
# Random input


def fixture_messages() -> list[bytes]:
    out: list[bytes] = []
    for path in expected_files():
        exp = json.loads(path.read_text())
        for st_ in exp.get("structures", []):
            if (st_.get("value_encoding") or {}).get("format") != "candid":
                continue
            if "value_hex" in st_:
                out.append(bytes.fromhex(st_["value_hex"]))
            out.extend(bytes.fromhex(e["value_hex"]) for e in st_.get("entries", [])[:3])
        if exp["fixture"] == "migration/after_stable_save_small":
            out.append((FIXTURES / exp["fixture"] / "stable_memory.bin").read_bytes()[:307])
    return out


SEEDS: list[bytes] = fixture_messages() or [
    didl([t_vec(1), t_record([(0, TEXT), (1, NAT64)])], [0], leb(1) + v_text("x") + bytes(8))
]


def mutate(rng: random.Random, buf: bytes) -> bytes:
    b = bytearray(buf)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randrange(len(b) + 1)
        if op < 0.5 and pos < len(b):
            b[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif op < 0.7:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
        elif op < 0.9 and pos < len(b):
            del b[pos : pos + rng.randint(1, 3)]
        else:
            b = b[: max(4, pos)]
    return bytes(b)


def test_seeded_mutations_of_real_messages() -> None:
    rng = random.Random(20240229)
    decoded = 0
    for _ in range(3000):
        if decode_or_error(mutate(rng, rng.choice(SEEDS))) is not None:
            decoded += 1
    assert decoded > 100  # mutations of values (not the header) often still decode


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(SEEDS) - 1),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
)
def test_hypothesis_byte_replacements(seed: int, edits: list[tuple[int, int]]) -> None:
    b = bytearray(SEEDS[seed])
    for pos, val in edits:
        b[pos % len(b)] = val
    decode_or_error(bytes(b))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_hypothesis_random_bytes_after_magic(tail: bytes) -> None:
    decode_or_error(b"DIDL" + tail)
    looks_like_candid(tail)


REFS = st.one_of(
    st.sampled_from([-1, -2, -3, -4, -5, -8, -11, -13, -14, -15, -16, -17, -24]), st.integers(0, 5)
)


@st.composite
def random_messages(draw: Callable[..., Any]) -> bytes:
    n = draw(st.integers(1, 6))
    refs = REFS.filter(lambda r: r < n)
    table = []
    for _ in range(n):
        kind = draw(st.sampled_from(["opt", "vec", "record", "variant", "future"]))
        if kind == "opt":
            table.append(t_opt(draw(refs)))
        elif kind == "vec":
            table.append(t_vec(draw(refs)))
        elif kind == "future":
            table.append(sleb(-25 - draw(st.integers(0, 3))) + leb(1) + b"x")
        else:
            ids = sorted(draw(st.sets(st.integers(0, 2**32 - 1), max_size=4)))
            fields = [(i, draw(refs)) for i in ids]
            table.append(t_record(fields) if kind == "record" else t_variant(fields))
    args = draw(st.lists(refs, min_size=1, max_size=3))
    values = draw(st.binary(max_size=48))
    return didl(table, args, values)


@settings(max_examples=300, deadline=None)
@given(random_messages())
def test_hypothesis_random_typed_messages(buf: bytes) -> None:
    decode_or_error(buf)


def test_parse_header_on_garbage_never_raises_other_errors() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        junk = b"DIDL" + bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        try:
            parse_header(junk)
        except CandidError:
            pass
