"""``node.statistics()``: the node's health, typed; ``node.health()`` is its plain view
(real nodes over loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from p2pworld import (
    ChannelStatistics,
    NodeConfig,
    NodeStatistics,
    PeerStatistics,
    open_node,
)


def _cfg(home: Path, **kw: object) -> NodeConfig:
    return NodeConfig(home=home, workspace="stats", mdns=False, **kw)  # type: ignore[arg-type]


def _without_clock(d: dict) -> dict:  # type: ignore[type-arg]
    return {**d, "peers": [{**p, "since_s": None} for p in d["peers"]]}


async def test_statistics_are_health_typed(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_node(_cfg(tmp_path / "a")) as a, \
                open_node(_cfg(tmp_path / "b", peers=[a.url])) as b:
            await a.wait_peers(1)
            chan = await a.open_channel("c")
            await b.wait_channel("c")
            await b.publish(chan.channel, b"x")
            s = b.statistics()
            assert isinstance(s, NodeStatistics)
            (peer,) = s.peers
            assert isinstance(peer, PeerStatistics)
            assert (peer.node_id, peer.state, peer.lane) == (a.node_id.hex(), "connected",
                                                             "direct")
            (ch,) = s.channels
            assert isinstance(ch, ChannelStatistics)
            assert (ch.name, ch.role, ch.sequencer) == ("c", "replica", a.node_id.hex())
            assert s.world.incarnation >= 1 and not s.auth.enabled
            assert s.transport.mode == "primary-only"  # no relays configured
            plain = s.as_dict()
            assert _without_clock(plain) == _without_clock(b.health())
            assert json.loads(json.dumps(plain)) == plain  # JSON-ready as it is
