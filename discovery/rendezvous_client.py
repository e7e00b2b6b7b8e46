"""The rendezvous client shell: register, learn workspace peers, carry relayed sessions.

A node keeps one connection per configured rendezvous. Peers it learns become discovery
candidates (their direct URLs are dialled first); when no direct route works, the node runs an
ordinary p2pworld session *through* the rendezvous: :class:`RelayPipe` looks like a websocket
to the session code, and its frames travel inside ``rv.relay`` messages, already sealed by the
session's end-to-end transport keys.

Relay envelope (inside ``rv.relay.d``): canonical CBOR ``{c: pipe id, o: opened by the
sender?, k: "open" | "data" | "close", d: bytes}``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio
import trio_websocket
from trio_websocket import CloseReason, ConnectionClosed

from p2pworld import codec
from p2pworld.errors import DecodeError, P2PWorldError
from p2pworld.identity import Signer
from p2pworld.io.scopes import spawn_in, task
from p2pworld.io.session import close_websocket
from p2pworld.transport.rendezvous import Registration, parse_message, register, verified_peers

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
        await self.client._relay(self.peer, {"c": self.pid, "o": self.mine, "k": "data",
                                             "d": data})

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self._send.close()
            self.client.pipes.pop((self.peer, self.pid, self.mine), None)
            try:
                await self.client._relay(self.peer, {"c": self.pid, "o": self.mine,
                                                     "k": "close", "d": b""})
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
        self.client.pipes.pop((self.peer, self.pid, self.mine), None)


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
    pipes: dict[tuple[bytes, int, bool], RelayPipe] = field(default_factory=dict)
    connected: trio.Event = field(default_factory=trio.Event)
    errors: dict[str, int] = field(default_factory=dict)
    registered: bool = False
    """This connection got past the challenge (registered at least once)."""
    _ws: trio_websocket.WebSocketConnection | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def open_pipe(self, peer: bytes) -> RelayPipe:
        """Open a relayed connection to ``peer`` (then run the session handshake over it)."""
        if self._ws is None:
            raise ConnectionClosed(CloseReason(1001, "rendezvous not connected"))
        pipe = RelayPipe(self, peer, next(self._ids), True)
        self.pipes[(peer, pipe.pid, True)] = pipe
        await self._relay(peer, {"c": pipe.pid, "o": True, "k": "open", "d": b""})
        return pipe

    async def _relay(self, peer: bytes, env: dict[str, codec.Value]) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionClosed(CloseReason(1001, "rendezvous not connected"))
        await ws.send_message(codec.encode_frame({"t": "rv.relay", "to": peer,
                                                  "d": codec.encode(env)}))

    async def run(self, nursery: trio.Nursery) -> None:
        """Connect, register, refresh, dispatch; returns when the connection ends (closed by
        either side). Raises ``OSError`` or a trio-websocket handshake error when it cannot
        connect, :class:`~p2pworld.errors.DecodeError` when the rendezvous misbehaves."""
        # A rendezvous that takes the TCP connection but never answers the upgrade (hung,
        # or its handler failed) must not hold this loop for trio-websocket's default 60 s.
        u = urlsplit(self.url)
        if u.scheme != "ws" or not u.hostname:
            raise OSError(f"not a ws:// URL: {self.url!r}")
        with trio.fail_after(self.connect_timeout):
            # We own the TCP stream: trio-websocket 0.12 leaks it when the upgrade is cut
            # short (by this timeout, or by a rendezvous that closes half-way).
            stream = await trio.open_tcp_stream(u.hostname, u.port or 80)
            try:
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, u.hostname,
                    (u.path or "/") + (f"?{u.query}" if u.query else ""),
                    message_queue_size=64, max_message_size=(1 << 20) + 8192)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        try:
            try:
                chal = parse_message(await _binary(ws))
            except ConnectionClosed:
                return
            if chal["t"] != "rv.chal":
                raise DecodeError("rendezvous did not send a challenge")
            self._ws = ws
            # Both tasks end quietly when the connection closes (an exception raised in a
            # nursery comes out wrapped in an ExceptionGroup, which no caller expects).
            async with trio.open_nursery() as n:
                spawn_in(n, self._refresh, ws, chal["nonce"])
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
                await trio.sleep(self.ttl_ms / 3000)
        except ConnectionClosed:
            return

    async def _read(self, ws: trio_websocket.WebSocketConnection) -> None:
        try:
            while True:
                m = parse_message(await _binary(ws))
                if m["t"] == "rv.peers":
                    self.on_peers(self.url, verified_peers(m, workspace=self.workspace,
                                                           now_ms=_now_ms()))
                elif m["t"] == "rv.relay" and "from" in m:
                    self._dispatch(m["from"], m["d"])
                elif m["t"] == "rv.nope":
                    for key, pipe in list(self.pipes.items()):
                        if key[0] == m["to"]:
                            pipe._remote_closed()
                    if m["reason"] == "replaced":
                        return
        except ConnectionClosed:
            return

    def _dispatch(self, peer: bytes, raw: bytes) -> None:
        try:
            env = codec.need_map(codec.decode(raw, max_bytes=(1 << 20) + 1024), "relay")
            pid = codec.int_field(env, "c", "relay")
            theirs = codec.field(env, "o", bool, "relay")
            kind = codec.str_field(env, "k", "relay", max_len=8)
            data = codec.bytes_field(env, "d", "relay")
        except P2PWorldError as e:
            self.errors[e.code] = self.errors.get(e.code, 0) + 1
            return
        key = (peer, pid, not theirs)  # the pipe as this side names it
        pipe = self.pipes.get(key)
        if kind == "open" and theirs and pipe is None:
            if len(self.pipes) >= 1024:
                return
            pipe = self.pipes[key] = RelayPipe(self, peer, pid, False)
            self.on_incoming(pipe)
        elif kind == "data" and pipe is not None:
            pipe._feed(data)
        elif kind == "close" and pipe is not None:
            pipe._remote_closed()


async def _binary(ws: trio_websocket.WebSocketConnection) -> bytes:
    data = await ws.get_message()
    if not isinstance(data, bytes):
        raise DecodeError("text frame from the rendezvous")
    return data
