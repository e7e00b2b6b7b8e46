"""The verifying replica core: what a subscriber keeps of a channel it does not sequence.

A batch ``(entries, signed_head)`` is accepted only as a whole: the entries must continue the
local log without a gap, each must link to its predecessor's hash, each writer signature must
verify, the fold must accept each one (membership, owner-only control entries, closed
channels), and the last hash must be the head signed by the sequencer of the current epoch.
One head signature authenticates the whole batch. Entries at or below the local head are
accepted only if they are byte-identical to what is held; a different entry for a held
``seq`` that the sequencer's signed head vouches for is a fork
(:class:`~p2pworld.errors.Forked`): both entries are kept as proof and the channel is frozen
until the authority signs a recovery epoch.

Epoch changes: :meth:`Replica.receive_epoch` takes a signed :class:`EpochChange` (plus any
old-epoch entries up to its start). After it, entries and heads of older epochs are refused
(fencing). A recovery that starts below our head truncates the entries past its start and
returns them, so the caller can tell their writers they were lost.

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> from p2pworld.log.entry import ChannelRecord, Submission
    >>> from p2pworld.log.sequencer import Sequencer
    >>> owner = Ed25519Signer(bytes(32))
    >>> rec = ChannelRecord.create(owner, workspace="w", name="general", created_at=0)
    >>> s = Sequencer.create(rec, owner)
    >>> e = s.submit(Submission.create(owner, channel=rec.channel, idem_key=b"a",
    ...                                payload=b"hi"), now_ms=0).entry
    >>> r = Replica.create(rec)
    >>> [x.seq for x in r.receive([e], s.signed_head())]
    [1]
"""

from __future__ import annotations

from collections.abc import Mapping

from p2pworld.errors import (
    ChainBroken,
    Fenced,
    Forked,
    InvalidSignature,
    P2PWorldError,
    Unauthorized,
)
from p2pworld.log.entry import ChannelRecord, Entry, SignedHead, Submission, verified_batches
from p2pworld.log.sequencer import ChannelLog
from p2pworld.log.state import ChannelState, EpochChange, Snapshot

MAX_EPOCH_PENDING = 256 << 20
"""Bytes of old-epoch catch-up a replica holds aside while it arrives in parts."""


