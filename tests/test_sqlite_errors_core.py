"""What a failed sqlite call means (p2pworld.core.sqlite_errors), and that the shell
(p2pworld.io.storage) hands it sqlite's own codes."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, strategies as st

from p2pworld.core import sqlite_errors
from p2pworld.core.sqlite_errors import IO_CODES, no_space_left, sqlite_failure
from p2pworld.errors import StoreCorrupt, StoreError, StoreFull
from p2pworld.io.storage import store_failure


@pytest.mark.parametrize("name", ["SQLITE_PERM", "SQLITE_BUSY", "SQLITE_LOCKED",
                                  "SQLITE_NOMEM", "SQLITE_READONLY", "SQLITE_IOERR",
                                  "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_NOLFS",
                                  "SQLITE_AUTH"])
def test_the_codes_are_sqlite_s(name: str) -> None:
    assert getattr(sqlite_errors, name) == getattr(sqlite3, name)


def never() -> bool:
    raise AssertionError("asked about space for a failure that is not an I/O error")


@given(st.integers(0, 0xFFFF))
def test_every_code_has_one_typed_meaning(code: int) -> None:
    base = code & 0xFF
    err = sqlite_failure("a.db", "m", code,
                         no_space=(lambda: False) if base == sqlite3.SQLITE_IOERR else never)
    expected = (StoreFull if base == sqlite3.SQLITE_FULL else
                StoreError if base in IO_CODES else StoreCorrupt)
    assert type(err) is expected and err.message == "a.db: m"
    assert err.details["path"] == "a.db"
    assert "sqlite" not in err.details if expected is StoreFull else err.details["sqlite"] == code


def test_an_io_error_on_a_full_disk_is_full() -> None:
    shmsize = sqlite3.SQLITE_IOERR | (19 << 8)
    assert isinstance(sqlite_failure("a.db", "m", shmsize, no_space=lambda: True), StoreFull)
    assert isinstance(sqlite_failure("a.db", "m", None, no_space=never), StoreCorrupt)


def test_full_below_a_few_pages() -> None:
    assert no_space_left(0) and no_space_left(64 * 1024 - 1) and not no_space_left(64 * 1024)


def test_the_shell_passes_the_error_s_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    e = sqlite3.OperationalError("disk I/O error")
    e.sqlite_errorcode = sqlite3.SQLITE_IOERR  # type: ignore[attr-defined]
    err = store_failure(tmp_path / "log.db", e)
    assert isinstance(err, StoreError) and err.details == {
        "path": str(tmp_path / "log.db"), "sqlite": sqlite3.SQLITE_IOERR}
    assert isinstance(store_failure("x.db", sqlite3.DatabaseError("no code")), StoreCorrupt)
