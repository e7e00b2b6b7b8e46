"""What the world store's rows mean (p2pworld.world.stored), and the store carrying it out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from p2pworld import codec
from p2pworld.errors import StoreCorrupt, UnsupportedVersion
from p2pworld.io.world_store import WorldStore
from p2pworld.world.stored import FORMAT, format_statements, next_incarnation, world_records


def test_format() -> None:
    assert format_statements("w.db", (FORMAT,)) == []
    assert format_statements("w.db", None)[0][1] == (FORMAT,)
    with pytest.raises(UnsupportedVersion, match="w.db: world store format 2; this build reads"):
        format_statements("w.db", (2,))


@given(st.integers(0, 2**40))
def test_incarnation_counts_up(old: int) -> None:
    assert next_incarnation("w", (old,)) == old + 1


@pytest.mark.parametrize("row", [(-1,), ("3",), (b"x",), (1.5,)])
def test_a_bad_counter_is_refused(row: tuple[object]) -> None:
    with pytest.raises(StoreCorrupt, match="w: bad incarnation counter"):
        next_incarnation("w", row)


INTS = st.lists(st.integers(0, 2**31), min_size=1, max_size=3).map(codec.encode_frame)
DOCS = st.lists(st.binary(max_size=8), max_size=4).map(codec.encode_frame)


@given(st.lists(st.one_of(DOCS, st.binary(max_size=8), st.text(max_size=4), INTS), max_size=8))
def test_world_records_keep_the_good_rows_in_order(blobs: list[object]) -> None:
    out, skipped = world_records(blobs)
    assert len(out) + skipped == len(blobs)
    assert all(isinstance(r, bytes) for recs in out for r in recs)


def test_the_store_skips_and_counts(tmp_path: Path) -> None:
    s = WorldStore(tmp_path / "world.db")
    s.save(b"a", (b"r",))
    s.db.execute("INSERT INTO docs VALUES (?, ?)", (b"b", b"junk"))
    assert s.load() == [[b"r"]] and s.skipped == 1
    assert (s.bump_incarnation(), s.bump_incarnation()) == (1, 2)
    s.db.execute("UPDATE meta SET value=-5 WHERE key='incarnation'")
    with pytest.raises(StoreCorrupt):
        s.bump_incarnation()
    s.close()
    db = sqlite3.connect(tmp_path / "world.db")
    db.execute("UPDATE meta SET value=7 WHERE key='format'")
    db.commit()
    db.close()
    with pytest.raises(UnsupportedVersion, match="world store format 7"):
        WorldStore(tmp_path / "world.db")
