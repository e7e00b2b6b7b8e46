"""What the rows of the world store mean (pure): its format, the incarnation counter, and
which stored documents decode.

:class:`~p2pworld.io.world_store.WorldStore` runs sqlite and carries out what this module
decides. World documents are soft state: a row that does not decode is skipped and counted
(peers send the records again). The incarnation counter is not: a counter that is not a
non-negative integer is damage, refused typed, never reset (a reset could reuse a CRDT
client id).

Example:
    >>> format_statements("world.db", None)  # a new store: record the format
    [("INSERT INTO meta VALUES ('format', ?)", (1,))]
    >>> next_incarnation("world.db", None), next_incarnation("world.db", (41,))
    (1, 42)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p2pworld import codec
from p2pworld.errors import P2PWorldError, StoreCorrupt, UnsupportedVersion

FORMAT = 1
"""``meta.format`` of ``world.db``; another format is refused (a store written by a newer
release is never misread by an older one after a rollback)."""

MAX_DOC_BYTES = 64 << 20
MAX_DOC_RECORDS = 65536
"""Bounds on one stored document (an author's records) when it is read back."""


def format_statements(path: str, row: tuple[Any, ...] | None) -> list[tuple[str, tuple[Any, ...]]]:
    """What opening a world store with ``meta.format`` row ``row`` (None: none) must run: a
    new store, or one from before the format was recorded (the same layout), gets it
    recorded; :data:`FORMAT` needs nothing.

    Raises:
        UnsupportedVersion: another format.
    """
    if row is None:
        return [("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))]
    if row[0] != FORMAT:
        raise UnsupportedVersion(f"{path}: world store format {row[0]!r}; this "
                                 f"build reads format {FORMAT}")
    return []


def next_incarnation(path: str, row: tuple[Any, ...] | None) -> int:
    """The incarnation counter after a bump, from its stored row (None: never bumped, so 1).

    Raises:
        StoreCorrupt: the stored counter is not a non-negative integer.
    """
    old = row[0] if row else 0
    if not isinstance(old, int) or old < 0:
        raise StoreCorrupt(f"{path}: bad incarnation counter")
    return old + 1


def world_records(blobs: Iterable[Any]) -> tuple[list[list[bytes]], int]:
    """Every stored document that decodes to a list of records, in order, and how many did
    not (skipped: refetched from peers; each record is checked again by the world core).

    Example:
        >>> world_records([codec.encode_frame([b"r1", b"r2"]), b"junk", codec.encode_frame([1])])
        ([[b'r1', b'r2']], 2)
    """
    out: list[list[bytes]] = []
    skipped = 0
    for blob in blobs:
        try:
            recs = codec.decode_frame(bytes(blob), max_bytes=MAX_DOC_BYTES,
                                      max_items=MAX_DOC_RECORDS)
            if not isinstance(recs, list) or not all(isinstance(r, bytes) for r in recs):
                raise StoreCorrupt("world row is not a list of records")
        except (P2PWorldError, TypeError):
            skipped += 1
            continue
        out.append(recs)
    return out, skipped


__all__ = ["FORMAT", "format_statements", "next_incarnation", "world_records"]
