"""The channel hub core: every channel a node knows, and the peer protocol that moves them.

Sans-I/O. Inputs are calls (``open_channel``, ``publish``, ``handoff``, ``recover``,
``ack_message``, ``peer_up``, ``peer_down``, ``receive``, ``flush``) with the current time;
outputs are ordered effects the shell carries out *in order* (a later effect may depend on an
earlier ``Persist`` having completed: acks are emitted only after the ``Persist`` of their
entries).

Work is batched: ``publish`` and ``receive`` only queue appends; ``flush`` persists them once
(group commit), signs one head per channel and sends one batch per subscriber.

Example:
    >>> import random
    >>> from p2pworld.identity import Ed25519Signer
    >>> hub = ChannelHub(Ed25519Signer(bytes(32)), workspace="w", rng=random.Random(0))
    >>> rec, fx = hub.open_channel("general", now_ms=0)
    >>> req, fx = hub.publish(rec.channel, b"hello", idem_key=b"k", now_ms=1)
    >>> [type(e).__name__ for e in hub.flush(now_ms=2)]
    ['Persist', 'Delivered', 'Resolved']
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from p2pworld.channel.checkpoints import Checkpoint, Checkpoints  # Checkpoint: re-exported
from p2pworld.channel.effects import (  # re-exported: the core's effects and values
    ChannelKnown as ChannelKnown,
    Delivered as Delivered,
    Effect as Effect,
    Notice as Notice,
    OutboxDone as OutboxDone,
    OutboxPut as OutboxPut,
    Outcomes as Outcomes,
    Persist as Persist,
    PublishResult as PublishResult,
    RecordFork as RecordFork,
    Resolved as Resolved,
    SaveCursor as SaveCursor,
    SaveVote as SaveVote,
)
from p2pworld.channel.elections import ElectionBook, Elections
from p2pworld.channel.epochs import (  # re-exported: the limits of an epoch message
    EPOCH_CATCHUP_BYTES as EPOCH_CATCHUP_BYTES,
    MAX_EPOCH_CATCHUP as MAX_EPOCH_CATCHUP,
    EpochChanges,
)
from p2pworld.channel.handoffs import HandoffBook
from p2pworld.channel.membership import Membership
from p2pworld.channel.pending import _Pending, _Waiter
from p2pworld.channel.startup import StartupExchange
from p2pworld.channel.subscriptions import Subscriptions
from p2pworld.effects import PeerMisbehaved, Send
from p2pworld.errors import (
    ChainBroken,
    ChannelError,
    Fenced,
    Forked,
    LocalProtocolError,
    NotSequencer,
    P2PWorldError,
    PayloadTooLarge,
    PublishTimeout,
    RemoteProtocolError,
    Resequenced,
    Unauthorized,
    UnknownChannel,
    WorkspaceMismatch,
    error_from_code,
)
from p2pworld.identity import Signer, node_id
from p2pworld.log.entry import (
    DEFAULT_MAX_PAYLOAD,
    MAX_CTL_PAYLOAD,
    SIGN_BATCH,
    ChannelPolicy,
    ChannelRecord,
    Entry,
    SignedHead,
    Submission,
    sign_batch,
)
from p2pworld.log.replica import Replica
from p2pworld.log.sequencer import ChannelLog, Sequencer
from p2pworld.log.state import ChannelState, EpochChange, scope_kind
from p2pworld.wire import (
    Ack,
    ChannelAnnounce,
    Entries,
    EpochMsg,
    HeadQuery,
    HeadReport,
    Message,
    Nack,
    Restore,
    RestoreRequest,
    SnapshotMsg,
    Stored,
    Submit,
    Subscribe,
    SubscribeRefused,
    Tip,
    VoteReply,
    VoteRequest,
    VotersWanted,
    VoteWithdrawn,
    message_channel,
)

if TYPE_CHECKING:
    import random

    from p2pworld.auth.book import TokenBook

ScopeOf = Callable[..., str | None]
"""``message_scope(msg_type, **fields)``: the scope a sender needs (:mod:`p2pworld.core.routes`)."""

MAX_BATCH = 256
"""Most entries per ``ents`` message a sequencer sends."""
STARTUP_CHECK_MS = 2_000
"""How long a sequencer that loaded a channel waits for its peers' heads (then: acks)."""
MAX_BATCH_BYTES = 1 << 20
"""Most encoded entry bytes per ``ents`` message (one larger entry travels alone)."""
WINDOW_ENTRIES = 4096
WINDOW_BYTES = 8 << 20
"""Flow control: entries (and encoded bytes) a sequencer sends a subscriber beyond what the
subscriber reported stored (``Stored``); more waits for its answer. At least one batch is
always in flight, so a subscriber far behind catches up at the pace it persists."""
PEER_WINDOW_BYTES = 24 << 20
"""The same bound summed over every channel a subscriber catches up on from this node (below
the session's send queue, so catch-up never overflows it)."""
WRITER_WINDOW_BYTES = 16 << 20
"""Payload bytes a writer keeps sent and unanswered at once (at least one submission); the
rest wait in the outbox, in order, for answers."""
MINE_MEMORY = 8192


# --- bookkeeping --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unsigned:
    """A publish waiting for the flush, which signs each channel's queue as one batch."""

    req: int
    channel: bytes
    idem_key: bytes
    payload: bytes
    kind: str
    want: str


