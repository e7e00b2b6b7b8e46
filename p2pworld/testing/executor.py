"""The simulator's executor: what the runtime's effect runner and store task do, carried out
against the simulated network, clock and store, with the node's own cores deciding.

The runtime (:mod:`p2pworld.runtime.node`) and this executor run the same persist core
(:mod:`p2pworld.core.persist`): the writer's pacing, submissions first, then the plan step by
step. Neither decides: a commit here is instant, and a crash between events loses exactly what
no commit held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2pworld import codec
from p2pworld.channel.hub import ChannelHub, Delivered, Notice, PublishResult, Resolved
from p2pworld.core.persist import BATCHES_IN_FLIGHT, Commit, leaves_at_once, pace
from p2pworld.effects import PeerMisbehaved, Send
from p2pworld.errors import P2PWorldError
from p2pworld.log.entry import Entry
from p2pworld.wire import Message
from p2pworld.world.core import WorldChanged, WorldSave

if TYPE_CHECKING:
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
    stats: Stats
    nostr: SimNostr | None

    if TYPE_CHECKING:
        def now_ms(self, node: SimNode) -> int: ...
        def at(self, delay: float, fn: Callable[[], None]) -> None: ...
        def _record(self, *parts: Any) -> None: ...
        def _send(self, src: SimNode, dst_id: bytes, msg: Message) -> None: ...

    def _carry(self, node: SimNode, fx: list[Any], *, paced: bool = False) -> None:
        """What the runtime's effect runner and store task do, with the same cores deciding:
        the writer's pacing (:func:`~p2pworld.core.persist.pace`), submissions first, then
        the persist core's plan, step by step (a commit is instant here; a crash between
        events loses only what no commit held)."""
        hub = node.hub
        if hub is None:
            return
        node.queue += fx
        while True:
            if not paced and self._pacing(node, hub):
                return
            paced = False
            fx, node.queue = node.queue + hub.flush(now_ms=self.now_ms(node)), []
            if not fx:
                break
            for e in fx:
                if leaves_at_once(e):
                    self._effect(node, e)
            for step in node.persist.plan([e for e in fx if not leaves_at_once(e)],
                                          now_ms=self.now_ms(node)):
                if isinstance(step, Commit):
                    node.store.apply(step.ops)
                else:
                    for e in step.effects:
                        self._effect(node, e)
        self._schedule_lazy(node)

    def _pacing(self, node: SimNode, hub: ChannelHub) -> bool:
        """Whether the flush waits (the runtime waits while the pace stays the one it began
        waiting on, until its deadline)."""
        p = pace(queued=hub.queued, in_flight=hub.in_flight,
                 batches_in_flight=hub.batches_in_flight(BATCHES_IN_FLIGHT))
        if p.wait_ms and node.pacing is None:
            node.pacing = (p, self.now + p.wait_ms / 1000)
            gen = node.incarnation
            self.at(p.wait_ms / 1000, lambda: self._pace_over(node, gen))
            return True
        if p.wait_ms and node.pacing is not None and node.pacing[0] == p and \
                self.now < node.pacing[1]:
            return True
        node.pacing = None
        return False

    def _pace_over(self, node: SimNode, gen: int) -> None:
        if node.up and node.incarnation == gen and node.pacing is not None and \
                self.now >= node.pacing[1]:
            node.pacing = None
            self._carry(node, [], paced=True)

    def _schedule_lazy(self, node: SimNode) -> None:
        wake = node.persist.wake_at()
        if wake is None:
            return
        at = self.now + max(0, wake - self.now_ms(node)) / 1000
        if node.lazy_timer is not None and node.lazy_timer <= at:
            return
        node.lazy_timer = at
        gen = node.incarnation

        def write() -> None:
            if not node.up or node.incarnation != gen:
                return
            node.lazy_timer = None
            commit = node.persist.idle(now_ms=self.now_ms(node))
            if commit is not None:
                node.store.apply(commit.ops)
            self._schedule_lazy(node)

        self.at(at - self.now, write)

    def _effect(self, node: SimNode, e: Any) -> None:
        self._record("fx", node.name, type(e).__name__)
        if isinstance(e, Send):
            self._send(node, e.peer, e.message)
        elif isinstance(e, Delivered):
            if self.nostr is not None:
                self.nostr.delivered(node, e)
            got = node.delivered.setdefault(e.channel, [])
            for x in e.entries:
                got.append((node.incarnation, x.seq, x.hash))
                sent = _sent_at(x)
                if sent is not None:
                    self.stats.latencies.append(self.now - sent)
        elif isinstance(e, Resolved):
            self._resolved(node, e)
        elif isinstance(e, WorldSave):
            node.world_store.save(e.author, e.records)
        elif isinstance(e, WorldChanged):
            node.world_events.append(e.event)
        elif isinstance(e, PeerMisbehaved):
            self.stats.reach(f"refused:{e.error.code}")
        elif isinstance(e, Notice):
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


def _sent_at(e: Entry) -> float | None:
    if e.kind != "msg":
        return None
    try:
        m = codec.decode(e.payload)
        return float(m["t"]) / 1e6 if isinstance(m, dict) and isinstance(m.get("t"), int) \
            else None
    except P2PWorldError:
        return None
