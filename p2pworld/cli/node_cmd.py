"""``p2pworld node``: one node for real use, until interrupted.

Commands on stdin (one per line)::

    peers                 sessions and discovered peers
    health                the full health report (JSON)
    channels              known channels
    open NAME             open a channel sequenced by this node
    private NAME KEY,...  open a private (end-to-end encrypted) channel with these members
    add NAME KEY          add a member (node public key, hex) to a channel you own
    remove NAME KEY       remove a member (private channels rotate their key)
    close NAME            close a channel you own (no more appends)
    handoff NAME KEY      hand the sequencer role to another node (planned handoff)
    send NAME TEXT...     publish TEXT to channel NAME
    follow NAME           print the channel's messages as they arrive
    ack NAME SEQ          record a checkpoint (consumed up to SEQ)
    quit
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import trio

from p2pworld.cli.common import run_until_interrupted, stdin_line
from p2pworld.errors import P2PWorldError
from p2pworld.identity import short_id
from p2pworld.io.home import default_home
from p2pworld.io.scopes import Supervisor, task
from p2pworld.runtime.node import Node, NodeConfig, PeerInfo, open_node
from p2pworld.world.doc import CapabilityAd


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", default=None, help="node home (keys and log store)")
    p.add_argument("--workspace", default="default")
    p.add_argument("--interface", action="append", default=None,
                   help="IPv4 address or interface name for sessions and mDNS "
                        "(repeatable; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="websocket port (default: any free)")
    p.add_argument("--peer", action="append", default=[], metavar="URL",
                   help="also dial ws://HOST:PORT/ (static seed)")
    p.add_argument("--no-mdns", action="store_true")
    p.add_argument("--control", default=None, metavar="URL",
                   help="control service (http://host:port): tokens are minted, refreshed and "
                        "checked before every mutation")
    p.add_argument("--rendezvous", action="append", default=[], metavar="URL",
                   help="rendezvous node to register with and relay through (repeatable)")
    p.add_argument("--relay", action="append", default=[], metavar="URL",
                   help="Nostr relay (ws://host:port, repeatable): mirrors and the fallback lane")
    p.add_argument("--transport", default="primary-with-fallback",
                   choices=["primary-only", "primary-with-fallback", "forced-nostr"],
                   help="lanes this node may use (a control policy may narrow it)")
    p.add_argument("--public-url", action="append", default=None, metavar="URL",
                   help="direct URL to publish to rendezvous nodes (default: the listen URL)")
    p.add_argument("--open", action="append", default=[], metavar="NAME",
                   help="open channel NAME at start (repeatable)")
    p.add_argument("--follow", action="append", default=[], metavar="NAME",
                   help="print messages of channel NAME (repeatable)")
    p.add_argument("--send", nargs=2, action="append", default=[], metavar=("NAME", "TEXT"),
                   help="publish TEXT to NAME once the channel is known (repeatable)")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")


class _Out:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, kind: str, line: str, **data: Any) -> None:
        if self.as_json:
            print(json.dumps({"event": kind, **data}, sort_keys=True), flush=True)
        else:
            print(f"[{kind}] {line}", flush=True)


@task("request")
async def _follow(node: Node, name: str, out: _Out) -> None:
    rec = await node.wait_channel(name)
    async for msg in node.messages(rec.channel):
        out("message", f"{name} #{msg.seq} {short_id(msg.sender)}: "
            f"{msg.payload.decode(errors='replace')}", channel=name, seq=msg.seq,
            sender=msg.sender.hex(), text=msg.payload.decode(errors="replace"))


@task("request")
async def _send(node: Node, name: str, text: str, out: _Out) -> None:
    rec = await node.wait_channel(name)
    if node.channels.sequencer_of(rec.channel) != node.node_id:
        await node.wait_peers(1)
    try:
        res = await node.publish(rec.channel, text.encode())
        out("ack", f"{name} #{res.seq} {res.status} ({res.strength})", channel=name,
            seq=res.seq, status=res.status, strength=res.strength)
    except P2PWorldError as e:
        out("error", f"{name}: {e.code}: {e.message}", channel=name, code=e.code)


@task("node", restart=True)
async def _watch(node: Node, out: _Out) -> None:
    seen: dict[bytes, PeerInfo] = {}
    while True:
        now = {p.node_id: p for p in node.peers.connected()}
        for pid in sorted(now.keys() - seen.keys()):
            p = now[pid]
            out("peer", f"session up {short_id(pid)} at {p.address} "
                f"via {','.join(p.via) or 'incoming'}", peer=pid.hex(), up=True)
        for pid in sorted(seen.keys() - now.keys()):
            gone = node.peers.get(pid)
            out("peer", f"session down {short_id(pid)} "
                f"({gone.last_error if gone and gone.last_error else 'closed'})",
                peer=pid.hex(), up=False)
        seen = now
        await node.peers.changed()


@task("node", restart=True)
async def _notices(node: Node, out: _Out) -> None:
    while True:
        n = await node.notices()
        where = n.channel.hex()[:8] if n.channel else f"{n.scope} {n.subject[:16]}"
        out("notice", f"{where}: {n.error.code}: {n.error.message}",
            channel=n.channel.hex(), code=n.error.code, scope=n.scope, subject=n.subject)


@task("node")
async def _commands(node: Node, sup: Supervisor, out: _Out) -> None:
    while line := await stdin_line():
        parts = line.strip().split(maxsplit=2)
        if not parts:
            continue
        cmd = parts[0]
        try:
            if cmd == "quit":
                sup.nursery.cancel_scope.cancel()
                return
            if cmd == "peers":
                for p in node.health()["peers"]:
                    out("peers", f"{p['node_id'][:8]} {p['state']} lane={p['lane']} "
                        f"rtt={p['rtt_ms']}ms via={','.join(p['via'])} "
                        f"error={p['last_error']}", **p)
            elif cmd == "health":
                if out.as_json:
                    out("health", "", **node.health())
                else:
                    print(json.dumps(node.health(), indent=2), flush=True)
            elif cmd == "request" and len(parts) == 3:
                # request <need> <job text>: a toy job; waits for the result.
                ch, rid = await node.request_compute(parts[2].encode(), kind="5001",
                                                     needs=(parts[1],))
                out("request", f"job {rid} requested", rid=rid, channel=ch.hex())
                sup.spawn(_await_job, node, ch, rid, out, key=rid)
            elif cmd == "serve" and len(parts) == 2:
                # serve <tool>: advertise it, then offer on, accept and run (upper-case) jobs.
                sup.spawn(_serve_jobs, node, parts[1], out, key=parts[1])
            elif cmd == "auth":
                a = node.health()["auth"]
                out("auth", f"enabled={a['enabled']} token_expires={a['token_expires']} "
                    f"refused={a['refused']} refreshes={a['refreshes']} "
                    f"failures={a['refresh_failures']}", **a)
            elif cmd == "world":
                members = node.members()
                for m in members:
                    tools = ",".join(m.caps.tools) if m.caps else ""
                    out("member", f"{m.node_id.hex()[:8]} {m.state} "
                        f"{m.info.device if m.info else ''} tools={tools}",
                        node=m.node_id.hex(), state=m.state, reason=m.reason,
                        device=m.info.device if m.info else None, tools=tools)
                out("members", f"{len(members)} members", count=len(members))
            elif cmd == "channels":
                for c in node.health()["channels"]:
                    out("channel", f"{c['name']} {c['channel'][:8]} {c['role']} "
                        f"head={c['head_seq']}", **c)
            elif cmd == "open" and len(parts) >= 2:
                rec = await node.open_channel(parts[1])
                out("open", f"{rec.name} {rec.channel.hex()}", channel=rec.channel.hex())
            elif cmd == "private" and len(parts) == 3:
                keys = tuple(bytes.fromhex(k) for k in parts[2].split(","))
                rec = await node.open_channel(parts[1], private=True, participants=keys)
                out("open", f"{rec.name} {rec.channel.hex()} (private)",
                    channel=rec.channel.hex())
            elif cmd in ("add", "remove", "handoff") and len(parts) == 3:
                rec = await node.wait_channel(parts[1])
                key = bytes.fromhex(parts[2])
                if cmd == "add":
                    await node.add_participant(rec.channel, key)
                elif cmd == "remove":
                    await node.remove_participant(rec.channel, key)
                else:
                    await node.handoff(rec.channel, key)
                out(cmd, f"{rec.name}: {cmd} {parts[2][:8]} done", channel=rec.channel.hex())
            elif cmd == "close" and len(parts) == 2:
                rec = await node.wait_channel(parts[1])
                await node.close_channel(rec.channel)
                out("close", f"{rec.name} closed", channel=rec.channel.hex())
            elif cmd == "ack" and len(parts) == 3:
                rec = await node.wait_channel(parts[1])
                cp = await node.ack(rec.channel, int(parts[2]))
                out("ack", f"{rec.name} checkpoint {cp.seq if cp else None}",
                    channel=rec.channel.hex(), seq=cp.seq if cp else None)
            elif cmd == "send" and len(parts) == 3:
                await _send(node, parts[1], parts[2], out)  # commands run in order
            elif cmd == "follow" and len(parts) >= 2:
                sup.spawn(_follow, node, parts[1], out, key=parts[1])
            else:
                out("error", f"unknown command: {line.strip()}")
        except P2PWorldError as e:
            out("error", f"{e.code}: {e.message}", code=e.code)
        except ValueError as e:
            out("error", f"bad argument: {e}", code="BAD_ARGUMENT")


@task("request")
async def _await_job(node: Node, ch: bytes, rid: str, out: _Out) -> None:
    r = await node.wait_compute(ch, rid)
    out("job", f"job {rid}: {r.phase} by "
        f"{r.accepted_by.hex()[:8] if r.accepted_by else '-'}: {r.result!r}", rid=rid,
        phase=r.phase, assignee=r.accepted_by.hex() if r.accepted_by else None,
        result=r.result.decode(errors="replace"))


@task("request")
async def _serve_jobs(node: Node, tool: str, out: _Out) -> None:
    await node.advertise(CapabilityAd(tools=(tool,), job_kinds=("5001",),
                                      expires_ms=int(time.time() * 1000) + 3_600_000))
    out("serve", f"serving {tool} jobs", tool=tool)
    seen: set[str] = set()
    while True:
        for ch, r in node.eligible_compute():
            if r.rid in seen:
                continue
            seen.add(r.rid)
            try:
                await node.offer_compute(ch, r.rid)
                got = await node.wait_compute(ch, r.rid, lambda x: x.assignee is not None
                                              or x.terminal)
                if got.assignee == node.node_id:
                    await node.accept_compute(ch, r.rid)
                    await node.complete_compute(ch, r.rid, got.job.upper())
                    out("served", f"ran job {r.rid}", rid=r.rid)
            except P2PWorldError as e:
                out("error", f"job {r.rid}: {e.code}: {e.message}", code=e.code)
        await trio.sleep(0.2)


async def run(args: argparse.Namespace) -> int:
    cfg = NodeConfig(home=Path(args.home) if args.home else default_home(),
                     workspace=args.workspace, interfaces=args.interface or ["127.0.0.1"],
                     port=args.port, mdns=not args.no_mdns, peers=args.peer,
                     rendezvous=args.rendezvous, public_urls=args.public_url,
                     control=args.control, relays=args.relay, transport=args.transport)
    out = _Out(args.json)
    stop: trio.Event | None = getattr(args, "stop_requested", None)
    async with open_node(cfg) as node:
        async with trio.open_nursery() as nursery:
            # A failed command (a follow, a send, a job) ends that command with an error
            # line; only the command loop itself ends the process.
            sup = Supervisor(nursery, on_failure=lambda f: out(
                "error", f"{f.scope} {f.key}: {f.error.code}: {f.error.message}",
                code=f.error.code, scope=f.scope))
            out("up", f"node {node.node_id.hex()} workspace {cfg.workspace} at {node.url}",
                node=node.node_id.hex(), url=node.url, workspace=cfg.workspace)
            sup.spawn(_watch, node, out, key="peers")
            for name in args.open:
                rec = await node.open_channel(name)
                out("open", f"{name} {rec.channel.hex()}", channel=rec.channel.hex(),
                    name=name)
            for name in args.follow:
                sup.spawn(_follow, node, name, out, key=name)
            for name, text in args.send:
                sup.spawn(_send, node, name, text, out, key=name)
            sup.spawn(_commands, node, sup, out, key="stdin")
            sup.spawn(_notices, node, out, key="notices")
            if stop is None:
                return 0  # (run without signals: ends when its commands do)
            await stop.wait()  # Ctrl-C or SIGTERM: close cleanly, handing channels off
            nursery.cancel_scope.cancel()
        report = await node.close()
        out("closed", f"closed: {len(report.handed)} channel(s) handed off, "
            f"{len(report.not_handed)} not", handed={c.hex(): n.hex() for c, n in
                                                    report.handed.items()},
            not_handed={c.hex(): why for c, why in report.not_handed.items()})
    return 0


def main(args: argparse.Namespace) -> int:
    args.graceful = True  # the first signal closes the node (handing off), the second cancels
    return run_until_interrupted(run, args)
