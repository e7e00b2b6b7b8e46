"""The sequencer core: the one writer of a channel's log in an epoch.

Pure state machine. ``submit`` places a verified writer submission at the next ``seq`` (strictly
monotonic, gapless) or answers from the idempotency index; nothing is persisted here: the
caller takes :meth:`Sequencer.take_unsynced`, makes it durable, and only then releases the
acks (``docs/guarantees.md``: an ack never leaves before its entry is on disk).

Idempotency keys are scoped to ``(channel, sender)``:

* same key, same payload → the original ``seq`` with status ``duplicate``;
* same key, different payload → :class:`~p2pworld.errors.Conflict` carrying the original
  ``seq`` and entry hash. Nothing is overwritten.

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> from p2pworld.log.entry import ChannelRecord, Submission
    >>> owner = Ed25519Signer(bytes(32))
    >>> rec = ChannelRecord.create(owner, workspace="w", name="general", created_at=0)
    >>> seqr = Sequencer(rec, owner)
    >>> sub = Submission.create(owner, channel=rec.channel, idem_key=b"a", payload=b"hi")
    >>> seqr.submit(sub, now_ms=0).seq, seqr.submit(sub, now_ms=1).status
    (1, 'duplicate')
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pworld.errors import ChannelClosed, Conflict, LocalProtocolError, NotSequencer
from p2pworld.identity import Signer
from p2pworld.log.entry import GENESIS_HASH, ChannelRecord, Entry, SignedHead, Submission


@dataclass(frozen=True, kw_only=True)
class SubmitOutcome:
    """``appended`` (a new entry) or ``duplicate`` (the original entry of this key)."""

    status: str
    seq: int
    entry_hash: bytes
    entry: Entry


@dataclass(frozen=True)
class _IdemRecord:
    seq: int
    payload_hash: bytes
    entry_hash: bytes


class Sequencer:
    """Assigns ``seq`` for one channel. Holds the log in memory (the store mirrors it)."""

    def __init__(self, record: ChannelRecord, signer: Signer,
                 entries: list[Entry] | None = None) -> None:
        if signer.public_key != record.sequencer_key:
            raise NotSequencer("this signer is not the channel's sequencer")
        self.record = record
        self._signer = signer
        self.entries: list[Entry] = []
        self._idem: dict[tuple[bytes, bytes], _IdemRecord] = {}
        self._head_hash = GENESIS_HASH
        self._unsynced: list[Entry] = []
        self._signed_head: SignedHead | None = None
        self.closed = False
        for e in entries or []:
            self._apply(e)

    @property
    def seq(self) -> int:
        return len(self.entries)

    @property
    def head_hash(self) -> bytes:
        return self._head_hash

    def _apply(self, entry: Entry) -> None:
        if entry.seq != self.seq + 1 or entry.prev_hash != self._head_hash:
            raise LocalProtocolError("entries must extend the log in order")
        self.entries.append(entry)
        h = entry.hash
        self._idem[(entry.sender_key, entry.idem_key)] = _IdemRecord(
            entry.seq, entry.submission().payload_hash, h)
        self._head_hash = h

    def submit(self, sub: Submission, *, now_ms: int) -> SubmitOutcome:
        """Sequence one submission (its signature must already be checked, or is checked here)."""
        if sub.channel != self.record.channel:
            raise LocalProtocolError("submission is for another channel")
        if self.closed:
            raise ChannelClosed("channel is closed to new entries")
        known = self._idem.get((sub.sender_key, sub.idem_key))
        if known is not None:
            if known.payload_hash == sub.payload_hash:
                return SubmitOutcome(status="duplicate", seq=known.seq,
                                     entry_hash=known.entry_hash, entry=self.entries[known.seq - 1])
            raise Conflict("idempotency key reused with a different payload",
                           seq=known.seq, entry_hash=known.entry_hash)
        sub.verify()
        entry = Entry(
            channel=sub.channel, epoch=self.record.epoch, seq=self.seq + 1,
            prev_hash=self._head_hash, sender_key=sub.sender_key, sender_sig=sub.signature,
            idem_key=sub.idem_key, payload=sub.payload, sequencer_time=now_ms,
        )
        self._apply(entry)
        self._unsynced.append(entry)
        return SubmitOutcome(status="appended", seq=entry.seq, entry_hash=self._head_hash,
                             entry=entry)

    def take_unsynced(self) -> list[Entry]:
        """Entries appended since the last call: the caller persists them before acking."""
        out, self._unsynced = self._unsynced, []
        return out

    def signed_head(self) -> SignedHead:
        """The current head, signed once per distinct head (so once per batch)."""
        h = self._signed_head
        if h is None or h.seq != self.seq:
            h = SignedHead.create(self._signer, channel=self.record.channel,
                                  epoch=self.record.epoch, seq=self.seq,
                                  head_hash=self._head_hash)
            self._signed_head = h
        return h

    def signed_head_at(self, seq: int) -> SignedHead:
        """A signed head for a prefix (catch-up batches); the current head is cached."""
        if seq == self.seq:
            return self.signed_head()
        if not 1 <= seq < self.seq:
            raise LocalProtocolError("no such prefix")
        return SignedHead.create(self._signer, channel=self.record.channel,
                                 epoch=self.record.epoch, seq=seq,
                                 head_hash=self.entries[seq - 1].hash)

    def read(self, after: int, limit: int) -> list[Entry]:
        return self.entries[after: after + limit]
