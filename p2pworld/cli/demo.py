"""``p2pworld demo``: N real node processes on this machine meet over mDNS, see each other's
presence and capability ads (appear, update, expire), and talk on an ordered channel.

The parent starts the node processes and listens to what each reports; it never tells a node
where the others are. mDNS is pinned to loopback, so nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

import trio

from p2pworld.cli.common import run_until_interrupted
from p2pworld.io.control_service import load_or_init
from p2pworld.io.http import serve_control
from p2pworld.io.scopes import spawn_in, start_in, task


async def _lines(stream: trio.abc.ReceiveStream) -> Any:
    buf = b""
    async for chunk in stream:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line


def summarize(nodes: int, messages: int, results: list[dict[str, Any]],
              seconds: float, relays: list[str] | None = None) -> dict[str, Any]:
    """The demo's verdict from what the node processes reported (and nothing else)."""
    ids = {r["node"] for r in results}
    discovered = sum(1 for r in results for other in r["discovered_mdns"] if other in ids)
    sessions = {r["node"]: set(r["sessions"]) for r in results}
    handshakes = sum(1 for a, b in combinations(sorted(ids), 2)
                     if b in sessions.get(a, set()) and a in sessions.get(b, set()))
    heads = {r["head_hash"] for r in results}
    in_order = (len(results) == nodes and all(r["in_order"] and r["status"] == "ok"
                                              for r in results)
                and len(heads) == 1 and None not in heads)
    delivered = sum(r["delivered"] for r in results)
    world = {k: sum(r.get(k, 0) for r in results)
             for k in ("world_members", "ads_seen", "ads_updated", "ads_expired")}
    compute = {k: sum(r.get(k, 0) for r in results)
               for k in ("compute_rounds", "compute_winners", "compute_conflicts")}
    bridge: dict[str, Any] = {}
    if relays:
        lanes: dict[str, int] = {}
        for r in results:
            for lane, k in r.get("lane_delivered", {}).items():
                lanes[lane] = lanes.get(lane, 0) + k
        total = sum(lanes.values())
        bridge = {"relays": relays,
                  "bridge_published": sum(r.get("bridge_published", 0) for r in results),
                  "bridge_failed": sum(r.get("bridge_failed", 0) for r in results),
                  "bridge_pending": sum(r.get("bridge_pending", 0) for r in results),
                  "fallback_ratio": round(lanes.get("nostr", 0) / total, 6) if total else 0.0}
    out = {
        "nodes": nodes, "discovered": discovered, "handshakes_ok": handshakes,
        "messages_sent": messages, "messages_delivered": delivered, "in_order": in_order,
        **world, **compute, **bridge,
        "seconds": round(seconds, 3),
        "per_node": [{k: r[k] for k in ("index", "node", "status", "discovered_mdns",
                                        "sessions", "delivered", "in_order", "head_hash",
                                        "publish_errors")} for r in
                     sorted(results, key=lambda r: r["index"])],
    }
    out["ok"] = (len(results) == nodes and discovered == nodes * (nodes - 1)
                 and handshakes == nodes * (nodes - 1) // 2
                 and delivered == nodes * messages and in_order
                 and all(v == nodes * (nodes - 1) for v in world.values())
                 and (nodes < 2 or (compute["compute_rounds"] == compute["compute_winners"] == 1
                                    and compute["compute_conflicts"] >= nodes - 2))
                 and (not relays or (bridge["bridge_published"] > 0
                                     and bridge["bridge_pending"] == 0)))
    return out


def _child_cmd(args: argparse.Namespace, i: int, home: Path, workspace: str,
               live: bool, control: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "p2pworld.cli.main", "demo-node", "--index", str(i),
           "--nodes", str(args.nodes), "--messages", str(args.messages),
           "--workspace", workspace, "--home", str(home / f"node{i}"),
           "--interface", args.interface, "--timeout", str(args.timeout)]
    if args.no_mdns:
        cmd.append("--no-mdns")
    if control:
        cmd += ["--control", control]
    for r in args.relay:
        cmd += ["--relay", r]
    if live:
        cmd.append("--live")
    return cmd


async def run(args: argparse.Namespace) -> int:
    live = not args.json
    workspace = f"demo-{secrets.token_hex(4)}"
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="p2pworld-demo-") as tmp:
        async with trio.open_nursery() as authority:
            control = None
            if not args.no_auth:
                # Zero infrastructure: an embedded control authority for this demo's workspace,
                # on loopback, minting tokens for any node that proves its key.
                core, _ = load_or_init(Path(tmp) / "control", org=workspace,
                                       open_enrollment=True)
                server = await start_in(authority, serve_control, core, "127.0.0.1", 0)
                control = server.url
            try:
                return await _run_nodes(args, Path(tmp), workspace, live, control, started)
            finally:
                authority.cancel_scope.cancel()
    return 0  # unreachable: _run_nodes returns


