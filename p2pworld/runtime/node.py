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
import heapq
import itertools
import math
import random
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio
import trio_websocket

from discovery.mdns import Found, Lost, MdnsDiscovery, resolve_interfaces
from discovery.rendezvous_client import RelayPipe, RendezvousClient
from p2pworld import codec
from p2pworld.auth.book import REDUCER_SCOPES, AuthConfig, TokenBook
from p2pworld.auth.control import token_request, verify_policy, verify_revocations
from p2pworld.auth.schedule import TokenSchedule
from p2pworld.channel.hub import (
    ChannelHub,
    ChannelKnown,
    Checkpoint,
    Delivered,
    Effect,
    Notice,
    Outcomes,
    Persist,
    PublishResult,
    Resolved,
)
from p2pworld.compute.core import COMPUTE_CHANNEL, compute_policy
from p2pworld.compute.keys import op_key
from p2pworld.compute.state import Request as ComputeRequest, encode_event
from p2pworld.core.cores import Cores, NodeEffect, build_cores
from p2pworld.core.lanes import (
    LaneCounters,
    lane_of_address,
    nostr_may_carry,
    resolve_mode,
)
from p2pworld.core.mirror import compute_mirror_rows, handler_event
from p2pworld.core.node import (
    Called,
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
    StoreProbed,
    TimerFired,
    TokenMinted,
    TokenRefused,
)
from p2pworld.core.peers import PeerCore
from p2pworld.core.persist import (
    Carry,
    Commit,
    Step,
    gated_tail,
    persisted_channels,
)
from p2pworld.core.relays import RendezvousSchedule
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
    AddressUnavailable,
    Backpressure,
    Conflict,
    DiscoveryError,
    InvalidArgument,
    LocalProtocolError,
    NodeClosed,
    P2PWorldError,
    PublishTimeout,
    RendezvousClosed,
    RendezvousUnreachable,
    SessionClosed,
    StoreCorrupt,
    StoreFull,
    Unauthorized,
    WaitTimeout,
    error_from_code,
)
from p2pworld.identity import NodeIdentity, Signer, blake2b256, short_id
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
from p2pworld.log.entry import ChannelPolicy, ChannelRecord, Entry
from p2pworld.log.state import EpochChange
from p2pworld.nostr.event import Event as NostrEvent
from p2pworld.runtime.statistics import NodeStatistics, node_statistics
from p2pworld.transport.candidate import Candidate, from_urls
from p2pworld.transport.handshake import MAX_HANDSHAKE_BYTES, PROTOCOL_VERSIONS, HandshakeConfig
from p2pworld.transport.peering import Keepalive
from p2pworld.transport.rendezvous import Registration
from p2pworld.wire import Message
from p2pworld.world.core import (
    Member,
    WorldChanged,
    WorldConfig,
    WorldEvent,
    WorldSave,
)
from p2pworld.world.doc import CapabilityAd, NodeInfo, SessionInfo
from p2pworld.world.links import LinkUpdates


@dataclass(kw_only=True)
class NodeConfig:
    """How a node runs.

    Attributes:
        home: directory with the node's keys and its log store.
        workspace: only peers of this workspace are joined.
        interfaces: IPv4 addresses or interface names to listen and run mDNS on.
        port: websocket port (0 = pick a free one).
        mdns: discover peers with mDNS.
        peers: extra ``ws://host:port/`` addresses to dial (static seeds).
        handshake_timeout: seconds a handshake may take.
        keepalive: seconds between pings; a session silent for 3 intervals is dropped.
        dial_grace: seconds the node with the higher id waits before dialling (the lower id
            dials first, so two nodes rarely open two sessions to each other).
    """

    home: Path
    workspace: str = "default"
    interfaces: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 0
    mdns: bool = True
    peers: list[str] = field(default_factory=list)
    handshake_timeout: float = 10.0
    keepalive: float = 5.0
    dial_grace: float = 2.0
    token: bytes | None = None
    device: str = ""
    """Device label published in this node's world document."""
    region: str = ""
    world: WorldConfig = field(default_factory=WorldConfig)
    capabilities: CapabilityAd | None = None
    """Advertised at start (``advertise_capabilities``); change it with ``node.advertise``."""
    public_urls: list[str] | None = None
    """Direct URLs published to rendezvous nodes (default: the listen URL, when it is
    reachable from the rendezvous)."""
    control: str | None = None
    """Control service URL (``http://host:port``): the node fetches its signing keys, mints its
    token (proving possession of its node key), refreshes it before expiry and polls
    revocations. With it (or with ``auth``), every mutation is checked against tokens."""
    auth: AuthConfig | None = None
    """Token validation settings (control keys, leeway, membership grace); filled from the
    control service when only ``control`` is given. None and no ``control``: an open world."""
    rendezvous: list[str] = field(default_factory=list)
    """Rendezvous nodes (``ws://host:port/``): register there, find workspace peers across
    subnets, and relay sessions to peers that cannot be reached directly."""
    relays: list[str] = field(default_factory=list)
    """Nostr relays (``ws://host:port``): the mirror lane (bridge outbox) and, when the
    transport mode allows it, the encrypted fallback lane. Empty: no Nostr at all."""
    transport: str = "primary-with-fallback"
    """``primary-only``, ``primary-with-fallback`` or ``forced-nostr``; the control service's
    policy may narrow it further (never widen it)."""
    mirror: tuple[str, ...] = ("presence", "capabilities", "compute")
    """Which mirrors this node publishes to its relays (compute entries only for channels whose
    policy has ``nostr_mirror``)."""
    fallback_alert: float = 0.05
    """``health()["transport"]["alert"]`` is raised above this fallback ratio."""
    startup_check_s: float = 2.0
    """How long a channel this node sequences, loaded from disk, waits for its peers' heads
    before acknowledging anything (a store that rolled back is found that way; with no answer
    the node goes on with a ``ROLLBACK_UNCHECKED`` notice). 0: no check."""


@dataclass(frozen=True, kw_only=True)
class ChannelMessage:
    """One delivered message, verified (writer signature, hash chain, sequencer head)."""

    channel: bytes
    seq: int
    sender: bytes
    payload: bytes
    entry_hash: bytes
    sequencer_time_ms: int
    kind: str = "msg"
    """``msg`` (application payload) or ``ctl`` (membership / lifecycle entry)."""
    readable: bool = True
    """False when a private channel's payload could not be opened on this node (it was sent
    under a key this node never held); ``payload`` is then the sealed bytes."""
    lane: str | None = None
    """How this node received the entry: ``direct``, ``relay`` (rendezvous), ``nostr``, or
    ``local`` (this node sequenced it); None when it arrived before this node's last start
    (or beyond the last :data:`LANE_MEMORY` entries of the channel)."""

    @classmethod
    def from_entry(cls, e: Entry, node: Node) -> ChannelMessage:
        readable = True
        try:
            payload = node.hub.open_payload(e)
        except P2PWorldError:
            payload, readable = e.payload, False
        return cls(channel=e.channel, seq=e.seq, sender=e.sender, payload=payload,
                   entry_hash=e.hash, sequencer_time_ms=e.sequencer_time, kind=e.kind,
                   readable=readable, lane=node.lane_of(e.channel, e.seq))


class MessageCursor:
    """An async iterator over a channel's verified messages, from a position onwards."""

    def __init__(self, node: Node, channel: bytes, after: int) -> None:
        self._node = node
        self.channel = channel
        self.position = after

    def __aiter__(self) -> MessageCursor:
        return self

    async def __anext__(self) -> ChannelMessage:
        while True:
            self._node._check_open()
            log = self._node.hub.log(self.channel)
            ents = log.entries
            top = self._node._readable_seq(self.channel)
            self.position = min(self.position, log.seq)  # a recovery truncated the log
            if self.position < top:
                e = ents[self.position - log.floor] if self.position >= log.floor else None
                if e is None:
                    # Below retention: skip to what is held (the node reported it).
                    self.position = log.floor
                    continue
                self.position += 1
                return ChannelMessage.from_entry(e, self._node)
            await self._node._changed_event(self.channel).wait()


