"""What a failed sqlite call means, typed: shared by every store of a node.

Example:
    >>> import sqlite3
    >>> e = sqlite3.OperationalError("database or disk is full")
    >>> e.sqlite_errorcode = sqlite3.SQLITE_FULL
    >>> store_failure("log.db", e).code
    'STORE_FULL'
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2pworld.errors import P2PWorldError, StoreCorrupt, StoreError, StoreFull


def store_failure(path: Path | str, e: sqlite3.Error) -> P2PWorldError:
    """The typed error for a failed sqlite call: a full disk (or size limit) is
    :class:`StoreFull`, damage is :class:`StoreCorrupt`, anything else (an I/O error such as
    EIO, a file that cannot be opened or written) is :class:`StoreError`. Each names the
    file (``details["path"]``)."""
    code = getattr(e, "sqlite_errorcode", None)
    base = code & 0xFF if isinstance(code, int) else None
    if base == sqlite3.SQLITE_FULL:
        return StoreFull(f"{path}: {e}", path=str(path))
    if base in _IO:
        return StoreError(f"{path}: {e}", path=str(path), sqlite=code)
    # Anything else sqlite reports on our own schema (damage, a missing table or column, a
    # file that is not a database) means the file is not what this build wrote.
    return StoreCorrupt(f"{path}: {e}", path=str(path), sqlite=code)


_IO = {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY,
       sqlite3.SQLITE_PERM, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
       sqlite3.SQLITE_NOLFS, sqlite3.SQLITE_AUTH}
"""sqlite result codes of a store that cannot be read or written (not of a damaged one)."""