@dataclass
class _Flow:
    """One subscriber's catch-up window: batches sent and not yet reported stored."""

    sent: int
    """Last seq sent."""
    acked: int = 0
    """Last seq the subscriber reported stored."""
    batches: list[tuple[int, int]] = field(default_factory=list)
    """``(last seq, encoded bytes)`` of each batch in flight, oldest first."""
    inflight_bytes: int = 0
    tip: int = 0
    """Last head announced to it with ``Tip``."""

    def stored(self, seq: int) -> None:
        """The subscriber has everything up to ``seq`` on disk: those batches have landed."""
        self.acked = max(self.acked, seq)
        while self.batches and self.batches[0][0] <= seq:
            self.inflight_bytes -= self.batches.pop(0)[1]

    def room(self) -> bool:
        """May another batch leave now? Always when nothing is in flight."""
        return not self.batches or (self.sent - self.acked < WINDOW_ENTRIES
                                    and self.inflight_bytes < WINDOW_BYTES)

    def sent_batch(self, last: int, size: int) -> None:
        self.sent = last
        self.batches.append((last, size))
        self.inflight_bytes += size


@dataclass
class _Own:
    seqr: Sequencer
    subscribers: dict[bytes, _Flow] = field(default_factory=dict)  # peer -> catch-up window
    stored: dict[bytes, int] = field(default_factory=dict)  # replica key -> durable seq
    acks: list[tuple[_Waiter, PublishResult]] = field(default_factory=list)
    replicated: list[tuple[_Waiter, PublishResult]] = field(default_factory=list)
    dirty_floor: bool = False
    check: _Check | None = None
    """Set while the channel, loaded from disk, is not yet checked against peers."""

    def subscribe(self, peer: bytes, after: int) -> _Flow:
        """``peer`` subscribes from ``after``: its catch-up window starts there."""
        self.subscribers[peer] = flow = _Flow(sent=after, acked=after)
        return flow


@dataclass
class _Check:
    """The start-up exchange of one channel this node sequences (``docs/protocol.md`` §5.7):
    until it ends, submissions and subscriptions are held, not answered."""

    deadline: int | None = None
    asked: set[bytes] = field(default_factory=set)
    reports: dict[bytes, HeadReport] = field(default_factory=dict)
    restoring: bytes | None = None
    """The peer asked for the entries this node lost (one at a time)."""
    tried: set[bytes] = field(default_factory=set)
    restored: int = 0
    from_seq: int = 0
    held: list[tuple[_Waiter, Submission]] = field(default_factory=list)
    subs: list[tuple[bytes, Subscribe]] = field(default_factory=list)


