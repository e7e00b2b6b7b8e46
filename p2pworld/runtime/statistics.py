"""What a running node can say about itself, typed: :meth:`Node.statistics()
<p2pworld.runtime.node.Node.statistics>` (``node.health()`` is the same as plain JSON-ready
dicts and lists, :meth:`NodeStatistics.as_dict`).

Ids and hashes are hex strings, as in ``health()``, so a value read here and one read from
the admin endpoint or a log line compare equal.

Example:
    >>> import tempfile, trio
    >>> from pathlib import Path
    >>> from p2pworld import NodeConfig, open_node
    >>> async def main():
    ...     async with open_node(NodeConfig(home=Path(tempfile.mkdtemp()), mdns=False)) as n:
    ...         await n.open_channel("notes")
    ...         s = n.statistics()
    ...         return s.channels[0].name, s.channels[0].role, s.as_dict() == n.health()
    >>> trio.run(main)
    ('notes', 'sequencer', True)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2pworld.core.lanes import lane_of_address

if TYPE_CHECKING:
    from p2pworld.runtime.node import Node


@dataclass(frozen=True, kw_only=True)
class PeerStatistics:
    """One peer this node knows: its session (if up) and how dialling it went."""

    node_id: str
    state: str
    """``connected``, or the dialler's state (``connecting``, ``backoff``, ...)."""
    lane: str | None
    """The session's lane (``direct``, ``relay``, ``nostr``), None without one."""
    via: list[str]
    """Where it was discovered (``mdns``, ``rendezvous``, ``static``, ``nostr``)."""
    address: str
    since_s: float | None
    rtt_ms: float | None
    frames_in: int
    frames_out: int
    handshakes: int
    failures: int
    last_error: str | None


@dataclass(frozen=True, kw_only=True)
class ChannelStatistics:
    """One channel this node sequences or replicates."""

    channel: str
    name: str
    role: str
    """``sequencer`` or ``replica``."""
    sequencer: str
    epoch: int
    head_seq: int
    head_hash: str
    floor: int
    lane: str | None
    """How entries reach this node: ``local`` (it sequences), a session's lane, or None."""
    lag: int
    """Entries the sequencer announced that this node does not hold yet."""
    checkpoint: int | None
    private: bool
    closed: bool
    participants: int | None
    subscribers: int
    replicated_seq: int | None
    last_error: str | None


@dataclass(frozen=True, kw_only=True)
class WorldStatistics:
    """The world replica: members by state, gossip counters."""

    incarnation: int
    members: int
    online: int
    stale: int
    left: int
    pruned_links: int
    heartbeats_new: int
    heartbeats_dup: int
    updates_new: int
    updates_dup: int
    refused: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class AuthStatistics:
    """Tokens: whether they are checked, this node's own, refusals by code."""

    enabled: bool
    control: str | None
    token_expires: float | None
    refused: dict[str, int]
    refreshes: int
    refresh_failures: int
    revocation_polls: int


@dataclass(frozen=True, kw_only=True)
class TransportStatistics:
    """Lanes: the transport mode, deliveries by lane, the fallback ratio and its alert."""

    mode: str
    delivered: dict[str, int]
    fallback_ratio: float
    alert_threshold: float
    alert: bool
    nostr: dict[str, Any] | None
    """Relays, bridge and Nostr lane (None: no relays configured)."""