class Replica(ChannelLog):
    """A verified copy of a channel's log, extended only by authenticated batches."""

    def __init__(self, state: ChannelState, entries: list[Entry] | None = None,
                 base: ChannelState | None = None) -> None:
        super().__init__(state, entries, base)
        self.fork_proof: tuple[Entry, Entry] | None = None
        self.fork_head: SignedHead | None = None
        self.signed_head: SignedHead | None = None
        """The sequencer's signed head at this replica's head, when it holds one (from the
        last batch, or stored with the last commit): what lets it give a sequencer whose
        store rolled back its own entries back (:meth:`Sequencer.restore`)."""
        self.epoch_pending: tuple[EpochChange, ChannelState, list[Entry], int] | None = None
        """Old-epoch entries towards an epoch change's start that arrived in parts: the
        change, the state they fold to, the entries and their encoded bytes. Held in memory
        only (they are authenticated when the chain reaches the change's start hash)."""

    @property
    def pending_head(self) -> tuple[int, bytes] | None:
        """``(seq, hash)`` the held-aside epoch catch-up reaches (None: nothing held)."""
        if self.epoch_pending is None:
            return None
        st = self.epoch_pending[1]
        return st.seq, st.head_hash

    @classmethod
    def create(cls, record: ChannelRecord) -> Replica:
        return cls(ChannelState.genesis(record))

    @classmethod
    def from_snapshot(cls, record: ChannelRecord, snap: Snapshot) -> Replica:
        st = snap.open(record)
        st.floor = st.seq
        return cls(st, [], st.copy())

    @property
    def frozen(self) -> bool:
        return self.fork_proof is not None

    def receive(self, entries: list[Entry], head: SignedHead,
                mine: Mapping[tuple[bytes, bytes], Submission] | None = None) -> list[Entry]:
        """Verify a batch; return the entries that are new. Raises and changes nothing if bad.

        ``mine``: submissions this node signed itself, by ``(channel, idem_key)``; an entry
        equal to one of them (same key, payload, signature and proof) needs no signature
        check."""
        if self.frozen:
            raise Forked("channel is frozen after a fork", channel=self.channel.hex())
        st = self.state
        if head.channel != self.channel:
            raise ChainBroken("head is for another channel")
        if head.epoch != st.epoch:
            if head.epoch < st.epoch:
                raise Fenced("head of a superseded epoch", epoch=head.epoch)
            raise ChainBroken("head of an epoch we have not seen the change for",
                              epoch=head.epoch)
        try:
            head.verify(st.sequencer_key)
        except InvalidSignature:
            raise ChainBroken("head signature does not verify") from None
        trial = st.trial()
        new: list[Entry] = []
        subs = [e.submission() for e in entries]
        # Our own submissions need no check; the others are proven batch by batch where whole
        # batches arrived, else one by one below.
        others = [i for i, x in enumerate(subs)
                  if not mine or mine.get((x.channel, x.idem_key)) != x]
        proven = {others[j] for j in verified_batches([subs[i] for i in others])}
        proven.update(set(range(len(subs))) - set(others))
        for i, e in enumerate(entries):
            if e.channel != self.channel:
                raise ChainBroken("entry is for another channel")
            if e.seq <= trial.seq and not new:
                held = self.entry(e.seq)
                if held is not None and held != e:
                    self._check_fork(held, entries, head)
                continue
            if e.seq != trial.seq + 1:
                raise ChainBroken("gap in entries", expected=trial.seq + 1, got=e.seq)
            if e.epoch != trial.epoch:
                raise Fenced("entry of another epoch", epoch=e.epoch, seq=e.seq)
            if e.prev_hash != trial.head_hash:
                raise ChainBroken("entry does not link to its predecessor", seq=e.seq)
            sub = subs[i]
            if i not in proven:
                _verify_writer(sub)
            try:
                trial.check_submission(sub)
            except P2PWorldError as err:
                raise ChainBroken(f"entry {e.seq} is invalid: {err.code}") from None
            trial.apply(e)
            new.append(e)
        if head.seq == trial.seq:
            if head.head_hash != trial.head_hash:
                raise ChainBroken("entries do not hash to the signed head", seq=head.seq)
        elif head.seq > trial.seq:
            raise ChainBroken("batch ends before the signed head", head=head.seq)
        elif head.head_hash != self.hash_at(head.seq):
            if self.hash_at(head.seq) is not None:
                raise ChainBroken("signed head disagrees with held entries", seq=head.seq)
        if new:
            # The trial state is the fold of the whole batch: adopt it (with the idempotency
            # index, which the trial leaves out) instead of folding every entry twice.
            st.idem.update(trial.idem)
            trial.idem = st.idem
            self.state = trial
            self.entries.extend(new)
        if head.seq == self.seq and head.head_hash == self.head_hash:
            self.signed_head = head
        return new

    def receive_epoch(self, ec: EpochChange, entries: list[Entry] | None = None) -> list[Entry]:
        """Enter a new epoch. ``entries`` are old-epoch entries after our head up to the change's
        start (authenticated by the change's start hash). Returns entries truncated by a
        recovery (they were never replicated; their writers must be told)."""
        st = self.state
        if ec.epoch <= st.epoch:
            return []  # already in force (or older): idempotent
        st.check_epoch_change(ec)
        if self.frozen and ec.reason != "recovery":
            raise Forked("a forked channel resumes only through a recovery epoch")
        lost: list[Entry] = []
        if st.seq >= ec.start_seq:
            held = self.hash_at(ec.start_seq)
            if held is None:
                raise ChainBroken("epoch change starts below our retention floor")
            if held != ec.start_hash:
                raise Forked("our history diverges from the epoch change's start",
                             seq=ec.start_seq)
            if ec.reason == "election" and ec.voters != self.voters_at(ec.start_seq):
                raise Unauthorized("the election's voter set is not the channel's at its start")
            if st.seq > ec.start_seq:
                if ec.reason not in ("recovery", "rollback", "election"):
                    raise ChainBroken("a handoff cannot start below our head")
                lost = self.truncate(ec.start_seq)
        else:
            part = self.epoch_pending
            if part is not None and (part[0] != ec or part[1].seq < st.seq or not entries
                                     or entries[0].seq != part[1].seq + 1):
                part = None  # another change, or not a continuation: start over
            trial, chain, size = ((part[1], part[2], part[3]) if part is not None
                                  else (self.state.trial(), [], 0))
            self.epoch_pending = None
            more = [e for e in (entries or []) if e.seq > trial.seq][: ec.start_seq - trial.seq]
            for e in more:
                if e.seq != trial.seq + 1 or e.prev_hash != trial.head_hash or \
                        e.epoch != trial.epoch:
                    raise ChainBroken("catch-up before the epoch change does not chain")
                _verify_writer(e.submission())
                trial.apply(e)
                size += len(e.encoded)
            chain = chain + more
            if trial.seq < ec.start_seq and more:
                if size > MAX_EPOCH_PENDING:
                    raise ChainBroken("epoch catch-up larger than this node holds aside",
                                      limit=MAX_EPOCH_PENDING)
                # Part of the way: hold it aside (unauthenticated yet) and ask for the rest.
                self.epoch_pending = (ec, trial, chain, size)
                return []
            if trial.seq != ec.start_seq or trial.head_hash != ec.start_hash:
                raise ChainBroken("catch-up does not reach the epoch change's start")
            trial.check_voters(ec)
            for e in chain:
                self.append(e)
        self.state.apply_epoch(ec)
        self.fork_proof = None
        self.fork_head = None
        return lost

    def _check_fork(self, held: Entry, batch: list[Entry], head: SignedHead) -> None:
        """A differing entry is a fork only if the sequencer's signed head vouches for it."""
        start = next(i for i, x in enumerate(batch) if x.seq == held.seq)
        chain = batch[start:]
        prev = self.hash_at(held.seq - 1)
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
                     channel=self.channel.hex(), seq=held.seq)


def _verify_writer(sub: Submission) -> None:
    try:
        sub.verify()
    except InvalidSignature:
        raise ChainBroken("an entry's writer signature does not verify") from None
