"""The node runtime: wires the pure cores to trio, websockets, sqlite and mDNS.

This module holds no protocol logic. It owns the tasks (listener, discovery, one dial loop per
candidate, one reader/writer pair per session, one effect runner, keepalive) and carries out
what the cores decide.

Example::

    async with open_node(NodeConfig(home=Path("/tmp/a"), workspace="lab")) as node:
        chan = await node.open_channel("general")
        await node.publish(chan.channel, b"hello")
        async for msg in node.messages(chan.channel):
            print(msg.seq, msg.payload)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import random
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
import trio_websocket

from discovery.mdns import Found, Lost, MdnsDiscovery
from discovery.rendezvous_client import RelayPipe, RendezvousClient
from p2pworld.auth.book import AuthConfig, own_book
from p2pworld.auth.control import (
    minted_token,
    published_keys,
    published_revocations,
    token_request,
)
from p2pworld.auth.schedule import TokenSchedule
from p2pworld.channel.handoffs import HandoffReport
from p2pworld.channel.hub import (
    ChannelHub,
    ChannelKnown,
    Checkpoint,
    Delivered,
    Notice,
    Outcomes,
    Persist,
    PublishResult,
    Resolved,
)
from p2pworld.compute.state import Request as ComputeRequest
from p2pworld.core.calls import (
    Advertise,
    Call,
    HandOffAll,
    Join,
    Leave,
    OpenChannel,
    SetSession,
    need_choice,
    need_timeout,
)
from p2pworld.core.config_check import check_config
from p2pworld.core.cores import Cores, NodeEffect, build_cores
from p2pworld.core.lanes import (
    MODES,
    LaneBook,
    LaneCounters,
    lane_of_address,
    resolve_mode,
)
from p2pworld.core.mirror import ad_mirror_row, compute_mirror_rows, mirrors_presence
from p2pworld.core.node import (
    CandidateGone,
    CandidateSeen,
    CommitFailed,
    DialDone,
    Flush,
    Input,
    NodeCore,
    PeerDown,
    PeerUp,
    Plan,
    Received,
    RendezvousEnded,
    RevocationsLearned,
    StoreProbed,
    TimerFired,
    TokenMinted,
    TokenRefused,
)
from p2pworld.core.outcomes import Deadlines, leaving_error, publish_outcome
from p2pworld.core.peer_book import PeerBook, PeerRecord, PreHandshake, session_refusal
from p2pworld.core.peers import PeerCore
from p2pworld.core.persist import (
    Carry,
    Commit,
    Step,
    gated_tail,
    persisted_channels,
)
from p2pworld.core.relays import RendezvousSchedule, announced_urls
from p2pworld.core.scope_book import ScopeBook
from p2pworld.effects import (
    CloseSession,
    ConnectRendezvous,
    Dial,
    PeerMisbehaved,
    ProbeStore,
    RefreshToken,
    Send,
    SendAll,
)
from p2pworld.errors import (
    Backpressure,
    InvalidArgument,
    NodeClosed,
    P2PWorldError,
    RendezvousClosed,
    RendezvousUnreachable,
    SessionClosed,
    StoreFull,
    WaitTimeout,
)
from p2pworld.identity import NodeIdentity, Signer, short_id
from p2pworld.io.home import NodeHome
from p2pworld.io.http import http_json
from p2pworld.io.log_store import LogStore, load_into, stored_or_damaged
from p2pworld.io.nostr_lane import NostrPipe
from p2pworld.io.nostr_service import BridgeFeed, NostrService
from p2pworld.io.scopes import SCOPES, Failure, Supervisor, spawn_in, task
from p2pworld.io.session import (
    Session,
    accept_session,
    open_session,
    relayed_session,
)
from p2pworld.io.world_store import WorldStore
from p2pworld.log.entry import ChannelPolicy, ChannelRecord
from p2pworld.log.state import EpochChange
from p2pworld.nostr.event import Event as NostrEvent
from p2pworld.runtime import edge
from p2pworld.runtime.api import Bridge, Channels, Compute, PeerInfo, Peers, World
from p2pworld.runtime.config import NodeConfig
from p2pworld.runtime.feeds import (  # re-exported: what the node's reads return
    ChannelMessage,
    ComputeEvent,
    ComputeFeed,
    MessageCursor,
    NodeSubscription,
    WorldSubscription,
)
from p2pworld.runtime.startup import bootstrap_auth, log_store, open_listeners, transport_policy
from p2pworld.runtime.statistics import NodeStatistics, node_statistics
from p2pworld.transport.candidate import Candidate, from_urls
from p2pworld.transport.handshake import MAX_HANDSHAKE_BYTES, PROTOCOL_VERSIONS, HandshakeConfig
from p2pworld.transport.peering import Keepalive
from p2pworld.transport.rendezvous import Registration
from p2pworld.wire import Message
from p2pworld.world.core import (
    Member,
    WorldChanged,
    WorldEvent,
    WorldSave,
)
from p2pworld.world.doc import CapabilityAd, NodeInfo, SessionInfo
from p2pworld.world.links import LinkUpdates

MAX_PRE_HANDSHAKE = 128
"""Incoming connections waiting for their handshake at once; beyond, the oldest is closed
(thousands of half-open connections never starve a legitimate peer, nor the node's files)."""
UPGRADE_TIMEOUT = 1.0
"""Seconds an incoming connection has to send its websocket upgrade request: a client sends
it at once; anything else (no bytes, other bytes) is closed."""

T = TypeVar("T")


def _lane(address: str) -> str:
    """A session's lane family: ``nostr``, or ``primary`` (direct or rendezvous-relayed)."""
    return "nostr" if address.startswith("nostr:") else "primary"


LINGER_PASSES = 32
"""Most scheduler passes the effect runner yields while work keeps arriving (batching)."""

class Node:
    """A running p2pworld node. Create it with :func:`open_node`."""

    def __init__(self, config: NodeConfig, identity: NodeIdentity, store: LogStore,
                 nursery: trio.Nursery, *, world_store: WorldStore | None = None,
                 incarnation: int = 1, world_records: list[list[bytes]] | None = None,
                 auth: AuthConfig | None = None, token: bytes | None = None) -> None:
        self._config = config
        self._identity = identity
        self._node_id = identity.node_id
        self._store = store
        self._world_store = world_store
        self._rng = random.SystemRandom()
        self._auth_stats: dict[str, Any] = {"refresh_failures": 0, "revocation_polls": 0}
        # (open_node checked the token: a node with auth on has a valid one.)
        book = own_book(auth, token, now=time.time(), node_key=identity.public_key,
                        nostr_pubkey=identity.nostr.public)
        self._cores: Cores = build_cores(identity.signer, workspace=config.workspace,
                                        rng=self._rng, incarnation=incarnation,
                                        world_records=world_records, world_config=config.world,
                                        auth=book, token=token or b"")
        self._hub: ChannelHub = self._cores.hub
        self._world = self._cores.world
        self._world_changed = trio.Event()
        self._world_saves: dict[bytes, tuple[bytes, ...]] = {}
        self._closed: NodeClosed | None = None
        """Set when the node has stopped: every call then raises it (``NODE_CLOSED``)."""
        self._running = False
        self._storing = 0  # batches handed to the store task and not yet carried out
        self._idle = trio.Event()
        self._jobs_send, self._jobs_recv = trio.open_memory_channel[tuple[Step, ...]](0)
        self._core = NodeCore(self._cores, first_tick_ms=edge.now_ms(), keepalive=Keepalive(
            interval_ms=round(config.keepalive * 1000)), links=LinkUpdates(),
            lanes=LaneBook(counters=LaneCounters(alert_at=config.fallback_alert)))
        """The node core: every input goes through it, and the effect runner and store task
        carry out its plans (:mod:`p2pworld.core.node`)."""
        self._wake_at: int | None = None  # the latest plan's wake-up (node clock, ms)
        self._any_delivered = trio.Event()
        self._notices_send, self._notices_recv = trio.open_memory_channel[Notice](256)
        self._tracer: Any = None
        self._nursery = nursery
        self._sup = Supervisor(nursery, on_failure=self._on_scope_failure, rng=self._rng)
        """Every background task of this node starts through it (``p2pworld.io.scopes``)."""
        self._scopes = ScopeBook.of(SCOPES, weakref.WeakSet())
        """Failed scopes by kind, and what they held that is being closed."""
        self._scope_stats = self._scopes.stats
        self._sessions: dict[bytes, Session] = {}
        self._peer_book = PeerBook()
        self._peers = self._peer_book.records
        self._wake = trio.Event()
        self._changed: dict[bytes, trio.Event] = {}
        self._outcomes: dict[int, PublishResult | P2PWorldError] = {}
        self._outcome_events: dict[int, trio.Event] = {}
        self._deadlines = Deadlines()  # publish timeouts, by trio time
        self._timer_scope = trio.CancelScope()
        self._key_prefix = secrets.token_bytes(8)
        self._key_counter = itertools.count()
        self._peers_changed = trio.Event()
        self._channels_changed = trio.Event()
        self._listen_port = 0
        self._listen_host = config.interfaces[0] if config.interfaces else "127.0.0.1"
        self._errors: dict[str, int] = {}
        self._mdns: MdnsDiscovery | None = None
        self._rv_clients: dict[str, RendezvousClient] = {}
        self._nostr: NostrService | None = None
        self._policy: dict[str, Any] | None = None
        self._core.peers = PeerCore(
            me=self._node_id, workspace=config.workspace, rng=self._rng,
            mode=resolve_mode(config.transport, None, relays=bool(config.relays)),
            grace_ms=round(config.dial_grace * 1000),
            attempt_ms=round(config.handshake_timeout * 1000))
        self._mirror_req: dict[str, str] = {}
        self._pre_handshake = PreHandshake[trio.CancelScope](limit=MAX_PRE_HANDSHAKE)
        """Incoming connections that have not finished their handshake, oldest first."""
        self._durable: dict[bytes, int] = {}
        """Per channel, the highest seq known to be on this node's disk: what readers see
        (an entry appended in memory is not read before its transaction committed)."""
        """Channel heads loaded from disk at start (entries up to them came before)."""
        self._channels_api, self._world_api = Channels(self), World(self)
        self._compute_api, self._bridge_api, self._peers_api = Compute(self), Bridge(self), \
            Peers(self)

    # --- public API -------------------------------------------------------------------------

    @property
    def channels(self) -> Channels:
        """Channels: open, publish, read, membership, epochs (``node.channels()`` still lists
        them, as the flat method did)."""
        return self._channels_api

    @property
    def world(self) -> World:
        """The world: presence, capability ads and the query, world events."""
        return self._world_api

    @property
    def compute(self) -> Compute:
        """Compute jobs, as a requester and as a provider."""
        return self._compute_api

    @property
    def bridge(self) -> Bridge:
        """The Nostr bridge outbox."""
        return self._bridge_api

    @property
    def peers(self) -> Peers:
        """Peers: known and connected, their lanes; the transport mode."""
        return self._peers_api

    @property
    def config(self) -> NodeConfig:
        """How this node runs (as checked at start)."""
        return self._config

    @property
    def identity(self) -> NodeIdentity:
        """What this node is: its signer, its Nostr key and their attestation."""
        return self._identity

    @property
    def node_id(self) -> bytes:
        """This node's 32-byte id (the hash of its public key)."""
        return self._node_id

    @property
    def closed(self) -> NodeClosed | None:
        """Why the node stopped (None: running); every call then raises it (``NODE_CLOSED``)."""
        return self._closed

    @property
    def listen_port(self) -> int:
        """The port this node accepts sessions on (0 before it listens)."""
        return self._listen_port

    @property
    def transport_mode(self) -> str:
        """The effective transport mode (``docs/transport.md``): the node core dials by it."""
        return self._peering.mode

    @transport_mode.setter
    def transport_mode(self, mode: str) -> None:
        need_choice(mode, MODES, "transport_mode")
        self._peering.mode = mode

    @property
    def _peering(self) -> PeerCore:
        assert self._core.peers is not None
        return self._core.peers

    @property
    def other_workspaces(self) -> dict[str, int]:
        """Workspaces of peers discovered but not joined (at most 64 names), by sightings."""
        return self._peering.other_workspaces

    @property
    def token(self) -> bytes | None:
        """This node's current token (None: an open world)."""
        return self._world.token or None

    @property
    def token_expires(self) -> int | None:
        """When this node's current token expires (unix s; None: no token)."""
        book = self._cores.auth
        return None if book is None else book.expires(self._identity.public_key, self.token)

    @property
    def url(self) -> str:
        return f"ws://{self._listen_host}:{self._listen_port}/"

    async def _open_channel(self, name: str, *, private: bool = False,
                            participants: tuple[bytes, ...] = (),
                            policy: ChannelPolicy | None = None,
                            authority_key: bytes | None = None) -> ChannelRecord:
        self._check_open()
        rec: ChannelRecord = self._call(OpenChannel(
            name=name, private=private, participants=participants, policy=policy,
            authority_key=authority_key))
        await self._settle()
        if self._hub.read_only is not None and rec.channel not in self._hub.own:
            raise self._hub.read_only  # its record never reached the disk
        return rec

    async def _until(self, cond: Callable[[], T | None], event: Callable[[], trio.Event],
                     timeout: float | None, what: str) -> T:
        """Wait until ``cond()`` gives a value, waking on ``event()``; typed timeout."""
        if timeout is not None:
            need_timeout(timeout)
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        while True:
            self._check_open()
            got = cond()
            if got is not None:
                return got
            with trio.move_on_at(deadline) as sc:
                await event().wait()
            if sc.cancelled_caught:
                raise WaitTimeout(f"{what}: not within {timeout} s", timeout=timeout)

    def _check_open(self) -> None:
        if self._closed is not None:
            raise self._closed

    def _close(self, why: str = "the node has stopped") -> None:
        """The node stopped: every call from now on, and every one still waiting (in a task
        outside the node), raises :class:`~p2pworld.errors.NodeClosed`."""
        if self._closed is not None:
            return
        self._closed = NodeClosed(why)
        for ev in [self._channels_changed, self._peers_changed, self._world_changed,
                   self._any_delivered, self._idle, *self._changed.values(),
                   *self._outcome_events.values()]:
            ev.set()
        self._notices_send.close()

    async def _await_outcome(self, req: int, timeout: float, key: bytes) -> PublishResult:
        ev = self._outcome_events[req] = trio.Event()
        # One shared timer task instead of a cancel scope per publish (see _timeouts).
        if self._deadlines.add(trio.current_time() + timeout, req):
            self._timer_scope.cancel()
        try:
            await ev.wait()
        finally:
            self._outcome_events.pop(req, None)
        return publish_outcome(self._outcomes.pop(req, None), closed=self._closed is not None,
                               timeout=timeout, key=key)

    # --- world state ---------------------------------------------------------------------

    # --- compute ----------------------------------------------------------------------------


    # --- the Nostr bridge ----------------------------------------------------------------

    async def notices(self) -> Notice:
        """The next notice: about a channel (``Forked``, ``LostWrite``, ``CheckpointTooOld``,
        ...) or about a scope that ended with an error (a session, a lane, a relay
        connection, a request: ``notice.scope``, ``notice.subject``, ``notice.error.code``).
        Buffered (256); when the application does not read them, newer ones are dropped and
        counted (``NOTICES_DROPPED``). Raises :class:`~p2pworld.errors.NodeClosed` once the
        node has stopped and every notice was read."""
        try:
            return await self._notices_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed or NodeClosed("the node has stopped") from None

    def _notice(self, n: Notice) -> None:
        self._count(n.error.code)
        try:
            self._notices_send.send_nowait(n)
        except trio.WouldBlock:
            self._count("NOTICES_DROPPED")
        except trio.ClosedResourceError:
            pass  # the node has stopped

    def _on_scope_failure(self, f: Failure) -> None:
        """A scope ended with an error (see :mod:`p2pworld.io.scopes`): count it, tell the
        application, and close what the scope holds (a session of the failed peer task
        closes itself on the way out)."""
        self._scopes.failed(f.scope, code=f.error.code, subject=f.key)
        self._notice(Notice(b"", f.error, scope=f.scope, subject=f.key))
        if f.task == f"{__name__}:Node._rendezvous":  # the core says when to connect again
            self._input(RendezvousEnded(url=f.key, error=None))
        # What the failed task held closes with it (a session, a relayed or Nostr pipe), once.
        for x in self._scopes.to_close(f.args, (Session, RelayPipe, NostrPipe)):
            if isinstance(x, Session):
                if x.close_reason is None:
                    x.close_reason = f.error
                self._sup.spawn(self._close_session, x, f.error, key=f.key)
            else:
                self._sup.spawn(self._close_pipe, x, key=f.key)
        if f.scope == "peer":
            self._peer_book.scope_failed(f.key, f.error.code)

    async def _settle(self) -> None:
        """Wait until the effect runner has carried out everything queued so far."""
        while not self._core.idle or self._running or self._storing:
            self._check_open()
            await self._idle.wait()
        self._check_open()

    def health(self) -> dict[str, Any]:
        """Per peer and per channel: session state, lane, lag, last error (JSON-ready): the
        plain view of :meth:`statistics`."""
        return self.statistics().as_dict()

    def statistics(self) -> NodeStatistics:
        """What this node can say about itself, typed (:mod:`p2pworld.runtime.statistics`)."""
        return node_statistics(self, now_ms=edge.now_ms())

    # --- effects ----------------------------------------------------------------------------

    def _call(self, call: Call) -> Any:
        """An API call, handed to the node core (:mod:`p2pworld.core.calls`): what it
        returns; its effects wait for the effect runner's flush. A refusal raises, typed."""
        plan = self._core.handle(call, now_ms=edge.now_ms())
        self._wake.set()
        return plan.result

    def _input(self, inp: Input) -> None:
        self._core.handle(inp, now_ms=edge.now_ms())
        self._wake.set()

    def _changed_event(self, channel: bytes) -> trio.Event:
        self._hub.record(channel)  # raises UnknownChannel
        ev = self._changed.get(channel)
        if ev is None:
            ev = self._changed[channel] = trio.Event()
        return ev

    @task("node")
    async def _effect_runner(self) -> None:
        """Carry out the node core's plans: writer submissions at once, every other step
        handed to the store task, in order; sleep until the next input or the plan's
        wake-up (one timer for all of the core's: pacing, the lazy outbox, its timers).

        While the store task is busy, new work accumulates in the core and the next flush
        takes it all: one transaction for everything that arrived meanwhile (group
        commit)."""
        while True:
            wake = self._wake_at
            if wake is None:
                await self._wake.wait()
            else:
                with trio.move_on_after(max(0, wake - edge.now_ms()) / 1000):
                    await self._wake.wait()
            self._wake = trio.Event()
            self._running = True
            # Let tasks that are already runnable (publishers woken by the last acks, a
            # session reader with a frame in hand) queue their work first, and keep yielding
            # while more keeps arriving (at most LINGER_PASSES scheduler passes): one flush
            # then signs, writes and sends it all as one batch. When nothing else is
            # runnable this costs one pass.
            queued = self._core.queued
            for _ in range(LINGER_PASSES):
                await trio.lowlevel.checkpoint()
                now_queued = self._core.queued
                if now_queued == queued:
                    break
                queued = now_queued
            now = edge.now_ms()
            due = self._wake_at is not None and now >= self._wake_at
            plan = self._core.handle(TimerFired() if due else Flush(), now_ms=now)
            while True:
                await self._carry_plan(plan)
                if plan.empty:
                    break
                plan = self._core.handle(Flush(), now_ms=edge.now_ms())
            self._wake_at = plan.wake_at_ms
            self._running = False
            self._maybe_idle()

    async def _carry_plan(self, plan: Plan) -> None:
        for e in plan.leave:  # writer submissions: Send / SendAll
            CARRIERS[type(e)](self, e)
        if plan.steps:
            self._storing += 1
            await self._jobs_send.send(plan.steps)


    @task("node", restart=True)
    async def _timeouts(self) -> None:
        """Wake publishers whose timeout passed (their outcome stays unknown: PublishTimeout).
        A heap of deadlines and one sleeping task cost less than a cancel scope per publish."""
        while True:
            with trio.CancelScope() as self._timer_scope:
                await trio.sleep_until(self._deadlines.next_at())
            for req in self._deadlines.due(trio.current_time()):
                ev = self._outcome_events.get(req)
                if ev is not None:
                    ev.set()

    @task("node")
    async def _store_runner(self) -> None:
        while True:
            steps = await self._jobs_recv.receive()
            try:
                await self._carry_out(steps)
            finally:
                self._storing -= 1
                self._maybe_idle()

    async def _commit(self, commit: Commit, tail: tuple[NodeEffect, ...]) -> bool:
        """One transaction; refused (a full disk) or void (planned before one that failed), the
        core hears what the disk holds. StoreError (I/O) ends the node: a node scope."""
        err = self._core.persist.voided(commit)
        try:
            if err is None:
                await trio.to_thread.run_sync(self._store.apply, commit.ops)
                return True
        except StoreFull as e:
            err = e
        # (What this node delivered is durable, so the put-back leaves ``_durable`` true.)
        on_disk = await trio.to_thread.run_sync(stored_or_damaged, self._store,
                                                persisted_channels(commit))
        self._input(CommitFailed(commit=commit, error=err, on_disk=on_disk, tail=tail))
        return False

    def _maybe_idle(self) -> None:
        if not self._running and not self._storing and not self._core.persist.lazy:
            self._idle.set()
            self._idle = trio.Event()

    async def _carry_out(self, steps: tuple[Step, ...]) -> None:
        # The order is the node core's (p2pworld.core.persist): this only carries it out.
        for i, step in enumerate(steps):
            if isinstance(step, Carry):
                await self._effects_after_persist(list(self._core.carried(step)))
                continue
            if not await self._commit(step, gated_tail(steps, i)) and step.gates:
                return
            self.trace("persist", [(x.channel, x.seq) for op in step.ops
                                   if isinstance(op, Persist) for x in op.entries])
        if self._world_saves and self._world_store is not None:
            rows, self._world_saves = sorted(self._world_saves.items()), {}
            try:
                await trio.to_thread.run_sync(self._world_store.save_many, rows)
            except StoreFull:
                # World documents are soft state (peers send them again): counted only.
                self._count(StoreFull.code)

    async def _effects_after_persist(self, fx: list[NodeEffect]) -> None:
        for e in fx:
            carry = CARRIERS.get(type(e))
            if carry is not None and (pending := carry(self, e)) is not None:
                await pending

    # One method per effect the cores plan (CARRIERS): carrying out, never deciding.

    def _carry_send(self, e: Send) -> None:
        self._send(e.peer, e.message)

    def _carry_send_all(self, e: SendAll) -> None:
        for m in e.messages:
            self._send(e.peer, m)

    def _carry_outcomes(self, e: Outcomes) -> None:
        for r in e.items:
            self._resolved(r)

    def _carry_delivered(self, e: Delivered) -> None:
        if e.entries:
            self._durable[e.channel] = max(self._durable.get(e.channel, 0), e.entries[-1].seq)
        self._mirror_compute(e)
        self._any_delivered.set()
        self._any_delivered = trio.Event()
        ev = self._changed.pop(e.channel, None)
        if ev is not None:
            ev.set()

    def _carry_channel_known(self, e: ChannelKnown) -> None:
        self._channels_changed.set()
        self._channels_changed = trio.Event()

    def _carry_world_changed(self, e: WorldChanged) -> None:
        self._world_changed.set()
        self._world_changed = trio.Event()

    def _carry_world_save(self, e: WorldSave) -> None:
        self._world_saves[e.author] = e.records

    def _carry_misbehaved(self, e: PeerMisbehaved) -> None:
        self._count(e.error.code)
        self._peer_book.refused(e.peer, e.error.code)

    def _carry_refresh(self, e: RefreshToken) -> None:
        self._sup.spawn(self._fetch_token, key="token")

    def _carry_rendezvous(self, e: ConnectRendezvous) -> None:
        self._sup.spawn(self._rendezvous, e.url, key=e.url)

    async def _carry_probe(self, e: ProbeStore) -> None:
        self._input(StoreProbed(ok=await trio.to_thread.run_sync(self._probe)))

    def _carry_dial(self, e: Dial) -> None:
        self._sup.spawn(self._dial_task, e, key=e.peer.hex())

    def _carry_close(self, e: CloseSession) -> None:
        s = self._sessions.get(e.peer)
        if s is not None:
            self._count(e.reason)
            self._sup.spawn(self._close_session, s,
                            SessionClosed(f"session closed: {e.reason}"), key=e.peer.hex())

    def _probe(self) -> bool:
        try:
            self._store.probe()
        except StoreFull:
            return False
        return True

    def _resolved(self, e: Resolved) -> None:
        self.trace("resolved", e.req)
        if e.req in self._outcome_events:
            self._outcomes[e.req] = e.outcome
            self._outcome_events[e.req].set()

    def trace(self, what: str, arg: object) -> None:
        """Hook for tests that observe the order of effects (no-op unless set)."""
        if self._tracer is not None:
            self._tracer(what, arg)

    def _send(self, peer: bytes, msg: Message) -> None:
        s = self._sessions.get(peer)
        if s is None:
            return
        self.trace("send", msg)
        try:
            s.send_nowait(msg)
        except Backpressure as e:
            # A peer that cannot keep up is dropped; it resumes from its cursor on reconnect.
            self._count(e.code)
            self._sup.spawn(self._close_session, s, e, key=peer.hex())
        except SessionClosed:
            pass

    def _count(self, code: str) -> None:
        self._errors[code] = self._errors.get(code, 0) + 1

    def _readable_seq(self, channel: bytes) -> int:
        """Readers see entries up to here: on disk, and still in the log."""
        return min(self._hub.log(channel).seq, self._durable.get(channel, 0))

    def lane_of(self, channel: bytes, seq: int) -> str | None:
        """The lane this node received entry ``seq`` of ``channel`` by (see
        :attr:`ChannelMessage.lane`)."""
        return self._core.lanes.lane_of(self._hub, channel, seq)

    def _mirror_compute(self, e: Delivered) -> None:
        """Mirror this node's own compute channel as NIP-90 events (policy-gated)."""
        svc = self._nostr
        if svc is None:
            return
        rows = compute_mirror_rows(self._cores, svc.key, e.channel, e.entries,
                                   now_ms=edge.now_ms(), aux=svc.aux, requests=self._mirror_req,
                                   mirror=self._config.mirror)
        if rows:
            self._sup.spawn(self._enqueue_rows, rows, key="mirror")

    @task("request")
    async def _enqueue_rows(self, rows: list[tuple[NostrEvent, str, bytes]]) -> None:
        for ev, source, h in rows:
            try:
                await self.enqueue_bridge_event(ev, source=source, entry_hash=h)
            except P2PWorldError as err:
                self._count(err.code)

    async def _mirror_ad(self, ad: CapabilityAd) -> None:
        svc = self._nostr
        if svc is None:
            return
        row = ad_mirror_row(svc.key, mirror=self._config.mirror, node=self._node_id, ad=ad,
                            created_at=int(time.time()), aux=svc.aux(), name=self._config.device)
        if row is None:
            return
        try:
            await self.enqueue_bridge_event(row[0], source=row[1], entry_hash=row[2])
        except P2PWorldError as err:
            self._count(err.code)

    # --- sessions ---------------------------------------------------------------------------

    def _hs_config(self, expected: bytes | None = None) -> HandshakeConfig:
        return HandshakeConfig(identity=self._identity, workspace=self._config.workspace,
                               token=self.token, versions=PROTOCOL_VERSIONS,
                               expected_peer=expected)

    def _peer(self, pid: bytes) -> PeerRecord:
        return self._peer_book.record(pid)

    def _adopt(self, s: Session) -> bool:
        """Keep one session per peer: the one dialled by the node with the lower id."""
        pid = s.peer_id
        old = self._sessions.get(pid)
        lane = _lane(s.address)
        if old is not None:
            # The node core says which survives (p2pworld.core.peers).
            if not self._peering.admit(pid, lane, initiator=s.initiator):
                return False
            self._sup.spawn(self._close_session, old,
                           SessionClosed("replaced by a preferred session"), key=pid.hex())
            self._forget(pid, old)
        self._sessions[pid] = s
        self._peer_book.connected(pid, address=s.address, since=time.monotonic())
        self._peers_changed.set()
        self._peers_changed = trio.Event()
        self._input(PeerUp(peer=pid, key=s.result.peer_key, lane=lane,
                           via=lane_of_address(s.address), initiator=s.initiator,
                           nostr=s.result.peer_attestation.nostr_pubkey))
        return True

    def _forget(self, pid: bytes, s: Session) -> None:
        if self._sessions.get(pid) is s:
            del self._sessions[pid]
            self._input(PeerDown(peer=pid))
            counted = self._peer_book.down(pid, s.close_reason)
            if counted:
                self._count(counted)
            self._peers_changed.set()
            self._peers_changed = trio.Event()

    @task("peer")
    async def _close_session(self, s: Session, reason: P2PWorldError) -> None:
        await s.aclose(reason)
        self._forget(s.peer_id, s)

    @task("peer")
    async def _close_pipe(self, pipe: RelayPipe | NostrPipe) -> None:
        await pipe.aclose()

    @task("peer")
    async def _run_session(self, s: Session) -> None:
        """Run one authenticated session until it ends. Whatever ends it (the peer, a bad
        frame, a failure in this task), the session is closed on the way out and forgotten;
        the peer's dial loop (or the peer) dials again."""
        try:
            await self._session_body(s)
        finally:
            if s.close_reason is None:
                s.close_reason = SessionClosed("session task ended")
            await s.aclose()

    async def _run_owned(self, s: Session) -> None:
        """Run a session this task opened or accepted: it is closed on the way out, whatever
        ended it (also when the session task itself failed before it could close it)."""
        try:
            await self._run_session(s)
        finally:
            await s.aclose()

    async def _session_body(self, s: Session) -> None:
        refused = session_refusal(self._cores.auth, s.result, address=s.address,
                                  now=time.time())
        if refused is not None:
            self._count(refused.code)
            self._peer(s.peer_id).last_error = refused.code
            await s.aclose(refused)
            return
        if not self._adopt(s):
            await s.aclose(SessionClosed("duplicate session"))
            return
        pid = s.peer_id
        try:
            await s.run(lambda msgs: self._input(Received(peer=pid, messages=tuple(msgs))))
        finally:
            self._forget(pid, s)

    @task("peer")
    async def _handle_incoming(self, stream: trio.SocketStream) -> None:
        """One incoming TCP connection, owned from accept to close: the websocket upgrade
        within UPGRADE_TIMEOUT (anything else is closed), the handshake with messages of
        handshake size only, then the session. At most MAX_PRE_HANDSHAKE connections wait
        for their handshake at once; beyond, the oldest is closed."""
        scope = trio.CancelScope()
        oldest = self._pre_handshake.add(scope)
        if oldest is not None:
            oldest.cancel()
            self._count("PRE_HANDSHAKE_EVICTED")
        try:
            with scope:
                async with trio.open_nursery() as conn:
                    await self._incoming_session(stream, conn, scope)
                    conn.cancel_scope.cancel()
            if scope.cancelled_caught and self._pre_handshake.evicted(scope):
                return  # evicted (counted above)
        finally:
            self._pre_handshake.done(scope)
            await trio.aclose_forcefully(stream)

    async def _incoming_session(self, stream: trio.SocketStream, conn: trio.Nursery,
                                scope: trio.CancelScope) -> None:
        try:
            with trio.fail_after(UPGRADE_TIMEOUT):
                request = await trio_websocket.wrap_server_stream(
                    conn, stream, message_queue_size=16, max_message_size=MAX_HANDSHAKE_BYTES)
        except (trio.TooSlowError, trio_websocket.ConnectionClosed):
            self._count("UPGRADE_TIMEOUT")  # not a websocket client (or a silent one)
            return
        if self.transport_mode == "forced-nostr":
            # The mode allows the Nostr lane only: no direct session, either way.
            self._count("DIRECT_REFUSED_FORCED_NOSTR")
            await request.reject(403)
            return
        try:
            s = await accept_session(request, self._hs_config(),
                                     timeout=self._config.handshake_timeout)
        except P2PWorldError as e:
            self._count(e.code)
            return
        except trio_websocket.ConnectionClosed:
            return
        self._pre_handshake.done(scope)  # authenticated: no longer evictable
        await self._run_owned(s)

    def _on_candidate(self, key: str, c: Candidate) -> None:
        """A discovery record: the node core decides whether, when and how to dial."""
        self._input(CandidateSeen(key=key, candidate=c))
        known = self._peering.peers.get(c.node_id)
        if known is not None and key in known.candidates:  # taken (not another workspace's)
            self._peer(c.node_id).via.add(c.source)

    @task("peer")
    async def _dial_task(self, d: Dial) -> None:
        """Carry out one :class:`Dial` of the node core and tell it how it went."""
        ok, code, peer = False, "NO_ROUTE", d.peer
        try:
            if d.static:
                ok, code, peer = await self._dial_static(d.static)
            else:
                ok, code = await (self._dial_nostr(d) if d.lane == "nostr" else
                                  self._dial_primary(d))
        finally:
            self._input(DialDone(peer=peer, ok=ok, code=code, static=d.static))

    async def _dial_static(self, url: str) -> tuple[bool, str, bytes]:
        """A configured peer: its id comes from the handshake."""
        try:
            s = await open_session(self._nursery, url, self._hs_config(),
                                   timeout=self._config.handshake_timeout)
        except P2PWorldError as e:
            self._count(e.code)
            return False, e.code, b""
        self._peer(s.peer_id).via.add("static")
        return await self._start_session(s.peer_id, s), "", s.peer_id

    async def _dial_nostr(self, d: Dial) -> tuple[bool, str]:
        lane = self._nostr.lane if self._nostr is not None else None
        if lane is None:
            return False, "NOSTR_LANE_FAILED"
        self._peer_book.connecting(d.peer)
        try:
            pipe = await lane.open_pipe(d.nostr)
            s = await relayed_session(pipe, self._hs_config(expected=d.peer), initiator=True,
                                      address=pipe.address,
                                      timeout=self._config.handshake_timeout)
        except (P2PWorldError, trio_websocket.ConnectionClosed) as e:
            code = getattr(e, "code", "NOSTR_LANE_FAILED")
            self._peer_book.failed(d.peer, code)
            self._count(code)
            return False, code
        self._peer(d.peer).via.add("nostr")
        return await self._start_session(d.peer, s), ""

    def _nostr_pipe_opened(self, pipe: NostrPipe) -> None:
        self._sup.spawn(self._on_nostr_pipe, pipe, key=pipe.peer.hex())

    @task("peer")
    async def _on_nostr_pipe(self, pipe: NostrPipe) -> None:
        """A peer opened a Nostr-lane pipe to us: the same handshake as any session."""
        if not self._peering.accepts("nostr"):
            await pipe.aclose()
            return
        try:
            s = await relayed_session(pipe, self._hs_config(), initiator=False,
                                      address=pipe.address,
                                      timeout=self._config.handshake_timeout)
        except (P2PWorldError, trio_websocket.ConnectionClosed) as e:
            self._count(getattr(e, "code", "NOSTR_LANE_FAILED"))
            return
        self._peer(s.peer_id).via.add("nostr")
        await self._run_owned(s)

    def _on_nostr_candidate(self, key: str, nid: bytes, nostr: bytes) -> None:
        self._on_candidate(key, Candidate(node_id=nid, workspace=self._config.workspace,
                                          versions=PROTOCOL_VERSIONS, addresses=(), port=0,
                                          source="nostr", nostr=nostr))

    async def _dial_primary(self, d: Dial) -> tuple[bool, str]:
        """Each URL in the order given, then a relayed session through each rendezvous."""
        pid, code = d.peer, "NO_ROUTE"
        for url in d.urls:
            self._peer_book.connecting(pid)
            try:
                s = await open_session(self._nursery, url, self._hs_config(expected=pid),
                                       timeout=self._config.handshake_timeout)
            except P2PWorldError as e:
                code = e.code
                self._peer_book.failed(pid, code)
                self._count(e.code)
                continue
            return await self._start_session(pid, s), ""
        for relay in d.relays:
            client = self._rv_clients.get(relay)
            if client is None or not client.connected.is_set():
                continue
            self._peer_book.connecting(pid)
            try:
                pipe = await client.open_pipe(pid)
                s = await relayed_session(pipe, self._hs_config(expected=pid), initiator=True,
                                          address=f"relay:{relay}",
                                          timeout=self._config.handshake_timeout)
            except (P2PWorldError, trio_websocket.ConnectionClosed) as e:
                code = getattr(e, "code", "RELAY_FAILED")
                self._peer_book.failed(pid, code)
                self._count(code)
                continue
            return await self._start_session(pid, s), ""
        return False, code

    async def _start_session(self, pid: bytes, s: Session) -> bool:  # adopted (or another up)
        self._sup.spawn(self._run_session, s, key=pid.hex())
        with trio.move_on_after(self._config.handshake_timeout):
            while pid not in self._sessions and not s.closed.is_set():
                await self._peers_changed.wait()
            return pid in self._sessions
        await s.aclose(SessionClosed("its session task never ran"))  # after a handshake time
        return False

    # --- rendezvous -------------------------------------------------------------------------

    def _on_rendezvous_peers(self, relay: str, regs: list[Registration]) -> None:
        key = f"rv:{relay}"
        listed = set()
        for r in regs:
            if r.node == self._node_id:
                continue
            listed.add(r.node)
            self._on_candidate(key, from_urls(r.node, r.workspace, r.urls, source="rendezvous",
                                              relay=relay))
        for pid in list(self._peering.peers):
            if pid not in listed:
                self._input(CandidateGone(key=key, peer=pid))

    @task("peer")
    async def _on_relayed(self, relay: str, pipe: RelayPipe) -> None:
        if not self._peering.accepts("primary"):
            self._count("DIRECT_REFUSED_FORCED_NOSTR")
            await pipe.aclose()
            return
        try:
            s = await relayed_session(pipe, self._hs_config(), initiator=False,
                                      address=f"relay:{relay}",
                                      timeout=self._config.handshake_timeout)
        except (P2PWorldError, trio_websocket.ConnectionClosed) as e:
            self._count(getattr(e, "code", "RELAY_FAILED"))
            return
        self._peer(s.peer_id).via.add("rendezvous")
        await self._run_owned(s)

    @task("relay")
    async def _rendezvous(self, url: str) -> None:
        """Carry out one :class:`ConnectRendezvous` until the connection ends, and tell the
        node core how it ended (a failure of this task: :meth:`_on_scope_failure` does)."""
        client = RendezvousClient(
            url=url, signer=self._identity.signer, workspace=self._config.workspace,
            direct_urls=lambda: announced_urls(self.url, self._listen_host, url,
                                               public_urls=self._config.public_urls),
            on_peers=self._on_rendezvous_peers,
            on_incoming=lambda pipe: self._sup.spawn(self._on_relayed, url, pipe,
                                                    key=pipe.peer.hex()))
        self._rv_clients[url] = client
        try:
            await client.run(self._nursery)
            err: P2PWorldError = RendezvousClosed(f"rendezvous {url} closed", url=url)
        except (OSError, trio.TooSlowError, trio_websocket.HandshakeError,
                trio_websocket.ConnectionClosed) as e:
            err = RendezvousUnreachable(f"rendezvous {url} unreachable: {e}", url=url)
        except P2PWorldError as e:
            err = e
        self._input(RendezvousEnded(url=url, error=err, registered=client.registered))

    @task("lane", restart=True)
    async def _discovery(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        mdns = MdnsDiscovery(interfaces=self._config.interfaces, node_id=self._node_id,
                             workspace=self._config.workspace, port=self._listen_port,
                             versions=PROTOCOL_VERSIONS)
        self._mdns = mdns
        async with mdns:
            task_status.started()
            async with trio.open_nursery() as n:
                spawn_in(n, mdns.register)
                async for ev in mdns.events():
                    if isinstance(ev, Found):
                        self._on_candidate(f"mdns:{ev.service_name}", ev.candidate)
                    elif isinstance(ev, Lost):
                        self._input(CandidateGone(key=f"mdns:{ev.service_name}"))

    def start_token_schedule(self) -> None:
        """Refresh this node's token when its schedule says (a node with a control
        service); the node core decides when, :meth:`_fetch_token` carries it out."""
        self._core.token = TokenSchedule(self._rng)
        self._core.token.start(expires_at=self.token_expires or 0, now_ms=edge.now_ms())
        self._wake.set()

    @task("request")
    async def _fetch_token(self) -> None:
        """One :class:`RefreshToken`: the control service's keys, then a fresh token; the
        answer goes to the node core (``TokenMinted`` or ``TokenRefused``), which schedules
        the next ask."""
        result: TokenMinted | TokenRefused = TokenRefused(code="CONTROL_UNREACHABLE")
        try:
            with trio.move_on_after(2 * self._config.handshake_timeout):
                result = await self._ask_token()
        except P2PWorldError as e:
            result = TokenRefused(code=e.code)
        finally:
            self._input(result)
        if isinstance(result, TokenRefused):
            self._auth_stats["refresh_failures"] += 1
            self._count(result.code)

    async def _ask_token(self) -> TokenMinted:
        assert self._config.control is not None
        keys = published_keys(*await http_json(self._config.control, "GET", "/v1/keys"))
        raw, exp = minted_token(*await http_json(
            self._config.control, "POST", "/v1/token",
            token_request(self._identity.signer, at=int(time.time()),
                          nostr=self._identity.nostr.public)))
        return TokenMinted(token=raw, expires_at=exp, keys=keys)

    @task("request", restart=True)
    async def _revocation_loop(self) -> None:
        """Poll the control service's signed revocation list every 30 s."""
        control, book = self._config.control, self._cores.auth
        assert control is not None
        assert book is not None  # a node with a control service has auth on
        while True:
            await trio.sleep(30)
            with trio.move_on_after(10):
                try:
                    revoked = published_revocations(
                        *await http_json(control, "GET", "/v1/revocations"), book.config.keys)
                    if revoked is not None:
                        self._input(RevocationsLearned(tokens=revoked[0], nodes=revoked[1]))
                        self._auth_stats["revocation_polls"] += 1
                except P2PWorldError:
                    self._auth_stats["refresh_failures"] += 1

    async def _join(self) -> None:
        cfg = self._config
        from p2pworld import __version__
        now = edge.now_ms()
        info = NodeInfo(nostr_pubkey=self._identity.nostr.public.hex(), device=cfg.device,
                        version=__version__, region=cfg.region)
        self._session_id = secrets.token_hex(8)
        self._session_start = now
        self._call(Join(info=info, session=SessionInfo(
            session_id=self._session_id, workspace=cfg.workspace, started_ms=now)))
        if cfg.capabilities is not None:
            self._call(Advertise(ad=cfg.capabilities))
        await self._settle()

    async def _start_nostr(self) -> None:
        """Start the relay pool, the bridge and, if the (resolved) mode allows it, the Nostr
        lane."""
        svc = NostrService(
            relays=self._config.relays, key=self._identity.nostr, node_id=self._node_id,
            workspace=self._config.workspace, home=self._config.home,
            lane=self.transport_mode != "primary-only",
            presence=mirrors_presence(self._config.mirror, self.transport_mode),
            on_candidate=self._on_nostr_candidate, on_pipe=self._nostr_pipe_opened,
            status=lambda: "online", on_failure=self._on_scope_failure)
        self._nostr = svc
        self._mirror_req.update(svc.outbox.first_events("compute:"))
        await self._sup.start(svc.run, key="nostr")
        if self._config.capabilities is not None:
            await self._mirror_ad(self._config.capabilities)

    async def close(self) -> HandoffReport:
        """Leave cleanly now, as the end of ``open_node`` does: hand every channel this node
        sequences to a live replica (``docs/guarantees.md``, handoff on close), say goodbye,
        stop (calls then raise ``NodeClosed``). Returns what was handed off, and to whom; a
        channel that was not is also a ``NotHandedOff`` notice. Example::

            report = await node.close()  # report.not_handed: channel id -> why
        """
        self._check_open()
        report = await self._hand_off()
        await self._leave()
        self._close("the node was closed")
        return report

    async def _hand_off(self) -> HandoffReport:
        """Hand off what this node sequences; the node core's timer bounds the wait (0: off,
        and the report says so)."""
        self._call(HandOffAll(timeout_ms=math.ceil(self._config.handoff_timeout_s * 1000)))
        await self._settle()
        while not self._hub.handoffs.done:
            self._check_open()
            await self._channels_changed.wait()
        return self._hub.handoffs.report()

    async def _leave(self) -> None:
        """Say goodbye: end the session and beat ``offline`` so peers see ``left`` at once."""
        if self._nostr is not None:
            await self._nostr.goodbye()
        with trio.move_on_after(1.0):
            self._call(SetSession(session=SessionInfo(
                session_id=self._session_id, workspace=self._config.workspace,
                started_ms=self._session_start, ended_ms=edge.now_ms())))
            try:
                self._call(Leave())
            except P2PWorldError as e:
                # No goodbye without a valid token (expired, revoked): peers see this node
                # go stale instead. Leaving still succeeds.
                self._count(e.code)
            await self._settle()
            for s in list(self._sessions.values()):
                await s.flush()

    async def _serve(self) -> None:
        self._listen_port = await self._sup.start(self._listen, key="listener")

    @task("node")
    async def _listen(self, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self._listen_host, listeners = await open_listeners(self._config)
        try:
            task_status.started(listeners[0].socket.getsockname()[1])
            # Each connection is a peer scope of its own, contained where the listener
            # starts it: nothing of ours runs outside the boundary.
            await trio.serve_listeners(
                functools.partial(self._sup.contain, self._handle_incoming, key="incoming"),
                listeners, handler_nursery=self._nursery)
        finally:
            for lst in listeners:
                await trio.aclose_forcefully(lst)

    # --- the flat API of earlier releases: each call delegates to its sub-API (kept at
    # least one release; docs/api.md lists both names) ---------------------------------

    async def open_channel(self, name: str, *, private: bool = False,
                           participants: tuple[bytes, ...] = (),
                           policy: ChannelPolicy | None = None,
                           authority_key: bytes | None = None) -> ChannelRecord:
        """:meth:`Channels.open` (``node.channels.open``)."""
        return await self.channels.open(name, private=private, participants=participants, policy=policy,
                                        authority_key=authority_key)

    async def wait_channel(self, name: str, *, timeout: float | None = None) -> ChannelRecord:
        """:meth:`Channels.wait` (``node.channels.wait``)."""
        return await self.channels.wait(name, timeout=timeout)

    async def publish(self, channel: bytes, payload: bytes, *, key: bytes | None = None,
                      durability: str = "local", timeout: float = 10.0) -> PublishResult:
        """:meth:`Channels.publish` (``node.channels.publish``)."""
        return await self.channels.publish(channel, payload, key=key, durability=durability,
                                           timeout=timeout)

    async def add_participant(self, channel: bytes, member: bytes,
                              timeout: float = 10.0) -> PublishResult:
        """:meth:`Channels.add_participant` (``node.channels.add_participant``)."""
        return await self.channels.add_participant(channel, member, timeout)

    async def remove_participant(self, channel: bytes, member: bytes,
                                 timeout: float = 10.0) -> PublishResult:
        """:meth:`Channels.remove_participant` (``node.channels.remove_participant``)."""
        return await self.channels.remove_participant(channel, member, timeout)

    async def close_channel(self, channel: bytes, timeout: float = 10.0) -> PublishResult:
        """:meth:`Channels.close` (``node.channels.close``)."""
        return await self.channels.close(channel, timeout)

    async def handoff(self, channel: bytes, next_sequencer: bytes) -> EpochChange:
        """:meth:`Channels.handoff` (``node.channels.handoff``)."""
        return await self.channels.handoff(channel, next_sequencer)

    async def recover(self, channel: bytes, authority: Signer,
                      new_sequencer: bytes) -> EpochChange:
        """:meth:`Channels.recover` (``node.channels.recover``)."""
        return await self.channels.recover(channel, authority, new_sequencer)

    async def ack(self, channel: bytes, seq: int) -> Checkpoint | None:
        """:meth:`Channels.ack` (``node.channels.ack``)."""
        return await self.channels.ack(channel, seq)

    def checkpoint(self, channel: bytes) -> Checkpoint | None:
        """:meth:`Channels.checkpoint` (``node.channels.checkpoint``)."""
        return self.channels.checkpoint(channel)

    def messages(self, channel: bytes, *, after: int = 0) -> MessageCursor:
        """:meth:`Channels.messages` (``node.channels.messages``)."""
        return self.channels.messages(channel, after=after)

    def subscribe(self) -> NodeSubscription:
        """:meth:`Channels.subscribe` (``node.channels.subscribe``)."""
        return self.channels.subscribe()

    async def advertise(self, ad: CapabilityAd) -> None:
        """:meth:`World.advertise` (``node.world.advertise``)."""
        return await self.world.advertise(ad)

    async def heartbeat(self, status: str = "online") -> None:
        """:meth:`World.heartbeat` (``node.world.heartbeat``)."""
        return await self.world.heartbeat(status)

    def members(self) -> list[Member]:
        """:meth:`World.members` (``node.world.members``)."""
        return self.world.members()

    def member(self, nid: bytes) -> Member | None:
        """:meth:`World.member` (``node.world.member``)."""
        return self.world.member(nid)

    def query(self, match: Any) -> list[Member]:
        """:meth:`World.query` (``node.world.query``)."""
        return self.world.query(match)

    def world_events(self, *, after: int = 0) -> WorldSubscription:
        """:meth:`World.events` (``node.world.events``)."""
        return self.world.events(after=after)

    async def wait_member(self, nid: bytes, state: str = "online", *,
                          timeout: float | None = None) -> Member:
        """:meth:`World.wait_member` (``node.world.wait_member``)."""
        return await self.world.wait_member(nid, state, timeout=timeout)

    async def compute_channel(self) -> ChannelRecord:
        """:meth:`Compute.channel` (``node.compute.channel``)."""
        return await self.compute.channel()

    async def request_compute(self, job: bytes, *, kind: str = "5000",
                              needs: tuple[str, ...] = (), price: int = 0, sla_ms: int = 0,
                              policy: str = "first", policy_class: str = "free",
                              expires_in: float = 300.0) -> tuple[bytes, str]:
        """:meth:`Compute.request` (``node.compute.request``)."""
        return await self.compute.request(job, kind=kind, needs=needs, price=price, sla_ms=sla_ms,
                                          policy=policy, policy_class=policy_class,
                                          expires_in=expires_in)

    def compute_request(self, channel: bytes, rid: str) -> ComputeRequest | None:
        """:meth:`Compute.get` (``node.compute.get``)."""
        return self.compute.get(channel, rid)

    def eligible_compute(self) -> list[tuple[bytes, ComputeRequest]]:
        """:meth:`Compute.eligible` (``node.compute.eligible``)."""
        return self.compute.eligible()

    async def offer_compute(self, channel: bytes, rid: str, *, price: int = 0,
                            sla_ms: int = 0) -> PublishResult:
        """:meth:`Compute.offer` (``node.compute.offer``)."""
        return await self.compute.offer(channel, rid, price=price, sla_ms=sla_ms)

    async def accept_compute(self, channel: bytes, rid: str) -> PublishResult:
        """:meth:`Compute.accept` (``node.compute.accept``)."""
        return await self.compute.accept(channel, rid)

    async def reject_compute(self, channel: bytes, rid: str, reason: str) -> PublishResult:
        """:meth:`Compute.reject` (``node.compute.reject``)."""
        return await self.compute.reject(channel, rid, reason)

    async def complete_compute(self, channel: bytes, rid: str, data: bytes, *,
                               status: str = "success") -> PublishResult:
        """:meth:`Compute.complete` (``node.compute.complete``)."""
        return await self.compute.complete(channel, rid, data, status=status)

    async def cancel_compute(self, channel: bytes, rid: str) -> PublishResult:
        """:meth:`Compute.cancel` (``node.compute.cancel``)."""
        return await self.compute.cancel(channel, rid)

    async def paid_compute(self, channel: bytes, rid: str) -> PublishResult:
        """:meth:`Compute.paid` (``node.compute.paid``)."""
        return await self.compute.paid(channel, rid)

    def compute_feed(self, *, cursor: dict[bytes, int] | None = None) -> ComputeFeed:
        """:meth:`Compute.feed` (``node.compute.feed``)."""
        return self.compute.feed(cursor=cursor)

    async def wait_compute(self, channel: bytes, rid: str,
                           until: Any = lambda r: r.terminal, *,
                           timeout: float | None = None) -> ComputeRequest:
        """:meth:`Compute.wait` (``node.compute.wait``)."""
        return await self.compute.wait(channel, rid, until, timeout=timeout)

    async def enqueue_bridge_event(self, ev: NostrEvent, *, source: str,
                                   entry_hash: bytes) -> bool:
        """:meth:`Bridge.enqueue` (``node.bridge.enqueue``)."""
        return await self.bridge.enqueue(ev, source=source, entry_hash=entry_hash)

    def bridge_feed(self) -> BridgeFeed:
        """:meth:`Bridge.feed` (``node.bridge.feed``)."""
        return self.bridge.feed()

    def bridge_source(self, event_id: str) -> str | None:
        """:meth:`Bridge.source` (``node.bridge.source``)."""
        return self.bridge.source(event_id)

    def bridge_events(self, source: str) -> list[str]:
        """:meth:`Bridge.events` (``node.bridge.events``)."""
        return self.bridge.events(source)

    def head(self, channel: bytes) -> tuple[int, bytes]:
        """:meth:`Channels.head` (``node.channels.head``)."""
        return self.channels.head(channel)

    def state_hash(self, channel: bytes) -> bytes:
        """:meth:`Channels.state_hash` (``node.channels.state_hash``)."""
        return self.channels.state_hash(channel)

    async def wait_peers(self, count: int, *, timeout: float | None = None) -> None:
        """:meth:`Peers.wait` (``node.peers.wait``)."""
        return await self.peers.wait(count, timeout=timeout)


@asynccontextmanager
async def open_node(config: NodeConfig, *, identity: NodeIdentity | None = None) -> AsyncIterator[Node]:
    """Start a node; leaving the block stops it (goodbyes sent, sessions closed).

    A node holds an exclusive lock on its home while it runs: a second node on the same
    home gets a typed :class:`~p2pworld.errors.IdentityError` naming the holder (each node
    needs a home of its own). A failure to start leaves as one typed
    :class:`~p2pworld.errors.P2PWorldError` naming the address or file; an exception raised by
    the code inside the block leaves unchanged.
    """
    config = _checked(config)
    home = NodeHome(config.home)
    home.lock()
    try:
        async with _open_node(config, identity, home) as node:
            yield node
    finally:
        home.unlock()


def _checked(config: NodeConfig) -> NodeConfig:
    """The configuration as the node runs it (``~`` expanded), its types checked."""
    if not isinstance(config, NodeConfig):
        raise InvalidArgument("open_node takes a NodeConfig", arg="config")
    check_config(config)
    return dataclasses.replace(config, home=Path(config.home).expanduser())


@asynccontextmanager
async def _open_node(config: NodeConfig, identity: NodeIdentity | None, home: NodeHome
                     ) -> AsyncIterator[Node]:
    ident = identity or home.load_or_create()
    auth, token = config.auth, config.token
    if config.control is not None:
        auth, token = await bootstrap_auth(config, ident, auth)
    policy, mode = await transport_policy(config, auth)
    # Fail here, typed, rather than from inside the node's nursery.
    own_book(auth, token, now=time.time(), node_key=ident.public_key,
             nostr_pubkey=ident.nostr.public)
    store = log_store(home)
    world_store: WorldStore | None = None
    caller: list[BaseException] = []
    node_ref: list[Node] = []
    try:
        world_store = WorldStore(home.path / "world.db")
        incarnation = world_store.bump_incarnation()
        world_records = world_store.load()
        # Damage to the file surfaces here as StoreCorrupt naming it, before anything runs;
        # a damaged channel is quarantined and the others are served.
        loaded = store.load_channels(quarantine=True)
        async with _one_error(caller), trio.open_nursery() as nursery:
            node = Node(config, ident, store, nursery, world_store=world_store,
                        incarnation=incarnation, world_records=world_records, auth=auth,
                        token=token)
            node_ref.append(node)
            node._policy, node.transport_mode = policy, mode
            node._hub.startup_check_ms = int(config.startup_check_s * 1000)
            for n in load_into(node._hub, store, loaded):
                node._notice(n)
            for c in loaded:
                head = node._durable[c.record.channel] = node._hub.log(c.record.channel).seq
                node._core.lanes.ledger.loaded(c.record.channel, head)
            await node._serve()
            sup = node._sup
            sup.spawn(node._effect_runner, key="effects")
            sup.spawn(node._store_runner, key="store")
            sup.spawn(node._timeouts, key="timeouts")
            if config.relays:
                await node._start_nostr()
            await node._join()
            if config.control is not None:
                node.start_token_schedule()
                sup.spawn(node._revocation_loop, key="revocations")
            if config.mdns:
                await sup.start(node._discovery, key="mdns")
            for url in config.peers:
                node._peering.add_static(url)
            node._core.rendezvous = RendezvousSchedule.of(config.rendezvous, node._rng, edge.now_ms())
            node._wake.set()
            try:
                try:
                    yield node
                except BaseException as e:
                    caller.append(e)  # the application's own: it leaves unchanged
                    raise
                if node._closed is None:  # not closed by the application (node.close())
                    await node._hand_off()
                    await node._leave()
            finally:
                node._sup.closed = True
                node._close()
                nursery.cancel_scope.cancel()
    finally:
        if node_ref and node_ref[0]._nostr is not None:
            node_ref[0]._nostr.close()
        store.close()
        if world_store is not None:
            world_store.close()


@asynccontextmanager
async def _one_error(caller: list[BaseException]) -> AsyncIterator[None]:
    """What leaves ``open_node``: the application's own exception unchanged; otherwise the
    node's one typed error (the failure that ended it), not an ``ExceptionGroup``."""
    try:
        yield
    except BaseExceptionGroup as g:
        out = leaving_error(g, caller, (trio.Cancelled,))
        if out is None:
            raise
        raise out from (None if out in caller else g)


CARRIERS: dict[type, Callable[[Node, Any], Awaitable[None] | None]] = {
    Send: Node._carry_send, SendAll: Node._carry_send_all, Outcomes: Node._carry_outcomes,
    Resolved: Node._resolved, Delivered: Node._carry_delivered,
    ChannelKnown: Node._carry_channel_known, WorldChanged: Node._carry_world_changed,
    WorldSave: Node._carry_world_save, PeerMisbehaved: Node._carry_misbehaved,
    Notice: Node._notice, RefreshToken: Node._carry_refresh,
    ConnectRendezvous: Node._carry_rendezvous, ProbeStore: Node._carry_probe,
    Dial: Node._carry_dial, CloseSession: Node._carry_close,
}
"""How the trio executor carries out each effect the cores plan, by its exact type (the
simulator's is :data:`p2pworld.testing.executor.CARRIERS`); an async carrier is awaited in the
store task's order."""


__all__ = ["Node", "NodeConfig", "ChannelMessage", "PeerInfo", "open_node", "short_id",
           "WorldSubscription", "CapabilityAd", "Member", "WorldEvent", "Channels", "World",
           "Compute", "Bridge", "Peers", "MessageCursor", "NodeSubscription", "ComputeEvent",
           "ComputeFeed"]
