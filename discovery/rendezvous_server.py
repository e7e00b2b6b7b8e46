"""The rendezvous server shell: ``p2pworld rendezvous --listen HOST:PORT``.

Pumps websocket connections into :class:`~discovery.rendezvous.RendezvousCore` and carries out
what it returns. One bounded send queue per connection: a client that cannot keep up is
disconnected (it reconnects and re-registers), so one slow node never stalls the others.

Example::

    async with trio.open_nursery() as n:
        server = await n.start(serve_rendezvous, "127.0.0.1", 0)
        print(server.url)
"""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket

from discovery.rendezvous import MAX_RELAY_BYTES, Out, RendezvousCore
from p2pworld import codec
from p2pworld.errors import P2PWorldError
from p2pworld.transport.session import close_websocket

SEND_QUEUE = 512


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class RendezvousServer:
    core: RendezvousCore = field(default_factory=RendezvousCore)
    host: str = "127.0.0.1"
    port: int = 0
    queues: dict[int, trio.MemorySendChannel[bytes]] = field(default_factory=dict)
    sockets: dict[int, trio_websocket.WebSocketConnection] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    connections_total: int = 0

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    def stats(self) -> dict[str, Any]:
        return {"connections": len(self.sockets), "connections_total": self.connections_total,
                "registered": len(self.core.by_node),
                "relayed_frames": self.core.relayed_frames,
                "relayed_bytes": self.core.relayed_bytes, "errors": dict(self.errors)}

    def _deliver(self, nursery: trio.Nursery, out: Out) -> None:
        for cid, msg in out:
            q = self.queues.get(cid)
            if q is None:
                continue
            try:
                q.send_nowait(codec.encode_frame(msg))
            except trio.WouldBlock:
                self.errors["BACKPRESSURE"] = self.errors.get("BACKPRESSURE", 0) + 1
                ws = self.sockets.get(cid)
                if ws is not None:
                    nursery.start_soon(close_websocket, ws)
            if msg.get("t") == "rv.nope" and msg.get("reason") == "replaced":
                ws = self.sockets.get(cid)
                if ws is not None:
                    nursery.start_soon(close_websocket, ws)


async def serve_rendezvous(host: str, port: int, *,
                           task_status: trio.TaskStatus[RendezvousServer] = trio.TASK_STATUS_IGNORED
                           ) -> None:
    """Run a rendezvous server until cancelled; ``task_status.started`` gives the server."""
    server = RendezvousServer(host=host)
    ids = itertools.count(1)
    async with trio.open_nursery() as nursery:

        async def handler(request: trio_websocket.WebSocketRequest) -> None:
            ws = await request.accept()
            cid = next(ids)
            server.connections_total += 1
            send, recv = trio.open_memory_channel[bytes](SEND_QUEUE)
            server.queues[cid], server.sockets[cid] = send, ws
            _, out = server.core.connect(cid, nonce=secrets.token_bytes(16))
            server._deliver(nursery, out)

            async def writer() -> None:
                async for frame in recv:
                    try:
                        await ws.send_message(frame)
                    except trio_websocket.ConnectionClosed:
                        return

            try:
                async with trio.open_nursery() as conn:
                    conn.start_soon(writer)
                    while True:
                        try:
                            data = await ws.get_message()
                        except trio_websocket.ConnectionClosed:
                            break
                        try:
                            if not isinstance(data, bytes):
                                raise P2PWorldError("text frame")
                            out = server.core.receive(cid, data, now_ms=_now_ms())
                        except P2PWorldError as e:
                            server.errors[e.code] = server.errors.get(e.code, 0) + 1
                            break
                        server._deliver(nursery, out)
                    conn.cancel_scope.cancel()
            finally:
                server.queues.pop(cid, None)
                server.sockets.pop(cid, None)
                server._deliver(nursery, server.core.disconnect(cid))
                await close_websocket(ws)

        async def expire() -> None:
            while True:
                await trio.sleep(5)
                dead, out = server.core.expire(now_ms=_now_ms())
                server._deliver(nursery, out)
                for cid in dead:
                    ws = server.sockets.get(cid)
                    if ws is not None:
                        nursery.start_soon(close_websocket, ws)

        listener = await nursery.start(lambda task_status: trio_websocket.serve_websocket(
            handler, host, port, None, handler_nursery=nursery, message_queue_size=64,
            max_message_size=MAX_RELAY_BYTES + 8192, task_status=task_status))
        server.port = listener.port
        nursery.start_soon(expire)
        task_status.started(server)
