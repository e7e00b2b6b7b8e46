"""The node core: one pure core per node, ``handle(input, now_ms) -> Plan``.

Both executors, the trio runtime (:mod:`p2pworld.runtime.node`) and the simulator
(:mod:`p2pworld.testing.executor`), drive a node only through :meth:`NodeCore.handle`: they
turn what happened (a frame arrived with its messages, a session came up or went down, an API
call ran, a wake-up came due, a commit failed) into an input, and carry out the
:class:`Plan` they get back. The decisions between input and plan are made here, in the same
code for both: when the writer's batch goes (:func:`~p2pworld.core.persist.pace`), what must be
on disk before what (:class:`~p2pworld.core.persist.PersistCore`), when the cores' timers run,
and how effects are grouped into batches.

**Inputs** are frozen, keyword-only values. Events (:class:`Received`, :class:`PeerUp`,
:class:`PeerDown`, an API call of :mod:`p2pworld.core.calls`) only queue work: their plan is
empty and ``ready`` says that a batch waits. :class:`Flush` (the executor can take a batch
now) and :class:`TimerFired` (a wake-up the last plan asked for came due) return the batch.

**A plan** is ``leave`` (writer submissions: they may go ahead of earlier batches still on
their way to disk), then ``steps`` in order (:class:`~p2pworld.core.persist.Carry` and
:class:`~p2pworld.core.persist.Commit`; what follows a commit waits for it), and ``wake_at_ms``:
when to call again with :class:`TimerFired` (the earliest of the writer's pacing deadline, the
lazy outbox's commit and the cores' next deadline: a heartbeat, an announcement, a graft, a
digest pull, a member that may go stale, a start-up exchange's bound, and every
:data:`TICK_MS` the compute duties while requests are open). There is no periodic tick: a node
with nothing due sleeps until an input. An executor keeps one timer, for the latest plan's
``wake_at_ms``.

**Batches.** On the channel data path effects are per batch, never per message: the sends of a
flush to one peer become one :class:`~p2pworld.effects.SendAll` (one write, packed into as few
frames as fit), its outcomes one :class:`~p2pworld.channel.hub.Outcomes`; a batch's
persistence is one commit. Grouping never moves an effect across a durable one, so the
persist core's ordering holds for the groups.

Example:
    >>> import random
    >>> from p2pworld.core.cores import build_cores
    >>> from p2pworld.identity import Ed25519Signer
    >>> from p2pworld.world.doc import NodeInfo
    >>> cores = build_cores(Ed25519Signer(bytes(32)), workspace="lab", rng=random.Random(0),
    ...                     incarnation=1)
    >>> core = NodeCore(cores, first_tick_ms=0)
    >>> rec, fx = cores.hub.open_channel("notes", now_ms=0)
    >>> plan = core.handle(Called(effects=tuple(fx)), now_ms=0)  # an event only queues
    >>> plan.ready, plan.steps
    (True, ())
    >>> [type(s).__name__ for s in core.handle(Flush(), now_ms=0).steps]
    ['Commit', 'Carry']
    >>> core.handle(Flush(), now_ms=0).wake_at_ms  # the start: the compute duties run once
    0
    >>> core.handle(TimerFired(), now_ms=0).wake_at_ms is None  # alone, unjoined: nothing due
    True
    >>> _ = core.handle(Called(effects=tuple(cores.world.join(NodeInfo(), now_ms=0))), now_ms=0)
    >>> plan = core.handle(Flush(), now_ms=0)  # its records, to persist and announce
    >>> plan.empty, plan.wake_at_ms  # with work in it, a plan asks to be called again at once
    (False, None)
    >>> core.handle(Flush(), now_ms=0).wake_at_ms  # the last, empty one: the announcement
    500
    >>> core.handle(TimerFired(), now_ms=500).wake_at_ms  # then its next heartbeat
    5000
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from p2pworld.auth.schedule import TokenSchedule
from p2pworld.channel.hub import Delivered, Notice
from p2pworld.core.calls import CALLS, Call
from p2pworld.core.cores import Cores, NodeEffect
from p2pworld.core.disk import StoreProbe, store_full, writable_again
from p2pworld.core.lanes import LaneBook, held_back
from p2pworld.core.peers import PeerCore
from p2pworld.core.persist import (
    BATCHES_IN_FLIGHT,
    Carry,
    Commit,
    Pace,
    PersistCore,
    Step,
    batched,
    leaves_at_once,
    pace,
)
from p2pworld.core.relays import RendezvousSchedule
from p2pworld.effects import (
    CloseSession,
    ConnectRendezvous,
    ProbeStore,
    RefreshToken,
    Send,
)
from p2pworld.errors import P2PWorldError
from p2pworld.log.verify import StoredChannel
from p2pworld.transport.candidate import Candidate
from p2pworld.transport.peering import Keepalive
from p2pworld.wire import Message, Ping, Pong
from p2pworld.world.links import LinkUpdates

TICK_MS = 250
"""How often the requester's compute duties run while its own compute channel has requests not
yet decided (they depend on offers and presence, not on a deadline). Every other timer run is
at a deadline a core asked for (:meth:`Cores.wake_at`)."""


@dataclass(frozen=True, kw_only=True)
class Received:
    """A frame arrived from ``peer`` with these messages (already authenticated and decoded)."""

    peer: bytes
    messages: tuple[Message, ...]


@dataclass(frozen=True, kw_only=True)
class PeerUp:
    """A session with ``peer`` (node id) is up; ``key`` is its authenticated public key,
    ``lane`` its lane (``primary`` or ``nostr``) and ``via`` which primary one (``direct`` or
    ``relay``: rendezvous-relayed), ``initiator`` whether this node dialled it, ``nostr`` the
    Nostr key the peer attests (empty if none)."""

    peer: bytes
    key: bytes
    lane: str = "primary"
    via: str = "direct"
    initiator: bool = False
    nostr: bytes = b""


@dataclass(frozen=True, kw_only=True)
class CandidateSeen:
    """Discovery record ``key`` (``mdns:<name>``, ``rv:<url>``, ``nostr``...) says where a
    peer may be."""

    key: str
    candidate: Candidate


@dataclass(frozen=True, kw_only=True)
class CandidateGone:
    """Discovery record ``key`` no longer lists ``peer`` (None: any peer)."""

    key: str
    peer: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class DialDone:
    """A :class:`~p2pworld.core.peers.Dial` ended: ``ok`` if it opened a session (kept or
    not), else ``code`` says why not."""

    peer: bytes
    ok: bool
    code: str = ""
    static: str = ""
    """The configured peer's URL, for a dial of one (``peer``: the id its handshake gave)."""


