"""The statistics core (:mod:`p2pworld.core.statistics`): the typed view of a node and the
peer snapshots, computed from records, sessions and cores without a running node."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, strategies as st

from p2pworld.core.calls import OpenChannel
from p2pworld.core.cores import build_cores
from p2pworld.core.lanes import LaneCounters, lane_of_address
from p2pworld.core.node import NodeCore
from p2pworld.core.statistics import (
    PeerInfo,
    auth_statistics,
    channel_statistics,
    peer_info,
    peer_infos,
    peer_statistics,
    transport_statistics,
    world_statistics,
)
from p2pworld.identity import Ed25519Signer
from p2pworld.transport.peering import Keepalive


@dataclass
class Rec:
    state: str = "backoff"
    via: set[str] = field(default_factory=lambda: {"static", "mdns"})
    address: str = "ws://10.0.0.2:7000/"
    since: float = 100.0
    last_error: str = ""
    handshakes: int = 2
    failures: int = 1


@dataclass
class Sess:
    address: str = "relay:ws://rv/"
    frames_in: int = 5
    frames_out: int = 7


def _old_info(pid: bytes, p: Rec | None, s: Sess | None) -> PeerInfo:
    """What ``Peers._info`` computed inline before the view moved to the core."""
    return PeerInfo(node_id=pid, connected=s is not None,
                    state=p.state if p else "connected",
                    lane=lane_of_address(s.address) if s else None,
                    address=s.address if s else (p.address if p else ""),
                    via=tuple(sorted(p.via)) if p else (), since=p.since if p else 0.0,
                    last_error=p.last_error if p else "",
                    handshakes=p.handshakes if p else 0, failures=p.failures if p else 0)


records = st.none() | st.builds(Rec, state=st.sampled_from(["discovered", "connecting", "backoff"]),
                                via=st.sets(st.sampled_from(["mdns", "static", "nostr"])),
                                address=st.text(max_size=8), since=st.floats(0, 1e6),
                                last_error=st.sampled_from(["", "DIAL_FAILED"]))
sessions = st.none() | st.builds(Sess, address=st.sampled_from(
    ["ws://a/", "relay:ws://rv/", "nostr:abc"]))


@given(records, sessions)
def test_a_peer_snapshot_is_what_the_api_computed(p: Rec | None, s: Sess | None) -> None:
    got = peer_info(b"\x01" * 32, p, s)
    if p is None and s is None:
        assert got is None
    else:
        assert got == _old_info(b"\x01" * 32, p, s)


def test_peer_infos_keep_the_order_and_skip_the_unknown() -> None:
    peers = {b"b": Rec(), b"a": Rec(state="connecting")}
    sess = {b"c": Sess()}
    got = peer_infos([b"a", b"b", b"c", b"z"], peers, sess)
    assert [(i.node_id, i.state, i.connected) for i in got] == [
        (b"a", "connecting", False), (b"b", "backoff", False), (b"c", "connected", True)]


def test_peer_statistics_with_and_without_a_session() -> None:
    keep = Keepalive(interval_ms=1000)
    keep.rtt_ms[b"p"] = 12
    up = peer_statistics(b"p", Sess(), Rec(last_error="X"), keepalive=keep, now_s=100.25)
    assert (up.state, up.lane, up.via, up.since_s, up.rtt_ms, up.frames_in, up.frames_out,
            up.last_error) == ("connected", "relay", ["mdns", "static"], 0.25, 12, 5, 7, "X")
    down = peer_statistics(b"q", None, Rec(since=0.0), keepalive=None, now_s=5.0)
    assert (down.state, down.lane, down.since_s, down.rtt_ms, down.frames_in,
            down.last_error) == ("backoff", None, None, None, 0, None)
    assert down.node_id == b"q".hex()


def _core() -> NodeCore:
    return NodeCore(build_cores(Ed25519Signer(bytes(32)), workspace="lab",
                                rng=random.Random(0), incarnation=1))


def test_a_channel_this_node_sequences() -> None:
    core = _core()
    rec = core.handle(OpenChannel(name="notes"), now_ms=0).result
    got = channel_statistics(core.cores.hub, rec, {})
    assert (got.name, got.role, got.lane, got.lag, got.checkpoint, got.subscribers,
            got.participants, got.closed) == ("notes", "sequencer", "local", 0, None, 0, None,
                                              False)
    assert got.channel == rec.channel.hex()
    assert got.replicated_seq == core.cores.hub.replicated_seq(rec.channel)


def test_the_world_counts_members_by_state() -> None:
    core = _core()
    w = world_statistics(core.cores.world, now_ms=0)
    members = core.cores.world.members(now_ms=0)
    assert w.members == len(members) == w.online + w.stale + w.left + sum(
        m.state not in ("online", "stale", "left") for m in members)
    assert w.incarnation == 1 and w.refused == dict(core.cores.world.stats.refused)


def test_auth_without_a_book_or_schedule() -> None:
    a = auth_statistics(None, control=None, token_expires=None, schedule=None,
                        counters={"refresh_failures": 2, "revocation_polls": 3})
    assert (a.enabled, a.refused, a.refreshes, a.refresh_failures, a.revocation_polls) == (
        False, {}, 0, 2, 3)


def test_transport_reports_the_lane_counters() -> None:
    c = LaneCounters()
    c.count("direct", 3)
    c.count("nostr", 1)
    t = transport_statistics("primary-with-fallback", c, None)
    rep = c.report()
    assert (t.mode, t.delivered, t.fallback_ratio, t.alert, t.nostr) == (
        "primary-with-fallback", rep["delivered"], rep["fallback_ratio"], rep["alert"], None)
