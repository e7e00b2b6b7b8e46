"""A hostile node for tests: a real node whose mDNS record claims somebody else's node id.

Usage: python -m tests.tools.impostor --interface IP --workspace W --home DIR --claim HEX
Prints {"event": "ready", "real_id": ..., "claimed_id": ...} and runs until stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import trio

from discovery.mdns import MdnsDiscovery
from p2pworld.runtime.node import NodeConfig, open_node


async def main(args: argparse.Namespace) -> None:
    cfg = NodeConfig(home=Path(args.home), workspace=args.workspace,
                     interfaces=[args.interface], mdns=False)
    async with open_node(cfg) as node:
        fake = MdnsDiscovery(interfaces=[args.interface], node_id=bytes.fromhex(args.claim),
                             workspace=args.workspace, port=node.listen_port)
        async with fake:
            await fake.register()
            print(json.dumps({"event": "ready", "real_id": node.node_id.hex(),
                              "claimed_id": args.claim}), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--interface", required=True)
    p.add_argument("--workspace", required=True)
    p.add_argument("--home", required=True)
    p.add_argument("--claim", required=True)
    trio.run(main, p.parse_args())
