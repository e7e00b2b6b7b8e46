"""The sqlite statements the log store runs for the durable effects (pure).

:func:`~p2pworld.channel.writes.write_plan` says what one write changes in a channel's rows;
this module says which statements of the store's schema (``p2pworld/io/log_store.py``) carry
it out, in order, and which one each other durable effect (a cursor, an outbox row, a fork's
proof) needs. :class:`~p2pworld.io.log_store.LogStore` only runs them, inside the one
transaction of each batch.

Example:
    >>> import random
    >>> from p2pworld.channel.hub import ChannelHub, Persist
    >>> from p2pworld.channel.writes import write_plan
    >>> from p2pworld.identity import Ed25519Signer
    >>> hub = ChannelHub(Ed25519Signer(bytes(32)), workspace="lab", rng=random.Random(0))
    >>> rec, fx = hub.open_channel("notes", now_ms=0)
    >>> p = write_plan(next(e for e in fx if isinstance(e, Persist)), stored_floor=None)
    >>> [sql.split("(")[0] for sql, _ in plan_statements(rec.channel, p)]  # a new channel
    ['INSERT INTO channels']
    >>> [args[:3] for _, args in head_statements(rec.channel, p, None)]  # no row: the floor
    [(0, None, None)]
"""

from __future__ import annotations

from typing import Any

from p2pworld import codec
from p2pworld.channel.effects import OutboxDone, OutboxPut, RecordFork, SaveCursor, SaveVote
from p2pworld.channel.writes import WritePlan
from p2pworld.log.election import Vote
from p2pworld.log.rows import top_head

Statement = tuple[str, tuple[Any, ...]]
"""One sqlite statement and its parameters."""

INSERT_CHANNEL = ("INSERT INTO channels(ch, record, epochs, base, floor, base_proof, "
                  "head_seq) VALUES (?, ?, ?, ?, ?, ?, ?)")
UPDATE_EPOCHS = "UPDATE channels SET epochs=? WHERE ch=?"
UPDATE_BASE = "UPDATE channels SET base=?, floor=?, base_proof=? WHERE ch=?"
DROP_THROUGH = "DELETE FROM entries WHERE ch=? AND seq<=?"
KEEP_THROUGH = "DELETE FROM entries WHERE ch=? AND seq>?"
INSERT_ENTRY = "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)"
SELECT_FLOOR = "SELECT floor FROM channels WHERE ch=?"
SELECT_TOP = "SELECT seq, hash FROM entries WHERE ch=? ORDER BY seq DESC LIMIT 1"
UPDATE_HEAD = "UPDATE channels SET head_seq=?, head_hash=?, head_sig=? WHERE ch=?"


def plan_statements(ch: bytes, p: WritePlan) -> list[Statement]:
    """What runs before a write's entry rows (:data:`INSERT_ENTRY`, one per ``p.rows``): the
    channel row created (with its head at the floor) or its epochs updated, the base moved
    with the rows it passed, the rows taken back."""
    out: list[Statement] = []
    if p.record is not None:
        out.append((INSERT_CHANNEL, (ch, p.record, p.epochs, p.base, p.floor, p.proof,
                                     p.floor)))
    else:
        out.append((UPDATE_EPOCHS, (p.epochs, ch)))
    if p.drop_through is not None:
        out.append((UPDATE_BASE, (p.base, p.floor, p.proof, ch)))
        out.append((DROP_THROUGH, (ch, p.drop_through)))
    if p.keep_through is not None:
        out.append((KEEP_THROUGH, (ch, p.keep_through)))
    return out


def head_statements(ch: bytes, p: WritePlan, top: tuple[Any, ...] | None) -> list[Statement]:
    """What runs after the entry rows: the stored head. ``top`` is what :data:`SELECT_TOP`
    read once the rows were written (the store reads it only when ``p.head_from_rows``)."""
    if p.head_from_rows:
        return [(UPDATE_HEAD, (*top_head(top, p.floor), ch))]
    if p.head is not None:
        return [(UPDATE_HEAD, (*p.head, ch))]
    return []


def effect_statement(op: SaveCursor | OutboxPut | OutboxDone | RecordFork | SaveVote
                     ) -> Statement:
    """The one statement a durable effect other than a
    :class:`~p2pworld.channel.effects.Persist` needs."""
    if isinstance(op, SaveVote):
        return ("INSERT OR REPLACE INTO votes VALUES (?, ?)",
                (op.vote.channel, vote_row(op)))
    if isinstance(op, SaveCursor):
        return ("INSERT OR REPLACE INTO cursors VALUES (?, ?)",
                (op.checkpoint.channel, codec.encode_frame(op.checkpoint.to_wire())))
    if isinstance(op, OutboxPut):
        sub = op.submission
        return ("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)",
                (sub.channel, sub.idem_key, codec.encode_frame(sub.to_wire()), op.want))
    if isinstance(op, OutboxDone):
        return ("DELETE FROM outbox WHERE ch=? AND key=?", (op.channel, op.idem_key))
    return ("INSERT INTO forks VALUES (?, ?, ?, ?)",
            (op.channel, op.held.seq, op.held.to_frame(), op.other.to_frame()))


def vote_row(op: SaveVote) -> bytes:
    """A stored vote, as :func:`vote_from_row` reads it back."""
    return codec.encode_frame({"vote": op.vote.to_wire(), "withdrawn": op.withdrawn})


def vote_from_row(body: bytes) -> SaveVote:
    """A stored vote (raises ``DecodeError`` on a row that is not one)."""
    m = codec.need_map(codec.decode_frame(body), "stored vote")
    return SaveVote(Vote.from_wire(m.get("vote")), codec.field(m, "withdrawn", bool, "stored vote"))


__all__ = ["vote_row", "vote_from_row", "Statement", "plan_statements", "head_statements",
           "effect_statement", "INSERT_ENTRY", "SELECT_FLOOR", "SELECT_TOP"]
