"""The rendezvous client core: URLs, frames, the challenge, the relay envelope and the pipe
table (p2pworld.transport.rendezvous_client), against a model of the rules it replaced in the
shell."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import DecodeError, P2PWorldError
from p2pworld.transport.rendezvous import MAX_RELAY_BYTES, parse_message
from p2pworld.transport.rendezvous_client import (
    MAX_MESSAGE_BYTES,
    MAX_PIPES,
    NOTHING,
    Closed,
    Deliver,
    DialTarget,
    Incoming,
    Listed,
    RendezvousClientCore,
    dial_target,
    envelope,
    read_message,
    refresh_interval_s,
    relay_frame,
)

PEER, OTHER = b"p" * 32, b"q" * 32


def relay(peer: bytes, pid: int, theirs: bool, kind: str, data: bytes = b"") -> dict[str, Value]:
    """An ``rv.relay`` as the server delivers it (``theirs``: opened by the sender)."""
    return {"t": "rv.relay", "from": peer, "d": envelope(pid, theirs, kind, data)}


# --- URLs -----------------------------------------------------------------------------------

def old_target(url: str) -> DialTarget:
    """The shell's rule before the core took it."""
    u = urlsplit(url)
    if u.scheme != "ws" or not u.hostname:
        raise OSError(f"not a ws:// URL: {url!r}")
    return DialTarget(u.hostname, u.port or 80,
                      (u.path or "/") + (f"?{u.query}" if u.query else ""))


@pytest.mark.parametrize("url, want", [
    ("ws://127.0.0.1:7000/", DialTarget("127.0.0.1", 7000, "/")),
    ("ws://h", DialTarget("h", 80, "/")),
    ("ws://h:1/a/b?x=1&y", DialTarget("h", 1, "/a/b?x=1&y")),
    ("ws://[::1]:9/", DialTarget("::1", 9, "/")),
])
def test_dial_target(url: str, want: DialTarget) -> None:
    assert dial_target(url) == want


@pytest.mark.parametrize("url", ["wss://h/", "http://h/", "ws:///path", "", "h:80"])
def test_dial_target_refuses_other_urls_as_a_failed_connection(url: str) -> None:
    with pytest.raises(OSError, match="not a ws:// URL"):
        dial_target(url)


@given(st.sampled_from(["ws", "wss", "http", ""]), st.sampled_from(["", "h", "10.0.0.1", "[::1]"]),
       st.sampled_from(["", ":0", ":80", ":65535"]), st.sampled_from(["", "/", "/a/b"]),
       st.sampled_from(["", "?", "?q=1"]))
def test_dial_target_is_the_old_rule(scheme: str, host: str, port: str, path: str,
                                     query: str) -> None:
    url = f"{scheme}://{host}{port}{path}{query}"
    try:
        want: DialTarget | str = old_target(url)
    except OSError as e:
        want = str(e)
    try:
        got: DialTarget | str = dial_target(url)
    except OSError as e:
        got = str(e)
    assert got == want


def test_refresh_interval_is_a_third_of_the_ttl() -> None:
    assert refresh_interval_s(60_000) == 20.0 and refresh_interval_s(300) == 0.1


# --- frames ---------------------------------------------------------------------------------

@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**40), st.booleans(),
       st.sampled_from(["open", "data", "close"]), st.binary(max_size=64))
def test_relay_frame_is_the_old_wire_format(peer: bytes, pid: int, mine: bool, kind: str,
                                            data: bytes) -> None:
    old = codec.encode_frame({"t": "rv.relay", "to": peer,
                              "d": codec.encode({"c": pid, "o": mine, "k": kind, "d": data})})
    assert relay_frame(peer, pid, mine, kind, data) == old
    m = parse_message(old)
    assert m["to"] == peer and codec.decode(m["d"]) == {"c": pid, "o": mine, "k": kind, "d": data}


def test_relay_frame_data_defaults_to_empty() -> None:
    assert relay_frame(PEER, 1, True, "close") == relay_frame(PEER, 1, True, "close", b"")


def test_read_message_refuses_text_and_bad_frames() -> None:
    with pytest.raises(DecodeError, match="text frame from the rendezvous"):
        read_message("{}")
    with pytest.raises(P2PWorldError):
        read_message(b"\xff")  # an unknown frame version
    chal = codec.encode_frame({"t": "rv.chal", "nonce": b"n" * 16})
    assert read_message(chal) == parse_message(chal)


def test_message_limit_covers_the_largest_relay() -> None:
    assert MAX_MESSAGE_BYTES == (1 << 20) + 8192 and MAX_MESSAGE_BYTES > MAX_RELAY_BYTES + 4096


# --- the connection -------------------------------------------------------------------------

def test_the_first_message_must_be_the_challenge() -> None:
    core: RendezvousClientCore[str] = RendezvousClientCore("lab")
    with pytest.raises(DecodeError, match="rendezvous did not send a challenge"):
        core.challenged({"t": "rv.peers", "recs": []})
    core.ended = True
    assert core.challenged({"t": "rv.chal", "nonce": b"n" * 16}) == b"n" * 16
    assert not core.ended


def test_messages_as_effects() -> None:
    core: RendezvousClientCore[str] = RendezvousClientCore("lab")
    peers: dict[str, Value] = {"t": "rv.peers", "recs": []}
    assert core.receive(peers) == Listed(peers)
    # A relay in the client's direction (``to``), a challenge or a registration: ignored.
    assert core.receive({"t": "rv.relay", "to": PEER, "d": b""}) is NOTHING
    assert core.receive({"t": "rv.chal", "nonce": b"n" * 16}) is NOTHING
    assert core.receive({"t": "rv.reg", "rec": b""}) is NOTHING
    assert not core.ended


