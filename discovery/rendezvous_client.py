"""The rendezvous client shell: register, learn workspace peers, carry relayed sessions.

A node keeps one connection per configured rendezvous. Peers it learns become discovery
candidates (their direct URLs are dialled first); when no direct route works, the node runs an
ordinary p2pworld session *through* the rendezvous: :class:`RelayPipe` looks like a websocket
to the session code, and its frames travel inside ``rv.relay`` messages, already sealed by the
session's end-to-end transport keys.

What each message means, the relay envelope and the table of pipes are the client core's
(:mod:`p2pworld.transport.rendezvous_client`); this shell connects, pumps frames and carries
out the core's effects (:data:`CARRIERS`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket
from trio_websocket import CloseReason, ConnectionClosed

from p2pworld import codec
from p2pworld.identity import Signer
from p2pworld.io.scopes import spawn_in, task
from p2pworld.io.session import close_websocket
from p2pworld.transport.rendezvous import Registration, register, verified_peers
from p2pworld.transport.rendezvous_client import (
    MAX_MESSAGE_BYTES,
    Closed,
    Deliver,
    Incoming,
    Listed,
    Nothing,
    PipeKey,
    RendezvousClientCore,
    dial_target,
    read_message,
    refresh_interval_s,
    relay_frame,
)

PIPE_QUEUE = 256


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RelayPipe:
    """One relayed connection to ``peer`` through a rendezvous (a websocket look-alike)."""

    def __init__(self, client: RendezvousClient, peer: bytes, pid: int, mine: bool) -> None:
        self.client = client
        self.peer = peer
        self.pid = pid
        self.mine = mine
        self.key: PipeKey = (peer, pid, mine)
        self._send, self._recv = trio.open_memory_channel[bytes](PIPE_QUEUE)
        self.closed = False

    async def get_message(self) -> bytes:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosed(CloseReason(1000, "relay closed")) from None

    async def send_message(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionClosed(CloseReason(1000, "relay closed"))
        await self.client._transmit(relay_frame(self.peer, self.pid, self.mine, "data", data))

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._send.close()
            self.client.core.drop(self.key)
            try:
                await self.client._transmit(relay_frame(self.peer, self.pid, self.mine, "close"))
            except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def _feed(self, data: bytes) -> None:
        try:
            self._send.send_nowait(data)
        except trio.WouldBlock:
            # The session above is not reading: end the pipe (the session resumes later).
            self._remote_closed()
        except trio.ClosedResourceError:
            pass

    def _remote_closed(self) -> None:
        self.closed = True
        self._send.close()
        self.client.core.drop(self.key)


@dataclass
class RendezvousClient:
    """Keeps a node registered at ``url`` and relays for it. Run :meth:`run` in a nursery."""

    url: str
    signer: Signer
    workspace: str
    direct_urls: Callable[[], list[str]]
    on_peers: Callable[[str, list[Registration]], None]
    on_incoming: Callable[[RelayPipe], None]
    """Called for each pipe a peer opens to us; the caller starts its session in its own
    scope (a failure there must not end this rendezvous connection)."""
    ttl_ms: int = 60_000
    connect_timeout: float = 10.0
    connected: trio.Event = field(default_factory=trio.Event)
    registered: bool = False
    """This connection got past the challenge (registered at least once)."""
    core: RendezvousClientCore[RelayPipe] = field(init=False)
    _ws: trio_websocket.WebSocketConnection | None = None

    def __post_init__(self) -> None:
        self.core = RendezvousClientCore(self.workspace)

    @property
    def pipes(self) -> dict[PipeKey, RelayPipe]:
        """The open relayed pipes (the core's table)."""
        return self.core.pipes

    @property
    def errors(self) -> dict[str, int]:
        """Relay envelopes that did not decode, by error code."""
        return self.core.errors

    async def open_pipe(self, peer: bytes) -> RelayPipe:
        """Open a relayed connection to ``peer`` (then run the session handshake over it)."""
        if self._ws is None:
            raise ConnectionClosed(CloseReason(1001, "rendezvous not connected"))
        pipe = RelayPipe(self, peer, self.core.next_pid(), True)
        self.core.add(pipe.key, pipe)
        await self._transmit(relay_frame(peer, pipe.pid, True, "open"))
        return pipe

    async def _transmit(self, frame: bytes) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionClosed(CloseReason(1001, "rendezvous not connected"))
        await ws.send_message(frame)

    async def run(self, nursery: trio.Nursery) -> None:
        """Connect, register, refresh, dispatch; returns when the connection ends (closed by
        either side). Raises ``OSError`` or a trio-websocket handshake error when it cannot
        connect, :class:`~p2pworld.errors.DecodeError` when the rendezvous misbehaves."""
        # A rendezvous that takes the TCP connection but never answers the upgrade (hung,
        # or its handler failed) must not hold this loop for trio-websocket's default 60 s.
        target = dial_target(self.url)
        with trio.fail_after(self.connect_timeout):
            # We own the TCP stream: trio-websocket 0.12 leaks it when the upgrade is cut
            # short (by this timeout, or by a rendezvous that closes half-way).
            stream = await trio.open_tcp_stream(target.host, target.port)
            try:
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, target.host, target.resource,
                    message_queue_size=64, max_message_size=MAX_MESSAGE_BYTES)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        try:
            try:
                nonce = self.core.challenged(read_message(await ws.get_message()))
            except ConnectionClosed:
                return
            self._ws = ws
            # Both tasks end quietly when the connection closes (an exception raised in a
            # nursery comes out wrapped in an ExceptionGroup, which no caller expects).
            async with trio.open_nursery() as n:
                spawn_in(n, self._refresh, ws, nonce)
                self.connected.set()
                self.registered = True
                await self._read(ws)
                n.cancel_scope.cancel()
        finally:
            self._ws = None
            self.connected = trio.Event()
            for pipe in list(self.pipes.values()):
                pipe._remote_closed()
            await close_websocket(ws)

    @task("relay", boundary=False)
    async def _refresh(self, ws: trio_websocket.WebSocketConnection, nonce: bytes) -> None:
        """Register now and again every third of the registration's lifetime."""
        try:
            while True:
                await ws.send_message(codec.encode_frame(register(
                    self.signer, self.workspace, self.direct_urls(), nonce=nonce,
                    now_ms=_now_ms(), ttl_ms=self.ttl_ms)))
                await trio.sleep(refresh_interval_s(self.ttl_ms))
        except ConnectionClosed:
            return

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> None:
        """Carry out what each message means until the connection closes or the rendezvous
        says a newer connection of this node replaced this one."""
        try:
            while not self.core.ended:
                effect = self.core.receive(read_message(await ws.get_message()))
                CARRIERS[type(effect)](self, effect)
        except ConnectionClosed:
            return

    def _listed(self, effect: Listed) -> None:
        self.on_peers(self.url, verified_peers(effect.message, workspace=self.workspace,
                                               now_ms=_now_ms()))

    def _incoming(self, effect: Incoming) -> None:
        pipe = RelayPipe(self, *effect.key)
        self.core.add(effect.key, pipe)
        self.on_incoming(pipe)

    def _deliver(self, effect: Deliver[RelayPipe]) -> None:
        effect.pipe._feed(effect.data)

    def _closed(self, effect: Closed[RelayPipe]) -> None:
        for pipe in effect.pipes:
            pipe._remote_closed()

    def _nothing(self, effect: Nothing) -> None:
        pass


CARRIERS: dict[type, Callable[[RendezvousClient, Any], None]] = {
    Listed: RendezvousClient._listed,
    Incoming: RendezvousClient._incoming,
    Deliver: RendezvousClient._deliver,
    Closed: RendezvousClient._closed,
    Nothing: RendezvousClient._nothing,
}
"""How the shell carries out each effect of the client core (by exact type)."""
