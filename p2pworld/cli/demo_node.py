"""One node of ``p2pworld demo``: a real node process that reports to the demo parent.

It is given only its index, the node count, the message count, a workspace and a home; it
learns its peers through discovery (mDNS) like any other node. It prints one JSON object per
line on stdout (``up``, ``peer``, ``message``, ``result``) and stops when its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import trio

from p2pworld.errors import Conflict, P2PWorldError
from p2pworld.io.scopes import spawn_in, task
from p2pworld.runtime.node import Node, NodeConfig, open_node
from p2pworld.world.doc import CapabilityAd

DEMO_CHANNEL = "demo"


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


async def _wait_stdin_closed() -> None:
    await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)


@task("node", boundary=False)
async def _watch_peers(node: Node) -> None:
    seen: set[bytes] = set()
    while True:
        now = {p.node_id: p for p in node.peers.connected()}
        for pid in sorted(now.keys() - seen):
            p = now[pid]
            emit({"event": "peer", "node": node.node_id.hex(), "peer": pid.hex(), "up": True,
                  "via": list(p.via), "lane": p.lane})
        for pid in sorted(seen - now.keys()):
            emit({"event": "peer", "node": node.node_id.hex(), "peer": pid.hex(), "up": False})
        seen = set(now)
        await node.peers.changed()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _until(node: Node, cond: Any, timeout: float) -> bool:
    """Poll ``cond()`` on every world change (and every 0.2 s: expiry is not an event)."""
    with trio.move_on_after(timeout):
        while not cond():
            with trio.move_on_after(0.2):
                await node.world.changed()
        return True
    return False


async def world_round(node: Node, idx: int, timeout: float) -> dict[str, int]:
    """Presence and capability ads, live: every other node's ad appears here, then its
    update, then it expires (by this node's clock)."""
    others = {p.node_id for p in node.peers.connected()}
    out = {"world_members": 0, "ads_seen": 0, "ads_updated": 0, "ads_expired": 0}
    with trio.move_on_after(timeout):
        for pid in sorted(others):
            await node.wait_member(pid)
    out["world_members"] = sum(1 for m in node.members()
                               if m.node_id in others and m.state == "online")

    def with_tool(tag: str) -> set[bytes]:
        return {m.node_id for m in node.query(lambda c: tag in c.tools)} & others

    await node.advertise(CapabilityAd(tools=(f"tool-{idx}", "demo"),
                                      expires_ms=_now_ms() + 60_000))
    await _until(node, lambda: with_tool("demo") == others, timeout)
    out["ads_seen"] = len(with_tool("demo"))
    await node.advertise(CapabilityAd(tools=(f"tool-{idx}", "demo", "v2"),
                                      expires_ms=_now_ms() + 4_000))
    await _until(node, lambda: with_tool("v2") == others, timeout)
    out["ads_updated"] = len(with_tool("v2"))
    seen = with_tool("v2")
    await _until(node, lambda: not with_tool("v2"), timeout)
    out["ads_expired"] = len(seen - with_tool("v2"))
    return out


@task("node", boundary=False)
async def compute_round(node: Node, idx: int, timeout: float) -> dict[str, int]:
    """Node 0 requests a job; the others offer; one is assigned, accepts and returns the
    result; the others try to accept too and get an explicit conflict naming the assignee."""
    out = {"compute_rounds": 0, "compute_winners": 0, "compute_conflicts": 0}
    others = {p.node_id for p in node.peers.connected()}
    await node.advertise(CapabilityAd(tools=("echo",), job_kinds=("5001",),
                                      expires_ms=_now_ms() + 600_000))
    with trio.move_on_after(timeout):
        if idx == 0:
            await _until(node, lambda: {m.node_id for m in node.query(
                lambda c: "echo" in c.tools)} >= others, timeout)
            ch, rid = await node.request_compute(b"hello from node 0", kind="5001",
                                                 needs=("echo",))
            out["compute_rounds"] = 1
            r = await node.wait_compute(ch, rid)
            accepts = [s for op, s in r.history if op == "accept"]
            if r.phase == "success" and len(accepts) == 1 and r.accepted_by == accepts[0]:
                out["compute_winners"] = 1
            emit({"event": "compute", "node": node.node_id.hex(), "rid": rid,
                  "phase": r.phase, "assignee": r.accepted_by.hex() if r.accepted_by else None,
                  "result": r.result.decode(errors="replace")})
            return out
        while not (found := node.eligible_compute()):
            await trio.sleep(0.05)
        ch, req = found[0]
        saw_conflict = False
        try:
            await node.offer_compute(ch, req.rid)
        except Conflict:
            # The request was assigned before this offer was sequenced: the same conflict
            # the accept below names, counted once per node.
            saw_conflict = True
        r = await node.wait_compute(ch, req.rid, lambda r: r.assignee is not None
                                    or r.terminal)
        if r.assignee == node.node_id:
            await node.accept_compute(ch, req.rid)
            await node.complete_compute(ch, req.rid, r.job.upper())
        else:
            try:
                await node.accept_compute(ch, req.rid)
            except Conflict:
                saw_conflict = True
        out["compute_conflicts"] = int(saw_conflict)
        await node.wait_compute(ch, req.rid)
    return out


async def _bridge_report(node: Node, timeout: float) -> dict[str, Any]:
    """Wait (bounded) for the mirror lane to drain, then report it."""
    with trio.move_on_after(timeout):
        while node.bridge.pending():
            await trio.sleep(0.1)
    t = node.health()["transport"]
    bridge = t["nostr"]["bridge"]
    return {"bridge_published": bridge["published"], "bridge_failed": bridge["failed"],
            "bridge_pending": bridge["pending"], "lane_delivered": t["delivered"]}


@task("node", boundary=False)
async def _watch_world(node: Node) -> None:
    me = node.node_id.hex()
    async for ev in node.world_events():
        m = node.member(ev.node) if ev.node else None
        if ev.node == node.node_id:
            continue
        emit({"event": "world", "node": me, "kind": ev.kind, "about": ev.node.hex(),
              "reason": ev.reason,
              "tools": list(m.caps.tools) if m and m.caps else []})


@task("node", boundary=False)
async def _reader(node: Node, ch: bytes, args: argparse.Namespace, delivered: list[int]
                  ) -> None:
    me = node.node_id.hex()
    async for msg in node.messages(ch):
        delivered.append(msg.seq)
        if args.live:
            emit({"event": "message", "node": me, "seq": msg.seq, "sender": msg.sender.hex(),
                  "text": msg.payload.decode(errors="replace")})
        elif len(delivered) >= args.messages:
            return


@task("node", boundary=False)
async def _writer(node: Node, ch: bytes, args: argparse.Namespace,
                  publish_errors: dict[str, int]) -> None:
    n, m, idx = args.nodes, args.messages, args.index
    k = idx + 1
    while k <= m or args.live:
        text = f"message {k} from node {idx}"
        try:
            await node.publish(ch, text.encode(), key=f"demo-{k}".encode())
        except P2PWorldError as e:
            publish_errors[e.code] = publish_errors.get(e.code, 0) + 1
            await trio.sleep(0.2)
            continue  # same key: a retry can never duplicate
        k += n
        if args.live and k > m:
            await trio.sleep(args.interval)


async def run(args: argparse.Namespace) -> int:
    cfg = NodeConfig(home=Path(args.home), workspace=args.workspace,
                     interfaces=[args.interface], mdns=not args.no_mdns,
                     rendezvous=args.rendezvous, public_urls=args.public_url,
                     control=args.control, relays=args.relay)
    n, m, idx = args.nodes, args.messages, args.index
    async with open_node(cfg) as node, trio.open_nursery() as nursery:
        me = node.node_id.hex()
        emit({"event": "up", "node": me, "index": idx, "url": node.url})
        # The demo's own tasks: any failure fails the demo (this process exits non-zero).
        spawn_in(nursery, _watch_peers, node)
        if args.live:
            spawn_in(nursery, _watch_world, node)
            await node.advertise(CapabilityAd(tools=(f"tool-{idx}",),
                                              expires_ms=_now_ms() + 3_600_000))
        status = "ok"
        delivered: list[int] = []
        world: dict[str, int] = {}
        publish_errors: dict[str, int] = {}
        ch = b""
        with trio.move_on_after(args.timeout) as setup:
            await node.wait_peers(n - 1)
            rec = (await node.open_channel(DEMO_CHANNEL) if idx == 0
                   else await node.wait_channel(DEMO_CHANNEL))
            ch = rec.channel

        if setup.cancelled_caught:
            status = "timeout"
        elif args.live:
            async with trio.open_nursery() as work:
                spawn_in(work, _writer, node, ch, args, publish_errors)
                spawn_in(work, _reader, node, ch, args, delivered)
                spawn_in(work, compute_round, node, idx, args.timeout)
                await _wait_stdin_closed()
                work.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
            return 0
        else:
            with trio.move_on_after(args.timeout) as scope:
                async with trio.open_nursery() as work:
                    spawn_in(work, _writer, node, ch, args, publish_errors)
                    await _reader(node, ch, args, delivered)
            if scope.cancelled_caught:
                status = "timeout"
            world = await world_round(node, idx, args.timeout)
            world.update(await compute_round(node, idx, args.timeout))
            # A session may come from the peer's dial before our own browser saw the peer;
            # report discovery only as it is observed, waiting (bounded) for the browser.
            with trio.move_on_after(10):
                while any("mdns" not in p.via for p in node.peers.connected()) \
                        and not args.no_mdns:
                    await trio.sleep(0.1)
        head = node.head(ch)[1].hex() if ch else None
        bridge = await _bridge_report(node, args.timeout) if args.relay else {}
        emit({
            "event": "result", "node": me, "index": idx, "status": status,
            "discovered_mdns": sorted(p.node_id.hex() for p in node.peers.known()
                                      if "mdns" in p.via),
            "sessions": sorted(p.node_id.hex() for p in node.peers.connected()),
            "delivered": len(delivered),
            "in_order": delivered == list(range(1, m + 1)),
            "head_hash": head, "publish_errors": publish_errors,
            **(world if not setup.cancelled_caught else {}), **bridge,
            "health": node.health(),
        })
        await _wait_stdin_closed()
        nursery.cancel_scope.cancel()
    return 0 if status == "ok" else 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--workspace", required=True)
    p.add_argument("--home", required=True)
    p.add_argument("--interface", default="127.0.0.1")
    p.add_argument("--no-mdns", action="store_true")
    p.add_argument("--rendezvous", action="append", default=[])
    p.add_argument("--control", default=None)
    p.add_argument("--relay", action="append", default=[])
    p.add_argument("--public-url", action="append", default=None)
    p.add_argument("--live", action="store_true")
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=45.0)


def main(args: argparse.Namespace) -> int:
    # The demo parent owns our lifetime (it closes our stdin); Ctrl-C in the terminal reaches
    # the whole process group, so leave it to the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return trio.run(run, args)
