"""The rendezvous server core's answers to its shell (p2pworld.transport.rendezvous): one
websocket message in, the frames to queue or the end of the connection; which connections to
close after a delivery; the error tally."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from p2pworld import codec
from p2pworld.errors import P2PWorldError
from p2pworld.identity import Ed25519Signer, node_id
from p2pworld.transport.rendezvous import Out, RendezvousCore, register

A = Ed25519Signer(bytes([1]) * 32)
NA, NB = b"a" * 16, b"b" * 16


def connected() -> RendezvousCore:
    core = RendezvousCore()
    core.connect(1, nonce=NA)
    return core


def test_a_text_frame_ends_the_connection() -> None:
    core = connected()
    assert core.frame(1, "hi", now_ms=0) is None
    assert core.errors == {"P2PWORLD_ERROR": 1}


def test_a_refused_frame_ends_the_connection_with_its_code() -> None:
    core = connected()
    bad = codec.encode_frame(register(A, "lab", [], nonce=NB, now_ms=0))
    assert core.frame(1, bad, now_ms=0) is None
    assert core.frame(1, codec.encode_frame({"t": "rv.relay", "to": bytes(32), "d": b""}),
                      now_ms=0) is None
    assert core.errors == {"FORGED_UPDATE": 1, "REMOTE_PROTOCOL_ERROR": 1}


def test_a_good_frame_is_what_receive_answers() -> None:
    core, twin = connected(), connected()
    frame = codec.encode_frame(register(A, "lab", [], nonce=NA, now_ms=0))
    assert core.frame(1, frame, now_ms=0) == twin.receive(1, frame, now_ms=0)
    assert core.frame(9, frame, now_ms=0) == []  # not (or no longer) a connection here
    assert core.errors == {}


@given(st.binary(max_size=200) | st.text(max_size=20))
@settings(max_examples=200)
def test_frame_counts_exactly_what_receive_refuses(data: bytes | str) -> None:
    core, twin = connected(), connected()
    try:
        if not isinstance(data, bytes):
            raise P2PWorldError("text frame")
        want: Out | str = twin.receive(1, data, now_ms=0)
    except P2PWorldError as e:
        want = e.code
    got = core.frame(1, data, now_ms=0)
    assert got == want if got is not None else core.errors == {want: 1}


def test_a_replaced_connection_is_closed_after_delivery() -> None:
    core = RendezvousCore()
    core.connect(1, nonce=NA)
    core.connect(2, nonce=NB)
    core.receive(1, register(A, "lab", [], nonce=NA, now_ms=0), now_ms=0)
    out = core.receive(2, register(A, "lab", [], nonce=NB, now_ms=0), now_ms=0)
    assert out[0] == (1, {"t": "rv.nope", "to": node_id(A.public_key), "reason": "replaced"})
    assert RendezvousCore.closes_after(out) == [1]
    assert RendezvousCore.closes_after([(1, {"t": "rv.nope", "to": b"", "reason": "gone"}),
                                        (2, {"t": "rv.peers", "recs": []})]) == []


def test_the_shell_counts_into_the_same_tally() -> None:
    core = connected()
    core.count("BACKPRESSURE")
    core.count("BACKPRESSURE")
    core.frame(1, "x", now_ms=0)
    assert core.errors == {"BACKPRESSURE": 2, "P2PWORLD_ERROR": 1}
