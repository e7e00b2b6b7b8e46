"""The session shell: runs the handshake core over a trio-websocket connection, then carries
encrypted frames. One reader loop feeds the caller; one writer drains a bounded queue.

Example (see ``tests/test_session.py`` for a full run)::

    async with trio.open_nursery() as n:
        session = await open_session(n, url, config, timeout=10)
        n.start_soon(session.run, on_frame)  # on_frame(messages) for every frame
        session.send_nowait(Ping(1))
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlsplit

import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketRequest

from p2pworld.errors import (
    Backpressure,
    HandshakeError,
    HandshakeTimeout,
    P2PWorldError,
    RemoteProtocolError,
    SessionClosed,
)
from p2pworld.io.scopes import spawn_in, task
from p2pworld.transport.frames import FramePacker, FrameReader
from p2pworld.transport.handshake import (
    MAX_HANDSHAKE_BYTES,
    Handshake,
    HandshakeConfig,
    HandshakeResult,
    Transport,
)
from p2pworld.wire import Message, encode_message

SEND_QUEUE = 1024
"""Messages queued for one session, at most."""
SEND_QUEUE_BYTES = 64 << 20
"""Encoded bytes queued for one session, at most (one message is always accepted when the
queue is empty, whatever its size)."""
_system_rng = random.SystemRandom()


class FramePipe(Protocol):
    """What a session runs over: a websocket, or a relayed pipe through a rendezvous."""

    async def get_message(self) -> bytes | str: ...

    async def send_message(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


async def _handshake(ws: FramePipe, config: HandshakeConfig, *, initiator: bool,
                     rng: random.Random, timeout: float) -> HandshakeResult:
    hs = Handshake(config, initiator=initiator, rng=rng)
    try:
        with trio.fail_after(timeout):
            if initiator:
                await ws.send_message(hs.start())
            while not hs.done:
                data = await ws.get_message()
                if not isinstance(data, bytes):
                    raise HandshakeError("text frame during handshake")
                try:
                    out = hs.receive(data)
                except HandshakeError:
                    if hs.error is not None and not _is_refusal(hs.error):
                        with trio.move_on_after(1):
                            await ws.send_message(hs.refusal())
                    raise
                if out is not None:
                    await ws.send_message(out)
    except trio.TooSlowError:
        raise HandshakeTimeout(f"handshake took longer than {timeout} s") from None
    except ConnectionClosed:
        raise HandshakeError("connection closed during handshake") from None
    return hs.result


@task("request", boundary=False)
async def close_websocket(ws: FramePipe) -> None:
    """Close a websocket and its TCP stream, within a second, even when cancelled.

    trio-websocket 0.12's client never closes its TCP stream when the server closes first
    (it waits for a TCP close that already happened, then returns early from ``aclose``), so
    we close the stream ourselves rather than leave a socket to the garbage collector.
    """
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        await ws.aclose()
    stream = getattr(ws, "_stream", None)
    if stream is not None:
        with trio.CancelScope(shield=True):
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


def _is_refusal(e: P2PWorldError) -> bool:
    return e.code == "HANDSHAKE_REFUSED"


class Session:
    """An authenticated, encrypted session with one peer."""

    def __init__(self, ws: FramePipe, result: HandshakeResult, *, address: str) -> None:
        self.ws = ws
        self.result = result
        self.transport: Transport = result.transport()
        self.address = address
        self.peer_id = result.peer_id
        self.closed = trio.Event()
        self.close_reason: P2PWorldError | None = None
        self._send, self._recv = trio.open_memory_channel[bytes](SEND_QUEUE)
        self._queued_bytes = 0
        self._packer = FramePacker()
        self._frames_in = FrameReader()
        self.messages_in = 0
        self.messages_queued = 0
        self.messages_out = 0
        self.frames_in = 0
        self.frames_out = 0
        """When the last frame arrived (trio clock): parts of a large message count as
        traffic for keepalive while the message is still incomplete."""

    @property
    def messages_skipped(self) -> int:
        """Messages from the peer over the size bound, dropped without ending the session."""
        return self._frames_in.skipped

    @property
    def initiator(self) -> bool:
        return self.result.initiator

    def send_nowait(self, msg: Message) -> None:
        """Queue a message. Raises :class:`Backpressure` when the queue is full."""
        if self.closed.is_set():
            raise SessionClosed("session is closed")
        # Encoded now (the caller's view of the message is fixed); sealed by the writer,
        # which packs whatever is queued into as few frames as it can.
        raw = encode_message(msg)
        if self._queued_bytes and self._queued_bytes + len(raw) > SEND_QUEUE_BYTES:
            raise Backpressure("session send queue is full", limit=SEND_QUEUE_BYTES,
                               unit="bytes")
        try:
            self._send.send_nowait(raw)
        except trio.WouldBlock:
            raise Backpressure("session send queue is full", limit=SEND_QUEUE) from None
        self._queued_bytes += len(raw)
        self.messages_queued += 1

    async def flush(self) -> None:
        """Wait until every message queued so far was written to the socket (or the session
        ended)."""
        target = self.messages_queued
        while self.messages_out < target and not self.closed.is_set():
            await trio.sleep(0.005)

    async def run(self, on_frame: Callable[[list[Message]], Awaitable[None] | None]) -> None:
        """Pump frames until the session ends; returns with ``close_reason`` set.
        ``on_frame`` gets each frame's whole messages (none for a part of a large one: a
        frame is traffic all the same, which the node's keepalive counts)."""
        try:
            async with trio.open_nursery() as nursery:
                spawn_in(nursery, self._writer)
                await self._reader(on_frame)
                nursery.cancel_scope.cancel()
        finally:
            self.closed.set()
            await close_websocket(self.ws)

    async def _reader(self, on_frame: Callable[[list[Message]], Awaitable[None] | None]) -> None:
        while True:
            try:
                data = await self.ws.get_message()
            except ConnectionClosed:
                self.close_reason = self.close_reason or SessionClosed("peer closed the session")
                return
            try:
                if not isinstance(data, bytes):
                    raise RemoteProtocolError("text frame on a binary session")
                msgs = self._frames_in.feed(self.transport.open(data))
            except RemoteProtocolError as e:
                self.close_reason = e
                return
            self.frames_in += 1
            self.messages_in += len(msgs)
            r = on_frame(msgs)
            if r is not None:
                await r

    @task("peer", boundary=False)
    async def _writer(self) -> None:
        async for first in self._recv:
            # Everything already queued leaves together (few seals, few websocket writes):
            # under load, per-message costs become per-batch costs. A message larger than a
            # frame leaves as consecutive parts.
            batch = [first]
            while True:
                try:
                    batch.append(self._recv.receive_nowait())
                except trio.WouldBlock:
                    break
            self._queued_bytes -= sum(len(m) for m in batch)
            try:
                for frame in self._packer.pack(batch):
                    await self.ws.send_message(self.transport.seal(frame))
                    self.frames_out += 1
            except ConnectionClosed:
                return
            except P2PWorldError as e:
                # The lane could not carry a frame (a relay refused it, the transport is
                # spent): this session ends with that reason; the node redials.
                self.close_reason = self.close_reason or e
                await close_websocket(self.ws)
                return
            self.messages_out += len(batch)

    async def aclose(self, reason: P2PWorldError | None = None) -> None:
        self.close_reason = self.close_reason or reason or SessionClosed("closed locally")
        self.closed.set()
        await close_websocket(self.ws)