@dataclass(frozen=True, kw_only=True)
class PeerDown:
    """The session with ``peer`` ended."""

    peer: bytes


@dataclass(frozen=True, kw_only=True)
class Called:
    """Effects a caller computed on the cores itself (tests and scripted faults; the API's
    calls are inputs of their own, :mod:`p2pworld.core.calls`)."""

    effects: tuple[NodeEffect, ...]


@dataclass(frozen=True, kw_only=True)
class TokenMinted:
    """The control service answered a :class:`~p2pworld.effects.RefreshToken` with ``token``;
    ``keys`` (key id -> public key) are the signing keys it published with it (None: not
    fetched); ``expires_at`` (unix s) counts only if the token's claims cannot be read here."""

    token: bytes
    expires_at: float = 0.0
    keys: dict[str, bytes] | None = None


@dataclass(frozen=True, kw_only=True)
class TokenRefused:
    """A :class:`~p2pworld.effects.RefreshToken` failed (unreachable, or refused: ``code``)."""

    code: str


@dataclass(frozen=True, kw_only=True)
class RevocationsLearned:
    """A verified revocation list (token ids and node ids): from now on they fail every
    check, and the sessions of peers whose token it revokes end (with them what those peers
    read: subscriptions, gossip)."""

    tokens: frozenset[bytes] = frozenset()
    nodes: frozenset[bytes] = frozenset()


@dataclass(frozen=True, kw_only=True)
class Flush:
    """The executor can take a batch now."""


@dataclass(frozen=True, kw_only=True)
class TimerFired:
    """A wake-up a plan asked for came due."""