def test_nope_closes_the_pipes_to_that_peer_and_replaced_ends_the_connection() -> None:
    core: RendezvousClientCore[str] = RendezvousClientCore("lab")
    core.add((PEER, 1, True), "a")
    core.add((PEER, 1, False), "b")
    core.add((OTHER, 1, True), "c")
    assert core.receive({"t": "rv.nope", "to": PEER, "reason": "not connected"}) == \
        Closed(["a", "b"])
    assert not core.ended
    assert core.receive({"t": "rv.nope", "to": OTHER, "reason": "replaced"}) == Closed(["c"])
    assert core.ended
    # The core only answers: the shell closes the pipes (and drops them).
    assert len(core.pipes) == 3


def test_pipe_ids_are_fresh_and_drop_is_idempotent() -> None:
    core: RendezvousClientCore[str] = RendezvousClientCore("lab")
    assert [core.next_pid() for _ in range(3)] == [1, 2, 3]
    core.add((PEER, 1, True), "a")
    core.drop((PEER, 1, True))
    core.drop((PEER, 1, True))
    assert core.pipes == {}


# --- the relay envelope ---------------------------------------------------------------------

def test_a_peer_opens_a_pipe_we_name_as_theirs() -> None:
    core: RendezvousClientCore[str] = RendezvousClientCore("lab")
    assert core.receive(relay(PEER, 5, True, "open")) == Incoming((PEER, 5, False))
    core.add((PEER, 5, False), "in")
    assert core.receive(relay(PEER, 5, True, "open")) is NOTHING  # already open
    assert core.receive(relay(PEER, 5, True, "data", b"x")) == Deliver("in", b"x")
    assert core.receive(relay(PEER, 5, True, "close")) == Closed(["in"])
    # The same id opened by us is another pipe; a peer cannot "open" one of ours.
    assert core.receive(relay(PEER, 5, False, "data", b"y")) is NOTHING
    assert core.receive(relay(PEER, 5, False, "open")) is NOTHING
    core.add((PEER, 5, True), "out")
    assert core.receive(relay(PEER, 5, False, "data", b"y")) == Deliver("out", b"y")


def test_data_and_close_for_unknown_pipes_and_unknown_kinds_are_dropped() -> None:
    core: RendezvousClientCore[str] = RendezvousClientCore("lab")
    assert core.receive(relay(PEER, 1, True, "data", b"x")) is NOTHING
    assert core.receive(relay(PEER, 1, True, "close")) is NOTHING
    core.add((PEER, 1, False), "in")
    assert core.receive(relay(PEER, 1, True, "ping")) is NOTHING
    assert core.errors == {}


@pytest.mark.parametrize("raw", [
    b"\xff", codec.encode([1]), codec.encode({"c": -1, "o": True, "k": "open", "d": b""}),
    codec.encode({"c": 1, "o": 1, "k": "open", "d": b""}),
    codec.encode({"c": 1, "o": True, "k": "x" * 9, "d": b""}),
    codec.encode({"c": 1, "o": True, "k": "open"}),
])
def test_undecodable_envelopes_are_counted_and_dropped(raw: bytes) -> None:
    core: RendezvousClientCore[str] = RendezvousClientCore("lab")
    assert core.receive({"t": "rv.relay", "from": PEER, "d": raw}) is NOTHING
    assert sum(core.errors.values()) == 1 and core.pipes == {}


def test_opens_past_the_limit_are_ignored() -> None:
    core: RendezvousClientCore[int] = RendezvousClientCore("lab", max_pipes=2)
    for pid in (1, 2):
        effect = core.receive(relay(PEER, pid, True, "open"))
        assert isinstance(effect, Incoming)
        core.add(effect.key, pid)
    assert core.receive(relay(PEER, 3, True, "open")) is NOTHING
    core.drop((PEER, 1, False))
    assert core.receive(relay(PEER, 3, True, "open")) == Incoming((PEER, 3, False))
    assert RendezvousClientCore("lab").max_pipes == MAX_PIPES == 1024


EVENTS = st.lists(st.tuples(st.sampled_from([PEER, OTHER]), st.integers(1, 3), st.booleans(),
                            st.sampled_from(["open", "data", "close", "other"]),
                            st.binary(max_size=3)), max_size=40)


@given(EVENTS)
@settings(max_examples=200)
def test_the_pipe_table_follows_the_old_dispatch(events: list[tuple[bytes, int, bool, str, bytes]]
                                                 ) -> None:
    """The shell's dispatch before the core took it (a model), with a limit of 2 pipes."""
    core: RendezvousClientCore[tuple[bytes, int, bool]] = RendezvousClientCore("lab", max_pipes=2)
    model: set[tuple[bytes, int, bool]] = set()
    for peer, pid, theirs, kind, data in events:
        key = (peer, pid, not theirs)
        want: object = NOTHING
        if kind == "open" and theirs and key not in model:
            if len(model) < 2:
                want = Incoming(key)
                model.add(key)
        elif kind == "data" and key in model:
            want = Deliver(key, data)
        elif kind == "close" and key in model:
            want = Closed([key])
            model.discard(key)
        effect = core.receive(relay(peer, pid, theirs, kind, data))
        assert effect == want
        # The shell carries the effect out.
        if isinstance(effect, Incoming):
            core.add(effect.key, effect.key)
        elif isinstance(effect, Closed):
            for k in effect.pipes:
                core.drop(k)
        assert set(core.pipes) == model
