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
)
from p2pworld.channel.writes import write_plan, written_rows
from p2pworld.core.persist import StoreEffect
from p2pworld.errors import (
    DecodeError,
    P2PWorldError,
    StoreCorrupt,
    StoreError,
    UnsupportedVersion,
)
from p2pworld.io.storage import store_failure
from p2pworld.log.entry import MAX_ENTRY_BYTES, Entry, Submission
from p2pworld.log.state import ChannelState
from p2pworld.log.verify import (
    ChannelCheck,
    ChannelRow,
    StoredChannel,
    base_proof,
    check_channel,
)

STORE_FORMAT = 4

__all__ = ["LogStore", "StoredChannel", "load_into", "restore_outbox", "decode_channel", "written_rows",
           "sqlite_check", "STORE_FORMAT"]

REPAIR_HINT = "run `p2pworld log repair` on it (rebuilds the indexes, then verifies)"
_TABLES = {"channels", "entries", "cursors", "outbox", "forks"}
"""Tables every store of format 2 and later has (``outbox_aside`` came later: created when
missing)."""


def sqlite_check(db: sqlite3.Connection, *, full: bool) -> str | None:
    """sqlite's own check of the file (``integrity_check`` when ``full``, else the cheaper
    ``quick_check``, which does not compare indexes with their tables); None when it passes,
    else its first finding."""
    pragma = "integrity_check" if full else "quick_check"
    rows = db.execute(f"PRAGMA {pragma}(20)").fetchall()
    if rows == [("ok",)]:
        return None
    return "; ".join(str(r[0]) for r in rows)[:500]


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
        try:
            if read_only:
                if not self.path.is_file():
                    raise StoreError(f"{self.path}: no such file", path=str(self.path))
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                          isolation_level=None, check_same_thread=False)
            else:
                self.db = sqlite3.connect(self.path, isolation_level=None,
                                          check_same_thread=False)
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        try:
            if not read_only:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
            self._schema()
            found = sqlite_check(self.db, full=False)
            if found is not None:
                raise StoreCorrupt(f"{self.path}: sqlite reports damage ({found}); "
                                   f"{REPAIR_HINT}", path=str(self.path))
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
        if self.read_only:
            row = self.db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            if row is None or row[0] not in (2, 3, STORE_FORMAT):
                raise UnsupportedVersion(f"{self.path}: not a p2pworld log of format 2 to "
                                         f"{STORE_FORMAT} (format {row and row[0]!r})")
            self.format = int(row[0])
            return
        tables = {r[0] for r in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        self.db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value)")
        row = self.db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if row is None and tables & _TABLES:
            raise StoreCorrupt(f"{self.path}: the store's format record is missing; "
                               f"{REPAIR_HINT}", path=str(self.path))
        if row is not None and not _TABLES <= tables:
            raise StoreCorrupt(f"{self.path}: tables missing: {sorted(_TABLES - tables)}",
                               path=str(self.path))
        if row is not None and row[0] not in (1, 2, 3, STORE_FORMAT):
            raise UnsupportedVersion(
                f"{self.path}: store format {row[0]!r}; this build reads formats 2 and 3 "
                f"(migrated) and {STORE_FORMAT}")
        if row is not None and row[0] == 1:
            raise UnsupportedVersion(
                f"{self.path}: store format 1 predates epochs and retention; export it with a "
                "0.1 build and re-import, or start a fresh home")
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
            """
        )
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if row is None:
                self.db.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
            elif row[0] in (2, 3):
                self._migrate()

    def _migrate(self) -> None:
        """Formats 2 and 3 to 4: add the head and base-proof columns, taking the head from
        the last row and a base's digest from the base as it is (no signature: the file held
        none). Format 2 has only writer signatures over single submissions, which format 4
        still reads; an older build must not open a store that may hold batch proofs, so the
        version moves on."""
        cols = {r[1] for r in self.db.execute("PRAGMA table_info(channels)")}
        for col, kind in (("base_proof", "BLOB"), ("head_seq", "INTEGER"),
                          ("head_hash", "BLOB"), ("head_sig", "BLOB")):
            if col not in cols:
                self.db.execute(f"ALTER TABLE channels ADD COLUMN {col} {kind}")
        for ch, base, floor in self.db.execute(
                "SELECT ch, base, floor FROM channels").fetchall():
            last = self.db.execute("SELECT seq, hash FROM entries WHERE ch=? ORDER BY seq DESC "
                                   "LIMIT 1", (ch,)).fetchone()
            proof = None
            if floor > 0:
                try:
                    proof = base_proof(None, ChannelState.decode(bytes(base)).state_hash())
                except (P2PWorldError, TypeError, ValueError):
                    proof = None  # left without one: the check on open reports the damage
            self.db.execute("UPDATE channels SET head_seq=?, head_hash=?, base_proof=? "
                            "WHERE ch=?", (last[0] if last else floor,
                                           last[1] if last else None, proof, ch))
        self.db.execute("UPDATE meta SET value=? WHERE key='format'", (STORE_FORMAT,))

    # --- writes (each call is one durable transaction) --------------------------------------

    def write(self, batch: Iterable[Persist]) -> None:
        """Several channels' writes in one transaction, so one fsync (group commit)."""
        self.apply(batch)

    def _write_one(self, w: Persist) -> None:
        """Carry out :func:`~p2pworld.channel.writes.write_plan` (this store decides
        nothing of what a write changes)."""
        ch = w.record.channel
        row = self.db.execute("SELECT floor FROM channels WHERE ch=?", (ch,)).fetchone()
        p = write_plan(w, stored_floor=None if row is None else int(row[0]))
        if p.record is not None:
            self.db.execute("INSERT INTO channels(ch, record, epochs, base, floor, base_proof, "
                            "head_seq) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (ch, p.record, p.epochs, p.base, p.floor, p.proof, p.floor))
        else:
            self.db.execute("UPDATE channels SET epochs=? WHERE ch=?", (p.epochs, ch))
        if p.drop_through is not None:
            self.db.execute("UPDATE channels SET base=?, floor=?, base_proof=? WHERE ch=?",
                            (p.base, p.floor, p.proof, ch))
            self.db.execute("DELETE FROM entries WHERE ch=? AND seq<=?", (ch, p.drop_through))
        if p.keep_through is not None:
            self.db.execute("DELETE FROM entries WHERE ch=? AND seq>?", (ch, p.keep_through))
        self.db.executemany(
            "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
            [(e.channel, e.seq, e.hash, e.to_frame()) for e in p.rows])
        head: tuple[int, bytes | None, bytes | None] | None = p.head
        if head is None and p.head_from_rows:
            top = self.db.execute("SELECT seq, hash FROM entries WHERE ch=? ORDER BY seq DESC "
                                  "LIMIT 1", (ch,)).fetchone()
            head = (top[0], top[1], None) if top else (p.floor, None, None)
        if head is not None:
            self.db.execute("UPDATE channels SET head_seq=?, head_hash=?, head_sig=? "
                            "WHERE ch=?", (*head, ch))

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
                elif isinstance(op, SaveCursor):
                    self.db.execute("INSERT OR REPLACE INTO cursors VALUES (?, ?)",
                                    (op.checkpoint.channel,
                                     codec.encode_frame(op.checkpoint.to_wire())))
                elif isinstance(op, OutboxPut):
                    sub = op.submission
                    self.db.execute("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?, ?)",
                                    (sub.channel, sub.idem_key,
                                     codec.encode_frame(sub.to_wire()), op.want))
                elif isinstance(op, OutboxDone):
                    self.db.execute("DELETE FROM outbox WHERE ch=? AND key=?",
                                    (op.channel, op.idem_key))
                else:
                    self.db.execute("INSERT INTO forks VALUES (?, ?, ?, ?)",
                                    (op.channel, op.held.seq, op.held.to_frame(),
                                     op.other.to_frame()))
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

    def _select_channels(self) -> str:
        """The ``channels`` columns :func:`channel_row` reads, for this file's format."""
        if self.format < 4:  # read-only and not migrated: no stored head or base proof
            return "SELECT ch, record, epochs, base, floor, NULL, NULL, NULL, NULL FROM channels"
        return ("SELECT ch, record, epochs, base, floor, base_proof, head_seq, head_hash, "
                "head_sig FROM channels")

    def load_channels(self, *, quarantine: bool = False) -> list[StoredChannel]:
        """Every channel with its verified entries, in ``seq`` order.

        Raises:
            StoreCorrupt: sqlite finds the file damaged (naming the file), or, unless
                ``quarantine``, a channel is damaged (naming the channel and seq). With
                ``quarantine`` a damaged channel is left out and listed in
                :attr:`quarantined` instead.
        """
        out = []
        self.quarantined = {}
        try:
            rows = self.db.execute(self._select_channels() + " ORDER BY ch").fetchall()
            known = {bytes(r[0]) for r in rows}
            for (ch,) in self.db.execute("SELECT DISTINCT ch FROM entries").fetchall():
                if not isinstance(ch, bytes) or len(ch) != 16:
                    raise StoreCorrupt(f"{self.path}: an entry row with a channel id of the "
                                       f"wrong type; {REPAIR_HINT}", path=str(self.path))
                if bytes(ch) not in known:
                    # Entries whose channel row is gone: that channel's record and head are
                    # lost, and reopening it would issue its acknowledged seqs again.
                    problem = StoreCorrupt(f"channel {bytes(ch).hex()}: entries without a "
                                           "channel record", channel=bytes(ch).hex())
                    self._database_wide(problem)
                    if not quarantine:
                        raise problem
                    self.quarantined[bytes(ch)] = problem
                    self.reports[bytes(ch)] = {
                        "channel": bytes(ch).hex(), "entries": 0, "chain_ok": False,
                        "signatures_ok": False, "base_ok": False, "head_ok": False,
                        "head_hash": None, "state_hash": None, "genesis_ok": None,
                        "errors": [problem.message]}
            for r in rows:
                check = self._check(r)
                self.reports[bytes(r[0])] = check.report
                if check.stored is not None:
                    out.append(check.stored)
                    continue
                assert check.problem is not None
                self._database_wide(check.problem)
                if not quarantine:
                    raise check.problem
                self.quarantined[bytes(r[0])] = check.problem
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        except UnicodeDecodeError as e:
            raise StoreCorrupt(f"{self.path}: {e}", path=str(self.path)) from None
        return out

    def _database_wide(self, problem: StoreCorrupt) -> None:
        """A channel looks damaged: if sqlite finds the file itself damaged (an index that
        no longer matches its table hides or reorders rows), refuse the whole file."""
        found = sqlite_check(self.db, full=True)
        if found is not None:
            raise StoreCorrupt(f"{self.path}: sqlite reports damage ({found}) seen as "
                               f"{problem.message}; {REPAIR_HINT}", path=str(self.path))

    def load_channel(self, channel: bytes) -> StoredChannel | None:
        """One channel as it is on disk (None: not stored), verified like
        :meth:`load_channels`."""
        try:
            row = self.db.execute(self._select_channels() + " WHERE ch=?", (channel,)).fetchone()
            if row is None:
                return None
            check = self._check(row)
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        if check.problem is not None:
            raise check.problem
        return check.stored

    def _check(self, r: tuple[Any, ...]) -> ChannelCheck:
        if not isinstance(r[0], bytes) or len(r[0]) != 16:
            raise StoreCorrupt(f"{self.path}: a channel row with an id of the wrong type; "
                               f"{REPAIR_HINT}", path=str(self.path))
        ch = bytes(r[0])
        rows = self.db.execute(
            "SELECT seq, hash, body FROM entries WHERE ch=? ORDER BY seq", (ch,))
        try:
            row = channel_row(r, legacy=self.format < 4)
        except (TypeError, ValueError) as e:
            # A damaged page can hand back a value of another type (text for a blob, ...).
            problem = StoreCorrupt(f"channel {ch.hex()}: a column of the wrong type ({e})",
                                   channel=ch.hex())
            return ChannelCheck({"channel": ch.hex(), "entries": 0, "chain_ok": False,
                                 "signatures_ok": False, "base_ok": False, "head_ok": False,
                                 "head_hash": None, "state_hash": None, "genesis_ok": None,
                                 "errors": [problem.message]}, None, problem)
        return check_channel(row, rows)

    def probe(self) -> None:
        """A tiny write transaction: raises :class:`~p2pworld.errors.StoreFull` while the
        disk is still full (how a node in read-only mode learns that space is back)."""
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('probe', randomblob(512))")
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None

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


def channel_row(r: tuple[Any, ...], *, legacy: bool = False) -> ChannelRow:
    """A ``channels`` row as :class:`LogStore` selects it (``legacy``: from a store of an
    older format, read without migrating it)."""
    ch, record, epochs, base, floor, proof, head_seq, head_hash, head_sig = r
    return ChannelRow(legacy=legacy, channel=bytes(ch), record=bytes(record),
                      epochs=bytes(epochs),
                      base=bytes(base), floor=int(floor),
                      base_proof=None if proof is None else bytes(proof),
                      head_seq=None if head_seq is None else int(head_seq),
                      head_hash=None if head_hash is None else bytes(head_hash),
                      head_sig=None if head_sig is None else bytes(head_sig))


def load_into(hub: ChannelHub, store: Any, loaded: list[StoredChannel]) -> list[Notice]:
    """What a node takes from its store at start, the runtime and the simulator alike:
    ``loaded`` (``store.load_channels(quarantine=True)``) into ``hub``, every damaged channel
    quarantined with a notice, the checkpoints of the others, and the outbox
    (:func:`restore_outbox`). Returns the notices."""
    for c in loaded:
        hub.load(c.record, c.epochs, c.base, c.entries, c.head)
    notices = []
    for ch, err in sorted(store.quarantined.items()):
        hub.quarantine(ch, err)
        notices.append(Notice(ch, err, scope="channel", subject=ch.hex()))
    for cp in store.load_cursors():
        if cp.channel not in store.quarantined:
            hub.load_cursor(cp)
    return notices + restore_outbox(store, hub)


def restore_outbox(store: Any, hub: ChannelHub) -> list[Notice]:
    """Load the durable outbox into ``hub`` at start (what the node and the simulator both
    do). A row that can never be sent (undecodable, for a channel this node no longer holds,
    or over its channel's payload limit: written by an older build) is moved aside with a
    typed notice instead of blocking the outbox or start-up."""
    notices = []
    for sub, want in store.load_outbox():
        if sub.channel in hub.quarantined:
            continue  # kept on disk: sent once the channel is repaired
        err = hub.load_outbox(sub, want)
        if err is not None:
            store.move_aside(sub.channel, sub.idem_key, err)
    for ch, key, err in store.aside:
        err.details.setdefault("outbox_key", key.hex())
        notices.append(Notice(ch, err, scope="channel", subject=ch.hex()))
    return notices


def decode_channel(row: ChannelRow, rows: Iterable[tuple[int, bytes, bytes]]
                   ) -> StoredChannel:
    """Rebuild and verify one stored channel (shared by every store implementation).

    Raises:
        StoreCorrupt: anything unreadable, a chain that does not verify from the base, a base
            that does not match its proof, or rows that end before the stored head.
    """
    check = check_channel(row, rows)
    if check.problem is not None:
        raise check.problem
    assert check.stored is not None
    return check.stored


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
