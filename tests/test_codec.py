"""Canonical CBOR: round trips, strictness, bounds, and a decoder fuzz."""

from __future__ import annotations

from collections.abc import Callable

import cbor2
import pytest
from hypothesis import given, strategies as st

from p2pworld import codec
from p2pworld.errors import DecodeError, LocalProtocolError, UnsupportedVersion

values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=64) | st.text(max_size=32),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=6),
    max_leaves=30,
)


@given(values)
def test_round_trip_is_identity(v: object) -> None:
    assert codec.decode(codec.encode(v)) == v
    assert codec.decode_frame(codec.encode_frame(v)) == v


@given(values)
def test_encoding_is_unique(v: object) -> None:
    # Encoding the decoded value again gives the same bytes: one value, one encoding.
    b = codec.encode(v)
    assert codec.encode(codec.decode(b)) == b


def test_map_order_is_canonical() -> None:
    assert codec.encode({"b": 1, "a": 2}) == codec.encode({"a": 2, "b": 1})


def test_non_canonical_input_is_refused() -> None:
    # The integer 1 encoded in two bytes instead of one.
    with pytest.raises(DecodeError):
        codec.decode(bytes([0x18, 0x01]))
    # A map in non-canonical key order.
    noncanon = cbor2.dumps({"b": 1, "a": 2})
    with pytest.raises(DecodeError):
        codec.decode(noncanon)


@pytest.mark.parametrize("raw", [
    bytes.fromhex("c11a514b67b0"),   # tag 1 (epoch datetime)
    bytes.fromhex("f93c00"),         # half float 1.0
    bytes.fromhex("9fff"),           # indefinite array
    bytes.fromhex("a2616101616102"),  # duplicate map key
    bytes.fromhex("a10101"),         # integer map key
    b"\x81" * 40 + b"\x00",          # nesting too deep
    b"",                              # empty
    bytes.fromhex("5a0000ffff"),     # byte string longer than the input
])
def test_hostile_inputs_raise_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(raw)


def test_size_bound() -> None:
    big = codec.encode(b"x" * 2000)
    with pytest.raises(DecodeError):
        codec.decode(big, max_bytes=1000)


def test_unknown_frame_version() -> None:
    with pytest.raises(UnsupportedVersion):
        codec.decode_frame(b"\x02" + codec.encode(1))


def test_encode_refuses_floats_and_other_types() -> None:
    for bad in (1.5, {1: 2}, object(), {"a": {1.0}}):
        with pytest.raises(LocalProtocolError):
            codec.encode(bad)


def test_domain_tags_separate_signatures() -> None:
    assert codec.tagged("a/v1", 1) != codec.tagged("b/v1", 1)
    with pytest.raises(LocalProtocolError):
        codec.tagged("bad\x00tag", 1)


@given(st.binary(max_size=300))
def test_decoder_fuzz_raises_only_typed_errors(raw: bytes) -> None:
    try:
        codec.decode_frame(raw)
    except (DecodeError, UnsupportedVersion):
        pass


def _reference_check(value: object, depth: int, max_items: int) -> None:
    """The data-model walk as first written (one call per value), for the differential test
    of the faster walk."""
    if depth > codec.MAX_DEPTH:
        raise DecodeError("nesting too deep")
    if value is None or isinstance(value, (bool, bytes, str)):
        return
    if isinstance(value, int):
        if not -(1 << 63) <= value <= (1 << 64) - 1:
            raise DecodeError("integer out of range")
        return
    if isinstance(value, list):
        if len(value) > max_items:
            raise DecodeError("array too long")
        for item in value:
            _reference_check(item, depth + 1, max_items)
        return
    if isinstance(value, dict):
        if len(value) > max_items:
            raise DecodeError("map too large")
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError("map key is not a text string")
            _reference_check(item, depth + 1, max_items)
        return
    raise DecodeError("not in the data model")


_ANY_LEAF = st.one_of(st.none(), st.booleans(), st.binary(max_size=4), st.text(max_size=4),
                      st.integers(min_value=-(1 << 70), max_value=1 << 70), st.floats(),
                      st.tuples(st.integers()), st.just(frozenset()))
_ANY_KEY = st.one_of(st.text(max_size=3), st.integers(0, 3), st.none(), st.booleans())


@given(st.recursive(_ANY_LEAF, lambda kids: st.one_of(
    st.lists(kids, max_size=5), st.dictionaries(_ANY_KEY, kids, max_size=4)),
    max_leaves=60), st.integers(1, 6))
def test_the_data_model_walk_agrees_with_its_reference(v: object, max_items: int) -> None:
    """The walk :func:`codec.decode` runs accepts exactly what the one-call-per-value walk
    accepted, at every depth (values nested past MAX_DEPTH included) and item bound."""
    def verdict(check: Callable[[object], None], value: object) -> bool:
        try:
            check(value)
        except DecodeError:
            return False
        return True

    deep: object = v
    for _ in range(codec.MAX_DEPTH - 1):
        deep = [deep]
    for value in (v, deep, [deep], {"k": [deep]}):
        assert verdict(lambda x: codec.check_decoded(x, max_items=max_items), value) == \
            verdict(lambda x: _reference_check(x, 0, max_items), value)