class ChannelHub(StartupExchange, EpochChanges, Elections, Subscriptions, Membership,
                 Checkpoints):
    """All channels of one node: sequencers for those it sequences, replicas for the rest."""

    def __init__(self, signer: Signer, *, workspace: str, rng: random.Random,
                 auth: TokenBook | None = None, message_scope: ScopeOf | None = None) -> None:
        self.signer = signer
        self.auth = auth  # token checks before every mutation (None: no control service)
        self.message_scope = message_scope or _no_scopes
        """The scope a sender of each message type needs (:mod:`p2pworld.core.routes`)."""
        self.validator: Callable[[ChannelLog, Submission, int], None] | None = None
        """Application rules a sequencer enforces before appending (compute assignment)."""
        self.workspace = workspace
        self.node_id = node_id(signer.public_key)
        self.rng = rng
        self.own: dict[bytes, _Own] = {}
        self.replicas: dict[bytes, Replica] = {}
        self.route: dict[bytes, bytes] = {}  # channel -> sequencer key (from epoch changes)
        self.peers: dict[bytes, bytes] = {}  # peer id -> public key
        self.cursors: dict[bytes, Checkpoint] = {}
        self.outbox: dict[tuple[bytes, bytes], _Pending] = {}
        self._reqs = itertools.count(1)
        self._dirty: set[bytes] = set()
        self._unsent: list[_Pending] = []
        self._unsigned: list[_Unsigned] = []
        self._mine: dict[tuple[bytes, bytes], Submission] = {}
        """Recently signed submissions: our own entries coming back need no signature check."""
        self.signing = {"batches": 0, "submissions": 0}  # writer signatures, what they covered
        self._by_req: dict[int, tuple[bytes, bytes]] = {}
        self._req_bytes: dict[int, int] = {}
        self._sent_bytes = 0
        """Payload bytes of submissions sent and unanswered (:data:`WRITER_WINDOW_BYTES`)."""
        self._held: list[_Pending] = []
        """Submissions waiting for room in the writer window, oldest first."""
        self._keys: dict[bytes, dict[int, bytes]] = {}  # channel -> key id -> channel key
        self.errors: dict[str, int] = {}
        self.last_error: dict[bytes, str] = {}
        self.seen_head: dict[bytes, int] = {}  # channel -> highest signed head seen
        self.channel_errors: dict[bytes, str] = {}
        self.read_only: P2PWorldError | None = None
        self._reacks: dict[tuple[bytes, bytes], int] = {}
        """Acked here, lost at a step-down, resubmitted: the seq each had (``RESEQUENCED``)."""
        self.handoffs = HandoffBook()  # the channels handed off as this node leaves
        self.elections = ElectionBook()  # this node's votes and campaigns
        self.startup_check_ms = STARTUP_CHECK_MS
        """How long a channel loaded from disk waits for its peers' heads (0: no check)."""
        self.quarantined: dict[bytes, P2PWorldError] = {}
        """Channels whose stored copy is damaged (:meth:`quarantine`): not served, not
        taken from peers, refused to the application with their error."""
        """Set while this node's disk is full (:class:`~p2pworld.errors.StoreFull`): it
        refuses what it would have to persist before acknowledging (publishes on channels it
        sequences, entries as a replica, checkpoints); reads and remote publishes go on."""

    def batches_in_flight(self, limit: int) -> int:
        """Writer batches (signatures) with ``local`` submissions sent and unanswered,
        counted up to ``limit``. Read from the outbox itself, so it can never drift."""
        seen: set[bytes] = set()
        for pend in self.outbox.values():
            # A replicated ack may wait on replicas for long; it does not hold batches back.
            if pend.sent_to is not None and pend.want == "local":
                seen.add(pend.sub.signature)
                if len(seen) >= limit:
                    break
        return len(seen)

    @property
    def in_flight(self) -> int:
        """Submissions sent to remote sequencers and not answered yet."""
        return len(self._by_req)

    @property
    def queued(self) -> int:
        """Publishes waiting to be signed at the next :meth:`flush`."""
        return len(self._unsigned)

    @property
    def idle(self) -> bool:
        """Nothing waits for :meth:`flush` (no queued publish, unsent submission or append)."""
        return not (self._dirty or self._unsigned or self._unsent or self.elections.joining)

    @property
    def flushable(self) -> bool:
        """:meth:`flush` has work: not :attr:`idle`, or held submissions the window lets go."""
        return not self.idle or (bool(self._held) and self._sent_bytes < WRITER_WINDOW_BYTES)

    # --- loading (from the store, at start) -------------------------------------------------

    def load(self, record: ChannelRecord, epochs: list[EpochChange], base: ChannelState,
             entries: list[Entry], head: SignedHead | None = None) -> None:
        """Restore a channel from durable storage (the store verified the chain). A channel
        this node sequences is then checked against its peers before it acknowledges
        anything (:meth:`tick`, the start-up exchange): the store may have rolled back.
        ``head``: the signed head stored with the last commit."""
        st = base.copy()
        st.replay(entries, epochs)
        for ec in epochs:
            if ec.epoch > st.epoch and ec.start_seq == st.seq:
                st.apply_epoch(ec)
        log = self._install(st, entries, base)
        if isinstance(log, Replica) and head is not None and \
                (head.seq, head.head_hash, head.epoch) == (log.seq, log.head_hash, st.epoch):
            log.signed_head = head
        own = self.own.get(st.channel)
        if own is not None and self.startup_check_ms > 0:
            own.check = _Check()

    def _install(self, st: ChannelState, entries: list[Entry], base: ChannelState) -> ChannelLog:
        ch = st.channel
        self.replicas.pop(ch, None)
        self.own.pop(ch, None)
        self.route[ch] = st.sequencer_key
        log: ChannelLog
        if st.sequencer_key == self.signer.public_key:
            seqr = Sequencer(st, self.signer, entries, base)
            self.own[ch] = _Own(seqr)
            log = seqr
        else:
            log = self.replicas[ch] = Replica(st, entries, base)
        return log

    def restore(self, channel: bytes, stored: tuple[ChannelRecord, list[EpochChange],
                                                     ChannelState, list[Entry]] | None
                ) -> list[Effect]:
        """Put a channel back to what is on disk after a transaction that did not commit (a
        full disk): the appends it held are gone from memory as they are from disk.
        Publishes waiting on them are refused (:attr:`read_only`), subscribers resume from
        the durable head, and a channel that never reached the disk is forgotten.
        ``stored``: ``(record, epochs, base, entries)`` as loaded, or None."""
        err = self.read_only or LocalProtocolError("transaction did not commit")
        fx: list[Effect] = []
        own = self.own.get(channel)
        if own is not None:
            for waiter, _ in own.acks + own.replicated:
                fx += self._refuse(waiter, channel, err)
        if stored is None:
            self.own.pop(channel, None)
            self.replicas.pop(channel, None)
            self.route.pop(channel, None)
            return fx
        record, epochs, base, entries = stored
        self.load(record, epochs, base, entries)
        new = self.own.get(channel)
        if new is not None:
            new.check = own.check if own is not None else None
        if own is not None and new is not None:
            log = new.seqr
            for peer, flow in own.subscribers.items():
                # Whatever was sent past the durable head was never persisted here.
                new.subscribers[peer] = _Flow(sent=min(flow.sent, log.seq),
                                              acked=min(flow.acked, log.seq))
            new.stored = {k: min(v, log.seq) for k, v in own.stored.items()}
        self._dirty.discard(channel)
        return fx

    def resume_writes(self) -> list[Effect]:
        """The disk has room again: accept writes, and ask every sequencer for what this
        node's replicas did not take meanwhile."""
        self.read_only = None
        fx: list[Effect] = []
        for ch, r in sorted(self.replicas.items()):
            target = self.sequencer_of(ch)
            if target in self.peers and not r.frozen:
                fx += self._subscribe(ch, target)
        return fx

    def load_outbox(self, sub: Submission, want: str) -> P2PWorldError | None:
        """Restore a stored outbox row; returns why it can never be sent instead (its
        channel is unknown here, or its payload is over the channel's limit)."""
        try:
            bound = self.record(sub.channel).payload_bound(sub.kind)
        except UnknownChannel as e:
            return e
        if len(sub.payload) > bound:
            return PayloadTooLarge(f"stored submission of {len(sub.payload)} bytes is over "
                                   f"the channel's limit of {bound}", size=len(sub.payload),
                                   limit=bound)
        self.outbox[(sub.channel, sub.idem_key)] = _Pending(sub, want, None)
        return None

    # --- queries ----------------------------------------------------------------------------

    def quarantine(self, channel: bytes, error: P2PWorldError) -> None:
        """Set a channel aside whose stored copy is damaged (the store found it on open): it
        is neither served nor taken from peers, and every call on it raises ``error``."""
        self.quarantined[channel] = error
        self.own.pop(channel, None)
        self.replicas.pop(channel, None)
        self.route.pop(channel, None)

    def log(self, channel: bytes) -> ChannelLog:
        if channel in self.own:
            return self.own[channel].seqr
        r = self.replicas.get(channel)
        if r is None:
            if channel in self.quarantined:
                raise self.quarantined[channel]
            raise UnknownChannel(f"unknown channel {channel.hex()}")
        return r

    def record(self, channel: bytes) -> ChannelRecord:
        return self.log(channel).record

    def state(self, channel: bytes) -> ChannelState:
        return self.log(channel).state

    def records(self) -> list[ChannelRecord]:
        return [o.seqr.record for o in self.own.values()] + [
            r.record for r in self.replicas.values()]

    def entries(self, channel: bytes) -> list[Entry]:
        return self.log(channel).entries

    def head(self, channel: bytes) -> tuple[int, bytes]:
        log = self.log(channel)
        return log.seq, log.head_hash

    def find(self, name: str) -> list[ChannelRecord]:
        return [r for r in self.records() if r.name == name]

    def sequencer_of(self, channel: bytes) -> bytes:
        return node_id(self.route.get(channel) or self.record(channel).owner_key)

    def participates(self, channel: bytes) -> bool:
        return self.state(channel).may_write(self.signer.public_key)

    # --- calls ------------------------------------------------------------------------------

    def open_channel(self, name: str, *, now_ms: int, private: bool = False,
                     participants: tuple[bytes, ...] = (), policy: ChannelPolicy | None = None,
                     authority_key: bytes | None = None) -> tuple[ChannelRecord, list[Effect]]:
        """``open_channel``: create (or reopen) a channel this node sequences."""
        self._authorize(self.signer.public_key, ChannelAnnounce, now_ms)
        if self.read_only is not None:
            raise self.read_only
        policy = policy or ChannelPolicy()
        if policy.max_payload is None:
            # Recorded, so the sequencer and every replica apply the same limit for ever.
            policy = replace(policy, max_payload=DEFAULT_MAX_PAYLOAD)
        rec = ChannelRecord.create(self.signer, workspace=self.workspace, name=name,
                                   created_at=now_ms // 1000, private=private,
                                   participants=participants, policy=policy,
                                   authority_key=authority_key)
        if rec.channel in self.own or rec.channel in self.replicas:
            return self.record(rec.channel), []
        if rec.channel in self.quarantined:
            raise self.quarantined[rec.channel]
        seqr = Sequencer.create(rec, self.signer)
        self.own[rec.channel] = _Own(seqr)
        self.route[rec.channel] = seqr.state.sequencer_key
        fx: list[Effect] = [Persist(record=rec, base=seqr.state.encode()), ChannelKnown(rec)]
        fx += self._announce(rec.channel)
        if private:
            _, more = self._rekey(rec.channel, now_ms)
            fx += more
        return rec, fx

    def _announce(self, channel: bytes, only: bytes | None = None) -> list[Effect]:
        log = self.log(channel)
        st = log.state
        msg = ChannelAnnounce(log.record, tuple(st.epochs))
        fx: list[Effect] = []
        for pid, key in sorted(self.peers.items()):
            if only is not None and pid != only:
                continue
            if not st.restricted or key in st.participants:
                fx.append(Send(pid, msg))
        return fx

    def publish(self, channel: bytes, payload: bytes, *, idem_key: bytes, now_ms: int,
                want: str = "local", kind: str = "msg") -> tuple[int, list[Effect]]:
        """``publish_message``: queue a publish; its :class:`Resolved` comes later (from
        ``flush`` or ``receive``), or at once if it is refused.

        On a private channel the payload is sealed with the current channel key first. On a
        channel another node sequences, the submission is signed at the next :meth:`flush`
        together with every other publish queued for it: one writer signature per batch
        (``docs/protocol.md`` §5.2). On a channel this node sequences it is appended at once.
        """
        st = self.state(channel)
        limit = st.record.policy.payload_limit if kind == "msg" else MAX_CTL_PAYLOAD
        if len(payload) > limit:
            # Before anything is queued, written or sent: the caller's error, typed.
            raise PayloadTooLarge(f"payload of {len(payload)} bytes is over the channel's "
                                  f"limit of {limit}", size=len(payload), limit=limit)
        req = next(self._reqs)
        if self.read_only is not None and channel in self.own:
            return req, [Resolved(req, self.read_only)]
        try:
            self._authorize(self.signer.public_key, Submit, now_ms, channel=channel,
                            kind=scope_kind(kind, payload))
        except P2PWorldError as e:
            return req, [Resolved(req, e)]
        if kind == "msg" and st.record.private:
            try:
                payload = self._seal(channel, payload)
            except P2PWorldError as e:
                return req, [Resolved(req, e)]
        if channel in self.own:
            # Sequenced at once (membership changes and rekeys read the state they leave).
            sub = Submission.create(self.signer, channel=channel, idem_key=idem_key,
                                    payload=payload, kind=kind)
            return req, self._submit(req, sub, want, now_ms)
        self._unsigned.append(_Unsigned(req, channel, idem_key, payload, kind, want))
        return req, []

    def _sign_queued(self, now_ms: int) -> list[Effect]:
        """Sign the queued publishes, one batch (one signature) per channel, and submit them
        in the order they were made."""
        queued, self._unsigned = self._unsigned, []
        by_channel: dict[bytes, list[_Unsigned]] = {}
        for u in queued:
            by_channel.setdefault(u.channel, []).append(u)
        signed: dict[int, Submission] = {}
        for ch, us in by_channel.items():
            for i in range(0, len(us), SIGN_BATCH):
                part = us[i: i + SIGN_BATCH]
                subs = sign_batch(self.signer, channel=ch,
                                  items=[(u.idem_key, u.payload, u.kind) for u in part])
                signed.update((u.req, sub) for u, sub in zip(part, subs, strict=True))
                self.signing["batches"] += 1
                self.signing["submissions"] += len(subs)
                if len(self._mine) + len(subs) > MINE_MEMORY:
                    self._mine = {}
                self._mine.update(((ch, sub.idem_key), sub) for sub in subs)
        fx: list[Effect] = []
        for u in queued:
            fx += self._submit(u.req, signed[u.req], u.want, now_ms)
        return fx

    def _submit(self, req: int, sub: Submission, want: str, now_ms: int) -> list[Effect]:
        ch = sub.channel
        if ch in self.own:
            return self._submit_local(_Waiter(req, None, want=want), sub, now_ms)
        pend = _Pending(sub, want, req)
        self.outbox[(ch, sub.idem_key)] = pend
        # Sent at the next flush, so a burst of publishes is written to the outbox in one
        # transaction and leaves in one go.
        self._unsent.append(pend)
        return [OutboxPut(sub, want)]

    def _send_pending(self, pend: _Pending) -> list[Effect]:
        seq_peer = self.sequencer_of(pend.sub.channel)
        if seq_peer not in self.peers:
            pend.sent_to = None
            return []
        size = len(pend.sub.payload)
        if self._sent_bytes and self._sent_bytes + size > WRITER_WINDOW_BYTES:
            # Flow control: it leaves when answers make room (every flush retries).
            if pend not in self._held:
                self._held.append(pend)
            return []
        pend.sent_to = seq_peer
        if pend.req is None:
            pend.req = next(self._reqs)
        self._release(pend.req)
        self._by_req[pend.req] = (pend.sub.channel, pend.sub.idem_key)
        self._req_bytes[pend.req] = size
        self._sent_bytes += size
        return [Send(seq_peer, Submit(pend.req, pend.sub, pend.want))]

    def _pending_for(self, channel: bytes) -> list[_Pending]:
        return [p for k, p in sorted(self.outbox.items()) if k[0] == channel]

    def _release(self, req: int) -> None:
        """``req`` is no longer in flight."""
        self._by_req.pop(req, None)
        self._sent_bytes -= self._req_bytes.pop(req, 0)

    def _submit_local(self, waiter: _Waiter, sub: Submission, now_ms: int) -> list[Effect]:
        own = self.own[sub.channel]
        if self.read_only is not None:
            return self._refuse(waiter, sub.channel, self.read_only)
        if own.check is not None:
            # Not sequenced before the start-up exchange ends: its seq could be one a
            # replica already holds from before this store rolled back.
            own.check.held.append((waiter, sub))
            return []
        try:
            self._authorize(sub.sender_key, Submit, now_ms, channel=sub.channel,
                            kind=scope_kind(sub.kind, sub.payload))
            check = self.validator
            log = own.seqr
            out = own.seqr.submit(sub, now_ms=now_ms, validate=None if check is None or
                                  sub.kind != "msg" else lambda s: check(log, s, now_ms))
        except P2PWorldError as e:
            return self._refuse(waiter, sub.channel, e)
        res = PublishResult(channel=sub.channel, seq=out.seq, entry_hash=out.entry_hash,
                            status=out.status, strength="local")
        own.acks.append((waiter, res))
        self._dirty.add(sub.channel)
        return []

    def _refuse(self, waiter: _Waiter, channel: bytes, e: P2PWorldError) -> list[Effect]:
        if waiter.peer is None:
            return [Resolved(waiter.req, e)]
        d = e.details
        return [Send(waiter.peer, Nack(waiter.peer_req, channel, e.code, e.message[:512],
                                       int(d.get("seq", 0)), bytes(d.get("entry_hash", b""))))]

    # --- flush ------------------------------------------------------------------------------

    def flush(self, *, now_ms: int) -> list[Effect]:
        """Persist what was appended, then release acks and send batches to subscribers."""
        fx: list[Effect] = self._join_voters(now_ms) if self.elections.joining else []
        if self._held and self._sent_bytes < WRITER_WINDOW_BYTES:
            held, self._held = self._held, []
            for pend in held:
                if self.outbox.get((pend.sub.channel, pend.sub.idem_key)) is pend and \
                        pend.sent_to is None:
                    fx += self._send_pending(pend)
        if self._unsigned:
            fx += self._sign_queued(now_ms)
        unsent, self._unsent = self._unsent, []
        for pend in unsent:
            if self.outbox.get((pend.sub.channel, pend.sub.idem_key)) is pend:
                fx += self._send_pending(pend)
        for ch in sorted(self._dirty):
            own = self.own.get(ch)
            if own is None:
                continue
            seqr = own.seqr
            new = seqr.take_unsynced()
            dropped = seqr.compact()
            if new or dropped:
                snap = seqr.snapshot() if dropped and seqr.base else None
                fx.append(Persist(record=seqr.record, epochs=tuple(seqr.state.epochs),
                                  entries=tuple(new),
                                  base=snap.state if snap else None, snapshot=snap,
                                  floor=seqr.floor,
                                  head=seqr.signed_head() if new else None))
            if new:
                fx.append(Delivered(ch, tuple(new)))
            for waiter, res in own.acks:
                if waiter.want == "replicated" and res.seq > self._replicated_seq(own):
                    own.replicated.append((waiter, res))
                    continue
                fx += self._answer(waiter, res)
            own.acks.clear()
            fx += self._want_voters(ch) if own.replicated else []  # only voters count
            for peer in sorted(own.subscribers):
                fx += self._catch_up(own, peer)
        self._dirty.clear()
        return fx

    def _answer(self, waiter: _Waiter, res: PublishResult) -> list[Effect]:
        if waiter.peer is None:
            return [Resolved(waiter.req, res)]
        if waiter.peer in self.peers:
            return [Send(waiter.peer, Ack(waiter.peer_req, res.channel, res.status, res.seq,
                                          res.entry_hash, res.strength))]
        return []

    def _catch_up(self, own: _Own, peer: bytes) -> list[Effect]:
        """Send a subscriber what follows its cursor, in signed batches bounded by count and
        bytes, as far as its window allows; if entries are held back, tell it the head."""
        fx: list[Effect] = []
        flow = own.subscribers[peer]
        seqr = own.seqr
        if flow.sent < seqr.floor:
            # Retention dropped entries this subscriber had not been sent yet: it resumes
            # from a snapshot, as a subscriber with a too-old cursor does.
            fx.append(Send(peer, SnapshotMsg(seqr.channel, seqr.snapshot())))
            flow.sent = flow.acked = seqr.floor
            flow.batches.clear()
            flow.inflight_bytes = 0
        while flow.sent < seqr.seq and flow.room() and (
                not flow.batches or self._peer_inflight(peer) < PEER_WINDOW_BYTES):
            batch = seqr.read_bounded(flow.sent, count=MAX_BATCH, size=MAX_BATCH_BYTES)
            last = flow.sent + len(batch)
            flow.sent_batch(last, sum(len(e.encoded) for e in batch))
            fx.append(Send(peer, Entries(tuple(batch), seqr.signed_head_at(last))))
        if flow.sent < seqr.seq and flow.tip < seqr.seq:
            flow.tip = seqr.seq
            fx.append(Send(peer, Tip(seqr.channel, seqr.state.epoch, seqr.seq)))
        return fx

    def _peer_inflight(self, peer: bytes) -> int:
        return sum(o.subscribers[peer].inflight_bytes for o in self.own.values()
                   if peer in o.subscribers)

    # --- peers ------------------------------------------------------------------------------

    def peer_up(self, peer: bytes, peer_key: bytes) -> list[Effect]:
        self.peers[peer] = peer_key
        fx: list[Effect] = self._ask_for_votes(peer)
        for ch in sorted(self.own):
            fx += self._announce(ch, only=peer)
            if self.own[ch].check is not None:
                fx += self._ask_heads(ch)
            else:
                # A sequencer that was cut off may have been superseded: a peer that knows
                # a newer epoch says so in its answer (and this node steps down).
                fx.append(Send(peer, HeadQuery(ch)))
        for ch, r in sorted(self.replicas.items()):
            if self.sequencer_of(ch) == peer and not r.frozen:
                fx += self._subscribe(ch, peer)
                for pend in self._pending_for(ch):
                    fx += self._send_pending(pend)
        return fx

    def peer_down(self, peer: bytes) -> list[Effect]:
        key = self.peers.pop(peer, None)
        for o in self.own.values():
            o.subscribers.pop(peer, None)
            if o.check is not None:
                o.check.asked.discard(peer)
                o.check.subs = [(p, m) for p, m in o.check.subs if p != peer]
                if o.check.restoring == peer:
                    o.check.restoring = None
        del key
        fx: list[Effect] = []
        for pend in self.outbox.values():
            if pend.sent_to == peer:
                pend.sent_to = None
                if pend.req is not None:
                    # The outcome is unknown; the outbox resubmits (same key) when a lane
                    # returns, so the entry is never lost and never duplicated.
                    fx.append(Resolved(pend.req, PublishTimeout(
                        "lane to the sequencer closed before the ack; the outbox resubmits "
                        "it with the same key", queued=True)))
                    self._release(pend.req)
                    pend.req = None
        return fx

    def receive(self, peer: bytes, msg: Message, *, now_ms: int) -> list[Effect]:
        try:
            return self._receive(peer, msg, now_ms)
        except Forked as e:
            self._count(e.code, peer)
            ch = bytes.fromhex(str(e.details.get("channel") or ""))
            r = self.replicas.get(ch)
            fx: list[Effect] = [Notice(ch, e)] if ch else []
            if r is not None and r.fork_proof is not None:
                fx.append(RecordFork(ch, r.fork_proof[0], r.fork_proof[1]))
            return fx
        except RemoteProtocolError as e:
            self._count(e.code, peer)
            return [PeerMisbehaved(peer, e)]

    def _authorize(self, key: bytes, msg_type: type[Message], now_ms: int, *,
                   grace: bool = False, **fields: bytes | str) -> None:
        """Raise a typed ``Unauthorized`` unless ``key``'s token covers ``msg_type``'s scope now
        (``grace``: or expired within the membership grace, never revoked)."""
        if self.auth is not None and (scope := self.message_scope(msg_type, **fields)):
            self.auth.check(key, scope, now=now_ms / 1000, grace=grace)

    def _count(self, code: str, peer: bytes, channel: bytes | None = None) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        self.last_error[peer] = code
        if channel is not None:
            self.channel_errors[channel] = code

    def _receive(self, peer: bytes, msg: Message, now_ms: int) -> list[Effect]:
        if self.quarantined and _channel_of(msg) in self.quarantined:
            # Its rows on disk are damaged: writing anything for it would build on them.
            self.errors["QUARANTINED"] = self.errors.get("QUARANTINED", 0) + 1
            return []
        if isinstance(msg, (VoteRequest, VoteReply, VotersWanted, VoteWithdrawn)):
            return self._on_election(peer, msg, now_ms)
        if isinstance(msg, ChannelAnnounce):
            ch = msg.record.channel
            if ch not in self.own and ch not in self.replicas:  # learning a channel: a mutation
                self._authorize(msg.record.owner_key, type(msg), now_ms, channel=ch)
            return self._on_announce(peer, msg.record, list(msg.epochs), now_ms)
        if isinstance(msg, Subscribe):
            return self._read_refused(peer, msg.channel, now_ms) or self._on_subscribe(peer, msg)
        if isinstance(msg, HeadQuery):
            return [Send(peer, self._head_report(peer, msg.channel))]
        if isinstance(msg, HeadReport):
            return self._on_head_report(peer, msg, now_ms)
        if isinstance(msg, RestoreRequest):
            return [Send(peer, self._restore_for(peer, msg))]
        if isinstance(msg, Restore):
            return self._on_restore(peer, msg, now_ms)
        if isinstance(msg, Entries):
            return self._on_entries(peer, msg)
        if isinstance(msg, EpochMsg):
            ec, ch = msg.change, msg.change.channel
            if ch not in self.own and ch not in self.replicas:
                return []
            own = self.own.get(ch)
            if own is not None and ec.epoch > own.seqr.state.epoch:
                newer = self._newer_epochs(ch, [*own.seqr.state.epochs, ec])
                return self._step_down(ch, newer, now_ms) if newer else []
            if ec.epoch > self.log(ch).state.epoch:  # a new sequencer takes over: a mutation
                self._authorize(ec.sequencer_key, type(msg), now_ms, channel=ch)
            fx = self._enter_epoch(peer, ec, list(msg.entries))
            return fx + self._hand_on(ch, now_ms)  # a leaving node hands on what it is handed
        if isinstance(msg, SnapshotMsg):
            return self._on_snapshot(peer, msg)
        if isinstance(msg, Stored):
            return self._on_stored(peer, msg)
        if isinstance(msg, Tip):
            r = self.replicas.get(msg.channel)
            if r is not None and msg.epoch == r.state.epoch and self.sequencer_of(msg.channel) == peer:
                self.seen_head[msg.channel] = max(self.seen_head.get(msg.channel, 0), msg.seq)
            return []
        if isinstance(msg, SubscribeRefused):
            err = error_from_code(msg.code, msg.reason)
            return [Notice(msg.channel, err)] if msg.channel in self.replicas else []
        if isinstance(msg, Submit):
            ch = msg.submission.channel
            waiter = _Waiter(0, peer, msg.req, want=msg.want)
            if ch not in self.own:
                return self._refuse(waiter, ch, NotSequencer("this node does not sequence it"))
            return self._submit_local(waiter, msg.submission, now_ms)
        if isinstance(msg, Ack):
            return self._on_answer(peer, msg.req, msg.channel, PublishResult(
                channel=msg.channel, seq=msg.seq, entry_hash=msg.entry_hash, status=msg.status,
                strength=msg.strength))
        if isinstance(msg, Nack):
            err = error_from_code(msg.code, msg.reason, seq=msg.seq, entry_hash=msg.entry_hash)
            if isinstance(err, NotSequencer):
                # Keep it in the outbox; it goes to the new sequencer on reroute. It is no
                # longer in flight.
                key = self._by_req.get(msg.req)
                pend = self.outbox.get(key) if key else None
                if pend is not None and pend.req == msg.req and pend.sent_to == peer:
                    pend.sent_to = None
                    self._release(msg.req)
                return []
            return self._on_answer(peer, msg.req, msg.channel, err)
        return []

    def _on_answer(self, peer: bytes, req: int, channel: bytes,
                   outcome: PublishResult | P2PWorldError) -> list[Effect]:
        key = self._by_req.get(req)
        pend = self.outbox.get(key) if key else None
        if key is None or pend is None or pend.req != req or pend.sent_to != peer or key[0] != channel:
            return []
        if isinstance(outcome, PublishResult) and pend.want == "replicated" and \
                outcome.strength != "replicated":
            return []  # a local ack; the replicated one follows
        del self.outbox[key]
        self._release(req)
        fx: list[Effect] = [OutboxDone(channel, key[1]), Resolved(req, outcome)]
        old_seq = self._reacks.pop(key, None)
        if old_seq is not None and isinstance(outcome, PublishResult) and \
                pend.sub.sender_key == self.signer.public_key:
            fx.append(Notice(channel, Resequenced(
                f"entry {old_seq}, lost when this node stepped down, is seq {outcome.seq} "
                "of the new epoch", seq=outcome.seq, old_seq=old_seq,
                idem_key=key[1].hex())))
        return fx

    def _on_announce(self, peer: bytes, rec: ChannelRecord, epochs: list[EpochChange],
                     now_ms: int = 0) -> list[Effect]:
        rec.verify()
        if rec.workspace != self.workspace:
            raise WorkspaceMismatch("channel of another workspace")
        # Who sequences it now follows from the signed epoch changes, checked from genesis.
        walk = ChannelState.genesis(rec)
        for ec in epochs:
            walk.check_epoch_change(ec)
            walk.epoch, walk.sequencer_key = ec.epoch, ec.sequencer_key
        fx: list[Effect] = [ChannelKnown(rec)] if self.handoffs.announced(
            rec.channel, peer, epoch=walk.epoch) else []
        own = self.own.get(rec.channel)
        if own is not None and walk.epoch > own.seqr.state.epoch:
            newer = [ec for ec in epochs if ec.epoch > own.seqr.state.epoch]
            return self._step_down(rec.channel, sorted(newer, key=lambda e: e.epoch), now_ms)
        if rec.channel not in self.own and rec.channel not in self.replicas:
            if walk.sequencer_key == self.signer.public_key:
                return []  # we would sequence it but hold nothing: wait for an epoch message
            r = self.replicas[rec.channel] = Replica.create(rec)
            fx += [Persist(record=rec, base=r.state.encode()), ChannelKnown(rec)]
        log = self.log(rec.channel)
        if walk.epoch >= log.state.epoch:
            self.route[rec.channel] = walk.sequencer_key
        target = self.sequencer_of(rec.channel)
        if rec.channel in self.replicas and target in self.peers:
            fx += self._subscribe(rec.channel, target)
            for pend in self._pending_for(rec.channel):
                fx += self._send_pending(pend)
        return fx

    def _on_entries(self, peer: bytes, msg: Entries) -> list[Effect]:
        r = self.replicas.get(msg.head.channel)
        if r is None or self.elections.fenced(r.channel, epoch=msg.head.epoch):
            return []  # not known, or older than an epoch this node voted in (fencing)
        if msg.head.epoch == r.state.epoch:
            self.seen_head[r.channel] = max(self.seen_head.get(r.channel, 0), msg.head.seq)
        if self.read_only is not None:
            # Not taken (it could not be persisted): asked for again when writes resume.
            self.errors[self.read_only.code] = self.errors.get(self.read_only.code, 0) + 1
            return []
        try:
            new = r.receive(list(msg.entries), msg.head, self._mine)
        except (ChainBroken, Fenced) as e:
            # Ask again from what we hold; the batch changed nothing.
            self._count(e.code, peer, r.channel)
            if self.sequencer_of(r.channel) == peer:
                return self._subscribe(r.channel, peer)
            return []
        if not new:
            return []
        ch = r.channel
        head = msg.head if (msg.head.seq, msg.head.head_hash) == (r.seq, r.head_hash) else None
        return [Persist(record=r.record, epochs=tuple(r.state.epochs), entries=tuple(new),
                        head=head),
                Delivered(ch, tuple(new)),
                Send(peer, Stored(ch, r.state.epoch, r.seq, r.head_hash))]

def _no_scopes(msg_type: type[Message], **fields: bytes | str) -> str | None:
    """A hub that checks tokens but was given no message scopes refuses (fail closed)."""
    raise Unauthorized(f"no scope known for {msg_type.TYPE!r}: no p2pworld.core.routes table")


__all__ = ["ChannelHub", "Checkpoint", "PublishResult", "ChannelError", "Effect"]


def _channel_of(msg: Message) -> bytes | None:
    """The channel a message is about, for quarantine (None: none; a submission passes: a
    typed nack answers it as for any channel this node does not hold)."""
    return None if isinstance(msg, Submit) else message_channel(msg)
