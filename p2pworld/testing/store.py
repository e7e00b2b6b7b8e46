"""An in-memory store with the sqlite store's contract, for the simulator and tests.

Every :meth:`write` is one durable transaction (as a committed sqlite transaction with
``synchronous=FULL`` is): :meth:`crash` keeps exactly what was written. Rows, the stored head
and the base proof are what :func:`~p2pworld.channel.writes.write_plan` says, as for the
sqlite store, and loading runs the same check (:func:`~p2pworld.log.verify.check_channel`).

Example:
    >>> store = MemoryLogStore()
    >>> store.load_channels()
    []
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

from p2pworld import codec
from p2pworld.channel.hub import Checkpoint, OutboxDone, OutboxPut, Persist, SaveCursor, SaveVote
from p2pworld.channel.statements import vote_from_row, vote_row
from p2pworld.channel.writes import write_plan
from p2pworld.core.persist import StoreEffect
from p2pworld.errors import P2PWorldError, StoreCorrupt, StoreFull
from p2pworld.io.log_store import StoredChannel, decode_channel
from p2pworld.log.entry import MAX_ENTRY_BYTES, Entry, Submission
from p2pworld.log.verify import ChannelRow


@dataclass
class _Channel:
    record: bytes
    epochs: bytes
    base: bytes
    floor: int
    base_proof: bytes | None = None
    head: tuple[int, bytes | None, bytes | None] = (0, None, None)
    rows: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)


class MemoryLogStore:
    """Same methods as :class:`p2pworld.io.log_store.LogStore`."""

    def __init__(self) -> None:
        self.channels: dict[bytes, _Channel] = {}
        self.cursors: dict[bytes, bytes] = {}
        self.outbox: dict[tuple[bytes, bytes], tuple[bytes, str]] = {}
        self.forks: list[tuple[bytes, bytes, bytes]] = []
        self.votes: dict[bytes, bytes] = {}
        self.outbox_aside: dict[tuple[bytes, bytes], tuple[bytes, str, str]] = {}
        self.aside: list[tuple[bytes, bytes, P2PWorldError]] = []
        self.syncs = 0
        self.quarantined: dict[bytes, StoreCorrupt] = {}
        self.full = False
        """The disk is full (a fault): a write larger than :attr:`room` raises
        :class:`StoreFull`, nothing of it written, as sqlite's ``SQLITE_FULL``; reads go on."""
        self.room = 0
        """While :attr:`full`: bytes of entries the disk still takes (smaller writes fit)."""

    def write(self, batch: Iterable[Persist]) -> None:
        for w in batch:
            # What the write changes is write_plan's (the sqlite store runs the same plan).
            c = self.channels.get(w.record.channel)
            p = write_plan(w, stored_floor=None if c is None else c.floor)
            if c is None:
                assert p.record is not None and p.base is not None
                c = self.channels[w.record.channel] = _Channel(
                    p.record, p.epochs, p.base, p.floor, p.proof, (p.floor, None, None))
            c.epochs = p.epochs
            if p.drop_through is not None:
                assert p.base is not None
                c.base, c.floor, c.base_proof = p.base, p.floor, p.proof
                c.rows = {s: r for s, r in c.rows.items() if s > p.drop_through}
            if p.keep_through is not None:
                c.rows = {s: r for s, r in c.rows.items() if s <= p.keep_through}
            for e in p.rows:
                c.rows[e.seq] = (e.hash, e.to_frame())
            if p.head is not None:
                c.head = p.head
            elif p.head_from_rows:
                top = max(c.rows, default=None)
                c.head = (top, c.rows[top][0], None) if top is not None else (p.floor, None, None)
        self.syncs += 1

    def apply(self, ops: Iterable[StoreEffect]) -> None:
        """Same contract as :meth:`LogStore.apply`: the whole batch is one durable write."""
        ops = list(ops)
        if self.full:
            size = sum(len(e.payload) + 200 for op in ops if isinstance(op, Persist)
                       for e in op.entries)
            if size > self.room or not size:
                self.probe()
            self.room -= size
        for op in ops:
            if isinstance(op, Persist):
                self.write([op])
                self.syncs -= 1
            elif isinstance(op, SaveCursor):
                self.save_cursor(op.checkpoint)
            elif isinstance(op, OutboxPut):
                self.outbox_put(op.submission, op.want)
            elif isinstance(op, OutboxDone):
                self.outbox_done(op.channel, op.idem_key)
            elif isinstance(op, SaveVote):
                self.votes[op.vote.channel] = vote_row(op)
            else:
                self.record_fork(op.channel, op.held, op.other)
        self.syncs += 1

    def probe(self) -> None:
        """A tiny write: raises :class:`StoreFull` while the disk is full."""
        if self.full:
            raise StoreFull("memory store: the disk is full (simulated)", path="memory")

    def load_channel(self, channel: bytes) -> StoredChannel | None:
        """One channel as it is stored (None: not stored)."""
        return next((c for c in self.load_channels() if c.record.channel == channel), None)

    def save_cursor(self, checkpoint: Checkpoint) -> None:
        self.cursors[checkpoint.channel] = codec.encode_frame(checkpoint.to_wire())

    def outbox_put(self, sub: Submission, want: str) -> None:
        self.outbox[(sub.channel, sub.idem_key)] = (codec.encode_frame(sub.to_wire()), want)

    def outbox_done(self, channel: bytes, key: bytes) -> None:
        self.outbox.pop((channel, key), None)

    def record_fork(self, channel: bytes, held: Entry, other: Entry) -> None:
        self.forks.append((channel, held.to_frame(),
                           other.to_frame()))

    def load_channels(self, *, quarantine: bool = False) -> list[StoredChannel]:
        """As :meth:`LogStore.load_channels`: each channel checked; with ``quarantine``, a
        damaged one is left out and named in :attr:`quarantined`."""
        self.quarantined = {}
        out = []
        for ch, c in sorted(self.channels.items()):
            row = ChannelRow(channel=ch, record=c.record, epochs=c.epochs, base=c.base,
                             floor=c.floor, base_proof=c.base_proof, head_seq=c.head[0],
                             head_hash=c.head[1], head_sig=c.head[2])
            try:
                out.append(decode_channel(row, [(s, h, b) for s, (h, b) in
                                                sorted(c.rows.items())]))
            except StoreCorrupt as e:
                if not quarantine:
                    raise
                self.quarantined[ch] = e
        return out

    def load_votes(self) -> list[SaveVote]:
        return [vote_from_row(b) for b in self.votes.values()]

    def load_cursors(self) -> list[Checkpoint]:
        return [Checkpoint.from_wire(codec.decode_frame(b)) for b in self.cursors.values()]

    def load_outbox(self) -> list[tuple[Submission, str]]:
        self.aside = []
        out = []
        for (ch, key), (b, w) in list(self.outbox.items()):
            try:
                out.append((Submission.from_wire(codec.decode_frame(
                    b, max_bytes=MAX_ENTRY_BYTES)), w))
            except P2PWorldError as e:
                self.move_aside(ch, key, e)
        return out

    def move_aside(self, channel: bytes, key: bytes, reason: P2PWorldError) -> None:
        row = self.outbox.pop((channel, key), None)
        if row is not None:
            self.outbox_aside[(channel, key)] = (*row, reason.code)
        self.aside.append((channel, key, reason))

    def close(self) -> None:
        """Nothing to close (the same method as the sqlite store's)."""

    def crash(self) -> MemoryLogStore:
        """A copy holding exactly what was durably written (all of it: writes are synced)."""
        return copy.deepcopy(self)
