"""What a failed sqlite call means, typed: shared by every store of a node.

Example:
    >>> import sqlite3
    >>> e = sqlite3.OperationalError("database or disk is full")
    >>> e.sqlite_errorcode = sqlite3.SQLITE_FULL
    >>> store_failure("log.db", e).code
    'STORE_FULL'
"""

from __future__ import annotations

import os
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
    if base == sqlite3.SQLITE_FULL or (base == sqlite3.SQLITE_IOERR and _no_space(path)):
        # sqlite reports some writes on a full disk as I/O errors: growing the WAL index
        # (``SQLITE_IOERR_SHMSIZE``, the first thing an existing home does on open) is one.
        return StoreFull(f"{path}: {e}", path=str(path))
    if base in _IO:
        return StoreError(f"{path}: {e}", path=str(path), sqlite=code)
    # Anything else sqlite reports on our own schema (damage, a missing table or column, a
    # file that is not a database) means the file is not what this build wrote.
    return StoreCorrupt(f"{path}: {e}", path=str(path), sqlite=code)


def _no_space(path: Path | str) -> bool:
    """Whether the file system holding ``path`` has (next to) no space left for us."""
    try:
        st = os.statvfs(Path(path).parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _FULL_BELOW


_FULL_BELOW = 64 * 1024
"""Free bytes under which a file system counts as full (a few sqlite pages)."""

_IO = {sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY,
       sqlite3.SQLITE_PERM, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
       sqlite3.SQLITE_NOLFS, sqlite3.SQLITE_AUTH}
"""sqlite result codes of a store that cannot be read or written (not of a damaged one)."""
