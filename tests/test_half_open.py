"""Connections that never finish a handshake cannot starve a node (a real process, real
sockets, a file-descriptor limit of 1,024).

Regression test for issue "Never crash, never lose an acknowledged write silently", A.3: on
e2c769c a node held every half-open connection for 60 s and accepted an 8 MiB message before
the handshake, so 2,000 connections from one attacker exhausted its files and no peer could
connect.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from p2pworld import NodeConfig, open_node
from p2pworld.io.session import close_websocket

ROOT = Path(__file__).resolve().parent.parent
HALF_OPEN = 2000


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@contextmanager
def node_process(home: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pworld.cli.main", "node", "--home", str(home),
         "--workspace", "halfopen", "--no-mdns", "--open", "x", "--json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=ROOT, start_new_session=True, preexec_fn=_limit_files)
    try:
        assert proc.stdout is not None
        while True:
            ev = json.loads(proc.stdout.readline())
            if ev["event"] == "up":
                up = ev
            if ev["event"] == "open":
                break
        yield proc, up
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()


def half_open(port: int, n: int) -> list[socket.socket]:
    """``n`` TCP connections from many loopback source addresses, each left before its
    handshake: silent, an unfinished HTTP request, or junk."""
    rng = random.Random(7)
    out = []
    for i in range(n):
        s = socket.socket()
        s.bind((f"127.{rng.randrange(1, 255)}.{rng.randrange(0, 255)}.{rng.randrange(1, 255)}",
                0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        out.append(s)
        if i % 3 == 1:
            _try_send(s, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        elif i % 3 == 2:
            _try_send(s, os.urandom(64))
    return out


def _try_send(s: socket.socket, data: bytes) -> None:
    try:
        s.send(data)
    except OSError:
        pass


async def test_thousands_of_half_open_connections_do_not_starve_a_peer(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 8192), max(hard, 8192)))
    socks: list[socket.socket] = []
    try:
        with node_process(tmp_path / "victim") as (proc, up), trio.fail_after(120):
            port = int(up["url"].rstrip("/").rsplit(":", 1)[1])
            socks = half_open(port, HALF_OPEN)
            # Junk is closed within a second (not held for a minute); the bound is generous
            # for a loaded machine (2.5 s was seen with the simulations running beside).
            probe = socket.create_connection(("127.0.0.1", port))
            probe.sendall(b"\x16\x03\x01 not a websocket client\r\n\r\n")
            probe.settimeout(30)
            t0 = time.monotonic()
            try:
                data = probe.recv(1024)
            except ConnectionResetError:
                data = b""
            closed_after = time.monotonic() - t0
            assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
            probe.close()
            assert closed_after < 10.0, closed_after
            # A legitimate peer still connects and publishes, with the half-open ones held.
            async with open_node(NodeConfig(home=tmp_path / "peer", workspace="halfopen",
                                            mdns=False, peers=[up["url"]])) as peer:
                rec = await peer.wait_channel("x")
                r = await peer.publish(rec.channel, b"through", timeout=30)
                assert r.seq == 1
            assert proc.poll() is None
    finally:
        for s in socks:
            s.close()


async def test_a_message_before_the_handshake_is_bounded_to_handshake_size(
        tmp_path: Path) -> None:
    with node_process(tmp_path / "victim") as (proc, up), trio.fail_after(60):
        port = int(up["url"].rstrip("/").rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            async with trio.open_nursery() as n:
                ws = await trio_websocket.wrap_client_stream(n, stream, "127.0.0.1", "/",
                                                             max_message_size=1 << 20)
                try:
                    await ws.send_message(bytes(8 << 20))  # 8 MiB instead of a handshake
                    with trio.fail_after(10):
                        await ws.get_message()
                    raise AssertionError("the node answered an 8 MiB pre-handshake message")
                except trio_websocket.ConnectionClosed as e:
                    assert e.reason.code in (1009, 1006, 1000, 1011), e.reason
                finally:
                    await close_websocket(ws)
                    n.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)
        assert proc.poll() is None


async def test_a_connection_reset_right_after_its_upgrade_ends_typed_not_as_a_bug(
        tmp_path: Path) -> None:
    """Found by an adversarial run (a node resumed from SIGSTOP whose peers had given up):
    a connection that sends its websocket upgrade and resets at once made the session's
    ``getpeername`` raise a bare OSError, reported as INTERNAL_ERROR (a bug) in about one
    try of eight. It is the peer leaving: SESSION_CLOSED, counted, no notice."""
    import base64
    import struct

    def reset_after_upgrade(port: int) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # an RST, not a FIN

    async with open_node(NodeConfig(home=tmp_path / "a", mdns=False, workspace="rst")) as a:
        for i in range(200):
            await trio.to_thread.run_sync(reset_after_upgrade, a.listen_port)
            if i % 20 == 0:
                await trio.sleep(0.01)
        with trio.move_on_after(1.0):
            while a.health()["errors"].get("SESSION_CLOSED", 0) < 5:
                await trio.sleep(0.05)
        errors = a.health()["errors"]
        assert "INTERNAL_ERROR" not in errors, errors
        with trio.move_on_after(0.3):
            notice = await a.notices()
            raise AssertionError(f"a notice for a peer that left: {notice}")
        # Still serving.
        ch = (await a.open_channel("general")).channel
        assert (await a.publish(ch, b"still here")).seq == 1
