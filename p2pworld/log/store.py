"""Durable channel storage in sqlite (WAL, ``synchronous=FULL``).

The store is driven by a shell, never by a core: cores return :class:`~p2pworld.log.hub.Persist`
effects and the shell calls :meth:`LogStore.persist`, which commits (and so fsyncs the WAL)
before returning. Acks are released only after that call returns.

Schema version 1 (``docs/protocol.md``, "Disk formats")::

    meta(key TEXT PRIMARY KEY, value BLOB)            -- 'format' = 1
    channels(ch BLOB PRIMARY KEY, record BLOB)         -- frame(ChannelRecord.to_wire())
    entries(ch BLOB, seq INTEGER, hash BLOB, body BLOB, PRIMARY KEY (ch, seq))
                                                       -- body = frame(Entry.to_wire())

On open every channel's chain is re-verified (links and hashes); a break is a
:class:`~p2pworld.errors.StoreCorrupt` naming the channel and seq, and nothing is served.

Example:
    >>> import tempfile, pathlib
    >>> store = LogStore(pathlib.Path(tempfile.mkdtemp()) / "log.db")
    >>> store.load()
    []
    >>> store.close()
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from p2pworld import codec
from p2pworld.errors import DecodeError, StoreCorrupt, UnsupportedVersion
from p2pworld.log.entry import GENESIS_HASH, ChannelRecord, Entry

STORE_FORMAT = 1


class LogStore:
    """All channel logs of one node, in one sqlite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB);
            CREATE TABLE IF NOT EXISTS channels(ch BLOB PRIMARY KEY, record BLOB NOT NULL);
            CREATE TABLE IF NOT EXISTS entries(
                ch BLOB NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL, body BLOB NOT NULL,
                PRIMARY KEY (ch, seq));
            """
        )
        row = self.db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('format', ?)", (STORE_FORMAT,))
        elif row[0] != STORE_FORMAT:
            raise UnsupportedVersion(
                f"{self.path}: store format {row[0]!r}; this build reads format {STORE_FORMAT}")
        self.syncs = 0

    def persist(self, record: ChannelRecord, entries: Sequence[Entry]) -> None:
        """Write a record and entries in one transaction; returns after the commit is durable."""
        self.persist_many([(record, entries)])

    def persist_many(self, batch: Sequence[tuple[ChannelRecord, Sequence[Entry]]]) -> None:
        """Several channels' writes in one transaction, so one fsync (group commit)."""
        with self.db:
            self.db.execute("BEGIN")
            for record, entries in batch:
                self.db.execute("INSERT OR REPLACE INTO channels VALUES (?, ?)",
                                (record.channel, codec.encode_frame(record.to_wire())))
                self.db.executemany(
                    "INSERT INTO entries VALUES (?, ?, ?, ?)",
                    [(e.channel, e.seq, e.hash, codec.encode_frame(e.to_wire()))
                     for e in entries],
                )
        self.syncs += 1

    def load(self) -> list[tuple[ChannelRecord, list[Entry]]]:
        """Every channel with its verified entries, in ``seq`` order."""
        out = []
        for ch, raw in self.db.execute("SELECT ch, record FROM channels ORDER BY ch"):
            try:
                rec = ChannelRecord.from_wire(codec.decode_frame(raw))
                rec.verify()
            except (DecodeError, UnsupportedVersion) as e:
                raise StoreCorrupt(f"channel record {bytes(ch).hex()} unreadable: {e}") from None
            except Exception as e:  # noqa: BLE001 - any verification failure is corruption
                raise StoreCorrupt(f"channel record {bytes(ch).hex()}: {e}") from None
            out.append((rec, self._entries(rec)))
        return out

    def _entries(self, rec: ChannelRecord) -> list[Entry]:
        prev = GENESIS_HASH
        ents: list[Entry] = []
        rows = self.db.execute(
            "SELECT seq, hash, body FROM entries WHERE ch=? ORDER BY seq", (rec.channel,))
        for seq, h, body in rows:
            try:
                e = Entry.from_wire(codec.decode_frame(body))
            except (DecodeError, UnsupportedVersion) as err:
                raise StoreCorrupt(f"channel {rec.channel.hex()} seq {seq}: {err}") from None
            if e.seq != seq or e.seq != len(ents) + 1 or e.prev_hash != prev or e.hash != h:
                raise StoreCorrupt(f"channel {rec.channel.hex()}: chain broken at seq {seq}",
                                   channel=rec.channel.hex(), seq=seq)
            prev = e.hash
            ents.append(e)
        return ents

    def close(self) -> None:
        self.db.close()
