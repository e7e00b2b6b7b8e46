"""How a node runs: :class:`NodeConfig`.

Example:
    >>> from pathlib import Path
    >>> NodeConfig(home=Path("/tmp/a"), workspace="lab").transport
    'primary-with-fallback'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from p2pworld.auth.book import AuthConfig
from p2pworld.core.mirror import MIRRORS
from p2pworld.world.core import WorldConfig
from p2pworld.world.doc import CapabilityAd


@dataclass(kw_only=True)
class NodeConfig:
    """How a node runs.

    Attributes:
        home: directory with the node's keys and its log store.
        workspace: only peers of this workspace are joined.
        interfaces: IPv4 addresses or interface names to listen and run mDNS on.
        port: websocket port (0 = pick a free one).
        mdns: discover peers with mDNS.
        peers: extra ``ws://host:port/`` addresses to dial (static seeds).
        handshake_timeout: seconds a handshake may take.
        keepalive: seconds between pings; a session silent for 3 intervals is dropped.
        dial_grace: seconds the node with the higher id waits before dialling (the lower id
            dials first, so two nodes rarely open two sessions to each other).
    """

    home: Path
    workspace: str = "default"
    interfaces: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 0
    mdns: bool = True
    peers: list[str] = field(default_factory=list)
    handshake_timeout: float = 10.0
    keepalive: float = 5.0
    dial_grace: float = 2.0
    token: bytes | None = None
    device: str = ""
    """Device label published in this node's world document."""
    region: str = ""
    world: WorldConfig = field(default_factory=WorldConfig)
    capabilities: CapabilityAd | None = None
    """Advertised at start (``advertise_capabilities``); change it with ``node.advertise``."""
    public_urls: list[str] | None = None
    """Direct URLs published to rendezvous nodes (default: the listen URL, when it is
    reachable from the rendezvous)."""
    control: str | None = None
    """Control service URL (``http://host:port``): the node fetches its signing keys, mints its
    token (proving possession of its node key), refreshes it before expiry and polls
    revocations. With it (or with ``auth``), every mutation is checked against tokens."""
    auth: AuthConfig | None = None
    """Token validation settings (control keys, leeway, membership grace); filled from the
    control service when only ``control`` is given. None and no ``control``: an open world."""
    rendezvous: list[str] = field(default_factory=list)
    """Rendezvous nodes (``ws://host:port/``): register there, find workspace peers across
    subnets, and relay sessions to peers that cannot be reached directly."""
    relays: list[str] = field(default_factory=list)
    """Nostr relays (``ws://host:port``): the mirror lane (bridge outbox) and, when the
    transport mode allows it, the encrypted fallback lane. Empty: no Nostr at all."""
    transport: str = "primary-with-fallback"
    """``primary-only``, ``primary-with-fallback`` or ``forced-nostr``; the control service's
    policy may narrow it further (never widen it)."""
    mirror: tuple[str, ...] = MIRRORS
    """Which mirrors this node publishes to its relays (compute entries only for channels whose
    policy has ``nostr_mirror``)."""
    fallback_alert: float = 0.05
    """``health()["transport"]["alert"]`` is raised above this fallback ratio."""
    startup_check_s: float = 2.0
    """How long a channel this node sequences, loaded from disk, waits for its peers' heads
    before acknowledging anything (a store that rolled back is found that way; with no answer
    the node goes on with a ``ROLLBACK_UNCHECKED`` notice). 0: no check."""
    handoff_timeout_s: float = 5.0
    """How long a node that closes waits for the live replicas it hands its channels to
    (``docs/guarantees.md``, handoff on close). 0: no handoff."""


__all__ = ["NodeConfig"]
