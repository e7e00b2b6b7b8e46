"""What the rows of the sqlite log store mean (pure): its format, its migration, and what a
row read back says (a channel, damage to quarantine, or a typed error).

:class:`~p2pworld.io.log_store.LogStore` runs sqlite and carries out what this module
decides: which format a file is and what opening it needs (:func:`format_step`,
:func:`readable_format`, :func:`open_plan`), what a migration from formats 2 and 3 adds
(:func:`missing_columns`, :func:`migrated_head`), what sqlite's own check found
(:func:`check_finding`, :func:`refuse_file_damage`), what a ``channels`` row or an
``entries`` channel id holds (:func:`channel_id`, :func:`channel_row`, :func:`check_row`,
:func:`orphans`), what one load of every channel keeps or quarantines (:class:`ChannelLoad`),
and which outbox rows decode (:func:`outbox_rows`). The simulator's memory store shares
:func:`decode_channel`.

Example:
    >>> format_step("log.db", None, set())   # an empty file: a new store
    <FormatStep.CREATE: 'create'>
    >>> format_step("log.db", (3,), TABLES)  # format 3: migrated in place
    <FormatStep.MIGRATE: 'migrate'>
    >>> format_step("log.db", (1,), TABLES)
    Traceback (most recent call last):
    ...
    p2pworld.errors.UnsupportedVersion: log.db: store format 1 predates epochs and retention; \
export it with a 0.1 build and re-import, or start a fresh home
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from p2pworld import codec
from p2pworld.errors import DecodeError, P2PWorldError, StoreCorrupt, StoreError, UnsupportedVersion
from p2pworld.log.entry import MAX_ENTRY_BYTES, Submission
from p2pworld.log.state import ChannelState
from p2pworld.log.verify import ChannelCheck, ChannelRow, StoredChannel, base_proof, check_channel

STORE_FORMAT = 4
"""``meta.format`` of a log store this build writes (``docs/protocol.md`` §7)."""

REPAIR_HINT = "run `p2pworld log repair` on it (rebuilds the indexes, then verifies)"

TABLES = frozenset({"channels", "entries", "cursors", "outbox", "forks"})
"""Tables every store of format 2 and later has (``outbox_aside`` came later: created when
missing)."""

MIGRATED_COLUMNS = (("base_proof", "BLOB"), ("head_seq", "INTEGER"), ("head_hash", "BLOB"),
                    ("head_sig", "BLOB"))
"""The ``channels`` columns format 4 added (formats 2 and 3 get them on migration)."""

ACK_STRENGTHS = ("local", "replicated")
"""The ``want`` an outbox row may hold."""


# --- opening ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpenPlan:
    """How to open a store file: what to connect to and the pragmas to run first."""

    target: str
    """The database to connect to (a ``file:`` URI for a read-only open)."""
    uri: bool
    pragmas: tuple[str, ...]


WRITABLE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL")


def open_plan(path: str, *, read_only: bool, exists: bool) -> OpenPlan:
    """Opening the file at ``path`` (``exists``: it is a file). A read-only open (what
    ``p2pworld log verify`` uses) writes nothing, so it runs no pragma and never creates the
    file.

    Example:
        >>> open_plan("log.db", read_only=True, exists=True)
        OpenPlan(target='file:log.db?mode=ro', uri=True, pragmas=())
        >>> open_plan("log.db", read_only=False, exists=False).pragmas
        ('PRAGMA journal_mode=WAL', 'PRAGMA synchronous=FULL')

    Raises:
        StoreError: a read-only open of a file that is not there.
    """
    if not read_only:
        return OpenPlan(path, False, WRITABLE_PRAGMAS)
    if not exists:
        raise StoreError(f"{path}: no such file", path=path)
    return OpenPlan(f"file:{path}?mode=ro", True, ())


class FormatStep(enum.Enum):
    """What opening a writable store does in its first transaction."""

    CREATE = "create"
    """A new store: record the format."""
    MIGRATE = "migrate"
    """Format 2 or 3: migrate in place to :data:`STORE_FORMAT`."""
    CURRENT = "current"
    """Already :data:`STORE_FORMAT`: nothing to do."""


def format_step(path: str, row: tuple[Any, ...] | None, tables: Iterable[str]) -> FormatStep:
    """What a writable open of the store at ``path`` does, given its ``meta.format`` row
    (None: none) and the tables the file holds.

    Raises:
        StoreCorrupt: the format record is missing from a store that has tables, or a table
            is missing from one that has it.
        UnsupportedVersion: a format this build does not read (format 1 has a message of
            its own).
    """
    tables = set(tables)
    if row is None and tables & TABLES:
        raise StoreCorrupt(f"{path}: the store's format record is missing; "
                           f"{REPAIR_HINT}", path=path)
    if row is not None and not TABLES <= tables:
        raise StoreCorrupt(f"{path}: tables missing: {sorted(TABLES - tables)}", path=path)
    if row is not None and row[0] not in (1, 2, 3, STORE_FORMAT):
        raise UnsupportedVersion(
            f"{path}: store format {row[0]!r}; this build reads formats 2 and 3 "
            f"(migrated) and {STORE_FORMAT}")
    if row is not None and row[0] == 1:
        raise UnsupportedVersion(
            f"{path}: store format 1 predates epochs and retention; export it with a "
            "0.1 build and re-import, or start a fresh home")
    if row is None:
        return FormatStep.CREATE
    return FormatStep.MIGRATE if row[0] in (2, 3) else FormatStep.CURRENT


def readable_format(path: str, row: tuple[Any, ...] | None) -> int:
    """The format of a store opened read-only (not migrated), from its ``meta.format`` row.

    Example:
        >>> readable_format("log.db", (3,))
        3

    Raises:
        UnsupportedVersion: not a log of format 2 to :data:`STORE_FORMAT`.
    """
    if row is None or row[0] not in (2, 3, STORE_FORMAT):
        raise UnsupportedVersion(f"{path}: not a p2pworld log of format 2 to "
                                 f"{STORE_FORMAT} (format {row and row[0]!r})")
    return int(row[0])


def select_channels(fmt: int) -> str:
    """The ``channels`` columns :func:`channel_row` reads, for a file of format ``fmt``."""
    if fmt < 4:  # read-only and not migrated: no stored head or base proof
        return "SELECT ch, record, epochs, base, floor, NULL, NULL, NULL, NULL FROM channels"
    return ("SELECT ch, record, epochs, base, floor, base_proof, head_seq, head_hash, "
            "head_sig FROM channels")


def missing_columns(columns: Iterable[str]) -> list[str]:
    """The ``ALTER TABLE`` statements a ``channels`` table with ``columns`` needs to reach
    format 4.

    Example:
        >>> missing_columns({"ch", "record", "base_proof", "head_seq", "head_hash"})
        ['ALTER TABLE channels ADD COLUMN head_sig BLOB']
    """
    have = set(columns)
    return [f"ALTER TABLE channels ADD COLUMN {col} {kind}"
            for col, kind in MIGRATED_COLUMNS if col not in have]


def migrated_head(base: Any, floor: Any, last: tuple[Any, ...] | None
                  ) -> tuple[Any, Any, bytes | None]:
    """``(head_seq, head_hash, base_proof)`` a channel of format 2 or 3 gets on migration:
    the head is its last row (``last``: ``(seq, hash)``, None: no row, so the floor), and a
    base above genesis gets its digest as it is (unsigned: the file held no signature). A
    base that does not decode is left without a proof: the check on open reports the damage.

    Example:
        >>> migrated_head(b"", 0, (5, b"h"))
        (5, b'h', None)
    """
    proof = None
    if floor > 0:
        try:
            proof = base_proof(None, ChannelState.decode(bytes(base)).state_hash())
        except (P2PWorldError, TypeError, ValueError):
            proof = None
    return (last[0] if last else floor, last[1] if last else None, proof)


# --- sqlite's own check -------------------------------------------------------------------

def check_statement(*, full: bool) -> str:
    """The pragma of sqlite's own check: ``integrity_check`` when ``full`` (it also compares
    every index with its table), else the cheaper ``quick_check``."""
    return f"PRAGMA {'integrity_check' if full else 'quick_check'}(20)"


def check_finding(rows: list[tuple[Any, ...]]) -> str | None:
    """What sqlite's check returned: None when it passes, else its findings (cut to 500
    characters).

    Example:
        >>> check_finding([("ok",)]) is None, check_finding([("row 3 missing",), ("x",)])
        (True, 'row 3 missing; x')
    """
    if rows == [("ok",)]:
        return None
    return "; ".join(str(r[0]) for r in rows)[:500]


def refuse_file_damage(path: str, found: str | None, *, seen_as: str | None = None) -> None:
    """Refuse the whole file when sqlite's check found damage (``found``; None: it passed).
    ``seen_as``: what a channel looked like, when that is why the file was checked.

    Raises:
        StoreCorrupt: naming the file.
    """
    if found is None:
        return
    seen = "" if seen_as is None else f" seen as {seen_as}"
    raise StoreCorrupt(f"{path}: sqlite reports damage ({found}){seen}; {REPAIR_HINT}",
                       path=path)


# --- reading channels ---------------------------------------------------------------------

def channel_id(path: str, value: Any, *, what: str) -> bytes:
    """A channel id read back from a row (``what``: the message's words for the row);
    anything but 16 bytes is damage to the file.

    Raises:
        StoreCorrupt: naming the file.
    """
    if not isinstance(value, bytes) or len(value) != 16:
        raise StoreCorrupt(f"{path}: {what} of the wrong type; {REPAIR_HINT}", path=path)
    return bytes(value)


def channel_row(r: tuple[Any, ...], *, legacy: bool = False) -> ChannelRow:
    """A ``channels`` row as :func:`select_channels` selects it (``legacy``: from a store of
    an older format, read without migrating it).

    Raises:
        TypeError, ValueError: a column of the wrong type.
    """
    ch, record, epochs, base, floor, proof, head_seq, head_hash, head_sig = r
    return ChannelRow(legacy=legacy, channel=bytes(ch), record=bytes(record),
                      epochs=bytes(epochs),
                      base=bytes(base), floor=int(floor),
                      base_proof=None if proof is None else bytes(proof),
                      head_seq=None if head_seq is None else int(head_seq),
                      head_hash=None if head_hash is None else bytes(head_hash),
                      head_sig=None if head_sig is None else bytes(head_sig))


def damaged_report(channel: bytes, problem: StoreCorrupt) -> dict[str, Any]:
    """The check report of a channel found damaged before its chain could be walked."""
    return {"channel": channel.hex(), "entries": 0, "chain_ok": False,
            "signatures_ok": False, "base_ok": False, "head_ok": False,
            "head_hash": None, "state_hash": None, "genesis_ok": None,
            "errors": [problem.message]}


def check_row(r: tuple[Any, ...], rows: Iterable[tuple[int, bytes, bytes]], *,
              legacy: bool) -> ChannelCheck:
    """Check one ``channels`` row ``r`` (its id already checked by :func:`channel_id`) with
    its ``entries`` rows ``(seq, hash, body)`` in ``seq`` order. A damaged page can hand back
    a value of another type (text for a blob, ...): that is damage to the channel."""
    try:
        row = channel_row(r, legacy=legacy)
    except (TypeError, ValueError) as e:
        ch = bytes(r[0])
        problem = StoreCorrupt(f"channel {ch.hex()}: a column of the wrong type ({e})",
                               channel=ch.hex())
        return ChannelCheck(damaged_report(ch, problem), None, problem)
    return check_channel(row, rows)


def orphans(path: str, known: set[bytes], channels: Iterable[Any]
            ) -> Iterator[tuple[bytes, StoreCorrupt]]:
    """The damage in the channel ids of the ``entries`` table (``channels``: its distinct
    ids), lazily and in order: entries whose channel row is gone (that channel's record and
    head are lost, and reopening it would issue its acknowledged seqs again).

    Raises:
        StoreCorrupt: (when reached) an id of the wrong type, naming the file.
    """
    for value in channels:
        ch = channel_id(path, value, what="an entry row with a channel id")
        if ch not in known:
            yield ch, StoreCorrupt(f"channel {ch.hex()}: entries without a channel record",
                                   channel=ch.hex())


def stored_or_raise(check: ChannelCheck) -> StoredChannel:
    """The channel :func:`~p2pworld.log.verify.check_channel` found intact.

    Raises:
        StoreCorrupt: the damage it found.
    """
    if check.problem is not None:
        raise check.problem
    assert check.stored is not None
    return check.stored


def decode_channel(row: ChannelRow, rows: Iterable[tuple[int, bytes, bytes]]
                   ) -> StoredChannel:
    """Rebuild and verify one stored channel (shared by every store implementation).

    Raises:
        StoreCorrupt: anything unreadable, a chain that does not verify from the base, a base
            that does not match its proof, or rows that end before the stored head.
    """
    return stored_or_raise(check_channel(row, rows))


class ChannelLoad:
    """One pass over every stored channel: the intact ones in order, and what a damaged one
    means: a typed error, or (``quarantine``) left out and listed in :attr:`quarantined`.

    Example:
        >>> load = ChannelLoad(quarantine=True, reports={})
        >>> bad = StoreCorrupt("channel 00: entries without a channel record")
        >>> load.damaged(bytes(16), bad, report=damaged_report(bytes(16), bad))
        >>> list(load.quarantined) == [bytes(16)], load.reports[bytes(16)]["chain_ok"]
        (True, False)
    """

    def __init__(self, *, quarantine: bool, reports: dict[bytes, dict[str, Any]]) -> None:
        self.quarantine = quarantine
        self.stored: list[StoredChannel] = []
        self.quarantined: dict[bytes, StoreCorrupt] = {}
        self.reports = reports
        """What the check found for each channel (the store's own dict, updated in place)."""

    def checked(self, channel: bytes, check: ChannelCheck) -> StoreCorrupt | None:
        """Take one channel's check: its report, and the channel if intact; returns the
        damage found (None: none)."""
        self.reports[channel] = check.report
        if check.stored is not None:
            self.stored.append(check.stored)
            return None
        assert check.problem is not None
        return check.problem

    def damaged(self, channel: bytes, problem: StoreCorrupt, *,
                report: dict[str, Any] | None = None) -> None:
        """A damaged channel (the file itself already checked): quarantine it, with
        ``report`` when the check has not reported it yet.

        Raises:
            StoreCorrupt: ``problem``, unless quarantining.
        """
        if not self.quarantine:
            raise problem
        self.quarantined[channel] = problem
        if report is not None:
            self.reports[channel] = report


# --- other rows ---------------------------------------------------------------------------

def stored_floor(row: tuple[Any, ...] | None) -> int | None:
    """A channel's stored floor from ``SELECT floor`` (None: the channel is not stored)."""
    return None if row is None else int(row[0])


def top_head(top: tuple[Any, ...] | None, floor: int) -> tuple[Any, Any, None]:
    """The head after a write that added no row but took some away: the top row left
    (``top``: ``(seq, hash)``), else the floor; unsigned."""
    return (top[0], top[1], None) if top else (floor, None, None)


def outbox_rows(rows: Iterable[tuple[Any, Any, Any, Any]],
                into: list[tuple[Submission, str]]) -> Iterator[tuple[bytes, bytes, P2PWorldError]]:
    """Decode ``outbox`` rows ``(ch, key, body, want)`` in order: each that decodes goes to
    ``into``; each that does not (written by an older build, or damaged) is yielded, lazily,
    with why, to be moved aside (it never blocks the outbox or start-up).

    Example:
        >>> good: list = []
        >>> [(ch, e.message) for ch, _, e in outbox_rows([(b"c", b"k", b"", "soon")], good)]
        [(b'c', "outbox row: unknown ack strength 'soon'")]
    """
    for ch, key, body, want in rows:
        try:
            if want not in ACK_STRENGTHS:
                raise DecodeError(f"outbox row: unknown ack strength {want!r}")
            sub = Submission.from_wire(codec.decode_frame(bytes(body),
                                                          max_bytes=MAX_ENTRY_BYTES))
            if (sub.channel, sub.idem_key) != (bytes(ch), bytes(key)):
                raise DecodeError("outbox row does not match its submission")
        except (P2PWorldError, UnicodeDecodeError, TypeError, ValueError) as e:
            err = e if isinstance(e, P2PWorldError) else DecodeError(str(e))
            yield bytes(ch), bytes(key), err
            continue
        into.append((sub, str(want)))


def aside_reason(reason: P2PWorldError) -> str:
    """The ``reason`` column of a row moved to ``outbox_aside``."""
    return f"{reason.code}: {reason.message}"[:500]


__all__ = ["STORE_FORMAT", "REPAIR_HINT", "TABLES", "OpenPlan", "open_plan", "FormatStep",
           "format_step", "readable_format", "select_channels", "missing_columns",
           "migrated_head", "check_statement", "check_finding", "refuse_file_damage",
           "channel_id", "channel_row", "damaged_report", "check_row", "orphans",
           "stored_or_raise", "decode_channel", "ChannelLoad", "stored_floor", "top_head",
           "outbox_rows", "aside_reason"]
