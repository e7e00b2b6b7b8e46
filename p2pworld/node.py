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

import itertools
import random
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from discovery.candidate import Candidate
from discovery.mdns import Found, Lost, MdnsDiscovery
from p2pworld.errors import (
    Backpressure,
    P2PWorldError,
    PublishTimeout,
    SessionClosed,
)
from p2pworld.home import NodeHome
from p2pworld.identity import NodeIdentity, short_id
from p2pworld.log.entry import ChannelRecord, Entry
from p2pworld.log.hub import (
    ChannelHub,
    ChannelKnown,
    Delivered,
    Effect,
    PeerMisbehaved,
    Persist,
    PublishResult,
    Resolved,
    Send,
)
from p2pworld.log.store import LogStore
from p2pworld.transport.backoff import Backoff
from p2pworld.transport.handshake import PROTOCOL_VERSIONS, HandshakeConfig
from p2pworld.transport.session import Session, accept_session, open_session
from p2pworld.wire import Message, Ping, Pong


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


@dataclass(frozen=True, kw_only=True)
class ChannelMessage:
    """One delivered message, verified (writer signature, hash chain, sequencer head)."""

    channel: bytes
    seq: int
    sender: bytes
    payload: bytes
    entry_hash: bytes
    sequencer_time_ms: int

    @classmethod
    def from_entry(cls, e: Entry) -> ChannelMessage:
        return cls(channel=e.channel, seq=e.seq, sender=e.sender, payload=e.payload,
                   entry_hash=e.hash, sequencer_time_ms=e.sequencer_time)


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
            ents = self._node.hub.entries(self.channel)
            if self.position < len(ents):
                e = ents[self.position]
                self.position += 1
                return ChannelMessage.from_entry(e)
            await self._node._changed_event(self.channel).wait()


@dataclass
class PeerInfo:
    node_id: bytes
    state: str = "discovered"  # discovered | connecting | connected | backoff
    via: set[str] = field(default_factory=set)
    address: str = ""
    candidates: dict[str, Candidate] = field(default_factory=dict)
    """Where the peer may be, by discovery record. Several records may claim one id (an
    impostor can copy a TXT record); the handshake decides which address really is it."""
    since: float = 0.0
    last_error: str = ""
    rtt_ms: float | None = None
    handshakes: int = 0
    failures: int = 0


