"""The sequencer core: the one writer of a channel's log in an epoch.

Pure state machine. ``submit`` places a verified writer submission at the next ``seq`` (strictly
monotonic, gapless) or answers from the idempotency index; nothing is persisted here: the
caller takes :meth:`Sequencer.take_unsynced`, makes it durable, and only then releases the
acks (``docs/guarantees.md``: an ack never leaves before its entry is on disk).

Idempotency keys are scoped to ``(channel, sender)`` and remembered for the whole log, also
past retention (the index is part of the state and of every snapshot):

* same key, same payload → the original ``seq`` with status ``duplicate``;
* same key, different payload → :class:`~p2pworld.errors.Conflict` carrying the original
  ``seq`` and entry hash. Nothing is overwritten.

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> from p2pworld.log.entry import ChannelRecord, Submission
    >>> owner = Ed25519Signer(bytes(32))
    >>> rec = ChannelRecord.create(owner, workspace="w", name="general", created_at=0)
    >>> seqr = Sequencer.create(rec, owner)
    >>> sub = Submission.create(owner, channel=rec.channel, idem_key=b"a", payload=b"hi")
    >>> seqr.submit(sub, now_ms=0).seq, seqr.submit(sub, now_ms=1).status
    (1, 'duplicate')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pworld.errors import (
    ChainBroken,
    ChannelClosed,
    Conflict,
    InvalidSignature,
    LocalProtocolError,
    NotSequencer,
    P2PWorldError,
)
from p2pworld.identity import Signer
from p2pworld.log.entry import ChannelRecord, Entry, SignedHead, Submission, hash_bytes
from p2pworld.log.state import ChannelState, EpochChange, Snapshot


@dataclass(frozen=True, kw_only=True)
class SubmitOutcome:
    """``appended`` (a new entry) or ``duplicate`` (the original entry of this key)."""

    status: str
    seq: int
    entry_hash: bytes
    entry: Entry | None


class ChannelLog:
    """A channel's state plus the entries it still holds (``floor+1 .. seq``).

    ``base`` is the state at ``floor``: what a snapshot for a too-old cursor is made from.
    Shared by the sequencer and by replicas.
    """

    def __init__(self, state: ChannelState, entries: list[Entry] | None = None,
                 base: ChannelState | None = None) -> None:
        self.state = state
        self.entries: list[Entry] = list(entries or [])
        self.base = base if base is not None else state.copy() if not entries else None
        if self.base is None:
            raise LocalProtocolError("a log with entries needs the state at its floor")

    @property
    def record(self) -> ChannelRecord:
        return self.state.record

    @property
    def channel(self) -> bytes:
        return self.state.channel

    @property
    def seq(self) -> int:
        return self.state.seq

    @property
    def floor(self) -> int:
        return self.state.floor

    @property
    def head_hash(self) -> bytes:
        return self.state.head_hash

    def entry(self, seq: int) -> Entry | None:
        i = seq - self.floor - 1
        return self.entries[i] if 0 <= i < len(self.entries) else None

    def hash_at(self, seq: int) -> bytes | None:
        """The entry hash at ``seq`` (the genesis hash at 0), if still known."""
        if seq == self.seq:
            return self.head_hash
        if seq == self.floor:
            return self.base.head_hash if self.base else None
        e = self.entry(seq)
        return e.hash if e else None

    def read(self, after: int, limit: int) -> list[Entry]:
        """Entries with ``seq > after`` (at most ``limit``); ``after`` must be >= floor."""
        if after < self.floor:
            raise LocalProtocolError("cursor is below the retention floor")
        start = after - self.floor
        return self.entries[start: start + limit]

    def read_bounded(self, after: int, *, count: int, size: int) -> list[Entry]:
        """Like :meth:`read`, also bounded by ``size`` bytes of encoded entries; the first
        entry is always included, whatever its size, so a batch always makes progress."""
        out: list[Entry] = []
        total = 0
        for e in self.read(after, count):
            n = len(e.encoded)
            if out and total + n > size:
                break
            out.append(e)
            total += n
        return out

    def append(self, entry: Entry) -> None:
        self.state.apply(entry)
        self.entries.append(entry)

    def compact(self) -> int:
        """Apply the retention policy; returns how many entries were dropped."""
        keep = self.record.policy.retention
        if not keep or len(self.entries) <= 2 * keep:
            return 0
        drop = len(self.entries) - keep
        assert self.base is not None
        base = self.base.copy()
        base.replay(self.entries[:drop], self.state.epochs)
        self.base = base
        self.entries = self.entries[drop:]
        self.state.floor = self.base.seq
        self.base.floor = self.base.seq
        return drop

    def voters_at(self, seq: int) -> tuple[bytes, ...]:
        """The voter set folded at ``seq`` (at most the head, at least the floor): the
        state's own unless a control entry after ``seq`` may have changed it."""
        if not self.floor <= seq <= self.seq:
            raise LocalProtocolError("no such prefix")
        if all(e.kind != "ctl" for e in self.entries[seq - self.floor:]):
            return self.state.voters
        assert self.base is not None
        st = self.base.copy()
        st.replay(self.entries[: seq - self.floor], self.state.epochs)
        return st.voters

    def truncate(self, seq: int) -> list[Entry]:
        """Drop entries after ``seq`` (a recovery epoch starts before them); returns them.
        The state is rebuilt from ``base``; the caller reports the lost entries."""
        if seq < self.floor:
            raise LocalProtocolError("cannot truncate below the retention floor")
        lost = self.entries[seq - self.floor:]
        kept = self.entries[: seq - self.floor]
        assert self.base is not None
        st = self.base.copy()
        st.replay(kept, self.state.epochs)
        st.floor = self.state.floor
        self.state, self.entries = st, kept
        return lost


