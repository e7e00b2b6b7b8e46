"""What had not been tried yet (issue "Never crash, never lose an acknowledged write
silently", A.4): a publish with an expired token, and presence forged between real
processes. Both already held on e2c769c; these tests keep them holding."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pworld import NodeConfig, P2PWorldError, open_node
from p2pworld.auth.book import AuthConfig
from p2pworld.identity import NodeIdentity
from p2pworld.io.session import open_session
from p2pworld.transport.handshake import HandshakeConfig
from p2pworld.wire import WorldPush
from p2pworld.world.records import HEARTBEAT_DOMAIN, Heartbeat

from .test_scope_failures import LEEWAY, Control, control_core, long_token

ROOT = Path(__file__).resolve().parent.parent


async def test_a_publish_with_an_expired_token_is_refused_typed(tmp_path: Path) -> None:
    """This node's own token expired (the control service is down): its publishes are
    refused with TOKEN_EXPIRED before anything is written or sent; the node goes on, and a
    peer whose token is good still writes."""
    core = control_core(ttl_s=6)
    keys = core.state.public_keys()
    with trio.fail_after(40):
        async with trio.open_nursery() as n:
            ctl = Control(core)
            await ctl.start(n)
            auth = AuthConfig(keys=dict(keys), leeway_s=LEEWAY)
            peer_id = NodeIdentity.from_seeds(bytes([9]) * 32, bytes([109]) * 32,
                                              created_at=int(time.time()))
            (tmp_path / "b").mkdir()
            async with open_node(NodeConfig(home=tmp_path / "b", workspace="exp", mdns=False,
                                            auth=auth, token=long_token(peer_id)),
                                 identity=peer_id) as b:
                chan = await b.open_channel("x")
                async with open_node(NodeConfig(home=tmp_path / "a", workspace="exp",
                                                mdns=False, control=ctl.url, peers=[b.url],
                                                auth=AuthConfig(keys=dict(keys),
                                                                leeway_s=LEEWAY))) as a:
                    await _bounded(a.wait_channel("x"), 20)
                    own = await a.open_channel("mine")
                    await ctl.stop()
                    assert a.token_expires is not None
                    while time.time() < a.token_expires + LEEWAY + 0.5:
                        await trio.sleep(0.2)
                    for target in (own.channel, chan.channel):
                        with pytest.raises(P2PWorldError) as got:
                            await a.publish(target, b"late", timeout=10)
                        assert got.value.code == "TOKEN_EXPIRED", got.value
                    assert a._hub.outbox == {}  # nothing queued for later
                    r = await b.publish(chan.channel, b"fine")
                    assert r.seq == 1 and a.health()["node_id"]
            n.cancel_scope.cancel()


def _node(home: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "p2pworld.cli.main", "node", "--home", str(home),
         "--workspace", "forge", "--no-mdns", "--json", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=ROOT, start_new_session=True)


_PENDING: dict[int, bytes] = {}
"""Bytes read from a node process's stdout past the last whole line, by pid."""


def _until_event(proc: subprocess.Popen[str], pred: Any, timeout: float = 60) -> dict[str, Any]:
    """The next JSON event of ``proc`` that ``pred`` accepts, within ``timeout`` seconds
    (a bounded read from the raw pipe: a missing event fails the test instead of hanging
    it, and no line waits unseen in a buffer ``select`` cannot see)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while True:
        buf = _PENDING.get(proc.pid, b"")
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            _PENDING[proc.pid] = buf
            ev = json.loads(line)
            if pred(ev):
                return dict(ev)
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert r, f"no matching event within {timeout} s"
        chunk = os.read(fd, 65536)
        assert chunk, "the node process ended"
        _PENDING[proc.pid] = buf + chunk


def _members(proc: subprocess.Popen[str]) -> dict[str, dict[str, Any]]:
    """``world`` on a node process: its members by node id."""
    assert proc.stdin is not None
    proc.stdin.write("world\n")
    proc.stdin.flush()
    got: dict[str, dict[str, Any]] = {}
    while True:
        ev = _until_event(proc, lambda e: e["event"] in ("member", "members"))
        if ev["event"] == "members":
            return got
        got[ev["node"]] = ev


def _stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=15)
        for f in (p.stdin, p.stdout):
            if f is not None:
                f.close()


async def test_presence_forged_by_another_process_is_refused(tmp_path: Path) -> None:
    """Two node processes; a third party with its own key connects to one of them and pushes
    heartbeats claiming to be the other (gone offline, busy): refused as forged, counted, and
    the real node still shows online."""
    from p2pworld import codec
    from p2pworld.io.home import NodeHome

    b = _node(tmp_path / "b")
    procs = [b]
    try:
        up_b = _until_event(b, lambda e: e["event"] == "up")
        a = _node(tmp_path / "a", "--peer", up_b["url"])
        procs.append(a)
        up_a = _until_event(a, lambda e: e["event"] == "up")
        _until_event(b, lambda e: e["event"] == "peer" and e.get("up"))
        assert b.stdin is not None
        with trio.fail_after(60):
            # Until b has a's document and heartbeat.
            while _members(b).get(up_a["node"], {}).get("state") != "online":
                await trio.sleep(0.2)
        victim_key = NodeHome(tmp_path / "a").load().public_key  # what b learned in a's handshake
        attacker = NodeIdentity.from_seeds(bytes([42]) * 32, bytes([142]) * 32,
                                           created_at=int(time.time()))
        forged = []
        for status, nth in (("offline", 10**9), ("busy", 10**9 + 1)):
            hb = Heartbeat(author=victim_key, inc=10**6, n=nth,
                           time_ms=int(time.time() * 1000), status=status)
            sig = attacker.signer.sign(codec.tagged(HEARTBEAT_DOMAIN, hb.body()))
            forged.append(codec.encode({**hb.body(), "sig": sig}))
        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                s = await open_session(n, up_b["url"], HandshakeConfig(
                    identity=attacker, workspace="forge"), timeout=10)
                n.start_soon(s.run, lambda m: None)
                s.send_nowait(WorldPush(heartbeats=tuple(forged), tree=True))
                await s.flush()
                await trio.sleep(1.0)
                await s.aclose()
                n.cancel_scope.cancel()
        b.stdin.write("health\n")
        b.stdin.flush()
        health = _until_event(b, lambda e: e["event"] == "health")
        refused = health["world"]["refused"]
        assert refused.get("FORGED_UPDATE", 0) >= 2, refused
        m = _members(b)[up_a["node"]]
        assert m["state"] == "online" and m["reason"] != "explicit_offline"
    finally:
        _stop(*procs)


async def _bounded(aw, seconds: float):  # type: ignore[no-untyped-def]
    """Await ``aw`` within ``seconds`` (the API as it was had no ``timeout=``)."""
    with trio.fail_after(seconds):
        return await aw
