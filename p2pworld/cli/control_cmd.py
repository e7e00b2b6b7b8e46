"""``p2pworld control serve --listen HOST:PORT --home DIR``: the control service.

On first start it creates a signing key and the operator credential (printed once, and kept
in ``DIR/operator.token``). Commands on stdin: ``stats``, ``quit``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import trio

from p2pworld.cli.common import run_until_interrupted, stdin_line
from p2pworld.io.control_service import OPERATOR_FILE, open_control


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="control_cmd", required=True)
    s = sub.add_parser("serve", help="run the control service")
    s.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    s.add_argument("--home", required=True, help="state directory (keys, enrolments)")
    s.add_argument("--org", default="default")
    s.add_argument("--ttl", type=int, default=900, help="token lifetime in seconds")
    s.add_argument("--open-enrollment", action="store_true",
                   help="mint for any node that proves its key (demos on loopback only)")
    s.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


async def run(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print("p2pworld control: --listen must be HOST:PORT", file=sys.stderr)
        return 2
    home = Path(args.home)
    first = not (home / "control.state").exists()
    async with open_control(home, host=host, port=int(port), org=args.org, ttl_s=args.ttl,
                            open_enrollment=args.open_enrollment) as server:
        info = {"event": "up", "url": server.url, "org": server.core.state.org,
                "operator_token_file": str(home / OPERATOR_FILE), "created": first,
                "open_enrollment": server.core.state.open_enrollment}
        print(json.dumps(info) if args.json else
              f"control service for {info['org']} at {server.url}; operator credential in "
              f"{info['operator_token_file']}", flush=True)
        while line := await stdin_line():
            if line.strip() == "quit":
                break
            if line.strip() == "stats":
                c = server.core
                print(json.dumps({"event": "stats", "requests": server.requests,
                                  "minted": c.minted, "refused": c.refused,
                                  "enrolled": len(c.state.enrolled)}), flush=True)
        else:
            await trio.sleep_forever()
    return 0


def main(args: argparse.Namespace) -> int:
    return run_until_interrupted(run, args)
