"""The ``p2pworld`` command."""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    from p2pworld.cli import (
        control_cmd,
        demo,
        demo_node,
        id_cmd,
        log_cmd,
        node_cmd,
        rendezvous_cmd,
    )

    parser = argparse.ArgumentParser(prog="p2pworld", description=(
        "A serverless shared world for AI agents: discovery, authenticated sessions and "
        "strictly ordered channels."))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="start N local nodes that meet over mDNS and talk")
    demo.add_arguments(p)
    p.set_defaults(func=demo.main)
    p = sub.add_parser("node", help="run one node until interrupted")
    node_cmd.add_arguments(p)
    p.set_defaults(func=node_cmd.main)
    p = sub.add_parser("rendezvous", help="run a rendezvous node (registration and relay)")
    rendezvous_cmd.add_arguments(p)
    p.set_defaults(func=rendezvous_cmd.main)
    p = sub.add_parser("control", help="the control service (tokens, keys, policy)")
    control_cmd.add_arguments(p)
    p = sub.add_parser("id", help="show (or create / import) this node's identity")
    id_cmd.add_arguments(p)
    p.set_defaults(func=id_cmd.main)
    p = sub.add_parser("log", help="channel log tools (verify)")
    log_cmd.add_arguments(p)
    p = sub.add_parser("demo-node", help=argparse.SUPPRESS)
    demo_node.add_arguments(p)
    p.set_defaults(func=demo_node.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    from p2pworld.errors import P2PWorldError

    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except P2PWorldError as e:
        # A typed failure (a home in use, an address taken, a corrupt store): one line that
        # says what, and a non-zero status; no traceback.
        if getattr(args, "json", False):
            print(json.dumps({"event": "error", "code": e.code, "message": e.message}),
                  flush=True)
        print(f"p2pworld {args.command}: {e.code}: {e.message}", file=sys.stderr, flush=True)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