class NodeSubscription:
    """Node-scoped subscription: every channel this node participates in, each resumed after
    its checkpoint. Yields messages per channel in ``seq`` order (channels interleave)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._pos: dict[bytes, int] = {}

    def __aiter__(self) -> NodeSubscription:
        return self

    async def __anext__(self) -> ChannelMessage:
        node = self._node
        while True:
            node._check_open()
            for rec in sorted(node.hub.records(), key=lambda r: r.channel):
                ch = rec.channel
                if not node.hub.participates(ch):
                    continue
                if ch not in self._pos:
                    cp = node.hub.cursors.get(ch)
                    self._pos[ch] = cp.seq if cp else 0
                log = node.hub.log(ch)
                pos = max(min(self._pos[ch], log.seq), log.floor)
                if pos < node._readable_seq(ch):
                    self._pos[ch] = pos + 1
                    return ChannelMessage.from_entry(log.entries[pos - log.floor], node)
            ev = node._any_delivered
            await ev.wait()


class WorldSubscription:
    """Async iterator over world events from a position on (``position`` = last ``seq``).
    If events older than the core's history were needed, it yields one ``reset`` event
    (``node`` empty) and then a ``joined``/``updated`` event per member as it stands now."""

    def __init__(self, node: Node, after: int) -> None:
        self._node = node
        self.position = after
        self._pending: list[WorldEvent] = []

    def __aiter__(self) -> WorldSubscription:
        return self

    async def __anext__(self) -> WorldEvent:
        node = self._node
        while not self._pending:
            node._check_open()
            evs, lost = node.world.events_after(self.position)
            if lost:
                now = _now_ms()
                last = node.world.event_seq
                self._pending = [WorldEvent(seq=last, kind="reset", node=b"", at_ms=now)] + [
                    WorldEvent(seq=last, kind="joined" if m.state == "online" else "updated",
                               node=m.node_id, at_ms=now) for m in node.members()]
                self.position = last
                break
            if evs:
                self._pending = evs
                break
            await node._world_changed.wait()
        ev = self._pending.pop(0)
        self.position = max(self.position, ev.seq)
        return ev


@dataclass(frozen=True)
class ComputeEvent:
    """What :class:`ComputeFeed` yields: ``kind`` is ``request`` (a request this node's live
    ad satisfies, open, not offered on yet), ``assigned`` (the requester assigned it to this
    node: accept it or reject it) or ``reopened`` (its assignee lapsed or rejected it and it
    is open again); ``request`` as it stands now; ``seq`` the entry of the requester's compute
    channel that says so. Unpacks as ``(channel, request)``."""

    kind: str
    channel: bytes
    request: ComputeRequest
    seq: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.channel, self.request))


class ComputeFeed:
    """The provider-scoped subscription: async iterator of :class:`ComputeEvent`, live.

    ``cursor`` (channel id -> seq read up to) is where the feed stands; store it and pass it
    back to :meth:`Node.compute_feed` to resume after a restart, as with
    :meth:`Node.subscribe`: events are judged against each request as it stands when they
    are read, so a resumed feed never replays an assignment that no longer holds.
    """

    def __init__(self, node: Node, cursor: dict[bytes, int]) -> None:
        self._node = node
        self.cursor = dict(cursor)
        self._ready: list[ComputeEvent] = []

    def __aiter__(self) -> ComputeFeed:
        return self

    async def __anext__(self) -> ComputeEvent:
        node = self._node
        while True:
            node._check_open()
            if self._ready:
                return self._ready.pop(0)
            compute = node.cores.compute
            assert compute is not None
            me = node.member(node.node_id)
            now = _now_ms()
            for log in node.cores.compute_logs():
                ch = log.record.channel
                events, upto = compute.provider_events(
                    log, me.caps if me else None, after=self.cursor.get(ch, 0), now_ms=now)
                self.cursor[ch] = upto
                st = compute.state(log)
                self._ready += [ComputeEvent(ev.kind, ch, st.requests[ev.rid], ev.seq)
                                for ev in events]
            if not self._ready:
                with trio.move_on_after(0.25):
                    await node._any_delivered.wait()


@dataclass
class PeerInfo:
    node_id: bytes
    state: str = "discovered"  # discovered | connecting | connected | backoff
    via: set[str] = field(default_factory=set)
    address: str = ""
    since: float = 0.0
    last_error: str = ""
    handshakes: int = 0
    failures: int = 0


MAX_PRE_HANDSHAKE = 128
"""Incoming connections waiting for their handshake at once; beyond, the oldest is closed
(thousands of half-open connections never starve a legitimate peer, nor the node's files)."""
UPGRADE_TIMEOUT = 1.0
"""Seconds an incoming connection has to send its websocket upgrade request: a client sends
it at once; anything else (no bytes, other bytes) is closed."""

T = TypeVar("T")


def _need(value: object, kind: type | tuple[type, ...], name: str) -> None:
    """Type-check an argument at the API edge (a typed refusal, not an AttributeError
    somewhere below)."""
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise InvalidArgument(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, "
                              f"not {type(value).__name__}", arg=name)


def _lane(address: str) -> str:
    """A session's lane family: ``nostr``, or ``primary`` (direct or rendezvous-relayed)."""
    return "nostr" if address.startswith("nostr:") else "primary"


def _now_ms() -> int:
    return int(time.time() * 1000)


LANE_MEMORY = 10_000
"""Entries per channel whose receiving lane a node remembers (for ``ChannelMessage.lane``)."""
LINGER_PASSES = 32
"""Most scheduler passes the effect runner yields while work keeps arriving (batching)."""

class Node:
    """A running p2pworld node. Create it with :func:`open_node`."""

    def __init__(self, config: NodeConfig, identity: NodeIdentity, store: LogStore,
                 nursery: trio.Nursery, *, world_store: WorldStore | None = None,
                 incarnation: int = 1, world_records: list[list[bytes]] | None = None,
                 auth: AuthConfig | None = None, token: bytes | None = None) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.store = store
        self.world_store = world_store
        self._rng = random.SystemRandom()
        token = token or config.token
        self.auth_stats: dict[str, Any] = {"refresh_failures": 0, "revocation_polls": 0}
        book = TokenBook(auth) if auth is not None else None
        self.cores: Cores = build_cores(identity.signer, workspace=config.workspace,
                                        rng=self._rng, incarnation=incarnation,
                                        world_records=world_records, world_config=config.world,
                                        auth=book, token=token or b"")
        if book is not None and token:
            book.learn(token, now=time.time(), node_key=identity.public_key,
                       nostr_pubkey=identity.nostr.public)
        self.hub: ChannelHub = self.cores.hub
        self.world = self.cores.world
        self._world_changed = trio.Event()
        self._world_saves: dict[bytes, tuple[bytes, ...]] = {}
        self.closed: NodeClosed | None = None
        """Set when the node has stopped: every call then raises it (``NODE_CLOSED``)."""
        self._running = False
        self._storing = 0  # batches handed to the store task and not yet carried out
        self._idle = trio.Event()
        self._jobs_send, self._jobs_recv = trio.open_memory_channel[tuple[Step, ...]](0)
        self.core = NodeCore(self.cores, first_tick_ms=_now_ms(), keepalive=Keepalive(
            interval_ms=round(config.keepalive * 1000)), links=LinkUpdates())
        """The node core: every input goes through it, and the effect runner and store task
        carry out its plans (:mod:`p2pworld.core.node`)."""
        self._wake_at: int | None = None  # the latest plan's wake-up (node clock, ms)
        self._any_delivered = trio.Event()
        self._notices_send, self._notices_recv = trio.open_memory_channel[Notice](256)
        self.tracer: Any = None
        self._nursery = nursery
        self.sup = Supervisor(nursery, on_failure=self._on_scope_failure, rng=self._rng)
        """Every background task of this node starts through it (``p2pworld.io.scopes``)."""
        self.scope_stats: dict[str, dict[str, Any]] = {
            s: {"failures": 0, "last_error": None, "last_subject": None} for s in SCOPES}
        self.sessions: dict[bytes, Session] = {}
        self.peers: dict[bytes, PeerInfo] = {}
        self._wake = trio.Event()
        self._changed: dict[bytes, trio.Event] = {}
        self._outcomes: dict[int, PublishResult | P2PWorldError] = {}
        self._outcome_events: dict[int, trio.Event] = {}
        self._deadlines: list[tuple[float, int]] = []  # (trio time, req): publish timeouts
        self._timer_scope = trio.CancelScope()
        self._key_prefix = secrets.token_bytes(8)
        self._key_counter = itertools.count()
        self._peers_changed = trio.Event()
        self._channels_changed = trio.Event()
        self.listen_port = 0
        self.listen_host = config.interfaces[0] if config.interfaces else "127.0.0.1"
        self.errors: dict[str, int] = {}
        self.mdns: MdnsDiscovery | None = None
        self.rendezvous: dict[str, RendezvousClient] = {}
        self.nostr: NostrService | None = None
        self.policy: dict[str, Any] | None = None
        self.core.peers = PeerCore(
            me=self.node_id, workspace=config.workspace, rng=self._rng,
            mode="primary-only" if not config.relays else config.transport,
            grace_ms=round(config.dial_grace * 1000),
            attempt_ms=round(config.handshake_timeout * 1000))
        self.lanes = LaneCounters(alert_at=config.fallback_alert)
        self._mirror_req: dict[str, str] = {}
        self._lanes_seen: dict[bytes, dict[int, str]] = {}
        self._lanes_top: dict[bytes, int] = {}  # highest seq in _lanes_seen (O(1) lane_of)
        self._pre_handshake: dict[trio.CancelScope, None] = {}
        """Incoming connections that have not finished their handshake, oldest first."""
        self._closing: weakref.WeakSet[Session | RelayPipe | NostrPipe] = weakref.WeakSet()
        """Objects a failed scope held that are being closed (see _on_scope_failure)."""
        self._durable: dict[bytes, int] = {}
        """Per channel, the highest seq known to be on this node's disk: what readers see
        (an entry appended in memory is not read before its transaction committed)."""
        self._loaded_heads: dict[bytes, int] = {}
        """Channel heads loaded from disk at start (entries up to them came before)."""

    # --- public API -------------------------------------------------------------------------

    @property
    def transport_mode(self) -> str:
        """The effective transport mode (``docs/transport.md``): the node core dials by it."""
        return self._peering.mode

    @transport_mode.setter
    def transport_mode(self, mode: str) -> None:
        self._peering.mode = mode

    @property
    def _peering(self) -> PeerCore:
        assert self.core.peers is not None
        return self.core.peers

    @property
    def other_workspaces(self) -> dict[str, int]:
        """Workspaces of peers discovered but not joined (at most 64 names), by sightings."""
        return self._peering.other_workspaces

    @property
    def token(self) -> bytes | None:
        """This node's current token (None: an open world)."""
        return self.world.token or None

    @property
    def token_expires(self) -> int | None:
        """When this node's current token expires (unix s; None: no token)."""
        book, tok = self.cores.auth, self.token
        held = book.tokens.get(self.identity.public_key) if book is not None else None
        return held[1].expires_at if held is not None and held[0] == tok else None

    @property
    def url(self) -> str:
        return f"ws://{self.listen_host}:{self.listen_port}/"

    async def open_channel(self, name: str, *, private: bool = False,
                           participants: tuple[bytes, ...] = (),
                           policy: ChannelPolicy | None = None,
                           authority_key: bytes | None = None) -> ChannelRecord:
        """``open_channel``: open (or reopen) a channel sequenced by this node.

        Args:
            private: payloads are end-to-end encrypted with a channel key shared with
                participants only.
            participants: node public keys allowed besides this node (empty and not private:
                open to the workspace).
            policy: retention, replication factor ``k``, Nostr mirror / fallback flags, the
                payload limit ``max_payload`` (default 1 MiB, at most 16 MiB).
            authority_key: signs unplanned handoffs (default: this node's key).

        Names starting with ``~`` are the library's own (``InvalidArgument``).
        """
        _need(name, str, "name")
        if name.startswith("~") or (policy is not None and policy.app):
            raise InvalidArgument("channel names starting with '~' and policy.app are the "
                                  "library's own", arg="name")
        return await self._open_channel(name, private=private, participants=participants,
                                        policy=policy, authority_key=authority_key)

    async def _open_channel(self, name: str, *, private: bool = False,
                            participants: tuple[bytes, ...] = (),
                            policy: ChannelPolicy | None = None,
                            authority_key: bytes | None = None) -> ChannelRecord:
        self._check_open()
        rec, fx = self.hub.open_channel(name, now_ms=_now_ms(), private=private,
                                        participants=participants, policy=policy,
                                        authority_key=authority_key)
        self._submit(fx)
        await self._settle()
        if self.hub.read_only is not None and rec.channel not in self.hub.own:
            raise self.hub.read_only  # its record never reached the disk
        return rec

    def channels(self) -> list[ChannelRecord]:
        return self.hub.records()

    async def wait_channel(self, name: str, *, timeout: float | None = None
                           ) -> ChannelRecord:
        """Wait until a channel called ``name`` is known (opened here or announced by a
        peer). Raises :class:`~p2pworld.errors.WaitTimeout` after ``timeout`` seconds (None:
        no bound), :class:`~p2pworld.errors.NodeClosed` if the node stops meanwhile."""
        _need(name, str, "name")

        def found() -> ChannelRecord | None:
            got = self.hub.find(name)
            return got[0] if got else None

        return await self._until(found, lambda: self._channels_changed, timeout,
                                 f"channel {name!r}")

    async def _until(self, cond: Callable[[], T | None], event: Callable[[], trio.Event],
                     timeout: float | None, what: str) -> T:
        """Wait until ``cond()`` gives a value, waking on ``event()``; typed timeout."""
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
        if self.closed is not None:
            raise self.closed

    def _close(self, why: str = "the node has stopped") -> None:
        """The node stopped: every call from now on, and every one still waiting (in a task
        outside the node), raises :class:`~p2pworld.errors.NodeClosed`."""
        if self.closed is not None:
            return
        self.closed = NodeClosed(why)
        for ev in [self._channels_changed, self._peers_changed, self._world_changed,
                   self._any_delivered, self._idle, *self._changed.values(),
                   *self._outcome_events.values()]:
            ev.set()
        self._notices_send.close()

    async def publish(self, channel: bytes, payload: bytes, *, key: bytes | None = None,
                      durability: str = "local", timeout: float = 10.0) -> PublishResult:
        """``publish_message``: returns once the sequencer acknowledged the message.

        ``key`` is the idempotency key (unique if omitted: a random prefix drawn at start
        and a counter): publishing again with the same key and payload returns the original
        ``seq`` (``status="duplicate"``); with another payload it raises
        :class:`~p2pworld.errors.Conflict`. ``durability="replicated"`` waits until k
        participants besides the sequencer have the entry on disk.

        Raises:
            PublishTimeout: the outcome is indeterminate. A submission to a remote sequencer
                stays in the durable outbox and is resubmitted with the same key when a lane
                returns; calling ``publish`` again with the same key is also safe.
            Conflict, NotSequencer, NotParticipant, ChannelClosed: the publish was refused.
        """
        self._check_open()
        _need(channel, bytes, "channel")
        _need(payload, bytes, "payload")
        if key is not None:
            _need(key, bytes, "key")
        if durability not in ("local", "replicated"):
            raise InvalidArgument("durability is 'local' or 'replicated'", arg="durability")
        key = key or self._key_prefix + next(self._key_counter).to_bytes(8, "big")
        if self.hub.record(channel).private and channel not in self.hub.own and \
                not self.hub.channel_keys(channel):
            with trio.move_on_after(timeout):
                # A member that just learned of a private channel may not hold its key yet:
                # the rekey entry is on its way. Wait for the channel to move, then try again.
                while not self.hub.channel_keys(channel):
                    await self._changed_event(channel).wait()
        req, fx = self.hub.publish(channel, payload, idem_key=key, now_ms=_now_ms(),
                                   want=durability)
        return await self._await_outcome(req, fx, timeout, key)

    async def _await_outcome(self, req: int, fx: list[Effect], timeout: float,
                             key: bytes) -> PublishResult:
        ev = self._outcome_events[req] = trio.Event()
        self._submit(fx)
        # One shared timer task instead of a cancel scope per publish (see _timeouts).
        deadline = trio.current_time() + timeout
        heapq.heappush(self._deadlines, (deadline, req))
        if self._deadlines[0][1] == req:
            self._timer_scope.cancel()
        try:
            await ev.wait()
        finally:
            self._outcome_events.pop(req, None)
        out = self._outcomes.pop(req, None)
        if out is None and self.closed is not None:
            raise PublishTimeout("the node stopped before an answer came; resubmit with the "
                                 "same key", key=key.hex(), node_closed=True)
        if out is None:
            raise PublishTimeout(f"no answer within {timeout} s; resubmit with the same key",
                                 key=key.hex())
        if isinstance(out, P2PWorldError):
            raise out
        return out

    async def add_participant(self, channel: bytes, member: bytes,
                              timeout: float = 10.0) -> PublishResult:
        """Owner only: add a member (a sequenced control entry; private channels rekey)."""
        self._check_open()
        req, fx = self.hub.add_participant(channel, member, now_ms=_now_ms())
        return await self._await_outcome(req, fx, timeout, b"")

    async def remove_participant(self, channel: bytes, member: bytes,
                                 timeout: float = 10.0) -> PublishResult:
        """Owner only: remove a member; on private channels the key is rotated."""
        self._check_open()
        req, fx = self.hub.remove_participant(channel, member, now_ms=_now_ms())
        return await self._await_outcome(req, fx, timeout, b"")

    async def close_channel(self, channel: bytes, timeout: float = 10.0) -> PublishResult:
        """``close_channel`` (owner only): no more appends; readers can still catch up."""
        self._check_open()
        req, fx = self.hub.close_channel(channel, now_ms=_now_ms())
        return await self._await_outcome(req, fx, timeout, b"")

    async def handoff(self, channel: bytes, next_sequencer: bytes) -> EpochChange:
        """Planned handoff of a channel this node sequences to ``next_sequencer`` (a key)."""
        self._check_open()
        ec, fx = self.hub.handoff(channel, next_sequencer, now_ms=_now_ms())
        self._submit(fx)
        await self._settle()
        return ec

    async def recover(self, channel: bytes, authority: Signer,
                      new_sequencer: bytes) -> EpochChange:
        """Unplanned handoff, signed by the channel's authority key (see ``docs/``)."""
        self._check_open()
        ec, fx = self.hub.recover(channel, authority, new_sequencer, now_ms=_now_ms())
        self._submit(fx)
        await self._settle()
        return ec

    async def ack(self, channel: bytes, seq: int) -> Checkpoint | None:
        """``ack_message``: durably record that this node consumed ``channel`` up to ``seq``."""
        self._check_open()
        self._submit(self.hub.ack_message(channel, seq, now_ms=_now_ms()))
        await self._settle()
        return self.hub.cursors.get(channel)

    def checkpoint(self, channel: bytes) -> Checkpoint | None:
        return self.hub.cursors.get(channel)

    def messages(self, channel: bytes, *, after: int = 0) -> MessageCursor:
        """Every message of ``channel`` with ``seq > after``, in order, then live ones.

        Returns an async iterator (not a generator, so breaking out of ``async for`` needs no
        cleanup); ``cursor.position`` is the last ``seq`` yielded.
        """
        self._check_open()
        _need(channel, bytes, "channel")
        self.hub.record(channel)  # raises UnknownChannel now, not on first iteration
        return MessageCursor(self, channel, after)

    def subscribe(self) -> NodeSubscription:
        """The node-scoped subscription: traffic of every channel this node participates in,
        resumed after each channel's checkpoint (``ack``), live after that."""
        return NodeSubscription(self)

    # --- world state ---------------------------------------------------------------------

    async def advertise(self, ad: CapabilityAd) -> None:
        """``advertise_capabilities``: publish (replace) this node's capability ad (and, with
        relays, mirror it as NIP-89 handler information)."""
        self._check_open()
        self._submit(self.world.advertise(ad, now_ms=_now_ms()))
        await self._settle()
        await self._mirror_ad(ad)

    async def heartbeat(self, status: str = "online") -> None:
        """``heartbeat``: beat now (the node also beats every ``world.heartbeat_ms``);
        ``status`` is ``online`` or ``busy``."""
        self._check_open()
        self._submit(self.world.heartbeat(now_ms=_now_ms(), status=status))
        await self._settle()

    def members(self) -> list[Member]:
        """Every node of the world this node knows (itself included), with presence."""
        return self.world.members(now_ms=_now_ms())

    def member(self, nid: bytes) -> Member | None:
        return self.world.member(nid, now_ms=_now_ms())

    def query(self, match: Any) -> list[Member]:
        """The capability query: live members whose unexpired ad satisfies ``match(ad)``."""
        return self.world.query(match, now_ms=_now_ms())

    def world_events(self, *, after: int = 0) -> WorldSubscription:
        """The workspace-scoped subscription: ``joined`` / ``updated`` / ``stale`` / ``left``
        events after position ``after`` (``event.seq``), then live ones."""
        return WorldSubscription(self, after)

    async def wait_member(self, nid: bytes, state: str = "online", *,
                          timeout: float | None = None) -> Member:
        """Wait until ``nid`` is known here in ``state`` (and, for ``online``, its document
        has arrived too: heartbeats may overtake it). Typed timeout as :meth:`wait_channel`."""
        _need(nid, bytes, "nid")

        def ready() -> Member | None:
            m = self.member(nid)
            ok = m is not None and m.state == state and (state != "online" or m.info)
            return m if ok else None

        return await self._until(ready, lambda: self._world_changed, timeout,
                                 f"member {nid.hex()[:16]} {state}")

    # --- compute ----------------------------------------------------------------------------

    async def compute_channel(self) -> ChannelRecord:
        """This node's compute channel (opened on first use): its requests live there, and
        this node, sequencing it, is the one writer that decides each assignment."""
        log = self.cores.own_compute()
        if log is not None:
            return log.record
        return await self._open_channel(COMPUTE_CHANNEL, policy=compute_policy(
            nostr_mirror="compute" in self.config.mirror and bool(self.config.relays)))

    async def request_compute(self, job: bytes, *, kind: str = "5000",
                              needs: tuple[str, ...] = (), price: int = 0, sla_ms: int = 0,
                              policy: str = "first", policy_class: str = "free",
                              expires_in: float = 300.0) -> tuple[bytes, str]:
        """``request_compute``: returns ``(channel, request id)``. ``needs``: tools, models or
        job kinds a provider's ad must list; ``policy``: ``first`` (default),
        ``lowest_price`` or ``best_sla``; ``policy_class="paid"`` waits for :meth:`paid`."""
        rec = await self.compute_channel()
        rid = secrets.token_hex(8)
        await self.publish(rec.channel, encode_event(
            "request", rid=rid, kind=kind, job=job, policy=policy, price=price, sla_ms=sla_ms,
            needs=list(needs), expires=_now_ms() + int(expires_in * 1000),
            **{"class": policy_class}), key=f"{rid}/request".encode())
        return rec.channel, rid

    def compute_request(self, channel: bytes, rid: str) -> ComputeRequest | None:
        """A request as this node's copy of the requester's log says it stands."""
        assert self.cores.compute is not None
        return self.cores.compute.state(self.hub.log(channel)).requests.get(rid)

    def eligible_compute(self) -> list[tuple[bytes, ComputeRequest]]:
        """The provider-scoped query: open requests this node's live ad satisfies."""
        assert self.cores.compute is not None
        me = self.member(self.node_id)
        return self.cores.compute.eligible(self.cores.compute_logs(), me.caps if me else None,
                                           now_ms=_now_ms())

    async def _compute_op(self, channel: bytes, rid: str, op: str, **fields: Any
                          ) -> PublishResult:
        key = op_key(rid, op, by=self.node_id, attempt=int(fields.get("attempt", 0)))
        try:
            return await self.publish(channel, encode_event(op, rid=rid, **fields), key=key)
        except Conflict as e:
            r = self.compute_request(channel, rid)
            who = r.accepted_by or r.assignee if r else None
            if who is not None:
                e.details["assignee"] = who.hex()
            raise

    async def offer_compute(self, channel: bytes, rid: str, *, price: int = 0,
                            sla_ms: int = 0) -> PublishResult:
        """Offer to run a request. Raises ``Conflict`` (with ``details["assignee"]``) if it
        is already assigned to someone else."""
        return await self._compute_op(channel, rid, "offer", price=price, sla_ms=sla_ms)

    async def accept_compute(self, channel: bytes, rid: str) -> PublishResult:
        """``accept_compute``: the assigned provider accepts (``Conflict`` for anyone else)."""
        r = self.compute_request(channel, rid)
        attempt = r.attempt if r else 0
        return await self._compute_op(channel, rid, "accept", attempt=attempt)

    async def reject_compute(self, channel: bytes, rid: str, reason: str) -> PublishResult:
        """``reject_compute``: the assigned provider declines; the next offer is assigned."""
        r = self.compute_request(channel, rid)
        attempt = r.attempt if r else 0
        return await self._compute_op(channel, rid, "reject", attempt=attempt, reason=reason)

    async def complete_compute(self, channel: bytes, rid: str, data: bytes, *,
                               status: str = "success") -> PublishResult:
        """The accepted provider returns the result (``success``, ``error`` or ``partial``)."""
        return await self._compute_op(channel, rid, "result", status=status, data=data)

    async def cancel_compute(self, channel: bytes, rid: str) -> PublishResult:
        """The requester cancels a request that has not ended."""
        return await self._compute_op(channel, rid, "cancel")

    async def paid_compute(self, channel: bytes, rid: str) -> PublishResult:
        """The requester marks a ``paid``-class job paid (payment itself is the runtime's)."""
        return await self._compute_op(channel, rid, "paid")

    def compute_feed(self, *, cursor: dict[bytes, int] | None = None) -> ComputeFeed:
        """The provider-scoped subscription (live): requests this node's live ad satisfies,
        assignments to this node (a reassignment after another provider lapsed too) and
        requests that reopened, as :class:`ComputeEvent` s. Resume from a stored
        ``feed.cursor``.

        Example (a provider's loop)::

            async for ev in node.compute_feed():
                if ev.kind in ("request", "reopened"):
                    await node.offer_compute(ev.channel, ev.request.rid)
                elif ev.kind == "assigned":
                    await node.accept_compute(ev.channel, ev.request.rid)
                    await node.complete_compute(ev.channel, ev.request.rid, run(ev.request))
        """
        if cursor is not None and not (isinstance(cursor, dict) and all(
                isinstance(k, bytes) and isinstance(v, int) for k, v in cursor.items())):
            raise InvalidArgument("cursor is a dict of channel id -> seq", arg="cursor")
        return ComputeFeed(self, cursor or {})

    async def wait_compute(self, channel: bytes, rid: str,
                           until: Any = lambda r: r.terminal, *,
                           timeout: float | None = None) -> ComputeRequest:
        """Wait until the request satisfies ``until`` (default: a terminal phase). Typed
        timeout as :meth:`wait_channel`."""
        _need(channel, bytes, "channel")

        def ready() -> ComputeRequest | None:
            r = self.compute_request(channel, rid)
            return r if r is not None and until(r) else None

        return await self._until(ready, lambda: self._changed_event(channel), timeout,
                                 f"compute request {rid}")

    # --- the Nostr bridge ----------------------------------------------------------------

    async def enqueue_bridge_event(self, ev: NostrEvent, *, source: str,
                                   entry_hash: bytes) -> bool:
        """``enqueue_nostr_bridge_event``: store a signed Nostr event in the durable bridge
        outbox, once per event id, to be published on every configured relay. ``source`` is
        the p2pworld id it mirrors and ``entry_hash`` the log entry / record hash (the
        mapping is kept both ways). Needs ``bridge:publish``; False if already held.

        Raises:
            LocalProtocolError: no relays configured. Unauthorized / ScopeDenied: no scope.
        """
        if self.nostr is None:
            raise LocalProtocolError("no Nostr relays configured (NodeConfig.relays)")
        if self.cores.auth is not None:
            self.cores.auth.check(self.identity.public_key, REDUCER_SCOPES[
                "enqueue_nostr_bridge_event"], now=time.time())
        return await self.nostr.enqueue(ev, source=source, entry_hash=entry_hash)

    def bridge_feed(self) -> BridgeFeed:
        """The bridge-adapter subscription: every outbox change (``due``, ``published``,
        ``retry``) from now on, per event and relay."""
        if self.nostr is None:
            raise LocalProtocolError("no Nostr relays configured (NodeConfig.relays)")
        return self.nostr.feed()

    def bridge_source(self, event_id: str) -> str | None:
        """The p2pworld id a bridged Nostr event mirrors (None: not one of ours)."""
        return self.nostr.outbox.source_of(event_id) if self.nostr else None

    def bridge_events(self, source: str) -> list[str]:
        """The Nostr event ids mirroring a p2pworld id (oldest first)."""
        return self.nostr.outbox.events_for(source) if self.nostr else []

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
            raise self.closed or NodeClosed("the node has stopped") from None

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
        st = self.scope_stats[f.scope]
        st["failures"] += 1
        st["last_error"], st["last_subject"] = f.error.code, f.key
        self._notice(Notice(b"", f.error, scope=f.scope, subject=f.key))
        if f.task == f"{__name__}:Node._rendezvous":  # the core says when to connect again
            self._input(RendezvousEnded(url=f.key, error=None))
        for x in f.args:
            # What the failed task held closes with it (a session, a relayed or Nostr pipe);
            # once: a closer that fails again is not retried for ever.
            if not isinstance(x, (Session, RelayPipe, NostrPipe)) or x in self._closing:
                continue
            self._closing.add(x)
            if isinstance(x, Session):
                if x.close_reason is None:
                    x.close_reason = f.error
                self.sup.spawn(self._close_session, x, f.error, key=f.key)
            elif isinstance(x, (RelayPipe, NostrPipe)):
                self.sup.spawn(self._close_pipe, x, key=f.key)
        if f.scope == "peer" and f.key:
            try:
                p = self.peers.get(bytes.fromhex(f.key))
            except ValueError:
                p = None
            if p is not None:
                p.last_error, p.failures = f.error.code, p.failures + 1

    async def _settle(self) -> None:
        """Wait until the effect runner has carried out everything queued so far."""
        while not self.core.idle or self._running or self._storing:
            self._check_open()
            await self._idle.wait()
        self._check_open()

    def head(self, channel: bytes) -> tuple[int, bytes]:
        return self.hub.head(channel)

    def state_hash(self, channel: bytes) -> bytes:
        """The hash of the channel's folded state at this node's head: equal on two nodes
        at one head (``node.state_hash(ch) == other.state_hash(ch)``), and what ``p2pworld
        log verify`` prints from the store. Raises ``UnknownChannel``."""
        self._check_open()
        return self.hub.log(channel).state.state_hash()

    async def wait_peers(self, count: int, *, timeout: float | None = None) -> None:
        """Wait until at least ``count`` peers have authenticated sessions. Typed timeout
        as :meth:`wait_channel`."""
        await self._until(lambda: True if len(self.sessions) >= count else None,
                          lambda: self._peers_changed, timeout, f"{count} peers")

    def health(self) -> dict[str, Any]:
        """Per peer and per channel: session state, lane, lag, last error (JSON-ready): the
        plain view of :meth:`statistics`."""
        return self.statistics().as_dict()

    def statistics(self) -> NodeStatistics:
        """What this node can say about itself, typed (:mod:`p2pworld.runtime.statistics`)."""
        return node_statistics(self, now_ms=_now_ms())

    # --- effects ----------------------------------------------------------------------------

    def _submit(self, fx: Sequence[NodeEffect]) -> None:
        """An API call's (or a task's) effects go to the node core; the effect runner
        flushes them."""
        self._input(Called(effects=tuple(fx)))

    def _input(self, inp: Input) -> None:
        self.core.handle(inp, now_ms=_now_ms())
        self._wake.set()

    def _changed_event(self, channel: bytes) -> trio.Event:
        self.hub.record(channel)  # raises UnknownChannel
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
                with trio.move_on_after(max(0, wake - _now_ms()) / 1000):
                    await self._wake.wait()
            self._wake = trio.Event()
            self._running = True
            # Let tasks that are already runnable (publishers woken by the last acks, a
            # session reader with a frame in hand) queue their work first, and keep yielding
            # while more keeps arriving (at most LINGER_PASSES scheduler passes): one flush
            # then signs, writes and sends it all as one batch. When nothing else is
            # runnable this costs one pass.
            queued = self.core.queued
            for _ in range(LINGER_PASSES):
                await trio.lowlevel.checkpoint()
                now_queued = self.core.queued
                if now_queued == queued:
                    break
                queued = now_queued
            now = _now_ms()
            due = self._wake_at is not None and now >= self._wake_at
            plan = self.core.handle(TimerFired() if due else Flush(), now_ms=now)
            while True:
                await self._carry_plan(plan)
                if plan.empty:
                    break
                plan = self.core.handle(Flush(), now_ms=_now_ms())
            self._wake_at = plan.wake_at_ms
            self._running = False
            self._maybe_idle()

    async def _carry_plan(self, plan: Plan) -> None:
        for e in plan.leave:
            self._send_effect(e)
        if plan.steps:
            self._storing += 1
            await self._jobs_send.send(plan.steps)

    def _send_effect(self, e: NodeEffect) -> None:
        if isinstance(e, SendAll):
            for m in e.messages:
                self._send(e.peer, m)
        elif isinstance(e, Send):
            self._send(e.peer, e.message)

    @task("node", restart=True)
    async def _timeouts(self) -> None:
        """Wake publishers whose timeout passed (their outcome stays unknown: PublishTimeout).
        A heap of deadlines and one sleeping task cost less than a cancel scope per publish."""
        while True:
            with trio.CancelScope() as self._timer_scope:
                if self._deadlines:
                    await trio.sleep_until(self._deadlines[0][0])
                else:
                    await trio.sleep_forever()
            now = trio.current_time()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, req = heapq.heappop(self._deadlines)
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
        err = self.core.persist.voided(commit)
        try:
            if err is None:
                await trio.to_thread.run_sync(self.store.apply, commit.ops)
                return True
        except StoreFull as e:
            err = e
        # (What this node delivered is durable, so the put-back leaves ``_durable`` true.)
        on_disk = await trio.to_thread.run_sync(stored_or_damaged, self.store,
                                                persisted_channels(commit))
        self._input(CommitFailed(commit=commit, error=err, on_disk=on_disk, tail=tail))
        return False

    def _maybe_idle(self) -> None:
        if not self._running and not self._storing and not self.core.persist.lazy:
            self._idle.set()
            self._idle = trio.Event()

    async def _carry_out(self, steps: tuple[Step, ...]) -> None:
        # The order is the node core's (p2pworld.core.persist): this only carries it out.
        for i, step in enumerate(steps):
            if isinstance(step, Carry):
                await self._effects_after_persist(list(self.core.persist.carried(step)))
                continue
            if not await self._commit(step, gated_tail(steps, i)) and step.gates:
                return
            self.trace("persist", [(x.channel, x.seq) for op in step.ops
                                   if isinstance(op, Persist) for x in op.entries])
        if self._world_saves and self.world_store is not None:
            rows, self._world_saves = sorted(self._world_saves.items()), {}
            try:
                await trio.to_thread.run_sync(self.world_store.save_many, rows)
            except StoreFull:
                # World documents are soft state (peers send them again): counted only.
                self._count(StoreFull.code)

    async def _effects_after_persist(self, fx: list[NodeEffect]) -> None:
        for e in fx:
            if isinstance(e, (Send, SendAll)):
                self._send_effect(e)
            elif isinstance(e, Outcomes):
                for r in e.items:
                    self._resolved(r)
            elif isinstance(e, Delivered):
                if e.entries:
                    self._durable[e.channel] = max(self._durable.get(e.channel, 0),
                                                   e.entries[-1].seq)
                self._on_delivered(e)
                self._mirror_compute(e)
                self._any_delivered.set()
                self._any_delivered = trio.Event()
                ev = self._changed.pop(e.channel, None)
                if ev is not None:
                    ev.set()
            elif isinstance(e, Resolved):
                self._resolved(e)
            elif isinstance(e, ChannelKnown):
                self._channels_changed.set()
                self._channels_changed = trio.Event()
            elif isinstance(e, WorldChanged):
                self._world_changed.set()
                self._world_changed = trio.Event()
            elif isinstance(e, WorldSave):
                self._world_saves[e.author] = e.records
            elif isinstance(e, PeerMisbehaved):
                self._count(e.error.code)
                p = self.peers.get(e.peer)
                if p is not None:
                    p.last_error = e.error.code
            elif isinstance(e, Notice):
                self._notice(e)
            elif isinstance(e, RefreshToken):
                self.sup.spawn(self._fetch_token, key="token")
            elif isinstance(e, ConnectRendezvous):
                self.sup.spawn(self._rendezvous, e.url, key=e.url)
            elif isinstance(e, ProbeStore):
                self._input(StoreProbed(ok=await trio.to_thread.run_sync(self._probe)))
            elif isinstance(e, Dial):
                self.sup.spawn(self._dial_task, e, key=e.peer.hex())
            elif isinstance(e, CloseSession):
                s = self.sessions.get(e.peer)
                if s is not None:
                    self._count(e.reason)
                    self.sup.spawn(self._close_session, s, SessionClosed(
                        f"session closed: {e.reason}"), key=e.peer.hex())

    def _probe(self) -> bool:
        try:
            self.store.probe()
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
        if self.tracer is not None:
            self.tracer(what, arg)

    def _send(self, peer: bytes, msg: Message) -> None:
        s = self.sessions.get(peer)
        if s is None:
            return
        if s.address.startswith("nostr:") and not nostr_may_carry(self.hub, msg):
            # Per-channel policy: this channel's traffic never goes through relays. The peer
            # resumes from its checkpoint when a direct lane returns.
            self._count("LANE_FORBIDDEN_BY_CHANNEL_POLICY")
            return
        self.trace("send", msg)
        try:
            s.send_nowait(msg)
        except Backpressure as e:
            # A peer that cannot keep up is dropped; it resumes from its cursor on reconnect.
            self._count(e.code)
            self.sup.spawn(self._close_session, s, e, key=peer.hex())
        except SessionClosed:
            pass

    def _count(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def _on_delivered(self, e: Delivered) -> None:
        if e.channel in self.hub.own:
            lane = "local"
        else:
            s = self.sessions.get(self.hub.sequencer_of(e.channel))
            lane = lane_of_address(s.address) if s else "direct"
            self.lanes.count(lane, len(e.entries))
        seen = self._lanes_seen.setdefault(e.channel, {})
        for x in e.entries:
            seen[x.seq] = lane
        if e.entries:
            top = self._lanes_top.get(e.channel, 0)
            self._lanes_top[e.channel] = max(top, max(x.seq for x in e.entries))
        while len(seen) > LANE_MEMORY:
            del seen[next(iter(seen))]

    def _readable_seq(self, channel: bytes) -> int:
        """Readers see entries up to here: on disk, and still in the log."""
        return min(self.hub.log(channel).seq, self._durable.get(channel, 0))

    def lane_of(self, channel: bytes, seq: int) -> str | None:
        """The lane this node received entry ``seq`` of ``channel`` by (see
        :attr:`ChannelMessage.lane`)."""
        seen = self._lanes_seen.get(channel, {})
        lane = seen.get(seq)
        if lane is None and seq > self._lane_floor(channel, seen):
            # Read from the log before its Delivered effect was carried out: it came by the
            # lane the channel uses now.
            if channel in self.hub.own:
                return "local"
            s = self.sessions.get(self.hub.sequencer_of(channel))
            return lane_of_address(s.address) if s else None
        return lane

    def _lane_floor(self, channel: bytes, seen: dict[int, str]) -> int:
        if seen:
            return self._lanes_top.get(channel, 0)
        return self._loaded_heads.get(channel, 0)

    def _mirror_compute(self, e: Delivered) -> None:
        """Mirror this node's own compute channel as NIP-90 events (policy-gated)."""
        svc = self.nostr
        if svc is None or "compute" not in self.config.mirror:
            return
        rows = compute_mirror_rows(self.cores, svc.key, e.channel, e.entries,
                                   now_ms=_now_ms(), aux=svc.aux, requests=self._mirror_req)
        if rows:
            self.sup.spawn(self._enqueue_rows, rows, key="mirror")

    @task("request")
    async def _enqueue_rows(self, rows: list[tuple[NostrEvent, str, bytes]]) -> None:
        for ev, source, h in rows:
            try:
                await self.enqueue_bridge_event(ev, source=source, entry_hash=h)
            except P2PWorldError as err:
                self._count(err.code)

    async def _mirror_ad(self, ad: CapabilityAd) -> None:
        svc = self.nostr
        if svc is None or "capabilities" not in self.config.mirror:
            return
        h = blake2b256(codec.encode(ad.to_value()))
        ev = handler_event(svc.key, node=self.node_id, ad=ad, record_hash=h,
                           created_at=int(time.time()), aux=svc.aux(),
                           name=self.config.device)
        try:
            await self.enqueue_bridge_event(ev, source=f"ad:{self.node_id.hex()}", entry_hash=h)
        except P2PWorldError as err:
            self._count(err.code)

    # --- sessions ---------------------------------------------------------------------------

    def _hs_config(self, expected: bytes | None = None) -> HandshakeConfig:
        return HandshakeConfig(identity=self.identity, workspace=self.config.workspace,
                               token=self.token, versions=PROTOCOL_VERSIONS,
                               expected_peer=expected)

    def _peer(self, pid: bytes) -> PeerInfo:
        p = self.peers.get(pid)
        if p is None:
            p = self.peers[pid] = PeerInfo(pid)
        return p

    def _adopt(self, s: Session) -> bool:
        """Keep one session per peer: the one dialled by the node with the lower id."""
        pid = s.peer_id
        old = self.sessions.get(pid)
        lane = _lane(s.address)
        if old is not None:
            # The node core says which survives (p2pworld.core.peers).
            if not self._peering.admit(pid, lane, initiator=s.initiator):
                return False
            self.sup.spawn(self._close_session, old,
                           SessionClosed("replaced by a preferred session"), key=pid.hex())
            self._forget(pid, old)
        self.sessions[pid] = s
        p = self._peer(pid)
        p.state, p.address, p.since, p.last_error = "connected", s.address, time.monotonic(), ""
        p.handshakes += 1
        self._peers_changed.set()
        self._peers_changed = trio.Event()
        self._input(PeerUp(peer=pid, key=s.result.peer_key, lane=lane, initiator=s.initiator,
                           nostr=s.result.peer_attestation.nostr_pubkey))
        return True

    def _forget(self, pid: bytes, s: Session) -> None:
        if self.sessions.get(pid) is s:
            del self.sessions[pid]
            self._input(PeerDown(peer=pid))
            p = self._peer(pid)
            p.state = "backoff"
            if s.close_reason is not None and s.close_reason.code != SessionClosed.code:
                p.last_error = s.close_reason.code
                self._count(s.close_reason.code)
            self._peers_changed.set()
            self._peers_changed = trio.Event()

    def _check_peer_token(self, s: Session) -> P2PWorldError | None:
        """Direct calls are checked in the session handshake (``TokenBook.admit``)."""
        book, r = self.cores.auth, s.result
        return None if book is None else book.admit(
            r.peer_token or b"", now=time.time(), node_key=r.peer_key,
            nostr_pubkey=r.peer_attestation.nostr_pubkey)

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
        refused = self._check_peer_token(s)
        if refused is None and s.address.startswith("nostr:") and (
                s.address != f"nostr:{s.result.peer_attestation.nostr_pubkey.hex()}"):
            # The pipe's Nostr key must be the one the peer's node key attests.
            refused = Unauthorized("Nostr lane key is not the one the peer attests")
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
        self._pre_handshake[scope] = None
        if len(self._pre_handshake) > MAX_PRE_HANDSHAKE:
            oldest = next(iter(self._pre_handshake))
            del self._pre_handshake[oldest]
            oldest.cancel()
            self._count("PRE_HANDSHAKE_EVICTED")
        try:
            with scope:
                async with trio.open_nursery() as conn:
                    await self._incoming_session(stream, conn, scope)
                    conn.cancel_scope.cancel()
            if scope.cancelled_caught and scope not in self._pre_handshake:
                return  # evicted (counted above)
        finally:
            self._pre_handshake.pop(scope, None)
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
                                     timeout=self.config.handshake_timeout)
        except P2PWorldError as e:
            self._count(e.code)
            return
        except trio_websocket.ConnectionClosed:
            return
        self._pre_handshake.pop(scope, None)  # authenticated: no longer evictable
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
                                   timeout=self.config.handshake_timeout)
        except P2PWorldError as e:
            self._count(e.code)
            return False, e.code, b""
        self._peer(s.peer_id).via.add("static")
        return await self._start_session(s.peer_id, s), "", s.peer_id

    async def _dial_nostr(self, d: Dial) -> tuple[bool, str]:
        lane = self.nostr.lane if self.nostr is not None else None
        if lane is None:
            return False, "NOSTR_LANE_FAILED"
        p = self._peer(d.peer)
        p.state = "connecting"
        try:
            pipe = await lane.open_pipe(d.nostr)
            s = await relayed_session(pipe, self._hs_config(expected=d.peer), initiator=True,
                                      address=pipe.address,
                                      timeout=self.config.handshake_timeout)
        except (P2PWorldError, trio_websocket.ConnectionClosed) as e:
            code = getattr(e, "code", "NOSTR_LANE_FAILED")
            p.last_error, p.failures = code, p.failures + 1
            self._count(code)
            return False, code
        p.via.add("nostr")
        return await self._start_session(d.peer, s), ""

    def _nostr_pipe_opened(self, pipe: NostrPipe) -> None:
        self.sup.spawn(self._on_nostr_pipe, pipe, key=pipe.peer.hex())

    @task("peer")
    async def _on_nostr_pipe(self, pipe: NostrPipe) -> None:
        """A peer opened a Nostr-lane pipe to us: the same handshake as any session."""
        if not self._peering.accepts("nostr"):
            await pipe.aclose()
            return
        try:
            s = await relayed_session(pipe, self._hs_config(), initiator=False,
                                      address=pipe.address,
                                      timeout=self.config.handshake_timeout)
        except (P2PWorldError, trio_websocket.ConnectionClosed) as e:
            self._count(getattr(e, "code", "NOSTR_LANE_FAILED"))
            return
        self._peer(s.peer_id).via.add("nostr")
        await self._run_owned(s)

    def _on_nostr_candidate(self, key: str, nid: bytes, nostr: bytes) -> None:
        self._on_candidate(key, Candidate(node_id=nid, workspace=self.config.workspace,
                                          versions=PROTOCOL_VERSIONS, addresses=(), port=0,
                                          source="nostr", nostr=nostr))

    async def _dial_primary(self, d: Dial) -> tuple[bool, str]:
        """Each URL in the order given, then a relayed session through each rendezvous."""
        p, pid, code = self._peer(d.peer), d.peer, "NO_ROUTE"
        for url in d.urls:
            p.state = "connecting"
            try:
                s = await open_session(self._nursery, url, self._hs_config(expected=pid),
                                       timeout=self.config.handshake_timeout)
            except P2PWorldError as e:
                code, p.last_error, p.failures = e.code, e.code, p.failures + 1
                self._count(e.code)
                continue
            return await self._start_session(pid, s), ""
        for relay in d.relays:
            client = self.rendezvous.get(relay)
            if client is None or not client.connected.is_set():
                continue
            p.state = "connecting"
            try:
                pipe = await client.open_pipe(pid)
                s = await relayed_session(pipe, self._hs_config(expected=pid), initiator=True,
                                          address=f"relay:{relay}",
                                          timeout=self.config.handshake_timeout)
            except (P2PWorldError, trio_websocket.ConnectionClosed) as e:
                code = getattr(e, "code", "RELAY_FAILED")
                p.last_error, p.failures = code, p.failures + 1
                self._count(code)
                continue
            return await self._start_session(pid, s), ""
        return False, code

    async def _start_session(self, pid: bytes, s: Session) -> bool:  # adopted (or another up)
        self.sup.spawn(self._run_session, s, key=pid.hex())
        with trio.move_on_after(self.config.handshake_timeout):
            while pid not in self.sessions and not s.closed.is_set():
                await self._peers_changed.wait()
            return pid in self.sessions
        await s.aclose(SessionClosed("its session task never ran"))  # after a handshake time
        return False

    # --- rendezvous -------------------------------------------------------------------------

    def _direct_urls(self, relay: str) -> list[str]:
        """Where peers may reach us directly: our listen URL, unless it is loopback and the
        rendezvous is not (a remote peer would dial its own loopback)."""
        if self.config.public_urls is not None:
            return list(self.config.public_urls)
        loop = self.listen_host.startswith("127.") or self.listen_host == "::1"
        relay_loop = "//127." in relay or "//localhost" in relay or "//[::1]" in relay
        return [self.url] if not loop or relay_loop else []

    def _on_rendezvous_peers(self, relay: str, regs: list[Registration]) -> None:
        key = f"rv:{relay}"
        listed = set()
        for r in regs:
            if r.node == self.node_id:
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
                                      timeout=self.config.handshake_timeout)
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
            url=url, signer=self.identity.signer, workspace=self.config.workspace,
            direct_urls=lambda: self._direct_urls(url),
            on_peers=self._on_rendezvous_peers,
            on_incoming=lambda pipe: self.sup.spawn(self._on_relayed, url, pipe,
                                                    key=pipe.peer.hex()))
        self.rendezvous[url] = client
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
    async def _discovery(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        mdns = MdnsDiscovery(interfaces=self.config.interfaces, node_id=self.node_id,
                             workspace=self.config.workspace, port=self.listen_port,
                             versions=PROTOCOL_VERSIONS)
        self.mdns = mdns
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
        self.core.token = TokenSchedule(self._rng)
        self.core.token.start(expires_at=self.token_expires or 0, now_ms=_now_ms())
        self._wake.set()

    @task("request")
    async def _fetch_token(self) -> None:
        """One :class:`RefreshToken`: the control service's keys, then a fresh token; the
        answer goes to the node core (``TokenMinted`` or ``TokenRefused``), which schedules
        the next ask."""
        result: TokenMinted | TokenRefused = TokenRefused(code="CONTROL_UNREACHABLE")
        try:
            with trio.move_on_after(2 * self.config.handshake_timeout):
                result = await self._ask_token()
        except P2PWorldError as e:
            result = TokenRefused(code=e.code)
        finally:
            self._input(result)
        if isinstance(result, TokenRefused):
            self.auth_stats["refresh_failures"] += 1
            self._count(result.code)

    async def _ask_token(self) -> TokenMinted:
        assert self.config.control is not None
        keys: dict[str, bytes] | None = None
        status, doc = await http_json(self.config.control, "GET", "/v1/keys")
        if status == 200:
            try:
                keys = {k["kid"]: bytes.fromhex(k["public_key"]) for k in doc["keys"]}
            except (KeyError, TypeError, ValueError):
                raise Unauthorized("control service published malformed keys") from None
        status, out = await http_json(self.config.control, "POST", "/v1/token",
                                      token_request(self.identity.signer, at=int(time.time()),
                                                    nostr=self.identity.nostr.public))
        if status != 200 or not isinstance(out, dict) or "token" not in out:
            err = out.get("error", "UNAUTHORIZED") if isinstance(out, dict) else "UNAUTHORIZED"
            raise error_from_code(str(err), f"control service refused a token ({status})")
        try:
            raw, exp = bytes.fromhex(out["token"]), float(out.get("expires_at", 0))
        except (TypeError, ValueError):
            raise Unauthorized("control service answered a malformed token") from None
        return TokenMinted(token=raw, expires_at=exp, keys=keys)

    @task("request", restart=True)
    async def _revocation_loop(self) -> None:
        """Poll the control service's signed revocation list every 30 s."""
        while True:
            await trio.sleep(30)
            with trio.move_on_after(10):
                try:
                    status, doc = await http_json(self.config.control or "", "GET",
                                                  "/v1/revocations")
                    book = self.cores.auth
                    if status == 200 and book is not None:
                        toks, nodes = verify_revocations(doc, book.config.keys)
                        book.revoke(tokens=toks, nodes=nodes)
                        self.auth_stats["revocation_polls"] += 1
                except (P2PWorldError, KeyError, TypeError, ValueError):
                    self.auth_stats["refresh_failures"] += 1

    async def _join(self) -> None:
        cfg = self.config
        from p2pworld import __version__
        now = _now_ms()
        info = NodeInfo(nostr_pubkey=self.identity.nostr.public.hex(), device=cfg.device,
                        version=__version__, region=cfg.region)
        self.session_id = secrets.token_hex(8)
        self._session_start = now
        self._submit(self.world.join(info, now_ms=now, session=SessionInfo(
            session_id=self.session_id, workspace=cfg.workspace, started_ms=now)))
        if cfg.capabilities is not None:
            self._submit(self.world.advertise(cfg.capabilities, now_ms=now))
        await self._settle()

    async def _start_nostr(self) -> None:
        """Start the relay pool, the bridge and, if the (resolved) mode allows it, the Nostr
        lane."""
        svc = NostrService(
            relays=self.config.relays, key=self.identity.nostr, node_id=self.node_id,
            workspace=self.config.workspace, home=self.config.home,
            lane=self.transport_mode != "primary-only",
            presence="presence" in self.config.mirror or self.transport_mode == "forced-nostr",
            on_candidate=self._on_nostr_candidate, on_pipe=self._nostr_pipe_opened,
            status=lambda: "online", on_failure=self._on_scope_failure)
        self.nostr = svc
        self._mirror_req.update(svc.outbox.first_events("compute:"))
        await self.sup.start(svc.run, key="nostr")
        if self.config.capabilities is not None:
            await self._mirror_ad(self.config.capabilities)

    async def _leave(self) -> None:
        """Say goodbye: end the session and beat ``offline`` so peers see ``left`` at once."""
        if self.nostr is not None:
            await self.nostr.goodbye()
        with trio.move_on_after(1.0):
            now = _now_ms()
            self._submit(self.cores.own_world(self.world.set_session(SessionInfo(
                session_id=self.session_id, workspace=self.config.workspace,
                started_ms=self._session_start, ended_ms=now), now_ms=now)))
            try:
                self._submit(self.world.leave(now_ms=now))
            except P2PWorldError as e:
                # No goodbye without a valid token (expired, revoked): peers see this node
                # go stale instead. Leaving still succeeds.
                self._count(e.code)
            await self._settle()
            for s in list(self.sessions.values()):
                await s.flush()

    async def _open_listeners(self) -> list[trio.SocketListener]:
        """One listener per configured interface (names resolve as for mDNS), all on one
        port: the first one's. A failure is one typed error naming the address."""
        try:
            hosts = resolve_interfaces(self.config.interfaces or ["127.0.0.1"])
        except DiscoveryError as e:
            raise AddressUnavailable(e.message, address=",".join(self.config.interfaces)) \
                from None
        self.listen_host = hosts[0]
        out: list[trio.SocketListener] = []
        port = self.config.port
        try:
            for host in dict.fromkeys(hosts):
                try:
                    got = await trio.open_tcp_listeners(port, host=host)
                except OSError as e:
                    raise AddressUnavailable(f"cannot listen on {host}:{port}: {e}",
                                             address=f"{host}:{port}") from None
                out += got
                port = got[0].socket.getsockname()[1]
        except BaseException:
            for lst in out:
                await trio.aclose_forcefully(lst)
            raise
        return out

    async def _serve(self) -> None:
        self.listen_port = await self.sup.start(self._listen, key="listener")

    @task("node")
    async def _listen(self, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                      ) -> None:
        listeners = await self._open_listeners()
        try:
            task_status.started(listeners[0].socket.getsockname()[1])
            # Each connection is a peer scope of its own, contained where the listener
            # starts it: nothing of ours runs outside the boundary.
            await trio.serve_listeners(
                functools.partial(self.sup.contain, self._handle_incoming, key="incoming"),
                listeners, handler_nursery=self._nursery)
        finally:
            for lst in listeners:
                await trio.aclose_forcefully(lst)


async def _transport_policy(config: NodeConfig, auth: AuthConfig | None
                            ) -> tuple[dict[str, Any] | None, str]:
    """The control service's signed policy (when there is one) and the effective transport
    mode: local config narrowed by the policy, never widened (raises ``PolicyDenied``)."""
    if not config.relays:
        return None, "primary-only"
    policy = None
    if config.control is not None and auth is not None:
        with trio.move_on_after(config.handshake_timeout):
            status, doc = await http_json(config.control, "GET", "/v1/policy")
            if status == 200:
                policy = verify_policy(doc, auth.keys)
    return policy, resolve_mode(config.transport, policy)


async def _bootstrap_auth(config: NodeConfig, ident: NodeIdentity, auth: AuthConfig | None
                          ) -> tuple[AuthConfig, bytes]:
    """Fetch the control service's keys (unless given) and a first token, retrying for up to
    ``handshake_timeout`` seconds. Raises ``Unauthorized`` (or ``SessionClosed``) if none."""
    assert config.control is not None
    deadline = time.monotonic() + config.handshake_timeout
    while True:
        try:
            if auth is None:
                status, out = await http_json(config.control, "GET", "/v1/keys")
                if status != 200:
                    raise Unauthorized(f"control service keys: HTTP {status}")
                auth = AuthConfig(keys={k["kid"]: bytes.fromhex(k["public_key"])
                                        for k in out["keys"]})
            status, out = await http_json(config.control, "POST", "/v1/token",
                                          token_request(ident.signer, at=int(time.time()),
                                                        nostr=ident.nostr.public))
            if status != 200:
                err = out.get("error", "UNAUTHORIZED") if isinstance(out, dict) else ""
                raise error_from_code(str(err) or "UNAUTHORIZED",
                                      f"control service refused a token (HTTP {status})")
            return auth, bytes.fromhex(out["token"])
        except (SessionClosed, KeyError, TypeError, ValueError):
            if time.monotonic() > deadline:
                raise Unauthorized("no token: the control service is unreachable") from None
            await trio.sleep(0.5)


@asynccontextmanager
async def open_node(config: NodeConfig, *, identity: NodeIdentity | None = None
                    ) -> AsyncIterator[Node]:
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
    _need(config.home, (str, Path), "NodeConfig.home")
    _need(config.workspace, str, "NodeConfig.workspace")
    _need(config.port, int, "NodeConfig.port")
    for name in ("interfaces", "peers", "rendezvous", "relays"):
        v = getattr(config, name)
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise InvalidArgument(f"NodeConfig.{name} must be a list of strings", arg=name)
    if not config.workspace or len(config.workspace.encode()) > 128:
        raise InvalidArgument("NodeConfig.workspace must be 1..128 bytes of UTF-8",
                              arg="workspace")
    if not isinstance(config.startup_check_s, (int, float)) or not \
            0 <= config.startup_check_s <= 600:
        raise InvalidArgument("NodeConfig.startup_check_s must be 0..600 seconds",
                              arg="startup_check_s")
    return dataclasses.replace(config, home=Path(config.home).expanduser())


def _log_store(home: NodeHome) -> LogStore:
    """The home's channel log. A home that has run before (its world store exists: it is
    created after the log, on the first start) whose log is missing or empty lost every
    acknowledged entry: refused, typed, instead of starting over with an empty log."""
    path = home.path / "log.db"
    world = home.path / "world.db"
    empty = not path.exists() or path.stat().st_size == 0
    if empty and world.exists() and world.stat().st_size > 0:
        raise StoreCorrupt(f"{path} is missing or empty, but this home has run before "
                           f"({world} exists): restore the log, or start a fresh home",
                           path=str(path))
    return LogStore(path)


@asynccontextmanager
async def _open_node(config: NodeConfig, identity: NodeIdentity | None, home: NodeHome
                     ) -> AsyncIterator[Node]:
    ident = identity or home.load_or_create()
    auth, token = config.auth, config.token
    if config.control is not None:
        auth, token = await _bootstrap_auth(config, ident, auth)
    policy, mode = await _transport_policy(config, auth)
    if auth is not None:
        # Fail here, typed, rather than from inside the node's nursery: a node with auth on
        # needs a valid token of its own to join its world.
        if not token:
            raise Unauthorized("auth is on but this node has no token (set control or token)")
        TokenBook(auth).learn(token, now=time.time(), node_key=ident.public_key,
                              nostr_pubkey=ident.nostr.public)
    store = _log_store(home)
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
            node.policy, node.transport_mode = policy, mode
            node.hub.startup_check_ms = int(config.startup_check_s * 1000)
            for n in load_into(node.hub, store, loaded):
                node._notice(n)
            for c in loaded:
                node._loaded_heads[c.record.channel] = node.hub.log(c.record.channel).seq
                node._durable[c.record.channel] = node._loaded_heads[c.record.channel]
            await node._serve()
            sup = node.sup
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
            node.core.rendezvous = RendezvousSchedule.of(config.rendezvous, node._rng, _now_ms())
            node._wake.set()
            try:
                try:
                    yield node
                except BaseException as e:
                    caller.append(e)  # the application's own: it leaves unchanged
                    raise
                await node._leave()
            finally:
                node.sup.closed = True
                node._close()
                nursery.cancel_scope.cancel()
    finally:
        if node_ref and node_ref[0].nostr is not None:
            node_ref[0].nostr.close()
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
        leaves = _leaves(g)
        if caller and any(x is caller[0] for x in leaves):
            raise caller[0] from None
        typed = [x for x in leaves if isinstance(x, P2PWorldError)]
        if typed and all(isinstance(x, (P2PWorldError, trio.Cancelled)) for x in leaves):
            raise typed[0] from g
        raise


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [x for sub in e.exceptions for x in _leaves(sub)]
    return [e]


__all__ = ["Node", "NodeConfig", "ChannelMessage", "PeerInfo", "open_node", "short_id",
           "WorldSubscription", "CapabilityAd", "Member", "WorldEvent"]
