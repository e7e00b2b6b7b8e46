"""What a running node can say about itself, typed: :meth:`Node.statistics()
<p2pworld.runtime.node.Node.statistics>` (``node.health()`` is the same as plain JSON-ready
dicts and lists, :meth:`NodeStatistics.as_dict`).

The view and how each part of it is computed are a core's
(:mod:`p2pworld.core.statistics`); this module reads the running node's cores, records and
clock and hands them over. Ids and hashes are hex strings, as in ``health()``, so a value read
here and one read from the admin endpoint or a log line compare equal.

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

import time
from typing import TYPE_CHECKING

from p2pworld.core.statistics import (
    AuthStatistics,
    ChannelStatistics,
    NodeStatistics,
    PeerStatistics,
    TransportStatistics,
    WorldStatistics,
    auth_statistics,
    channel_statistics,
    peer_statistics,
    transport_statistics,
    world_statistics,
)

if TYPE_CHECKING:
    from p2pworld.runtime.node import Node


def node_statistics(node: Node, *, now_ms: int) -> NodeStatistics:
    """Read a running node's statistics (what :meth:`Node.statistics` returns); ``now_ms``:
    the node's clock, for member presence."""
    now = time.monotonic()
    keep, known, hub = node._core.keepalive, node._peering.peers, node._hub
    peers = [peer_statistics(pid, node._sessions.get(pid), node._peer(pid), keepalive=keep,
                             now_s=now)
             for pid in sorted(set(node._peers) | set(known))]
    chans = [channel_statistics(hub, rec, node._sessions) for rec in hub.records()]
    world = world_statistics(node._world, now_ms=now_ms)
    auth = auth_statistics(node._cores.auth, control=node.config.control,
                           token_expires=node.token_expires, schedule=node._core.token,
                           counters=node._auth_stats)
    transport = transport_statistics(node.transport_mode, node._core.lanes.counters,
                                     node._nostr.report() if node._nostr else None)
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
