"""Durable channel storage in sqlite (WAL, ``synchronous=FULL``).

The store is driven by a shell, never by a core: cores return
:class:`~p2pworld.channel.hub.Persist` (and cursor/outbox/fork) effects and the shell applies them;
each call commits, and so fsyncs the WAL, before it returns. Acks are released only after that.

Schema, format 4 (``docs/protocol.md`` §7)::

    meta(key TEXT PRIMARY KEY, value)                  -- 'format' = 4
    channels(ch BLOB PRIMARY KEY, record BLOB, epochs BLOB, base BLOB, floor INTEGER,
             base_proof BLOB, head_seq INTEGER, head_hash BLOB, head_sig BLOB)
    entries(ch BLOB, seq INTEGER, hash BLOB, body BLOB, PRIMARY KEY (ch, seq))
    cursors(ch BLOB PRIMARY KEY, body BLOB)            -- ack_message checkpoints
    outbox(ch BLOB, key BLOB, body BLOB, want TEXT, PRIMARY KEY (ch, key))
    forks(ch BLOB, seq INTEGER, held BLOB, other BLOB)   -- proof, kept forever
    outbox_aside(ch BLOB, key BLOB, body BLOB, want TEXT, reason TEXT)

Every commit stores the channel's head with it (``head_seq``, ``head_hash``, and the
sequencer's signature over it when the commit came with one), and a retention base with its
digest and the sequencer's snapshot signature. On open every chain is re-verified from its
base by :func:`~p2pworld.log.verify.check_channel`, the walker ``p2pworld log verify`` runs
too: a row that does not decode (the last one included: commits are atomic), a broken chain,
a base that does not match its proof, or rows that end before the stored head are damage. A
damaged channel is reported as :class:`StoreCorrupt` naming the channel and seq: the node
quarantines that channel and serves the others (``load_channels(quarantine=True)``). Damage
to the file itself (sqlite's own ``quick_check`` on every open, and ``integrity_check``, which
also compares every index with its table, whenever a channel looks damaged) refuses the whole
file with a ``StoreCorrupt`` naming it; ``p2pworld log repair`` rebuilds the indexes and
verifies again.

Formats 2 and 3 are migrated in place (their rows are valid format 4 rows; the head is taken
from the last row and an existing base gets its digest, unsigned, at migration). Format 1
(pre-release: no epochs, no retention) is refused with a clear message.

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
from pathlib import Path
from typing import Any

from p2pworld import codec
from p2pworld.channel.hub import (
    ChannelHub,
    Checkpoint,
    Notice,
    OutboxDone,
    OutboxPut,
    Persist,
    RecordFork,
    SaveCursor,
    SaveVote,
)
from p2pworld.channel.restore import aside_notices, load_cursors, load_stored, unsendable
from p2pworld.channel.statements import (
    INSERT_ENTRY,
    SELECT_FLOOR,
    SELECT_TOP,
    effect_statement,
    head_statements,
    plan_statements,
    vote_from_row,
)
from p2pworld.channel.writes import write_plan, written_rows
from p2pworld.core.persist import StoreEffect
from p2pworld.errors import P2PWorldError, StoreCorrupt
from p2pworld.io.storage import store_failure
from p2pworld.log.entry import Entry, Submission
from p2pworld.log.rows import (
    STORE_FORMAT,
    ChannelLoad,
    FormatStep,
    aside_reason,
    channel_id,
    channel_row,
    check_finding,
    check_row,
    check_statement,
    damaged_report,
    decode_channel,
    format_step,
    migrated_head,
    missing_columns,
    open_plan,
    orphans,
    outbox_rows,
    readable_format,
    refuse_file_damage,
    select_channels,
    stored_floor,
    stored_or_raise,
)
from p2pworld.log.verify import ChannelCheck, StoredChannel

__all__ = ["LogStore", "StoredChannel", "load_into", "restore_outbox", "decode_channel", "written_rows",
           "sqlite_check", "STORE_FORMAT", "channel_row"]


def sqlite_check(db: sqlite3.Connection, *, full: bool) -> str | None:
    """sqlite's own check of the file (``integrity_check`` when ``full``, else the cheaper
    ``quick_check``, which does not compare indexes with their tables); None when it passes,
    else its first finding (:func:`~p2pworld.log.rows.check_finding`)."""
    return check_finding(db.execute(check_statement(full=full)).fetchall())


class LogStore:
    """All channel logs of one node, in one sqlite file.

    Opening runs sqlite's ``quick_check`` (damage to the file refuses it, typed, naming it);
    :meth:`load_channels` then checks every channel. ``read_only`` opens without writing
    anything (no migration, no lock needed): what ``p2pworld log verify`` uses, so the node
    and the operator's check run the same code. ``quarantined`` holds the channels
    :meth:`load_channels` found damaged (with ``quarantine=True``), ``reports`` what the check
    found for each channel."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.quarantined: dict[bytes, StoreCorrupt] = {}
        self.reports: dict[bytes, dict[str, Any]] = {}
        self.syncs = 0
        self.format = STORE_FORMAT
        plan = open_plan(str(self.path), read_only=read_only, exists=self.path.is_file())
        try:
            self.db = sqlite3.connect(plan.target, uri=plan.uri, isolation_level=None,
                                      check_same_thread=False)
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        try:
            for pragma in plan.pragmas:
                self.db.execute(pragma)
            self._schema()
            refuse_file_damage(str(self.path), sqlite_check(self.db, full=False))
        except sqlite3.Error as e:
            self.db.close()
            raise store_failure(self.path, e) from None
        except UnicodeDecodeError as e:
            self.db.close()
            raise StoreCorrupt(f"{self.path}: {e}", path=str(self.path)) from None
        except BaseException:
            self.db.close()
            raise

    def _schema(self) -> None:
        """Check the file's format (:func:`~p2pworld.log.rows.format_step`) and carry out
        what it needs: create the schema, record the format or migrate."""
        if self.read_only:
            row = self.db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            self.format = readable_format(str(self.path), row)
            return
        tables = {r[0] for r in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        self.db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value)")
        row = self.db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        step = format_step(str(self.path), row, tables)
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS channels(ch BLOB PRIMARY KEY, record BLOB NOT NULL,
                epochs BLOB NOT NULL, base BLOB NOT NULL, floor INTEGER NOT NULL,
                base_proof BLOB, head_seq INTEGER, head_hash BLOB, head_sig BLOB);
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
            CREATE TABLE IF NOT EXISTS votes(ch BLOB PRIMARY KEY, body BLOB NOT NULL);
            """
        )
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if step is FormatStep.CREATE:
                self.db.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
            elif step is FormatStep.MIGRATE:
                self._migrate()

    def _migrate(self) -> None:
        """Formats 2 and 3 to 4: add the head and base-proof columns, taking the head from
        the last row and a base's digest from the base as it is (no signature: the file held
        none). Format 2 has only writer signatures over single submissions, which format 4
        still reads; an older build must not open a store that may hold batch proofs, so the
        version moves on."""
        for alter in missing_columns(r[1] for r in self.db.execute("PRAGMA table_info(channels)")):
            self.db.execute(alter)
        for ch, base, floor in self.db.execute(
                "SELECT ch, base, floor FROM channels").fetchall():
            last = self.db.execute(SELECT_TOP, (ch,)).fetchone()
            self.db.execute("UPDATE channels SET head_seq=?, head_hash=?, base_proof=? "
                            "WHERE ch=?", (*migrated_head(base, floor, last), ch))
        self.db.execute("UPDATE meta SET value=? WHERE key='format'", (STORE_FORMAT,))

    # --- writes (each call is one durable transaction) --------------------------------------

    def write(self, batch: Iterable[Persist]) -> None:
        """Several channels' writes in one transaction, so one fsync (group commit)."""
        self.apply(batch)

    def _write_one(self, w: Persist) -> None:
        """Carry out :func:`~p2pworld.channel.writes.write_plan` (this store decides
        nothing of what a write changes)."""
        ch = w.record.channel
        p = write_plan(w, stored_floor=stored_floor(
            self.db.execute(SELECT_FLOOR, (ch,)).fetchone()))
        for sql, args in plan_statements(ch, p):
            self.db.execute(sql, args)
        self.db.executemany(INSERT_ENTRY,
                            [(e.channel, e.seq, e.hash, e.to_frame()) for e in p.rows])
        top = self.db.execute(SELECT_TOP, (ch,)).fetchone() if p.head_from_rows else None
        for sql, args in head_statements(ch, p, top):
            self.db.execute(sql, args)

    def apply(self, ops: Iterable[StoreEffect]) -> None:
        """Every durable effect of one batch (the cores' own effects: ``Persist``,
        ``SaveCursor``, ``OutboxPut``, ``OutboxDone``, ``RecordFork``) in one transaction: one
        fsync (group commit).
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

    def _apply(self, ops: Iterable[StoreEffect]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for op in ops:
                if isinstance(op, Persist):
                    self._write_one(op)
                else:
                    self.db.execute(*effect_statement(op))
        self.syncs += 1

    def save_cursor(self, checkpoint: Checkpoint) -> None:
        self.apply([SaveCursor(checkpoint)])

    def outbox_put(self, sub: Submission, want: str) -> None:
        self.apply([OutboxPut(sub, want)])

    def outbox_done(self, channel: bytes, key: bytes) -> None:
        self.apply([OutboxDone(channel, key)])

    def record_fork(self, channel: bytes, held: Entry, other: Entry) -> None:
        self.apply([RecordFork(channel, held, other)])

    # --- reads ------------------------------------------------------------------------------

    def load_channels(self, *, quarantine: bool = False) -> list[StoredChannel]:
        """Every channel with its verified entries, in ``seq`` order.

        Raises:
            StoreCorrupt: sqlite finds the file damaged (naming the file), or, unless
                ``quarantine``, a channel is damaged (naming the channel and seq). With
                ``quarantine`` a damaged channel is left out and listed in
                :attr:`quarantined` instead.
        """
        load = ChannelLoad(quarantine=quarantine, reports=self.reports)
        self.quarantined = load.quarantined
        try:
            rows = self.db.execute(select_channels(self.format) + " ORDER BY ch").fetchall()
            ids = [channel_id(str(self.path), r[0], what="a channel row with an id")
                   for r in rows]
            known = set(ids)
            entry_channels = [ch for (ch,) in self.db.execute(
                "SELECT DISTINCT ch FROM entries").fetchall()]
            for ch, problem in orphans(str(self.path), known, entry_channels):
                self._database_wide(problem)
                load.damaged(ch, problem, report=damaged_report(ch, problem))
            for ch, r in zip(ids, rows, strict=True):
                damage = load.checked(ch, self._check(r))
                if damage is not None:
                    self._database_wide(damage)
                    load.damaged(ch, damage)
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        except UnicodeDecodeError as e:
            raise StoreCorrupt(f"{self.path}: {e}", path=str(self.path)) from None
        return load.stored

    def _database_wide(self, problem: StoreCorrupt) -> None:
        """A channel looks damaged: if sqlite finds the file itself damaged (an index that
        no longer matches its table hides or reorders rows), refuse the whole file."""
        refuse_file_damage(str(self.path), sqlite_check(self.db, full=True),
                           seen_as=problem.message)

    def load_channel(self, channel: bytes) -> StoredChannel | None:
        """One channel as it is on disk (None: not stored), verified like
        :meth:`load_channels`."""
        try:
            row = self.db.execute(select_channels(self.format) + " WHERE ch=?",
                                  (channel,)).fetchone()
            if row is None:
                return None
            check = self._check(row)
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        return stored_or_raise(check)

    def _check(self, r: tuple[Any, ...]) -> ChannelCheck:
        ch = channel_id(str(self.path), r[0], what="a channel row with an id")
        rows = self.db.execute(
            "SELECT seq, hash, body FROM entries WHERE ch=? ORDER BY seq", (ch,))
        return check_row(r, rows, legacy=self.format < 4)

    def probe(self) -> None:
        """A tiny write transaction: raises :class:`~p2pworld.errors.StoreFull` while the
        disk is still full (how a node in read-only mode learns that space is back)."""
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('probe', randomblob(512))")
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None

    def load_votes(self) -> list[SaveVote]:
        """This node's durable votes, one per channel (none in a file made before elections,
        opened read-only)."""
        try:
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                               "name='votes'").fetchone() is None:
                return []
            return [vote_from_row(bytes(b)) for (b,) in self.db.execute("SELECT body FROM votes")]
        except (sqlite3.DatabaseError, UnicodeDecodeError, P2PWorldError, TypeError,
                ValueError) as e:
            raise StoreCorrupt(f"{self.path}: votes unreadable: {e}", path=str(self.path)) from None

    def load_cursors(self) -> list[Checkpoint]:
        try:
            return [Checkpoint.from_wire(codec.decode_frame(bytes(b)))
                    for (b,) in self.db.execute("SELECT body FROM cursors")]
        except (sqlite3.DatabaseError, UnicodeDecodeError, P2PWorldError, TypeError,
                ValueError) as e:
            raise StoreCorrupt(f"{self.path}: checkpoints unreadable: {e}",
                               path=str(self.path)) from None

    def load_outbox(self) -> list[tuple[Submission, str]]:
        """The outbox, oldest first. A row that does not decode (written by an older build,
        or damaged) is moved aside (:meth:`move_aside`) and listed in :attr:`aside`: it never
        blocks the outbox or start-up."""
        self.aside: list[tuple[bytes, bytes, P2PWorldError]] = []
        out: list[tuple[Submission, str]] = []
        try:
            rows = self.db.execute(
                "SELECT ch, key, body, want FROM outbox ORDER BY rowid").fetchall()
            for ch, key, err in outbox_rows(rows, out):
                self.move_aside(ch, key, err)
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
                                (aside_reason(reason), channel, key))
                self.db.execute("DELETE FROM outbox WHERE ch=? AND key=?", (channel, key))
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        self.aside.append((channel, key, reason))

    def close(self) -> None:
        self.db.close()

    def copy_into(self, other: LogStore) -> LogStore:
        """Copy what this store holds, as committed, over ``other`` (sqlite's backup API);
        returns ``other`` opened again. An old copy of a store, for tests of a rollback."""
        self.db.backup(other.db)
        return other.crash()

    def crash(self) -> LogStore:
        """What a process killed now leaves behind, opened again: the file as committed
        (every write is one committed transaction, so nothing else was pending). The
        simulator's crash on the real store, and a test's view of ``kill -9``."""
        self.db.close()
        return LogStore(self.path)


def load_into(hub: ChannelHub, store: Any, loaded: list[StoredChannel]) -> list[Notice]:
    """What a node takes from its store at start, the runtime and the simulator alike:
    ``loaded`` (``store.load_channels(quarantine=True)``) into ``hub``, every damaged channel
    quarantined with a notice, the checkpoints of the others, and the outbox
    (:func:`restore_outbox`). Returns the notices (the decisions are
    :mod:`p2pworld.channel.restore`'s)."""
    notices = load_stored(hub, loaded, store.quarantined)
    load_cursors(hub, store.load_cursors(), store.quarantined)
    hub.load_votes(store.load_votes())
    return notices + restore_outbox(store, hub)


def restore_outbox(store: Any, hub: ChannelHub) -> list[Notice]:
    """Load the durable outbox into ``hub`` at start (what the node and the simulator both
    do). A row that can never be sent (undecodable, for a channel this node no longer holds,
    or over its channel's payload limit: written by an older build) is moved aside with a
    typed notice instead of blocking the outbox or start-up."""
    for ch, key, err in unsendable(hub, store.load_outbox()):
        store.move_aside(ch, key, err)
    return aside_notices(store.aside)

def stored_or_damaged(store: Any, channels: list[bytes]
                      ) -> tuple[tuple[bytes, StoredChannel | StoreCorrupt | None], ...]:
    """What ``store`` (this or the simulator's memory store) holds of each channel, after a
    transaction that did not commit: the channel as ``load_channel`` gives it (None: not
    stored), or the damage found, as a value (the node quarantines that channel and goes
    on)."""
    out: list[tuple[bytes, StoredChannel | StoreCorrupt | None]] = []
    for ch in channels:
        try:
            out.append((ch, store.load_channel(ch)))
        except StoreCorrupt as e:
            out.append((ch, e))
    return tuple(out)
