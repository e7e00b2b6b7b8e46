"""``p2pworld log verify PATH`` and ``p2pworld log repair PATH``: a node's channel log offline.

``verify`` opens the file read-only and takes no lock (it may run beside the node); it runs
exactly what the node runs on open (:class:`~p2pworld.io.log_store.LogStore` with
``read_only=True``: sqlite's ``quick_check``, then
:func:`~p2pworld.log.verify.check_channel` on every channel, and ``integrity_check`` where a
channel looks damaged), so the two never disagree about a file.
``repair`` needs the node stopped (it takes the home's lock): it rebuilds the indexes
(``REINDEX``), which is what index damage needs, and verifies again. ``--drop-channel``
deletes one damaged channel's rows, so the node takes the channel from its peers again; a
channel this node sequences is better recovered onto a replica (``docs/guarantees.md``, storage).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from p2pworld.errors import IdentityError, P2PWorldError
from p2pworld.io.home import NodeHome
from p2pworld.io.log_store import LogStore, sqlite_check


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="log_command", required=True)
    v = sub.add_parser("verify", help="verify a channel log in a node's log.db")
    v.add_argument("path", help="a node's log.db (sqlite)")
    v.add_argument("--channel", default=None, help="channel id (hex); needed if several")
    v.add_argument("--genesis", default=None, help="pin the channel's genesis hash (hex)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=verify)
    r = sub.add_parser("repair", help="rebuild a stopped node's log.db indexes, then verify")
    r.add_argument("path", help="a node's log.db (sqlite); its node must be stopped")
    r.add_argument("--drop-channel", default=None, metavar="HEX",
                   help="delete this channel's rows (taken again from peers on next start)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=repair)


def verify(args: argparse.Namespace) -> int:
    try:
        store = LogStore(Path(args.path).expanduser(), read_only=True)
    except P2PWorldError as err:
        return _fail(args, err.message)
    try:
        try:
            store.load_channels(quarantine=True)
            store.load_cursors()  # what the node reads on open too
        except P2PWorldError as err:
            return _fail(args, err.message)
        reports = store.reports
    finally:
        store.close()  # on every path (Python 3.13 warns about an unclosed connection)
    if args.channel:
        reports = {ch: r for ch, r in reports.items() if ch.hex() == args.channel}
    if len(reports) != 1:
        return _fail(args, f"choose one channel with --channel: {[c.hex() for c in reports]}")
    (out,) = reports.values()
    if args.genesis:
        out["genesis_ok"] = out.get("genesis_hash") == args.genesis
        if not out["genesis_ok"]:
            out["errors"].append("record does not match the pinned genesis hash")
    ok = not out["errors"]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'OK' if ok else 'FAILED'}: {out['entries']} entries, head {out['head_hash']},"
              f" state {out['state_hash']}")
        for problem in out["errors"]:
            print(f"  {problem}")
    return 0 if ok else 1


def repair(args: argparse.Namespace) -> int:
    path = Path(args.path).expanduser()
    if not path.is_file():
        return _fail(args, f"{path}: no such file")
    if args.drop_channel is not None:
        try:
            if len(bytes.fromhex(args.drop_channel)) != 16:
                raise ValueError
        except ValueError:
            return _fail(args, f"--drop-channel takes a channel id (32 hex digits), not "
                               f"{args.drop_channel!r}")
    home = NodeHome(path.parent)
    try:
        home.lock()
    except IdentityError as err:
        return _fail(args, f"{err.message} (stop the node first)")
    try:
        return _repair(args, path)
    finally:
        home.unlock()


def _repair(args: argparse.Namespace, path: Path) -> int:
    report: dict[str, Any] = {"path": str(path), "reindexed": False, "dropped": None,
                              "sqlite": None, "channels": {}}
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as err:
        return _fail(args, f"cannot open: {err}")
    try:
        db.execute("REINDEX")
        report["reindexed"] = True
        if args.drop_channel:
            ch = bytes.fromhex(args.drop_channel)
            with db:
                db.execute("BEGIN IMMEDIATE")
                for table in ("entries", "channels", "cursors"):
                    db.execute(f"DELETE FROM {table} WHERE ch=?", (ch,))
            report["dropped"] = args.drop_channel
        report["sqlite"] = sqlite_check(db, full=True) or "ok"
    except sqlite3.Error as err:
        report["sqlite"] = f"{err}"
    finally:
        db.close()
    ok = report["sqlite"] == "ok"
    if ok:
        try:
            store = LogStore(path)
        except P2PWorldError as err:
            report["sqlite"] = err.message
            ok = False
        else:
            try:
                store.load_channels(quarantine=True)
                report["channels"] = {ch.hex(): e.message
                                      for ch, e in store.quarantined.items()}
                ok = not store.quarantined
            finally:
                store.close()
    if args.json:
        print(json.dumps({**report, "ok": ok}, indent=2))
    else:
        print(f"{'OK' if ok else 'FAILED'}: indexes rebuilt: {report['reindexed']}, "
              f"sqlite: {report['sqlite']}")
        for ch, problem in report["channels"].items():
            print(f"  channel {ch} still damaged: {problem} (--drop-channel {ch} deletes it)")
    return 0 if ok else 1


def _fail(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print(json.dumps({"entries": 0, "chain_ok": False, "signatures_ok": False,
                          "head_hash": None, "state_hash": None, "errors": [message]}))
    else:
        print(f"p2pworld log {args.log_command}: {message}", file=sys.stderr)
    return 1