@dataclass(frozen=True, kw_only=True)
class CommitFailed:
    """``commit`` did not reach the disk: its outbox rows wait for the next. With ``error``
    (the disk is full: :class:`~p2pworld.errors.StoreFull`), the node goes read-only
    (:func:`~p2pworld.core.disk.store_full`): ``on_disk`` is what the disk holds of each
    channel the commit changed (:func:`~p2pworld.core.persist.persisted_channels`; None: not
    stored), ``tail`` what was to follow the commit in its plan
    (:func:`~p2pworld.core.persist.gated_tail`)."""

    commit: Commit
    error: P2PWorldError | None = None
    on_disk: tuple[tuple[bytes, StoredChannel | P2PWorldError | None], ...] = ()
    tail: tuple[NodeEffect, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RendezvousEnded:
    """The connection a :class:`~p2pworld.effects.ConnectRendezvous` asked for ended with
    ``error`` (typed: closed, unreachable, refused; None: the task carrying it out failed,
    and its scope's failure is already on the notices); ``registered``: it had
    registered."""

    url: str
    error: P2PWorldError | None
    registered: bool = False


@dataclass(frozen=True, kw_only=True)
class StoreProbed:
    """The answer to a :class:`~p2pworld.effects.ProbeStore`: the probe write committed
    (``ok``: space is back) or the disk is still full."""

    ok: bool


Input = (Received | PeerUp | PeerDown | Call | Called | Flush | TimerFired | CommitFailed
         | StoreProbed | RendezvousEnded | TokenMinted | TokenRefused | RevocationsLearned
         | CandidateSeen | CandidateGone | DialDone)


class Plan(NamedTuple):
    """What to carry out for one input, in this order: ``leave``, then ``steps`` (see the
    module's docstring). A plan with work, or ``ready``, says: call again with :class:`Flush`
    as soon as possible. The plan that ends that loop (empty, not ready) is the one after
    which the executor sleeps, and only it carries ``wake_at_ms``: when to call with
    :class:`TimerFired` (None: not before another input). ``result``: what an API call
    (:mod:`p2pworld.core.calls`) returns. (A named tuple: it costs half a frozen dataclass.)"""

    leave: tuple[NodeEffect, ...] = ()
    steps: tuple[Step, ...] = ()
    wake_at_ms: int | None = None
    ready: bool = False
    result: Any = None

    @property
    def empty(self) -> bool:
        """Nothing to carry out now."""
        return not self.leave and not self.steps


@dataclass
class NodeCore:
    """One node's decisions between what happened and what to do (see the module's
    docstring). ``first_tick_ms``: the cores' timers do not run before it (a process's start
    phase); ``tick_ms``: how often the compute duties run while requests are open."""

    cores: Cores
    first_tick_ms: int = 0
    tick_ms: int = TICK_MS
    persist: PersistCore = field(default_factory=PersistCore)
    token: TokenSchedule | None = None
    """When to refresh this node's token (None: no control service)."""
    keepalive: Keepalive | None = None
    """Pings, round trips and dead sessions (None: not watched)."""
    links: LinkUpdates | None = None
    """This node's links in its world document, written once sessions settle (None: not
    written)."""
    peers: PeerCore | None = None
    """Which peers to dial, on which lane, when; which session survives (None: the
    executor connects sessions itself, as unit tests do)."""
    rendezvous: RendezvousSchedule | None = None
    """When to connect to each rendezvous node (None: none configured)."""
    probe: StoreProbe = field(default_factory=StoreProbe)
    """While the store is full: when to try a write again."""
    queue: list[NodeEffect] = field(default_factory=list)
    """Effects of inputs not yet taken by a flush."""
    pacing: tuple[Pace, int] | None = None
    """The pace a flush is waiting on, and until when."""
    lanes: LaneBook = field(default_factory=LaneBook)
    """Each peer's lane, what may cross the Nostr lane, the lane of each delivery."""
    poll_at_ms: int | None = field(default=None, init=False)
    """When the compute duties run next (None: no request is open)."""
    stats: dict[str, int] = field(default_factory=lambda: {"inputs": 0, "flushes": 0,
                                                           "waits": 0, "timer_runs": 0})

    def __post_init__(self) -> None:
        self._last_now_ms: int | None = None
        self._started = False
        # The compute duties run once at the start (requests loaded from disk may be open).
        self.poll_at_ms = self.first_tick_ms

    @property
    def queued(self) -> int:
        """Work waiting for a flush (effects and publishes not yet signed)."""
        return len(self.queue) + self.cores.hub.queued

    @property
    def idle(self) -> bool:
        """Nothing waits: no queued effect, no unflushed core work, no uncommitted row."""
        return not self.queue and self.cores.hub.idle and not self.persist.lazy

    def handle(self, inp: Input, *, now_ms: int, flush: bool = False) -> Plan:
        """Apply ``inp`` at ``now_ms`` (the node's clock) and say what to carry out.
        ``flush``: an executor that would flush at once if the plan were ``ready`` gets the
        flush's plan instead (the same as calling again with :class:`Flush`)."""
        self.stats["inputs"] += 1
        if self._last_now_ms is not None and now_ms < self._last_now_ms:
            self._clock_went_back(self._last_now_ms - now_ms)
        self._last_now_ms = now_ms
        on = _HANDLERS.get(type(inp))
        if on is None:
            raise TypeError(f"not a node-core input: {type(inp).__name__}")
        plan = on(self, inp, now_ms)
        if plan is not None:
            return plan
        # An event only queues: the executor flushes when it can take a batch.
        ready = not self.idle
        if ready and flush:
            return self._flush(now_ms)
        return Plan(wake_at_ms=None if ready else self.wake_at(), ready=ready)

    def _on_received(self, inp: Received, now_ms: int) -> None:
        k = self.keepalive
        if k is not None:
            k.heard(inp.peer, now_ms=now_ms)
        for m in inp.messages:
            if isinstance(m, Ping):
                self.queue.append(Send(inp.peer, Pong(m.n)))
            elif isinstance(m, Pong):
                if k is not None:
                    k.pong(inp.peer, m.n, now_ms=now_ms)
            else:
                self.queue += self.cores.receive(inp.peer, m, now_ms=now_ms)

    def _on_called(self, inp: Called, now_ms: int) -> None:
        self.queue += inp.effects

    def _on_call(self, inp: Call, now_ms: int) -> Plan:
        result, fx = inp.apply(self.cores, now_ms)
        self.queue += fx
        ready = not self.idle
        return Plan(wake_at_ms=None if ready else self.wake_at(), ready=ready, result=result)

    def _on_peer_up(self, inp: PeerUp, now_ms: int) -> None:
        if self.keepalive is not None:
            self.keepalive.up(inp.peer, now_ms=now_ms)
        if self.links is not None:
            self.links.up(inp.peer, "nostr" if inp.lane == "nostr" else "direct",
                          now_ms=now_ms)
        if self.peers is not None:
            self.peers.up(inp.peer, inp.lane, initiator=inp.initiator, now_ms=now_ms)
            self.peers.learned_nostr(inp.peer, inp.nostr)
        self.lanes.up(inp.peer, "nostr" if inp.lane == "nostr" else inp.via)
        self.queue += self.cores.peer_up(inp.peer, inp.key, now_ms=now_ms)

    def _on_peer_down(self, inp: PeerDown, now_ms: int) -> None:
        if self.keepalive is not None:
            self.keepalive.down(inp.peer)
        if self.links is not None:
            self.links.down(inp.peer, now_ms=now_ms)
        if self.peers is not None:
            self.peers.down(inp.peer, now_ms=now_ms)
        self.lanes.down(inp.peer)
        self.queue += self.cores.peer_down(inp.peer)

    def _on_commit_failed(self, inp: CommitFailed, now_ms: int) -> None:
        self.persist.failed(inp.commit, now_ms=now_ms, error=inp.error)
        if inp.error is not None:
            self.queue += store_full(self.cores.hub, self.probe, inp.error, inp.on_disk,
                                     inp.tail, now_ms=now_ms)

    def _on_rendezvous_ended(self, inp: RendezvousEnded, now_ms: int) -> None:
        if self.rendezvous is not None:
            self.rendezvous.ended(inp.url, registered=inp.registered, now_ms=now_ms)
        # The relay scope ended (its relayed sessions with it); it is connected again.
        if inp.error is not None:
            self.queue.append(Notice(b"", inp.error, scope="relay", subject=inp.url))

    def _on_store_probed(self, inp: StoreProbed, now_ms: int) -> None:
        self.probe.probed(inp.ok, now_ms=now_ms)
        if inp.ok:
            self.queue += writable_again(self.cores.hub)

    def _on_revocations(self, inp: RevocationsLearned, now_ms: int) -> None:
        c = self.cores
        if c.auth is not None:
            revoked = c.auth.revoke(tokens=inp.tokens, nodes=inp.nodes)
            c.world.revocations_learned()
            self.queue += [CloseSession(pid, "REVOKED") for pid, key in
                           sorted(c.hub.peers.items()) if key in revoked]

    def _on_token_refused(self, inp: TokenRefused, now_ms: int) -> None:
        if self.token is not None:
            self.token.failed(now_ms=now_ms)
        self.stats["token_refused"] = self.stats.get("token_refused", 0) + 1

    def _on_timer(self, inp: TimerFired, now_ms: int) -> Plan:
        c, k = self.cores, self.keepalive
        if self.token is not None and self.token.take(now_ms=now_ms):
            self.queue.append(RefreshToken())
        if self.probe.take(now_ms=now_ms):
            self.queue.append(ProbeStore())
        if self.rendezvous is not None:
            self.queue += [ConnectRendezvous(u) for u in self.rendezvous.take(now_ms=now_ms)]
        if k is not None:
            self.queue += k.due(now_ms=now_ms)
        if self.links is not None and (changed := self.links.take(now_ms=now_ms)):
            self.queue += c.own_world(c.world.write_links(changed, now_ms=now_ms))
        if self.peers is not None:
            self.queue += self.peers.due(now_ms=now_ms, nostr_of=lambda pid: self._nostr_of(
                pid, now_ms))
        due = self.timers_at()
        if due is not None and now_ms >= due:
            self.stats["timer_runs"] += 1
            self._started = True
            self.queue += c.tick(now_ms=now_ms)
            if self.poll_at_ms is not None and now_ms >= self.poll_at_ms:
                self.queue += c.drive_compute(now_ms=now_ms)
                self.poll_at_ms = now_ms + self.tick_ms if c.compute_open() else None
        return self._flush(now_ms)

    def _peering(self, inp: CandidateSeen | CandidateGone | DialDone, now_ms: int) -> None:
        if self.peers is None:
            return
        if isinstance(inp, CandidateSeen):
            self.peers.seen(inp.key, inp.candidate, now_ms=now_ms)
        elif isinstance(inp, CandidateGone):
            self.peers.gone(inp.key, inp.peer)
        elif inp.static:
            self.peers.dialled_static(inp.static, inp.peer, ok=inp.ok, now_ms=now_ms)
        else:
            self.peers.dialled(inp.peer, ok=inp.ok, code=inp.code, now_ms=now_ms)

    def _nostr_of(self, peer: bytes, now_ms: int) -> bytes:
        """A peer's Nostr key from its world record (empty if it has none)."""
        m = self.cores.world.member(peer, now_ms=now_ms)
        try:
            return bytes.fromhex(m.info.nostr_pubkey) if m is not None and m.info is not None \
                and m.info.nostr_pubkey else b""
        except ValueError:
            return b""

    def _minted(self, inp: TokenMinted, now_ms: int) -> None:
        """A fresh token: the keys it came with first (a rotated key is published one token
        lifetime before it signs, so every node knows it before any token uses it), then the
        world core signs with it, and its refresh is scheduled from its claims."""
        c = self.cores
        if inp.keys is not None and c.auth is not None:
            c.auth.config.keys = dict(inp.keys)
        self.queue += c.world.set_token(inp.token, now_ms=now_ms)
        held = c.auth.tokens.get(c.hub.signer.public_key) if c.auth is not None else None
        expires = held[1].expires_at if held is not None and held[0] == inp.token \
            else inp.expires_at
        if self.token is not None:
            self.token.minted(expires_at=expires, now_ms=now_ms)

    def timers_at(self) -> int | None:
        """When the cores' timers next have something to do (None: nothing before an
        input)."""
        due = self.cores.wake_at()
        if self.poll_at_ms is not None:
            due = self.poll_at_ms if due is None else min(due, self.poll_at_ms)
        if due is not None and not self._started:
            due = max(due, self.first_tick_ms)
        return due

    def _clock_went_back(self, by_ms: int) -> None:
        """The node's clock was set back: the deadlines move with it, so the timers keep
        their pace instead of stopping until the clock catches up."""
        self.cores.clock_went_back(by_ms)
        if self.poll_at_ms is not None:
            self.poll_at_ms -= by_ms
        if self.pacing is not None:
            self.pacing = (self.pacing[0], self.pacing[1] - by_ms)
        if self.persist.lazy_since_ms is not None:
            self.persist.lazy_since_ms -= by_ms
        for t in (self.token, self.keepalive, self.peers, self.links, self.probe,
                  self.rendezvous):
            if t is not None:
                t.clock_went_back(by_ms)

    def wake_at(self) -> int | None:
        """The earliest wake-up this core needs: the pacing deadline, the lazy outbox's own
        commit, the cores' next timer run (None: none before an input)."""
        best = self.timers_at()
        if self.pacing is not None and (best is None or self.pacing[1] < best):
            best = self.pacing[1]
        for w in (self.persist, self.token, self.keepalive, self.peers, self.links,
                  self.probe, self.rendezvous):
            t = w.wake_at() if w is not None else None
            if t is not None and (best is None or t < best):
                best = t
        return best

    def _waits(self, now_ms: int) -> bool:
        """Whether the writer's queued publishes wait for company (the flush is held back
        while the pace stays the one it began waiting on, until its deadline)."""
        hub = self.cores.hub
        if not hub.queued:
            self.pacing = None  # nothing to pace (what pace says of an empty queue)
            return False
        p = pace(queued=hub.queued, in_flight=hub.in_flight,
                 batches_in_flight=hub.batches_in_flight(BATCHES_IN_FLIGHT))
        if p.wait_ms and self.pacing is None:
            self.pacing = (p, now_ms + p.wait_ms)
            return True
        if p.wait_ms and self.pacing is not None and self.pacing[0] == p and \
                now_ms < self.pacing[1]:
            return True
        self.pacing = None
        return False

    def _flush(self, now_ms: int) -> Plan:
        if not self.queue and not self.cores.hub.flushable:
            # Nothing queued: no batch to pace (what _waits says of an empty queue), only the
            # lazy outbox's commit if it is due, and the wake-up.
            self.pacing = None
            lazy = self.persist.idle(now_ms=now_ms)
            if lazy is not None:
                return Plan((), (lazy,), None)
            return Plan(wake_at_ms=self.wake_at())
        steps: list[Step] = []
        leave: list[NodeEffect] = []
        fx: list[NodeEffect] = []
        if self._waits(now_ms):
            # The batch waits for company; outbox rows that waited long enough do not.
            self.stats["waits"] += 1
        else:
            fx, self.queue = [*self.queue, *self.cores.hub.flush(now_ms=now_ms)], []
        if fx:
            self.stats["flushes"] += 1
            rest: list[NodeEffect] = []
            self._new_compute_entries(fx, now_ms)
            if self.lanes.nostr_peers:
                fx = held_back(fx, self.lanes.nostr_peers, self.cores.hub)
            for e in batched(fx):
                (leave if leaves_at_once(e) else rest).append(e)
            steps = self.persist.plan(rest, now_ms=now_ms) if rest else []
        if not any(isinstance(s, Commit) for s in steps):
            lazy = self.persist.idle(now_ms=now_ms)
            if lazy is not None:
                steps.append(lazy)
        # The wake-up is the last plan's, the one after which the executor sleeps.
        return Plan(tuple(leave), tuple(steps), None if leave or steps else self.wake_at(),
                    ready=False)

    def carried(self, step: Carry) -> tuple[NodeEffect, ...]:
        """What an executor carries out of ``step`` (:meth:`PersistCore.carried`): sends pass
        :func:`held_back` again (a session may have moved lanes since), deliveries count."""
        fx = self.persist.carried(step)
        if self.lanes.nostr_peers:
            fx = tuple(held_back(list(fx), self.lanes.nostr_peers, self.cores.hub))
        for e in fx:
            if type(e) is Delivered and e.entries:
                self.lanes.delivered(self.cores.hub, e.channel, [x.seq for x in e.entries])
        return fx

    def _new_compute_entries(self, fx: list[NodeEffect], now_ms: int) -> None:
        """A new entry on this node's own compute channel (a request, an offer, an accept)
        starts its duties' runs, at the next tick."""
        if self.poll_at_ms is not None or self.cores.compute is None:
            return
        own = self.cores.is_own_compute
        for e in fx:
            if type(e) is Delivered and e.entries and own(e.channel):
                self.poll_at_ms = now_ms + self.tick_ms
                return


_HANDLERS: dict[type, Callable[[NodeCore, Any, int], Plan | None]] = {
    Received: NodeCore._on_received, Called: NodeCore._on_called,
    PeerUp: NodeCore._on_peer_up, PeerDown: NodeCore._on_peer_down,
    CandidateSeen: NodeCore._peering, CandidateGone: NodeCore._peering,
    DialDone: NodeCore._peering, CommitFailed: NodeCore._on_commit_failed,
    RendezvousEnded: NodeCore._on_rendezvous_ended, StoreProbed: NodeCore._on_store_probed,
    TokenMinted: NodeCore._minted, RevocationsLearned: NodeCore._on_revocations,
    TokenRefused: NodeCore._on_token_refused, TimerFired: NodeCore._on_timer,
    Flush: lambda core, _, now_ms: core._flush(now_ms), **{t: NodeCore._on_call for t in CALLS},
}
"""How each input is handled (by its exact type: inputs are final, frozen values)."""
