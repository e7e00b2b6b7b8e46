"""What the API's reads and waits answer (pure): the small decisions of ``node.channels``,
``node.world``, ``node.compute``, ``node.bridge`` and ``node.peers`` that are about the
node's state, not about I/O.

A wait (``node.channels.wait``, ``node.world.wait_member``, ``node.compute.wait``,
``node.peers.wait``) asks one of the ``*_ready`` functions here each time the node changes:
a value ends the wait, None waits on. The runtime's parts (:mod:`p2pworld.runtime.api`)
carry out the rest (queueing a call, awaiting its outcome, the timeout).

Example:
    >>> enough_peers({b"a": 1, b"b": 2}, 2), enough_peers({}, 1)
    (True, None)
    >>> attempt_of(None), conflict_details(None)
    (0, {})
    >>> EMPTY_OUTBOX.pending(), EMPTY_OUTBOX.source_of("ab"), EMPTY_OUTBOX.events_for("x")
    (0, None, [])
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sized
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from p2pworld.compute.core import compute_policy

if TYPE_CHECKING:
    from p2pworld.channel.hub import ChannelHub
    from p2pworld.compute.state import Request
    from p2pworld.log.entry import ChannelPolicy, ChannelRecord
    from p2pworld.world.core import Member, WorldCore
    from p2pworld.world.doc import CapabilityAd

R = TypeVar("R")


def channel_ready(hub: ChannelHub, name: str) -> ChannelRecord | None:
    """The first channel called ``name`` this node knows (None: none yet)."""
    got = hub.find(name)
    return got[0] if got else None


def member_ready(member: Member | None, state: str) -> Member | None:
    """``member`` if it is known in ``state`` (and, for ``online``, its document has
    arrived too: heartbeats may overtake it); None otherwise."""
    ok = member is not None and member.state == state and (state != "online" or member.info)
    return member if ok else None


def request_ready(request: R | None, until: Callable[[R], Any]) -> R | None:
    """``request`` if there is one and it satisfies ``until``; None otherwise."""
    return request if request is not None and until(request) else None


def enough_peers(sessions: Sized, count: int) -> bool | None:
    """True once at least ``count`` peers have sessions; None (wait on) before."""
    return True if len(sessions) >= count else None


def awaits_channel_key(hub: ChannelHub, channel: bytes) -> bool:
    """Whether a publish on ``channel`` must first wait for the channel's key: a private
    channel this node does not sequence and holds no key of yet (a member that just learned
    of it; the rekey entry is on its way). Raises ``UnknownChannel``."""
    return bool(hub.record(channel).private and channel not in hub.own and
                not hub.channel_keys(channel))


def provider_ad(world: WorldCore, node_id: bytes, *, now_ms: int) -> CapabilityAd | None:
    """This node's live capability ad as a provider (None: no member record or no ad)."""
    me = world.member(node_id, now_ms=now_ms)
    return me.caps if me else None


def compute_channel_policy(mirror: Collection[str], relays: Collection[str]) -> ChannelPolicy:
    """The policy of this node's compute channel: mirrored to Nostr when ``compute`` is
    among the mirrored kinds and relays are configured."""
    return compute_policy(nostr_mirror="compute" in mirror and bool(relays))


def attempt_of(request: Request | None) -> int:
    """The assignment attempt a provider's accept or reject answers (0: no request)."""
    return request.attempt if request else 0


def conflict_details(request: Request | None) -> dict[str, str]:
    """What a refused compute op adds to its ``Conflict``: the request's assignee (the
    provider that accepted it, else the one it is assigned to), if any."""
    who = request.accepted_by or request.assignee if request else None
    return {"assignee": who.hex()} if who is not None else {}


class Outbox(Protocol):
    """The reads of a bridge outbox the API answers from."""

    def source_of(self, event_id: str) -> str | None: ...
    def pending(self) -> int: ...
    def events_for(self, source: str) -> list[str]: ...


class _EmptyOutbox:
    """The outbox of a node without relays: it holds nothing."""

    def source_of(self, event_id: str) -> str | None:
        return None

    def pending(self) -> int:
        return 0

    def events_for(self, source: str) -> list[str]:
        return []


EMPTY_OUTBOX: Outbox = _EmptyOutbox()
"""What ``node.bridge`` reads when no relays are configured."""


class HasOutbox(Protocol):
    @property
    def outbox(self) -> Outbox: ...


def outbox_of(service: HasOutbox | None) -> Outbox:
    """The bridge outbox of the node's Nostr service, or :data:`EMPTY_OUTBOX` without one."""
    return service.outbox if service is not None else EMPTY_OUTBOX


__all__ = ["EMPTY_OUTBOX", "HasOutbox", "Outbox", "attempt_of", "awaits_channel_key",
           "channel_ready", "compute_channel_policy", "conflict_details", "enough_peers",
           "member_ready", "outbox_of", "provider_ad", "request_ready"]
