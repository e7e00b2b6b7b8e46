"""World-state benchmark: gossip reach, redundancy, bandwidth, size and memory.

    python -m benchmarks.world --json [--sizes 10,100,1000]

In the simulator (the real world cores of N nodes, virtual time, 2 ms links), on a random
topology of degree 6 (the full mesh for N <= 7):

* ``rounds_to_all`` / ``seconds_to_all``: one capability-ad change by one node; a round is one
  hop of the eager push; the figure is the largest hop count at which a node first received it.
* ``receptions_per_update`` / ``receptions_per_heartbeat``: full records received per new
  record, after the broadcast tree settled (1.0 = no redundancy).
* ``bytes_per_node_per_interval``: every frame byte a node received, per 5 s heartbeat
  interval, in steady state.

Then, for one node's world core with 49 peers (N = 50) and heartbeats every 5 s: the encoded
world size (every stored record plus the latest heartbeat per member) after 1 and after 24
simulated hours (846,720 signed heartbeats verified on the way). Document changes are bounded
separately: an author compacts after 32 deltas (``tests/test_world.py``). Finally the RSS of a fresh
process whose world core tracks 1,000 peers (documents with ads, sessions and links, plus
presence), and its RSS before the peers were added.

Targets (issue 4): rounds <= 2*log2(N); size_24h <= 2 * size_1h; <= 2 receptions.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import time
from typing import Any

from p2pworld.core.calls import Advertise
from p2pworld.identity import Ed25519Signer
from p2pworld.testing.sim import SimNode, Simulator
from p2pworld.wire import Message
from p2pworld.world.core import WorldCore
from p2pworld.world.doc import CapabilityAd, NodeInfo, SessionInfo
from p2pworld.world.records import Heartbeat

SINGLE_SOURCE_FROM = 500
"""From this N on, only the node that makes the change joins the world (the others relay):
the simulator delivers about 2,000 messages a second, and building every source's broadcast
tree costs N * degree deliveries per source (about 6.5 million at N = 1,000)."""


def reach(n: int, seed: int = 1) -> dict[str, Any]:
    single = n >= SINGLE_SOURCE_FROM
    sim = Simulator(seed, nodes=n, degree=min(n - 1, 6), tick=0.5,
                    joined={"n0"} if single else None)
    interval = sim.world_config.heartbeat_ms / 1000
    sim.run(4 * interval)  # joins spread, the broadcast tree prunes itself
    worlds = [nd.world for nd in sim.nodes.values()]
    assert all(w is not None for w in worlds)
    hb0 = sum(w.stats.hb_new for w in worlds)  # type: ignore[union-attr]
    dup0 = sum(w.stats.hb_dup for w in worlds)  # type: ignore[union-attr]
    b0 = sum(nd.bytes_in for nd in sim.nodes.values())
    window = 3 * interval
    sim.run(window)
    hb = sum(w.stats.hb_new for w in worlds) - hb0  # type: ignore[union-attr]
    dup = sum(w.stats.hb_dup for w in worlds) - dup0  # type: ignore[union-attr]
    nbytes = sum(nd.bytes_in for nd in sim.nodes.values()) - b0

    # One change, traced hop by hop.
    src = sim.nodes["n0"]
    key = src.signer.public_key
    hops: dict[str, int] = {"n0": 0}
    first: dict[str, float] = {}
    u0 = sum(w.stats.upd_new for w in worlds)  # type: ignore[union-attr]
    d0 = sum(w.stats.upd_dup for w in worlds)  # type: ignore[union-attr]
    start = sim.now
    assert src.world is not None
    sim._calls(src, [Advertise(ad=CapabilityAd(tools=("bench",), expires_ms=2**62))])
    target = src.world.replicas[key].position

    def observe(dst: SimNode, frm: SimNode, _m: Message) -> None:
        if dst.name in hops or dst.world is None:
            return
        rep = dst.world.replicas.get(key)
        if rep is not None and rep.position >= target:
            hops[dst.name] = hops.get(frm.name, 0) + 1
            first[dst.name] = sim.now - start

    sim.observer = observe
    while len(hops) < n and sim.now - start < 30:
        sim.run(0.01)
    sim.run(2.0)  # let late duplicates arrive before counting them
    sim.observer = None
    u = sum(w.stats.upd_new for w in worlds) - u0  # type: ignore[union-attr]
    d = sum(w.stats.upd_dup for w in worlds) - d0  # type: ignore[union-attr]
    return {
        "nodes": n, "reached": len(hops), "rounds": max(hops.values()),
        "rounds_target": 2 * math.log2(n), "seconds": round(max(first.values(), default=0), 4),
        "receptions_per_update": round((u + d) / u, 3) if u else None,
        "receptions_per_heartbeat": round((hb + dup) / hb, 3) if hb else None,
        "bytes_per_node_per_interval": None if single else round(
            nbytes / n / (window / interval)),
        "single_source": single,
    }


def world_size(hours: int, n: int = 50) -> dict[int, int]:
    """One node's world core fed directly (no gossip): heartbeats every 5 s from n-1 peers.
    Returns the encoded size after each hour."""
    rng = random.Random(5)
    me = WorldCore(Ed25519Signer(bytes(32)), inc=1, rng=rng)
    me.join(NodeInfo(device="me"), now_ms=0)
    peers = []
    for i in range(1, n):
        w = WorldCore(Ed25519Signer(i.to_bytes(32, "big")), inc=1, rng=rng)
        w.join(NodeInfo(device=f"p{i}"), now_ms=0, session=SessionInfo(
            session_id=f"s{i}", workspace="bench", started_ms=0))
        peers.append(w)
        me.peer_up(w.node_id, w.public_key, now_ms=0)
    from p2pworld.wire import WorldPush

    for w in peers:
        rep = w.replicas[w.public_key]
        me.receive(w.node_id, WorldPush(updates=tuple(r.raw for r in rep.records())), now_ms=0)
    sizes = {}
    step = 5_000
    for h in range(1, hours + 1):
        for t in range((h - 1) * 3600_000, h * 3600_000, step):
            for w in peers:
                hb = Heartbeat.create(w.signer, inc=1, n=t // step + 2, time_ms=t)
                me.receive(w.node_id, WorldPush(heartbeats=(hb.raw,)), now_ms=t)
        sizes[h] = encoded_size(me)
    return sizes


def encoded_size(w: WorldCore) -> int:
    docs = sum(len(r.raw) for rep in w.replicas.values() for r in rep.records())
    hbs = sum(len(p.hb.raw) for p in w.presence.values() if p.hb is not None)
    return docs + hbs


RSS_CHILD = r"""
import random, sys
from p2pworld.core.calls import Advertise
from p2pworld.identity import Ed25519Signer
from p2pworld.wire import WorldPush
from p2pworld.world.core import WorldCore
from p2pworld.world.doc import CapabilityAd, LinkInfo, NodeInfo, SessionInfo
from p2pworld.world.records import Heartbeat
n = int(sys.argv[1])
rng = random.Random(1)
def rss():  # ru_maxrss survives exec on Linux, so read the current RSS instead
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
base = rss()
me = WorldCore(Ed25519Signer(bytes(32)), inc=1, rng=rng)
me.join(NodeInfo(device="me"), now_ms=0)
for i in range(1, n + 1):
    w = WorldCore(Ed25519Signer(i.to_bytes(32, "big")), inc=1, rng=rng)
    w.join(NodeInfo(device=f"p{i}", region="lab"), now_ms=0,
           session=SessionInfo(session_id=f"s{i}", workspace="bench", started_ms=0))
    w.advertise(CapabilityAd(tools=("python", "grep"), models=("m",), expires_ms=2**62),
                now_ms=0)
    for j in range(3):
        w.set_link(LinkInfo(target=bytes([j]) * 32, state="direct"), now_ms=0)
    me.peer_up(w.node_id, w.public_key, now_ms=0)
    raws = tuple(r.raw for r in w.replicas[w.public_key].records())
    me.receive(w.node_id, WorldPush(updates=raws), now_ms=0)
    hb = Heartbeat.create(w.signer, inc=1, n=2, time_ms=0)
    me.receive(w.node_id, WorldPush(heartbeats=(hb.raw,)), now_ms=0)
    del w
