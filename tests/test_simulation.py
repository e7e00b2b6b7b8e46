"""The simulator: determinism, and every checker catches a deliberately broken core."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from p2pworld.channel.hub import ChannelHub, Delivered
from p2pworld.log.replica import Replica
from p2pworld.log.sequencer import Sequencer
from p2pworld.log.state import ChannelState
from p2pworld.testing.checkers import check_channel, check_world
from p2pworld.testing.sim import Simulator
from p2pworld.world.core import WorldCore
from p2pworld.world.doc import CapabilityAd
from simulations.scenarios import HEAVY, SCENARIOS


def anomalies(scenario: str, seeds: range) -> dict[str, int]:
    total: dict[str, int] = {}
    for seed in seeds:
        sim, ch, extra = SCENARIOS[scenario](seed)
        found = check_channel(sim, ch)
        for k, v in check_world(sim).items():
            found[k] += v
        for k, v in extra.items():
            found[k] += v
        for k, v in found.items():
            total[k] = total.get(k, 0) + v
    return total


def test_same_seed_same_trace_and_different_seed_different_trace() -> None:
    a, _, _ = SCENARIOS["swarm"](5)
    b, _, _ = SCENARIOS["swarm"](5)
    c, _, _ = SCENARIOS["swarm"](6)
    assert a.trace_hash == b.trace_hash
    assert a.trace_hash != c.trace_hash


def test_the_real_cores_pass() -> None:
    # A smoke test for pytest alone: make test's sweep (python -m simulations) runs 18 seeds of
    # every scenario and the heavy ones too.
    for name in sorted(set(SCENARIOS) - HEAVY):
        assert sum(anomalies(name, range(1)).values()) == 0, name


def _lose_last_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Acks went out before the data was durable: a crash loses the last few commits (their
    entries and the head stored with them)."""
    from p2pworld.testing.store import MemoryLogStore
    real = MemoryLogStore.crash

    def page_cache_lost(self: MemoryLogStore) -> MemoryLogStore:
        out = real(self)
        for c in out.channels.values():
            for seq in sorted(c.rows)[-3:]:
                del c.rows[seq]
            top = max(c.rows, default=None)
            c.head = (top, c.rows[top][0], None) if top is not None else (c.floor, None, None)
        return out

    monkeypatch.setattr(MemoryLogStore, "crash", page_cache_lost)


def test_lost_write_catches_an_ack_before_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    _lose_last_commits(monkeypatch)
    # With the start-up exchange a restarted sequencer takes such entries back from its
    # replicas (or reports them lost): turn it off, or nothing is left for the checker.
    monkeypatch.setattr("p2pworld.channel.hub.STARTUP_CHECK_MS", 0)
    assert anomalies("sequencer-crash-and-handoff", range(4))["lost_write"] > 0


def test_the_start_up_exchange_repairs_a_sequencer_that_lost_its_last_commits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The same lost page cache, with the exchange on: what replicas hold is taken back, what
    # they do not is reported (LostWrite), so the checker finds nothing lost silently.
    _lose_last_commits(monkeypatch)
    found = anomalies("sequencer-crash-and-handoff", range(8))
    assert found.get("lost_write", 0) == 0 and found.get("diverged", 0) == 0, found


