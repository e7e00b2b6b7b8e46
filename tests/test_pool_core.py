"""The relay pool's book (:mod:`p2pworld.nostr.pool`), the decisions it took over from the
relay client: when a publish may return (its wait), where a relay is dialled, which relays a
``REQ`` or ``CLOSE`` goes to, health on failures and relays added only while running. The
answers, deduplication and hostile messages are ``tests/test_relay_pool_book.py``."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld.nostr.pool import Answered, Ok, PoolBook, RelayDial, has_it, relay_dial

R1, R2, R3 = "ws://one", "ws://two", "ws://three"
EID = "ab" * 32


def ok(eid: str, accepted: bool, message: str = "") -> str:
    return json.dumps(["OK", eid, accepted, message])


def test_a_publish_that_went_nowhere_does_not_wait() -> None:
    book = PoolBook([R1])
    token, at_once = book.waiting(EID, [], until_any=True)
    assert at_once and not book._waits
    book.done(token)


def test_a_publish_waits_for_every_relay_it_went_to() -> None:
    book = PoolBook([R1, R2, R3])
    for u in (R1, R2):
        book.sending(u, EID)
    token, at_once = book.waiting(EID, [R1, R2])
    assert not at_once
    first = book.receive(R1, ok(EID, True))
    assert isinstance(first, Answered) and first.settles == () and not first.first
    last = book.receive(R2, ok(EID, False, "blocked: no"))
    assert isinstance(last, Answered) and last.settles == (token,) and last.first
    assert not book._waits


def test_until_any_goes_on_at_the_first_relay_that_has_it() -> None:
    book = PoolBook([R1, R2])
    for u in (R1, R2):
        book.sending(u, EID)
    token, _ = book.waiting(EID, [R1, R2], until_any=True)
    refused = book.receive(R1, ok(EID, False, "rate-limited: slow"))
    assert isinstance(refused, Answered) and refused.settles == ()
    dup = book.receive(R2, ok(EID, False, "duplicate: have it"))
    assert isinstance(dup, Answered) and dup.settles == (token,)


def test_concurrent_publishes_of_one_event_to_different_relays_wait_apart() -> None:
    """The bridge publishes one event to each relay in a task of its own."""
    book = PoolBook([R1, R2])
    for u in (R1, R2):
        book.sending(u, EID)
    t1, _ = book.waiting(EID, [R1])
    t2, _ = book.waiting(EID, [R2])
    a = book.receive(R2, ok(EID, True))
    assert isinstance(a, Answered) and a.settles == (t2,)
    b = book.receive(R1, ok(EID, True))
    assert isinstance(b, Answered) and b.settles == (t1,)


def test_a_wait_that_is_done_is_not_woken() -> None:
    book = PoolBook([R1])
    book.sending(R1, EID)
    token, _ = book.waiting(EID, [R1])
    book.done(token)
    a = book.receive(R1, ok(EID, True))
    assert isinstance(a, Answered) and a.settles == ()
    assert book.answer(R1, EID) == Ok(True, "", "") and book.answer(R1, EID) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([R1, R2, R3]), min_size=1, unique=True),
       st.lists(st.tuples(st.sampled_from([R1, R2, R3]), st.booleans()), max_size=10),
       st.booleans())
def test_a_wait_settles_exactly_when_its_rule_says(sent: list[str],
                                                   answers: list[tuple[str, bool]],
                                                   until_any: bool) -> None:
    book = PoolBook([R1, R2, R3])
    for u in sent:
        book.sending(u, EID)
    token, _ = book.waiting(EID, sent, until_any=until_any)
    missing, settled = set(sent), False
    for url, accepted in answers:
        first_answer = url in missing
        got = book.receive(url, ok(EID, accepted, "" if accepted else "blocked: x"))
        if not first_answer:
            assert got is None  # not sent there, or answered already: nothing changes
            continue
        assert isinstance(got, Answered)
        missing.discard(url)
        should = not settled and ((until_any and accepted) or not missing)
        assert got.settles == ((token,) if should else ()) and got.first == should
        settled = settled or should
    assert settled == (token not in book._waits)


def test_has_it() -> None:
    assert has_it(Ok(True, "", "")) and has_it(Ok(False, "duplicate: x", "duplicate"))
    assert not has_it(Ok(False, "blocked: x", "blocked")) and not has_it(None)


def _dial_as_the_shell_did(url: str) -> tuple[str, int, str]:
    u = urlsplit(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "wss" else 80)
    if u.scheme != "ws":
        raise OSError(f"unsupported relay URL {url!r} (ws:// only for now)")
    return host, port, (u.path or "/") + (f"?{u.query}" if u.query else "")


urls = st.one_of(
    st.builds(lambda s, h, p, path, q: f"{s}://{h}{p}{path}{q}",
              st.sampled_from(["ws", "wss", "http", ""]),
              st.sampled_from(["relay.example", "127.0.0.1", "[::1]", "", "h:x"]),
              st.sampled_from(["", ":7777", ":0", ":99999", ":abc"]),
              st.sampled_from(["", "/", "/r", "/a/b"]),
              st.sampled_from(["", "?x=1", "?"])),
    st.text(max_size=40))


@settings(max_examples=400, deadline=None)
@given(urls)
def test_a_relay_is_dialled_where_its_url_says(url: str) -> None:
    try:
        want: tuple[str, int, str] | type[Exception] = _dial_as_the_shell_did(url)
    except (OSError, ValueError) as e:
        want = type(e)
    if isinstance(want, tuple):
        assert relay_dial(url) == RelayDial(*want)
    else:
        with pytest.raises(want):
            relay_dial(url)


def test_req_goes_to_connected_relays_and_close_to_all_once() -> None:
    book = PoolBook([R1, R2, R3])
    book.health[R2].state = "connected"
    assert book.live() == [R2]
    book.subscribe("s", [{"kinds": [1]}])
    assert book.closing("s") == [R1, R2, R3]
    assert book.closing("s") == [] and book.closing("never") == []


def test_failures_count_in_the_relay_s_health_only() -> None:
    book = PoolBook([R1])
    book.failed(R1, "OSError")
    book.failed("bridge", "INTERNAL")  # a task of the service, not a relay
    assert (book.health[R1].failures, book.health[R1].last_error) == (1, "OSError")
    assert list(book.health) == [R1]


def test_relays_are_added_only_while_the_pool_runs() -> None:
    book = PoolBook([R1])
    assert not book.add(R2, running=False) and book.urls == [R1]
    assert book.add(R2, running=True) and book.urls == [R1, R2]
