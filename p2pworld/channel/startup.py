"""The start-up exchange of a channel loaded from disk, a part of
:class:`~p2pworld.channel.hub.ChannelHub` (a mixin: the state is the hub's).

A sequencer whose store may have rolled back (an old copy restored) asks its peers for their
heads before it issues a seq; it takes back from a replica what the replica holds, reports
what nobody could give back as ``LOST_WRITE`` and starts a ``rollback`` epoch for it, and ends
the exchange once every peer asked has answered, or at its bound (``docs/protocol.md``, the
start-up exchange).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pworld.channel.effects import Effect, Notice
from p2pworld.effects import Send
from p2pworld.errors import Forked, LostWrite, P2PWorldError, RollbackUnchecked, RolledBack
from p2pworld.log.replica import Replica
from p2pworld.wire import MAX_RESTORE, HeadQuery, HeadReport, Restore, RestoreRequest

if TYPE_CHECKING:
    from p2pworld.channel.hub import _Own
    from p2pworld.channel.pending import _Waiter
    from p2pworld.identity import Signer
    from p2pworld.log.entry import Submission
    from p2pworld.log.sequencer import ChannelLog, Sequencer
    from p2pworld.log.state import EpochChange
    from p2pworld.wire import Subscribe

RESTORE_BYTES = 24 << 20
"""Most entry bytes one ``Restore`` carries (a larger rollback is reported lost)."""


class StartupExchange:
    """The start-up exchange's methods of the channel hub."""

    if TYPE_CHECKING:  # the hub's state and methods these use
        signer: Signer
        own: dict[bytes, _Own]
        replicas: dict[bytes, Replica]
        peers: dict[bytes, bytes]
        startup_check_ms: int
        _dirty: set[bytes]

        def log(self, channel: bytes) -> ChannelLog: ...
        def handoff(self, channel: bytes, next_sequencer: bytes, *, now_ms: int,
                    reason: str = "handoff") -> tuple[EpochChange, list[Effect]]: ...
        def _count(self, code: str, peer: bytes, channel: bytes | None = None) -> None: ...
        def _newer_epochs(self, channel: bytes, epochs: list[EpochChange]
                          ) -> list[EpochChange]: ...
        def _step_down(self, channel: bytes, newer: list[EpochChange], now_ms: int
                       ) -> list[Effect]: ...
        def _on_subscribe(self, peer: bytes, msg: Subscribe) -> list[Effect]: ...
        def _submit_local(self, waiter: _Waiter, sub: Submission, now_ms: int
                          ) -> list[Effect]: ...

    # --- the start-up exchange --------------------------------------------------------------

    def tick(self, *, now_ms: int) -> list[Effect]:
        """Timers: the start-up exchange of channels loaded from disk (its bound starts at
        the first tick after loading)."""
        fx: list[Effect] = []
        for ch, own in sorted(self.own.items()):
            if own.check is None:
                continue
            if own.check.deadline is None:
                own.check.deadline = now_ms + self.startup_check_ms
            fx += self._ask_heads(ch)
            fx += self._check_progress(ch, now_ms)
        return fx

    def wake_at(self) -> int | None:
        """When :meth:`tick` next has something to do: a start-up exchange to begin (at once)
        or to end at its bound (None: none is running)."""
        best = None
        for o in self.own.values():
            if o.check is not None:
                d = 0 if o.check.deadline is None else o.check.deadline
                if best is None or d < best:
                    best = d
        return best

    def clock_went_back(self, by_ms: int) -> None:
        """This node's clock was set back by ``by_ms``: the start-up exchanges' bounds move
        with it."""
        for o in self.own.values():
            if o.check is not None and o.check.deadline is not None:
                o.check.deadline -= by_ms

    def checking(self, channel: bytes) -> bool:
        """Is ``channel`` still in its start-up exchange (nothing acknowledged yet)?"""
        own = self.own.get(channel)
        return own is not None and own.check is not None

    def _ask_heads(self, channel: bytes) -> list[Effect]:
        own = self.own[channel]
        c = own.check
        if c is None:
            return []
        st = own.seqr.state
        fx: list[Effect] = []
        for pid, key in sorted(self.peers.items()):
            if pid in c.asked or (st.restricted and key not in st.participants):
                continue
            c.asked.add(pid)
            fx.append(Send(pid, HeadQuery(channel)))
        return fx

    def _head_report(self, peer: bytes, channel: bytes) -> HeadReport:
        """What this node holds of ``channel``, for the sequencer asking (nothing, to a
        non-participant of a restricted channel)."""
        try:
            log = self.log(channel)
        except P2PWorldError:
            return HeadReport(channel, 1, 0, bytes(32))
        st = log.state
        if st.restricted and self.peers.get(peer) not in st.participants:
            return HeadReport(channel, 1, 0, bytes(32))
        signed = log.signed_head if isinstance(log, Replica) else None
        if signed is not None and (signed.seq, signed.head_hash, signed.epoch) != (
                log.seq, log.head_hash, st.epoch):
            signed = None
        return HeadReport(channel, st.epoch, log.seq, log.head_hash, tuple(st.epochs), signed)

    def _on_head_report(self, peer: bytes, msg: HeadReport, now_ms: int) -> list[Effect]:
        own = self.own.get(msg.channel)
        if own is None:
            return []
        if msg.epoch > own.seqr.state.epoch:
            newer = self._newer_epochs(msg.channel, list(msg.epochs))
            if newer:
                return self._step_down(msg.channel, newer, now_ms)
        seqr = own.seqr
        if own.check is None and msg.epoch == seqr.state.epoch and self._proven(seqr, msg) \
                and (msg.seq > seqr.seq or seqr.hash_at(msg.seq) not in (msg.head_hash, None)):
            # A head this sequencer signed that its log no longer holds: its store rolled back
            # while no peer could be asked (ROLLBACK_UNCHECKED), and it may have issued those
            # seqs again. Never silent; repairing it takes a recovery epoch.
            err = Forked("a replica holds a head this sequencer signed that its own log no "
                         "longer holds: its store rolled back unchecked",
                         channel=msg.channel.hex(), seq=msg.seq, held=seqr.seq)
            self._count(err.code, peer, msg.channel)
            return [Notice(msg.channel, err)]
        if own.check is None or peer not in own.check.asked:
            return []
        if msg.epoch == seqr.state.epoch and msg.seq > seqr.seq and not self._proven(
                seqr, msg):
            # A claim to be ahead without this sequencer's own signature over that head:
            # counted as an answer, never as evidence (a hostile peer cannot make it restore,
            # start a new epoch or report writes lost).
            self._count("UNPROVEN_HEAD", peer, msg.channel)
            msg = HeadReport(msg.channel, msg.epoch, 0, bytes(32))
        own.check.reports[peer] = msg
        return self._check_progress(msg.channel, now_ms)

    def _proven(self, seqr: Sequencer, msg: HeadReport) -> bool:
        """Is ``msg``'s head signed by this sequencer, in its epoch?"""
        h = msg.signed
        if h is None or (h.channel, h.epoch, h.seq, h.head_hash) != (
                msg.channel, msg.epoch, msg.seq, msg.head_hash):
            return False
        try:
            h.verify(self.signer.public_key)
        except P2PWorldError:
            return False
        return True

    def _check_progress(self, channel: bytes, now_ms: int) -> list[Effect]:
        """Go on with the exchange: restore from the peer furthest ahead in this epoch, then
        end it once every peer asked has answered (at least one), or at the bound."""
        own = self.own[channel]
        c = own.check
        if c is None:
            return []
        past = c.deadline is not None and now_ms >= c.deadline
        if c.restoring is not None:
            if not past:
                return []
            # The peer asked for the entries never answered: the bound ends the exchange.
            self._count("RESTORE_TIMEOUT", c.restoring, channel)
            c.restoring = None
            return self._end_check(channel, now_ms)
        seqr = own.seqr
        ahead = sorted(((r.seq, p) for p, r in c.reports.items()
                        if r.epoch == seqr.state.epoch and r.seq > seqr.seq
                        and p not in c.tried and p in self.peers), reverse=True)
        if ahead:
            _, p = ahead[0]
            c.restoring = p
            c.tried.add(p)
            if not c.restored:
                c.from_seq = seqr.seq
            return [Send(p, RestoreRequest(channel, seqr.seq, seqr.head_hash))]
        waiting = c.asked - set(c.reports)
        if (c.reports and not waiting) or past:
            return self._end_check(channel, now_ms)
        return []

    def _restore_for(self, peer: bytes, msg: RestoreRequest) -> Restore:
        """Entries after ``msg.after`` up to our signed head, for the channel's own sequencer
        (whose store rolled back); an empty answer if we cannot."""
        r = self.replicas.get(msg.channel)
        nothing = Restore(msg.channel)
        if r is None or self.peers.get(peer) != r.state.sequencer_key:
            return nothing
        h = r.signed_head
        if h is None or (h.seq, h.head_hash, h.epoch) != (r.seq, r.head_hash, r.state.epoch):
            return nothing
        if msg.after < r.floor or r.hash_at(msg.after) != msg.after_hash:
            return nothing
        ents = r.read(msg.after, MAX_RESTORE + 1)
        if not ents or len(ents) > MAX_RESTORE or \
                sum(len(e.encoded) for e in ents) > RESTORE_BYTES:
            return nothing
        return Restore(msg.channel, tuple(ents), h)

    def _on_restore(self, peer: bytes, msg: Restore, now_ms: int) -> list[Effect]:
        own = self.own.get(msg.channel)
        if own is None or own.check is None or own.check.restoring != peer:
            return []
        c = own.check
        c.restoring = None
        if msg.head is not None and msg.entries:
            try:
                c.restored += own.seqr.restore(list(msg.entries), msg.head)
                self._dirty.add(msg.channel)
            except P2PWorldError as e:
                self._count(e.code, peer, msg.channel)
        return self._check_progress(msg.channel, now_ms)

    def _end_check(self, channel: bytes, now_ms: int) -> list[Effect]:
        """The exchange is over: say what it found, make sure no seq a peer saw is issued
        again in this epoch, then answer what was held."""
        own = self.own[channel]
        c = own.check
        assert c is not None
        own.check = None
        seqr = own.seqr
        fx: list[Effect] = []
        if c.restored:
            fx.append(Notice(channel, RolledBack(
                f"this node's store had rolled back to seq {c.from_seq}; {c.restored} "
                "entries were taken back from a replica", from_seq=c.from_seq,
                restored=c.restored)))
        best = max((r.seq for r in c.reports.values() if r.epoch == seqr.state.epoch),
                   default=0)
        if best > seqr.seq:
            fx.append(Notice(channel, LostWrite(
                f"entries {seqr.seq + 1}..{best} were acknowledged before this node's store "
                "rolled back and no reachable replica holds them", seq=seqr.seq + 1,
                last=best)))
            if not seqr.state.closed:
                # A new epoch at the head we hold: those seqs are never issued again in the
                # epoch a peer saw them in (peers holding them truncate and tell writers).
                fx += self.handoff(channel, self.signer.public_key, now_ms=now_ms,
                                   reason="rollback")[1]
                own = self.own[channel]
        if not c.reports:
            fx.append(Notice(channel, RollbackUnchecked(
                f"no peer answered within {self.startup_check_ms} ms: a rollback of this "
                "node's store could not be checked", bound_ms=self.startup_check_ms)))
        for peer, sub in c.subs:
            if peer in self.peers:
                fx += self._on_subscribe(peer, sub)
        for waiter, s in c.held:
            fx += self._submit_local(waiter, s, now_ms)
        self._dirty.add(channel)
        return fx

