"""Nostr-lane benchmark: the primary lane beside a black-hole relay, and the fallback lane.

    python -m benchmarks.nostr --json [--messages 300]

Two nodes in one process on 127.0.0.1 (library defaults: auth off, fsync per group commit,
encrypted sessions). Node ``b`` publishes ``--messages`` messages one at a time to a channel
``a`` sequences, and every publish's ack latency is recorded.

* ``primary``: no relays configured (the baseline), while ``a`` changes its capability ad
  every 10 messages;
* ``primary_black_hole``: both nodes configured with a relay that accepts TCP connections and
  never answers, with the same ad changes (now each also a NIP-89 mirror written to the
  outbox, never published): the primary lane must not notice;
* ``direct`` and ``forced_nostr``: the same workload with a real relay (PyPI ``nostr-relay``
  from ``.relay-venv``, started here), first over the direct lane, then with
  ``transport="forced-nostr"``: every frame crosses the relay as NIP-44 events.

Printed: p50 / p99 / max ack latency (ms) and acked msgs/s per phase, with the ratios
``black_hole_p99_ratio`` (primary_black_hole / primary) and ``nostr_vs_direct_rate``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from p2pworld import NodeConfig, open_node
from p2pworld.log.entry import ChannelPolicy
from p2pworld.world.doc import CapabilityAd

ROOT = Path(__file__).resolve().parent.parent


def _cfg(home: Path, name: str, **kw: Any) -> NodeConfig:
    return NodeConfig(home=home / name, workspace="bench", mdns=False, keepalive=5.0, **kw)


def _stats(lat: list[float], seconds: float) -> dict[str, Any]:
    lat = sorted(lat)

    def q(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(len(lat) * p))] * 1000, 3)

    return {"n": len(lat), "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0),
            "msgs_per_s": round(len(lat) / seconds, 1)}


async def _run(home: Path, n: int, *, relays: list[str], transport: str = "primary-with-fallback",
               churn_ads: bool = False) -> dict[str, Any]:
    direct = transport != "forced-nostr"
    async with open_node(_cfg(home, "a", relays=relays, transport=transport)) as a, \
            open_node(_cfg(home, "b", relays=relays, transport=transport,
                           peers=[a.url] if direct else [])) as b:
        with trio.fail_after(120):
            await b.wait_peers(1)
        chan = await a.open_channel("bench", policy=ChannelPolicy(nostr_fallback=True))
        await b.wait_channel("bench")
        for i in range(5):  # warm-up
            await b.publish(chan.channel, b"w%d" % i)
        lat: list[float] = []
        t0 = time.perf_counter()
        for i in range(n):
            if churn_ads and i % 10 == 0:
                await a.advertise(CapabilityAd(tools=(f"t{i}",), job_kinds=("5001",),
                                               expires_ms=2**62))
            s = time.perf_counter()
            await b.publish(chan.channel, b"x" * 200)
            lat.append(time.perf_counter() - s)
        out = _stats(lat, time.perf_counter() - t0)
        out["lane"] = b.health()["peers"][0]["lane"]
        if a._nostr is not None:
            out["bridge_pending"] = a._nostr.outbox.pending()
        return out


async def main_async(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"messages": n}
    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        out["primary"] = await _run(home / "p", n, relays=[], churn_ads=True)
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        hole = f"ws://127.0.0.1:{listener.getsockname()[1]}"
        out["primary_black_hole"] = await _run(home / "h", n, relays=[hole], churn_ads=True)
        listener.close()
        out["black_hole_p99_ratio"] = round(
            out["primary_black_hole"]["p99_ms"] / out["primary"]["p99_ms"], 2)
        sys.path.insert(0, str(ROOT))
        from tests.relay import real_relay

        with real_relay(home / "relay") as url:
            out["direct"] = await _run(home / "d", n, relays=[url])
            out["forced_nostr"] = await _run(home / "f", n, relays=[url],
                                             transport="forced-nostr")
        out["nostr_vs_direct_rate"] = round(
            out["forced_nostr"]["msgs_per_s"] / out["direct"]["msgs_per_s"], 3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.nostr")
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = trio.run(main_async, args.messages)
    print(json.dumps(out, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
