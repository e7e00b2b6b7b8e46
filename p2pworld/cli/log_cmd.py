"""``p2pworld log verify PATH``: check a stored channel log offline."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys

from p2pworld.log.verify import verify_rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="log_command", required=True)
    v = sub.add_parser("verify", help="verify a channel log in a node's log.db")
    v.add_argument("path", help="a node's log.db (sqlite)")
    v.add_argument("--channel", default=None, help="channel id (hex); needed if several")
    v.add_argument("--genesis", default=None, help="pin the channel's genesis hash (hex)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=verify)


def verify(args: argparse.Namespace) -> int:
    try:
        db = sqlite3.connect(f"file:{args.path}?mode=ro", uri=True)
    except sqlite3.Error as err:
        return _fail(args, f"not a readable p2pworld log: {err}")
    try:
        return _verify(args, db)
    finally:
        db.close()  # on every path (Python 3.13 warns about an unclosed connection)


def _verify(args: argparse.Namespace, db: sqlite3.Connection) -> int:
    try:
        rows = db.execute("SELECT ch, record, epochs, base, floor FROM channels").fetchall()
    except (sqlite3.DatabaseError, UnicodeDecodeError) as err:
        return _fail(args, f"not a readable p2pworld log: {err}")
    if args.channel:
        rows = [r for r in rows if bytes(r[0]).hex() == args.channel]
    if len(rows) != 1:
        names = [bytes(r[0]).hex() for r in rows]
        return _fail(args, f"choose one channel with --channel: {names}")
    ch, record, epochs, base, floor = rows[0]
    try:
        ents = db.execute("SELECT seq, hash, body FROM entries WHERE ch=? ORDER BY seq",
                          (ch,)).fetchall()
    except (sqlite3.DatabaseError, UnicodeDecodeError) as err2:
        return _fail(args, f"entries unreadable: {err2}")
    genesis = bytes.fromhex(args.genesis) if args.genesis else None
    out = verify_rows(record, epochs, base, floor, ents, genesis=genesis)
    ok = out["chain_ok"] and out["signatures_ok"] and out["genesis_ok"] is not False
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'OK' if ok else 'FAILED'}: {out['entries']} entries, head {out['head_hash']},"
              f" state {out['state_hash']}")
        for problem in out["errors"]:
            print(f"  {problem}")
    return 0 if ok else 1


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"entries": 0, "chain_ok": False, "signatures_ok": False,
                          "head_hash": None, "state_hash": None, "errors": [message]}))
    else:
        print(f"p2pworld log verify: {message}", file=sys.stderr)
    return 1
