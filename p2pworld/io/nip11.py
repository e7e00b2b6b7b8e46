"""Fetching a relay's NIP-11 information document (shell): one bounded HTTP GET on the
relay's URL (``ws://`` → ``http://``) with ``Accept: application/nostr+json``, through the
project's h11 client (:func:`p2pworld.io.http.http_exchange`); the document is parsed by
:mod:`p2pworld.nostr.limits` (pure).

Bounds: the answer is at most :data:`~p2pworld.nostr.limits.MAX_DOCUMENT` bytes (headers at
most 16 KiB) and the whole exchange takes at most ``timeout`` seconds. Every failure (refused,
timeout, not 200, a redirect, not JSON, wrong types, absurd values, too large) gives ``None``:
the caller then assumes the defaults. Nothing here raises.

``wss://`` relays: there is no TLS helper in the project yet (the relay client speaks ``ws://``
only), so :func:`fetch_limits` returns ``None`` for ``wss://`` URLs without connecting.

Example::

    limits = await fetch_limits("ws://127.0.0.1:7777")  # RelayLimits, or None
"""

from __future__ import annotations

from urllib.parse import urlsplit

import h11
import trio

from p2pworld.errors import P2PWorldError
from p2pworld.io.http import http_exchange
from p2pworld.nostr.limits import MAX_DOCUMENT, MAX_LIMIT, RelayLimits, http_url, parse_limits

FETCH_TIMEOUT_S = 3.0
ACCEPT = "application/nostr+json"


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
    request = h11.Request(method="GET", target=target, headers=[
        ("host", u.netloc), ("accept", ACCEPT), ("connection", "close")])
    with trio.move_on_after(timeout):
        try:
            status, body, complete = await http_exchange(host, port, request,
                                                         max_body=MAX_DOCUMENT)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                h11.ProtocolError, ValueError, P2PWorldError):
            return None
        return parse_limits(body) if status == 200 and complete else None
    return None


__all__ = ["RelayLimits", "parse_limits", "http_url", "fetch_limits", "MAX_DOCUMENT",
           "MAX_LIMIT"]
