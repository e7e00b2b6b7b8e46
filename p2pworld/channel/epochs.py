"""Epoch changes of a channel, a part of :class:`~p2pworld.channel.hub.ChannelHub` (a mixin:
the state is the hub's).

A channel's sequencer changes only through a signed epoch change: a planned handoff by the
sequencer itself (:meth:`EpochChanges.handoff`), a recovery signed by the channel's authority
key (:meth:`EpochChanges.recover`), or a rollback epoch after its store rolled back. A replica
enters a new epoch from its start (entries the old one held past it are cut and reported,
this node's own writes among them resubmitted with their keys); a sequencer that learns of a
newer epoch steps down (:meth:`EpochChanges._step_down`): it becomes a replica of the new
sequencer, and what it acknowledged past the new start is reported lost or resubmitted
(``docs/guarantees.md``, epochs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pworld.channel.effects import (
    ChannelKnown,
    Delivered,
    Effect,
    Notice,
    OutboxDone,
    OutboxPut,
    Persist,
    PublishResult,
)
from p2pworld.channel.handoffs import Candidate, HandoffBook, choose
from p2pworld.channel.pending import _Pending, _Waiter
from p2pworld.effects import Send
from p2pworld.errors import (
    LocalProtocolError,
    LostWrite,
    NotHandedOff,
    NotSequencer,
    P2PWorldError,
    Unauthorized,
)
from p2pworld.identity import node_id
from p2pworld.log.replica import Replica
from p2pworld.log.state import ChannelState, EpochChange
from p2pworld.wire import EpochMsg

if TYPE_CHECKING:
    from p2pworld.channel.hub import _Own
    from p2pworld.identity import Signer
    from p2pworld.log.entry import Entry, Submission
    from p2pworld.log.sequencer import ChannelLog

MAX_EPOCH_CATCHUP = 4000
EPOCH_CATCHUP_BYTES = 32 << 20
"""Old-epoch entries one ``epoch`` message carries, at most (by count and by bytes)."""


class EpochChanges:
    """The epoch-change methods of the channel hub."""

    if TYPE_CHECKING:  # the hub's state and methods these use
        signer: Signer
        own: dict[bytes, _Own]
        replicas: dict[bytes, Replica]
        route: dict[bytes, bytes]
        peers: dict[bytes, bytes]
        handoffs: HandoffBook
        outbox: dict[tuple[bytes, bytes], _Pending]
        _reacks: dict[tuple[bytes, bytes], int]

        def log(self, channel: bytes) -> ChannelLog: ...
        def state(self, channel: bytes) -> ChannelState: ...
        def sequencer_of(self, channel: bytes) -> bytes: ...
        def flush(self, *, now_ms: int) -> list[Effect]: ...
        def _install(self, st: ChannelState, entries: list[Entry], base: ChannelState
                     ) -> ChannelLog: ...
        def _announce(self, channel: bytes, only: bytes | None = None) -> list[Effect]: ...
        def _answer(self, waiter: _Waiter, res: PublishResult) -> list[Effect]: ...
        def _count(self, code: str, peer: bytes, channel: bytes | None = None) -> None: ...
        def _authorize(self, key: bytes, msg_type: type[EpochMsg], now_ms: int, *,
                       grace: bool = False, **fields: bytes | str) -> None: ...
        def _pending_for(self, channel: bytes) -> list[_Pending]: ...
        def _refuse(self, waiter: _Waiter, channel: bytes, e: P2PWorldError
                    ) -> list[Effect]: ...
        def _release(self, req: int) -> None: ...
        def _send_pending(self, pend: _Pending) -> list[Effect]: ...
        def _submit_local(self, waiter: _Waiter, sub: Submission, now_ms: int
                          ) -> list[Effect]: ...
        def _subscribe(self, channel: bytes, peer: bytes) -> list[Effect]: ...

    def handoff(self, channel: bytes, next_sequencer: bytes, *, now_ms: int,
                reason: str = "handoff") -> tuple[EpochChange, list[Effect]]:
        """Planned handoff: this sequencer signs an epoch change naming the next one
        (``reason="rollback"``: its own new epoch after its store rolled back)."""
        own = self.own.get(channel)
        if own is None:
            raise NotSequencer("only the current sequencer can hand a channel off")
        fx = self.flush(now_ms=now_ms)
        ec = own.seqr.handoff(next_sequencer, reason=reason)
        seqr = own.seqr
        subscribers = dict(own.subscribers)
        st = seqr.state
        st.apply_epoch(ec)
        self._install(st, list(seqr.entries), seqr.base or st.copy())
        fx.append(Persist(record=st.record, epochs=tuple(st.epochs)))
        for pid in sorted(self.peers):
            flow = subscribers.get(pid)
            fx.append(Send(pid, EpochMsg(ec, tuple(seqr.read_bounded(
                max(flow.sent if flow else 0, seqr.floor), count=MAX_EPOCH_CATCHUP,
                size=EPOCH_CATCHUP_BYTES)))))
        fx += self._reroute(channel)
        return ec, fx

    def hand_off_all(self, *, now_ms: int, timeout_ms: int | None = None,
                     seek: bool = False) -> list[Effect]:
        """This node leaves: hand every open channel it sequences to a live replica
        (:mod:`p2pworld.channel.handoffs`); a channel it cannot hand off gets a
        :class:`NotHandedOff` notice now, one not confirmed in time at :meth:`expire_handoffs`.
        Called again (``seek``) for a channel handed to this node while it leaves: never back
        to the node that just handed it here (it is leaving too), and, with no replica yet,
        tried again until its bound. ``timeout_ms``: the bound of each (None: the one given
        first, else ``handoffs.HANDOFF_TIMEOUT_MS``)."""
        book = self.handoffs
        if timeout_ms is not None and not book.started:
            book.timeout_ms = timeout_ms
        book.started = True
        fx: list[Effect] = []
        for ch in sorted(self.own):
            seqr = self.own[ch].seqr
            st = seqr.state
            if st.closed or ch in book.pending or ch in book.handed or ch in book.not_handed:
                continue
            last = st.epochs[-1] if st.epochs else None
            gave = last.signer_key if last is not None and last.reason == "handoff" else None
            if book.timeout_ms <= 0:
                fx += self._not_handed(ch, "handoff is off (NodeConfig.handoff_timeout_s=0)")
                continue
            target = choose([c for c in self._handoff_candidates(ch) if c.key != gave],
                            restricted=st.restricted, participants=st.participants)
            if target is None:
                if not ((seek or ch in book.seeking) and book.seek(ch, now_ms=now_ms)):
                    fx += self._not_handed(ch, "no live replica to hand it to")
                continue
            try:
                ec, more = self.handoff(ch, target.key, now_ms=now_ms)
            except P2PWorldError as e:
                fx += self._not_handed(ch, e.message)
                continue
            fx += more
            book.start(ch, target.peer, epoch=ec.epoch, now_ms=now_ms,
                       timeout_ms=book.timeout_ms)
        return fx

    def _hand_on(self, channel: bytes, now_ms: int) -> list[Effect]:
        """A channel handed to this node while it leaves is handed on (not kept)."""
        if self.handoffs.started and channel in self.own:
            return self.hand_off_all(now_ms=now_ms, seek=True)
        return []

    def expire_handoffs(self, *, now_ms: int) -> list[Effect]:
        """The handoffs not confirmed in time: a :class:`NotHandedOff` notice for each."""
        book = self.handoffs
        fx: list[Effect] = []
        for ch in book.expire(now_ms=now_ms):
            fx += self._not_handed(ch, book.not_handed[ch], refuse=False)
        if book.seeking and now_ms >= book.next_try_ms:
            fx += self.hand_off_all(now_ms=now_ms, seek=True)
        return fx

    def _handoff_candidates(self, channel: bytes) -> list[Candidate]:
        """The live subscribers the channel's epoch message brings to its head (one further
        behind could not sequence from where it stands)."""
        own = self.own[channel]
        seqr = own.seqr
        out = []
        for pid, flow in sorted(own.subscribers.items()):
            key = self.peers.get(pid)
            if key is None:
                continue
            after = max(flow.sent, seqr.floor)
            catch_up = seqr.read_bounded(after, count=MAX_EPOCH_CATCHUP,
                                         size=EPOCH_CATCHUP_BYTES)
            if after + len(catch_up) >= seqr.seq:
                out.append(Candidate(peer=pid, key=key, stored=flow.acked, sent=flow.sent))
        return out

    def _not_handed(self, channel: bytes, why: str, *, refuse: bool = True) -> list[Effect]:
        if refuse:
            self.handoffs.refuse(channel, why)
        return [Notice(channel, NotHandedOff(f"channel not handed off: {why}", reason=why)),
                ChannelKnown(self.log(channel).record)]

    def recover(self, channel: bytes, authority: Signer, new_sequencer: bytes, *,
                now_ms: int) -> tuple[EpochChange, list[Effect]]:
        """Unplanned handoff (or fork recovery), signed by the channel's authority key.

        The new epoch starts at this node's head: run it on a node that holds every
        ``replicated`` ack (it is one of the k replicas). ``local`` acks past this head are
        reported to their writers as lost (:class:`LostWrite`)."""
        log = self.log(channel)
        st = log.state
        if authority.public_key != st.record.authority_key:
            raise LocalProtocolError("this key is not the channel's authority")
        ec = EpochChange.create(authority, channel=channel, epoch=st.epoch + 1,
                                sequencer_key=new_sequencer, start_seq=log.seq,
                                start_hash=log.head_hash, reason="recovery")
        fx = self._enter_epoch(None, ec, [])
        for pid in sorted(self.peers):
            fx.append(Send(pid, EpochMsg(ec, ())))
        return ec, fx

    def _enter_epoch(self, peer: bytes | None, ec: EpochChange, entries: list[Entry]
                     ) -> list[Effect]:
        ch = ec.channel
        log = self.log(ch)
        if ec.epoch <= log.state.epoch:
            return []
        assert isinstance(log, Replica)  # a sequencer steps down instead (_step_down)
        before = log.seq
        old_key = log.state.sequencer_key
        lost = log.receive_epoch(ec, entries)
        if log.pending_head is not None:
            # The catch-up came in part (it is bounded by bytes): ask the new sequencer for
            # the rest, from where the part ends.
            target = node_id(ec.sequencer_key)
            return self._subscribe(ch, target) if target in self.peers else []
        st = log.state
        fx: list[Effect] = []
        new = tuple(e for e in log.entries if e.seq > before)
        fx.append(Persist(record=st.record, epochs=tuple(st.epochs), entries=new,
                          truncate_after=ec.start_seq if lost else None))
        if new:
            fx.append(Delivered(ch, new))
        for e in lost:
            if e.sender_key == self.signer.public_key:
                # This node's own write, acknowledged and then cut: LostWrite now, resubmitted
                # with its key to the new sequencer, RESEQUENCED with the new seq later.
                fx += self._requeue(ch, e.submission(), None, e.seq)
        old_seq = node_id(old_key) if old_key != ec.sequencer_key else None
        if old_seq is not None and old_seq in self.peers and old_seq != peer:
            # The node that sequenced the old epoch may not know it was superseded (it was
            # cut off from the new sequencer, not from us): tell it, so it steps down.
            fx.append(Send(old_seq, EpochMsg(ec, ())))
        if ec.sequencer_key == self.signer.public_key:
            self._install(st, list(log.entries), log.base or st.copy())
            fx += self._announce(ch)
        fx += self._reroute(ch)
        return fx

    def _reroute(self, channel: bytes) -> list[Effect]:
        """After an epoch change: subscribe to the new sequencer and resend our outbox."""
        self.route[channel] = self.state(channel).sequencer_key
        fx: list[Effect] = []
        if channel in self.own:
            for key, pend in sorted(self.outbox.items()):
                if key[0] == channel:
                    del self.outbox[key]
                    if pend.req is not None:
                        self._release(pend.req)
                    fx.append(OutboxDone(channel, pend.sub.idem_key))
                    fx += self._submit_local(_Waiter(pend.req or 0, None, want=pend.want),
                                             pend.sub, 0)
            return fx
        target = self.sequencer_of(channel)
        if target in self.peers:
            fx += self._subscribe(channel, target)
        for pend in self._pending_for(channel):
            fx += self._send_pending(pend)
        return fx

    def _newer_epochs(self, channel: bytes, epochs: list[EpochChange]) -> list[EpochChange]:
        """The epoch changes past this node's epoch of ``channel``, if ``epochs`` is a valid
        chain from the genesis record (any valid epoch-change proof); else none."""
        st = self.state(channel)
        walk = ChannelState.genesis(st.record)
        try:
            for ec in sorted(epochs, key=lambda e: e.epoch):
                walk.check_epoch_change(ec)
                walk.epoch, walk.sequencer_key = ec.epoch, ec.sequencer_key
            newer = [ec for ec in sorted(epochs, key=lambda e: e.epoch) if ec.epoch > st.epoch]
            log = self.log(channel)
            first = newer[0] if newer else None
            if first is not None and first.reason == "election" and \
                    log.floor <= first.start_seq <= log.seq and \
                    first.voters != log.voters_at(first.start_seq):
                raise Unauthorized("the election's voter set is not the channel's at its start")
        except P2PWorldError as e:
            self._count(e.code, b"", channel)
            return []
        return newer

    def _step_down(self, channel: bytes, newer: list[EpochChange], now_ms: int
                   ) -> list[Effect]:
        """A newer epoch exists (an unplanned recovery while this node was away): stop
        sequencing and become a replica. What this node appended after the new epoch's start
        is not in the new epoch: every such entry goes back into the outbox and is resubmitted
        with its own key to the new sequencer; a writer here that already held an ack for it
        gets ``LostWrite`` now and a ``RESEQUENCED`` notice with the new seq later; publishes
        still waiting are answered by the new sequencer; remote writers still waiting get
        ``NOT_SEQUENCER`` and resubmit from their outboxes. Raises ``Unauthorized`` (and
        changes nothing) if the newest sequencer's token does not cover ``channel:open``."""
        # The sequencer it would follow must hold the scope a replica checks before it
        # follows a new epoch (an Unauthorized refusal: nothing changes here).
        self._authorize(newer[-1].sequencer_key, EpochMsg, now_ms, channel=channel)
        own = self.own[channel]
        seqr = own.seqr
        first = newer[0]
        # Where the first newer epoch starts on the history held here, everything after
        # that start is not in it. Otherwise (a chain with epochs left out, or one that
        # starts past this head) this node still stops sequencing at once and becomes a
        # replica as it is; the new sequencer's catch-up brings the missing epoch changes
        # and truncates what they cut (own entries are then resubmitted, as below).
        on_history = first.start_seq <= seqr.seq and \
            seqr.hash_at(first.start_seq) == first.start_hash
        del self.own[channel]
        unsynced = seqr.take_unsynced()
        waiting: dict[int, list[_Waiter]] = {}
        for waiter, res in own.acks + own.replicated:
            waiting.setdefault(res.seq, []).append(waiter)
        unwritten = {e.seq for e in unsynced}
        held = own.check.held if own.check is not None else []
        start = first.start_seq if on_history else seqr.seq
        lost = seqr.truncate(start) if seqr.seq > start else []
        st = seqr.state
        for ec in newer if on_history else []:
            if (st.seq, st.head_hash) != (ec.start_seq, ec.start_hash):
                break  # further epochs arrive with the new sequencer's catch-up
            try:
                st.apply_epoch(ec)
            except Unauthorized:
                break  # a later election's voter set is checked again on the catch-up
        base = seqr.base or st.copy()
        if st.sequencer_key == self.signer.public_key:
            # The epoch in force here still names this node: a replica all the same (it
            # knows it is superseded), routed to the newest sequencer.
            self.own.pop(channel, None)
            self.replicas[channel] = Replica(st, list(seqr.entries), base)
        else:
            self._install(st, list(seqr.entries), base)
        self.route[channel] = newer[-1].sequencer_key
        kept = tuple(e for e in unsynced if e.seq <= start)
        fx: list[Effect] = [Persist(record=st.record, epochs=tuple(st.epochs), entries=kept,
                                    truncate_after=start if lost else None)]
        if kept:
            fx.append(Delivered(channel, kept))
        fx.append(Notice(channel, NotSequencer(
            f"a newer epoch ({newer[-1].epoch}) exists: this node stepped down as the "
            f"sequencer; entries after seq {start} are resubmitted to the new one",
            epoch=newer[-1].epoch, start=start, resubmitted=len(lost))))
        for seq, ws in sorted(waiting.items()):
            if seq > start:
                continue
            # The entry is in the new epoch too: a local ack stands; a replicated one is
            # asked of the new sequencer (same key: it answers with this seq).
            kept_entry = seqr.entry(seq)
            for w in ws:
                if w.want == "local":
                    fx += self._answer(w, PublishResult(
                        channel=channel, seq=seq, entry_hash=seqr.hash_at(seq) or bytes(32),
                        status="appended", strength="local"))
                elif kept_entry is not None:
                    fx += self._requeue(channel, kept_entry.submission(), w, None)
                else:
                    fx += self._refuse(w, channel, NotSequencer("this node stepped down"))
        for e in lost:
            holders: list[_Waiter | None] = [*waiting.get(e.seq, [])] or [None]
            if holders != [None] and e.seq not in unwritten:
                # Committed, so a local publish of it (a retry among them) may hold an ack
                # while a replicated one still waits: told, at worst once too often.
                fx += self._lost_notice(channel, e.submission(), e.seq)
            for holder in holders:
                fx += self._requeue(channel, e.submission(), holder,
                                    e.seq if holder is None else None)
        for waiter, sub in held:
            fx += self._requeue(channel, sub, waiter, None)
        fx += self._reroute(channel)
        return fx

    def _lost_notice(self, channel: bytes, sub: Submission, seq: int) -> list[Effect]:
        """Acknowledged here at ``seq`` before this node learnt it was superseded: remember
        it (``RESEQUENCED`` later) and tell this node's writer (``LostWrite``)."""
        self._reacks[(channel, sub.idem_key)] = seq
        if sub.sender_key != self.signer.public_key:
            return []
        return [Notice(channel, LostWrite(
            f"entry {seq} was acknowledged by this node after a newer epoch began; "
            "it is resubmitted with the same key", seq=seq,
            idem_key=sub.idem_key.hex(), resubmitted=True))]

    def _requeue(self, channel: bytes, sub: Submission, waiter: _Waiter | None,
                 seq: int | None) -> list[Effect]:
        """Put a submission this node can no longer sequence into the outbox for the new
        sequencer (same key); tell whoever held an ack for it."""
        if waiter is not None and waiter.peer is not None:
            return self._refuse(waiter, channel, NotSequencer("this node stepped down"))
        key = (channel, sub.idem_key)
        # Acknowledged at ``seq`` and cut: told even when a retry of it is queued already.
        fx = self._lost_notice(channel, sub, seq) if waiter is None and seq is not None else []
        if key in self.outbox:
            return fx
        want = waiter.want if waiter is not None else "local"
        self.outbox[key] = _Pending(sub, want, waiter.req if waiter is not None else None)
        fx.append(OutboxPut(sub, want))
        return fx
