"""A deterministic discrete-event simulator that drives the real protocol cores.

No trio inside: a seeded event queue with virtual time runs N nodes, each a real
:class:`~p2pworld.channel.hub.ChannelHub` with a :class:`~p2pworld.testing.MemoryLogStore`,
connected by simulated sessions. Every effect a core emits passes through the same codec the
network uses and is folded into a trace hash: the same seed gives the same trace, bit for bit.

Sessions are what the real transport gives: ordered and reliable while they last. A lost,
duplicated or reordered frame fails the session's authentication, so link faults show up as
session resets (both sides see ``peer_down``; in-flight messages are lost) followed by
reconnection after a backoff, exactly as on a real network.

Example:
    >>> sim = Simulator(seed=1, nodes=3)
    >>> ch = sim.open_channel("n0", "demo")
    >>> sim.run(0.1)                      # the announcement reaches n1 and n2
    >>> sim.publish("n1", ch, b"hello", key=b"k1")
    >>> sim.run(1.0)
    >>> [len(log) for log in sim.final_logs(ch).values()], sim.stats.outcomes
    ([1, 1, 1], {'appended': 1})
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import marshal
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from p2pworld.auth.book import AuthConfig, TokenBook
from p2pworld.auth.schedule import TokenSchedule
from p2pworld.channel.hub import (
    ChannelHub,
)
from p2pworld.compute.keys import op_key
from p2pworld.compute.state import encode_event
from p2pworld.core.calls import Call, Join, Publish
from p2pworld.core.cores import Cores, build_cores
from p2pworld.core.node import CandidateGone, NodeCore
from p2pworld.core.peers import PeerCore
from p2pworld.errors import P2PWorldError
from p2pworld.identity import Ed25519Signer, Signer, node_id, verify_raw
from p2pworld.io.log_store import load_into
from p2pworld.io.world_store import MemoryWorldStore
from p2pworld.log.entry import Entry
from p2pworld.testing.control_sim import SimControl
from p2pworld.testing.executor import Ack, Executor
from p2pworld.testing.network import SimNetwork
from p2pworld.testing.nostr_sim import SimNostr
from p2pworld.testing.store import MemoryLogStore
from p2pworld.testing.workload import Workload
from p2pworld.transport.frames import FrameReader
from p2pworld.transport.peering import Keepalive
from p2pworld.wire import Message
from p2pworld.world.core import WorldConfig, WorldCore, WorldEvent
from p2pworld.world.doc import NodeInfo
from p2pworld.world.links import LinkUpdates

KEEPALIVE_MS = 5_000
"""The runtime's default keepalive interval (``NodeConfig.keepalive``)."""



TRACE_BATCH = 1024
"""Trace records hashed together (the hash is of the records and their order; a run's
determinism check compares two runs' hashes)."""

class StoreFactory(Protocol):
    """Opens a node's stores (the default keeps them in memory)."""

    def log(self, name: str, generation: int) -> Any:
        """The log store of node ``name``; a new ``generation`` is a new, empty store."""

    def world(self, name: str) -> Any:
        """The world store of node ``name``."""


@dataclass
class SimNode:
    name: str
    signer: Signer
    index: int
    store: Any = field(default_factory=MemoryLogStore)
    """A :class:`~p2pworld.testing.MemoryLogStore` or the real sqlite store."""
    world_store: Any = field(default_factory=MemoryWorldStore)
    cores: Cores | None = None
    incarnation: int = 0
    clock_offset: float = 0.0
    delivered: dict[bytes, list[tuple[int, int, bytes]]] = field(default_factory=dict)
    """channel -> [(incarnation, seq, entry hash)] in delivery order."""
    notices: list[P2PWorldError] = field(default_factory=list)
    pending: dict[int, tuple[bytes, bytes, bytes, float]] = field(default_factory=dict)

    world_events: list[WorldEvent] = field(default_factory=list)
    token: bytes | None = None
    bytes_in: int = 0
    frames_in: int = 0
    core: NodeCore | None = None
    """The node core the runtime runs too (None while the node is down)."""
    wake_timer: float | None = None
    """When the node's one timer fires (simulated time), for its core's earliest wake-up."""
    store_generation: int = 0
    store_jobs: list[tuple[Any, ...]] = field(default_factory=list)
    """Plans' steps waiting for the node's store, oldest first (with a store latency)."""
    store_busy: bool = False
    """A commit is on its way to the store (with a store latency)."""
    timer_due: bool = False
    """The node's timer fired while its effect runner was blocked on the store."""
    token_exp: float = 0.0
    """When the node's token expires, as its claims say (0: it has none)."""

    @property
    def hub(self) -> ChannelHub | None:
        return self.cores.hub if self.cores else None

    @property
    def world(self) -> WorldCore | None:
        return self.cores.world if self.cores else None

    @property
    def up(self) -> bool:
        return self.cores is not None

    @cached_property
    def signer_id(self) -> bytes:
        return node_id(self.signer.public_key)


