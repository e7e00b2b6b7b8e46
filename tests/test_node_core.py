"""The node core (:mod:`p2pworld.core.node`): inputs in, plans out, batches on the data path.

Both executors carry out only what :meth:`NodeCore.handle` plans; these tests look at the
plans themselves, at the executor boundary of the simulator.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any

import pytest

from p2pworld.auth.schedule import ASK_TIMEOUT_MS, TokenSchedule
from p2pworld.channel.hub import Outcomes, Resolved
from p2pworld.core import node as node_core
from p2pworld.core.cores import build_cores
from p2pworld.core.node import (
    Called,
    Flush,
    Input,
    NodeCore,
    PeerDown,
    PeerUp,
    Plan,
    Received,
    TimerFired,
    TokenMinted,
    TokenRefused,
)
from p2pworld.core.persist import LAZY_WRITE_MS, Commit
from p2pworld.effects import RefreshToken, Send, SendAll
from p2pworld.identity import Ed25519Signer
from p2pworld.testing import Simulator
from p2pworld.wire import Ack, Ping, Submit
from p2pworld.world.doc import NodeInfo

IN_FLIGHT = 100


def _plans(sim: Simulator) -> list[tuple[str, Plan]]:
    seen: list[tuple[str, Plan]] = []
    carry = sim._carry_plan

    def record(node: Any, plan: Plan) -> None:
        seen.append((node.name, plan))
        carry(node, plan)

    sim._carry_plan = record  # type: ignore[method-assign]
    return seen


def _objects(plan: Plan) -> list[Any]:
    """The effect objects an executor is handed: what leaves at once, each commit, and each
    effect of each carry step."""
    out: list[Any] = list(plan.leave)
    for s in plan.steps:
        out += [s] if isinstance(s, Commit) else list(s.effects)
    return out


def _messages(e: Any) -> list[Any]:
    return list(e.messages) if isinstance(e, SendAll) else [e.message]


def test_data_path_effects_are_per_batch_at_100_in_flight() -> None:
    """A writer with 100 publishes in flight and its sequencer: the plans hand the executors
    one object per batch (a send to a peer, the outcomes, a commit), never one per message.
    Before the node core the writer's cores emitted 400 (an outbox row, a submit, an outbox
    delete and an outcome per message) and the sequencer 100 acks, one effect each."""
    sim = Simulator(1, nodes=2, world=False)
    sim.run(0.5)
    ch = sim.open_channel("n0", "data")
    sim.run(0.5)
    plans = _plans(sim)
    sim.publish_many("n1", ch, [(b"k%03d" % i, b"x" * 64) for i in range(IN_FLIGHT)])
    sim.run(2.0)
    assert sum(1 for a in sim.stats.acks if a.writer == "n1") == IN_FLIGHT

    per_node: dict[str, Counter[str]] = {"n0": Counter(), "n1": Counter()}
    submits = acks = outcomes = 0
    for name, plan in plans:
        objs = _objects(plan)
        for o in objs:
            per_node[name][type(o).__name__] += 1
            if isinstance(o, (Send, SendAll)):
                msgs = _messages(o)
                submits += sum(isinstance(m, Submit) for m in msgs)
                acks += sum(isinstance(m, Ack) for m in msgs)
            elif isinstance(o, Outcomes):
                outcomes += len(o.items)
            elif isinstance(o, Resolved):
                outcomes += 1
        # Within one plan, at most one send per peer and kind between two commits, and at
        # most one batch of outcomes.
        for step in (plan.leave, *[s.effects for s in plan.steps if not isinstance(s, Commit)]):
            peers = Counter((e.peer, isinstance(_messages(e)[0], Submit))
                            for e in step if isinstance(e, (Send, SendAll)))
            assert all(n == 1 for n in peers.values()), peers
            assert sum(isinstance(e, (Outcomes, Resolved)) for e in step) <= 1
    assert (submits, acks, outcomes) == (IN_FLIGHT, IN_FLIGHT, IN_FLIGHT)
    writer, sequencer = sum(per_node["n1"].values()), sum(per_node["n0"].values())
    # A few batches each (the writer's window and pacing decide how many): far below one
    # object per message.
    assert writer <= 16, per_node["n1"]
    assert sequencer <= 16, per_node["n0"]


def test_batched_keeps_order_across_a_commit() -> None:
    """Grouping never moves a send across a durable effect: what must wait for a commit
    still does."""
    from p2pworld.channel.hub import SaveCursor
    cp: Any = object()
    fx: list[Any] = [Send(b"a", Ping(1)), SaveCursor(cp), Send(b"a", Ping(2)),
                     Send(b"a", Ping(3)), Resolved(1, None), Resolved(2, None)]  # type: ignore[arg-type]
    out = node_core.batched(fx)
    assert [type(e).__name__ for e in out] == ["Send", "SaveCursor", "SendAll", "Outcomes"]
    assert out[2] == SendAll(b"a", (Ping(2), Ping(3)))
    assert out[3] == Outcomes((Resolved(1, None), Resolved(2, None)))  # type: ignore[arg-type]


def _core(seed: int = 0) -> NodeCore:
    cores = build_cores(Ed25519Signer(bytes([seed]) * 32), workspace="lab",
                        rng=random.Random(seed), incarnation=1)
    return NodeCore(cores, first_tick_ms=1_000)


def _woken_at(core: NodeCore, inp: Input, *, now_ms: int) -> int | None:
    """The wake-up an executor sleeps on after ``inp``: it flushes until the plan is empty
    and not ready, and takes that plan's ``wake_at_ms`` (plans with work carry none)."""
    plan = core.handle(inp, now_ms=now_ms)
    while not plan.empty or plan.ready:
        assert plan.wake_at_ms is None
        plan = core.handle(Flush(), now_ms=now_ms)
    return plan.wake_at_ms