import gc; gc.collect()
assert len(me.members(now_ms=0)) == n + 1
print(rss(), base)
"""


def rss_mb(n: int = 1000) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(n)], check=True,
                         capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--hours", type=int, default=24)
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = [reach(int(x)) for x in args.sizes.split(",")]
    sizes = world_size(args.hours)
    rss, rss_base = rss_mb(1000)
    res = {
        "rounds_to_all": {str(r["nodes"]): r["rounds"] for r in runs},
        "rounds_target": {str(r["nodes"]): round(r["rounds_target"], 2) for r in runs},
        "seconds_to_all": {str(r["nodes"]): r["seconds"] for r in runs},
        "reached": {str(r["nodes"]): r["reached"] for r in runs},
        "receptions_per_update": max(r["receptions_per_update"] or 0 for r in runs),
        "receptions_per_update_by_n": {str(r["nodes"]): r["receptions_per_update"]
                                       for r in runs},
        "receptions_per_heartbeat_by_n": {str(r["nodes"]): r["receptions_per_heartbeat"]
                                          for r in runs},
        "bytes_per_node_per_interval": {str(r["nodes"]): r["bytes_per_node_per_interval"]
                                        for r in runs},
        "single_source": {str(r["nodes"]): r["single_source"] for r in runs},
        "size_1h_bytes": sizes[1],
        "size_24h_bytes": sizes[max(sizes)],
        "size_ratio_24h_1h": round(sizes[max(sizes)] / sizes[1], 3),
        "rss_1000_peers_mb": round(rss, 1),
        "rss_before_peers_mb": round(rss_base, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "self_rusage_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:32} {v}")


if __name__ == "__main__":
    main()
