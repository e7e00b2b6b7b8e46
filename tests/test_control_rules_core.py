"""The control service's HTTP and state-file rules (p2pworld.auth.control_rules): values in,
values out, no sockets."""

from __future__ import annotations

import json

import pytest

from p2pworld.auth.control import ControlCore, ControlState
from p2pworld.auth.control_rules import (
    MAX_ANSWER,
    MAX_BODY,
    bearer_of,
    control_answer,
    control_reply,
    control_request,
    decode_state,
)
from p2pworld.errors import P2PWorldError, StoreCorrupt
from p2pworld.io import http

SECRET = b"s" * 32


def core() -> ControlCore:
    return ControlCore(ControlState.create(org="acme", operator_secret=SECRET,
                                           key=bytes([7]) * 32))


def answer(c: ControlCore, method: bytes, target: bytes, body: bytes = b"",
           headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict]:
    return control_answer(c, method, target, headers or [], body, now=1000, jti=bytes(16),
                          new_key=bytes([9]) * 32, source="10.0.0.1")


def test_the_shell_s_bounds_are_the_core_s() -> None:
    assert http.MAX_BODY == MAX_BODY == 64 * 1024 and MAX_ANSWER == 4 * MAX_BODY


@pytest.mark.parametrize("headers,bearer", [
    ([], None),
    ([(b"authorization", b"Bearer abc")], "abc"),
    ([(b"Authorization", b"Bearer abc")], "abc"),
    ([(b"authorization", b"Basic abc")], None),
    ([(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")], "b"),
    ([(b"authorization", b"Bearer \xff")], "\ufffd"),
    ([(b"x-other", b"Bearer abc")], None),
])
def test_bearer_of(headers: list[tuple[bytes, bytes]], bearer: str | None) -> None:
    assert bearer_of(headers) == bearer


def test_a_request_is_answered_by_the_core_without_its_query() -> None:
    c = core()
    assert answer(c, b"GET", b"/v1/keys?ignored=1") == c.handle(
        "GET", "/v1/keys", bearer=None, body=None, now=1000, jti=bytes(16))


def test_invalid_or_hostile_json_is_400_bad_json() -> None:
    for body in (b"{", b"[" * 20_000, b"x" * (MAX_BODY + 1)):
        status, out = answer(core(), b"POST", b"/v1/enroll", body)
        assert status == 400 and out["error"] == "BAD_JSON" and out["message"]


def test_an_operator_call_carries_its_credential() -> None:
    c = core()
    body = json.dumps({"user": "ana", "device": "laptop", "node_key": "11" * 32,
                       "nostr": "00" * 32, "scopes": ["world:join"]}).encode()
    refused, _ = answer(c, b"POST", b"/v1/enroll", body)
    assert refused in (401, 403) and not c.changed
    status, _ = answer(c, b"POST", b"/v1/enroll", body,
                       [(b"authorization", b"Bearer " + SECRET.hex().encode())])
    assert status == 200 and c.changed


def test_a_control_request() -> None:
    req = control_request("http://h:81", "GET", "/v1/keys")
    assert (req.host, req.port, req.method, req.target, req.data) == (
        "h", 81, "GET", "/v1/keys", b"")
    assert req.headers == [("host", "h:81"), ("content-length", "0"),
                           ("content-type", "application/json"), ("connection", "close")]
    with_body = control_request("http://h:81", "POST", "/v1/token", {"a": [1]}, bearer="t")
    assert with_body.data == b'{"a": [1]}'
    assert ("content-length", "10") in with_body.headers
    assert with_body.headers[-1] == ("authorization", "Bearer t")
    assert control_request("http://h:81", "POST", "/", {}, bearer="").headers[-1] == (
        "connection", "close")  # an empty credential is not sent


@pytest.mark.parametrize("base", ["https://h:1", "http://h", "http://:80", "h:80", "ws://h:1"])
def test_only_http_host_port_is_a_control_url(base: str) -> None:
    with pytest.raises(P2PWorldError) as got:
        control_request(base, "GET", "/")
    assert got.value.message == f"control URL must be http://host:port, not {base!r}"


def test_control_replies() -> None:
    assert control_reply(b"") is None
    assert control_reply(b'{"keys": []}') == {"keys": []}
    for bad in (b"{", b"[" * 20_000, b"1" * (MAX_ANSWER + 1)):
        with pytest.raises(P2PWorldError) as got:
            control_reply(bad)
        assert got.value.message == "control service answered with invalid JSON"


def test_the_state_file() -> None:
    st_ = ControlState.create(org="acme", operator_secret=SECRET, key=bytes([7]) * 32)
    assert decode_state(st_.encode(), "/srv/control.state").encode() == st_.encode()
    for raw in (b"", b"garbage", st_.encode()[:-3]):
        with pytest.raises(StoreCorrupt) as got:
            decode_state(raw, "/srv/control.state")
        assert got.value.message.startswith("/srv/control.state: ")
