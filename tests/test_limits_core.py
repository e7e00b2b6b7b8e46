"""The NIP-11 fetch's decisions (:mod:`p2pworld.nostr.limits`), pure: what to ask a relay for
and what an answer means. Parsing and the fetch against real servers are
``tests/test_nostr_lane_parts.py``."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given, settings, strategies as st

from p2pworld.nostr.limits import (
    InfoRequest,
    RelayLimits,
    http_url,
    info_request,
    limits_of_answer,
    parse_limits,
    resource_of,
)


def _request_as_the_shell_made_it(relay_url: str) -> tuple[str, int, str, str] | None:
    url = http_url(relay_url)
    if url is None:
        return None
    try:
        u = urlsplit(url)
        host, port = u.hostname, u.port or 80
    except ValueError:
        return None
    if u.scheme != "http" or not host:
        return None
    return host, port, (u.path or "/") + (f"?{u.query}" if u.query else ""), u.netloc


urls = st.one_of(
    st.builds(lambda s, h, p, path, q: f"{s}://{h}{p}{path}{q}",
              st.sampled_from(["ws", "wss", "http", "ftp"]),
              st.sampled_from(["relay.example", "127.0.0.1", "[::1]", "", "[::1"]),
              st.sampled_from(["", ":7777", ":0", ":99999", ":abc"]),
              st.sampled_from(["", "/", "/r", "/a/b"]),
              st.sampled_from(["", "?x=1", "?"])),
    st.text(max_size=40))


@settings(max_examples=400, deadline=None)
@given(urls)
def test_the_request_is_the_one_the_fetch_made(url: str) -> None:
    want = _request_as_the_shell_made_it(url)
    assert info_request(url) == (None if want is None else InfoRequest(*want))


def test_what_is_asked_of_a_relay() -> None:
    assert info_request("ws://127.0.0.1:7777") == InfoRequest(
        "127.0.0.1", 7777, "/", "127.0.0.1:7777")
    assert info_request("ws://relay.example/r?x=1") == InfoRequest(
        "relay.example", 80, "/r?x=1", "relay.example")
    for cannot in ("wss://relay.example", "http://relay.example", "ws://h:abc", "ws://",
                   "not a url"):
        assert info_request(cannot) is None, cannot
    assert resource_of(urlsplit("ws://h?q")) == "/?q"


@given(st.integers(100, 599), st.binary(max_size=200), st.booleans())
def test_limits_come_only_from_a_complete_200(status: int, body: bytes,
                                              complete: bool) -> None:
    got = limits_of_answer(status, body, complete=complete)
    if status == 200 and complete:
        assert got == parse_limits(body)
    else:
        assert got is None


def test_an_answer_with_limits() -> None:
    doc = b'{"limitation": {"max_content_length": 8196, "max_message_length": 20000}}'
    assert limits_of_answer(200, doc, complete=True) == RelayLimits(8196, 20000)
    assert limits_of_answer(200, doc, complete=False) is None
    assert limits_of_answer(301, doc, complete=True) is None
