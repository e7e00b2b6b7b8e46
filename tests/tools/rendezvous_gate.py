"""A websocket front for a real rendezvous that closes connections at a chosen stage.

``async with RendezvousGate(server.url, close_at="register") as gate``: nodes given
``gate.url`` reach the rendezvous through it. The first ``times`` connections are closed by
the gate (a real websocket close, from the rendezvous side as the node sees it) at the stage
``close_at``:

* ``accept``: right after the websocket upgrade, before the challenge;
* ``challenge``: right after the rendezvous' challenge was passed on to the node;
* ``register``: right after the node's signed registration was passed on to the rendezvous
  (the rendezvous registered it; the node has not heard back).

Later connections pass through unchanged (the rendezvous "returns"). ``gate.closed`` is set
once ``times`` connections were closed; ``gate.closed_at`` lists the stage of each close and
``gate.passed`` counts the connections passed through.
"""

from __future__ import annotations

from types import TracebackType

import trio
import trio_websocket
from trio_websocket import ConnectionClosed, HandshakeError

from p2pworld.io.session import close_websocket

STAGES = ("accept", "challenge", "register")
MAX_MESSAGE = (1 << 20) + 8192


class RendezvousGate:
    def __init__(self, upstream: str, *, close_at: str, times: int = 1) -> None:
        if close_at not in STAGES:
            raise ValueError(f"close_at must be one of {STAGES}")
        self.upstream = upstream
        self.close_at = close_at
        self.times = times
        self.port = 0
        self.closed_at: list[str] = []
        self.passed = 0
        self.closed = trio.Event()
        self._closing = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def __aenter__(self) -> RendezvousGate:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        listener = await self._nursery.start(
            lambda task_status: trio_websocket.serve_websocket(
                self._handle, "127.0.0.1", 0, None, handler_nursery=self._nursery,
                message_queue_size=64, max_message_size=MAX_MESSAGE,
                task_status=task_status))
        self.port = listener.port
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        self._nursery.cancel_scope.cancel()
        return await self._nursery_cm.__aexit__(t, e, tb)

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        stage: str | None = None
        if self._closing < self.times:
            self._closing += 1
            stage = self.close_at
        try:
            if stage == "accept":
                return
            try:
                up = await trio_websocket.connect_websocket_url(
                    self._nursery, self.upstream, message_queue_size=64,
                    max_message_size=MAX_MESSAGE)
            except (OSError, HandshakeError):
                return  # the rendezvous itself is down: the node sees its connection close
            try:
                await ws.send_message(await up.get_message())  # the challenge
                if stage == "challenge":
                    return
                await up.send_message(await ws.get_message())  # the registration
                if stage == "register":
                    return
                self.passed += 1
                async with trio.open_nursery() as n:
                    n.start_soon(_pump, ws, up, n.cancel_scope)
                    n.start_soon(_pump, up, ws, n.cancel_scope)
            finally:
                await close_websocket(up)
        except ConnectionClosed:
            pass
        finally:
            await close_websocket(ws)
            if stage is not None:
                self.closed_at.append(stage)
                if len(self.closed_at) >= self.times:
                    self.closed.set()


async def _pump(src: trio_websocket.WebSocketConnection, dst: trio_websocket.WebSocketConnection,
                done: trio.CancelScope) -> None:
    try:
        while True:
            await dst.send_message(await src.get_message())
    except ConnectionClosed:
        pass
    done.cancel()
