"""Durable world state: the incarnation counter and every author's records, in sqlite.

World documents are soft state (any peer can send them again), so document rows are written
without waiting for an fsync of their own. The incarnation counter is different: it is bumped
and fsynced *before* this node signs anything, so a crash can never make it reuse a CRDT
client id (see ``docs/world.md``).

Example:
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     s = WorldStore(pathlib.Path(d) / "world.db")
    ...     s.bump_incarnation(), s.bump_incarnation()
    ...     s.close()
    (1, 2)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2pworld import codec
from p2pworld.io.storage import store_failure
from p2pworld.world.stored import FORMAT, format_statements, next_incarnation, world_records

__all__ = ["WorldStore", "MemoryWorldStore", "FORMAT"]


class WorldStore:
    """One node's world store (``world.db`` in the node home)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.skipped = 0
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript("""
                CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value);
                CREATE TABLE IF NOT EXISTS docs(author BLOB PRIMARY KEY, records BLOB NOT NULL);
            """)
            row = self.db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            for sql, args in format_statements(str(self.path), row):
                self.db.execute(sql, args)
        except sqlite3.Error as e:
            self.db.close()
            raise store_failure(self.path, e) from None
        except BaseException:
            self.db.close()
            raise

    def bump_incarnation(self) -> int:
        """Increment and fsync the incarnation counter; returns the new value (from 1)."""
        try:
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT value FROM meta WHERE key='incarnation'").fetchone()
            new = next_incarnation(str(self.path), row)
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('incarnation', ?)", (new,))
            self.db.execute("COMMIT")
            self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise store_failure(self.path, e) from None
        return new

    def save(self, author: bytes, records: tuple[bytes, ...]) -> None:
        self.save_many([(author, records)])

    def save_many(self, rows: list[tuple[bytes, tuple[bytes, ...]]]) -> None:
        """Raises :class:`~p2pworld.errors.StoreFull` / ``StoreError`` (typed) on failure."""
        try:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?)",
                                    [(a, codec.encode_frame(list(r))) for a, r in rows])
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None

    def load(self) -> list[list[bytes]]:
        """Every author's records. A row that does not decode is skipped and counted (the
        records are refetched from peers); each record is checked again by the world core
        (:func:`~p2pworld.world.stored.world_records`)."""
        try:
            rows = self.db.execute("SELECT author, records FROM docs ORDER BY author").fetchall()
        except sqlite3.Error as e:
            raise store_failure(self.path, e) from None
        out, skipped = world_records(blob for _author, blob in rows)
        self.skipped += skipped
        return out

    def close(self) -> None:
        self.db.close()


class MemoryWorldStore:
    """The same contract in memory, for the simulator: rows survive a process crash (WAL with
    ``synchronous=NORMAL`` does too), the incarnation counter is durable when bumped."""

    def __init__(self) -> None:
        self.incarnation = 0
        self.docs: dict[bytes, tuple[bytes, ...]] = {}

    def close(self) -> None:
        """Nothing to close (the same method as :class:`WorldStore`'s)."""

    def bump_incarnation(self) -> int:
        self.incarnation += 1
        return self.incarnation

    def save(self, author: bytes, records: tuple[bytes, ...]) -> None:
        self.docs[author] = records

    def load(self) -> list[list[bytes]]:
        return [list(self.docs[a]) for a in sorted(self.docs)]
