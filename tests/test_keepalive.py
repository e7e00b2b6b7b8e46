"""The keepalive is the node core's (:class:`~p2pworld.transport.peering.Keepalive`, issue 15
M3): a peer process that stops answering (SIGSTOP: its sockets stay open, nothing arrives)
has its session ended with ``KEEPALIVE_TIMEOUT`` after three intervals, and is back once it
runs again. Real processes on loopback; the simulator runs the same core (the partition
scenario's silent partitions)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import trio

from p2pworld import NodeConfig, open_node

ROOT = Path(__file__).resolve().parent.parent


async def test_a_stopped_peer_process_is_dropped_by_keepalive_and_rejoins(
        tmp_path: Path) -> None:
    cfg = NodeConfig(home=tmp_path / "a", workspace="alive", mdns=False, keepalive=0.5)
    async with open_node(cfg) as a:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2pworld.cli.main", "node", "--home", str(tmp_path / "b"),
             "--workspace", "alive", "--no-mdns", "--json", "--peer", a.url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, cwd=ROOT)
        try:
            assert proc.stdout is not None
            assert json.loads(proc.stdout.readline())["event"] == "up"
            with trio.fail_after(60):
                await a.wait_peers(1)
                while a.health()["peers"][0]["rtt_ms"] is None:  # a ping answered
                    await trio.sleep(0.05)
                proc.send_signal(signal.SIGSTOP)
                stopped = trio.current_time()
                while a._sessions:
                    await trio.sleep(0.05)
                silent_for = trio.current_time() - stopped
            assert a.health()["errors"].get("KEEPALIVE_TIMEOUT", 0) >= 1
            # Not before three intervals without a frame (1.5 s here).
            assert silent_for >= 1.0, silent_for
            proc.send_signal(signal.SIGCONT)
            with trio.fail_after(60):
                while not a._sessions:
                    await trio.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    f.close()