def test_events_queue_and_flush_carries() -> None:
    """Events only queue (their plan is empty and says a batch waits); the flush plans it."""
    core = _core()
    rec, fx = core.cores.hub.open_channel("c", now_ms=0)
    plan = core.handle(Called(effects=tuple(fx)), now_ms=0)
    assert plan.empty and plan.ready
    plan = core.handle(Flush(), now_ms=0)
    assert any(isinstance(s, Commit) for s in plan.steps)
    assert core.handle(Flush(), now_ms=0).empty


def test_one_wake_up_for_timers_at_the_cores_deadlines() -> None:
    """No periodic tick: an unjoined node alone asks for no wake-up at all; joined, it asks
    for its next deadline (here the announcement of its own new records, then its next
    heartbeat) and the timers run then, not before."""
    core = _core()
    assert core.handle(Flush(), now_ms=0).wake_at_ms == 1_000  # the start (first_tick_ms)
    core.handle(TimerFired(), now_ms=999)
    assert core.stats["timer_runs"] == 0
    assert core.handle(TimerFired(), now_ms=1_000).wake_at_ms is None  # nothing due
    hb = core.cores.world.config.heartbeat_ms
    core.handle(Called(effects=tuple(core.cores.world.join(NodeInfo(), now_ms=2_000))),
                now_ms=2_000)
    assert _woken_at(core, Flush(), now_ms=2_000) <= 2_000  # announce its new records
    core.handle(TimerFired(), now_ms=2_000)
    assert core.handle(Flush(), now_ms=2_000).wake_at_ms == 2_000 + hb
    core.handle(TimerFired(), now_ms=2_000 + hb - 1)
    assert core.stats["timer_runs"] == 2
    plan = core.handle(TimerFired(), now_ms=2_000 + hb)
    assert core.stats["timer_runs"] == 3 and plan.wake_at_ms == 2_000 + 2 * hb


