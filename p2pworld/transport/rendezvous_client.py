"""The rendezvous client core: what a rendezvous message means for a node, and its relay pipes.

The shell (``discovery/rendezvous_client.py``) connects, pumps frames in and carries out what
this core answers; every choice is made here:

* :func:`dial_target`: where a ``ws://`` rendezvous URL says to connect (anything else is
  refused with ``OSError``, as a failed connection is);
* :func:`read_message` and :meth:`RendezvousClientCore.challenged`: which frames are
  acceptable, and that the first one must be the server's challenge;
* :meth:`RendezvousClientCore.receive`: one message as one effect (:class:`Listed`,
  :class:`Incoming`, :class:`Deliver`, :class:`Closed` or :data:`NOTHING`), including the
  relay envelope's decoding and the table of open pipes, bounded at :data:`MAX_PIPES`.

Relay envelope (inside ``rv.relay.d``): canonical CBOR ``{c: pipe id, o: opened by the
sender?, k: "open" | "data" | "close", d: bytes}``. A pipe is named ``(peer, pipe id, opened
by this side?)``: the same id can name one pipe each side opened.

Example:
    >>> peer = b"p" * 32
    >>> core = RendezvousClientCore("lab")
    >>> core.challenged({"t": "rv.chal", "nonce": b"n" * 16})
    b'nnnnnnnnnnnnnnnn'
    >>> env = envelope(7, True, "open", b"")
    >>> incoming = core.receive({"t": "rv.relay", "from": peer, "d": env})
    >>> incoming.key == (peer, 7, False)
    True
    >>> core.add((peer, 7, False), "pipe")
    >>> core.receive({"t": "rv.relay", "from": peer, "d": envelope(7, True, "data", b"hi")})
    Deliver(pipe='pipe', data=b'hi')
    >>> core.receive({"t": "rv.nope", "to": peer, "reason": "replaced"}), core.ended
    (Closed(pipes=['pipe']), True)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import DecodeError, P2PWorldError
from p2pworld.transport.rendezvous import MAX_RELAY_BYTES, parse_message

MAX_PIPES = 1024
"""Pipes a client holds open at once; an ``open`` past it is ignored."""
MAX_ENVELOPE_BYTES = MAX_RELAY_BYTES + 1024
MAX_MESSAGE_BYTES = MAX_RELAY_BYTES + 8192
"""The largest websocket message the client accepts from a rendezvous."""

P = TypeVar("P")
PipeKey = tuple[bytes, int, bool]
"""A pipe as this side names it: ``(peer node id, pipe id, opened by this side?)``."""


@dataclass(frozen=True, slots=True)
class DialTarget:
    """Where to connect for a rendezvous URL: TCP ``host:port``, then the websocket upgrade
    for ``resource`` (path and query)."""

    host: str
    port: int
    resource: str


def dial_target(url: str) -> DialTarget:
    """The connection a ``ws://`` URL names; ``OSError`` for any other URL.

    Example:
        >>> dial_target("ws://10.0.0.1:7000/rv?x=1")
        DialTarget(host='10.0.0.1', port=7000, resource='/rv?x=1')
        >>> dial_target("ws://rv.example")
        DialTarget(host='rv.example', port=80, resource='/')
    """
    u = urlsplit(url)
    if u.scheme != "ws" or not u.hostname:
        raise OSError(f"not a ws:// URL: {url!r}")
    return DialTarget(u.hostname, u.port or 80,
                      (u.path or "/") + (f"?{u.query}" if u.query else ""))


def refresh_interval_s(ttl_ms: int) -> float:
    """How often a registration is sent again: every third of its lifetime (seconds).

    Example:
        >>> refresh_interval_s(60_000)
        20.0
    """
    return ttl_ms / 3000


def envelope(pid: int, mine: bool, kind: str, data: bytes) -> bytes:
    """The relay envelope of one pipe event (``kind``: ``open``, ``data`` or ``close``)."""
    return codec.encode({"c": pid, "o": mine, "k": kind, "d": data})


def relay_frame(peer: bytes, pid: int, mine: bool, kind: str, data: bytes = b"") -> bytes:
    """The ``rv.relay`` frame that carries one pipe event to ``peer``.

    Example:
        >>> m = parse_message(relay_frame(bytes(32), 1, True, "data", b"x"))
        >>> m["t"], codec.decode(m["d"])
        ('rv.relay', {'c': 1, 'd': b'x', 'k': 'data', 'o': True})
    """
    return codec.encode_frame({"t": "rv.relay", "to": peer, "d": envelope(pid, mine, kind, data)})


def read_message(data: bytes | str) -> dict[str, Value]:
    """One websocket message from the rendezvous, shape-checked; a text frame or a bad frame
    is a :class:`~p2pworld.errors.DecodeError`.

    Example:
        >>> read_message("hello")
        Traceback (most recent call last):
        ...
        p2pworld.errors.DecodeError: text frame from the rendezvous
    """
    if not isinstance(data, bytes):
        raise DecodeError("text frame from the rendezvous")
    return parse_message(data)


@dataclass(frozen=True, slots=True)
class Listed:
    """The rendezvous listed its workspace: verify ``message`` (``rv.peers``) with
    :func:`~p2pworld.transport.rendezvous.verified_peers` and hand the peers on."""

    message: dict[str, Value]


@dataclass(frozen=True, slots=True)
class Incoming:
    """A peer opened the pipe ``key``: make it, :meth:`RendezvousClientCore.add` it and run a
    session over it."""

    key: PipeKey


@dataclass(frozen=True, slots=True)
class Deliver(Generic[P]):
    """``data`` arrived for ``pipe``."""

    pipe: P
    data: bytes


@dataclass(frozen=True, slots=True)
class Closed(Generic[P]):
    """These pipes are closed by the other end (or the rendezvous could not reach it)."""

    pipes: list[P]


@dataclass(frozen=True, slots=True)
class Nothing:
    """Nothing to carry out (a message this side ignores)."""


NOTHING = Nothing()
ClientEffect = Listed | Incoming | Deliver[P] | Closed[P] | Nothing


class RendezvousClientCore(Generic[P]):
    """One rendezvous connection as the client sees it: the pipes it holds (objects of the
    shell, keyed by :data:`PipeKey`), envelopes it could not decode (``errors``, by code) and
    whether the rendezvous ended the connection (``ended``: this node connected again
    elsewhere and the newer connection replaced this one)."""

    def __init__(self, workspace: str, *, max_pipes: int = MAX_PIPES) -> None:
        self.workspace = workspace
        self.max_pipes = max_pipes
        self.pipes: dict[PipeKey, P] = {}
        self.errors: dict[str, int] = {}
        self.ended = False
        self._ids = itertools.count(1)

    def challenged(self, m: dict[str, Value]) -> bytes:
        """The nonce of the rendezvous' first message, which must be its challenge
        (:class:`~p2pworld.errors.DecodeError` otherwise); the connection starts here."""
        if m["t"] != "rv.chal":
            raise DecodeError("rendezvous did not send a challenge")
        self.ended = False
        nonce: bytes = m["nonce"]
        return nonce

    def next_pid(self) -> int:
        """A fresh id for a pipe this side opens."""
        return next(self._ids)

    def add(self, key: PipeKey, pipe: P) -> None:
        self.pipes[key] = pipe

    def drop(self, key: PipeKey) -> None:
        """Forget the pipe ``key`` (closed by either side); unknown keys are ignored."""
        self.pipes.pop(key, None)

    def receive(self, m: dict[str, Value]) -> ClientEffect[P]:
        """What one message (already through :func:`read_message`) asks of the shell."""
        t = m["t"]
        if t == "rv.peers":
            return Listed(m)
        if t == "rv.relay" and "from" in m:
            return self.relayed(m["from"], m["d"])
        if t == "rv.nope":
            to = m["to"]
            self.ended = m["reason"] == "replaced"
            return Closed([pipe for key, pipe in self.pipes.items() if key[0] == to])
        return NOTHING

    def relayed(self, peer: bytes, raw: bytes) -> ClientEffect[P]:
        """One relay envelope from ``peer``: open a pipe it opened, data or close for one we
        hold; anything else (undecodable, unknown pipe, over :attr:`max_pipes`) is dropped."""
        try:
            env = codec.need_map(codec.decode(raw, max_bytes=MAX_ENVELOPE_BYTES), "relay")
            pid = codec.int_field(env, "c", "relay")
            theirs = codec.field(env, "o", bool, "relay")
            kind = codec.str_field(env, "k", "relay", max_len=8)
            data = codec.bytes_field(env, "d", "relay")
        except P2PWorldError as e:
            self.errors[e.code] = self.errors.get(e.code, 0) + 1
            return NOTHING
        key = (peer, pid, not theirs)  # the pipe as this side names it
        pipe = self.pipes.get(key)
        if pipe is None:
            opens = kind == "open" and theirs and len(self.pipes) < self.max_pipes
            return Incoming(key) if opens else NOTHING
        if kind == "data":
            return Deliver(pipe, data)
        return Closed([pipe]) if kind == "close" else NOTHING


__all__ = ["DialTarget", "Deliver", "Incoming", "Listed", "MAX_MESSAGE_BYTES", "MAX_PIPES",
           "NOTHING", "Nothing", "PipeKey", "Closed", "RendezvousClientCore", "dial_target",
           "envelope", "read_message", "refresh_interval_s", "relay_frame"]
