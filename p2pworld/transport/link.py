"""The decisions of a session (pure): what a pipe message, a close or a send means.

The session shell (:mod:`p2pworld.io.session`) pumps a websocket or a relayed pipe and a trio
clock; everything it would otherwise decide is answered here:

* :class:`HandshakeRun` drives the handshake core one pipe message at a time: what to send,
  which refusal to send the peer (the shell bounds its time), which typed error ends it (a
  text frame, a refused or failed handshake);
* :class:`Link` is an established session's state: its send queue (a closed session refuses,
  a queue over :data:`SEND_QUEUE` messages or :data:`SEND_QUEUE_BYTES` bytes is
  :class:`~p2pworld.errors.Backpressure`; the writer takes everything queued at once, packed
  into frames), each received frame's messages or the typed reason it ends the session, and
  the session's close reason (the first one wins, except a bad frame, which is what ended it);
* :func:`ws_target` checks a ``ws://`` URL and says where to connect.

Example:
    >>> import random
    >>> from p2pworld.identity import NodeIdentity
    >>> from p2pworld.wire import Ping
    >>> a = NodeIdentity.from_seeds(bytes([1]) * 32, bytes([1]) * 32)
    >>> b = NodeIdentity.from_seeds(bytes([2]) * 32, bytes([2]) * 32)
    >>> rng = random.Random(7)
    >>> i = HandshakeRun(HandshakeConfig(identity=a, workspace="w"), initiator=True, rng=rng)
    >>> r = HandshakeRun(HandshakeConfig(identity=b, workspace="w"), initiator=False, rng=rng)
    >>> (hs1,) = i.opening()
    >>> (hs2,) = r.step(hs1).send
    >>> (hs3,) = i.step(hs2).send
    >>> r.step(hs3).send, i.done and r.done
    ((), True)
    >>> li, lr = Link(i.result.transport()), Link(r.result.transport())
    >>> li.push(Ping(1)); li.push(Ping(2))
    >>> count, frames = li.take()
    >>> count, [m for f in frames for m in lr.received(li.transport.seal(f))]
    (2, [Ping(n=1), Ping(n=2)])
    >>> lr.received("text"), lr.close_reason.code
    (None, 'REMOTE_PROTOCOL_ERROR')
    >>> ws_target("ws://example.org:8000/p2p?x=1")
    WsTarget(host='example.org', port=8000, resource='/p2p?x=1')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from p2pworld.errors import (
    Backpressure,
    HandshakeError,
    HandshakeRefused,
    P2PWorldError,
    RemoteProtocolError,
    SessionClosed,
)
from p2pworld.transport.frames import FramePacker, FrameReader
from p2pworld.transport.handshake import Handshake, HandshakeConfig, HandshakeResult, Transport
from p2pworld.wire import Message, encode_message

if TYPE_CHECKING:
    import random

SEND_QUEUE = 1024
"""Messages queued for one session, at most."""
SEND_QUEUE_BYTES = 64 << 20
"""Encoded bytes queued for one session, at most (one message is always accepted when the
queue is empty, whatever its size)."""


# --- the handshake ----------------------------------------------------------------------------

@dataclass(frozen=True)
class HandshakeStep:
    """What the shell does with one pipe message during the handshake, in this order."""

    send: tuple[bytes, ...] = ()
    """Messages to send the peer now."""
    refusal: tuple[bytes, ...] = ()
    """A refusal telling the peer why we give up (sent within a second, not waited for)."""
    error: HandshakeError | None = None
    """The handshake failed: raised by :meth:`check` once the refusal went out."""

    def check(self) -> None:
        """Raise the error that ends the handshake, if there is one."""
        if self.error is not None:
            raise self.error


class HandshakeRun:
    """One side of a handshake over a pipe: :meth:`opening`, then :meth:`step` for every
    message received until :attr:`done` (see the module example)."""

    def __init__(self, config: HandshakeConfig, *, initiator: bool,
                 rng: random.Random) -> None:
        self.handshake = Handshake(config, initiator=initiator, rng=rng)

    @property
    def done(self) -> bool:
        return self.handshake.done

    @property
    def result(self) -> HandshakeResult:
        return self.handshake.result

    def opening(self) -> tuple[bytes, ...]:
        """What to send before anything is received: the initiator speaks first."""
        return (self.handshake.start(),) if self.handshake.initiator else ()

    def step(self, data: bytes | str) -> HandshakeStep:
        """The answer to one pipe message. A peer that refused is not refused back; a text
        frame ends the handshake without a refusal."""
        if not isinstance(data, bytes):
            return HandshakeStep(error=HandshakeError("text frame during handshake"))
        try:
            out = self.handshake.receive(data)
        except HandshakeError as e:
            why = self.handshake.error
            tell = why is not None and why.code != HandshakeRefused.code
            return HandshakeStep(refusal=(self.handshake.refusal(),) if tell else (), error=e)
        return HandshakeStep(send=() if out is None else (out,))


# --- an established session -------------------------------------------------------------------

class Link:
    """An established session's state and decisions (module docs); the shell owns the pipe,
    the writer task and the trio events."""

    def __init__(self, transport: Transport, *, max_messages: int = SEND_QUEUE,
                 max_bytes: int = SEND_QUEUE_BYTES) -> None:
        self.transport = transport
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.reader = FrameReader()
        self.packer = FramePacker()
        self.close_reason: P2PWorldError | None = None
        self.closed = False
        """No more sends are taken (the shell sets it when the session ends)."""
        self.queued_bytes = 0
        self._queue: list[bytes] = []
        self.messages_in = 0
        self.messages_queued = 0
        self.messages_out = 0
        self.frames_in = 0
        self.frames_out = 0

    # sending

    def push(self, msg: Message) -> None:
        """Queue one message, encoded now (the caller's view of it is fixed).

        Raises:
            SessionClosed: the session ended.
            Backpressure: the queue is full (by bytes, or by messages).
        """
        if self.closed:
            raise SessionClosed("session is closed")
        raw = encode_message(msg)
        if self.queued_bytes and self.queued_bytes + len(raw) > self.max_bytes:
            raise Backpressure("session send queue is full", limit=self.max_bytes,
                               unit="bytes")
        if len(self._queue) >= self.max_messages:
            raise Backpressure("session send queue is full", limit=self.max_messages)
        self._queue.append(raw)
        self.queued_bytes += len(raw)
        self.messages_queued += 1

    def take(self) -> tuple[int, list[bytes]]:
        """Everything queued, as frame plaintexts to seal and send in order: how many messages
        they carry, and the frames (few seals, few pipe writes under load; a message larger
        than a frame leaves as consecutive parts)."""
        batch, self._queue = self._queue, []
        self.queued_bytes -= sum(len(m) for m in batch)
        return len(batch), self.packer.pack(batch)

    def sent(self, messages: int) -> None:
        """The frames of a batch of ``messages`` were written."""
        self.messages_out += messages

    def flushed(self, target: int) -> bool:
        """The first ``target`` messages queued were written, or the session ended."""
        return self.messages_out >= target or self.closed

    # receiving

    def received(self, data: bytes | str) -> list[Message] | None:
        """The messages of one pipe message (none for a part of a large one: it is traffic
        all the same), or None: the frame ends the session, with :attr:`close_reason` set (a
        text frame, a frame that does not authenticate, an invalid plaintext)."""
        if not isinstance(data, bytes):
            self.close_reason = RemoteProtocolError("text frame on a binary session")
            return None
        try:
            msgs = self.reader.feed(self.transport.open(data))
        except RemoteProtocolError as e:
            self.close_reason = e
            return None
        self.frames_in += 1
        self.messages_in += len(msgs)
        return msgs

    # ending

    def peer_closed(self) -> None:
        """The pipe closed under the reader."""
        self.close_reason = self.close_reason or SessionClosed("peer closed the session")

    def lane_failed(self, error: P2PWorldError) -> None:
        """The lane could not carry a frame (a relay refused it, the transport is spent): the
        session ends with that reason, unless it already had one."""
        self.close_reason = self.close_reason or error

    def close(self, reason: P2PWorldError | None = None) -> None:
        """Closed here: ``reason``, or "closed locally", unless it already had one."""
        self.close_reason = self.close_reason or reason or SessionClosed("closed locally")
        self.closed = True


# --- dialling ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class WsTarget:
    """Where a ``ws://`` URL says to connect."""

    host: str
    port: int
    resource: str
    """The path and query of the HTTP upgrade request."""


def ws_target(url: str) -> WsTarget:
    """Check ``url`` (``ws://host[:port][/path][?query]``, port 80 by default).

    Raises:
        SessionClosed: not a ``ws://`` URL with a host (nothing to connect to).
    """
    u = urlsplit(url)
    if u.scheme != "ws" or not u.hostname:
        raise SessionClosed(f"cannot connect to {url}: not a ws:// URL: {url!r}")
    return WsTarget(u.hostname, u.port or 80,
                    (u.path or "/") + (f"?{u.query}" if u.query else ""))


__all__ = ["HandshakeRun", "HandshakeStep", "Link", "SEND_QUEUE", "SEND_QUEUE_BYTES",
           "WsTarget", "ws_target"]