def test_lost_write_catches_a_superseded_sequencer_that_does_not_step_down(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # e2c769c's behaviour: a sequencer that learns of a newer epoch keeps sequencing, and
    # what it acknowledged meanwhile is in no final log, with no LostWrite anywhere.
    monkeypatch.setattr(ChannelHub, "_step_down", lambda self, channel, newer, now_ms: [])
    assert anomalies("superseded-sequencer-returns", range(4))["lost_write"] > 0


def test_duplicate_catches_a_sequencer_without_idempotency(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    real = Sequencer.submit

    def amnesiac(self: Sequencer, sub: Any, *, now_ms: int, validate: Any = None) -> Any:
        self.state.idem.pop((sub.sender_key, sub.idem_key), None)
        return real(self, sub, now_ms=now_ms, validate=validate)

    monkeypatch.setattr(Sequencer, "submit", amnesiac)
    assert anomalies("churn", range(3))["duplicate"] > 0


def test_poll_skip_and_nonmonotonic_catch_bad_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ChannelHub._on_entries

    def skipping(self: ChannelHub, peer: bytes, msg: Any) -> list[Any]:
        # Never delivers every fifth entry, and delivers the rest twice.
        fx = real(self, peer, msg)
        out = []
        for e in fx:
            if isinstance(e, Delivered):
                kept = tuple(x for x in e.entries if x.seq % 5)
                e = Delivered(e.channel, kept + kept[-1:])
            out.append(e)
        return out

    monkeypatch.setattr(ChannelHub, "_on_entries", skipping)
    found = anomalies("steady", range(2))
    assert found["poll_skip"] > 0 and found["nonmonotonic"] > 0


def test_forged_visible_and_offsets_catch_a_trusting_replica(monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    def trusting(self: Replica, entries: list[Any], head: Any, mine: Any = None) -> list[Any]:
        new = []
        for e in entries:
            if e.seq == self.seq + 1:
                e = replace(e, prev_hash=self.head_hash)
                self.state.seq, self.state.head_hash = e.seq, e.hash
                self.entries.append(e)
                new.append(e)
            elif e.seq <= self.seq and e.payload == b"FORGED":
                self.entries[e.seq - self.floor - 1] = e  # overwrites what it held
        return new

    monkeypatch.setattr(Replica, "receive", trusting)
    found = anomalies("churn", range(3))
    assert found["forged_visible"] > 0
    assert found["inconsistent_offsets"] > 0 or found["diverged"] > 0


def test_replay_mismatch_catches_a_wrong_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ChannelState.replay

    def lossy(self: ChannelState, entries: list[Any], epochs: list[Any]) -> None:
        real(self, entries[:-1] if len(entries) > 5 else entries, epochs)

    monkeypatch.setattr(ChannelState, "replay", lossy)
    sim = Simulator(seed=1, nodes=2)
    ch = sim.open_channel("n0", "c")
    sim.run(0.1)
    for i in range(10):
        sim.publish("n1", ch, b"%d" % i, key=b"%d" % i)
    sim.run(1)
    assert check_channel(sim, ch)["replay_mismatch"] > 0


def test_forks_undetected_catches_a_replica_that_ignores_equivocation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Replica, "_check_fork", lambda self, held, batch, head: None)
    assert anomalies("equivocating-sequencer", range(3))["forks_undetected"] > 0


def test_forged_visible_catches_a_world_core_that_skips_signatures(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from simulations.scenarios import forged_presence

    assert sum(check_world(forged_presence(s)[0])["forged_visible"] for s in range(2)) == 0
    monkeypatch.setattr(Simulator, "verify", lambda self, key, msg, sig: True)
    assert sum(check_world(forged_presence(s)[0])["forged_visible"] for s in range(2)) > 0


def test_world_diverged_catches_a_core_without_anti_entropy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sim = Simulator(seed=2, nodes=3)
    sim.run(2)
    assert check_world(sim)["diverged"] == 0
    # Without the digest exchange, a node that missed updates while cut off never catches up.
    monkeypatch.setattr(WorldCore, "_on_digest", lambda self, peer, msg: [])
    monkeypatch.setattr(WorldCore, "_on_graft", lambda self, peer, msg: [])
    sim = Simulator(seed=2, nodes=3)
    sim.run(1)
    sim.partition({"n2"})
    w = sim.nodes["n0"].world
    assert w is not None
    sim._carry(sim.nodes["n0"], w.advertise(CapabilityAd(tools=("x",)), now_ms=1))
    sim.run(1)
    sim.heal()
    sim.run(20)
    assert check_world(sim)["diverged"] == 1


def _storm(seed: int) -> dict[str, int]:
    from p2pworld.testing.checkers import check_auth
    from simulations.scenarios import token_expiry_storm

    sim, ch, extra = token_expiry_storm(seed)
    found = check_auth(sim, ch)
    for k, v in extra.items():
        found[k] += v
    return found


def test_unauthorized_accepted_catches_a_sequencer_that_skips_token_checks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert _storm(1)["unauthorized_accepted"] == 0
    monkeypatch.setattr(ChannelHub, "_authorize", lambda self, key, msg_type, now_ms, **_: None)
    assert _storm(1)["unauthorized_accepted"] > 0


def test_presence_collapsed_catches_heartbeats_without_a_membership_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pworld.auth.book import TokenBook

    monkeypatch.setattr(TokenBook, "check_heartbeat",
                        lambda self, key, now: self.check(key, "world:join", now=now))
    assert _storm(1)["presence_collapsed"] > 0


def test_writes_not_resumed_catches_a_node_that_stops_refreshing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pworld.auth.schedule import TokenSchedule

    def gives_up(self: TokenSchedule, *, now_ms: int) -> None:
        self.asking, self.due_ms = False, None  # never retries once the service was down

    monkeypatch.setattr(TokenSchedule, "failed", gives_up)
    assert _storm(1)["writes_not_resumed"] == 1


def test_multiple_winners_catches_a_sequencer_without_compute_validation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import p2pworld.testing.sim as sim_module
    from p2pworld.testing.checkers import check_compute
    from simulations.scenarios import compute_contention

    assert sum(check_compute(compute_contention(s)[0])["multiple_winners"]
               for s in range(2)) == 0
    real = sim_module.build_cores

    def unvalidated(*a: Any, **k: Any) -> Any:
        cores = real(*a, **k)
        cores.hub.validator = None
        return cores

    monkeypatch.setattr(sim_module, "build_cores", unvalidated)
    assert sum(check_compute(compute_contention(s)[0])["multiple_winners"]
               for s in range(2)) > 0


def test_bridge_lost_write_catches_a_bridge_that_marks_unanswered_publishes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pworld.io.nostr_outbox import Outbox
    from p2pworld.testing.checkers import check_bridge
    from simulations.scenarios import bridge_outage

    assert check_bridge(bridge_outage(0)[0])["lost_write"] == 0
    real = Outbox.mark

    def optimist(self: Outbox, event_id: str, relay: str, *, ok: bool, message: str = "",
                 now: float) -> None:
        real(self, event_id, relay, ok=True, message=message, now=now)  # "it probably went"

    monkeypatch.setattr(Outbox, "mark", optimist)
    assert check_bridge(bridge_outage(0)[0])["lost_write"] > 0


def test_bridge_duplicate_catches_a_bridge_that_re_signs_on_retry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pworld.io.nostr_outbox import Outbox
    from p2pworld.nostr.event import Event
    from p2pworld.testing.checkers import check_bridge
    from p2pworld.testing.nostr_sim import SimNostr
    from simulations.scenarios import bridge_outage

    assert check_bridge(bridge_outage(1)[0])["duplicate"] == 0
    real_due = Outbox.due

    def resigning(self: Outbox, *, now: float, limit: int = 256) -> list[tuple[Event, str]]:
        # A bridge that rebuilds each event when it retries (a new created_at, so a new id)
        # instead of publishing the signed event it stored.
        out = []
        for ev, relay in real_due(self, now=now, limit=limit):
            fresh = Event.create(SimNostr.last_key, kind=ev.kind, content=ev.content,  # type: ignore[attr-defined]
                                 tags=[list(t) for t in ev.tags], created_at=int(now),
                                 aux=bytes(32))
            self.mark(ev.id, relay, ok=False, now=now)
            out.append((fresh, relay))
        return out

    real_drain = SimNostr.drain

    def drain(self: SimNostr, node: Any) -> None:
        SimNostr.last_key = self.keys[node.name]  # type: ignore[attr-defined]
        real_drain(self, node)

    monkeypatch.setattr(Outbox, "due", resigning)
    monkeypatch.setattr(SimNostr, "drain", drain)
    assert check_bridge(bridge_outage(1)[0])["duplicate"] > 0


def test_compute_stuck_catches_a_requester_that_waits_for_a_dead_provider(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """provider-dies-mid-job (issue 15, M4): with the requester's stale-assignee lapse
    removed (the old fault: a job held by a provider that died stays with it), the job never
    ends and the checker fires; with the real core it ends on another provider."""
    from p2pworld.compute.core import ComputeCore
    from p2pworld.testing import check_compute
    from simulations.scenarios import provider_dies_mid_job

    def stuck(seed: int) -> int:
        sim, _, extra = provider_dies_mid_job(seed)
        assert sim.stats.reached.get("provider_died") == 1
        try:
            return check_compute(sim)["compute_stuck"] + extra["compute_stuck"]
        finally:
            sim.close()

    assert sum(stuck(s) for s in range(2)) == 0
    real = ComputeCore.drive

    def never_lapses_a_stale_assignee(self: ComputeCore, log: Any, **kw: Any) -> Any:
        return [i for i in real(self, log, **kw) if b"/lapse/" not in i.key or
                b"assignee_stale" not in i.payload]

    monkeypatch.setattr(ComputeCore, "drive", never_lapses_a_stale_assignee)
    assert sum(stuck(s) for s in range(2)) > 0
