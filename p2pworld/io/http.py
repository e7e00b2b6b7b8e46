"""HTTP on trio for the control service: a small h11 server and client (shells).

Why h11 and not an ASGI server (hypercorn): the control service answers a handful of small
JSON requests; h11 is already in the dependency tree (trio-websocket → wsproto → h11), is
sans-I/O like every p2pworld core, and runs on trio directly, so the service adds no
dependency and no second event-loop layer. Requests are bounded (64 KiB bodies, 10 s per
connection) and every response closes its connection.

Example::

    async with trio.open_nursery() as n:
        server = await n.start(serve_control, core, "127.0.0.1", 0, save)
        status, body = await http_json(server.url, "GET", "/v1/keys")
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

from p2pworld.auth.control import ControlCore
from p2pworld.auth.control_rules import (
    MAX_ANSWER,
    MAX_BODY,
    control_answer,
    control_reply,
    control_request,
)
from p2pworld.errors import P2PWorldError, SessionClosed
from p2pworld.io.scopes import Failure, Supervisor, spawn_in, task
from p2pworld.transport.http_rules import BoundedBody


@dataclass
class ControlServer:
    core: ControlCore
    host: str
    port: int = 0
    requests: int = 0
    save: Callable[[ControlCore], None] | None = None

    errors: dict[str, int] = field(default_factory=dict)
    """Connections that ended with an error, by code (each is contained: the server goes on)."""

    def _failed(self, f: Failure) -> None:
        self.errors[f.error.code] = self.errors.get(f.error.code, 0) + 1

    @task("request")
    async def _handle(self, stream: trio.SocketStream) -> None:
        """One connection: one request, one response, closed (10 s at most)."""
        try:
            with trio.move_on_after(10):
                try:
                    await _serve_one(stream, self, self.save)
                except (trio.BrokenResourceError, h11.RemoteProtocolError, OSError):
                    pass
        finally:
            await trio.aclose_forcefully(stream)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@task("node", boundary=False)
async def serve_control(core: ControlCore, host: str, port: int,
                        save: Callable[[ControlCore], None] | None = None, *,
                        task_status: trio.TaskStatus[ControlServer] = trio.TASK_STATUS_IGNORED
                        ) -> None:
    """Serve ``core`` over HTTP/1.1 until cancelled; ``save`` persists changed state."""
    server = ControlServer(core, host, save=save)
    listeners = await trio.open_tcp_listeners(port, host=host)
    server.port = listeners[0].socket.getsockname()[1]
    try:
        async with trio.open_nursery() as n:
            spawn_in(n, _accept, server, listeners)
            task_status.started(server)
    finally:
        for lst in listeners:  # serve_listeners closes them too; not if it never ran
            await trio.aclose_forcefully(lst)


@task("node", boundary=False)
async def _accept(server: ControlServer, listeners: list[trio.SocketListener]) -> None:
    # Each connection is a scope of its own, contained where the listener starts it.
    await trio.serve_listeners(functools.partial(
        Supervisor.contain_once, server._handle, on_failure=server._failed), listeners)


async def _serve_one(stream: trio.SocketStream, server: ControlServer,
                     save: Callable[[ControlCore], None] | None) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
    req: h11.Request | None = None
    body = b""
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            data = await stream.receive_some(16384)
            conn.receive_data(data)
            continue
        if isinstance(ev, h11.Request):
            req = ev
        elif isinstance(ev, h11.Data):
            body += ev.data
            if len(body) > MAX_BODY:
                await _respond(stream, conn, 413, {"error": "TOO_LARGE"})
                return
        elif isinstance(ev, h11.EndOfMessage) and req is not None:
            break
        elif isinstance(ev, h11.ConnectionClosed):
            return
    server.requests += 1
    # What the request means (credential, bounded JSON, path) is the core's answer.
    status, out = control_answer(server.core, req.method, req.target, req.headers, body,
                                 now=int(time.time()), jti=secrets.token_bytes(16),
                                 new_key=secrets.token_bytes(32), source=_source(stream))
    if server.core.changed and save is not None:
        await trio.to_thread.run_sync(save, server.core)
        server.core.changed = False
    await _respond(stream, conn, status, out)


def _source(stream: trio.SocketStream) -> str:
    """Who is asking (the peer's address), for the operator-credential throttle."""
    try:
        return str(stream.socket.getpeername()[0])
    except (OSError, IndexError, AttributeError):
        return "?"


async def _respond(stream: trio.SocketStream, conn: h11.Connection, status: int,
                   out: dict[str, Any]) -> None:
    data = json.dumps(out).encode()
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=[
        ("content-type", "application/json"), ("content-length", str(len(data))),
        ("connection", "close")])))
    await stream.send_all(conn.send(h11.Data(data=data)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def http_exchange(host: str, port: int, request: h11.Request, data: bytes = b"", *,
                        max_body: int) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 request on a connection of its own (the caller bounds the time): the
    answer's status, its body, and whether the body ended as the message says (False: the
    connection closed first). A body over ``max_body`` raises ``P2PWorldError``; headers over
    16 KiB, ``h11.ProtocolError``; the network, ``OSError`` or trio's stream errors."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        # h11's send returns the bytes of a request, a data or an end-of-message event.
        await stream.send_all(conn.send(request))
        if data:
            await stream.send_all(conn.send(h11.Data(data=data)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        status, body = 0, BoundedBody(max_body)
        while True:
            ev = conn.next_event()
            if ev is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(16384))
            elif isinstance(ev, h11.Response):
                status = ev.status_code
            elif isinstance(ev, h11.Data):
                body.add(ev.data)
            elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, body.data, isinstance(ev, h11.EndOfMessage)


async def http_json(base: str, method: str, path: str, body: Any = None, *,
                    bearer: str | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One JSON request to ``base`` (``http://host:port``). Network failures raise
    :class:`~p2pworld.errors.SessionClosed`; a malformed answer raises ``P2PWorldError``."""
    req = control_request(base, method, path, body, bearer=bearer)
    try:
        with trio.fail_after(timeout):
            status, out, _ = await http_exchange(
                req.host, req.port,
                h11.Request(method=req.method, target=req.target, headers=req.headers),
                req.data, max_body=MAX_ANSWER)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as e:
        raise SessionClosed(f"control service unreachable: {e}") from None
    except h11.ProtocolError as e:
        raise P2PWorldError(f"bad HTTP from the control service: {e}") from None
    return status, control_reply(out)
