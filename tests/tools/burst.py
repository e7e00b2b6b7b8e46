"""A sequencer under load, for the crash test: opens a channel and publishes with many
publishes in flight, printing each acknowledged seq (after the ack) as a JSON line.

Usage: python -m tests.tools.burst HOME COUNT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from p2pworld.runtime.node import NodeConfig, open_node


async def main(home: str, count: int) -> None:
    cfg = NodeConfig(home=Path(home), workspace="crash", mdns=False)
    async with open_node(cfg) as node:
        rec = await node.open_channel("burst")
        print(json.dumps({"event": "ready", "channel": rec.channel.hex()}), flush=True)

        async def one(i: int) -> None:
            res = await node.publish(rec.channel, b"payload %d" % i, key=b"k%d" % i)
            print(json.dumps({"event": "ack", "seq": res.seq, "key": i}), flush=True)

        async with trio.open_nursery() as n:
            limit = trio.Semaphore(100)
            for i in range(count):
                await limit.acquire()

                async def run(i: int = i) -> None:
                    try:
                        await one(i)
                    finally:
                        limit.release()

                n.start_soon(run)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
