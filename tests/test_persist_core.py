"""The persist core: the ordering that makes "ack after fsync" true, the lazy outbox and the
writer's pacing, as both executors run them (property tests over random effect batches)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings, strategies as st

from p2pworld.channel.hub import (
    Checkpoint,
    Delivered,
    OutboxDone,
    PublishResult,
    Resolved,
    SaveCursor,
)
from p2pworld.core import persist
from p2pworld.core.persist import (
    LAZY_WRITE_MS,
    STORE_EFFECTS,
    Carry,
    Commit,
    PersistCore,
    leaves_at_once,
    pace,
    refused_after,
)
from p2pworld.effects import Send
from p2pworld.errors import PublishTimeout, StoreFull
from p2pworld.wire import Ack, Entries, Nack, Ping, Submit


def _persist(i: int) -> Any:
    # Persist needs a record only to name its channel; the plan never looks inside.
    return persist.Persist(record=None, floor=i)  # type: ignore[arg-type]


def _result(i: int) -> PublishResult:
    return PublishResult(channel=b"c", seq=i, entry_hash=bytes(32), strength="local",
                         status="appended")


EFFECTS = st.sampled_from(["persist", "cursor", "outbox", "resolved", "timeout", "delivered",
                           "send", "ack"])


def one(kind: str, i: int) -> Any:
    if kind == "persist":
        return _persist(i)
    if kind == "cursor":
        return SaveCursor(Checkpoint(channel=b"c", epoch=1, seq=i, head_hash=bytes(32)))
    if kind == "outbox":
        return OutboxDone(b"c", b"k%d" % i)
    if kind == "resolved":
        return Resolved(i, _result(i))
    if kind == "timeout":
        return Resolved(i, PublishTimeout("lost"))
    if kind == "delivered":
        return Delivered(b"c", ())
    if kind == "send":
        return Send(b"p", Ping(n=i))
    return Send(b"p", _ack(i))


def _ack(i: int) -> Ack:
    return Ack(req=i, channel=b"c", status="appended", seq=i, entry_hash=bytes(32),
               strength="local")


def build(kinds: list[str]) -> list[Any]:
    return [one(k, i) for i, k in enumerate(kinds)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(EFFECTS, max_size=12), min_size=1, max_size=6))
def test_plan_keeps_every_effect_once_and_writes_before_what_follows(batches: list[list[str]]
                                                                     ) -> None:
    core = PersistCore()
    committed: list[Any] = []
    outbox_seen: list[Any] = []
    for n, kinds in enumerate(batches):
        fx = build(kinds)
        outbox_seen += [e for e in fx if isinstance(e, persist.OUTBOX_EFFECTS)]
        first_gating = next((i for i, e in enumerate(fx) if isinstance(e, STORE_EFFECTS)
                             and not isinstance(e, persist.OUTBOX_EFFECTS)), None)
        gated = False
        carried: list[Any] = []
        for step in core.plan(fx, now_ms=n):
            if isinstance(step, Commit):
                committed += step.ops
                gated = gated or step.gates
                continue
            for e in step.effects:
                assert not isinstance(e, STORE_EFFECTS)
                # Nothing listed after the first gating effect is carried out before the
                # commit that holds it.
                if first_gating is not None and fx.index(e) > first_gating:
                    assert gated, kinds
                # An indeterminate outcome is reported only once every outbox row is on disk
                # ("the outbox resubmits it").
                if isinstance(e, Resolved) and isinstance(e.outcome, PublishTimeout):
                    assert all(any(x is c for c in committed) for x in outbox_seen)
                carried.append(e)
        # Every other effect is carried out once, in the order the cores emitted it.
        assert carried == [e for e in fx if not isinstance(e, STORE_EFFECTS)]
    # Every durable effect ends up in exactly one commit once the lazy rows' time comes.
    last = core.idle(now_ms=len(batches) + LAZY_WRITE_MS)
    if last is not None:
        committed += last.ops
    assert not core.lazy and core.wake_at() is None
    assert len(committed) == sum(isinstance(e, STORE_EFFECTS) for kinds in batches
                                 for e in build(kinds))


def test_outbox_rows_wait_for_a_commit_or_their_time() -> None:
    core = PersistCore()
    row = OutboxDone(b"c", b"k")
    assert core.plan([row, Send(b"p", Ping(n=1))], now_ms=100) == [Carry((Send(b"p", Ping(n=1)),))]
    assert core.wake_at() == 100 + LAZY_WRITE_MS
    assert core.idle(now_ms=100 + LAZY_WRITE_MS - 1) is None
    # A commit that comes first takes them along.
    steps = core.plan([_persist(1)], now_ms=110)
    assert steps == [Commit((row, _persist(1)))] and core.wake_at() is None


def test_a_failed_commit_puts_its_outbox_rows_back() -> None:
    core = PersistCore()
    row = OutboxDone(b"c", b"k")
    (commit,) = core.plan([row, _persist(1)], now_ms=0)
    assert isinstance(commit, Commit) and commit.gates
    core.failed(commit, now_ms=5)
    assert core.lazy == [row] and core.wake_at() == 5 + LAZY_WRITE_MS
    assert not Commit((row,)).gates


def test_refusals_after_a_failed_commit() -> None:
    err = StoreFull("disk full")
    tail = [Resolved(1, _result(1)), Send(b"p", _ack(2)),
            Send(b"p", Entries(entries=(), head=None)), Delivered(b"c", ()), Send(b"p", Ping(n=3)),
            Resolved(4, PublishTimeout("x"))]
    out = refused_after(err, tail)
    assert out[0] == Resolved(1, err)
    assert isinstance(out[1], Send) and isinstance(out[1].message, Nack)
    assert out[1].message.code == "STORE_FULL"
    assert out[2:] == [tail[4], tail[5]]  # Entries never leave; Delivered is dropped


def test_submissions_leave_at_once() -> None:
    assert not leaves_at_once(Send(b"p", Ping(n=1)))
    assert not leaves_at_once(Resolved(1, _result(1)))
    sub = Submit.__new__(Submit)
    assert leaves_at_once(Send(b"p", sub))


@given(st.integers(0, 600), st.integers(0, 600), st.integers(0, 4))
def test_pace(queued: int, in_flight: int, batches: int) -> None:
    p = pace(queued=queued, in_flight=in_flight, batches_in_flight=batches)
    if queued == 0:
        assert p.wait_ms == 0  # nothing to wait for
    if queued and not in_flight and batches < persist.BATCHES_IN_FLIGHT:
        assert p.wait_ms == 0  # a lone publish never waits
    if p.wait_ms:
        assert queued < p.until_queued and p.wait_ms <= persist.BATCH_WAIT_MS


def test_a_failed_commit_voids_the_commits_planned_before_it_and_only_those() -> None:
    from p2pworld.core.persist import Commit, PersistCore
    from p2pworld.errors import StoreFull

    pc = PersistCore()
    a, b = Commit((), pc.generation), Commit((), pc.generation)  # b planned behind a
    full = StoreFull("full")
    assert pc.voided(a) is None and pc.voided(b) is None
    pc.failed(a, now_ms=0, error=full)
    assert pc.voided(b) is full  # planned from what a's failure took back
    c = Commit((), pc.generation)  # planned after the failure was handled
    pc.failed(b, now_ms=0, error=full)  # b carried out as failed: voids nothing more
    assert pc.voided(c) is None
    pc.failed(c, now_ms=0)  # a commit that failed without an error (no disk refusal)
    assert pc.voided(Commit((), pc.generation)) is None


def test_a_catch_up_read_behind_a_failed_commit_sends_nothing_the_disk_never_got() -> None:
    """Found by an adversarial run (a full disk under load, a replica subscribing): a
    replica's catch-up, read from the sequencer's memory while the commit of those entries
    was on its way, left after that commit failed; the sequencer then numbered other entries
    at those seqs, and the replica held a fork."""
    import random

    from p2pworld.core.cores import build_cores
    from p2pworld.core.node import Called, CommitFailed, Flush, NodeCore, PeerUp, Received
    from p2pworld.identity import Ed25519Signer, node_id
    from p2pworld.wire import Subscribe

    cores = build_cores(Ed25519Signer(bytes(32)), workspace="lab", rng=random.Random(0),
                        incarnation=1)
    core = NodeCore(cores, first_tick_ms=0)
    peer_key = Ed25519Signer(bytes([7]) * 32).public_key
    peer = node_id(peer_key)
    rec, fx = cores.hub.open_channel("c", now_ms=0)
    core.handle(Called(effects=tuple(fx)), now_ms=0)
    core.handle(PeerUp(peer=peer, key=peer_key), now_ms=0)
    core.handle(Flush(), now_ms=0)  # the record's commit (taken as done)
    _, fx = cores.hub.publish(rec.channel, b"x", idem_key=b"k", now_ms=1)
    core.handle(Called(effects=tuple(fx)), now_ms=1)
    a = core.handle(Flush(), now_ms=1)  # entry 1's commit, on its way to the disk
    (commit,) = [s for s in a.steps if isinstance(s, Commit)]
    # The replica subscribes meanwhile: its catch-up is read from memory (entry 1).
    core.handle(Received(peer=peer, messages=(Subscribe(rec.channel, 0),)), now_ms=2)
    b = core.handle(Flush(), now_ms=2)
    sent = [e for s in b.steps if isinstance(s, Carry) for e in core.persist.carried(s)]
    assert any(isinstance(m, Entries) for e in sent for m in _messages(e))  # before: sent
    core.handle(CommitFailed(commit=commit, error=StoreFull("full"), on_disk=(
        (rec.channel, None),)), now_ms=3)
    after = [e for s in b.steps if isinstance(s, Carry) for e in core.persist.carried(s)]
    assert not any(isinstance(m, Entries) for e in after for m in _messages(e))


def _messages(e: Any) -> list[Any]:
    if isinstance(e, Send):
        return [e.message]
    return list(getattr(e, "messages", ()))