async def open_session(nursery: trio.Nursery, url: str, config: HandshakeConfig, *,
                       timeout: float = 10.0, rng: random.Random | None = None) -> Session:
    """Dial ``url`` (``ws://host:port/``) and run the initiator side of the handshake.

    trio-websocket runs each connection's background reader in ``nursery``, which must
    outlive the session.
    """
    u = urlsplit(url)
    try:
        with trio.fail_after(timeout):
            if u.scheme != "ws" or not u.hostname:
                raise OSError(f"not a ws:// URL: {url!r}")
            # We own the TCP stream: trio-websocket 0.12 leaks it when the server closes
            # during the HTTP upgrade (a dying proxy, an overloaded peer).
            stream = await trio.open_tcp_stream(u.hostname, u.port or 80)
            try:
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, u.hostname,
                    (u.path or "/") + (f"?{u.query}" if u.query else ""),
                    message_queue_size=64,
                    max_message_size=max(config.max_frame, MAX_HANDSHAKE_BYTES))
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
    except trio.TooSlowError:
        raise HandshakeTimeout(f"connecting to {url} took longer than {timeout} s") from None
    except (OSError, trio_websocket.HandshakeError) as e:
        raise SessionClosed(f"cannot connect to {url}: {e}") from None
    return await _session(ws, config, initiator=True, rng=rng, timeout=timeout, address=url)


async def accept_session(request: WebSocketRequest, config: HandshakeConfig, *,
                         timeout: float = 10.0, rng: random.Random | None = None) -> Session:
    """Accept an incoming connection and run the responder side of the handshake. Until the
    peer has authenticated, its messages are bounded by the size the request was opened
    with (a listener opens it with handshake size); then by ``config.max_frame``."""
    ws = await request.accept()
    remote = ws.remote
    address = f"{getattr(remote, 'address', '?')}:{getattr(remote, 'port', '?')}"
    s = await _session(ws, config, initiator=False, rng=rng, timeout=timeout,
                       address=address)
    # trio-websocket 0.12 has no setter: the bound is read per message from this attribute.
    ws._max_message_size = max(config.max_frame, MAX_HANDSHAKE_BYTES)
    return s


async def relayed_session(pipe: FramePipe, config: HandshakeConfig, *, initiator: bool,
                          address: str, timeout: float = 10.0,
                          rng: random.Random | None = None) -> Session:
    """Run the handshake over a relayed pipe: the same end-to-end authenticated, encrypted
    session as a direct one (the relay sees only ciphertext)."""
    return await _session(pipe, config, initiator=initiator, rng=rng, timeout=timeout,
                          address=address)


async def _session(pipe: FramePipe, config: HandshakeConfig, *, initiator: bool,
                   rng: random.Random | None, timeout: float, address: str) -> Session:
    """Run the handshake on ``pipe``; on any failure the pipe is closed before raising."""
    try:
        result = await _handshake(pipe, config, initiator=initiator, rng=rng or _system_rng,
                                  timeout=timeout)
    except BaseException:
        await close_websocket(pipe)
        raise
    return Session(pipe, result, address=address)
