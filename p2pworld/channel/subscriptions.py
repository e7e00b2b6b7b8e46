"""Subscriptions: a replica's to its sequencer, and those a sequencer answers; a part of
:class:`~p2pworld.channel.hub.ChannelHub` (a mixin: the state is the hub's).

A replica subscribes with its cursor (``after``, its hash and epoch), relaying the epoch change
that made that node the sequencer in case it missed it. The sequencer first checks the
subscriber's read scope (``channel:read:<id>``, :mod:`p2pworld.core.routes`) and, for a
restricted channel, that it is a participant; then it brings the subscriber to the current
epoch (epoch messages with the entries before each start, bounded), a snapshot if the cursor
is below its floor, and opens its catch-up window. Every refusal is a typed
``SubscribeRefused``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pworld.channel.effects import Notice, Persist, PublishResult
from p2pworld.channel.epochs import EPOCH_CATCHUP_BYTES, MAX_EPOCH_CATCHUP
from p2pworld.effects import Send
from p2pworld.errors import CheckpointMismatch, CheckpointTooOld, NotParticipant, Unauthorized
from p2pworld.log.replica import Replica
from p2pworld.wire import (
    EpochMsg,
    Message,
    SnapshotMsg,
    Stored,
    Subscribe,
    SubscribeRefused,
    Tip,
)

if TYPE_CHECKING:
    from p2pworld.channel.effects import Effect
    from p2pworld.channel.elections import ElectionBook
    from p2pworld.channel.hub import _Own
    from p2pworld.channel.pending import _Waiter
    from p2pworld.identity import Signer
    from p2pworld.log.entry import Entry


class Subscriptions:
    """The subscription methods of the channel hub."""

    if TYPE_CHECKING:  # the hub's state and methods these use
        own: dict[bytes, _Own]
        replicas: dict[bytes, Replica]
        peers: dict[bytes, bytes]
        _dirty: set[bytes]
        elections: ElectionBook
        signer: Signer

        def sequencer_of(self, channel: bytes) -> bytes: ...
        def _answer(self, waiter: _Waiter, res: PublishResult) -> list[Effect]: ...

        def _authorize(self, key: bytes, msg_type: type[Message], now_ms: int, *,
                       grace: bool = False, **fields: bytes | str) -> None: ...
        def _count(self, code: str, peer: bytes, channel: bytes | None = None) -> None: ...

    def _subscribe(self, channel: bytes, peer: bytes) -> list[Effect]:
        """Subscribe this node's replica of ``channel`` to ``peer`` (its sequencer) from the
        replica's cursor."""
        r = self.replicas[channel]
        fx: list[Effect] = []
        st = r.state
        if st.epochs and st.epochs[-1].sequencer_key == self.peers.get(peer):
            # The node we subscribe to may have missed the change that made it the sequencer
            # (it was down or cut off when it was signed). Epoch changes are signed, so anyone
            # can relay them: pass it on, with the entries up to its start that we hold.
            ec = st.epochs[-1]
            before: list[Entry] = []
            size = 0
            for e in reversed(r.entries):
                if e.seq > ec.start_seq:
                    continue
                size += len(e.encoded)
                if len(before) >= MAX_EPOCH_CATCHUP or (before and size > EPOCH_CATCHUP_BYTES):
                    break
                before.append(e)
            fx.append(Send(peer, EpochMsg(ec, tuple(reversed(before)))))
        seq, head = r.pending_head or (r.seq, r.head_hash)
        fx.append(Send(peer, Subscribe(channel, seq, head, st.epoch)))
        return fx

    def _read_refused(self, peer: bytes, channel: bytes, now_ms: int) -> list[Effect]:
        """A subscriber to a channel this node sequences must hold its read scope (valid, or
        expired within the membership grace; never revoked): else the typed refusal it is
        sent, and it gets no entries."""
        if channel not in self.own:
            return []
        try:
            # Reads go on through a control outage: a token that expired within the
            # membership grace still reads (never a revoked one), as sessions are admitted.
            self._authorize(self.peers.get(peer, b""), Subscribe, now_ms, grace=True,
                            channel=channel)
        except Unauthorized as e:
            self._count(e.code, peer, channel)
            return [Send(peer, SubscribeRefused(channel, e.code, e.message[:200]))]
        return []

    def _on_subscribe(self, peer: bytes, msg: Subscribe) -> list[Effect]:
        own = self.own.get(msg.channel)
        if own is None:
            return []
        if own.check is not None:
            own.check.subs.append((peer, msg))  # answered once this log is checked
            return []
        seqr = own.seqr
        st = seqr.state
        if st.restricted and self.peers.get(peer) not in st.participants:
            return [Send(peer, SubscribeRefused(msg.channel, NotParticipant.code, "not a participant"))]
        fx: list[Effect] = []
        after = msg.after
        newer = [ec for ec in st.epochs if ec.epoch > msg.epoch]
        checked = False
        if newer and after > newer[0].start_seq:
            # The subscriber holds old-epoch entries past the change (a recovery cut them):
            # the epoch message makes it truncate them and report the lost ones.
            first = newer.pop(0)
            fx.append(Send(peer, EpochMsg(first, ())))
            after, checked = first.start_seq, True
        if after > seqr.seq:
            return [Send(peer, SubscribeRefused(msg.channel, CheckpointMismatch.code,
                                                "cursor is ahead of the log"))]
        if after < seqr.floor:
            fx.append(Send(peer, SnapshotMsg(msg.channel, seqr.snapshot())))
            after = seqr.floor
        elif not checked and seqr.hash_at(after) != msg.after_hash:
            return [Send(peer, SubscribeRefused(msg.channel, CheckpointMismatch.code,
                                                "cursor hash does not match the log"))]
        for ec in newer:
            if ec.start_seq >= after:
                old = [e for e in seqr.read_bounded(after, count=min(
                    MAX_EPOCH_CATCHUP, ec.start_seq - after), size=EPOCH_CATCHUP_BYTES)]
                fx.append(Send(peer, EpochMsg(ec, tuple(old))))
                if after + len(old) < ec.start_seq:
                    # Part of the way only (bounded): the subscriber holds this part aside
                    # and subscribes again from its end for the next one.
                    return fx
                after = ec.start_seq
        flow = own.subscribe(peer, after)
        if after < seqr.seq:
            fx.append(Send(peer, Tip(msg.channel, st.epoch, seqr.seq)))
            flow.tip = seqr.seq
        self._dirty.add(msg.channel)
        return fx

    def _on_snapshot(self, peer: bytes, msg: SnapshotMsg) -> list[Effect]:
        r = self.replicas.get(msg.channel)
        if r is None or msg.snapshot.seq <= r.seq or self.sequencer_of(msg.channel) != peer:
            return []
        fresh = Replica.from_snapshot(r.record, msg.snapshot)
        self.replicas[msg.channel] = fresh
        st = fresh.state
        return [Persist(record=st.record, epochs=tuple(st.epochs), base=st.encode(),
                        floor=st.seq, truncate_after=0, snapshot=msg.snapshot),
                Notice(msg.channel, CheckpointTooOld(
                    "cursor was older than retention; resumed from a snapshot",
                    snapshot_seq=st.seq))]

    def _on_stored(self, peer: bytes, msg: Stored) -> list[Effect]:
        own = self.own.get(msg.channel)
        key = self.peers.get(peer)
        if own is None or key is None or msg.epoch != own.seqr.state.epoch:
            return []
        flow = own.subscribers.get(peer)
        if flow is not None and msg.seq <= flow.sent:
            # Flow control trusts the subscriber about its own progress (lying only slows it
            # down); replicated acks below need the hash to match.
            flow.stored(msg.seq)
            # Room on this peer's window: every channel it is behind on may send more.
            for ch, o in self.own.items():
                f = o.subscribers.get(peer)
                if f is not None and f.sent < o.seqr.seq:
                    self._dirty.add(ch)
        if own.seqr.hash_at(msg.seq) != msg.head_hash:
            return []
        own.stored[key] = max(own.stored.get(key, 0), msg.seq)
        rseq = self._replicated_seq(own)
        fx: list[Effect] = []
        keep = []
        for waiter, res in own.replicated:
            if res.seq <= rseq:
                fx += self._answer(waiter, PublishResult(
                    channel=res.channel, seq=res.seq, entry_hash=res.entry_hash,
                    status=res.status, strength="replicated"))
            else:
                keep.append((waiter, res))
        own.replicated = keep
        return fx

    def _replicated_seq(self, own: _Own) -> int:
        """Highest seq fsynced by at least k participants besides the sequencer."""
        k = max(1, own.seqr.record.policy.replication)
        st = own.seqr.state
        voters = st.ack_counters()
        counted = sorted((s for key, s in own.stored.items() if key != self.signer.public_key
                          and (st.may_write(key) if voters is None else key in voters)),
                         reverse=True)
        return counted[k - 1] if len(counted) >= k else 0

    def replicated_seq(self, channel: bytes) -> int:
        own = self.own.get(channel)
        return self._replicated_seq(own) if own else 0
