"""A node process that opens (or reopens) a channel, publishes, and reports as JSON lines:
``{"event": "ack", "seq", "payload", "strength"}`` per publish (after its ack; the payload is
also its idempotency key), every notice as
``{"event": "notice", "code", "details"}``, ``{"event": "role"}`` at the end. For the
real-process tests of a sequencer that goes away and comes back.

Usage: python -m tests.tools.writer HOME WORKSPACE PEERS(comma-separated) PREFIX COUNT [WAIT_S]
Publishes COUNT messages ``PREFIX i`` on channel "general" (opening it if this node holds
none), one at a time with ``durability="replicated"`` when PREFIX starts with "r:", then keeps
reporting notices for WAIT_S seconds and exits cleanly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from p2pworld.runtime.node import NodeConfig, open_node


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


async def main(home: str, workspace: str, peers: str, prefix: str, count: int,
               wait_s: float) -> None:
    cfg = NodeConfig(home=Path(home), workspace=workspace, mdns=False,
                     peers=[p for p in peers.split(",") if p])
    async with open_node(cfg) as node, trio.open_nursery() as n:

        async def notices() -> None:
            while True:
                note = await node.notices()
                emit(event="notice", code=note.error.code,
                     details={k: v for k, v in note.error.details.items()
                              if isinstance(v, (int, str, bool))})

        n.start_soon(notices)
        found = [c for c in node.channels() if c.name == "general"]
        rec = found[0] if found else await node.open_channel("general")
        emit(event="ready", channel=rec.channel.hex())
        want = "replicated" if prefix.startswith("r:") else "local"
        for i in range(count):
            payload = f"{prefix}{i}".encode()
            # The payload is its own idempotency key (the tests check the stores with it).
            res = await node.publish(rec.channel, payload, key=payload, durability=want,
                                     timeout=30)
            emit(event="ack", seq=res.seq, payload=payload.decode(),
                 strength=res.strength)
        await trio.sleep(wait_s)
        h = node.health()
        emit(event="role", role=[c["role"] for c in h["channels"] if c["name"] == "general"],
             head=node.head(rec.channel)[0])
        n.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
             float(sys.argv[6]) if len(sys.argv) > 6 else 0.0)
