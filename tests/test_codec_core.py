"""The fast canonical encoder gives cbor2's canonical bytes, and decoding's canonical check
gives the same answer as re-encoding canonically (``p2pworld/codec.py``)."""

from __future__ import annotations

import cbor2
from hypothesis import given, settings, strategies as st

from p2pworld import codec
from p2pworld.errors import DecodeError

_keys = st.one_of(st.text(max_size=30), st.sampled_from(["a", "b", "ab", "ba", "é", "z", ""]))
_plain = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
              st.binary(max_size=40), st.text(max_size=40)),
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(_keys, inner, max_size=6)),
    max_leaves=40)
_model = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 63), max_value=1 << 63),
              st.binary(max_size=40), st.text(max_size=40)),
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.dictionaries(_keys, inner, max_size=6)),
    max_leaves=40)
"""Values of the canonical data model (64-bit integers)."""
_odd = st.one_of(st.floats(allow_nan=False), st.tuples(st.integers()),
                 st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=3),
                 st.dictionaries(st.binary(max_size=3), st.integers(), min_size=1, max_size=3),
                 st.sets(st.integers(), max_size=3))
_any = st.recursive(st.one_of(_plain, _odd),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(_keys, inner, max_size=4)),
                    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(_any)
def test_fast_encoding_is_cbor2_canonical(value: object) -> None:
    assert codec._canonical_dumps(value) == cbor2.dumps(value, canonical=True)


@settings(max_examples=400, deadline=None)
@given(_any)
def test_canonical_check_agrees_with_reencoding(value: object) -> None:
    for data in (cbor2.dumps(value), cbor2.dumps(value, canonical=True)):
        decoded = cbor2.loads(data)
        assert codec._is_canonical(decoded, data) == \
            (cbor2.dumps(decoded, canonical=True) == data)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _model, min_size=2, max_size=6))
def test_decode_refuses_maps_out_of_order(value: dict[str, object]) -> None:
    shuffled = dict(reversed(list(codec.decode(codec.encode(value)).items())))
    data = cbor2.dumps(shuffled)
    if data == codec.encode(value):
        return  # the reversed order is the canonical one too (fewer than 2 distinct keys)
    try:
        codec.decode(data, walk=False)
    except DecodeError as e:
        assert "canonical" in str(e)
    else:
        raise AssertionError("a map out of canonical order decoded")


def test_key_order_is_length_first_then_bytes() -> None:
    value = {"bb": 1, "a": 2, "é": 3, "z": 4, "": 5, "aa": 6}
    assert list(codec.decode(codec.encode(value))) == ["", "a", "z", "aa", "bb", "é"]
    assert codec.encode(value) == cbor2.dumps(value, canonical=True)


def test_key_orders_are_remembered_within_a_bound() -> None:
    for i in range(codec._KEY_ORDER_LIMIT + 10):
        assert codec.encode({f"k{i}": 1, "a": 2}) == cbor2.dumps({f"k{i}": 1, "a": 2},
                                                                  canonical=True)
    assert len(codec._KEY_ORDER) <= codec._KEY_ORDER_LIMIT


def test_values_outside_the_plain_types_take_cbor2s_canonical_encoder() -> None:
    class Key(str):
        pass

    for value in ({"b": 1.5, "a": (1, 2)}, {Key("b"): 1, "a": 2}, {1: "x", 0: "y"},
                  [{"b": {"d": 1, "c": frozenset({3, 1})}}]):
        assert codec._canonical_dumps(value) == cbor2.dumps(value, canonical=True)
