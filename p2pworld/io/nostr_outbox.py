"""The bridge outbox: Nostr events waiting to be published on every configured relay.

``bridge_outbox`` of the seed: ``enqueue`` (``enqueue_nostr_bridge_event``) stores a signed
event durably (sqlite, ``synchronous=FULL``) once per event id, with the p2pworld id and log
entry hash it mirrors (the mapping is kept both ways); ``mark`` (``mark_bridge_event_published``)
records a relay's ``OK true`` or ``duplicate:``; an event stays due on a relay until then,
retried with exponential backoff. :class:`Bridge` drains it into a
:class:`~p2pworld.io.nostr_relay.RelayPool`; the relays' pace never reaches the caller of
``enqueue`` (the primary lane), which only writes a row. The format check, the retry schedule
and how rows read back are :mod:`p2pworld.nostr.bridge_book` (pure); this module runs the
statements.

Example:
    >>> import tempfile, pathlib
    >>> from p2pworld.nostr.event import Event
    >>> from p2pworld.nostr.keys import NostrKey
    >>> ev = Event.create(NostrKey(bytes(31) + b"\\x01"), kind=1, content="x", tags=[],
    ...                   created_at=1, aux=bytes(32))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     box = Outbox(pathlib.Path(d) / "bridge.db", relays=["ws://a", "ws://b"])
    ...     box.enqueue(ev, source="chan:1", entry_hash=b"h" * 32, now=0)
    ...     box.mark(ev.id, "ws://a", ok=True, now=1)
    ...     [(e.id == ev.id, r) for e, r in box.due(now=2)], box.source_of(ev.id)
    ...     box.close()
    True
    ([(True, 'ws://b')], 'chan:1')
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2pworld.errors import StoreCorrupt
from p2pworld.nostr.bridge_book import (
    FORMAT_VERSION,
    RETRY_BASE_S,
    RETRY_CAP_S,
    check_format,
    due_rows,
    next_attempt,
    source_of_row,
)
from p2pworld.nostr.event import Event


class Outbox:
    """Durable outbox of one node (``bridge.db``)."""

    def __init__(self, path: Path | str, *, relays: list[str]) -> None:
        self.relays = list(dict.fromkeys(relays))
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreCorrupt(f"{path}: {e}") from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = self.db.execute(
                "SELECT name FROM sqlite_master WHERE name='events'").fetchone()
            check_format(path, version, has_events=tables is not None)
            self.db.executescript(f"""
                CREATE TABLE IF NOT EXISTS events(id TEXT PRIMARY KEY, body TEXT NOT NULL,
                    source TEXT NOT NULL, entry_hash BLOB NOT NULL, kind INTEGER NOT NULL,
                    enqueued REAL NOT NULL);
                CREATE INDEX IF NOT EXISTS by_source ON events(source);
                CREATE UNIQUE INDEX IF NOT EXISTS one_mirror
                    ON events(source, entry_hash, kind) WHERE entry_hash != x'';
                CREATE TABLE IF NOT EXISTS deliveries(id TEXT NOT NULL, relay TEXT NOT NULL,
                    state TEXT NOT NULL, attempts INTEGER NOT NULL, next_at REAL NOT NULL,
                    last TEXT NOT NULL, PRIMARY KEY(id, relay));
                PRAGMA user_version = {FORMAT_VERSION};
            """)
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise StoreCorrupt(f"{path}: {e}") from None
        except BaseException:
            self.db.close()
            raise

    def enqueue(self, ev: Event, *, source: str, entry_hash: bytes, now: float) -> bool:
        """``enqueue_nostr_bridge_event``: store once per event id, and once per
        ``(source, entry_hash, kind)`` when ``entry_hash`` is given (a log entry mirrored
        again after a restart is not published twice); False if already held. One
        transaction: the event and its pending delivery to every relay."""
        with self.db:
            cur = self.db.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?)",
                                  (ev.id, ev.to_json(), source, entry_hash, ev.kind, now))
            if cur.rowcount == 0:
                return False
            self.db.executemany("INSERT OR IGNORE INTO deliveries VALUES (?, ?, 'due', 0, ?, '')",
                                [(ev.id, r, now) for r in self.relays])
        return True

    def mark(self, event_id: str, relay: str, *, ok: bool, message: str = "",
             now: float) -> None:
        """``mark_bridge_event_published`` on ``OK true`` (or ``duplicate:``); otherwise the
        delivery is retried later with exponential backoff."""
        with self.db:
            if ok:
                self.db.execute("UPDATE deliveries SET state='published', last=? "
                                "WHERE id=? AND relay=?", (message[:200], event_id, relay))
                return
            row = self.db.execute("SELECT attempts FROM deliveries WHERE id=? AND relay=?",
                                  (event_id, relay)).fetchone()
            attempts, next_at = next_attempt(row, now=now)
            self.db.execute("UPDATE deliveries SET attempts=?, next_at=?, last=? "
                            "WHERE id=? AND relay=? AND state='due'",
                            (attempts, next_at, message[:200], event_id, relay))

    def due(self, *, now: float, limit: int = 256) -> list[tuple[Event, str]]:
        """Events due on some relay now (oldest first). Rows are re-checked like network
        input: a row that does not parse is skipped (and reported by :meth:`bad_rows`)."""
        rows = self.db.execute(
            "SELECT e.body, d.relay FROM deliveries d JOIN events e ON e.id = d.id "
            "WHERE d.state='due' AND d.next_at <= ? ORDER BY e.enqueued, d.relay LIMIT ?",
            (now, limit)).fetchall()
        return due_rows(rows)

    def pending(self) -> int:
        return int(self.db.execute(
            "SELECT count(*) FROM deliveries WHERE state='due'").fetchone()[0])

    def state(self, event_id: str) -> dict[str, str]:
        return dict(self.db.execute("SELECT relay, state FROM deliveries WHERE id=?",
                                    (event_id,)).fetchall())

    def source_of(self, event_id: str) -> str | None:
        """The p2pworld id an event mirrors (the mapping, one way)."""
        return source_of_row(self.db.execute("SELECT source FROM events WHERE id=?",
                                             (event_id,)).fetchone())

    def events_for(self, source: str) -> list[str]:
        """The Nostr event ids mirroring a p2pworld id (the mapping, the other way)."""
        return [r[0] for r in self.db.execute(
            "SELECT id FROM events WHERE source=? ORDER BY enqueued", (source,))]

    def ids(self) -> list[str]:
        """Every event id held (oldest first)."""
        return [r[0] for r in self.db.execute("SELECT id FROM events ORDER BY enqueued, id")]

    def first_events(self, prefix: str) -> dict[str, str]:
        """The oldest event id of every source starting with ``prefix`` (mirrors rebuild their
        references, e.g. a compute request's event id, after a restart)."""
        out: dict[str, str] = {}
        for source, eid in self.db.execute(
                "SELECT source, id FROM events WHERE source >= ? AND source < ? "
                "ORDER BY enqueued DESC", (prefix, prefix + "\uffff")):
            out[source] = eid
        return out

    def close(self) -> None:
        self.db.close()


__all__ = ["Outbox", "FORMAT_VERSION", "RETRY_BASE_S", "RETRY_CAP_S"]