class Sequencer(ChannelLog):
    """Assigns ``seq`` for one channel in the current epoch."""

    def __init__(self, state: ChannelState, signer: Signer, entries: list[Entry] | None = None,
                 base: ChannelState | None = None) -> None:
        super().__init__(state, entries, base)
        if signer.public_key != state.sequencer_key:
            raise NotSequencer("this signer is not the channel's sequencer")
        self._signer = signer
        self._unsynced: list[Entry] = []
        self._signed_head: SignedHead | None = None
        self.handed_off = False

    @classmethod
    def create(cls, record: ChannelRecord, signer: Signer) -> Sequencer:
        return cls(ChannelState.genesis(record), signer)

    def submit(self, sub: Submission, *, now_ms: int,
               validate: Callable[[Submission], None] | None = None) -> SubmitOutcome:
        """Sequence one submission, or answer it from the idempotency index. ``validate``
        (an application rule, e.g. compute assignment) runs after the idempotency check and
        the signature check, before anything is appended; it may raise to refuse."""
        if sub.channel != self.channel:
            raise LocalProtocolError("submission is for another channel")
        if self.handed_off:
            raise NotSequencer("this node handed the channel off")
        known = self.state.idem.get((sub.sender_key, sub.idem_key))
        if known is not None:
            if known.payload_hash == hash_bytes(sub.payload):
                return SubmitOutcome(status="duplicate", seq=known.seq,
                                     entry_hash=known.entry_hash, entry=self.entry(known.seq))
            raise Conflict("idempotency key reused with a different payload",
                           seq=known.seq, entry_hash=known.entry_hash)
        self.state.check_submission(sub)
        sub.verify()
        if validate is not None:
            validate(sub)
        # The timestamp is informational but never goes backwards (or below zero), whatever
        # the sequencer's clock does.
        last = self.entries[-1].sequencer_time if self.entries else 0
        entry = Entry(
            channel=sub.channel, epoch=self.state.epoch, seq=self.seq + 1,
            prev_hash=self.head_hash, sender_key=sub.sender_key, sender_sig=sub.signature,
            idem_key=sub.idem_key, payload=sub.payload, sequencer_time=max(now_ms, last, 0),
            kind=sub.kind, sender_proof=sub.proof,
        )
        self.append(entry)
        self._unsynced.append(entry)
        return SubmitOutcome(status="appended", seq=entry.seq, entry_hash=self.head_hash,
                             entry=entry)

    def restore(self, entries: list[Entry], head: SignedHead) -> int:
        """Take back entries this sequencer appended before its store rolled back, from a
        replica that holds them: they must extend this log's head in its epoch, and ``head``,
        this sequencer's own signature, must cover the last one. All or nothing; returns how
        many were taken (they are persisted like new appends, via :meth:`take_unsynced`)."""
        if not entries:
            return 0
        if head.channel != self.channel or head.epoch != self.state.epoch:
            raise ChainBroken("restore: a head of another channel or epoch")
        try:
            head.verify(self._signer.public_key)
        except InvalidSignature:
            raise ChainBroken("restore: the head is not this sequencer's") from None
        trial = self.state.copy()
        for e in entries:
            if e.channel != self.channel or e.epoch != trial.epoch:
                raise ChainBroken("restore: an entry of another channel or epoch", seq=e.seq)
            if e.seq != trial.seq + 1 or e.prev_hash != trial.head_hash:
                raise ChainBroken("restore: entries do not extend the head", seq=e.seq)
            sub = e.submission()
            try:
                sub.verify()
                trial.check_submission(sub)
            except P2PWorldError as err:
                raise ChainBroken(f"restore: entry {e.seq} is invalid: {err.code}") from None
            trial.apply(e)
        if (trial.seq, trial.head_hash) != (head.seq, head.head_hash):
            raise ChainBroken("restore: the signed head does not cover these entries")
        self.state = trial
        self.entries.extend(entries)
        self._unsynced.extend(entries)
        return len(entries)

    def take_unsynced(self) -> list[Entry]:
        """Entries appended since the last call: the caller persists them before acking."""
        out, self._unsynced = self._unsynced, []
        return out

    def signed_head(self) -> SignedHead:
        """The current head, signed once per distinct head (so once per batch)."""
        h = self._signed_head
        if h is None or h.seq != self.seq or h.epoch != self.state.epoch:
            h = SignedHead.create(self._signer, channel=self.channel, epoch=self.state.epoch,
                                  seq=self.seq, head_hash=self.head_hash)
            self._signed_head = h
        return h

    def signed_head_at(self, seq: int) -> SignedHead:
        """A signed head for a prefix (catch-up batches); the current head is cached."""
        if seq == self.seq:
            return self.signed_head()
        h = self.hash_at(seq)
        if h is None or seq <= 0:
            raise LocalProtocolError("no such prefix")
        return SignedHead.create(self._signer, channel=self.channel, epoch=self.state.epoch,
                                 seq=seq, head_hash=h)

    def snapshot(self) -> Snapshot:
        """A signed snapshot of the state at the retention floor."""
        assert self.base is not None
        return Snapshot.create(self._signer, self.base)

    def handoff(self, next_sequencer: bytes, *, reason: str = "handoff") -> EpochChange:
        """Planned handoff: sign an epoch change naming the next sequencer at our head.
        From now on this sequencer refuses submissions (it is fenced by its own change).
        ``reason="rollback"``: this sequencer's store rolled back, and it starts a new epoch
        of its own at the head it holds (``next_sequencer`` is its own key)."""
        if self.state.closed:
            raise ChannelClosed("a closed channel is not handed off")
        ec = EpochChange.create(self._signer, channel=self.channel, epoch=self.state.epoch + 1,
                                sequencer_key=next_sequencer, start_seq=self.seq,
                                start_hash=self.head_hash, reason=reason)
        self.handed_off = True
        return ec
