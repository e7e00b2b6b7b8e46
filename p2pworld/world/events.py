"""The world core's effects and the values its queries return: what
:class:`~p2pworld.world.core.WorldCore` asks its executor to do (persist one author's records,
tell the application what changed) and what it reports about a member.
:mod:`p2pworld.world.core` re-exports every name.

Example:
    >>> WorldEvent(seq=1, kind="joined", node=b"n", at_ms=0).kind
    'joined'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2pworld.effects import PeerMisbehaved, Send

if TYPE_CHECKING:
    from p2pworld.world.doc import CapabilityAd, LinkInfo, NodeInfo, SessionInfo



@dataclass(frozen=True, kw_only=True)
class WorldEvent:
    """One change of the world as this node sees it (the workspace-scoped subscription).

    ``kind``: ``joined`` (a member became live), ``updated`` (its document or status changed),
    ``stale`` (no heartbeat for ``stale_ms``: ``reason="ttl_expired"``), ``left``
    (``reason="explicit_offline"``).
    """

    seq: int
    kind: str
    node: bytes
    at_ms: int
    reason: str = ""


@dataclass(frozen=True)
class WorldChanged:
    event: WorldEvent


@dataclass(frozen=True)
class WorldSave:
    """Persist one author's records (base + deltas since, raw signed bytes); not fsync-gated:
    world state is re-fetched from peers, and a node's own document restarts as a new
    incarnation from whatever survived."""

    author: bytes
    records: tuple[bytes, ...]


WorldEffect = Send | PeerMisbehaved | WorldChanged | WorldSave


@dataclass(frozen=True, kw_only=True)
class Member:
    """What this node knows about one node of the world (itself included)."""

    node_id: bytes
    public_key: bytes
    state: str
    """``online``, ``stale``, ``left`` or ``unknown`` (a document but no heartbeat yet)."""
    status: str
    last_seen_ms: int | None
    reason: str
    info: NodeInfo | None
    caps: CapabilityAd | None
    sessions: tuple[SessionInfo, ...]
    links: tuple[LinkInfo, ...]
    position: tuple[int, int]