def test_lazy_outbox_rows_get_their_own_wake_up() -> None:
    """An outbox row with nothing else to write asks for a wake-up LAZY_WRITE_MS later, and
    is committed then."""
    a, b = _core(1), _core(2)
    rec, fx = a.cores.hub.open_channel("c", now_ms=0)
    a.handle(Called(effects=tuple(fx)), now_ms=0)
    a.handle(Flush(), now_ms=0)
    pid_a = a.cores.world.node_id
    pid_b = b.cores.world.node_id
    key_a = a.cores.hub.signer.public_key
    key_b = b.cores.hub.signer.public_key
    fa = a.handle(PeerUp(peer=pid_b, key=key_b), now_ms=0)
    b.handle(PeerUp(peer=pid_a, key=key_a), now_ms=0)
    assert fa.ready
    for m in [e for s in a.handle(Flush(), now_ms=0).steps if not isinstance(s, Commit)
              for e in s.effects if isinstance(e, (Send, SendAll))]:
        for msg in _messages(m):
            b.handle(Received(peer=pid_a, messages=(msg,)), now_ms=0)
    b.handle(Flush(), now_ms=0)
    _, more = b.cores.hub.publish(rec.channel, b"hello", idem_key=b"k1", now_ms=10)
    b.handle(Called(effects=tuple(more)), now_ms=10)
    plan = b.handle(Flush(), now_ms=10)
    assert [type(e).__name__ for e in plan.leave] == ["Send"]  # the submit leaves at once
    assert not any(isinstance(s, Commit) for s in plan.steps)  # its outbox row waits
    assert _woken_at(b, Flush(), now_ms=10) == 10 + LAZY_WRITE_MS
    later = b.handle(TimerFired(), now_ms=10 + LAZY_WRITE_MS)
    assert [type(s).__name__ for s in later.steps] == ["Commit"]
    b.handle(PeerDown(peer=pid_a), now_ms=40)


