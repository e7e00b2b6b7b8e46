"""Session messages: registry round trips, bundles, and a decoder fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from p2pworld import codec
from p2pworld.errors import DecodeError, RemoteProtocolError
from p2pworld.wire import (
    MESSAGE_TYPES,
    Ping,
    Pong,
    decode_frame_messages,
    decode_message,
    encode_bundle,
    encode_message,
    message_types,
)


def test_registry_knows_every_message_and_which_mutate() -> None:
    assert {"ping", "chan", "sub", "ents", "submit", "ack", "nack", "epoch", "stored",
            "snap", "subr"} <= set(MESSAGE_TYPES)
    assert {c.TYPE for c in message_types(mutating=True)} == {"chan", "submit", "epoch", "wpush"}


def test_bundle_round_trip_keeps_order() -> None:
    msgs = [Ping(1), Pong(2), Ping(3)]
    frame = encode_bundle([encode_message(m) for m in msgs])
    assert decode_frame_messages(frame) == msgs
    assert decode_frame_messages(encode_message(Ping(9))) == [Ping(9)]


@pytest.mark.parametrize("bad", [
    codec.encode_frame({"t": "bundle", "m": []}),
    codec.encode_frame({"t": "bundle", "m": [encode_bundle([encode_message(Ping(1))])]}),
    codec.encode_frame({"t": "bundle", "m": [encode_message(Ping(1)), b"\x01\xff"]}),
    codec.encode_frame({"t": "bundle", "m": ["text"]}),
    codec.encode_frame({"t": "nope"}),
    codec.encode_frame({"t": "ping", "n": -1}),
])
def test_bad_bundles_reject_the_whole_frame(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_frame_messages(bad)


@given(st.binary(max_size=300))
def test_message_decoder_fuzz_only_typed_errors(data: bytes) -> None:
    try:
        decode_frame_messages(data)
    except RemoteProtocolError:
        pass
    try:
        decode_message(data)
    except RemoteProtocolError:
        pass
