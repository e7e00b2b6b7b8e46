"""Fetching a relay's NIP-11 information document (shell): one bounded HTTP GET on the
relay's URL (``ws://`` → ``http://``) with ``Accept: application/nostr+json``, through the
project's h11 client (:func:`p2pworld.io.http.http_exchange`); the document is parsed by
:mod:`p2pworld.nostr.limits` (pure).

Bounds: the answer is at most :data:`~p2pworld.nostr.limits.MAX_DOCUMENT` bytes (headers at
most 16 KiB) and the whole exchange takes at most ``timeout`` seconds. Every failure (refused,
timeout, not 200, a redirect, not JSON, wrong types, absurd values, too large) gives ``None``:
the caller then assumes the defaults. Nothing here raises. What to ask and what an answer
means are :func:`~p2pworld.nostr.limits.info_request` and
:func:`~p2pworld.nostr.limits.limits_of_answer` (pure); this module carries out the exchange.

``wss://`` relays: there is no TLS helper in the project yet (the relay client speaks ``ws://``
only), so :func:`fetch_limits` returns ``None`` for ``wss://`` URLs without connecting.

Example::

    limits = await fetch_limits("ws://127.0.0.1:7777")  # RelayLimits, or None
"""

from __future__ import annotations

import h11
import trio

from p2pworld.errors import P2PWorldError
from p2pworld.io.http import http_exchange
from p2pworld.nostr.limits import (
    MAX_DOCUMENT,
    MAX_LIMIT,
    RelayLimits,
    http_url,
    info_request,
    limits_of_answer,
    parse_limits,
)

FETCH_TIMEOUT_S = 3.0
ACCEPT = "application/nostr+json"


async def fetch_limits(relay_url: str, *, timeout: float = FETCH_TIMEOUT_S) -> RelayLimits | None:
    """GET the relay's NIP-11 document and parse its limits; None on any failure (see the
    module docstring), and for ``wss://`` relays (no TLS helper yet). Never raises."""
    ask = info_request(relay_url)
    if ask is None:
        return None
    request = h11.Request(method="GET", target=ask.target, headers=[
        ("host", ask.netloc), ("accept", ACCEPT), ("connection", "close")])
    with trio.move_on_after(timeout):
        try:
            status, body, complete = await http_exchange(ask.host, ask.port, request,
                                                         max_body=MAX_DOCUMENT)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                h11.ProtocolError, ValueError, P2PWorldError):
            return None
        return limits_of_answer(status, body, complete=complete)
    return None


__all__ = ["RelayLimits", "parse_limits", "http_url", "fetch_limits", "MAX_DOCUMENT",
           "MAX_LIMIT"]
