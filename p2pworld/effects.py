"""Effects shared by every core: what a core asks its shell (or the simulator) to do.

Cores return lists of effects instead of doing I/O; each domain adds its own effect types
(``p2pworld.channel.hub``, ``p2pworld.world.core``), and :class:`Send` is common to all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pworld.errors import P2PWorldError
from p2pworld.wire import Message


@dataclass(frozen=True)
class Send:
    """Send ``message`` to ``peer`` (a node id) over its session, if one is up."""

    peer: bytes
    message: Message


@dataclass(frozen=True)
class PeerMisbehaved:
    """``peer`` sent something refused (counted per error code; the session stays up)."""

    peer: bytes
    error: P2PWorldError


@dataclass(frozen=True)
class SendAll:
    """Send ``messages`` to ``peer``, in order, as one write: the sends of one batch to one
    peer (the session packs them into as few frames as fit)."""

    peer: bytes
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class RefreshToken:
    """Ask the control service for a fresh token (and its current keys); the executor answers
    with :class:`~p2pworld.core.node.TokenMinted` or :class:`~p2pworld.core.node.TokenRefused`.
    The node core says when (:class:`~p2pworld.auth.schedule.TokenSchedule`)."""


@dataclass(frozen=True)
class ProbeStore:
    """Try a tiny write transaction on the node's store (it is full; see
    :mod:`p2pworld.core.disk`); the executor answers with
    :class:`~p2pworld.core.node.StoreProbed`. The node core says when."""


@dataclass(frozen=True)
class ConnectRendezvous:
    """Connect to the rendezvous node ``url`` and keep the connection while it lasts
    (register, learn peers, take relayed sessions); the executor answers with
    :class:`~p2pworld.core.node.RendezvousEnded` when it ends. The node core says when
    (:mod:`p2pworld.core.relays`)."""

    url: str


@dataclass(frozen=True)
class CloseSession:
    """End the session with ``peer`` (``reason``: an error code, counted): the node core
    found it dead (:class:`~p2pworld.transport.peering.Keepalive`). The peer is dialled
    again as usual."""

    peer: bytes
    reason: str


@dataclass(frozen=True)
class Dial:
    """Try to open a session to ``peer`` on ``lane`` (``primary``: each of ``urls`` in order,
    then through each of ``relays``; ``nostr``: a pipe to the Nostr key ``nostr``), and say
    how it went with :class:`~p2pworld.core.node.DialDone`. ``probe``: a try of the direct
    lane while a Nostr-lane session is up."""

    peer: bytes
    lane: str
    urls: tuple[str, ...] = ()
    relays: tuple[str, ...] = ()
    nostr: bytes = b""
    probe: bool = False
    static: str = ""
    """A configured peer (``NodeConfig.peers``) by its URL: its node id is learned in the
    handshake (``peer`` is empty)."""
