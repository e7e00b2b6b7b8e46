"""Compute coordination: the lifecycle fold (a hypothesis state machine), the sequencer's
validation, and a real round between nodes over loopback sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from p2pworld import NodeConfig, open_node
from p2pworld.compute.core import ACCEPT_WINDOW_MS
from p2pworld.compute.state import (
    MAX_ATTEMPTS,
    NIP90_STATUS,
    TERMINAL,
    ComputeState,
)
from p2pworld.errors import Conflict, P2PWorldError
from p2pworld.world.core import WorldConfig
from p2pworld.world.doc import CapabilityAd

from .conftest import ROOT

R = b"R" * 32
PROVIDERS = [bytes([i]) * 32 for i in range(1, 5)]
SENDERS = [R, *PROVIDERS]


class Lifecycle(RuleBasedStateMachine):
    """Random events from random senders, applied to the fold as a sequencer would (refused
    ones change nothing). Whatever happens: at most one assignee at a time, acceptances only
    by the current assignee, results only from the accepted provider, terminal is final."""

    def __init__(self) -> None:
        super().__init__()
        self.st = ComputeState(requester=R)
        self.rids = ["a", "b"]
        for rid in self.rids:
            self.st.apply(R, {"op": "request", "rid": rid, "kind": "5001", "job": b"j",
                              "policy": "first", "price": 0, "sla_ms": 0, "needs": [],
                              "expires": 10**12})
        self.accepts: dict[str, list[bytes]] = {r: [] for r in self.rids}
        self.terminal: dict[str, str] = {}

    def _try(self, sender: bytes, ev: dict[str, Any]) -> None:
        r = self.st.requests[ev["rid"]]
        before = (r.phase, r.assignee, r.accepted_by, r.attempt, len(r.offers))
        try:
            self.st.apply(sender, ev)
        except P2PWorldError:
            assert (r.phase, r.assignee, r.accepted_by, r.attempt, len(r.offers)) == before
            return
        if ev["op"] == "accept":
            self.accepts[ev["rid"]].append(sender)
        if r.terminal:
            self.terminal.setdefault(ev["rid"], r.phase)

    @rule(rid=st.sampled_from(["a", "b"]), s=st.sampled_from(SENDERS), price=st.integers(0, 9))
    def offer(self, rid: str, s: bytes, price: int) -> None:
        self._try(s, {"op": "offer", "rid": rid, "price": price, "sla_ms": 0})

    @rule(rid=st.sampled_from(["a", "b"]), p=st.sampled_from(PROVIDERS), n=st.integers(0, 4),
          s=st.sampled_from(SENDERS))
    def assign(self, rid: str, p: bytes, n: int, s: bytes) -> None:
        self._try(s, {"op": "assign", "rid": rid, "provider": p, "attempt": n})

    @rule(rid=st.sampled_from(["a", "b"]), s=st.sampled_from(SENDERS), n=st.integers(0, 4),
          op=st.sampled_from(["accept", "reject", "progress"]))
    def provider_step(self, rid: str, s: bytes, n: int, op: str) -> None:
        self._try(s, {"op": op, "rid": rid, "attempt": n, "reason": "busy"})

    @rule(rid=st.sampled_from(["a", "b"]), s=st.sampled_from(SENDERS),
          status=st.sampled_from(["success", "error", "partial"]))
    def result(self, rid: str, s: bytes, status: str) -> None:
        self._try(s, {"op": "result", "rid": rid, "status": status, "data": b"r"})

    @rule(rid=st.sampled_from(["a", "b"]), s=st.sampled_from(SENDERS), n=st.integers(0, 4),
          reason=st.sampled_from(["accept_timeout", "assignee_stale"]))
    def lapse(self, rid: str, s: bytes, n: int, reason: str) -> None:
        self._try(s, {"op": "lapse", "rid": rid, "attempt": n, "reason": reason})

    @rule(rid=st.sampled_from(["a", "b"]), op=st.sampled_from(["cancel", "expire", "paid"]))
    def requester_step(self, rid: str, op: str) -> None:
        self._try(R, {"op": op, "rid": rid})

    @invariant()
    def one_assignee_at_a_time(self) -> None:
        for rid, r in self.st.requests.items():
            if r.accepted_by is not None:
                assert r.accepted_by == r.assignee
            assert r.attempt <= MAX_ATTEMPTS and len(r.tried) == r.attempt
            # Every acceptance was by a provider assigned at the time; re-acceptance only
            # after a lapse or rejection reopened the request.
            assert len(self.accepts[rid]) <= r.attempt
            assert len(set(self.accepts[rid])) == len(self.accepts[rid])
            if rid in self.terminal:
                assert r.phase == self.terminal[rid] and r.phase in TERMINAL
            assert r.phase in NIP90_STATUS


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def cfg(tmp: Path, name: str, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(home=tmp / name, workspace="test", mdns=False, keepalive=1.0, **kw)


async def test_a_compute_round_one_winner_and_explicit_conflicts(tmp_path: Path) -> None:
    ad = CapabilityAd(tools=("echo",), job_kinds=("5001",), expires_ms=2**62)
    with trio.fail_after(40):
        async with open_node(cfg(tmp_path, "req")) as req, \
                open_node(cfg(tmp_path, "p1", peers=[req.url], capabilities=ad)) as p1, \
                open_node(cfg(tmp_path, "p2", peers=[req.url], capabilities=ad)) as p2:
            await req.wait_peers(2)
            for p in (p1, p2):
                await req.wait_member(p.node_id)
            ch, rid = await req.request_compute(b"hello", kind="5001", needs=("echo",))
            for p in (p1, p2):
                # The provider-scoped subscription: the request appears, live.
                got_ch, got = await p.compute_feed().__anext__()
                assert (got_ch, got.rid, got.job) == (ch, rid, b"hello")
            # A request this provider's ad does not satisfy never shows up in its feed.
            _, other = await req.request_compute(b"x", kind="5001", needs=("gpu",))
            await p1.wait_compute(ch, other, lambda r: True)  # p1's copy holds it now
            assert all(r.rid != other for _, r in p1.eligible_compute())
            await req.cancel_compute(ch, other)
            assert (await req.wait_compute(ch, other)).phase == "cancelled"
            await p1.offer_compute(ch, rid, price=3)
            try:
                await p2.offer_compute(ch, rid, price=1)
            except Conflict as late:
                # The requester may already have assigned the first offer (policy "first"
                # assigns at its next tick): a later offer is refused, naming the assignee.
                # Which of the two happens depends on scheduling, not on the protocol.
                assert late.details["assignee"] == p1.node_id.hex()
            r = await req.wait_compute(ch, rid, lambda r: r.assignee is not None)
            # Default policy: the first offer.
            assert r.assignee == p1.node_id
            winner, loser = p1, p2
            await winner.wait_compute(ch, rid, lambda r: r.assignee == winner.node_id)
            await winner.accept_compute(ch, rid)
            with pytest.raises(Conflict) as exc:
                await loser.accept_compute(ch, rid)
            assert exc.value.details["assignee"] == winner.node_id.hex()
            # An offer after the assignment is refused, naming the assignee.
            with pytest.raises(Conflict):
                await loser.offer_compute(ch, rid, price=0)
            await winner.complete_compute(ch, rid, b"HELLO")
            done = await req.wait_compute(ch, rid)
            assert (done.phase, done.result, done.accepted_by) == (
                "success", b"HELLO", winner.node_id)
            # Every replica folds to the same answer.
            seen = await loser.wait_compute(ch, rid)
            assert (seen.phase, seen.accepted_by) == ("success", winner.node_id)


# --- a provider that dies mid-job (robustness issue, section F) ---------------------------

SHORT = WorldConfig(heartbeat_ms=300, stale_ms=1_500)
"""Presence fast enough for a test: a provider is stale 1.5 s after its last heartbeat."""


def _provider(home: Path, peer: str, mode: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tools.provider", str(home), "test", peer, mode,
         str(SHORT.heartbeat_ms), str(SHORT.stale_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)


async def _event(proc: subprocess.Popen[bytes], kind: str) -> dict[str, Any]:
    assert proc.stdout is not None
    while True:
        line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)
        assert line, f"the provider process ended before {kind!r}"
        ev = json.loads(line)
        if ev["event"] == kind:
            return dict(ev)


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=15)
        if p.stdout:
            p.stdout.close()


async def _first_accepted(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    winner: list[subprocess.Popen[bytes]] = []
    async with trio.open_nursery() as n:
        async def watch(p: subprocess.Popen[bytes]) -> None:
            await _event(p, "accepted")
            winner.append(p)
            n.cancel_scope.cancel()
        for p in procs:
            n.start_soon(watch, p)
    return winner[0]


async def test_a_round_whose_provider_is_killed_completes_on_the_other_offer(tmp_path: Path
                                                                            ) -> None:
    # e2c769c: the requester lapsed the dead provider, reassigned to the other offer, whose
    # provider had stopped watching (it had no way to hear of a reassignment), lapsed again
    # and the job sat `requested` until it expired (300 s). Both providers offer; the first
    # to accept is killed -9 mid-job; the other hears "assigned" on its feed and finishes.
    flag = tmp_path / "first-accepted"
    with trio.fail_after(120):
        async with open_node(cfg(tmp_path, "req", world=SHORT)) as req:
            procs = [_provider(tmp_path / f"p{i}", req.url, str(flag)) for i in (1, 2)]
            try:
                ups = [await _event(p, "up") for p in procs]
                for u in ups:
                    await req.wait_member(bytes.fromhex(u["node"]))
                ch, rid = await req.request_compute(b"job", kind="5001", needs=("echo",),
                                                    expires_in=120)
                await req.wait_compute(ch, rid, lambda r: len(r.offers) == 2)
                victim = await _first_accepted(procs)
                survivor = procs[1 - procs.index(victim)]
                dead = bytes.fromhex(ups[procs.index(victim)]["node"])
                os.killpg(victim.pid, signal.SIGKILL)
                t0 = trio.current_time()
                with trio.fail_after(SHORT.stale_ms / 1000 + ACCEPT_WINDOW_MS / 1000 + 30):
                    done = await req.wait_compute(ch, rid)
                assert (done.phase, done.result) == ("success", b"JOB")
                assert done.accepted_by == bytes.fromhex(ups[procs.index(survivor)]["node"])
                assert [op for op, who in done.history if who == dead] == ["offer", "accept"]
                assert trio.current_time() - t0 < 300  # long before the request's expiry
            finally:
                _stop(*procs)


async def test_with_no_live_offer_left_the_request_reopens_for_a_new_provider(tmp_path: Path
                                                                             ) -> None:
    # The only offer's provider is killed after accepting: the request reopens (it is never
    # assigned to a provider whose presence is not live) and a provider that starts later
    # hears "reopened" on its feed, offers, is assigned and finishes.
    with trio.fail_after(120):
        async with open_node(cfg(tmp_path, "req", world=SHORT)) as req:
            p1 = _provider(tmp_path / "p1", req.url, "hang")
            procs = [p1]
            try:
                up = await _event(p1, "up")
                await req.wait_member(bytes.fromhex(up["node"]))
                ch, rid = await req.request_compute(b"job", kind="5001", needs=("echo",),
                                                    expires_in=120)
                await _event(p1, "accepted")
                os.killpg(p1.pid, signal.SIGKILL)
                r = await req.wait_compute(ch, rid, lambda r: r.open)  # lapsed: stale
                assert r.reason == "assignee_stale" and r.assignee is None
                p2 = _provider(tmp_path / "p2", req.url, "work")
                procs.append(p2)
                await _event(p2, "offered")
                await _event(p2, "accepted")
                done = await req.wait_compute(ch, rid)
                assert (done.phase, done.result) == ("success", b"JOB")
            finally:
                _stop(*procs)


class _Entry:
    def __init__(self, seq: int, sender: bytes, payload: bytes) -> None:
        self.seq, self.sender, self.payload = seq, sender, payload
        self.kind, self.sequencer_time = "msg", seq


class _Rec:
    channel = b"C" * 16
    owner_key = b"R" * 32  # node_id() of it is the requester below

    class policy:  # noqa: N801 - a stub of ChannelPolicy
        app = "compute"


class _FakeLog:
    """Just what the compute core reads of a channel log."""

    def __init__(self) -> None:
        self.record, self.entries, self.floor = _Rec(), [], 0

    def add(self, sender: bytes, op: str, **fields: Any) -> None:
        from p2pworld.compute.state import encode_event
        self.entries.append(_Entry(len(self.entries) + 1, sender, encode_event(op, **fields)))


def test_reassignment_only_to_live_providers_and_the_feed_hears_of_it() -> None:
    from p2pworld.compute.core import ComputeCore
    from p2pworld.identity import node_id
    req = node_id(_Rec.owner_key)
    p1, p2, p3 = PROVIDERS[:3]
    log = _FakeLog()
    log.add(req, "request", rid="r", kind="5001", job=b"j", policy="first", price=0,
            sla_ms=0, needs=["echo"], expires=10**12)
    for p in (p1, p2):
        log.add(p, "offer", rid="r", price=0, sla_ms=0)
    core = ComputeCore(req)
    dead = {p1}
    (it,) = core.drive(log, now_ms=1, stale=lambda p: p in dead)
    assert decode(it.payload)["provider"] == p2  # p1 offered first but is not live
    log.add(req, "assign", rid="r", provider=p2, attempt=1)
    ad = CapabilityAd(tools=("echo",), job_kinds=("5001",), expires_ms=2**62)
    feed2 = ComputeCore(p2)
    events, cursor = feed2.provider_events(log, ad, after=0, now_ms=1)
    assert [e.kind for e in events] == ["assigned"] and cursor == 4
    # p2 dies too: lapsed; the only offer left is p1's, not live: nothing is assigned and
    # the request waits, open, for offers; a new provider hears it reopened.
    log.add(req, "lapse", rid="r", attempt=1, reason="accept_timeout")
    dead.add(p2)
    assert core.drive(log, now_ms=2, stale=lambda p: p in dead) == []
    assert core.state(log).requests["r"].open
    events, _ = ComputeCore(p3).provider_events(log, ad, after=0, now_ms=2)
    assert [(e.kind, e.seq) for e in events] == [("reopened", 5)]
    # Resumed from its cursor, p2's feed does not replay the assignment that no longer holds;
    # its lapse took its offer, so it hears the request reopened (it may offer again).
    assert [e.kind for e in feed2.provider_events(log, ad, after=cursor, now_ms=2)[0]] == [
        "reopened"]
    log.add(p3, "offer", rid="r", price=0, sla_ms=0)
    (it,) = core.drive(log, now_ms=3, stale=lambda p: p in dead)
    assert decode(it.payload)["provider"] == p3


def decode(payload: bytes) -> dict[str, Any]:
    from p2pworld.compute.state import decode_event
    return dict(decode_event(payload))


def test_a_provider_that_returns_after_its_lapse_can_offer_and_be_assigned_again() -> None:
    # The only provider accepts and dies: the lapse takes its offer, the request waits open;
    # the same provider back (same node id) hears "reopened", offers again, is assigned.
    from p2pworld.compute.core import ComputeCore
    from p2pworld.identity import node_id
    req = node_id(_Rec.owner_key)
    p1 = PROVIDERS[0]
    log = _FakeLog()
    log.add(req, "request", rid="r", kind="5001", job=b"j", policy="first", price=0,
            sla_ms=0, needs=["echo"], expires=10**12)
    log.add(p1, "offer", rid="r", price=0, sla_ms=0)
    log.add(req, "assign", rid="r", provider=p1, attempt=1)
    log.add(p1, "accept", rid="r", attempt=1)
    core = ComputeCore(req)
    (it,) = core.drive(log, now_ms=1, stale=lambda p: True)
    assert decode(it.payload)["reason"] == "assignee_stale"
    log.add(req, "lapse", rid="r", attempt=1, reason="assignee_stale")
    assert core.drive(log, now_ms=2, stale=lambda p: True) == []  # nobody live: it waits
    ad = CapabilityAd(tools=("echo",), job_kinds=("5001",), expires_ms=2**62)
    events, _ = ComputeCore(p1).provider_events(log, ad, after=0, now_ms=3)
    assert [e.kind for e in events] == ["reopened"]
    log.add(p1, "offer", rid="r", price=0, sla_ms=0)  # accepted by the fold now
    assert core.state(log).requests["r"].offers[-1].provider == p1
    (it,) = core.drive(log, now_ms=4, stale=lambda p: False)
    assert (decode(it.payload)["provider"], decode(it.payload)["attempt"]) == (p1, 2)
