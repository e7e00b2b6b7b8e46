"""Rendezvous: signed registrations, lookups and blind relaying (core and real sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from hypothesis import given, settings, strategies as st

from discovery.rendezvous_server import serve_rendezvous
from p2pworld import NodeConfig, codec, open_node
from p2pworld.errors import ForgedUpdate, P2PWorldError, RemoteProtocolError
from p2pworld.identity import Ed25519Signer
from p2pworld.transport.candidate import from_urls
from p2pworld.transport.rendezvous import (
    RendezvousCore,
    parse_message,
    register,
    registration,
    verified_peers,
)

A = Ed25519Signer(bytes([1]) * 32)
B = Ed25519Signer(bytes([2]) * 32)
NA, NB = b"a" * 16, b"b" * 16


def two_registered() -> RendezvousCore:
    core = RendezvousCore()
    core.connect(1, nonce=NA)
    core.connect(2, nonce=NB)
    core.receive(1, register(A, "lab", ["ws://10.0.0.1:4000/"], nonce=NA, now_ms=0), now_ms=0)
    core.receive(2, register(B, "lab", [], nonce=NB, now_ms=0), now_ms=0)
    return core


def test_registration_must_sign_this_connections_challenge() -> None:
    core = RendezvousCore()
    core.connect(1, nonce=NA)
    # A registration captured from another connection (other nonce) cannot be replayed here.
    with pytest.raises(ForgedUpdate):
        core.receive(1, register(A, "lab", [], nonce=NB, now_ms=0), now_ms=0)
    # A registration whose signature does not verify.
    rec = registration(A, "lab", [], nonce=NA, now_ms=0)
    bad = codec.decode(rec.raw)
    bad["urls"] = ["ws://6.6.6.6:1/"]
    with pytest.raises(ForgedUpdate):
        core.receive(1, {"t": "rv.reg", "rec": codec.encode(bad)}, now_ms=0)
    with pytest.raises(RemoteProtocolError):
        core.receive(1, {"t": "rv.relay", "to": bytes(32), "d": b"x"}, now_ms=0)
    assert core.by_node == {}


def test_relay_goes_only_to_the_registered_node_of_the_same_workspace() -> None:
    core = two_registered()
    out = core.receive(1, {"t": "rv.relay", "to": two_ids()[1], "d": b"sealed"}, now_ms=1)
    assert out == [(2, {"t": "rv.relay", "from": two_ids()[0], "d": b"sealed"})]
    # Another workspace's node is invisible.
    core.connect(3, nonce=b"c" * 16)
    c = Ed25519Signer(bytes([3]) * 32)
    core.receive(3, register(c, "other", [], nonce=b"c" * 16, now_ms=0), now_ms=0)
    out = core.receive(3, {"t": "rv.relay", "to": two_ids()[0], "d": b"x"}, now_ms=1)
    assert out[0][1]["t"] == "rv.nope"


def two_ids() -> tuple[bytes, bytes]:
    from p2pworld.identity import node_id
    return node_id(A.public_key), node_id(B.public_key)


def test_peers_list_is_verified_by_the_client() -> None:
    core = two_registered()
    out = core.receive(1, register(A, "lab", ["ws://10.0.0.9:4000/"], nonce=NA, now_ms=5),
                       now_ms=5)
    (_, msg), _ = out[0], out[1]
    msg = parse_message(codec.encode_frame(msg))
    assert {r.node for r in verified_peers(msg, workspace="lab", now_ms=5)} == set(two_ids())
    # A rendezvous that alters a record (or invents one) is caught by the client.
    forged = codec.decode(msg["recs"][0])
    forged["urls"] = ["ws://6.6.6.6:1/"]
    msg["recs"] = [codec.encode(forged), *msg["recs"][1:]]
    assert len(verified_peers(msg, workspace="lab", now_ms=5)) == 1


def test_disconnect_and_expiry_remove_the_node() -> None:
    core = two_registered()
    out = core.disconnect(2)
    assert [len(m["recs"]) for _, m in out] == [1]
    dead, _ = core.expire(now_ms=10**9)
    assert dead == [1] and core.by_node == {}


@given(st.binary(max_size=200))
@settings(max_examples=200)
def test_hostile_frames_never_crash_the_server(data: bytes) -> None:
    core = two_registered()
    try:
        core.receive(1, data, now_ms=0)
    except P2PWorldError:
        pass
    try:
        parse_message(data)
    except P2PWorldError:
        pass


def test_candidate_from_registration_urls() -> None:
    c = from_urls(bytes(32), "lab", ("ws://10.0.0.1:4000/", "ws://[fe80::1]:4000/", "junk",
                                     "ws://10.0.0.2:4000/"), source="rendezvous", relay="ws://r/")
    assert c.urls() == ["ws://10.0.0.1:4000/", "ws://10.0.0.2:4000/"] and c.relay == "ws://r/"


def cfg(tmp: Path, name: str, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(home=tmp / name, workspace="test", mdns=False, keepalive=1.0, **kw)


async def test_nodes_meet_through_a_rendezvous_and_relay_when_direct_fails(
        tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with trio.open_nursery() as n:
            server = await n.start(serve_rendezvous, "127.0.0.1", 0)
            # Both publish a direct URL nobody can reach: the session must be relayed.
            dead = ["ws://127.0.0.1:9/"]
            async with open_node(cfg(tmp_path, "a", rendezvous=[server.url],
                                     public_urls=dead)) as a, \
                    open_node(cfg(tmp_path, "b", rendezvous=[server.url],
                                  public_urls=dead)) as b:
                await a.wait_peers(1)
                await b.wait_peers(1)
                assert a.health()["peers"][0]["lane"] == "relay"
                assert "rendezvous" in a.health()["peers"][0]["via"]
                await b.wait_member(a.node_id)
                chan = await a.open_channel("over-relay", private=True,
                                            participants=(b.identity.public_key,))
                await b.wait_channel("over-relay")
                for i in range(20):
                    await b.publish(chan.channel, b"m%d" % i, key=b"k%d" % i)
                got = []
                async for m in a.messages(chan.channel):
                    if m.kind == "msg":
                        got.append(m.payload)
                    if len(got) == 20:
                        break
                assert got == [b"m%d" % i for i in range(20)]
                st_ = server.stats()
                assert st_["relayed_frames"] > 20 and st_["registered"] == 2
            n.cancel_scope.cancel()
