"""The API's argument checks in the calls core (:mod:`p2pworld.core.calls`): the refusals the
runtime's parts used to make inline, with the same messages, in the same order."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, strategies as st

from p2pworld.core.calls import (
    authorize,
    check_channel_name,
    check_cursor,
    need,
    need_timeout,
    publish_key,
    relays_configured,
)
from p2pworld.errors import InvalidArgument, LocalProtocolError
from p2pworld.log.entry import ChannelPolicy


def test_need_names_the_argument_and_the_types() -> None:
    need(b"x", bytes, "channel")
    need(3, (bytes, int), "seq")
    with pytest.raises(InvalidArgument) as got:
        need("x", bytes, "channel")
    assert got.value.message == "channel must be bytes, not str"
    assert got.value.details["arg"] == "channel"
    with pytest.raises(InvalidArgument, match="must be bytes or int, not float"):
        need(1.5, (bytes, int), "seq")


@given(st.floats(min_value=1e-9, max_value=1e9) | st.integers(min_value=1, max_value=10**9))
def test_a_finite_positive_timeout_passes(t: float) -> None:
    need_timeout(t)


@pytest.mark.parametrize("bad", [0, -1, 0.0, math.inf, math.nan, True, False, "1", None])
def test_other_timeouts_are_refused_by_name(bad: object) -> None:
    with pytest.raises(InvalidArgument) as got:
        need_timeout(bad, "wait")
    assert got.value.message == f"wait must be a number of seconds above 0, not {bad!r}"


def test_channel_names_of_the_library_are_refused() -> None:
    check_channel_name("notes", None)
    check_channel_name("notes", ChannelPolicy())
    for name, policy in [("~mine", None), ("ok", ChannelPolicy(app="compute"))]:
        with pytest.raises(InvalidArgument) as got:
            check_channel_name(name, policy)
        assert got.value.details["arg"] == "name"
        assert "library's own" in got.value.message
    with pytest.raises(InvalidArgument, match="name must be str, not bytes"):
        check_channel_name(b"x", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="policy must be ChannelPolicy, not dict"):
        check_channel_name("x", {})  # type: ignore[arg-type]


def test_a_publish_without_a_key_takes_the_next_of_the_node() -> None:
    counter = itertools.count(1)
    k1 = publish_key(b"c", b"p", None, "local", 10.0, b"pre", counter)
    k2 = publish_key(b"c", b"p", None, "replicated", 1, b"pre", counter)
    assert (k1, k2) == (b"pre" + (1).to_bytes(8, "big"), b"pre" + (2).to_bytes(8, "big"))
    assert publish_key(b"c", b"p", b"mine", "local", 10.0, b"pre", counter) == b"mine"
    assert next(counter) == 3  # a key given draws nothing


@pytest.mark.parametrize("args, arg", [
    (("c", b"p", None, "local", 10.0), "channel"),
    ((b"c", "p", None, "local", 10.0), "payload"),
    ((b"c", b"p", None, "local", 0), "timeout"),
    ((b"c", b"p", "k", "local", 10.0), "key"),
    ((b"c", b"p", None, "quorum", 10.0), "durability"),
    # several wrong: the first one in the order the API always checked them
    (("c", "p", "k", "quorum", -1), "channel"),
    ((b"c", b"p", "k", "quorum", -1), "timeout"),
    ((b"c", b"p", "k", "quorum", 1), "key"),
])
def test_a_publish_is_refused_naming_its_first_wrong_argument(args: tuple, arg: str) -> None:
    counter = itertools.count()
    with pytest.raises(InvalidArgument) as got:
        publish_key(*args, b"", counter)
    assert got.value.details["arg"] == arg
    assert next(counter) == 0  # a refused publish draws no key


def test_a_compute_cursor_is_a_dict_of_channel_to_seq() -> None:
    assert check_cursor(None) == {}
    assert check_cursor({}) == {}
    assert check_cursor({b"c": 2}) == {b"c": 2}
    for bad in ([], {"c": 1}, {b"c": "1"}, "x"):
        with pytest.raises(InvalidArgument, match="cursor is a dict of channel id -> seq"):
            check_cursor(bad)


def test_without_relays_the_bridge_is_refused() -> None:
    svc = object()
    assert relays_configured(svc) is svc
    with pytest.raises(LocalProtocolError, match=r"no Nostr relays configured \(NodeConfig"):
        relays_configured(None)


def test_authorize_checks_the_reducer_scope_only_with_a_book() -> None:
    calls = []

    class Book:
        def check(self, key: bytes, scope: str, *, now: float) -> None:
            calls.append((key, scope, now))

    authorize(None, b"k", "enqueue_nostr_bridge_event", now=5.0)
    authorize(Book(), b"k", "enqueue_nostr_bridge_event", now=5.0)  # type: ignore[arg-type]
    assert calls == [(b"k", "bridge:publish", 5.0)]
