"""The cores that took the runtime's decisions at a session's edges: the peer book, session
admission, the pre-handshake bound, the scope book, publish outcomes, the error that leaves a
node and the configuration check (``p2pworld.core.peer_book``, ``scope_book``, ``outcomes``,
``config_check``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, strategies as st

from p2pworld.core.config_check import check_config
from p2pworld.core.outcomes import leaves, leaving_error, publish_outcome
from p2pworld.core.peer_book import PeerBook, PreHandshake, session_refusal
from p2pworld.core.scope_book import ScopeBook
from p2pworld.errors import (
    FrameRejected,
    InvalidArgument,
    P2PWorldError,
    PublishTimeout,
    SessionClosed,
    StoreError,
    Unauthorized,
)


def test_a_peer_record_follows_its_sessions() -> None:
    book = PeerBook()
    pid = b"\x02" * 32
    assert book.connecting(pid).state == "connecting"
    book.failed(pid, "CONNECT_FAILED")
    assert (book.records[pid].failures, book.records[pid].last_error) == (1, "CONNECT_FAILED")
    p = book.connected(pid, address="ws://h:1/", since=3.0)
    assert (p.state, p.address, p.last_error, p.handshakes) == ("connected", "ws://h:1/", "", 1)
    assert book.down(pid, FrameRejected("junk")) == FrameRejected.code
    assert (p.state, p.last_error) == ("backoff", FrameRejected.code)
    assert book.down(pid, SessionClosed("bye")) is None and book.down(pid, None) is None
    assert p.last_error == FrameRejected.code  # an orderly end keeps the last error


def test_a_scope_failure_names_a_peer_only_by_its_hex_id() -> None:
    book = PeerBook()
    pid = b"\x07" * 32
    book.record(pid)
    for key in ("", "incoming", "zz", "ws://x/", (b"\x08" * 32).hex()):
        book.scope_failed(key, "X")
    assert book.records[pid].failures == 0 and set(book.records) == {pid}
    book.scope_failed(pid.hex(), "X")
    assert book.records[pid].failures == 1
    book.refused(b"\x09", "R")  # an unknown peer is not created by a refusal
    assert b"\x09" not in book.records


def _result(nostr: bytes, token: bytes | None = None) -> SimpleNamespace:
    return SimpleNamespace(peer_token=token, peer_key=b"k" * 32,
                           peer_attestation=SimpleNamespace(nostr_pubkey=nostr))


def test_a_nostr_session_must_run_over_the_attested_key() -> None:
    r = _result(b"\x01" * 32)
    assert session_refusal(None, r, address="ws://h:1/", now=0) is None  # type: ignore[arg-type]
    good = "nostr:" + (b"\x01" * 32).hex()
    assert session_refusal(None, r, address=good, now=0) is None  # type: ignore[arg-type]
    bad = session_refusal(None, r, address=f"nostr:{'00' * 32}", now=0)  # type: ignore[arg-type]
    assert isinstance(bad, Unauthorized)


def test_the_token_book_refusal_comes_first() -> None:
    class Book:
        def admit(self, raw: bytes, **kw: object) -> P2PWorldError:
            assert raw == b""  # no token: the book sees empty bytes
            return Unauthorized("no token")
    got = session_refusal(Book(), _result(b"\x01" * 32), address="nostr:00",  # type: ignore[arg-type]
                          now=0)
    assert isinstance(got, Unauthorized) and got.message == "no token"


@given(st.lists(st.integers(0, 40), max_size=200), st.integers(1, 8))
def test_at_most_limit_connections_wait_and_the_oldest_goes(ops: list[int], limit: int) -> None:
    waiting = PreHandshake[int](limit=limit)
    model: list[int] = []
    for i, op in enumerate(ops):
        if op % 3 == 0 and model:
            k = model[op % len(model)]
            waiting.done(k)
            model.remove(k)
            assert waiting.evicted(k)
            continue
        out = waiting.add(i)
        model.append(i)
        if len(model) > limit:
            assert out == model.pop(0)
        else:
            assert out is None
        assert list(waiting.waiting) == model


def test_a_failed_scope_is_counted_and_what_it_held_closes_once() -> None:
    class Pipe:
        pass
    book = ScopeBook.of(["peer", "lane"])
    a, b = Pipe(), Pipe()
    assert book.to_close(("key", a, 3), (Pipe,)) == [a]
    assert book.to_close((a, b), (Pipe,)) == [b]
    assert book.to_close((a, b), (Pipe,)) == []
    book.failed("lane", code="X", subject="s")
    book.failed("lane", code="Y", subject="t")
    assert book.stats["lane"] == {"failures": 2, "last_error": "Y", "last_subject": "t"}
    assert book.stats["peer"]["failures"] == 0


def test_a_publish_outcome_is_the_answer_or_a_typed_unknown() -> None:
    with pytest.raises(PublishTimeout) as e:
        publish_outcome(None, closed=True, timeout=1.0, key=b"\x01")
    assert e.value.details.get("node_closed") is True
    with pytest.raises(PublishTimeout, match="within 1.5 s"):
        publish_outcome(None, closed=False, timeout=1.5, key=b"\x01")
    with pytest.raises(Unauthorized):
        publish_outcome(Unauthorized("no"), closed=True, timeout=1.0, key=b"")
    ok = object()
    assert publish_outcome(ok, closed=True, timeout=1.0, key=b"") is ok  # type: ignore[arg-type]


def test_what_leaves_a_node() -> None:
    class Cancelled(BaseException):
        pass
    mine, typed = ValueError("app"), StoreError("disk")
    nested = BaseExceptionGroup("a", [Cancelled(), BaseExceptionGroup("b", [typed, mine])])
    assert leaves(nested)[1:] == [typed, mine]
    assert leaving_error(nested, [mine], (Cancelled,)) is mine
    only_typed = BaseExceptionGroup("a", [Cancelled(), BaseExceptionGroup("b", [typed])])
    assert leaving_error(only_typed, [], (Cancelled,)) is typed
    assert leaving_error(only_typed, [], ()) is None  # a leaf that is neither: the group
    assert leaving_error(BaseExceptionGroup("a", [mine]), [], (Cancelled,)) is None


GOOD = dict(home="/tmp/a", workspace="lab", port=0, interfaces=["127.0.0.1"], peers=[],
            rendezvous=[], relays=[], startup_check_s=2.0)


@pytest.mark.parametrize("field,value,arg", [
    ("home", 3, "NodeConfig.home"), ("workspace", b"x", "NodeConfig.workspace"),
    ("port", "80", "NodeConfig.port"), ("relays", "ws://x", "relays"),
    ("interfaces", [1], "interfaces"), ("workspace", "", "workspace"),
    ("workspace", "é" * 65, "workspace"), ("startup_check_s", 601, "startup_check_s"),
    ("startup_check_s", "1", "startup_check_s"), ("startup_check_s", -1, "startup_check_s"),
])
def test_a_bad_config_field_is_refused_by_name(field: str, value: object, arg: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        check_config(SimpleNamespace(**{**GOOD, field: value}))
    assert e.value.details["arg"] == arg


def test_a_good_config_passes() -> None:
    from pathlib import Path
    check_config(SimpleNamespace(**{**GOOD, "home": Path("/tmp/a"), "peers": ("ws://h:1/",),
                                    "workspace": "é" * 64, "startup_check_s": 600}))


@given(st.lists(st.tuples(st.floats(0, 100), st.booleans()), max_size=60))
def test_publish_deadlines_come_due_in_order_and_once(ops: list[tuple[float, bool]]) -> None:
    import math

    from p2pworld.core.outcomes import Deadlines
    waits, pending, seen = Deadlines(), {}, []
    now = 0.0
    for i, (t, advance) in enumerate(ops):
        if advance:
            now = max(now, t)
            got = waits.due(now)
            assert got == sorted(got, key=lambda r: (pending[r], r))
            assert all(pending[r] <= now for r in got)
            seen += got
        else:
            others = [v for k, v in pending.items() if k not in seen]
            pending[i] = now + t
            # Earliest: strictly before every other wait (a tie goes to the older request).
            assert waits.add(now + t, i) == all(now + t < v for v in others)
    rest = waits.due(math.inf)
    assert sorted(seen + rest) == sorted(pending) and waits.next_at() == math.inf
