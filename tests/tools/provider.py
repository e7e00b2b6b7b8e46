"""A compute provider process for the provider-death test: advertises ``echo`` for job kind
5001, follows its compute feed, offers on every request it hears of, and accepts what is
assigned to it; with ``hang`` it then never completes (it is killed mid-job), with ``work``
it completes with the job upper-cased; any other MODE is a flag file: the first provider to
accept a job creates it and hangs, the others work. Reports ``{"event": "offered" | "accepted" |
"completed", "rid"}`` as JSON lines.

Usage: python -m tests.tools.provider HOME WORKSPACE PEER MODE HEARTBEAT_MS STALE_MS
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import trio

from p2pworld import CapabilityAd, Conflict, NodeConfig, open_node
from p2pworld.world.core import WorldConfig


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


async def main(home: str, workspace: str, peer: str, mode: str, hb_ms: int, stale_ms: int
               ) -> None:
    ad = CapabilityAd(tools=("echo",), job_kinds=("5001",), expires_ms=2**62)
    cfg = NodeConfig(home=Path(home), workspace=workspace, mdns=False, peers=[peer],
                     keepalive=1.0, capabilities=ad,
                     world=WorldConfig(heartbeat_ms=hb_ms, stale_ms=stale_ms))
    async with open_node(cfg) as node:
        emit(event="up", node=node.node_id.hex())
        async for ev in node.compute_feed():
            rid = ev.request.rid
            try:
                if ev.kind in ("request", "reopened"):
                    await node.offer_compute(ev.channel, rid)
                    emit(event="offered", rid=rid)
                elif ev.kind == "assigned":
                    # Decided before "accepted" is reported: the test may kill it right then.
                    if mode not in ("hang", "work"):
                        try:
                            os.close(os.open(mode, os.O_CREAT | os.O_EXCL))
                            hang = True
                        except FileExistsError:
                            hang = False
                    else:
                        hang = mode == "hang"
                    await node.accept_compute(ev.channel, rid)
                    emit(event="accepted", rid=rid)
                    if not hang:
                        await node.complete_compute(ev.channel, rid, ev.request.job.upper())
                        emit(event="completed", rid=rid)
            except Conflict as e:
                emit(event="conflict", rid=rid, message=e.message)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
             int(sys.argv[6]))