@dataclass
class Stats:
    """What happened in a run: faults reached, anomalies' raw material, latencies."""

    reached: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    staleness: list[float] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    lost_notices: set[tuple[str, bytes, int]] = field(default_factory=set)
    fork_notices: set[str] = field(default_factory=set)
    quarantined: set[tuple[str, bytes]] = field(default_factory=set)
    """(node, channel): a channel the node's own store refused at a restart."""
    lost_for_good: dict[str, float] = field(default_factory=dict)
    """Nodes whose store was destroyed (the machine is gone), and when."""
    epochs: dict[tuple[bytes, int], tuple[int, float]] = field(default_factory=dict)
    """(channel, epoch) -> (its start seq, when it was first on a disk)."""

    def reach(self, what: str) -> None:
        self.reached[what] = self.reached.get(what, 0) + 1


class Simulator(Executor, SimControl, Workload, SimNetwork):
    """Seeded, virtual-time runs of real cores over simulated sessions."""

    def __init__(self, seed: int, nodes: int = 3, *, latency: float = 0.002,
                 jitter: float = 0.001, workspace: str = "sim", degree: int | None = None,
                 world: bool = True, world_config: WorldConfig | None = None,
                 tick: float = 0.25, auth: bool = False, token_ttl: float = 60.0,
                 joined: set[str] | None = None, nostr: bool = False,
                 stores: StoreFactory | None = None, store_latency: float = 0.0) -> None:
        """``degree``: each node links to about that many random others (default: full
        mesh). ``world``: nodes join the world at boot and tick every ``tick`` seconds.
        ``auth``: a simulated control service mints ``token_ttl``-second tokens; every core
        checks them (handshakes, submissions, world records, heartbeats under grace); nodes
        refresh and retry as the node's token schedule says (:mod:`p2pworld.auth.schedule`)
        while the control service is down (:attr:`control_up`) or cut off from them
        (:attr:`control_cut`).
        ``joined``: only these nodes join the world (the others relay and watch): a
        single-source measurement in very large worlds. ``nostr``: two simulated relays, the
        Nostr fallback lane (mode ``primary-with-fallback``) and the bridge outbox
        (:class:`~p2pworld.testing.nostr_sim.SimNostr`). ``stores``: opens each node's log
        and world stores (:class:`StoreFactory`; default: in memory); with the real
        sqlite stores (``simulations.stores.SqliteStores``) a crash reopens the file as
        committed, and :meth:`destroy_store` opens a new, empty one. ``store_latency``: how
        long a commit takes (seconds, each drawn from 0.5-1.5 times it), during which the
        node core goes on planning and later plans queue behind it, as in the runtime's
        store task; 0: every commit is instant."""
        self.seed = seed
        self.stores = stores
        self.store_latency = store_latency
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency = latency
        self.jitter = jitter
        self.workspace = workspace
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._trace = hashlib.blake2b(digest_size=32)
        self._pending: list[tuple[Any, ...]] = []
        self.nodes: dict[str, SimNode] = {}
        self.sessions: set[frozenset[str]] = set()
        self._fifo: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], list[tuple[bytes, int]]] = {}
        """Frames waiting out a silent partition, per direction (see :meth:`_transmit`)."""
        self._readers: dict[tuple[str, str, int], FrameReader] = {}
        """Per session and direction: parts of a large message being reassembled."""
        self._session_gen: dict[frozenset[str], int] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.loss = 0.0
        self.stats = Stats()
        self.world_on = world
        self.joined = joined
        self.world_config = world_config or WorldConfig()
        self.tick_interval = tick
        self._verified: dict[tuple[bytes, bytes, bytes], bool] = {}
        self._decoded: dict[bytes, tuple[Message, ...]] = {}
        self._stamped: dict[tuple[str, bytes, bytes, bytes], bytes] = {}
        self.auth = auth
        self.token_ttl = token_ttl
        self.control_up = True
        self.control_cut: set[str] = set()
        self.control = Ed25519Signer(hashlib.blake2b(b"control/%d" % seed,
                                                     digest_size=32).digest())
        self.auth_config = AuthConfig(keys={"k1": self.control.public_key})
        self.minted: dict[str, list[tuple[int, int]]] = {}
        self.revoked_at: dict[str, float] = {}
        self.retired: dict[str, SimNode] = {}
        self.providers: set[str] = set()
        """Nodes that run the provider application in :meth:`_provide`."""
        self.reject_rate = 0.0
        self.greedy: set[str] = set()
        """node name -> validity windows (iat, exp) of every token minted for it."""
        self.measure_staleness = False
        """Sample subscription staleness at every tick (:meth:`_staleness`; SLO runs)."""
        self._produced: dict[tuple[bytes, int, int], float] = {}
        self.observer: Callable[[SimNode, SimNode, Message], None] | None = None
        """Called after each message a node received and processed (benchmarks use it)."""
        self.nostr = SimNostr(self) if nostr else None
        names = [f"n{i}" for i in range(nodes)]
        self.links: set[frozenset[str]] = set()
        if degree is None or degree >= nodes - 1:
            self.links = {frozenset(p) for p in itertools.combinations(names, 2)}
        else:
            # A ring (connected) plus random chords up to about `degree` links per node.
            for i, a in enumerate(names):
                self.links.add(frozenset((a, names[(i + 1) % nodes])))
            for a in names:
                while sum(1 for x in self.links if a in x) < degree:
                    b = names[self.rng.randrange(nodes)]
                    if b != a:
                        self.links.add(frozenset((a, b)))
        for i in range(nodes):
            name = f"n{i}"
            seed_bytes = hashlib.blake2b(b"%d/%d" % (seed, i), digest_size=32).digest()
            node = SimNode(name, Ed25519Signer(seed_bytes), i)
            if stores is not None:
                node.store, node.world_store = stores.log(name, 0), stores.world(name)
            self.nodes[name] = node
            self._boot(node)
        for node in list(self.nodes.values()):
            self._introduce(node)

    def close(self) -> None:
        """Close every node's stores (the real ones hold files open)."""
        for node in [*self.nodes.values(), *self.retired.values()]:
            node.store.close()
            node.world_store.close()

    # --- time ---------------------------------------------------------------------------

    def at(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (self.now + delay if delay > 0.0 else self.now,
                                     next(self._counter), fn))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        queue, pop = self._queue, heapq.heappop
        while queue and queue[0][0] <= end:
            t, _, fn = pop(queue)
            self.now = t
            fn()
        self.now = end

    def now_ms(self, node: SimNode) -> int:
        return int((self.now + node.clock_offset) * 1000)

    @property
    def trace_hash(self) -> str:
        self._fold_trace()
        return self._trace.hexdigest()

    def _record(self, *parts: Any) -> None:
        """One event of the trace: kept, and hashed a batch at a time (serialising many
        records at once costs a fraction of one at a time)."""
        self._pending.append((self.now, parts))
        if len(self._pending) >= TRACE_BATCH:
            self._fold_trace()

    def _fold_trace(self) -> None:
        if self._pending:
            try:
                # Version 0: the bytes depend on the values only, never on which of them
                # are one object (later versions mark shared and interned objects).
                data = marshal.dumps(self._pending, 0)
            except ValueError:  # a record part marshal does not take
                data = repr(self._pending).encode()
            self._trace.update(data)
            self._pending.clear()

    # --- nodes --------------------------------------------------------------------------

    def verify(self, key: bytes, msg: bytes, sig: bytes) -> bool:
        """ed25519 verification memoised across simulated nodes (a pure function, so the
        result is the same; it saves N-fold work in large worlds)."""
        k = (key, msg, sig)
        got = self._verified.get(k)
        if got is None:
            if len(self._verified) > 200_000:
                self._verified.clear()
            got = self._verified[k] = verify_raw(key, msg, sig)
        return got

    def _boot(self, node: SimNode) -> None:
        rng = random.Random(hashlib.blake2b(b"%d/%d/%d" % (self.seed, node.index,
                                                         node.incarnation)).digest())
        inc = node.world_store.bump_incarnation()
        book = TokenBook(AuthConfig(keys=dict(self.auth_config.keys))) if self.auth else None
        node.token_exp = 0.0
        node.token = self._mint(node) if self.auth else None
        cores = build_cores(node.signer, workspace=self.workspace, rng=rng, incarnation=inc,
                            world_records=node.world_store.load(),
                            world_config=self.world_config, verifier=self.verify,
                            auth=book, token=node.token or b"")
        if book is not None and node.token:
            book.learn(node.token, now=self.now_ms(node) / 1000, node_key=node.signer.public_key)
        hub = cores.hub
        # Processes start at different moments: the timers' phase differs per node.
        node.core = NodeCore(cores, first_tick_ms=self.now_ms(node) + int(
            self.rng.random() * self.tick_interval * 1000), tick_ms=int(self.tick_interval * 1000),
            keepalive=Keepalive(interval_ms=KEEPALIVE_MS), links=LinkUpdates(),
            peers=PeerCore(me=node.signer_id, workspace=self.workspace, rng=rng,
                           mode="primary-with-fallback" if self.nostr else "primary-only"))
        node.wake_timer = None
        for n in load_into(hub, node.store, node.store.load_channels(quarantine=True)):
            node.notices.append(n.error)
        for ch in node.store.quarantined:
            self.stats.quarantined.add((node.name, ch))
        node.cores = cores
        if self.nostr is not None:
            self.nostr.boot(node)
        gen = node.incarnation
        if self.world_on:
            if (not self.auth or node.token) and (self.joined is None or
                                                  node.name in self.joined):
                self._calls(node, [Join(info=NodeInfo(device=node.name))])
            self.at(self.rng.random() * self.tick_interval, lambda: self._tick(node, gen))
        if self.auth:
            node.core.token = TokenSchedule(rng)
            node.core.token.start(expires_at=node.token_exp, now_ms=self.now_ms(node))
        self._carry(node, [])  # the core's first wake-up

    def any_node(self, name: str) -> SimNode:
        """A node by name, retired or not."""
        return self.nodes[name] if name in self.nodes else self.retired[name]

    def retire(self, name: str) -> None:
        """Take a node out of the world for good (a revoked node): it stops, and checkers and
        convergence look only at the remaining members."""
        self.crash(name)
        gone = self.nodes.pop(name)
        self.retired[name] = gone
        self.links = {p for p in self.links if name not in p}
        self._ids: dict[bytes, SimNode] = {}
        for node in self.nodes.values():  # its discovery records go with it
            self._carry(node, [], inp=CandidateGone(key="sim", peer=gone.signer_id))

    def blocked_pairs(self) -> set[tuple[str, str]]:
        return set(self.blocked)

    def _tick(self, node: SimNode, gen: int) -> None:
        if node.cores is None or node.incarnation != gen:
            return
        # The workload's own pulse (the node's timers are its core's wake-ups).
        if self.measure_staleness:
            self._staleness(node)
        if node.name in self.providers:
            self._calls(node, self._provide(node))
        if self.nostr is not None:
            self.nostr.drain(node)
        self.at(self.tick_interval, lambda: self._tick(node, gen))

    def _staleness(self, node: SimNode) -> None:
        """Subscription staleness, sampled at each of ``node``'s ticks: for every other live
        member, how long ago that member produced the oldest heartbeat ``node`` has not
        received yet (0 when it is up to date)."""
        w = node.world
        assert w is not None
        me = w.presence.get(node.signer_id)
        if me is not None and me.hb is not None:
            self._produced.setdefault((node.signer_id, me.hb.inc, me.hb.n), self.now)
        for other in sorted(self.nodes.values(), key=lambda n: n.name):
            ow = other.world
            if other is node or ow is None:
                continue
            own = ow.presence.get(other.signer_id)
            if own is None or own.hb is None:
                continue
            seen = w.presence.get(other.signer_id)
            hb = seen.hb if seen is not None else None
            if hb is not None and (hb.inc, hb.n) >= (own.hb.inc, own.hb.n):
                self.stats.staleness.append(0.0)
                continue
            nxt = (other.signer_id, own.hb.inc, hb.n + 1 if hb and hb.inc == own.hb.inc else 1)
            born = self._produced.get(nxt)
            if born is not None:
                self.stats.staleness.append(self.now - born)

    def _provide(self, node: SimNode) -> list[Call]:
        """A simple provider application: offer on every eligible request, accept when
        assigned, return a result on the next tick. Duplicated submissions are idempotent
        (the node's own keys, :func:`~p2pworld.compute.keys.op_key`); refusals are expected
        (``Conflict``) and counted by the hub."""
        cores = node.cores
        assert cores is not None and cores.compute is not None
        now = self.now_ms(node)
        me = node.signer_id
        fx: list[Call] = []
        ad_owner = cores.world.member(me, now_ms=now)
        for ch, r in cores.compute.eligible(cores.compute_logs(), ad_owner.caps
                                            if ad_owner else None, now_ms=now):
            fx.append(Publish(channel=ch, payload=encode_event("offer", rid=r.rid,
                                                               price=node.index, sla_ms=0),
                              idem_key=op_key(r.rid, "offer", by=me)))
            self.stats.reach("compute_offer")
        for log in cores.compute_logs():
            st = cores.compute.state(log)
            for rid, r in sorted(st.requests.items()):
                if node.name in self.greedy and r.assignee not in (None, me) and \
                        not r.terminal and any(o.provider == me for o in r.offers):
                    # A greedy (or confused) provider tries to take a job assigned to
                    # someone else: the sequencer must refuse it with a Conflict.
                    fx.append(Publish(channel=log.record.channel, payload=encode_event(
                        "accept", rid=rid, attempt=r.attempt),
                        idem_key=op_key(rid, "accept", by=me, attempt=r.attempt)))
                    self.stats.reach("compute_grab")
                if r.assignee != me or r.terminal:
                    continue
                if r.phase == "assigned":
                    op, extra = ("reject", {"reason": "busy"}) if \
                        self.rng.random() < self.reject_rate else ("accept", {})
                    fx.append(Publish(channel=log.record.channel, payload=encode_event(
                        op, rid=rid, attempt=r.attempt, **extra),
                        idem_key=op_key(rid, op, by=me, attempt=r.attempt)))
                elif r.phase in ("accepted", "processing"):
                    fx.append(Publish(channel=log.record.channel, payload=encode_event(
                        "result", rid=rid, status="success", data=b"done"),
                        idem_key=op_key(rid, "result", by=me)))
        return fx

    def crash(self, name: str) -> None:
        """Lose the node's memory (and what it had not written). A commit is atomic, so a
        crash leaves no half-written row (``docs/guarantees.md``, storage)."""
        node = self.nodes[name]
        if not node.up:
            return
        for other in sorted(self.nodes):
            if frozenset((name, other)) in self.sessions:
                self._disconnect(name, other)
        if self.nostr is not None:
            self.nostr.crashed(node)
        node.cores = None
        node.core = None
        node.pending.clear()
        node.store_jobs.clear()  # commits on their way are lost with the process
        node.store_busy = node.timer_due = False
        node.store = node.store.crash()
        self.stats.reach("crash")
        self._record("crash", name)

    def restart(self, name: str) -> None:
        node = self.nodes[name]
        if node.up:
            return
        node.incarnation += 1
        self._boot(node)
        self._record("restart", name)
        self._introduce(node)

    # --- inspection ---------------------------------------------------------------------

    def final_logs(self, channel: bytes) -> dict[str, list[Entry]]:
        out = {}
        for name, node in sorted(self.nodes.items()):
            if node.hub is not None and (channel in node.hub.own or
                                         channel in node.hub.replicas):
                out[name] = list(node.hub.log(channel).entries)
        return out
