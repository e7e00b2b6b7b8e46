"""What one write does to a channel's stored rows (pure): the one definition every store
carries out (the sqlite store, :mod:`p2pworld.io.log_store`, and the memory store of the
simulator and the tests, :mod:`p2pworld.testing.store`).

A :class:`~p2pworld.channel.hub.Persist` may create the channel, move its base (retention or a
snapshot: the rows at or below the new floor go), take back entries above a point (a rolled
back epoch), and add entries. :func:`write_plan` says exactly which rows and columns change;
a store only runs it. The rows a write adds are those above the floor after it, so a burst
larger than retention in one commit drops its own oldest entries and never re-inserts rows
the floor has passed (the retention-burst defect: the next start refused the channel).

Example:
    >>> import random
    >>> from p2pworld.channel.hub import ChannelHub
    >>> from p2pworld.identity import Ed25519Signer
    >>> hub = ChannelHub(Ed25519Signer(bytes(32)), workspace="lab", rng=random.Random(0))
    >>> rec, fx = hub.open_channel("notes", now_ms=0)
    >>> p = write_plan(next(e for e in fx if isinstance(e, Persist)), stored_floor=None)
    >>> p.record is not None, p.floor, p.rows, p.drop_through  # a new channel, no entries yet
    (True, 0, [], None)
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pworld import codec
from p2pworld.channel.hub import Persist
from p2pworld.log.entry import Entry
from p2pworld.log.state import ChannelState
from p2pworld.log.verify import base_proof


def written_rows(w: Persist, floor: int) -> tuple[list[Entry], bytes | None]:
    """What one :class:`~p2pworld.channel.hub.Persist` puts into a channel whose floor is
    ``floor`` (after the write):
    the entries above the floor (a burst larger than retention in one commit drops its own
    oldest entries, never rows the floor has passed), and the base proof when the write moves
    the base."""
    entries = [e for e in w.entries if e.seq > floor]
    proof = None
    if w.base is not None and (w.floor > 0 or w.snapshot is not None):
        digest = (w.snapshot.state_hash if w.snapshot is not None
                  else ChannelState.decode(w.base).state_hash())
        proof = base_proof(w.snapshot, digest)
    return entries, proof


def head_signature(w: Persist, last: Entry | None) -> bytes | None:
    """The signed head to store with a write that ends at ``last`` (None: it came without one,
    or the one it came with is not at ``last``)."""
    h = w.head
    if h is None or last is None or (h.seq, h.head_hash) != (last.seq, last.hash):
        return None
    return codec.encode_frame(h.to_wire())


@dataclass(frozen=True)
class WritePlan:
    """The changes one write makes to one channel, in this order."""

    record: bytes | None
    """A new channel: its encoded record (the channel row is created with ``base``,
    ``floor``, ``proof`` and its head at the floor). None: the row exists."""
    epochs: bytes
    """The channel's epochs, encoded (always stored)."""
    base: bytes | None
    """The base to store: a new channel's, or the one this write moves to (None: unchanged)."""
    floor: int
    proof: bytes | None
    drop_through: int | None
    """The base moved: delete the entries up to this seq (None: none)."""
    keep_through: int | None
    """Entries above this seq are taken back: delete them (None: none)."""
    rows: list[Entry]
    """Entries to insert (or replace)."""
    head: tuple[int, bytes, bytes | None] | None
    """The stored head after the write: the last row written and its signed head (if the
    write brought one at that row)."""
    head_from_rows: bool
    """No row written but rows went: the head is the top row left (the floor if none), with
    no signature."""


def write_plan(w: Persist, *, stored_floor: int | None) -> WritePlan:
    """What ``w`` does to a channel stored with floor ``stored_floor`` (None: not stored)."""
    new = stored_floor is None
    floor = w.floor if w.base is not None or stored_floor is None else stored_floor
    rows, proof = written_rows(w, floor)
    last = rows[-1] if rows else None
    base = w.base
    if new and base is None:
        base = ChannelState.genesis(w.record).encode()
    return WritePlan(
        record=codec.encode_frame(w.record.to_wire()) if new else None,
        epochs=codec.encode_frame([e.to_wire() for e in w.epochs]),
        base=base, floor=floor, proof=proof,
        drop_through=w.floor if w.base is not None and not new else None,
        keep_through=w.truncate_after, rows=rows,
        head=(last.seq, last.hash, head_signature(w, last)) if last is not None else None,
        head_from_rows=last is None and (w.base is not None or w.truncate_after is not None))