@dataclass(frozen=True, kw_only=True)
class NodeStatistics:
    """Everything :meth:`Node.statistics() <p2pworld.runtime.node.Node.statistics>` reports
    (the fields of ``node.health()``)."""

    node_id: str
    workspace: str
    listen: str
    peers: list[PeerStatistics]
    channels: list[ChannelStatistics]
    writer_signatures: dict[str, int]
    world: WorldStatistics
    auth: AuthStatistics
    transport: TransportStatistics
    scopes: dict[str, dict[str, Any]]
    """Failures per scope (peer, lane, relay, request, node)."""
    other_workspaces: dict[str, int]
    quarantined: dict[str, dict[str, Any]]
    """Channels whose stored rows are damaged: code, message, seq."""
    errors: dict[str, int]
    """Everything refused or failed, by stable error code."""

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, JSON-ready: ``node.health()``."""
        return dataclasses.asdict(self)


def node_statistics(node: Node, *, now_ms: int) -> NodeStatistics:
    """Read a running node's statistics (what :meth:`Node.statistics` returns); ``now_ms``:
    the node's clock, for member presence."""
    now = time.monotonic()
    peers = []
    keep, known, hub = node._core.keepalive, node._peering.peers, node._hub
    for pid in sorted(set(node._peers) | set(known)):
        s, p = node._sessions.get(pid), node._peer(pid)
        peers.append(PeerStatistics(
            node_id=pid.hex(), state="connected" if s else p.state,
            lane=lane_of_address(s.address) if s else None, via=sorted(p.via),
            address=p.address, since_s=round(now - p.since, 3) if p.since else None,
            rtt_ms=keep.rtt_ms.get(pid) if keep is not None else None,
            frames_in=s.frames_in if s else 0, frames_out=s.frames_out if s else 0,
            handshakes=p.handshakes, failures=p.failures, last_error=p.last_error or None))
    chans = []
    for rec in hub.records():
        ch = rec.channel
        log = hub.log(ch)
        st = log.state
        own = ch in hub.own
        seqr = hub.sequencer_of(ch)
        cp = hub.cursors.get(ch)
        chans.append(ChannelStatistics(
            channel=ch.hex(), name=rec.name, role="sequencer" if own else "replica",
            sequencer=seqr.hex(), epoch=st.epoch, head_seq=log.seq,
            head_hash=log.head_hash.hex(), floor=log.floor,
            lane="local" if own else (lane_of_address(node._sessions[seqr].address)
                                      if seqr in node._sessions else None),
            lag=max(0, hub.seen_head.get(ch, log.seq) - log.seq),
            checkpoint=cp.seq if cp else None, private=rec.private, closed=st.closed,
            participants=len(st.participants) if st.restricted else None,
            subscribers=len(hub.own[ch].subscribers) if own else 0,
            replicated_seq=hub.replicated_seq(ch) if own else None,
            last_error=hub.channel_errors.get(ch)))
    w = node._world
    members = w.members(now_ms=now_ms)
    world = WorldStatistics(
        incarnation=w.inc, members=len(members),
        online=sum(m.state == "online" for m in members),
        stale=sum(m.state == "stale" for m in members),
        left=sum(m.state == "left" for m in members),
        pruned_links=sum(len(x) for x in w.pruned.values()),
        heartbeats_new=w.stats.hb_new, heartbeats_dup=w.stats.hb_dup,
        updates_new=w.stats.upd_new, updates_dup=w.stats.upd_dup, refused=dict(w.stats.refused))
    book = node._cores.auth
    auth = AuthStatistics(
        enabled=book is not None, control=node.config.control,
        token_expires=node.token_expires, refused=dict(book.refused) if book else {},
        refreshes=node._core.token.refreshes if node._core.token else 0,
        refresh_failures=node._auth_stats["refresh_failures"],
        revocation_polls=node._auth_stats["revocation_polls"])
    lanes = node._core.lanes.counters.report()
    transport = TransportStatistics(
        mode=node.transport_mode, delivered=lanes["delivered"],
        fallback_ratio=lanes["fallback_ratio"], alert_threshold=lanes["alert_threshold"],
        alert=lanes["alert"], nostr=node._nostr.report() if node._nostr else None)
    return NodeStatistics(
        node_id=node.node_id.hex(), workspace=node.config.workspace, listen=node.url,
        peers=peers, channels=chans, writer_signatures=dict(hub.signing), world=world,
        auth=auth, transport=transport,
        scopes={k: dict(v) for k, v in node._scope_stats.items()},
        other_workspaces=dict(node.other_workspaces),
        quarantined={ch.hex(): {"code": e.code, "message": e.message,
                                "seq": e.details.get("seq")}
                     for ch, e in sorted(hub.quarantined.items())},
        errors={**node._errors, **hub.errors})


__all__ = ["AuthStatistics", "ChannelStatistics", "NodeStatistics", "PeerStatistics",
           "TransportStatistics", "WorldStatistics", "node_statistics"]
