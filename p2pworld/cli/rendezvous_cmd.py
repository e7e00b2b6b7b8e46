"""``p2pworld rendezvous --listen HOST:PORT``: run a rendezvous node until interrupted.

It registers nodes, answers with each workspace's signed registrations and relays sessions
between nodes that cannot reach each other directly. It holds no keys that matter: it cannot
forge registrations or read relayed sessions. Commands on stdin: ``stats``, ``quit``.
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from discovery.rendezvous_server import serve_rendezvous
from p2pworld.cli.common import run_until_interrupted, stdin_line
from p2pworld.io.scopes import start_in


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1, any free port)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")


def _emit(as_json: bool, kind: str, text: str, **data: object) -> None:
    if as_json:
        print(json.dumps({"event": kind, **data}, sort_keys=True), flush=True)
    else:
        print(text, flush=True)


async def run(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print("p2pworld rendezvous: --listen must be HOST:PORT", file=sys.stderr)
        return 2
    async with trio.open_nursery() as nursery:
        server = await start_in(nursery, serve_rendezvous, host.strip("[]"), int(port))
        _emit(args.json, "up", f"rendezvous listening on {server.url}", url=server.url)
        while line := await stdin_line():
            cmd = line.strip()
            if cmd == "quit":
                break
            if cmd == "stats":
                st = server.stats()
                _emit(args.json, "stats", json.dumps(st), **st)
        else:
            await trio.sleep_forever()  # stdin closed: keep serving until interrupted
        nursery.cancel_scope.cancel()
    return 0


def main(args: argparse.Namespace) -> int:
    return run_until_interrupted(run, args)
