"""NIP-11 relay information documents: the limits a relay publishes (pure).

The lane sizes its parts to what each relay accepts (``limitation.max_content_length`` and
``limitation.max_message_length``); :func:`p2pworld.io.nip11.fetch_limits` fetches the
document. Every malformed document (not JSON, wrong types, absurd values, too large) gives
``None``: the caller then assumes the defaults. Nothing here raises.

What the fetch asks for (:func:`info_request`: host, port and target of the GET, None for a
relay it cannot ask) and what it makes of the answer (:func:`limits_of_answer`: limits only
from a complete ``200``) are decided here too; the shell only carries out the exchange.

Example:
    >>> parse_limits(b'{"name": "r", "limitation": {"max_content_length": 8196}}')
    RelayLimits(max_content_length=8196, max_message_length=None)
    >>> parse_limits(b'{"name": "r"}')
    RelayLimits(max_content_length=None, max_message_length=None)
    >>> parse_limits(b'{"limitation": {"max_content_length": "lots"}}') is None
    True
    >>> http_url("ws://127.0.0.1:7777/r?x=1")
    'http://127.0.0.1:7777/r?x=1'
    >>> info_request("ws://127.0.0.1:7777/r?x=1")
    InfoRequest(host='127.0.0.1', port=7777, target='/r?x=1', netloc='127.0.0.1:7777')
    >>> info_request("wss://relay.example") is None  # no TLS helper yet
    True
    >>> limits_of_answer(200, b'{}', complete=True), limits_of_answer(302, b'{}', complete=True)
    (RelayLimits(max_content_length=None, max_message_length=None), None)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

MAX_DOCUMENT = 64 * 1024
"""Largest information document read (bytes); a longer one is ignored (None)."""
MAX_LIMIT = 1 << 30
"""A published limit above this (1 GiB) is absurd: the document is ignored (None)."""


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


def resource_of(u: SplitResult) -> str:
    """The resource a request for ``u`` names: its path (``/`` when empty) and its query.

    >>> resource_of(urlsplit("ws://h")), resource_of(urlsplit("ws://h/a?b=1"))
    ('/', '/a?b=1')
    """
    return (u.path or "/") + (f"?{u.query}" if u.query else "")


@dataclass(frozen=True)
class InfoRequest:
    """The GET of a relay's information document: TCP ``host`` and ``port``, the request
    ``target`` and the ``netloc`` for its ``Host`` header."""

    host: str
    port: int
    target: str
    netloc: str


def info_request(relay_url: str) -> InfoRequest | None:
    """Where to GET ``relay_url``'s NIP-11 document; None when it cannot be asked: not a
    websocket URL, a port that is not a number or out of range, no host, or ``wss://`` (there
    is no TLS helper in the project yet). Never raises."""
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
    return InfoRequest(host, port, resource_of(u), u.netloc)


def limits_of_answer(status: int, body: bytes, *, complete: bool) -> RelayLimits | None:
    """The limits in an answer to the GET: parsed from the body of a complete ``200`` (see
    :func:`parse_limits`); None for any other status (a redirect included) or a cut body."""
    return parse_limits(body) if status == 200 and complete else None
