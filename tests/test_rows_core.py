"""The log store's row decisions (p2pworld.log.rows), the sqlite statements of its writes
(p2pworld.channel.statements) and what a node takes from its store at start
(p2pworld.channel.restore): pure, tested without sqlite, and checked against the real store."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from p2pworld import codec
from p2pworld.channel.checkpoints import Checkpoint
from p2pworld.channel.effects import OutboxDone, OutboxPut, Persist, RecordFork, SaveCursor
from p2pworld.channel.hub import ChannelHub
from p2pworld.channel.restore import aside_notices, load_cursors, load_stored, unsendable
from p2pworld.channel.statements import (
    INSERT_ENTRY,
    effect_statement,
    head_statements,
    plan_statements,
)
from p2pworld.channel.writes import WritePlan, write_plan
from p2pworld.errors import (
    DecodeError,
    P2PWorldError,
    StoreCorrupt,
    StoreError,
    UnknownChannel,
    UnsupportedVersion,
)
from p2pworld.identity import Ed25519Signer
from p2pworld.io.log_store import LogStore
from p2pworld.log.entry import ChannelRecord, Submission
from p2pworld.log.rows import (
    REPAIR_HINT,
    STORE_FORMAT,
    TABLES,
    ChannelLoad,
    FormatStep,
    aside_reason,
    channel_id,
    channel_row,
    check_finding,
    check_row,
    check_statement,
    damaged_report,
    decode_channel,
    format_step,
    migrated_head,
    missing_columns,
    open_plan,
    orphans,
    outbox_rows,
    readable_format,
    refuse_file_damage,
    select_channels,
    stored_floor,
    stored_or_raise,
    top_head,
)
from p2pworld.log.sequencer import Sequencer
from p2pworld.log.state import ChannelState
from p2pworld.log.verify import ChannelCheck

CH = bytes(range(16))


def hub() -> ChannelHub:
    return ChannelHub(Ed25519Signer(bytes(32)), workspace="lab", rng=random.Random(0))


def opened(h: ChannelHub, name: str = "notes") -> tuple[bytes, Persist]:
    rec, fx = h.open_channel(name, now_ms=0)
    return rec.channel, next(e for e in fx if isinstance(e, Persist))


# --- opening and formats ------------------------------------------------------------------

def test_open_plan() -> None:
    assert open_plan("a.db", read_only=False, exists=False).target == "a.db"
    assert open_plan("a.db", read_only=False, exists=True).uri is False
    ro = open_plan("a.db", read_only=True, exists=True)
    assert (ro.target, ro.uri, ro.pragmas) == ("file:a.db?mode=ro", True, ())
    with pytest.raises(StoreError) as e:
        open_plan("a.db", read_only=True, exists=False)
    assert e.value.message == "a.db: no such file" and e.value.details == {"path": "a.db"}


@pytest.mark.parametrize("row,tables,expected", [
    (None, set(), FormatStep.CREATE),
    (None, {"meta", "outbox_aside"}, FormatStep.CREATE),
    ((2,), TABLES, FormatStep.MIGRATE),
    ((3,), TABLES | {"meta"}, FormatStep.MIGRATE),
    ((4,), TABLES, FormatStep.CURRENT),
])
def test_format_steps(row: tuple[int] | None, tables: set[str], expected: FormatStep) -> None:
    assert format_step("x.db", row, tables) is expected


def test_format_refusals_keep_their_messages() -> None:
    with pytest.raises(StoreCorrupt, match="format record is missing; run `p2pworld log"):
        format_step("x.db", None, {"channels"})
    with pytest.raises(StoreCorrupt, match=r"tables missing: \['forks'\]"):
        format_step("x.db", (4,), TABLES - {"forks"})
    with pytest.raises(UnsupportedVersion, match="store format 9; this build reads formats 2"):
        format_step("x.db", (9,), TABLES)
    with pytest.raises(UnsupportedVersion, match="format 1 predates epochs"):
        format_step("x.db", (1,), TABLES)
    assert readable_format("x.db", (STORE_FORMAT,)) == STORE_FORMAT
    for row, shown in ((None, "None"), ((1,), "1"), (("4",), "'4'")):
        with pytest.raises(UnsupportedVersion, match=rf"\(format {shown}\)"):
            readable_format("x.db", row)


def test_select_and_migration_columns() -> None:
    assert "NULL, NULL" in select_channels(3) and "head_sig" in select_channels(4)
    assert len(missing_columns({"ch"})) == 4 and missing_columns(
        {"base_proof", "head_seq", "head_hash", "head_sig"}) == []


def test_migrated_head() -> None:
    assert migrated_head(b"junk", 0, None) == (0, None, None)
    assert migrated_head(b"junk", 7, None) == (7, None, None)  # undecodable base: no proof
    h = hub()
    _, w = opened(h)
    seq, hh, proof = migrated_head(w.base, 3, (9, b"h"))
    assert (seq, hh) == (9, b"h") and codec.decode_frame(proof)["hash"]  # type: ignore[arg-type, index]


def test_file_checks() -> None:
    assert check_statement(full=True) == "PRAGMA integrity_check(20)"
    assert check_statement(full=False) == "PRAGMA quick_check(20)"
    assert check_finding([("ok",)]) is None
    assert check_finding([("x" * 600,)]) == "x" * 500
    refuse_file_damage("f.db", None)
    with pytest.raises(StoreCorrupt) as e:
        refuse_file_damage("f.db", "bad", seen_as="channel 00: broken")
    assert e.value.message == ("f.db: sqlite reports damage (bad) seen as channel 00: broken; "
                               f"{REPAIR_HINT}")
    with pytest.raises(StoreCorrupt, match=r"^f\.db: sqlite reports damage \(bad\); run"):
        refuse_file_damage("f.db", "bad")


# --- rows read back -----------------------------------------------------------------------

@given(st.one_of(st.binary(max_size=20), st.text(max_size=20), st.integers(), st.none()))
def test_a_channel_id_is_16_bytes_or_damage(value: object) -> None:
    if isinstance(value, bytes) and len(value) == 16:
        assert channel_id("f", value, what="w") == value
    else:
        with pytest.raises(StoreCorrupt, match="f: w of the wrong type"):
            channel_id("f", value, what="w")


def test_a_column_of_the_wrong_type_is_a_damaged_channel() -> None:
    r = (CH, "text", b"", b"", 0, None, None, None, None)
    with pytest.raises(TypeError):
        channel_row(r)
    check = check_row(r, [], legacy=False)
    assert check.stored is None and check.problem is not None
    assert check.problem.details == {"channel": CH.hex()}
    assert check.report == damaged_report(CH, check.problem)
    assert check.report["errors"] == [check.problem.message]


def test_orphans_are_lazy_and_in_order() -> None:
    other = bytes(16)
    found = orphans("f", {CH}, [CH, other, "bad"])
    ch, problem = next(found)
    assert ch == other and "entries without a channel record" in problem.message
    with pytest.raises(StoreCorrupt, match="an entry row with a channel id of the wrong type"):
        next(found)


def test_channel_load_quarantines_or_raises() -> None:
    bad = StoreCorrupt("broken")
    strict = ChannelLoad(quarantine=False, reports={})
    with pytest.raises(StoreCorrupt):
        strict.damaged(CH, bad)
    reports: dict[bytes, dict[str, object]] = {}
    load = ChannelLoad(quarantine=True, reports=reports)
    assert load.checked(CH, ChannelCheck({"r": 1}, None, bad)) is bad
    load.damaged(CH, bad)
    assert load.quarantined == {CH: bad} and reports[CH] == {"r": 1} and load.stored == []
    with pytest.raises(StoreCorrupt):
        stored_or_raise(ChannelCheck({}, None, bad))


def submission(ch: bytes, key: bytes = b"k", payload: bytes = b"p") -> Submission:
    return Submission.create(Ed25519Signer(bytes(32)), channel=ch, idem_key=key,
                             payload=payload)


def test_outbox_rows_decode_or_go_aside() -> None:
    sub = submission(CH)
    body = codec.encode_frame(sub.to_wire())
    good: list[tuple[Submission, str]] = []
    rows = [(CH, b"k", body, "local"), (CH, b"k", body, "soon"), (CH, b"other", body, "local"),
            (CH, b"k", b"\xff", "replicated"), (CH, b"k", "text", "local"),
            (CH, b"k", body, "replicated")]
    bad = outbox_rows(rows, good)
    first = next(bad)  # lazily: the rows before the first bad one are already taken
    assert good == [(sub, "local")]
    assert first[:2] == (CH, b"k") and first[2].message == "outbox row: unknown ack strength 'soon'"
    rest = list(bad)
    assert rest[0][:2] == (CH, b"other")
    assert rest[0][2].message == "outbox row does not match its submission"
    assert all(isinstance(e, P2PWorldError) for _, _, e in rest) and len(rest) == 3
    assert isinstance(rest[2][2], DecodeError)  # a TypeError, typed
    assert good == [(sub, "local"), (sub, "replicated")]
    assert aside_reason(DecodeError("y" * 600)).startswith("DECODE_ERROR: y")
    assert len(aside_reason(DecodeError("y" * 600))) == 500


def test_floor_and_top_head() -> None:
    assert stored_floor(None) is None and stored_floor((5,)) == 5
    assert top_head(None, 3) == (3, None, None) and top_head((9, b"h"), 3) == (9, b"h", None)


# --- statements ---------------------------------------------------------------------------

def plan(**kw: object) -> WritePlan:
    base: dict[str, object] = dict(record=None, epochs=b"e", base=None, floor=0, proof=None,
                                   drop_through=None, keep_through=None, rows=[], head=None,
                                   head_from_rows=False)
    base.update(kw)
    return WritePlan(**base)  # type: ignore[arg-type]


@given(new=st.booleans(), drop=st.none() | st.integers(0, 9),
       keep=st.none() | st.integers(0, 9))
def test_plan_statements_follow_the_plan(new: bool, drop: int | None, keep: int | None) -> None:
    p = plan(record=b"r" if new else None, drop_through=drop, keep_through=keep)
    sqls = [sql.split(" WHERE")[0] for sql, _ in plan_statements(CH, p)]
    assert sqls[0].startswith("INSERT INTO channels" if new else "UPDATE channels SET epochs")
    assert ("UPDATE channels SET base=?, floor=?, base_proof=?" in sqls) == (drop is not None)
    assert ("DELETE FROM entries" in sqls) == (drop is not None or keep is not None)
    assert len(sqls) == 1 + 2 * (drop is not None) + (keep is not None)


def test_head_statements() -> None:
    assert head_statements(CH, plan(), None) == []
    assert head_statements(CH, plan(head=(3, b"h", None)), None)[0][1] == (3, b"h", None, CH)
    assert head_statements(CH, plan(head_from_rows=True, floor=2), None)[0][1] == (
        2, None, None, CH)


def test_effect_statements_run_on_the_schema(tmp_path: Path) -> None:
    """Each effect's statement is valid sqlite on the store's own schema and writes what the
    store reads back."""
    store = LogStore(tmp_path / "log.db")
    sub = submission(CH)
    cp = Checkpoint(channel=CH, epoch=1, seq=2, head_hash=bytes(32))
    for op in (SaveCursor(cp), OutboxPut(sub, "local")):
        store.db.execute(*effect_statement(op))
    assert store.load_cursors() == [cp] and store.load_outbox() == [(sub, "local")]
    store.db.execute(*effect_statement(OutboxDone(CH, b"k")))
    assert store.load_outbox() == []
    sql, args = effect_statement(OutboxDone(CH, b"k"))
    assert sql.startswith("DELETE FROM outbox") and args == (CH, b"k")
    assert INSERT_ENTRY.startswith("INSERT OR REPLACE INTO entries")
    store.close()


def test_a_write_plan_runs_as_before(tmp_path: Path) -> None:
    h = hub()
    ch, w = opened(h)
    p = write_plan(w, stored_floor=None)
    db = sqlite3.connect(":memory:")
    LogStore(tmp_path / "log.db").close()
    schema = sqlite3.connect(tmp_path / "log.db").execute(
        "SELECT sql FROM sqlite_master WHERE type='table'").fetchall()
    for (sql,) in schema:
        db.execute(sql)
    for sql, args in plan_statements(ch, p):
        db.execute(sql, args)
    for sql, args in head_statements(ch, p, None):
        db.execute(sql, args)
    assert db.execute("SELECT floor, head_seq FROM channels").fetchall() == [(0, 0)]


# --- restore ------------------------------------------------------------------------------

def test_restore_quarantines_and_keeps_their_rows() -> None:
    h = hub()
    bad = StoreCorrupt("damaged")
    notices = load_stored(h, [], {CH: bad})
    assert [(n.channel, n.error, n.subject) for n in notices] == [(CH, bad, CH.hex())]
    assert CH in h.quarantined


def test_unsendable_rows_and_their_notices() -> None:
    h = hub()
    ch, _ = opened(h)
    quarantined = bytes(16)
    h.quarantine(quarantined, StoreCorrupt("damaged"))
    rows = [(submission(ch, b"a"), "local"), (submission(CH, b"b"), "local"),
            (submission(quarantined, b"c"), "local"), (submission(ch, b"d"), "replicated")]
    bad = list(unsendable(h, rows))
    assert [(c, k, type(e)) for c, k, e in bad] == [(CH, b"b", UnknownChannel)]
    assert set(h.outbox) == {(ch, b"a"), (ch, b"d")}  # the quarantined row stays on disk only
    err: P2PWorldError = UnknownChannel("gone")
    (n,) = aside_notices([(CH, b"\x01", err)])
    assert n.error.details["outbox_key"] == "01" and n.subject == CH.hex()


def test_cursors_of_quarantined_channels_are_not_loaded() -> None:
    h = hub()
    kept = Checkpoint(channel=CH, epoch=1, seq=2, head_hash=bytes(32))
    gone = Checkpoint(channel=bytes(16), epoch=1, seq=2, head_hash=bytes(32))
    load_cursors(h, [kept, gone], {bytes(16): StoreCorrupt("x")})
    assert h.cursors == {CH: kept}


def test_decode_channel_is_check_channel_raising() -> None:
    h = hub()
    ch, w = opened(h)
    p = write_plan(w, stored_floor=None)
    row = channel_row((ch, p.record, p.epochs, p.base, p.floor, p.proof, 0, None, None))
    assert decode_channel(row, []).record.channel == ch


def test_a_fork_s_proof_is_stored_as_both_entries(tmp_path: Path) -> None:
    key = Ed25519Signer(bytes([7]) * 32)
    rec = ChannelRecord.create(key, workspace="w", name="f", created_at=0)
    held, other = (Sequencer(ChannelState.genesis(rec), key) for _ in range(2))
    for seq, payload in ((held, b"one"), (other, b"two")):
        seq.submit(Submission.create(key, channel=rec.channel, idem_key=b"x", payload=payload),
                   now_ms=0)
    a, b = held.entries[0], other.entries[0]
    store = LogStore(tmp_path / "log.db")
    store.apply([RecordFork(rec.channel, a, b)])
    assert store.db.execute("SELECT ch, seq, held, other FROM forks").fetchall() == [
        (rec.channel, a.seq, a.to_frame(), b.to_frame())]
    assert effect_statement(RecordFork(rec.channel, a, b))[1][1] == a.seq
    store.close()
