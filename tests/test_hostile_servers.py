"""The servers this package runs survive any single request (real processes, raw sockets).

Regression test for issue "Never crash, never lose an acknowledged write silently", A.2: on
e2c769c one unauthenticated POST whose body was 20,000 ``[`` ended the control service
(``RecursionError`` out of ``json.loads``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from p2pworld import NodeConfig, codec, open_node
from p2pworld.io.http import http_json
from p2pworld.io.session import close_websocket

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "p2pworld.cli.main"]


@contextmanager
def server(args: list[str]) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """A ``p2pworld`` server process; yields it and its ``up`` event. Stopped by pid."""
    proc = subprocess.Popen(CLI + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        up = json.loads(proc.stdout.readline())
        assert up["event"] == "up", up
        yield proc, up
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def raw_http(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh TCP connection; whatever comes back until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may close early (a body over the bound): fine
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


def post(path: str, body: bytes, port: int, extra: str = "") -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
            f"application/json\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n").encode()
    return raw_http(port, head + body)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


async def test_the_control_service_survives_hostile_requests(tmp_path: Path) -> None:
    with server(["control", "serve", "--listen", "127.0.0.1:0", "--home",
                 str(tmp_path / "ctl"), "--json"]) as (proc, up):
        url = up["url"]
        port = int(url.rsplit(":", 1)[1])
        hostile = [
            post("/v1/token", b"[" * 20_000, port),                    # deep nesting
            post("/v1/token", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, port),
            post("/v1/token", b"x" * (200 * 1024), port),              # over the body bound
            post("/v1/token", b"\xff\xfe\x00garbage", port),           # not UTF-8 / JSON
            post("/v1/token", b'{"node_key": {"x": [1]}, "at": "never", "sig": 7}', port),
            post("/v1/enroll", b'{"user": [[[[[]]]]]}', port,
                 "Authorization: Bearer " + "zz" * 32 + "\r\n"),
            raw_http(port, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(200)),
            raw_http(port, b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 100_000 + b"\r\n\r\n"),
            raw_http(port, b"GET /" + b"%" * 70_000 + b" HTTP/1.1\r\n\r\n"),
        ]
        assert status_of(hostile[0]) == 400 and b"BAD_JSON" in hostile[0]
        assert status_of(hostile[1]) == 400
        assert status_of(hostile[2]) == 413
        assert status_of(hostile[3]) == 400
        assert status_of(hostile[4]) == 400
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        # Still serving, for everyone: keys, and a token for a node proving its key.
        status, keys = await http_json(url, "GET", "/v1/keys")
        assert status == 200 and keys["keys"]
        # Wrong operator credentials are throttled per source (429), typed.
        codes = []
        for _ in range(7):
            status, out = await http_json(url, "POST", "/v1/revoke", {"node": "00" * 32},
                                          bearer="ab" * 32)
            codes.append(status)
        assert codes[:4] == [401] * 4 and 429 in codes[4:], codes
        operator = (tmp_path / "ctl" / "operator.token").read_text().strip()
        status, out = await http_json(url, "POST", "/v1/revoke", {"node": "00" * 32},
                                      bearer=operator)
        assert status == 429 and out["error"] == "TOO_MANY_ATTEMPTS"  # this source: locked
        assert proc.poll() is None


async def test_the_rendezvous_survives_hostile_frames(tmp_path: Path) -> None:
    with server(["rendezvous", "--listen", "127.0.0.1:0", "--json"]) as (proc, up):
        url = up["url"]
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        frames: list[bytes | str] = [
            "a text frame", b"", b"\x00" * 10, b"\x01" + b"\x81" * 40 + b"\x01",
            b"\x01" + b"\x9f" * 5000, codec.encode_frame({"t": "rv.reg", "sig": b"x" * 64}),
            codec.encode_frame({"t": "rv.relay", "to": b"\x00" * 32, "d": b"x" * 100}),
            os.urandom(60_000), b"\x01" + os.urandom(2 << 20),
        ]
        for f in frames:
            with trio.fail_after(20):
                # Our own stream (trio-websocket 0.12's client leaks it when the server
                # closes first), closed whatever happens.
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                try:
                    async with trio.open_nursery() as n:
                        ws = await trio_websocket.wrap_client_stream(
                            n, stream, "127.0.0.1", "/", max_message_size=4 << 20)
                        try:
                            await ws.get_message()  # the challenge
                            await ws.send_message(f)
                            with trio.move_on_after(2):
                                await ws.get_message()
                        except trio_websocket.ConnectionClosed:
                            pass
                        finally:
                            await close_websocket(ws)
                            n.cancel_scope.cancel()
                finally:
                    await trio.aclose_forcefully(stream)
            assert proc.poll() is None, f"rendezvous died on {f!r:.60}"
        for _ in range(3):
            raw_http(port, b"\x16\x03\x01" + os.urandom(300), timeout=5)
        # It still serves: two nodes meet through it and talk over a relayed session.
        cfg = {"workspace": "hostile-rv", "mdns": False, "rendezvous": [url],
               "public_urls": []}
        with trio.fail_after(60):
            async with open_node(NodeConfig(home=tmp_path / "a", **cfg)) as a, \
                    open_node(NodeConfig(home=tmp_path / "b", **cfg)) as b:
                chan = await a.open_channel("x")
                await b.wait_channel("x")
                while True:
                    try:
                        r = await b.publish(chan.channel, b"through", key=b"k", timeout=5)
                        break
                    except Exception:  # noqa: BLE001 - retried until the relay is up
                        await trio.sleep(0.2)
                assert r.seq == 1
        assert proc.poll() is None
