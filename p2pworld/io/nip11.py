"""NIP-11 relay information documents: what a relay says about its limits.

The lane sizes its parts to what each relay accepts (``limitation.max_content_length`` and
``limitation.max_message_length``). :func:`parse_limits` is pure; :func:`fetch_limits` is the
shell: one bounded HTTP GET on the relay's URL (``ws://`` → ``http://``) with
``Accept: application/nostr+json`` (h11 on trio, as :mod:`p2pworld.io.http` does HTTP).

Bounds: the answer is at most :data:`MAX_DOCUMENT` bytes (headers at most 16 KiB) and the
whole exchange takes at most ``timeout`` seconds. Every failure (refused, timeout, not 200, a
redirect, not JSON, wrong types, absurd values, too large) gives ``None``: the caller then
assumes the defaults. Nothing here raises.

``wss://`` relays: there is no TLS helper in the project yet (the relay client speaks ``ws://``
only), so :func:`fetch_limits` returns ``None`` for ``wss://`` URLs without connecting.

Example:
    >>> parse_limits(b'{"name": "r", "limitation": {"max_content_length": 8196}}')
    RelayLimits(max_content_length=8196, max_message_length=None)
    >>> parse_limits(b'{"name": "r"}')
    RelayLimits(max_content_length=None, max_message_length=None)
    >>> parse_limits(b'{"limitation": {"max_content_length": "lots"}}') is None
    True
    >>> http_url("ws://127.0.0.1:7777/r?x=1")
    'http://127.0.0.1:7777/r?x=1'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import h11
import trio

MAX_DOCUMENT = 64 * 1024
"""Largest information document read (bytes); a longer one is ignored (None)."""
MAX_HEADERS = 16 * 1024
FETCH_TIMEOUT_S = 3.0
MAX_LIMIT = 1 << 30
"""A published limit above this (1 GiB) is absurd: the document is ignored (None)."""
ACCEPT = "application/nostr+json"


@dataclass(frozen=True)
class RelayLimits:
    """What a relay published (None: not published). Content length is in characters,
    message length in bytes of the whole client message (``["EVENT", {...}]``)."""

    max_content_length: int | None = None
    max_message_length: int | None = None


def _limit(m: dict[str, Any], key: str) -> int | None:
    """The value of ``key`` (None when absent); ValueError when present and not a sane int."""
    v = m.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_LIMIT:
        raise ValueError(key)
    return v


def parse_limits(doc: bytes | str) -> RelayLimits | None:
    """The limits in a NIP-11 document; None if it is not a JSON object, or if ``limitation``
    or either length in it has the wrong type or an absurd value (below 1 or above
    :data:`MAX_LIMIT`). Absent fields are None. Never raises."""
    if len(doc) > MAX_DOCUMENT:
        return None
    try:
        m = json.loads(doc)
    except (ValueError, RecursionError, TypeError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(m, dict):
        return None
    lim = m.get("limitation")
    if lim is None:
        return RelayLimits()
    if not isinstance(lim, dict):
        return None
    try:
        return RelayLimits(_limit(lim, "max_content_length"), _limit(lim, "max_message_length"))
    except ValueError:
        return None


def http_url(relay_url: str) -> str | None:
    """The HTTP URL of a relay's information document (``ws`` → ``http``, ``wss`` →
    ``https``); None if ``relay_url`` is not a websocket URL."""
    try:
        u = urlsplit(relay_url)
    except ValueError:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(u.scheme)
    if scheme is None or not u.netloc:
        return None
    return urlunsplit((scheme, u.netloc, u.path, u.query, ""))


async def fetch_limits(relay_url: str, *, timeout: float = FETCH_TIMEOUT_S) -> RelayLimits | None:
    """GET the relay's NIP-11 document and parse its limits; None on any failure (see the
    module docstring), and for ``wss://`` relays (no TLS helper yet). Never raises."""
    url = http_url(relay_url)
    if url is None:
        return None
    try:
        u = urlsplit(url)
        host, port = u.hostname, u.port or 80
    except ValueError:  # a port that is not a number, or out of range
        return None
    if u.scheme != "http" or not host:
        return None  # https: no TLS helper in the project yet
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    body = b""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADERS)
                await stream.send_all(conn.send(h11.Request(
                    method="GET", target=target,
                    headers=[("host", u.netloc), ("accept", ACCEPT),
                             ("connection", "close")])) or b"")
                await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                while True:
                    ev = conn.next_event()
                    if ev is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(16384))
                        continue
                    if isinstance(ev, h11.Response):
                        if ev.status_code != 200:
                            return None
                    elif isinstance(ev, h11.Data):
                        body += ev.data
                        if len(body) > MAX_DOCUMENT:
                            return None
                    elif isinstance(ev, h11.EndOfMessage):
                        return parse_limits(body)
                    elif isinstance(ev, h11.ConnectionClosed):
                        return None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                h11.ProtocolError, ValueError):
            return None
    return None


__all__ = ["RelayLimits", "parse_limits", "http_url", "fetch_limits", "MAX_DOCUMENT"]
