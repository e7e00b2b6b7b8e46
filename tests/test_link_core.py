"""The session core (p2pworld.transport.link): the handshake's steps, the send queue, what a
received frame or a close means, and ws:// targets; bytes passed by hand, no sockets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld import codec
from p2pworld.errors import (
    Backpressure,
    DecodeError,
    FrameRejected,
    HandshakeError,
    HandshakeRefused,
    RemoteProtocolError,
    SessionClosed,
    WorkspaceMismatch,
)
from p2pworld.transport.frames import encode_part
from p2pworld.transport.handshake import HandshakeConfig
from p2pworld.transport.link import (
    SEND_QUEUE,
    SEND_QUEUE_BYTES,
    HandshakeRun,
    Link,
    WsTarget,
    ws_target,
)
from p2pworld.wire import Ping, WorldPush, encode_message

from .conftest import make_identity

A, B = make_identity(1), make_identity(2)


def runs(rng: random.Random, *, b_workspace: str = "w") -> tuple[HandshakeRun, HandshakeRun]:
    i = HandshakeRun(HandshakeConfig(identity=A, workspace="w"), initiator=True, rng=rng)
    r = HandshakeRun(HandshakeConfig(identity=B, workspace=b_workspace), initiator=False,
                     rng=rng)
    return i, r


def links(rng: random.Random, **kw: int) -> tuple[Link, Link]:
    i, r = runs(rng)
    (hs1,) = i.opening()
    (hs2,) = r.step(hs1).send
    (hs3,) = i.step(hs2).send
    r.step(hs3).check()
    return Link(i.result.transport(), **kw), Link(r.result.transport(), **kw)


# --- the handshake ----------------------------------------------------------------------------

def test_a_handshake_runs_to_done(rng: random.Random) -> None:
    i, r = runs(rng)
    assert r.opening() == ()  # the responder waits
    (hs1,) = i.opening()
    s2 = r.step(hs1)
    assert len(s2.send) == 1 and s2.refusal == () and s2.error is None
    s3 = i.step(s2.send[0])
    assert len(s3.send) == 1 and i.done and not r.done
    s4 = r.step(s3.send[0])
    assert s4.send == () and s4.refusal == () and r.done
    s4.check()  # no error: returns
    assert i.result.peer_id == B.node_id and r.result.peer_id == A.node_id


def test_a_text_frame_ends_the_handshake_without_a_refusal(rng: random.Random) -> None:
    _, r = runs(rng)
    step = r.step("hello")
    assert step.send == () and step.refusal == ()
    with pytest.raises(HandshakeError, match="text frame during handshake"):
        step.check()


def test_a_failed_handshake_refuses_the_peer_once(rng: random.Random) -> None:
    i, r = runs(rng, b_workspace="other")
    (hs1,) = i.opening()
    step = r.step(hs1)
    assert step.send == () and len(step.refusal) == 1
    assert isinstance(step.error, WorkspaceMismatch)
    assert codec.decode_frame(step.refusal[0])["t"] == "refuse"
    with pytest.raises(WorkspaceMismatch):
        step.check()
    # The initiator, told it was refused, does not refuse back.
    back = i.step(step.refusal[0])
    assert back.refusal == () and isinstance(back.error, HandshakeRefused)


def test_garbage_is_a_handshake_error_with_a_refusal(rng: random.Random) -> None:
    _, r = runs(rng)
    step = r.step(b"\xff" * 10)
    assert isinstance(step.error, HandshakeError) and len(step.refusal) == 1


# --- sending ----------------------------------------------------------------------------------

def test_everything_queued_leaves_in_one_take(rng: random.Random) -> None:
    a, b = links(rng)
    for n in range(5):
        a.push(Ping(n))
    assert a.messages_queued == 5 and a.queued_bytes > 0
    count, frames = a.take()
    assert count == 5 and len(frames) == 1 and a.queued_bytes == 0
    got = [m for f in frames for m in b.received(a.transport.seal(f)) or []]
    assert got == [Ping(n) for n in range(5)]
    assert a.take() == (0, [])
    assert not a.flushed(5)
    a.sent(count)
    assert a.flushed(5) and a.messages_out == 5


def test_the_queue_is_bounded_by_messages(rng: random.Random) -> None:
    a, _ = links(rng, max_messages=3)
    for n in range(3):
        a.push(Ping(n))
    with pytest.raises(Backpressure) as got:
        a.push(Ping(3))
    assert got.value.details.get("limit") == 3 and "unit" not in got.value.details
    a.take()
    a.push(Ping(4))  # taken by the writer: room again


def test_the_queue_is_bounded_by_bytes_but_takes_one_message_whatever_its_size(
        rng: random.Random) -> None:
    a, _ = links(rng, max_bytes=100)
    big = WorldPush(updates=(bytes(500),))
    a.push(big)  # the queue was empty
    with pytest.raises(Backpressure) as got:
        a.push(Ping(1))
    assert got.value.details.get("unit") == "bytes" and got.value.details.get("limit") == 100
    assert a.messages_queued == 1


def test_defaults_are_the_session_bounds(rng: random.Random) -> None:
    a, _ = links(rng)
    assert (a.max_messages, a.max_bytes) == (SEND_QUEUE, SEND_QUEUE_BYTES) == (1024, 64 << 20)


def test_a_closed_link_refuses_before_encoding(rng: random.Random) -> None:
    a, _ = links(rng)
    a.close()
    with pytest.raises(SessionClosed, match="session is closed"):
        a.push(object())  # type: ignore[arg-type]  # never encoded
    assert a.flushed(10)  # an ended session has nothing left to wait for


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=40), st.integers(1, 4))
def test_property_takes_deliver_every_message_in_order(sizes: list[int], takes: int) -> None:
    a, b = links(random.Random(5))
    msgs = [WorldPush(updates=(bytes(n),)) for n in sizes]
    got = []
    cut = max(1, len(msgs) // takes)
    for start in range(0, len(msgs), cut):
        for m in msgs[start:start + cut]:
            a.push(m)
        count, frames = a.take()
        assert count == len(msgs[start:start + cut])
        got += [m for f in frames for m in b.received(a.transport.seal(f)) or []]
    assert got == msgs
    assert a.queued_bytes == 0 and b.frames_in == a.transport.frames_sent
    assert b.messages_in == len(msgs)


# --- receiving and ending ---------------------------------------------------------------------

def test_a_text_frame_ends_the_session(rng: random.Random) -> None:
    _, b = links(rng)
    assert b.received("text") is None
    assert isinstance(b.close_reason, RemoteProtocolError)
    assert b.close_reason.message == "text frame on a binary session"
    assert b.frames_in == 0


def test_a_forged_frame_ends_the_session_with_its_reason(rng: random.Random) -> None:
    a, b = links(rng)
    b.close_reason = SessionClosed("earlier")
    assert b.received(b"\x00" * 40) is None
    assert isinstance(b.close_reason, FrameRejected)  # what ended it, not the earlier one


def test_an_invalid_plaintext_ends_the_session(rng: random.Random) -> None:
    a, b = links(rng)
    assert b.received(a.transport.seal(codec.encode_frame({"t": "nope"}))) is None
    assert isinstance(b.close_reason, DecodeError)
    a, b = links(rng)
    assert b.received(a.transport.seal(b"\xff\xff")) is None  # not a frame
    assert isinstance(b.close_reason, RemoteProtocolError)


def test_a_part_is_traffic_without_messages(rng: random.Random) -> None:
    a, b = links(rng)
    raw = encode_message(WorldPush(updates=(bytes(3000),)))
    first = encode_part(0, 2, len(raw), raw[:2000])
    assert b.received(a.transport.seal(first)) == []
    assert b.frames_in == 1 and b.messages_in == 0 and b.reader.reassembling


def test_the_first_close_reason_wins(rng: random.Random) -> None:
    a, _ = links(rng)
    a.peer_closed()
    assert a.close_reason is not None and a.close_reason.message == "peer closed the session"
    a.lane_failed(SessionClosed("relay refused"))
    a.close(SessionClosed("mine"))
    assert a.close_reason.message == "peer closed the session" and a.closed

    b, _ = links(rng)
    b.lane_failed(SessionClosed("relay refused"))
    b.peer_closed()
    assert b.close_reason is not None and b.close_reason.message == "relay refused"

    c, _ = links(rng)
    c.close()
    assert c.close_reason is not None and c.close_reason.message == "closed locally"
    d, _ = links(rng)
    d.close(SessionClosed("duplicate session"))
    assert d.close_reason is not None and d.close_reason.message == "duplicate session"


# --- dialling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("url,target", [
    ("ws://h", WsTarget("h", 80, "/")),
    ("ws://h:9/", WsTarget("h", 9, "/")),
    ("ws://127.0.0.1:8000/a/b?x=1&y=2", WsTarget("127.0.0.1", 8000, "/a/b?x=1&y=2")),
    ("ws://[::1]:7/?q", WsTarget("::1", 7, "/?q")),
])
def test_ws_targets(url: str, target: WsTarget) -> None:
    assert ws_target(url) == target


@pytest.mark.parametrize("url", ["http://h:1/", "wss://h/", "ws://", "ws:///path", "h:80"])
def test_what_is_not_a_ws_url_cannot_be_connected_to(url: str) -> None:
    with pytest.raises(SessionClosed) as got:
        ws_target(url)
    assert got.value.message == f"cannot connect to {url}: not a ws:// URL: {url!r}"