async def _run_nodes(args: argparse.Namespace, tmp: Path, workspace: str, live: bool,
                     control: str | None, started: float) -> int:
    results: list[dict[str, Any]] = []
    procs = []
    for i in range(args.nodes):
        procs.append(await trio.lowlevel.open_process(
            _child_cmd(args, i, tmp, workspace, live, control),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    if live:
        print(f"p2pworld demo: {args.nodes} nodes, workspace {workspace}, mDNS on "
              f"{args.interface}. Ctrl-C to stop.", flush=True)
        if control:
            print(f"  auth    embedded control authority at {control} (demo only: it mints "
                  "tokens for any local node that proves its key)", flush=True)
    view = _LiveView(args.nodes) if live else None
    done = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            for p in procs:
                spawn_in(nursery, _read_child, p, results, view, args.nodes, done)
            if not live:
                with trio.move_on_after(args.timeout + 15):
                    await done.wait()
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await _stop(procs)
    if live:
        return 0
    summary = summarize(args.nodes, args.messages, results, time.monotonic() - started,
                        relays=args.relay)
    summary["auth"] = ("embedded control authority (demo only)" if control
                       else "off (--no-auth)")
    ok = summary.pop("ok")
    print(json.dumps(summary, indent=None if args.compact else 2, sort_keys=False))
    return 0 if ok else 1


@task("node", boundary=False)
async def _read_child(proc: trio.Process, results: list[dict[str, Any]],
                      view: _LiveView | None, nodes: int, done: trio.Event) -> None:
    assert proc.stdout is not None
    async for line in _lines(proc.stdout):
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if view is not None:
            view.show(ev)
        if ev.get("event") == "result":
            results.append(ev)
            if len(results) == nodes:
                done.set()
    if len(results) < nodes:
        # A node died before reporting: no point waiting for the rest.
        done.set()


async def _stop(procs: list[trio.Process]) -> None:
    for p in procs:
        if p.stdin is not None:
            try:
                await p.stdin.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
    with trio.move_on_after(10):
        for p in procs:
            await p.wait()
    for p in procs:
        if p.returncode is None:
            p.kill()
            await p.wait()


class _LiveView:
    """Prints peers as sessions come and go, and each message once every node has it."""

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes
        self.names: dict[str, str] = {}
        self.seen: dict[int, set[str]] = {}
        self.tools: dict[tuple[str, str], Any] = {}

    def _name(self, nid: str) -> str:
        return self.names.get(nid, nid[:8])

    def show(self, ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "up":
            self.names[ev["node"]] = f"node{ev['index']}({ev['node'][:8]})"
            print(f"  up      {self._name(ev['node'])} listening on {ev['url']}", flush=True)
        elif kind == "peer":
            state = "session up  " if ev["up"] else "session down"
            via = ",".join(ev.get("via", []))
            print(f"  peer    {self._name(ev['node'])} {state} {self._name(ev['peer'])}"
                  f"  lane={ev.get('lane') or 'direct'}{' via=' + via if via else ''}", flush=True)
        elif kind == "message":
            got = self.seen.setdefault(ev["seq"], set())
            got.add(ev["node"])
            if len(got) == self.nodes:
                print(f"  #{ev['seq']:<5} {self._name(ev['sender'])} -> all {self.nodes} "
                      f"nodes: {ev['text']}", flush=True)
                del self.seen[ev["seq"]]
        elif kind == "world":
            key = (ev["node"], ev["about"])
            if ev["kind"] == "updated" and self.tools.get(key) == ev.get("tools"):
                return
            self.tools[key] = ev.get("tools")
            what = {"joined": "sees", "updated": "sees update of", "stale": "lost (stale)",
                    "left": "saw leave of"}.get(ev["kind"], ev["kind"])
            tools = f" tools={','.join(ev['tools'])}" if ev.get("tools") else ""
            print(f"  world   {self._name(ev['node'])} {what} {self._name(ev['about'])}"
                  f"{tools}", flush=True)
        elif kind == "compute":
            print(f"  compute {self._name(ev['node'])} job {ev['rid']}: {ev['phase']} by "
                  f"{self._name(ev['assignee']) if ev.get('assignee') else '-'} -> "
                  f"{ev.get('result', '')!r}", flush=True)
        elif kind == "result" and ev.get("status") != "ok":
            print(f"  error   {self._name(ev['node'])}: {ev['status']}", flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=3, help="node processes to start (default 3)")
    p.add_argument("--messages", type=int, default=None,
                   help="messages in total, published round-robin (default 100 with --json, "
                        "then a live stream without)")
    p.add_argument("--json", action="store_true", help="run to completion and print one JSON object")
    p.add_argument("--compact", action="store_true", help="print the JSON on one line")
    p.add_argument("--no-mdns", action="store_true",
                   help="disable discovery (the demo then fails: nodes cannot meet)")
    p.add_argument("--interface", default="127.0.0.1", help="where mDNS and sessions run")
    p.add_argument("--no-auth", action="store_true",
                   help="run without the embedded control authority (an open world)")
    p.add_argument("--timeout", type=float, default=45.0, help="seconds per phase")
    p.add_argument("--relay", action="append", default=[], metavar="ws://HOST:PORT",
                   help="a Nostr relay (repeatable): turns the mirror lane on (capability "
                        "ads, the compute round, presence); --json then also reports "
                        "bridge_published, bridge_failed and fallback_ratio")


def main(args: argparse.Namespace) -> int:
    if args.messages is None:
        args.messages = 100 if args.json else args.nodes * 2
    if args.nodes < 1 or args.messages < 0:
        print("p2pworld demo: --nodes must be >= 1 and --messages >= 0", file=sys.stderr)
        return 2
    return run_until_interrupted(run, args)
