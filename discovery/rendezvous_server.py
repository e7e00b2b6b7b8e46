"""The rendezvous server shell: ``p2pworld rendezvous --listen HOST:PORT``.

Pumps websocket connections into :class:`~p2pworld.transport.rendezvous.RendezvousCore` and carries out
what it returns (the frames to queue, the connections to close; the core keeps the error
tally). One bounded send queue per connection: a client that cannot keep up is disconnected
(it reconnects and re-registers), so one slow node never stalls the others.

Example::

    async with trio.open_nursery() as n:
        server = await n.start(serve_rendezvous, "127.0.0.1", 0)
        print(server.url)
"""

from __future__ import annotations

import functools
import itertools
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket

from p2pworld import codec
from p2pworld.io.scopes import Failure, Supervisor, spawn_in, start_in, task
from p2pworld.io.session import close_websocket
from p2pworld.transport.rendezvous import MAX_RELAY_BYTES, Out, RendezvousCore

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
    connections_total: int = 0
    _nursery: trio.Nursery | None = None
    _sup: Supervisor | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    @property
    def errors(self) -> dict[str, int]:
        """Error codes by count (the core keeps the tally)."""
        return self.core.errors

    def stats(self) -> dict[str, Any]:
        return {"connections": len(self.sockets), "connections_total": self.connections_total,
                "registered": len(self.core.by_node),
                "relayed_frames": self.core.relayed_frames,
                "relayed_bytes": self.core.relayed_bytes, "errors": dict(self.errors)}

    def _deliver(self, out: Out) -> None:
        for cid, msg in out:
            q = self.queues.get(cid)
            if q is None:
                continue
            try:
                q.send_nowait(codec.encode_frame(msg))
            except trio.WouldBlock:
                self.core.count("BACKPRESSURE")
                self._close(cid)
        for cid in self.core.closes_after(out):
            self._close(cid)

    def _close(self, cid: int) -> None:
        ws = self.sockets.get(cid)
        if ws is not None and self._nursery is not None:
            spawn_in(self._nursery, close_websocket, ws)

    def _failed(self, f: Failure) -> None:
        self.core.count(f.error.code)

    @task("request")
    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        """One client connection: its frames into the core, the core's answers out."""
        ws = await request.accept()
        cid = next(self._ids)
        self.connections_total += 1
        send, recv = trio.open_memory_channel[bytes](SEND_QUEUE)
        self.queues[cid], self.sockets[cid] = send, ws
        _, first = self.core.connect(cid, nonce=secrets.token_bytes(16))
        out: Out | None = first
        try:
            async with trio.open_nursery() as conn:
                spawn_in(conn, self._writer, ws, recv)
                # The core ends the connection (None) on a frame it refuses.
                while out is not None:
                    self._deliver(out)
                    try:
                        data = await ws.get_message()
                    except trio_websocket.ConnectionClosed:
                        break
                    out = self.core.frame(cid, data, now_ms=_now_ms())
                conn.cancel_scope.cancel()
        finally:
            self.queues.pop(cid, None)
            self.sockets.pop(cid, None)
            self._deliver(self.core.disconnect(cid))
            await close_websocket(ws)

    @task("request", boundary=False)
    async def _writer(self, ws: trio_websocket.WebSocketConnection,
                      recv: trio.MemoryReceiveChannel[bytes]) -> None:
        async for frame in recv:
            try:
                await ws.send_message(frame)
            except trio_websocket.ConnectionClosed:
                return

    @task("node", boundary=False)
    async def _expire(self) -> None:
        while True:
            await trio.sleep(5)
            dead, out = self.core.expire(now_ms=_now_ms())
            self._deliver(out)
            for cid in dead:
                self._close(cid)

    @task("node", boundary=False)
    async def _listen(self, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                      ) -> None:
        assert self._nursery is not None and self._sup is not None
        # Each connection is a scope of its own (whatever ends it, the others and the
        # server go on).
        await trio_websocket.serve_websocket(
            functools.partial(self._sup.contain, self._handle, key="connection"),
            self.host, self.port, None, handler_nursery=self._nursery,
            message_queue_size=64, max_message_size=MAX_RELAY_BYTES + 8192,
            task_status=task_status)


@task("node", boundary=False)
async def serve_rendezvous(host: str, port: int, *,
                           task_status: trio.TaskStatus[RendezvousServer] = trio.TASK_STATUS_IGNORED
                           ) -> None:
    """Run a rendezvous server until cancelled; ``task_status.started`` gives the server."""
    server = RendezvousServer(host=host, port=port)
    async with trio.open_nursery() as nursery:
        server._nursery = nursery
        server._sup = Supervisor(nursery, on_failure=server._failed)
        listener = await start_in(nursery, server._listen)
        server.port = listener.port
        spawn_in(nursery, server._expire)
        task_status.started(server)
