"""What a failed sqlite call means, typed (pure): the rule every store of a node shares.

:func:`~p2pworld.io.storage.store_failure` hands this the failure's message and its sqlite
result code; the answer is the typed error the node acts on: a full disk (or the database's
size limit) is :class:`~p2pworld.errors.StoreFull` (the node goes read-only and probes for
space), a store that cannot be read or written is :class:`~p2pworld.errors.StoreError` (the
one failure that ends a node), anything else sqlite reports on our own schema is
:class:`~p2pworld.errors.StoreCorrupt`.

The result codes are sqlite's (``sqlite3.SQLITE_FULL`` and so on; stable across sqlite
versions): this module does not import ``sqlite3``.

Example:
    >>> sqlite_failure("log.db", "database or disk is full", SQLITE_FULL,
    ...                no_space=lambda: False).code
    'STORE_FULL'
    >>> sqlite_failure("log.db", "disk I/O error", SQLITE_IOERR | 0x0C00,
    ...                no_space=lambda: False).code
    'STORE_ERROR'
    >>> sqlite_failure("log.db", "file is not a database", 26, no_space=lambda: False).code
    'STORE_CORRUPT'
"""

from __future__ import annotations

from collections.abc import Callable

from p2pworld.errors import P2PWorldError, StoreCorrupt, StoreError, StoreFull

SQLITE_PERM = 3
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_NOMEM = 7
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOLFS = 22
SQLITE_AUTH = 23

IO_CODES = frozenset({SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_READONLY, SQLITE_PERM,
                      SQLITE_NOMEM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOLFS, SQLITE_AUTH})
"""sqlite result codes of a store that cannot be read or written (not of a damaged one)."""

FULL_BELOW = 64 * 1024
"""Free bytes under which a file system counts as full (a few sqlite pages)."""


def no_space_left(free_bytes: int) -> bool:
    """Whether a file system with ``free_bytes`` available counts as full."""
    return free_bytes < FULL_BELOW


def sqlite_failure(path: str, message: str, code: int | None, *,
                   no_space: Callable[[], bool]) -> P2PWorldError:
    """The typed error for a failed sqlite call on the file ``path`` (``code``: its extended
    result code, None when sqlite gave none). ``no_space`` says whether the file system is
    full; it is asked only for an I/O error, because sqlite reports some writes on a full
    disk as I/O errors (growing the WAL index, ``SQLITE_IOERR_SHMSIZE``, the first thing an
    existing home does on open, is one). Each error names the file (``details["path"]``)."""
    base = code & 0xFF if isinstance(code, int) else None
    if base == SQLITE_FULL or (base == SQLITE_IOERR and no_space()):
        return StoreFull(f"{path}: {message}", path=path)
    if base in IO_CODES:
        return StoreError(f"{path}: {message}", path=path, sqlite=code)
    # Anything else sqlite reports on our own schema (damage, a missing table or column, a
    # file that is not a database) means the file is not what this build wrote.
    return StoreCorrupt(f"{path}: {message}", path=path, sqlite=code)


__all__ = ["sqlite_failure", "no_space_left", "IO_CODES", "FULL_BELOW"]
