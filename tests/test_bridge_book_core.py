"""The bridge outbox's rules (:mod:`p2pworld.nostr.bridge_book`), pure: the format check, the
retry schedule, rows read back, the drain's in-flight set and what an answer means. The sqlite
outbox and the drain are tested in ``tests/test_nostr_relay.py`` and the simulator's tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld.errors import UnsupportedVersion
from p2pworld.nostr.bridge_book import (
    FORMAT_VERSION,
    RETRY_BASE_S,
    RETRY_CAP_S,
    InFlight,
    check_format,
    due_rows,
    next_attempt,
    publish_result,
    source_of_row,
)
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey
from p2pworld.nostr.pool import Ok

KEY = NostrKey(bytes(31) + b"\x07")


def ev(n: int) -> Event:
    return Event.create(KEY, kind=1, content=str(n), tags=[], created_at=n, aux=bytes(32))


def test_the_format_check() -> None:
    check_format("b.db", FORMAT_VERSION, has_events=True)
    check_format("b.db", 0, has_events=False)  # an empty file of no format yet
    with pytest.raises(UnsupportedVersion, match="b.db: bridge outbox format 2 is newer than "
                                                 "this build's 1"):
        check_format("b.db", FORMAT_VERSION + 1, has_events=False)
    with pytest.raises(UnsupportedVersion, match="b.db: bridge outbox format 0 predates 1; "
                                                 "publish or delete it first"):
        check_format("b.db", 0, has_events=True)


@given(st.one_of(st.none(), st.integers(0, 10_000).map(lambda n: (n,))),
       st.floats(0, 1e9, allow_nan=False))
def test_retries_back_off_exponentially_up_to_the_cap(row: tuple[int] | None,
                                                      now: float) -> None:
    attempts, at = next_attempt(row, now=now)
    assert attempts == (row[0] if row else 0) + 1
    delay = at - now
    assert RETRY_BASE_S * 2 <= delay + 1e-6 and delay <= RETRY_CAP_S + 1e-6
    assert delay == pytest.approx(min(RETRY_CAP_S, RETRY_BASE_S * 2 ** min(attempts, 20)))
    later, at2 = next_attempt((attempts,), now=now)
    assert later == attempts + 1 and at2 >= at


def test_rows_that_do_not_parse_are_skipped_in_order() -> None:
    a, b = ev(1), ev(2)
    rows = [(a.to_json(), "ws://x"), ("{}", "ws://x"), ("not json", "ws://y"),
            (b.to_json(), "ws://y")]
    assert due_rows(rows) == [(a, "ws://x"), (b, "ws://y")]
    assert source_of_row(("chan:1",)) == "chan:1" and source_of_row(None) is None


def test_what_an_answer_means_for_a_row() -> None:
    assert publish_result(Ok(True, "", "")) == (True, "")
    assert publish_result(Ok(False, "duplicate: have it", "duplicate")) == (
        True, "duplicate: have it")
    assert publish_result(Ok(False, "rate-limited: slow", "rate-limited")) == (
        False, "rate-limited: slow")
    assert publish_result(None) == (False, "no answer")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["start", "done", "fail", "fail-other"]),
                          st.integers(0, 3), st.sampled_from(["ws://a", "ws://b"])),
                max_size=40))
def test_a_due_row_is_in_flight_once_at_a_time(ops: list[tuple[str, int, str]]) -> None:
    events = [ev(i) for i in range(4)]
    book, model = InFlight(), set()
    for op, i, relay in ops:
        e = events[i]
        if op == "start":
            started = book.start([(e, relay), (e, relay)])
            assert started == ([] if (e.id, relay) in model else [(e, relay)])
            model.add((e.id, relay))
        elif op == "done":
            book.done(e.id, relay)
            model.discard((e.id, relay))
        elif op == "fail":
            book.failed((e, relay))
            model.discard((e.id, relay))
        else:
            book.failed(("not", "a publish", relay))  # other tasks' failures change nothing
        assert book.keys == model
