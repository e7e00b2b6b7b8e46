"""What a failed sqlite call means, typed: shared by every store of a node (the rule is
:func:`p2pworld.core.sqlite_errors.sqlite_failure`; this shell reads the error's code and, for
an I/O error, the free space of the file system).

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

from p2pworld.core.sqlite_errors import no_space_left, sqlite_failure
from p2pworld.errors import P2PWorldError


def store_failure(path: Path | str, e: sqlite3.Error) -> P2PWorldError:
    """The typed error for a failed sqlite call: a full disk (or size limit) is
    :class:`StoreFull`, damage is :class:`StoreCorrupt`, anything else (an I/O error such as
    EIO, a file that cannot be opened or written) is :class:`StoreError`. Each names the
    file (``details["path"]``)."""
    return sqlite_failure(str(path), str(e), getattr(e, "sqlite_errorcode", None),
                          no_space=lambda: _no_space(path))


def _no_space(path: Path | str) -> bool:
    """Whether the file system holding ``path`` has (next to) no space left for us."""
    try:
        st = os.statvfs(Path(path).parent)
    except OSError:
        return False
    return no_space_left(st.f_bavail * st.f_frsize)
