"""The simulator's executor: what the runtime's effect runner and store task do, carried out
against the simulated network, clock and store, with the node's own cores deciding.

The runtime (:mod:`p2pworld.runtime.node`) and this executor drive the same node core
(:mod:`p2pworld.core.node`): an input in, a plan out, carried out in its order (submissions
first, then the steps), and one timer for the plan's wake-up. Neither decides. A commit here
is instant, or (``store_latency``) takes a while, with later plans queued behind it as in the
runtime's store task; a crash loses exactly what no commit held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2pworld import codec
from p2pworld.channel.hub import Delivered, Notice, Outcomes, PublishResult, Resolved
from p2pworld.core.calls import Call
from p2pworld.core.node import Called, CommitFailed, Flush, Input, Plan, StoreProbed, TimerFired
from p2pworld.core.persist import Commit, gated_tail, persisted_channels
from p2pworld.effects import (
    CloseSession,
    Dial,
    PeerMisbehaved,
    ProbeStore,
    RefreshToken,
    Send,
    SendAll,
)
from p2pworld.errors import P2PWorldError, StoreFull
from p2pworld.io.log_store import stored_or_damaged
from p2pworld.log.entry import Entry
from p2pworld.wire import Message
from p2pworld.world.core import WorldChanged, WorldSave

if TYPE_CHECKING:
    import random

    from p2pworld.testing.nostr_sim import SimNostr
    from p2pworld.testing.sim import SimNode, Stats


@dataclass
class Ack:
    """One acknowledged publish, as the writer saw it."""

    writer: str
    channel: bytes
    key: bytes
    payload: bytes
    seq: int
    strength: str
    status: str
    at: float


class Executor:
    """The effect-carrying half of :class:`~p2pworld.testing.sim.Simulator`."""

    now: float
    store_latency: float
    stats: Stats
    nostr: SimNostr | None
    sessions: set[frozenset[str]]

    if TYPE_CHECKING:
        rng: random.Random

        def now_ms(self, node: SimNode) -> int: ...
        def at(self, delay: float, fn: Callable[[], None]) -> None: ...
        def _record(self, *parts: Any) -> None: ...
        def _send(self, src: SimNode, dst_id: bytes, msgs: tuple[Message, ...]) -> None: ...
        def _ask_token(self, node: SimNode) -> None: ...
        def _by_id(self) -> dict[bytes, SimNode]: ...
        def _disconnect(self, a: str, b: str) -> None: ...
        def _dial(self, node: SimNode, d: Dial) -> None: ...

    def _carry(self, node: SimNode, fx: list[Any], *, inp: Input | None = None) -> None:
        """Hand ``node``'s core an input (by default: an API call's effects ``fx``) and
        carry out what it plans, flushing until nothing is left, as the runtime's effect
        runner and store task do (a commit is instant here; a crash between events loses
        only what no commit held)."""
        core = node.core
        if core is None:
            return
        if node.store_jobs and isinstance(inp, (Flush, TimerFired)):
            # The effect runner is blocked handing a plan to the busy store: it flushes
            # (or runs the due timers) once the store takes that plan.
            node.timer_due = node.timer_due or isinstance(inp, TimerFired)
            return
        # (Simulated time stands still while an input is carried out: one clock reading.)
        now_ms = self.now_ms(node)
        # Flushed at once unless the runner is blocked on the busy store (then it flushes
        # once the store takes that plan); a plan with work is always carried out.
        plan = core.handle(inp if inp is not None else Called(effects=tuple(fx)),
                           now_ms=now_ms, flush=not node.store_jobs)
        while True:
            if plan.leave or plan.steps:
                self._carry_plan(node, plan)
            elif not plan.ready:
                break
            if node.store_jobs:
                break
            plan = core.handle(_FLUSH, now_ms=now_ms)
        self._wake_at(node, plan.wake_at_ms)

    def _calls(self, node: SimNode, calls: Sequence[Call]) -> list[Any]:
        """API calls (the workload's), handed to the node core as the runtime's API hands
        them (:mod:`p2pworld.core.calls`), then flushed: what each returned. A refused call
        raises, typed, and the calls after it are not made."""
        core = node.core
        if core is None:
            return []
        try:
            return [core.handle(c, now_ms=self.now_ms(node)).result for c in calls]
        finally:
            self._carry(node, [], inp=_FLUSH)

    def _carry_plan(self, node: SimNode, plan: Plan) -> None:
        for e in plan.leave:
            self._effect(node, e)
        if self.store_latency <= 0:
            self._carry_steps(node, plan.steps, 0)
        elif plan.steps:
            # As the runtime hands the steps to its store task: in order, behind the plans
            # already waiting; the core plans on meanwhile.
            node.store_jobs.append(plan.steps)
            if not node.store_busy:
                self._next_store_job(node)

    def _carry_steps(self, node: SimNode, steps: tuple[Any, ...], start: int) -> bool:
        """Carry out ``steps`` from ``start``. With a store latency, a commit stops this and
        the rest follows once it is done: True when it stopped so."""
        for i in range(start, len(steps)):
            step = steps[i]
            if type(step) is Commit:
                if self.store_latency > 0:
                    self._commit_later(node, steps, i)
                    return True
                if not self._commit(node, step, gated_tail(steps, i)) and step.gates:
                    return False
            else:
                for e in node.core.carried(step) if node.core else step.effects:
                    self._effect(node, e)
        return False

    def _next_store_job(self, node: SimNode) -> None:
        """The store takes the oldest waiting plan's steps (one at a time, as the runtime's
        store task)."""
        while node.store_jobs:
            node.store_busy = True
            steps = node.store_jobs.pop(0)
            self.at(0, lambda: self._unblocked(node))
            if self._carry_steps(node, steps, 0):
                return
        node.store_busy = False

    def _unblocked(self, node: SimNode) -> None:
        """The store took the plan the effect runner was handing it: the runner goes on."""
        due, node.timer_due = node.timer_due, False
        self._carry(node, [], inp=TimerFired() if due else Flush())

    def _commit_later(self, node: SimNode, steps: tuple[Any, ...], i: int) -> None:
        """The commit ``steps[i]`` lands after the store latency (a crash before loses it);
        then the core flushes what it planned meanwhile."""
        gen = node.incarnation

        def done() -> None:
            if not node.up or node.incarnation != gen:
                return  # the process died with the commit on its way
            step = steps[i]
            ok = self._commit(node, step, gated_tail(steps, i))
            if not ((ok or not step.gates) and self._carry_steps(node, steps, i + 1)):
                self._next_store_job(node)
            if ok:
                return
            # The core heard of the failure (an input): the runner wakes and flushes.
            self._carry(node, [], inp=Flush())

        self.at(self.store_latency * (0.5 + self.rng.random()), done)

    def _commit(self, node: SimNode, commit: Commit, tail: tuple[Any, ...]) -> bool:
        """One durable write; on a full disk the core hears what the disk holds of the
        commit's channels (as from the runtime's store task)."""
        assert node.core is not None
        err = node.core.persist.voided(commit)
        try:
            if err is None:
                node.store.apply(commit.ops)
                self._note_epochs(commit)
                return True
        except StoreFull as e:
            err = e
        self.stats.reach("store_full")
        on_disk = stored_or_damaged(node.store, persisted_channels(commit))
        node.core.handle(CommitFailed(commit=commit, error=err, on_disk=on_disk, tail=tail),
                         now_ms=self.now_ms(node))
        return False

    def _note_epochs(self, commit: Commit) -> None:
        """When each epoch change was first on some disk (the checkers' ``stale_ack``)."""
        for op in commit.ops:
            for ec in getattr(op, "epochs", ()):
                self.stats.epochs.setdefault((ec.channel, ec.epoch), (ec.start_seq, self.now))

    def _wake_at(self, node: SimNode, wake_ms: int | None) -> None:
        """One timer per node, for the earliest wake-up its core asked for."""
        if wake_ms is None:
            return
        at = self.now + max(0, wake_ms - self.now_ms(node)) / 1000
        if node.wake_timer is not None and self.now <= node.wake_timer <= at:
            return
        node.wake_timer = at
        gen = node.incarnation

        def fire() -> None:
            if not node.up or node.incarnation != gen or node.wake_timer != at:
                return  # crashed, or superseded by an earlier wake-up
            node.wake_timer = None
            self._carry(node, [], inp=TimerFired())

        self.at(at - self.now, fire)

    def _effect(self, node: SimNode, e: Any) -> None:
        t = type(e)
        self._record("fx", node.name, t.__name__)
        carry = CARRIERS.get(t)
        if carry is not None:
            carry(self, node, e)

    # One method per effect the cores plan (CARRIERS): carrying out, never deciding.

    def _carry_send(self, node: SimNode, e: Send) -> None:
        self._send(node, e.peer, (e.message,))

    def _carry_send_all(self, node: SimNode, e: SendAll) -> None:
        self._send(node, e.peer, e.messages)

    def _carry_delivered(self, node: SimNode, e: Delivered) -> None:
        if self.nostr is not None:
            self.nostr.delivered(node, e)
        got = node.delivered.setdefault(e.channel, [])
        for x in e.entries:
            got.append((node.incarnation, x.seq, x.hash))
            sent = _sent_at(x)
            if sent is not None:
                self.stats.latencies.append(self.now - sent)

    def _carry_outcomes(self, node: SimNode, e: Outcomes) -> None:
        for r in e.items:
            self._resolved(node, r)

    def _carry_world_save(self, node: SimNode, e: WorldSave) -> None:
        node.world_store.save(e.author, e.records)

    def _carry_world_changed(self, node: SimNode, e: WorldChanged) -> None:
        node.world_events.append(e.event)

    def _carry_refresh(self, node: SimNode, e: RefreshToken) -> None:
        self._ask_token(node)

    def _carry_probe(self, node: SimNode, e: ProbeStore) -> None:
        try:
            node.store.probe()
            ok = True
        except StoreFull:
            ok = False
        assert node.core is not None
        node.core.handle(StoreProbed(ok=ok), now_ms=self.now_ms(node))

    def _carry_dial(self, node: SimNode, e: Dial) -> None:
        self._dial(node, e)

    def _carry_close(self, node: SimNode, e: CloseSession) -> None:
        peer = self._by_id().get(e.peer)
        if peer is not None and frozenset((node.name, peer.name)) in self.sessions:
            self.stats.reach(e.reason.lower())
            self._disconnect(node.name, peer.name)

    def _carry_misbehaved(self, node: SimNode, e: PeerMisbehaved) -> None:
        self.stats.reach(f"refused:{e.error.code}")

    def _carry_notice(self, node: SimNode, e: Notice) -> None:
        node.notices.append(e.error)
        code = e.error.code
        if code == "LOST_WRITE":
            self.stats.lost_notices.add((node.name, e.channel,
                                         int(e.error.details.get("seq", 0))))
        elif code == "CHECKPOINT_TOO_OLD":
            self.stats.reach("checkpoint_too_old")
        elif code == "FORKED":
            self.stats.reach("fork")
            self.stats.fork_notices.add(node.name)

    def _resolved(self, node: SimNode, e: Resolved) -> None:
        pend = node.pending.pop(e.req, None)
        out = e.outcome
        name = out.status if isinstance(out, PublishResult) else out.code
        self.stats.outcomes[name] = self.stats.outcomes.get(name, 0) + 1
        if pend is None:
            return
        ch, key, payload, _ = pend
        if isinstance(out, PublishResult):
            if out.status == "duplicate":
                self.stats.reach("duplicate_submit")
            self.stats.acks.append(Ack(node.name, ch, key, payload, out.seq, out.strength,
                                       out.status, self.now))
        elif out.code == "CONFLICT":
            self.stats.reach("conflict")


CARRIERS: dict[type, Callable[[Executor, SimNode, Any], None]] = {
    Send: Executor._carry_send, SendAll: Executor._carry_send_all,
    Delivered: Executor._carry_delivered, Resolved: Executor._resolved,
    Outcomes: Executor._carry_outcomes, WorldSave: Executor._carry_world_save,
    WorldChanged: Executor._carry_world_changed, RefreshToken: Executor._carry_refresh,
    ProbeStore: Executor._carry_probe, Dial: Executor._carry_dial,
    CloseSession: Executor._carry_close, PeerMisbehaved: Executor._carry_misbehaved,
    Notice: Executor._carry_notice,
}
"""How the simulator carries out each effect the cores plan, by its exact type (the trio
runtime's is :data:`p2pworld.runtime.node.CARRIERS`; what this one lacks is listed, with its
reason, in ``tests/test_effect_coverage.py``)."""


_FLUSH = Flush()
"""The one :class:`Flush` input (inputs are frozen values: one serves every flush)."""


def _sent_at(e: Entry) -> float | None:
    if e.kind != "msg":
        return None
    try:
        m = codec.decode(e.payload)
        return float(m["t"]) / 1e6 if isinstance(m, dict) and isinstance(m.get("t"), int) \
            else None
    except P2PWorldError:
        return None
