"""The session shell: runs the handshake core over a trio-websocket connection, then carries
encrypted frames. One reader loop feeds the caller; one writer sends what the bounded queue
holds. What each message, close and send means is the session core's answer
(:mod:`p2pworld.transport.link`); this module does the I/O.

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

import trio
import trio_websocket
from trio_websocket import ConnectionClosed, WebSocketRequest

from p2pworld.errors import HandshakeError, HandshakeTimeout, P2PWorldError, SessionClosed
from p2pworld.io.scopes import spawn_in, task
from p2pworld.transport.handshake import (
    MAX_HANDSHAKE_BYTES,
    HandshakeConfig,
    HandshakeResult,
    Transport,
)
from p2pworld.transport.link import SEND_QUEUE, SEND_QUEUE_BYTES, HandshakeRun, Link, ws_target
from p2pworld.wire import Message

_system_rng = random.SystemRandom()


class FramePipe(Protocol):
    """What a session runs over: a websocket, or a relayed pipe through a rendezvous."""

    async def get_message(self) -> bytes | str: ...

    async def send_message(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


async def _handshake(ws: FramePipe, config: HandshakeConfig, *, initiator: bool,
                     rng: random.Random, timeout: float) -> HandshakeResult:
    """Carry out the handshake core's steps (:class:`~p2pworld.transport.link.HandshakeRun`)
    on ``ws``, within ``timeout``."""
    run = HandshakeRun(config, initiator=initiator, rng=rng)
    try:
        with trio.fail_after(timeout):
            for out in run.opening():
                await ws.send_message(out)
            while not run.done:
                step = run.step(await ws.get_message())
                for out in step.send:
                    await ws.send_message(out)
                for refusal in step.refusal:
                    with trio.move_on_after(1):
                        await ws.send_message(refusal)
                step.check()
    except trio.TooSlowError:
        raise HandshakeTimeout(f"handshake took longer than {timeout} s") from None
    except ConnectionClosed:
        raise HandshakeError("connection closed during handshake") from None
    return run.result


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


class Session:
    """An authenticated, encrypted session with one peer: the pipe, a reader loop and a
    writer task around the session core (:class:`~p2pworld.transport.link.Link`), which holds
    the send queue, the counters and the close reason."""

    def __init__(self, ws: FramePipe, result: HandshakeResult, *, address: str) -> None:
        self.ws = ws
        self.result = result
        self.link = Link(result.transport(), max_messages=SEND_QUEUE,
                         max_bytes=SEND_QUEUE_BYTES)
        self.transport: Transport = self.link.transport
        self.address = address
        self.peer_id = result.peer_id
        self.closed = trio.Event()
        self._wake = trio.Event()
        """Set when a message is queued: the writer takes everything queued."""

    @property
    def close_reason(self) -> P2PWorldError | None:
        """Why the session ended (None while it runs, or when it ended for no reason given)."""
        return self.link.close_reason

    @close_reason.setter
    def close_reason(self, reason: P2PWorldError | None) -> None:
        self.link.close_reason = reason

    @property
    def messages_in(self) -> int:
        return self.link.messages_in

    @property
    def messages_queued(self) -> int:
        return self.link.messages_queued

    @property
    def messages_out(self) -> int:
        return self.link.messages_out

    @property
    def frames_in(self) -> int:
        return self.link.frames_in

    @property
    def frames_out(self) -> int:
        return self.link.frames_out

    @property
    def messages_skipped(self) -> int:
        """Messages from the peer over the size bound, dropped without ending the session."""
        return self.link.reader.skipped

    @property
    def initiator(self) -> bool:
        return self.result.initiator

    def send_nowait(self, msg: Message) -> None:
        """Queue a message. Raises :class:`Backpressure` when the queue is full."""
        # Encoded now (the caller's view of the message is fixed); sealed by the writer,
        # which packs whatever is queued into as few frames as it can.
        self.link.push(msg)
        self._wake.set()

    async def flush(self) -> None:
        """Wait until every message queued so far was written to the socket (or the session
        ended)."""
        target = self.link.messages_queued
        while not self.link.flushed(target):
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
            self.link.closed = True
            self.closed.set()
            await close_websocket(self.ws)

    async def _reader(self, on_frame: Callable[[list[Message]], Awaitable[None] | None]) -> None:
        link = self.link
        while True:
            try:
                data = await self.ws.get_message()
            except ConnectionClosed:
                link.peer_closed()
                return
            msgs = link.received(data)
            if msgs is None:
                return
            r = on_frame(msgs)
            if r is not None:
                await r

    @task("peer", boundary=False)
    async def _writer(self) -> None:
        link = self.link
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            # Everything already queued leaves together (few seals, few websocket writes):
            # under load, per-message costs become per-batch costs.
            count, frames = link.take()
            try:
                for frame in frames:
                    await self.ws.send_message(link.transport.seal(frame))
                    link.frames_out += 1
            except ConnectionClosed:
                return
            except P2PWorldError as e:
                # The lane could not carry a frame: the session ends, the node redials.
                link.lane_failed(e)
                await close_websocket(self.ws)
                return
            link.sent(count)

    async def aclose(self, reason: P2PWorldError | None = None) -> None:
        self.link.close(reason)
        self.closed.set()
        await close_websocket(self.ws)


async def open_session(nursery: trio.Nursery, url: str, config: HandshakeConfig, *,
                       timeout: float = 10.0, rng: random.Random | None = None) -> Session:
    """Dial ``url`` (``ws://host:port/``) and run the initiator side of the handshake.

    trio-websocket runs each connection's background reader in ``nursery``, which must
    outlive the session.
    """
    target = ws_target(url)
    try:
        with trio.fail_after(timeout):
            # We own the TCP stream: trio-websocket 0.12 leaks it when the server closes
            # during the HTTP upgrade (a dying proxy, an overloaded peer).
            stream = await trio.open_tcp_stream(target.host, target.port)
            try:
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, target.host, target.resource, message_queue_size=64,
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
    try:
        ws = await request.accept()
        remote = ws.remote  # getpeername: fails once the peer has reset the connection
    except OSError as e:
        raise SessionClosed(f"the peer left before its session began: {e}") from None
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