def _now_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """A running p2pworld node. Create it with :func:`open_node`."""

    def __init__(self, config: NodeConfig, identity: NodeIdentity, store: LogStore,
                 nursery: trio.Nursery) -> None:
        self.config = config
        self.identity = identity
        self.node_id = identity.node_id
        self.store = store
        self.hub = ChannelHub(identity.signer, workspace=config.workspace)
        self._nursery = nursery
        self._rng = random.SystemRandom()
        self.sessions: dict[bytes, Session] = {}
        self.peers: dict[bytes, PeerInfo] = {}
        self._queue: list[Effect] = []
        self._wake = trio.Event()
        self._changed: dict[bytes, trio.Event] = {}
        self._outcomes: dict[int, PublishResult | P2PWorldError] = {}
        self._outcome_events: dict[int, trio.Event] = {}
        self._peers_changed = trio.Event()
        self._channels_changed = trio.Event()
        self._dialing: set[bytes] = set()
        self._last_rx: dict[bytes, float] = {}
        self._ping_sent: dict[bytes, tuple[int, float]] = {}
        self._ping_n = itertools.count(1)
        self.listen_port = 0
        self.listen_host = config.interfaces[0] if config.interfaces else "127.0.0.1"
        self.errors: dict[str, int] = {}
        self.mdns: MdnsDiscovery | None = None

    # --- public API -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://{self.listen_host}:{self.listen_port}/"

    async def open_channel(self, name: str) -> ChannelRecord:
        """Open (or reopen) a channel sequenced by this node and announce it to peers."""
        rec, fx = self.hub.open_channel(name, now_ms=_now_ms())
        self._submit(fx)
        return rec

    def channels(self) -> list[ChannelRecord]:
        return self.hub.records()

    async def wait_channel(self, name: str) -> ChannelRecord:
        """Wait until a channel called ``name`` is known (opened here or announced by a peer)."""
        while True:
            found = self.hub.find(name)
            if found:
                return found[0]
            await self._channels_changed.wait()

    async def publish(self, channel: bytes, payload: bytes, *, key: bytes | None = None,
                      timeout: float = 10.0) -> PublishResult:
        """Publish ``payload`` to ``channel``; returns once the sequencer acknowledged it.

        ``key`` is the idempotency key (random if omitted): publishing again with the same key
        and payload returns the original ``seq`` (``status="duplicate"``); with another
        payload it raises :class:`~p2pworld.errors.Conflict`.

        Raises:
            PublishTimeout: the outcome is indeterminate; resubmit with the same key.
            Conflict, NotSequencer, ChannelError: the publish was refused.
        """
        key = key or secrets.token_bytes(16)
        req, fx = self.hub.publish(channel, payload, idem_key=key, now_ms=_now_ms())
        ev = self._outcome_events[req] = trio.Event()
        self._submit(fx)
        with trio.move_on_after(timeout):
            await ev.wait()
        self._outcome_events.pop(req, None)
        out = self._outcomes.pop(req, None)
        if out is None:
            raise PublishTimeout(f"no answer within {timeout} s; resubmit with the same key",
                                 key=key.hex())
        if isinstance(out, P2PWorldError):
            raise out
        return out

    def messages(self, channel: bytes, *, after: int = 0) -> MessageCursor:
        """Every message of ``channel`` with ``seq > after``, in order, then live ones.

        Returns an async iterator (not a generator, so breaking out of ``async for`` needs no
        cleanup); ``cursor.position`` is the last ``seq`` yielded.
        """
        self.hub.record(channel)  # raises UnknownChannel now, not on first iteration
        return MessageCursor(self, channel, after)

    def head(self, channel: bytes) -> tuple[int, bytes]:
        return self.hub.head(channel)

    async def wait_peers(self, count: int) -> None:
        """Wait until at least ``count`` peers have authenticated sessions."""
        while len(self.sessions) < count:
            await self._peers_changed.wait()

    def health(self) -> dict[str, Any]:
        """Per peer and per channel: session state, lane, lag, last error (JSON-ready)."""
        now = time.monotonic()
        peers = []
        for pid, p in sorted(self.peers.items()):
            s = self.sessions.get(pid)
            peers.append({
                "node_id": pid.hex(), "state": "connected" if s else p.state,
                "lane": "direct" if s else None, "via": sorted(p.via), "address": p.address,
                "since_s": round(now - p.since, 3) if p.since else None,
                "rtt_ms": None if p.rtt_ms is None else round(p.rtt_ms, 3),
                "frames_in": s.frames_in if s else 0, "frames_out": s.frames_out if s else 0,
                "handshakes": p.handshakes, "failures": p.failures,
                "last_error": p.last_error or None,
            })
        chans = []
        for rec in self.hub.records():
            seq, h = self.hub.head(rec.channel)
            own = rec.channel in self.hub.own
            chans.append({
                "channel": rec.channel.hex(), "name": rec.name,
                "role": "sequencer" if own else "replica",
                "sequencer": rec.sequencer_id.hex(), "epoch": rec.epoch,
                "head_seq": seq, "head_hash": h.hex(),
                "lane": "local" if own else ("direct" if rec.sequencer_id in self.sessions
                                              else None),
                "lag": 0, "subscribers": len(self.hub.own[rec.channel].subscribers) if own else 0,
            })
        return {"node_id": self.node_id.hex(), "workspace": self.config.workspace,
                "listen": self.url, "peers": peers, "channels": chans,
                "errors": {**self.errors, **self.hub.errors}}

    # --- effects ----------------------------------------------------------------------------

    def _submit(self, fx: list[Effect]) -> None:
        if fx:
            self._queue.extend(fx)
        self._wake.set()

    def _changed_event(self, channel: bytes) -> trio.Event:
        self.hub.record(channel)  # raises UnknownChannel
        ev = self._changed.get(channel)
        if ev is None:
            ev = self._changed[channel] = trio.Event()
        return ev

    async def _effect_runner(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while True:
                fx, self._queue = self._queue, []
                fx += self.hub.flush(now_ms=_now_ms())
                if not fx:
                    break
                await self._carry_out(fx)

    async def _carry_out(self, fx: list[Effect]) -> None:
        i = 0
        while i < len(fx):
            e = fx[i]
            if isinstance(e, Persist):
                # Group commit: consecutive Persist effects share one transaction and fsync.
                batch = [e]
                while i + 1 < len(fx) and isinstance(fx[i + 1], Persist):
                    i += 1
                    nxt = fx[i]
                    assert isinstance(nxt, Persist)
                    batch.append(nxt)
                await trio.to_thread.run_sync(
                    self.store.persist_many, [(p.record, p.entries) for p in batch])
            elif isinstance(e, Send):
                self._send(e.peer, e.message)
            elif isinstance(e, Delivered):
                ev = self._changed.pop(e.channel, None)
                if ev is not None:
                    ev.set()
            elif isinstance(e, Resolved):
                if e.req in self._outcome_events:
                    self._outcomes[e.req] = e.outcome
                    self._outcome_events[e.req].set()
            elif isinstance(e, ChannelKnown):
                self._channels_changed.set()
                self._channels_changed = trio.Event()
            elif isinstance(e, PeerMisbehaved):
                self._count(e.error.code)
                p = self.peers.get(e.peer)
                if p is not None:
                    p.last_error = e.error.code
            i += 1

    def _send(self, peer: bytes, msg: Message) -> None:
        s = self.sessions.get(peer)
        if s is None:
            return
        try:
            s.send_nowait(msg)
        except Backpressure as e:
            # A peer that cannot keep up is dropped; it resumes from its cursor on reconnect.
            self._count(e.code)
            self._nursery.start_soon(s.aclose, e)
        except SessionClosed:
            pass

    def _count(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    # --- sessions ---------------------------------------------------------------------------

    def _hs_config(self, expected: bytes | None = None) -> HandshakeConfig:
        return HandshakeConfig(identity=self.identity, workspace=self.config.workspace,
                               token=self.config.token, versions=PROTOCOL_VERSIONS,
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
        if old is not None:
            def lower_dialled(x: Session) -> bool:
                return (self.node_id < pid) == x.initiator
            if lower_dialled(old) or not lower_dialled(s):
                return False
            self._nursery.start_soon(old.aclose, SessionClosed("replaced by a preferred session"))
            self._forget(pid, old)
        self.sessions[pid] = s
        p = self._peer(pid)
        p.state, p.address, p.since, p.last_error = "connected", s.address, time.monotonic(), ""
        p.handshakes += 1
        self._last_rx[pid] = time.monotonic()
        self._peers_changed.set()
        self._peers_changed = trio.Event()
        self._submit(self.hub.peer_up(pid))
        return True

    def _forget(self, pid: bytes, s: Session) -> None:
        if self.sessions.get(pid) is s:
            del self.sessions[pid]
            self._submit(self.hub.peer_down(pid))
            p = self._peer(pid)
            p.state = "backoff"
            if s.close_reason is not None and s.close_reason.code != SessionClosed.code:
                p.last_error = s.close_reason.code
                self._count(s.close_reason.code)
            self._peers_changed.set()
            self._peers_changed = trio.Event()

    async def _run_session(self, s: Session) -> None:
        if not self._adopt(s):
            await s.aclose(SessionClosed("duplicate session"))
            return
        pid = s.peer_id
        try:
            await s.run(lambda m: self._on_message(pid, s, m))
        finally:
            self._forget(pid, s)

    def _on_message(self, pid: bytes, s: Session, msg: Message) -> None:
        self._last_rx[pid] = time.monotonic()
        if isinstance(msg, Ping):
            try:
                s.send_nowait(Pong(msg.n))
            except (Backpressure, SessionClosed):
                pass
            return
        if isinstance(msg, Pong):
            sent = self._ping_sent.get(pid)
            if sent and sent[0] == msg.n:
                self._peer(pid).rtt_ms = (time.monotonic() - sent[1]) * 1000
            return
        self._submit(self.hub.receive(pid, msg, now_ms=_now_ms()))

    async def _handle_incoming(self, request: trio_websocket.WebSocketRequest) -> None:
        try:
            s = await accept_session(request, self._hs_config(),
                                     timeout=self.config.handshake_timeout)
        except P2PWorldError as e:
            self._count(e.code)
            return
        except trio_websocket.ConnectionClosed:
            return
        await self._run_session(s)

    def _on_candidate(self, key: str, c: Candidate) -> None:
        if c.node_id == self.node_id:
            return
        if c.workspace != self.config.workspace:
            self._count("OTHER_WORKSPACE_SEEN")
            return
        p = self._peer(c.node_id)
        p.via.add(c.source)
        p.candidates[key] = c
        if c.node_id not in self._dialing:
            self._dialing.add(c.node_id)
            self._nursery.start_soon(self._dial_loop, c.node_id)

    async def _dial_loop(self, pid: bytes) -> None:
        """Keep a session to ``pid`` while it is a candidate: dial, back off, redial."""
        backoff = Backoff(base=0.25, cap=30.0)
        try:
            while True:
                p = self.peers.get(pid)
                if p is None or not p.candidates:
                    return
                s = self.sessions.get(pid)
                if s is not None:
                    await s.closed.wait()
                    continue
                if self.node_id > pid:
                    # Give the lower id the first move; dial ourselves only if it does not.
                    with trio.move_on_after(self.config.dial_grace * (1 + self._rng.random())):
                        while pid not in self.sessions:
                            await self._peers_changed.wait()
                    if pid in self.sessions:
                        continue
                if await self._dial(pid, list(p.candidates.values())):
                    backoff.reset()
                    continue
                p.state = "backoff"
                await trio.sleep(backoff.next_delay(self._rng))
        finally:
            self._dialing.discard(pid)

    async def _dial(self, pid: bytes, cands: list[Candidate]) -> bool:
        p = self._peer(pid)
        urls = sorted({u for c in cands for u in c.urls()})
        for url in urls:
            p.state = "connecting"
            try:
                s = await open_session(self._nursery, url, self._hs_config(expected=pid),
                                       timeout=self.config.handshake_timeout)
            except P2PWorldError as e:
                p.last_error, p.failures = e.code, p.failures + 1
                self._count(e.code)
                continue
            self._nursery.start_soon(self._run_session, s)
            while pid not in self.sessions and not s.closed.is_set():
                await self._peers_changed.wait()
            return True
        return False

    async def _discovery(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                         ) -> None:
        mdns = MdnsDiscovery(interfaces=self.config.interfaces, node_id=self.node_id,
                             workspace=self.config.workspace, port=self.listen_port,
                             versions=PROTOCOL_VERSIONS)
        self.mdns = mdns
        async with mdns:
            task_status.started()
            async with trio.open_nursery() as n:
                n.start_soon(mdns.register)
                async for ev in mdns.events():
                    if isinstance(ev, Found):
                        self._on_candidate(f"mdns:{ev.service_name}", ev.candidate)
                    elif isinstance(ev, Lost):
                        for p in self.peers.values():
                            p.candidates.pop(f"mdns:{ev.service_name}", None)

    async def _keepalive(self) -> None:
        interval = self.config.keepalive
        while True:
            await trio.sleep(interval)
            now = time.monotonic()
            for pid, s in list(self.sessions.items()):
                if now - self._last_rx.get(pid, now) > 3 * interval:
                    self._count("KEEPALIVE_TIMEOUT")
                    self._nursery.start_soon(s.aclose, SessionClosed("keepalive timeout"))
                    continue
                n = next(self._ping_n)
                self._ping_sent[pid] = (n, now)
                try:
                    s.send_nowait(Ping(n))
                except (Backpressure, SessionClosed):
                    pass

    async def _static_peers(self) -> None:
        for url in self.config.peers:
            self._nursery.start_soon(self._static_dial, url)

    async def _static_dial(self, url: str) -> None:
        backoff = Backoff(base=0.25, cap=30.0)
        while True:
            try:
                s = await open_session(self._nursery, url, self._hs_config(),
                                       timeout=self.config.handshake_timeout)
            except P2PWorldError as e:
                self._count(e.code)
                await trio.sleep(backoff.next_delay(self._rng))
                continue
            backoff.reset()
            self._peer(s.peer_id).via.add("static")
            await self._run_session(s)
            await trio.sleep(backoff.next_delay(self._rng))

    async def _serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        server = await self._nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                self._handle_incoming, self.listen_host, self.config.port, None,
                handler_nursery=self._nursery, message_queue_size=64,
                task_status=task_status))
        self.listen_port = server.port
        task_status.started()


@asynccontextmanager
async def open_node(config: NodeConfig, *, identity: NodeIdentity | None = None
                    ) -> AsyncIterator[Node]:
    """Start a node; leaving the block stops it (goodbyes sent, sessions closed)."""
    home = NodeHome(config.home)
    ident = identity or home.load_or_create()
    store = LogStore(home.path / "log.db")
    try:
        loaded = store.load()  # StoreCorrupt surfaces here, before anything runs
        async with trio.open_nursery() as nursery:
            node = Node(config, ident, store, nursery)
            for rec, ents in loaded:
                node.hub.load(rec, ents)
            await node._serve()
            nursery.start_soon(node._effect_runner)
            nursery.start_soon(node._keepalive)
            if config.mdns:
                await nursery.start(node._discovery)
            nursery.start_soon(node._static_peers)
            try:
                yield node
            finally:
                nursery.cancel_scope.cancel()
    finally:
        store.close()


__all__ = ["Node", "NodeConfig", "ChannelMessage", "PeerInfo", "open_node", "short_id"]