def test_inputs_are_frozen_and_keyword_only() -> None:
    for cls in (Received, PeerUp, PeerDown, Called, Flush, TimerFired, node_core.CommitFailed,
                node_core.TokenMinted, node_core.TokenRefused):
        params = dataclasses.fields(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        if params:
            with pytest.raises(TypeError):
                cls(*[None] * len(params))


def test_each_publish_hears_its_own_outcome_from_a_batch() -> None:
    """Outcomes travel in a batch, and each publish still hears its own: ten local
    publishes, ten acks with distinct, consecutive seqs."""
    sim = Simulator(2, nodes=2, world=False)
    sim.run(0.5)
    ch = sim.open_channel("n0", "data")
    sim.run(0.5)
    sim.publish_many("n0", ch, [(b"k%d" % i, b"y") for i in range(10)])
    sim.run(1.0)
    seqs = sorted(a.seq for a in sim.stats.acks)
    assert len(seqs) == 10 and seqs == list(range(seqs[0], seqs[0] + 10))
    assert {a.status for a in sim.stats.acks} == {"appended"}


def test_a_clock_set_back_does_not_stop_the_timers() -> None:
    """The node's clock is the wall clock: set back by a minute, the next heartbeat is still
    due one interval after the last one (before, the world's own timers waited a minute, and
    peers saw the node go stale)."""
    core = _core()
    hb = core.cores.world.config.heartbeat_ms
    core.handle(Called(effects=tuple(core.cores.world.join(NodeInfo(), now_ms=2_000))),
                now_ms=2_000)
    core.handle(TimerFired(), now_ms=2_000 + hb)
    back = 2_000 + hb - 60_000
    assert core.handle(Flush(), now_ms=back).wake_at_ms == back + hb


def test_outbox_rows_do_not_wait_on_the_writer_s_pacing() -> None:
    """While a batch waits for company, outbox rows that waited LAZY_WRITE_MS are committed
    anyway (before, the core kept asking to be woken for them at once and never committed:
    a wake-up storm, found by the swarm scenario's seed 2)."""
    from p2pworld.channel.hub import OutboxDone
    core = _core()
    core.persist.plan([OutboxDone(b"c" * 16, b"k")], now_ms=0)
    core._waits = lambda now_ms: True  # type: ignore[method-assign]
    plan = core.handle(TimerFired(), now_ms=LAZY_WRITE_MS)
    assert [type(s).__name__ for s in plan.steps] == ["Commit"]
    assert not core.persist.lazy


def _refreshes(plan: Plan) -> int:
    return sum(isinstance(e, RefreshToken) for e in _objects(plan))


def test_the_token_refresh_is_the_node_core_s_wake_up() -> None:
    """The node core says when to ask for a fresh token (one ask at a time); a minted token
    is signed with from then on and schedules the next ask from its claims; a refused ask is
    retried soon; an ask with no answer (its task failed) counts as failed and is asked again
    after ASK_TIMEOUT_MS, so the refresh never stops for good."""
    from p2pworld.auth.book import AuthConfig, TokenBook
    from p2pworld.auth.token import Claims, mint

    control = Ed25519Signer(b"c" * 32)
    me = Ed25519Signer(b"m" * 32)
    book = TokenBook(AuthConfig(keys={"k1": control.public_key}))

    def token(iat: int, exp: int) -> bytes:
        return mint(Claims(org="o", user="u", device="d", session="s",
                           node_key=me.public_key, nostr_pubkey=bytes(32),
                           scopes=("world:write",), issued_at=iat, expires_at=exp,
                           token_id=iat.to_bytes(16, "big")), control, kid="k1")

    first = token(0, 60)
    cores = build_cores(me, workspace="lab", rng=random.Random(0), incarnation=1, auth=book,
                        token=first)
    book.learn(first, now=0, node_key=me.public_key)
    core = NodeCore(cores, first_tick_ms=0, token=TokenSchedule(random.Random(0)))
    assert core.token is not None
    core.token.start(expires_at=60, now_ms=0)
    due = core.handle(TimerFired(), now_ms=0).wake_at_ms  # (the start's compute run first)
    assert due is not None and 42_000 <= due <= 48_000
    assert _refreshes(core.handle(TimerFired(), now_ms=due - 1)) == 0
    assert _refreshes(core.handle(TimerFired(), now_ms=due)) == 1
    assert _refreshes(core.handle(TimerFired(), now_ms=due + 1)) == 0  # one at a time
    core.handle(TokenRefused(code="CONTROL_UNREACHABLE"), now_ms=due + 10)
    retry = core.handle(Flush(), now_ms=due + 10).wake_at_ms
    assert retry == due + 10 + 3_000  # a twentieth of the 60 s it had when scheduled
    assert _refreshes(core.handle(TimerFired(), now_ms=retry)) == 1
    fresh = token(50, 110)
    core.handle(TokenMinted(token=fresh, expires_at=0), now_ms=50_000)
    assert cores.world.token == fresh and core.token.refreshes == 1
    nxt = core.handle(Flush(), now_ms=50_000).wake_at_ms
    assert nxt is not None and 50_000 + 42_000 <= nxt <= 50_000 + 48_000  # from its claims
    # The ask's task failed before it could answer: asked again after ASK_TIMEOUT_MS.
    assert _refreshes(core.handle(TimerFired(), now_ms=nxt)) == 1
    assert _refreshes(core.handle(TimerFired(), now_ms=nxt + ASK_TIMEOUT_MS - 1)) == 0
    assert _refreshes(core.handle(TimerFired(), now_ms=nxt + ASK_TIMEOUT_MS)) == 1
    assert core.token.failures == 2


def test_the_simulator_refreshes_tokens_through_the_node_core() -> None:
    """With a control service, simulated nodes refresh when their node core asks (the
    simulator keeps no refresh timer of its own): over three token lifetimes each node
    refreshes at least twice and its token never lapses while the service is up."""
    sim = Simulator(3, nodes=3, auth=True, token_ttl=20.0)
    sim.run(65.0)
    for node in sim.nodes.values():
        assert node.core is not None and node.core.token is not None
        assert node.core.token.refreshes >= 2, node.name
        assert node.core.token.expires_at > sim.now
    assert sim.stats.reached.get("token_refresh", 0) >= 6


def test_a_revocation_ends_the_sessions_of_the_peers_it_revokes() -> None:
    """A revocation list ends the sessions of peers whose latest token it revokes (before,
    the book learned it and their sessions, and subscriptions, went on), and only theirs;
    the revoked author drops out of the world digest."""
    from p2pworld.auth.book import AuthConfig, TokenBook
    from p2pworld.auth.token import Claims, mint
    from p2pworld.effects import CloseSession
    from p2pworld.identity import node_id

    control = Ed25519Signer(b"c" * 32)
    me, bad, good = (Ed25519Signer(bytes([i]) * 32) for i in (7, 8, 9))
    book = TokenBook(AuthConfig(keys={"k1": control.public_key}))

    def token(who: Ed25519Signer, jti: bytes) -> bytes:
        return mint(Claims(org="o", user="u", device="d", session="s",
                           node_key=who.public_key, nostr_pubkey=bytes(32),
                           scopes=("world:write", "world:join"), issued_at=0,
                           expires_at=10**9, token_id=jti), control, kid="k1")

    for who, jti in ((me, b"m" * 16), (bad, b"b" * 16), (good, b"g" * 16)):
        book.learn(token(who, jti), now=1, node_key=who.public_key)
    cores = build_cores(me, workspace="lab", rng=random.Random(0), incarnation=1, auth=book,
                        token=token(me, b"m" * 16))
    core = NodeCore(cores, first_tick_ms=0)
    for who in (bad, good):
        core.handle(PeerUp(peer=node_id(who.public_key), key=who.public_key), now_ms=1_000)
    core.handle(Flush(), now_ms=1_000)
    plan = core.handle(node_core.RevocationsLearned(tokens=frozenset({b"b" * 16})),
                       now_ms=2_000)
    assert plan.ready
    closed = [e for e in _objects(core.handle(Flush(), now_ms=2_000))
              if isinstance(e, CloseSession)]
    assert closed == [CloseSession(node_id(bad.public_key), "REVOKED")]
    assert cores.world.revoked(bad.public_key) and not cores.world.revoked(good.public_key)


def test_a_channel_without_the_fallback_stays_off_the_nostr_lane() -> None:
    """The node core holds back what may not cross the Nostr lane (before, each executor
    checked it at its socket: a decision no seed saw the same way twice). A channel's traffic
    to a peer on the Nostr lane is held unless its policy allows the fallback; pings cross; a
    peer on a direct lane gets both."""
    from p2pworld.log.entry import ChannelPolicy
    from p2pworld.wire import Subscribe

    core = _core()
    hub = core.cores.hub
    closed, fx = hub.open_channel("closed", now_ms=0)
    allowed, fx2 = hub.open_channel("open", now_ms=0,
                                    policy=ChannelPolicy(nostr_fallback=True))
    core.handle(Called(effects=(*fx, *fx2)), now_ms=0)
    core.handle(Flush(), now_ms=0)
    lane, direct = b"n" * 32, b"d" * 32
    core.handle(PeerUp(peer=lane, key=lane, lane="nostr"), now_ms=1)
    core.handle(PeerUp(peer=direct, key=direct), now_ms=1)
    core.handle(Flush(), now_ms=1)  # (the announce of "closed" is held back from the lane)
    held = hub.errors["LANE_FORBIDDEN_BY_CHANNEL_POLICY"]
    msgs = (Subscribe(channel=closed.channel, after=0), Subscribe(channel=allowed.channel,
                                                                  after=0), Ping(5))
    core.handle(Called(effects=tuple(Send(p, m) for p in (lane, direct) for m in msgs)),
                now_ms=2)
    sent: dict[bytes, list[Any]] = {}
    for e in _objects(core.handle(Flush(), now_ms=2)):
        if isinstance(e, (Send, SendAll)):
            sent.setdefault(e.peer, []).extend(_messages(e))
    assert sent[lane] == list(msgs[1:])
    assert sent[direct] == list(msgs)
    assert hub.errors["LANE_FORBIDDEN_BY_CHANNEL_POLICY"] == held + 1
    # Once the peer's session is direct again, the channel's traffic goes to it.
    core.handle(PeerDown(peer=lane), now_ms=3)
    core.handle(PeerUp(peer=lane, key=lane), now_ms=3)
    core.handle(Flush(), now_ms=3)
    core.handle(Called(effects=(Send(lane, msgs[0]),)), now_ms=4)
    assert [m for e in _objects(core.handle(Flush(), now_ms=4))
            if isinstance(e, (Send, SendAll)) for m in _messages(e)] == [msgs[0]]


def test_api_calls_are_inputs_with_their_result_in_the_plan() -> None:
    """An API call is a frozen, keyword-only input: the core runs it, its plan carries what
    it returns and only queues its effects; a refused call raises, typed, and queues
    nothing."""
    from p2pworld.core import calls
    from p2pworld.errors import UnknownChannel

    for t in calls.CALLS:
        assert node_core._HANDLERS[t] == NodeCore._on_call, t
        assert t.__dataclass_params__.frozen, t  # type: ignore[attr-defined]
    core = _core()
    rec = core.handle(calls.OpenChannel(name="c"), now_ms=0).result
    assert rec.name == "c" and rec.channel in core.cores.hub.own
    plan = core.handle(calls.Publish(channel=rec.channel, payload=b"x", idem_key=b"k"),
                       now_ms=0)
    assert plan.empty and plan.ready and isinstance(plan.result, int)
    queued = core.queued
    with pytest.raises(UnknownChannel):
        core.handle(calls.Publish(channel=b"\0" * 16, payload=b"x", idem_key=b"k2"),
                    now_ms=0)
    assert core.queued == queued
    with pytest.raises(TypeError):
        calls.Publish(rec.channel, b"x", b"k")  # type: ignore[misc]
    steps = core.handle(Flush(), now_ms=0).steps
    assert any(isinstance(s, Commit) for s in steps)


def test_deliveries_are_counted_by_lane_in_the_core() -> None:
    """Which lane a delivery came by (the fallback ratio's figures, ``ChannelMessage.lane``)
    is the node core's (before, each executor counted it its own way: the simulator by its
    link table, the runtime by the session's address)."""
    from types import SimpleNamespace

    from p2pworld.core.lanes import LaneBook

    seq_of = {b"c1": b"r", b"c2": b"n", b"c3": b"gone"}
    hub: Any = SimpleNamespace(own={b"mine"}, sequencer_of=seq_of.__getitem__)
    book = LaneBook()
    book.up(b"r", "relay")
    book.up(b"n", "nostr")
    book.delivered(hub, b"c1", [1, 2])
    book.delivered(hub, b"c2", [1])
    book.delivered(hub, b"c3", [1])  # its sequencer's session is gone: counted as direct
    book.delivered(hub, b"mine", [1, 2, 3])  # this node's own: not traffic
    assert book.counters.delivered == {"direct": 1, "relay": 2, "nostr": 1}
    assert book.counters.fallback_ratio == 0.25
    assert [book.lane_of(hub, b"c1", 2), book.lane_of(hub, b"mine", 3),
            book.lane_of(hub, b"c2", 9)] == ["relay", "local", "nostr"]
    book.down(b"n")
    assert book.lane_of(hub, b"c2", 10) is None and book.lane_of(hub, b"c2", 1) == "nostr"


def test_a_send_behind_a_commit_is_held_back_if_its_peer_moved_to_the_nostr_lane() -> None:
    """Found by an adversarial review: the lane rule ran when a batch was planned, so a send
    carried after its commit (entries to a subscriber) went out over a Nostr session that
    came up while the commit was on disk. The rule runs again as each step is carried."""
    from p2pworld.core.persist import Carry
    from p2pworld.wire import Subscribe

    core = _core()
    rec, fx = core.cores.hub.open_channel("closed", now_ms=0)
    core.handle(Called(effects=tuple(fx)), now_ms=0)
    core.handle(Flush(), now_ms=0)
    peer = b"p" * 32
    step = Carry((Send(peer, Subscribe(channel=rec.channel, after=0)), Send(peer, Ping(1))), 0)
    core.handle(PeerUp(peer=peer, key=peer), now_ms=1)
    assert len(core.carried(step)) == 2  # direct: both go
    core.handle(PeerDown(peer=peer), now_ms=2)
    core.handle(PeerUp(peer=peer, key=peer, lane="nostr"), now_ms=2)
    assert [e.message for e in core.carried(step)] == [Ping(1)]  # type: ignore[attr-defined]
