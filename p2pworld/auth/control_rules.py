"""What the control service's shells decide (pure): HTTP requests and answers, the state file.

The h11 server and client (:mod:`p2pworld.io.http`) and the service's home
(:mod:`p2pworld.io.control_service`) do the socket and disk I/O; this module answers for them:

* :func:`control_answer`: a complete request (method, target, headers, body) to the
  ``(status, JSON)`` the server sends: the bearer credential, the JSON body (bounded before it
  is parsed; invalid JSON is ``400 BAD_JSON``), the path without its query, then
  :meth:`~p2pworld.auth.control.ControlCore.handle`;
* :func:`control_request` / :func:`control_reply`: the client's request to a control URL
  (``http://host:port`` only) and its reading of the answer (bounded JSON, or
  ``P2PWorldError``);
* :func:`decode_state`: the state file's bytes, or ``STORE_CORRUPT`` naming the file.

Example:
    >>> from p2pworld.auth.control import ControlCore, ControlState
    >>> core = ControlCore(ControlState.create(org="acme", operator_secret=b"s" * 32,
    ...                                        key=bytes([7]) * 32))
    >>> status, out = control_answer(core, b"GET", b"/v1/keys?x=1", [], b"", now=1000,
    ...                              jti=bytes(16), new_key=bytes(32), source="127.0.0.1")
    >>> status, sorted(out)
    (200, ['current', 'keys'])
    >>> control_answer(core, b"POST", b"/v1/enroll", [], b"[[", now=1000, jti=bytes(16),
    ...                new_key=bytes(32), source="127.0.0.1")[0]
    400
    >>> req = control_request("http://127.0.0.1:8000", "POST", "/v1/token", {"a": 1},
    ...                       bearer="t")
    >>> req.host, req.port, req.data, req.headers[-1]
    ('127.0.0.1', 8000, b'{"a": 1}', ('authorization', 'Bearer t'))
    >>> control_reply(b'{"ok": true}'), control_reply(b"")
    ({'ok': True}, None)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from p2pworld import jsonbound
from p2pworld.auth.control import ControlCore, ControlState
from p2pworld.errors import DecodeError, P2PWorldError, StoreCorrupt

MAX_BODY = 64 * 1024
"""Largest request body the control service reads."""
MAX_ANSWER = 4 * MAX_BODY
"""Largest answer body a client reads from a control service."""
_BEARER = b"Bearer "


# --- the server -------------------------------------------------------------------------------

def bearer_of(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The ``Authorization: Bearer`` credential of a request (the last one given), or None."""
    bearer = None
    for name, value in headers:
        if name.lower() == b"authorization" and value.startswith(_BEARER):
            bearer = value[len(_BEARER):].decode("ascii", "replace")
    return bearer


def control_answer(core: ControlCore, method: bytes, target: bytes,
                   headers: Sequence[tuple[bytes, bytes]], body: bytes, *, now: int,
                   jti: bytes, new_key: bytes, source: str) -> tuple[int, dict[str, Any]]:
    """The server's answer to one complete request (module docs). Size and nesting of the
    body are checked before the JSON parser runs (20,000 ``[`` used to end the service with a
    RecursionError)."""
    bearer = bearer_of(headers)
    try:
        parsed: Any = jsonbound.loads(body, max_bytes=MAX_BODY) if body else None
    except DecodeError as e:
        return 400, {"error": "BAD_JSON", "message": e.message}
    path = target.decode("ascii", "replace").split("?", 1)[0]
    return core.handle(method.decode(), path, bearer=bearer, body=parsed, now=now, jti=jti,
                       new_key=new_key, source=source)


# --- the client -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ControlRequest:
    """One HTTP/1.1 request to a control service, ready for the client to send."""

    host: str
    port: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    data: bytes


def control_request(base: str, method: str, path: str, body: Any = None, *,
                    bearer: str | None = None) -> ControlRequest:
    """The request for ``method path`` with a JSON ``body`` to ``base`` (``http://host:port``;
    the connection closes after the answer).

    Raises:
        P2PWorldError: ``base`` is not ``http://host:port``.
    """
    u = urlsplit(base)
    if u.scheme != "http" or not u.hostname or not u.port:
        raise P2PWorldError(f"control URL must be http://host:port, not {base!r}")
    data = b"" if body is None else json.dumps(body).encode()
    headers = [("host", f"{u.hostname}:{u.port}"), ("content-length", str(len(data))),
               ("content-type", "application/json"), ("connection", "close")]
    if bearer:
        headers.append(("authorization", f"Bearer {bearer}"))
    return ControlRequest(u.hostname, u.port, method, path, headers, data)


def control_reply(body: bytes) -> Any:
    """The JSON of an answer's body (None for an empty one).

    Raises:
        P2PWorldError: the body is not bounded, valid JSON.
    """
    try:
        return jsonbound.loads(body, max_bytes=MAX_ANSWER) if body else None
    except DecodeError:
        raise P2PWorldError("control service answered with invalid JSON") from None


# --- the home ---------------------------------------------------------------------------------

def decode_state(raw: bytes, where: str) -> ControlState:
    """The service's state from its file's bytes (``where`` names the file in errors).

    Raises:
        StoreCorrupt: the bytes are not a valid state (the service does not start).
    """
    try:
        return ControlState.decode(raw)
    except (P2PWorldError, KeyError, TypeError, ValueError) as e:
        raise StoreCorrupt(f"{where}: {e}") from None


__all__ = ["ControlRequest", "MAX_ANSWER", "MAX_BODY", "bearer_of", "control_answer",
           "control_reply", "control_request", "decode_state"]
