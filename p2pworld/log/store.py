"""Durable channel storage in sqlite (WAL, ``synchronous=FULL``).

The store is driven by a shell, never by a core: cores return
:class:`~p2pworld.log.hub.Persist` (and cursor/outbox/fork) effects and the shell applies them;
each call commits, and so fsyncs the WAL, before it returns. Acks are released only after that.

Schema, format 3 (``docs/protocol.md`` §7)::

    meta(key TEXT PRIMARY KEY, value)                  -- 'format' = 3
    channels(ch BLOB PRIMARY KEY, record BLOB, epochs BLOB, base BLOB, floor INTEGER)
    entries(ch BLOB, seq INTEGER, hash BLOB, body BLOB, PRIMARY KEY (ch, seq))
    cursors(ch BLOB PRIMARY KEY, body BLOB)            -- ack_message checkpoints
    outbox(ch BLOB, key BLOB, body BLOB, want TEXT, PRIMARY KEY (ch, key))
    forks(ch BLOB, seq INTEGER, held BLOB, other BLOB)   -- proof, kept forever

Format 2 (entries without writer batch proofs) is migrated in place: its rows are valid format
3 rows, only the version changes, so an older build refuses the store afterwards instead of
misreading a batch proof. Format 1 (pre-release: no epochs, no retention) is refused with a
clear message. On open every chain is
re-verified from the stored base state. A last row that is incomplete (a torn write) is
truncated; anything else that fails (a row that decodes but breaks the hash chain, a bad
signature, an unreadable row before the last) is :class:`StoreCorrupt` naming the channel and
seq, and nothing is served. sqlite's own damage reports become ``StoreCorrupt`` too.

Example:
    >>> import tempfile, pathlib
    >>> store = LogStore(pathlib.Path(tempfile.mkdtemp()) / "log.db")
    >>> store.load_channels()
    []
    >>> store.close()
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pworld import codec
from p2pworld.errors import DecodeError, P2PWorldError, StoreCorrupt, UnsupportedVersion
from p2pworld.log.entry import MAX_ENTRY_BYTES, ChannelRecord, Entry, Submission
from p2pworld.log.hub import (
    ChannelHub,
    Checkpoint,
    Notice,
    OutboxDone,
    OutboxPut,
    Persist,
    RecordFork,
    SaveCursor,
)
from p2pworld.log.state import ChannelState, EpochChange
from p2pworld.storage import store_failure

STORE_FORMAT = 3


@dataclass
class StoredChannel:
    record: ChannelRecord
    epochs: list[EpochChange]
    base: ChannelState
    entries: list[Entry]
    torn: bool = False
    """The last row was incomplete (a torn write) and was left out. It was never
    acknowledged: acks are sent only after a write completes."""


Write = Persist
"""One channel's part of a transaction: the hub's ``Persist`` effect is the store operation."""


@dataclass(frozen=True)
class CursorWrite:
    channel: bytes
    body: bytes


@dataclass(frozen=True)
class OutboxWrite:
    """Put ``submission`` (with ``want``), or delete ``(channel, key)`` when it is None."""

    channel: bytes
    key: bytes
    submission: Submission | None = None
    want: str = "local"


@dataclass(frozen=True)
class ForkWrite:
    channel: bytes
    held: Entry
    other: Entry


StoreOp = Persist | CursorWrite | OutboxWrite | ForkWrite


def durable_op(e: object) -> StoreOp | None:
    """The store operation for a durable core effect (None for effects that are not durable).
    Shared by the node runtime and the simulator, so both persist exactly the same way."""
    if isinstance(e, Persist):
        return e
    if isinstance(e, SaveCursor):
        return CursorWrite(e.checkpoint.channel, codec.encode_frame(e.checkpoint.to_wire()))
    if isinstance(e, OutboxPut):
        return OutboxWrite(e.submission.channel, e.submission.idem_key, e.submission, e.want)
    if isinstance(e, OutboxDone):
        return OutboxWrite(e.channel, e.idem_key)
    if isinstance(e, RecordFork):
        return ForkWrite(e.channel, e.held, e.other)
    return None


class LogStore:
    """All channel logs of one node, in one sqlite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._schema()
        except sqlite3.Error as e:
            self.db.close()
            raise store_failure(self.path, e) from None
        except UnicodeDecodeError as e:
            self.db.close()
            raise StoreCorrupt(f"{self.path}: {e}", path=str(self.path)) from None
        except BaseException:
            self.db.close()
            raise
        self.syncs = 0

    def _schema(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value)")
        row = self.db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if row is not None and row[0] not in (1, 2, STORE_FORMAT):
            raise UnsupportedVersion(
                f"{self.path}: store format {row[0]!r}; this build reads formats 2 "
                f"(migrated) and {STORE_FORMAT}")
        if row is not None and row[0] == 1:
            raise UnsupportedVersion(
                f"{self.path}: store format 1 predates epochs and retention; export it with a "
                "0.1 build and re-import, or start a fresh home")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS channels(ch BLOB PRIMARY KEY, record BLOB NOT NULL,
                epochs BLOB NOT NULL, base BLOB NOT NULL, floor INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS entries(
                ch BLOB NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL, body BLOB NOT NULL,
                PRIMARY KEY (ch, seq));
            CREATE TABLE IF NOT EXISTS cursors(ch BLOB PRIMARY KEY, body BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS outbox(ch BLOB NOT NULL, key BLOB NOT NULL,
                body BLOB NOT NULL, want TEXT NOT NULL, PRIMARY KEY (ch, key));
            CREATE TABLE IF NOT EXISTS forks(ch BLOB NOT NULL, seq INTEGER NOT NULL,
                held BLOB NOT NULL, other BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS outbox_aside(ch BLOB NOT NULL, key BLOB NOT NULL,
                body BLOB NOT NULL, want TEXT NOT NULL, reason TEXT NOT NULL);
            """
        )
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
        elif row[0] == 2:
            # Format 2 has only writer signatures over single submissions, which format 3
            # still reads; a format-2 build must not open a store that may hold batch proofs.
            self.db.execute("UPDATE meta SET value=? WHERE key='format'", (STORE_FORMAT,))

    # --- writes (each call is one durable transaction) --------------------------------------

    def write(self, batch: Iterable[Write]) -> None:
        """Several channels' writes in one transaction, so one fsync (group commit)."""
        self.apply(batch)

    def _write_one(self, w: Write) -> None:
        ch = w.record.channel
        epochs = codec.encode_frame([e.to_wire() for e in w.epochs])
        row = self.db.execute("SELECT base, floor FROM channels WHERE ch=?", (ch,)).fetchone()
        if row is None:
            base = w.base if w.base is not None else ChannelState.genesis(w.record).encode()
            self.db.execute("INSERT INTO channels VALUES (?, ?, ?, ?, ?)",
                            (ch, codec.encode_frame(w.record.to_wire()), epochs, base, w.floor))
        else:
            self.db.execute("UPDATE channels SET epochs=? WHERE ch=?", (epochs, ch))
            if w.base is not None:
                self.db.execute("UPDATE channels SET base=?, floor=? WHERE ch=?",
                                (w.base, w.floor, ch))
                self.db.execute("DELETE FROM entries WHERE ch=? AND seq<=?", (ch, w.floor))
        if w.truncate_after is not None:
            self.db.execute("DELETE FROM entries WHERE ch=? AND seq>?", (ch, w.truncate_after))
        self.db.executemany(
            "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
            [(e.channel, e.seq, e.hash, e.to_frame()) for e in w.entries])

    def apply(self, ops: Iterable[Write | CursorWrite | OutboxWrite | ForkWrite]) -> None:
        """Every durable effect of one batch in one transaction: one fsync (group commit).
        All or nothing: on failure nothing of the batch is on disk.

        Raises:
            StoreFull: the disk (or the database's size limit) is full.
            StoreError: an I/O error (EIO, ...): the store cannot be trusted to write.
            StoreCorrupt: sqlite reports damage.
        """
        try:
            self._apply(ops)
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None

    def _apply(self, ops: Iterable[Write | CursorWrite | OutboxWrite | ForkWrite]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for op in ops:
                if isinstance(op, Write):
                    self._write_one(op)
                elif isinstance(op, CursorWrite):
                    self.db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)",
                                    (op.channel, op.body))
                elif isinstance(op, OutboxWrite):
                    if op.submission is not None:
                        sub = op.submission
                        self.db.execute("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)",
                                        (sub.channel, sub.idem_key,
                                         codec.encode_frame(sub.to_wire()), op.want))
                    else:
                        self.db.execute("DELETE FROM outbox WHERE ch=? AND key=?",
                                        (op.channel, op.key))
                else:
                    self.db.execute("INSERT INTO forks VALUES (?, ?, ?, ?)",
                                    (op.channel, op.held.seq,
                                     op.held.to_frame(),
                                     op.other.to_frame()))
        self.syncs += 1

    def save_cursor(self, channel: bytes, body: bytes) -> None:
        self.apply([CursorWrite(channel, body)])

    def outbox_put(self, sub: Submission, want: str) -> None:
        self.apply([OutboxWrite(sub.channel, sub.idem_key, sub, want)])

    def outbox_done(self, channel: bytes, key: bytes) -> None:
        self.apply([OutboxWrite(channel, key)])

    def record_fork(self, channel: bytes, held: Entry, other: Entry) -> None:
        self.apply([ForkWrite(channel, held, other)])

    # --- reads ------------------------------------------------------------------------------

    def load_channels(self) -> list[StoredChannel]:
        """Every channel with its verified entries, in ``seq`` order."""
        out = []
        try:
            rows = self.db.execute(
                "SELECT ch, record, epochs, base, floor FROM channels ORDER BY ch").fetchall()
            for ch, raw, raw_epochs, raw_base, floor in rows:
                out.append(self._channel(bytes(ch), raw, raw_epochs, raw_base, floor))
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        except UnicodeDecodeError as e:
            raise StoreCorrupt(f"{self.path}: {e}", path=str(self.path)) from None
        return out

    def load_channel(self, channel: bytes) -> StoredChannel | None:
        """One channel as it is on disk (None: not stored), verified like
        :meth:`load_channels`."""
        try:
            row = self.db.execute("SELECT ch, record, epochs, base, floor FROM channels "
                                  "WHERE ch=?", (channel,)).fetchone()
            if row is None:
                return None
            ch, raw, raw_epochs, raw_base, floor = row
            return self._channel(bytes(ch), raw, raw_epochs, raw_base, floor)
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None

    def probe(self) -> None:
        """A tiny write transaction: raises :class:`~p2pworld.errors.StoreFull` while the
        disk is still full (how a node in read-only mode learns that space is back)."""
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('probe', randomblob(512))")
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None

    def _channel(self, ch: bytes, raw: bytes, raw_epochs: bytes, raw_base: bytes,
                 floor: int) -> StoredChannel:
        rows = self.db.execute(
            "SELECT seq, hash, body FROM entries WHERE ch=? ORDER BY seq", (ch,))
        return decode_channel(ch, raw, raw_epochs, raw_base, floor, rows)

    def load_cursors(self) -> list[Checkpoint]:
        try:
            return [Checkpoint.from_wire(codec.decode_frame(bytes(b)))
                    for (b,) in self.db.execute("SELECT body FROM cursors")]
        except (sqlite3.DatabaseError, UnicodeDecodeError, DecodeError) as e:
            raise StoreCorrupt(f"{self.path}: checkpoints unreadable: {e}") from None

    def load_outbox(self) -> list[tuple[Submission, str]]:
        """The outbox, oldest first. A row that does not decode (written by an older build,
        or damaged) is moved aside (:meth:`move_aside`) and listed in :attr:`aside`: it never
        blocks the outbox or start-up."""
        self.aside: list[tuple[bytes, bytes, P2PWorldError]] = []
        out = []
        try:
            rows = self.db.execute(
                "SELECT ch, key, body, want FROM outbox ORDER BY rowid").fetchall()
            for ch, key, body, want in rows:
                try:
                    if want not in ("local", "replicated"):
                        raise DecodeError(f"outbox row: unknown ack strength {want!r}")
                    sub = Submission.from_wire(codec.decode_frame(bytes(body),
                                                                  max_bytes=MAX_ENTRY_BYTES))
                    if (sub.channel, sub.idem_key) != (bytes(ch), bytes(key)):
                        raise DecodeError("outbox row does not match its submission")
                except (P2PWorldError, UnicodeDecodeError, TypeError, ValueError) as e:
                    err = e if isinstance(e, P2PWorldError) else DecodeError(str(e))
                    self.move_aside(bytes(ch), bytes(key), err)
                    continue
                out.append((sub, str(want)))
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        return out

    def move_aside(self, channel: bytes, key: bytes, reason: P2PWorldError) -> None:
        """Move an outbox row that can never be sent to ``outbox_aside`` (kept, with the
        reason, for an operator; never resubmitted)."""
        try:
            with self.db:
                self.db.execute("BEGIN")
                self.db.execute("INSERT INTO outbox_aside SELECT ch, key, body, want, ? FROM "
                                "outbox WHERE ch=? AND key=?",
                                (f"{reason.code}: {reason.message}"[:500], channel, key))
                self.db.execute("DELETE FROM outbox WHERE ch=? AND key=?", (channel, key))
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        self.aside.append((channel, key, reason))

    def close(self) -> None:
        self.db.close()


def restore_outbox(store: Any, hub: ChannelHub) -> list[Notice]:
    """Load the durable outbox into ``hub`` at start (what the node and the simulator both
    do). A row that can never be sent (undecodable, for a channel this node no longer holds,
    or over its channel's payload limit: written by an older build) is moved aside with a
    typed notice instead of blocking the outbox or start-up."""
    notices = []
    for sub, want in store.load_outbox():
        err = hub.load_outbox(sub, want)
        if err is not None:
            store.move_aside(sub.channel, sub.idem_key, err)
    for ch, key, err in store.aside:
        err.details.setdefault("outbox_key", key.hex())
        notices.append(Notice(ch, err, scope="channel", subject=ch.hex()))
    return notices


def truncate_torn_tails(store: Any, loaded: list[StoredChannel]) -> None:
    """Drop the torn last row of every channel that has one (what a restart does before
    anything runs; ``store`` is a :class:`LogStore` or a store with the same contract). Left in
    place, a torn row would be followed by a second one if the node crashed again before it
    rewrote that seq, and the store would then be refused as corrupt."""
    for c in loaded:
        if c.torn:
            last = c.entries[-1].seq if c.entries else c.base.seq
            store.write([Write(record=c.record, epochs=tuple(c.epochs), truncate_after=last)])


def decode_channel(ch: bytes, raw: bytes, raw_epochs: bytes, raw_base: bytes, floor: int,
                   rows: Iterable[tuple[int, bytes, bytes]]) -> StoredChannel:
    """Rebuild and verify one stored channel (shared by every store implementation).

    Raises:
        StoreCorrupt: anything unreadable, or a chain that does not verify from the base.
    """
    try:
        rec = ChannelRecord.from_wire(codec.decode_frame(raw))
        rec.verify()
        epochs = [EpochChange.from_wire(e) for e in codec.decode_frame(raw_epochs)]
        base = ChannelState.decode(raw_base)
    except (P2PWorldError, TypeError, ValueError) as e:
        raise StoreCorrupt(f"channel {ch.hex()}: record, epochs or base unreadable: {e}",
                           channel=ch.hex()) from None
    if rec.channel != ch or base.record.genesis_hash != rec.genesis_hash or base.seq != floor:
        raise StoreCorrupt(f"channel {ch.hex()}: base state does not match", channel=ch.hex())
    walk = base.copy()
    later = [ec for ec in epochs if ec.epoch > walk.epoch]
    ents: list[Entry] = []
    rows = list(rows)
    for i, (seq, h, body) in enumerate(rows):
        try:
            entry = Entry.from_frame(body)
        except (P2PWorldError, ValueError, TypeError) as err:
            if i == len(rows) - 1:
                return StoredChannel(rec, epochs, base, ents, torn=True)
            raise StoreCorrupt(f"channel {ch.hex()}: entry {seq} unreadable: {err}",
                               channel=ch.hex(), seq=seq) from None
        try:
            while entry.epoch != walk.epoch and later and later[0].start_seq == walk.seq:
                walk.check_epoch_change(later[0])
                walk.apply_epoch(later.pop(0))
            if entry.seq != seq or entry.hash != h or entry.channel != ch:
                raise ValueError("row does not match its entry")
            entry.submission().verify()
            walk.apply(entry)
        except (P2PWorldError, ValueError, TypeError) as err:
            raise StoreCorrupt(f"channel {ch.hex()}: chain broken at seq {seq}: {err}",
                               channel=ch.hex(), seq=seq) from None
        ents.append(entry)
    return StoredChannel(rec, epochs, base, ents)
