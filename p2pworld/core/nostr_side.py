"""What a node's Nostr side decides (pure): which workspace events found on relays name a
peer to dial, where each peer reads (its NIP-65 relays), when presence is published again, and
what a bridge delivery's outcome means for the bridge-adapter subscription.

The trio shell (:class:`~p2pworld.io.nostr_service.NostrService`) subscribes, publishes and
sleeps; it asks this module what to make of each event and answer.

* **Discovery.** Our own events are ignored. A relay list (NIP-65) replaces what we know of
  that peer's relays. A presence event (NIP-38) for our workspace names a candidate when it
  names another node, is not ``offline`` and is at most
  :data:`~p2pworld.core.mirror.PRESENCE_TTL_S` old.
* **Presence** is published every :data:`~p2pworld.core.mirror.PRESENCE_EVERY_S` once a relay
  took it (``OK true``), every second until then.
* **Bridge marks.** A delivery a relay took shows as ``published``, any other as ``retry``.

Example:
    >>> from p2pworld.core.mirror import presence_event
    >>> from p2pworld.nostr.keys import NostrKey
    >>> me, peer = NostrKey(bytes(31) + b"\\x01"), NostrKey(bytes(31) + b"\\x02")
    >>> seen = RelayDiscovery(me.public, node_id=b"A" * 32, workspace="lab")
    >>> ev = presence_event(peer, node=b"B" * 32, workspace="lab", status="online",
    ...                     created_at=1000, aux=bytes(32))
    >>> seen.see(ev, now=1000.0) == Candidate(f"nostr:{peer.public.hex()}", b"B" * 32,
    ...                                       peer.public)
    True
    >>> seen.see(ev, now=1000.0 + PRESENCE_TTL_S + 1) is None  # stale
    True
    >>> mark_change(False, None)
    ('failed', 'retry', '')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from p2pworld.core.mirror import (
    PRESENCE_EVERY_S,
    PRESENCE_TTL_S,
    RELAY_LIST_KIND,
    parse_presence,
    parse_relay_list,
)
from p2pworld.nostr.event import Event
from p2pworld.nostr.pool import Ok

PRESENCE_RETRY_S = 1.0
"""The wait before publishing presence again while no relay has taken it yet."""


@dataclass(frozen=True)
class Candidate:
    """A workspace peer seen on relays: dial ``address`` (``nostr:<pubkey>``), which claims to
    be node ``node_id`` with Nostr key ``nostr`` (the handshake proves it)."""

    address: str
    node_id: bytes
    nostr: bytes


class RelayDiscovery:
    """What a node learns of its workspace's peers from relays (see the module's docstring):
    ``own``: our Nostr key, ``node_id``: our node, ``workspace``: our workspace."""

    def __init__(self, own: bytes, *, node_id: bytes, workspace: str) -> None:
        self.own, self.node_id, self.workspace = own, node_id, workspace
        self.peer_relays: dict[bytes, list[str]] = {}
        """Each peer's NIP-65 relays (Nostr key -> relay URLs), the latest list seen."""

    def relays_of(self, peer: bytes) -> list[str]:
        """The relays ``peer`` listed (empty: none seen)."""
        return self.peer_relays.get(peer, [])

    def see(self, ev: Event, *, now: float) -> Candidate | None:
        """One event of the workspace subscription (presence or relay list); the peer to dial,
        if it names one."""
        pk = bytes.fromhex(ev.pubkey)
        if pk == self.own:
            return None
        if ev.kind == RELAY_LIST_KIND:
            self.peer_relays[pk] = parse_relay_list(ev)
            return None
        nid = parse_presence(ev, self.workspace)
        if nid is not None and nid != self.node_id and ev.content != "offline" \
                and ev.created_at + PRESENCE_TTL_S >= now:
            return Candidate(f"nostr:{ev.pubkey}", nid, pk)
        return None


def presence_published(answers: Mapping[str, Ok | None]) -> bool:
    """Whether a presence publish counts as published: some relay answered ``OK true`` (only
    that counts here, not ``duplicate:``)."""
    return any(o is not None and o.ok for o in answers.values())


def presence_wait(published: int) -> float:
    """The wait before the next presence publish, after ``published`` of them counted.

    >>> presence_wait(0), presence_wait(3) == PRESENCE_EVERY_S
    (1.0, True)
    """
    return PRESENCE_EVERY_S if published else PRESENCE_RETRY_S


def mark_change(ok: bool, source: str | None) -> tuple[str, str, str]:
    """A bridge delivery's outcome (``ok``: a relay took it), for the node's counters and the
    bridge-adapter subscription: (the counter, the change's state, the change's source, empty
    when the event mirrors nothing known)."""
    src = source or ""
    return ("published", "published", src) if ok else ("failed", "retry", src)
