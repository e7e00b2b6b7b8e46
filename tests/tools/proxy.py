"""A loopback TCP proxy a test can cut and restore (a direct lane that dies and returns)."""

from __future__ import annotations

from types import TracebackType

import trio


class TcpProxy:
    """``async with TcpProxy(target=(host, port)) as p``: ``p.url`` forwards to the target;
    ``p.cut()`` drops every connection and refuses new ones; ``p.restore()`` ends that."""

    def __init__(self, *, target: tuple[str, int]) -> None:
        self.target = target
        self.up = True
        self.port = 0
        self._conns: set[trio.CancelScope] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def cut(self) -> None:
        self.up = False
        for scope in list(self._conns):
            scope.cancel()

    def restore(self) -> None:
        self.up = True

    async def __aenter__(self) -> TcpProxy:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        self._nursery.start_soon(trio.serve_listeners, self._handle, listeners)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        self._nursery.cancel_scope.cancel()
        return await self._nursery_cm.__aexit__(t, e, tb)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if not self.up:
                return
            with trio.CancelScope() as scope:
                self._conns.add(scope)
                try:
                    upstream = await trio.open_tcp_stream(*self.target)
                except OSError:
                    return
                async with upstream, trio.open_nursery() as n:
                    n.start_soon(self._pump, client, upstream, n.cancel_scope)
                    n.start_soon(self._pump, upstream, client, n.cancel_scope)
            self._conns.discard(scope)

    @staticmethod
    async def _pump(src: trio.SocketStream, dst: trio.SocketStream,
                    done: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()
