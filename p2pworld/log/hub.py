"""The channel hub core: every channel a node knows, and the peer protocol that moves them.

Sans-I/O. Inputs are calls (``open_channel``, ``publish``, ``peer_up``, ``peer_down``,
``receive``, ``flush``) with the current time; outputs are ordered effects the shell carries
out *in order*:

* :class:`Persist` — make these entries (and the record) durable; later effects in the same
  list may depend on it (acks are emitted only after the ``Persist`` of their entries).
* :class:`Send` — send a message to a connected peer.
* :class:`Delivered` — new verified entries are readable locally (wake subscribers).
* :class:`Resolved` — a local publish has its outcome.
* :class:`ChannelKnown` — a channel record was learned or changed.
* :class:`PeerMisbehaved` — a peer sent something invalid (count it; maybe drop the session).

Work is batched: ``publish`` and ``receive`` only queue; ``flush`` persists once, signs one
head per channel and sends one batch per subscriber (group commit and head-per-batch).

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> hub = ChannelHub(Ed25519Signer(bytes(32)), workspace="w")
    >>> rec, fx = hub.open_channel("general", now_ms=0)
    >>> req, fx = hub.publish(rec.channel, b"hello", idem_key=b"k", now_ms=1)
    >>> [type(e).__name__ for e in hub.flush(now_ms=2)]
    ['Persist', 'Delivered', 'Resolved']
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from p2pworld.errors import (
    ChainBroken,
    ChannelError,
    Conflict,
    Forked,
    NotSequencer,
    P2PWorldError,
    PublishTimeout,
    RemoteProtocolError,
    UnknownChannel,
    WorkspaceMismatch,
    error_from_code,
)
from p2pworld.identity import Signer, node_id
from p2pworld.log.entry import ChannelRecord, Entry, Submission
from p2pworld.log.replica import Replica
from p2pworld.log.sequencer import Sequencer
from p2pworld.wire import (
    Ack,
    ChannelAnnounce,
    Entries,
    Message,
    Nack,
    Submit,
    Subscribe,
)

MAX_BATCH = 256


@dataclass(frozen=True, kw_only=True)
class PublishResult:
    """An acknowledged publish: where the message sits in the channel and how safe it is."""

    channel: bytes
    seq: int
    entry_hash: bytes
    status: str  # "appended" or "duplicate"
    strength: str  # "local" (fsynced by the sequencer) or "replicated"


@dataclass(frozen=True)
class Send:
    peer: bytes
    message: Message


@dataclass(frozen=True)
class Persist:
    record: ChannelRecord
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Delivered:
    channel: bytes
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Resolved:
    req: int
    outcome: PublishResult | P2PWorldError


@dataclass(frozen=True)
class ChannelKnown:
    record: ChannelRecord


@dataclass(frozen=True)
class PeerMisbehaved:
    peer: bytes
    error: P2PWorldError


Effect = Send | Persist | Delivered | Resolved | ChannelKnown | PeerMisbehaved


@dataclass
class _Waiter:
    req: int
    peer: bytes | None  # None: a local publish on our own channel
    peer_req: int = 0


@dataclass
class _Own:
    seqr: Sequencer
    subscribers: dict[bytes, int] = field(default_factory=dict)  # peer -> last seq sent
    waiters: list[tuple[_Waiter, PublishResult]] = field(default_factory=list)


class ChannelHub:
    """All channels of one node: sequencers for its own, verifying replicas for the others."""

    def __init__(self, signer: Signer, *, workspace: str) -> None:
        self.signer = signer
        self.workspace = workspace
        self.node_id = node_id(signer.public_key)
        self.own: dict[bytes, _Own] = {}
        self.replicas: dict[bytes, Replica] = {}
        self.peers: set[bytes] = set()
        self._pending: dict[int, tuple[bytes, bytes]] = {}  # req -> (channel, sequencer peer)
        self._reqs = itertools.count(1)
        self._dirty: set[bytes] = set()
        self.errors: dict[str, int] = {}
        self.last_error: dict[bytes, str] = {}

    # --- loading (from the store, at start) -------------------------------------------------

    def load(self, record: ChannelRecord, entries: list[Entry]) -> None:
        """Restore a channel from durable storage (entries already verified by the store)."""
        if record.sequencer_key == self.signer.public_key:
            self.own[record.channel] = _Own(Sequencer(record, self.signer, entries))
        else:
            self.replicas[record.channel] = Replica(record, entries)

    # --- queries ----------------------------------------------------------------------------

    def record(self, channel: bytes) -> ChannelRecord:
        if channel in self.own:
            return self.own[channel].seqr.record
        if channel in self.replicas:
            return self.replicas[channel].record
        raise UnknownChannel(f"unknown channel {channel.hex()}")

    def records(self) -> list[ChannelRecord]:
        return [o.seqr.record for o in self.own.values()] + [
            r.record for r in self.replicas.values()]

    def entries(self, channel: bytes) -> list[Entry]:
        if channel in self.own:
            return self.own[channel].seqr.entries
        if channel in self.replicas:
            return self.replicas[channel].entries
        raise UnknownChannel(f"unknown channel {channel.hex()}")

    def head(self, channel: bytes) -> tuple[int, bytes]:
        if channel in self.own:
            s = self.own[channel].seqr
            return s.seq, s.head_hash
        r = self.replicas.get(channel)
        if r is None:
            raise UnknownChannel(f"unknown channel {channel.hex()}")
        return r.seq, r.head_hash

    def find(self, name: str) -> list[ChannelRecord]:
        return [r for r in self.records() if r.name == name]

    # --- calls ------------------------------------------------------------------------------

    def open_channel(self, name: str, *, now_ms: int) -> tuple[ChannelRecord, list[Effect]]:
        rec = ChannelRecord.create(self.signer, workspace=self.workspace, name=name,
                                   created_at=now_ms // 1000)
        if rec.channel in self.own:
            return self.own[rec.channel].seqr.record, []
        self.own[rec.channel] = _Own(Sequencer(rec, self.signer))
        fx: list[Effect] = [Persist(rec, ()), ChannelKnown(rec)]
        fx += [Send(p, ChannelAnnounce(rec)) for p in sorted(self.peers)]
        return rec, fx

    def publish(self, channel: bytes, payload: bytes, *, idem_key: bytes,
                now_ms: int) -> tuple[int, list[Effect]]:
        """Queue a publish; its :class:`Resolved` effect comes from a later ``flush`` or
        ``receive`` (or at once if it is refused)."""
        req = next(self._reqs)
        sub = Submission.create(self.signer, channel=channel, idem_key=idem_key, payload=payload)
        if channel in self.own:
            return req, self._submit_local(_Waiter(req, None), sub, now_ms)
        rec = self.record(channel)
        seq_peer = rec.sequencer_id
        if seq_peer not in self.peers:
            return req, [Resolved(req, ChannelError(
                "no lane to the channel's sequencer", sequencer=seq_peer.hex()))]
        self._pending[req] = (channel, seq_peer)
        return req, [Send(seq_peer, Submit(req, sub))]

    def _submit_local(self, waiter: _Waiter, sub: Submission, now_ms: int) -> list[Effect]:
        own = self.own[sub.channel]
        try:
            out = own.seqr.submit(sub, now_ms=now_ms)
        except P2PWorldError as e:
            return self._refuse(waiter, sub.channel, e)
        res = PublishResult(channel=sub.channel, seq=out.seq, entry_hash=out.entry_hash,
                            status=out.status, strength="local")
        own.waiters.append((waiter, res))
        self._dirty.add(sub.channel)
        return []

    def _refuse(self, waiter: _Waiter, channel: bytes, e: P2PWorldError) -> list[Effect]:
        if waiter.peer is None:
            return [Resolved(waiter.req, e)]
        d = e.details
        return [Send(waiter.peer, Nack(waiter.peer_req, channel, e.code, e.message[:512],
                                       int(d.get("seq", 0)), bytes(d.get("entry_hash", b""))))]

    def flush(self, *, now_ms: int) -> list[Effect]:
        """Persist what was appended, then release acks and send batches to subscribers."""
        fx: list[Effect] = []
        for ch in sorted(self._dirty):
            own = self.own[ch]
            new = own.seqr.take_unsynced()
            if new:
                fx.append(Persist(own.seqr.record, tuple(new)))
                fx.append(Delivered(ch, tuple(new)))
            for waiter, res in own.waiters:
                if waiter.peer is None:
                    fx.append(Resolved(waiter.req, res))
                elif waiter.peer in self.peers:
                    fx.append(Send(waiter.peer, Ack(waiter.peer_req, ch, res.status, res.seq,
                                                    res.entry_hash, res.strength)))
            own.waiters.clear()
            for peer in sorted(own.subscribers):
                fx += self._catch_up(own, peer)
        self._dirty.clear()
        return fx

    def _catch_up(self, own: _Own, peer: bytes) -> list[Effect]:
        """Send a subscriber everything after its cursor, in signed batches."""
        fx: list[Effect] = []
        sent = own.subscribers[peer]
        seqr = own.seqr
        while sent < seqr.seq:
            batch = seqr.read(sent, MAX_BATCH)
            sent += len(batch)
            fx.append(Send(peer, Entries(tuple(batch), seqr.signed_head_at(sent))))
        own.subscribers[peer] = sent
        return fx

    # --- peers ------------------------------------------------------------------------------

    def peer_up(self, peer: bytes) -> list[Effect]:
        self.peers.add(peer)
        fx: list[Effect] = [Send(peer, ChannelAnnounce(o.seqr.record))
                            for _, o in sorted(self.own.items())]
        for ch, r in sorted(self.replicas.items()):
            if r.record.sequencer_id == peer:
                fx.append(Send(peer, Subscribe(ch, r.seq)))
        return fx

    def peer_down(self, peer: bytes) -> list[Effect]:
        self.peers.discard(peer)
        for o in self.own.values():
            o.subscribers.pop(peer, None)
        fx: list[Effect] = []
        for req, (_, p) in sorted(self._pending.items()):
            if p == peer:
                del self._pending[req]
                fx.append(Resolved(req, PublishTimeout(
                    "lane to the sequencer closed before the ack; resubmit with the same key")))
        return fx

    def receive(self, peer: bytes, msg: Message, *, now_ms: int) -> list[Effect]:
        try:
            return self._receive(peer, msg, now_ms)
        except RemoteProtocolError as e:
            self.errors[e.code] = self.errors.get(e.code, 0) + 1
            self.last_error[peer] = e.code
            return [PeerMisbehaved(peer, e)]

    def _receive(self, peer: bytes, msg: Message, now_ms: int) -> list[Effect]:
        if isinstance(msg, ChannelAnnounce):
            return self._on_announce(peer, msg.record)
        if isinstance(msg, Subscribe):
            own = self.own.get(msg.channel)
            if own is None:
                return []
            own.subscribers[peer] = min(msg.after, own.seqr.seq)
            self._dirty.add(msg.channel)
            return []
        if isinstance(msg, Entries):
            return self._on_entries(peer, msg)
        if isinstance(msg, Submit):
            ch = msg.submission.channel
            waiter = _Waiter(0, peer, msg.req)
            if ch not in self.own:
                return self._refuse(waiter, ch, NotSequencer("this node does not sequence it"))
            return self._submit_local(waiter, msg.submission, now_ms)
        if isinstance(msg, Ack):
            pend = self._pending.pop(msg.req, None)
            if pend is None or pend[1] != peer or pend[0] != msg.channel:
                return []
            return [Resolved(msg.req, PublishResult(
                channel=msg.channel, seq=msg.seq, entry_hash=msg.entry_hash, status=msg.status,
                strength=msg.strength))]
        if isinstance(msg, Nack):
            pend = self._pending.pop(msg.req, None)
            if pend is None or pend[1] != peer:
                return []
            err = error_from_code(msg.code, msg.reason, seq=msg.seq, entry_hash=msg.entry_hash)
            if not isinstance(err, ChannelError) and not isinstance(err, Conflict):
                err = ChannelError(f"{msg.code}: {msg.reason}")
            return [Resolved(msg.req, err)]
        return []

    def _on_announce(self, peer: bytes, rec: ChannelRecord) -> list[Effect]:
        rec.verify()
        if rec.workspace != self.workspace:
            raise WorkspaceMismatch("channel of another workspace")
        if rec.channel in self.own or rec.channel in self.replicas:
            return []
        self.replicas[rec.channel] = Replica(rec)
        fx: list[Effect] = [Persist(rec, ()), ChannelKnown(rec)]
        if rec.sequencer_id in self.peers:
            fx.append(Send(rec.sequencer_id, Subscribe(rec.channel, 0)))
        return fx

    def _on_entries(self, peer: bytes, msg: Entries) -> list[Effect]:
        r = self.replicas.get(msg.head.channel)
        if r is None:
            return []
        try:
            new = r.receive(list(msg.entries), msg.head)
        except Forked:
            raise
        except ChainBroken:
            # Ask again from what we hold; the batch changed nothing.
            self.errors[ChainBroken.code] = self.errors.get(ChainBroken.code, 0) + 1
            return [Send(peer, Subscribe(r.record.channel, r.seq))]
        if not new:
            return []
        return [Persist(r.record, tuple(new)), Delivered(r.record.channel, tuple(new))]
