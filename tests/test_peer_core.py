"""The peer core (:mod:`p2pworld.core.peers`): who dials, on which lane, when, and which
session survives. Both executors carry out its dials; these tests drive it directly, and a
property test checks its rules under any order of events."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from p2pworld.core.peers import PeerCore
from p2pworld.effects import Dial
from p2pworld.transport.candidate import Candidate, from_urls

LOW, HIGH = b"\x01" * 32, b"\x02" * 32
NOSTR = b"\x07" * 32


def _cand(peer: bytes, *, workspace: str = "lab", nostr: bytes = NOSTR) -> Candidate:
    c = from_urls(peer, workspace, ["ws://127.0.0.1:9"], source="mdns")
    return Candidate(node_id=c.node_id, workspace=c.workspace, versions=c.versions,
                     addresses=c.addresses, port=c.port, source=c.source, nostr=nostr)


def _core(me: bytes = LOW, mode: str = "primary-with-fallback") -> PeerCore:
    return PeerCore(me=me, workspace="lab", mode=mode, rng=random.Random(0))


def _run(pc: PeerCore, now_ms: int) -> list[Dial]:
    t = pc.wake_at()
    assert t is not None and t <= now_ms, (t, now_ms)
    return pc.due(now_ms=now_ms)


def test_the_lower_id_dials_at_once_the_higher_after_its_grace() -> None:
    low, high = _core(LOW), _core(HIGH)
    low.seen("m", _cand(HIGH), now_ms=0)
    high.seen("m", _cand(LOW), now_ms=0)
    assert [d.lane for d in low.due(now_ms=0)] == ["primary"]
    assert high.due(now_ms=0) == []
    t = high.wake_at()
    assert t is not None and 2_000 <= t < 4_000
    assert [d.peer for d in high.due(now_ms=t)] == [LOW]


def test_two_failed_primary_attempts_then_the_nostr_lane_then_primary_again() -> None:
    pc = _core()
    pc.seen("m", _cand(HIGH), now_ms=0)
    (d,) = pc.due(now_ms=0)
    pc.dialled(HIGH, ok=False, code="CONNECT_FAILED", now_ms=10)
    assert pc.due(now_ms=10) == []  # backing off
    t = pc.wake_at()
    assert t is not None and 10 < t <= 260
    (d,) = _run(pc, t)
    assert d.lane == "primary"
    pc.dialled(HIGH, ok=False, code="CONNECT_FAILED", now_ms=t)
    (d,) = _run(pc, t)  # at once
    assert d.lane == "nostr" and d.nostr == NOSTR
    pc.dialled(HIGH, ok=False, code="NOSTR_LANE_FAILED", now_ms=t)
    t2 = pc.wake_at()
    assert t2 is not None and t2 > t
    assert [d.lane for d in _run(pc, t2)] == ["primary"]  # each round starts direct


def test_on_the_nostr_lane_the_direct_lane_is_probed_and_replaces_it() -> None:
    pc = _core()
    pc.seen("m", _cand(HIGH), now_ms=0)
    pc.up(HIGH, "nostr", initiator=True, now_ms=0)
    t = pc.wake_at()
    assert t is not None and 500 <= t <= 1_000
    (probe,) = _run(pc, t)
    assert probe.lane == "primary" and probe.probe
    assert pc.admit(HIGH, "primary", initiator=False)  # a direct session replaces it
    pc.up(HIGH, "primary", initiator=True, now_ms=t + 5)
    pc.dialled(HIGH, ok=True, now_ms=t + 5)
    assert not pc.admit(HIGH, "nostr", initiator=True)  # never the other way round
    assert pc.wake_at() is None  # nothing to do while a direct session is up


def test_on_one_lane_both_ends_keep_the_session_the_lower_id_dialled() -> None:
    low, high = _core(LOW), _core(HIGH)
    low.up(HIGH, "primary", initiator=False, now_ms=0)  # the higher id dialled it
    high.up(LOW, "primary", initiator=True, now_ms=0)
    assert low.admit(HIGH, "primary", initiator=True)
    assert high.admit(LOW, "primary", initiator=False)
    low.up(HIGH, "primary", initiator=True, now_ms=1)
    high.up(LOW, "primary", initiator=False, now_ms=1)
    assert not low.admit(HIGH, "primary", initiator=False)
    assert not high.admit(LOW, "primary", initiator=True)


def test_modes_decide_the_lanes() -> None:
    only = _core(mode="primary-only")
    only.seen("m", _cand(HIGH), now_ms=0)
    for t in range(0, 400_000, 1_000):
        for d in only.due(now_ms=t):
            assert d.lane == "primary"
            only.dialled(HIGH, ok=False, code="CONNECT_FAILED", now_ms=t)
    assert not only.accepts("nostr") and only.accepts("primary")
    forced = _core(mode="forced-nostr")
    forced.seen("m", _cand(HIGH), now_ms=0)
    assert [d.lane for d in forced.due(now_ms=0)] == ["nostr"]
    assert not forced.accepts("primary")


def test_an_attempt_with_no_answer_counts_as_failed() -> None:
    """The task carrying a dial out may fail without answering: the core does not wait for
    it for ever."""
    pc = _core(mode="primary-only")
    pc.seen("m", _cand(HIGH), now_ms=0)
    assert len(pc.due(now_ms=0)) == 1
    t = pc.wake_at()
    assert t == 2 * pc.attempt_ms  # one URL, plus one bound
    assert pc.due(now_ms=t - 1) == []
    assert pc.peers[HIGH].last_error == ""
    pc.due(now_ms=t)
    assert pc.peers[HIGH].last_error == "DIAL_TIMEOUT"
    t2 = pc.wake_at()
    assert t2 is not None and len(pc.due(now_ms=t2)) == 1


def test_other_workspaces_and_itself_are_not_dialled() -> None:
    pc = _core()
    pc.seen("m", _cand(HIGH, workspace="other"), now_ms=0)
    pc.seen("n", _cand(LOW), now_ms=0)
    assert pc.due(now_ms=0) == [] and pc.wake_at() is None
    assert pc.other_workspaces == {"other": 1}


def test_a_peer_with_no_candidate_left_is_not_dialled_again() -> None:
    pc = _core()
    pc.seen("m", _cand(HIGH), now_ms=0)
    pc.due(now_ms=0)
    pc.dialled(HIGH, ok=True, now_ms=1)
    pc.up(HIGH, "primary", initiator=True, now_ms=1)
    pc.gone("m")
    pc.down(HIGH, now_ms=2)
    assert pc.wake_at() is None


EVENTS = st.lists(st.tuples(
    st.sampled_from(["seen", "gone", "up-primary", "up-nostr", "down", "ok", "fail", "tick"]),
    st.integers(min_value=0, max_value=40_000)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(["primary-only", "primary-with-fallback", "forced-nostr"]),
       me=st.sampled_from([LOW, HIGH]), events=EVENTS)
def test_the_rules_hold_under_any_order_of_events(mode: str, me: bytes,
                                                  events: list[tuple[str, int]]) -> None:
    """At most one attempt on its way per peer; never a lane the mode forbids; never a dial
    while a direct session is up, nor to a peer with no candidate; time never runs back."""
    peer = HIGH if me == LOW else LOW
    pc = _core(me, mode)
    now, in_flight = 0, False
    for kind, dt in events:
        now += dt
        p = pc.peers.get(peer)
        if kind == "seen":
            pc.seen("m", _cand(peer), now_ms=now)
        elif kind == "gone":
            pc.gone("m")
        elif kind == "up-primary" and pc.accepts("primary"):
            pc.up(peer, "primary", initiator=False, now_ms=now)
        elif kind == "up-nostr" and pc.accepts("nostr") and (
                p is None or p.lane != "primary"):
            pc.up(peer, "nostr", initiator=False, now_ms=now)
        elif kind == "down" and p is not None and p.lane is not None:
            pc.down(peer, now_ms=now)
        elif kind in ("ok", "fail") and in_flight:
            pc.dialled(peer, ok=kind == "ok", code="X", now_ms=now)
            in_flight = False
        else:
            wake = pc.wake_at()
            if wake is not None:
                assert wake >= 0
            for d in pc.due(now_ms=now):
                p = pc.peers[peer]
                assert not in_flight or p.last_error == "DIAL_TIMEOUT"
                assert p.candidates, "a dial to a peer with no candidate"
                assert p.lane != "primary", "a dial while a direct session is up"
                if mode == "primary-only":
                    assert d.lane == "primary"
                if mode == "forced-nostr":
                    assert d.lane == "nostr"
                if d.probe:
                    assert p.lane == "nostr" and mode == "primary-with-fallback"
                in_flight = True
        # The remembered wake-up is the one the deadlines give after every event.
        assert pc.wake_at() == _earliest_deadline(pc)


def _earliest_deadline(pc: PeerCore) -> int | None:
    ds = [p.deadline_ms for p in pc.peers.values() if p.deadline_ms is not None]
    if pc.mode != "forced-nostr":
        ds += [s.deadline_ms for s in pc.statics.values() if s.deadline_ms is not None]
    return min(ds, default=None)


def test_configured_peers_are_dialled_and_dialled_again_after_their_session() -> None:
    pc = _core(mode="primary-only")
    pc.add_static("ws://10.0.0.1:7/")
    (d,) = pc.due(now_ms=0)
    assert (d.static, d.urls, d.peer) == ("ws://10.0.0.1:7/", ("ws://10.0.0.1:7/",), b"")
    assert pc.due(now_ms=1) == []  # one at a time
    pc.dialled_static(d.static, b"", ok=False, now_ms=5)
    t = pc.wake_at()
    assert t is not None and 5 < t <= 255
    (d,) = pc.due(now_ms=t)
    pc.dialled_static(d.static, HIGH, ok=True, now_ms=t)
    pc.up(HIGH, "primary", initiator=True, now_ms=t)
    assert pc.wake_at() is None  # nothing while its session is up
    pc.down(HIGH, now_ms=t + 1_000)
    t2 = pc.wake_at()
    assert t2 is not None and t + 1_000 < t2 <= t + 1_250  # the backoff was reset
    assert [d.static for d in pc.due(now_ms=t2)] == ["ws://10.0.0.1:7/"]
    forced = _core(mode="forced-nostr")
    forced.add_static("ws://10.0.0.1:7/")
    assert forced.due(now_ms=0) == [] and forced.wake_at() is None


def test_a_peer_first_seen_on_nostr_moves_to_the_direct_lane_when_a_route_appears() -> None:
    """The demo's order of events (a relay's presence event before the mDNS record): two
    primary attempts with no route, the Nostr lane, then the mDNS record. Before, the probe
    that came due with no direct route stopped the probing for good, and the demo's nodes
    stayed on relays (its channel forbids them: nothing was delivered)."""
    pc = _core()
    nostr_only = Candidate(node_id=HIGH, workspace="lab", versions=(1,), addresses=(), port=0,
                           source="nostr", nostr=NOSTR)
    pc.seen("nostr:x", nostr_only, now_ms=0)
    (d,) = pc.due(now_ms=0)
    pc.dialled(HIGH, ok=False, code="NO_ROUTE", now_ms=1)
    t = pc.wake_at()
    assert t is not None
    (d,) = pc.due(now_ms=t)
    pc.dialled(HIGH, ok=False, code="NO_ROUTE", now_ms=t)
    (d,) = pc.due(now_ms=t)
    assert d.lane == "nostr"
    pc.up(HIGH, "nostr", initiator=True, now_ms=t + 5)
    pc.dialled(HIGH, ok=True, now_ms=t + 5)
    probe_at = pc.wake_at()
    assert probe_at is not None
    assert pc.due(now_ms=probe_at) == []  # no direct route yet...
    assert pc.wake_at() is not None  # ...but it keeps probing
    pc.seen("mdns:y", _cand(HIGH), now_ms=probe_at + 10)
    (d,) = pc.due(now_ms=probe_at + 10)  # at once
    assert d.lane == "primary" and d.probe and d.urls
