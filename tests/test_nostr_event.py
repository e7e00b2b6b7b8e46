"""NIP-01 events and relay messages, NIP-42 auth: signing, checking, hostile input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld.errors import NostrError
from p2pworld.nostr.event import (
    AUTH_KIND,
    Event,
    auth_event,
    client_event,
    client_req,
    parse_relay_message,
)
from p2pworld.nostr.keys import NostrKey

KEY = NostrKey(bytes(31) + b"\x07")


def ev(**kw) -> Event:  # type: ignore[no-untyped-def]
    args = {"kind": 1, "content": "hé \"quoted\"\n\ttab \u0001", "tags": [["e", "x" * 3]],
            "created_at": 1_700_000_000, "aux": bytes(32)}
    return Event.create(KEY, **{**args, **kw})


def test_round_trip_and_deterministic_signature() -> None:
    a, b = ev(), ev()
    assert a == b and Event.from_json(a.to_json()) == a
    assert Event.from_json(client_event(a)[len('["EVENT",'):-1]) == a


@pytest.mark.parametrize("field,value", [
    ("content", "changed"), ("kind", 2), ("created_at", 1), ("tags", [["p", "y"]]),
    ("pubkey", NostrKey(bytes(31) + b"\x08").public.hex()), ("sig", "00" * 64),
    ("id", "11" * 32)])
def test_any_change_is_refused(field: str, value: object) -> None:
    d = ev().to_dict()
    d[field] = value
    with pytest.raises(NostrError):
        Event.from_dict(d)


def test_relay_messages() -> None:
    e = ev()
    m = parse_relay_message(json.dumps(["EVENT", "sub1", e.to_dict()]))
    assert (m.type, m.sub, m.event) == ("EVENT", "sub1", e)
    ok = parse_relay_message(json.dumps(["OK", e.id, True, "duplicate: already have it"]))
    assert ok.ok and ok.prefix == "duplicate"
    assert parse_relay_message(json.dumps(["OK", e.id, False, "nope"])).prefix == ""
    assert parse_relay_message('["EOSE","s"]').sub == "s"
    closed = parse_relay_message('["CLOSED","s","auth-required: who are you"]')
    assert closed.prefix == "auth-required"
    assert parse_relay_message('["NOTICE","hello"]').message == "hello"
    assert parse_relay_message('["AUTH","challenge-1"]').message == "challenge-1"
    assert client_req("s", {"kinds": [1]}) == '["REQ","s",{"kinds":[1]}]'


def test_nip42_auth_event() -> None:
    a = auth_event(KEY, relay="ws://127.0.0.1:7777", challenge="c1", created_at=5,
                   aux=bytes(32))
    assert a.kind == AUTH_KIND and a.tag("relay") == ["ws://127.0.0.1:7777"]
    assert a.tag("challenge") == ["c1"] and Event.from_dict(a.to_dict()) == a


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(
    lambda b: b.decode("latin-1"))))
@settings(max_examples=300)
def test_hostile_relay_input_is_a_typed_error(text: str) -> None:
    try:
        parse_relay_message(text)
    except NostrError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4),
                                                                         c, max_size=4),
                    max_leaves=20))
@settings(max_examples=300)
def test_hostile_json_shapes_are_typed_errors(value: object) -> None:
    for msg in (["EVENT", "s", value], ["OK", value, True, "x"], value):
        try:
            parse_relay_message(json.dumps(msg))
        except NostrError:
            pass
