"""The verifying replica core: what a subscriber keeps of a channel it does not sequence.

A batch ``(entries, signed_head)`` is accepted only as a whole: the entries must continue the
local log without a gap, each must link to its predecessor's hash, each writer signature must
verify, and the last hash must be the head the sequencer signed. One head signature therefore
authenticates the whole batch. Entries at or below the local head are accepted only if they are
byte-identical to what is stored; a different signed entry for a held ``seq`` is a fork
(:class:`~p2pworld.errors.Forked`, with both entries kept as proof).

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> from p2pworld.log.entry import ChannelRecord, Submission
    >>> from p2pworld.log.sequencer import Sequencer
    >>> owner = Ed25519Signer(bytes(32))
    >>> rec = ChannelRecord.create(owner, workspace="w", name="general", created_at=0)
    >>> s = Sequencer(rec, owner)
    >>> e = s.submit(Submission.create(owner, channel=rec.channel, idem_key=b"a",
    ...                                payload=b"hi"), now_ms=0).entry
    >>> r = Replica(rec)
    >>> [x.seq for x in r.receive([e], s.signed_head())]
    [1]
"""

from __future__ import annotations

from p2pworld.errors import ChainBroken, Forked, InvalidSignature
from p2pworld.log.entry import GENESIS_HASH, ChannelRecord, Entry, SignedHead, Submission


class Replica:
    """A verified copy of a channel's log, extended only by authenticated batches."""

    def __init__(self, record: ChannelRecord, entries: list[Entry] | None = None) -> None:
        self.record = record
        self.entries: list[Entry] = []
        self._head_hash = GENESIS_HASH
        self.fork_proof: tuple[Entry, Entry] | None = None
        self.fork_head: SignedHead | None = None
        for e in entries or []:
            self.entries.append(e)
            self._head_hash = e.hash

    @property
    def seq(self) -> int:
        return len(self.entries)

    @property
    def head_hash(self) -> bytes:
        return self._head_hash

    def receive(self, entries: list[Entry], head: SignedHead) -> list[Entry]:
        """Verify a batch; return the entries that are new. Raises and changes nothing if bad."""
        if self.fork_proof is not None:
            raise Forked("channel is frozen after a fork", channel=self.record.channel.hex())
        rec = self.record
        if head.channel != rec.channel or head.epoch != rec.epoch:
            raise ChainBroken("head is for another channel or epoch")
        try:
            head.verify(rec.sequencer_key)
        except InvalidSignature:
            raise ChainBroken("head signature does not verify") from None
        new: list[Entry] = []
        prev = self._head_hash
        next_seq = self.seq + 1
        for e in entries:
            if e.channel != rec.channel or e.epoch != rec.epoch:
                raise ChainBroken("entry is for another channel or epoch")
            if e.seq < next_seq and not new:
                held = self.entries[e.seq - 1]
                if held != e:
                    self._check_fork(held, entries, head)
                continue
            if e.seq != next_seq:
                raise ChainBroken("gap in entries", expected=next_seq, got=e.seq)
            if e.prev_hash != prev:
                raise ChainBroken("entry does not link to its predecessor", seq=e.seq)
            _verify_writer(e.submission())
            prev = e.hash
            new.append(e)
            next_seq += 1
        if head.seq == next_seq - 1:
            if head.head_hash != prev:
                raise ChainBroken("entries do not hash to the signed head", seq=head.seq)
        elif head.seq > next_seq - 1:
            raise ChainBroken("batch ends before the signed head", head=head.seq)
        elif head.head_hash != self._hash_at(head.seq, new):
            raise ChainBroken("signed head disagrees with held entries", seq=head.seq)
        self.entries.extend(new)
        self._head_hash = prev
        return new

    def _hash_at(self, seq: int, new: list[Entry]) -> bytes:
        if seq == 0:
            return GENESIS_HASH
        allx = self.entries + new
        return allx[seq - 1].hash

    def _check_fork(self, held: Entry, batch: list[Entry], head: SignedHead) -> None:
        """A differing entry is a fork only if the sequencer's signed head vouches for it."""
        start = next(i for i, x in enumerate(batch) if x.seq == held.seq)
        chain = batch[start:]
        prev = self._hash_at(held.seq - 1, [])
        for i, x in enumerate(chain):
            if x.seq != held.seq + i or x.prev_hash != prev:
                raise ChainBroken("conflicting entry is not part of a signed chain", seq=x.seq)
            _verify_writer(x.submission())
            prev = x.hash
        if chain[-1].seq != head.seq or prev != head.head_hash:
            raise ChainBroken("conflicting entry is not covered by the signed head", seq=held.seq)
        self.fork_proof = (held, chain[0])
        self.fork_head = head
        raise Forked("two different signed entries at one (channel, epoch, seq)",
                     channel=self.record.channel.hex(), seq=held.seq)


def _verify_writer(sub: Submission) -> None:
    try:
        sub.verify()
    except InvalidSignature:
        raise ChainBroken("an entry's writer signature does not verify") from None
