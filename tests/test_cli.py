"""The command line: identity creation, import, and refusal of a corrupt home."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, VECTORS


def p2pworld(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pworld.cli.main", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_id_creates_imports_and_refuses_corruption(tmp_path: Path) -> None:
    v = json.loads((VECTORS / "nip06.json").read_text())["vectors"][0]
    r = p2pworld("id", "--home", str(tmp_path / "h"), "--import-mnemonic", v["mnemonic"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["npub"] == v["npub"] and out["nostr_pubkey"] == v["public_key_hex"]
    again = json.loads(p2pworld("id", "--home", str(tmp_path / "h")).stdout)
    assert again["node_id"] == out["node_id"]
    (tmp_path / "h" / "node.key").write_bytes(b"\x01junk")
    bad = p2pworld("id", "--home", str(tmp_path / "h"))
    assert bad.returncode == 1 and "IDENTITY_ERROR" in bad.stderr


def test_node_command_opens_publishes_checkpoints_and_closes(tmp_path: Path) -> None:
    script = "open c1\nsend c1 hello\nclose c1\nsend c1 again\nquit\n"
    p = subprocess.run([sys.executable, "-m", "p2pworld.cli.main", "node", "--home",
                        str(tmp_path / "n"), "--no-mdns", "--json"], input=script,
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    events = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "up" and "open" in kinds and "close" in kinds
    acks = [e for e in events if e["event"] == "ack" and e.get("status")]
    errors = [e for e in events if e["event"] == "error"]
    # Commands run in order: the first send is acknowledged at seq 1 (fsynced: "local"),
    # the close is seq 2, and the send after it is refused with a typed error.
    assert [(a["seq"], a["strength"]) for a in acks] == [(1, "local")]
    assert [e["code"] for e in errors] == ["CHANNEL_CLOSED"]


def test_control_service_and_a_node_that_uses_it_from_the_cli(tmp_path: Path) -> None:
    """`p2pworld control serve` runs the service; an enrolled node (and only it) gets a token;
    `p2pworld node --control` checks every mutation against it."""
    import trio

    from p2pworld.auth.control import token_request
    from p2pworld.io.home import NodeHome
    from p2pworld.io.http import http_json

    ctl = subprocess.Popen([sys.executable, "-m", "p2pworld.cli.main", "control", "serve",
                            "--home", str(tmp_path / "ctl"), "--listen", "127.0.0.1:0",
                            "--json"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert ctl.stdout is not None and ctl.stdin is not None
        up = json.loads(ctl.stdout.readline())
        assert up["created"] and Path(up["operator_token_file"]).stat().st_mode & 0o077 == 0
        op = Path(up["operator_token_file"]).read_text().strip()
        ident = NodeHome(tmp_path / "n").load_or_create()

        async def enrol() -> tuple[int, int]:
            before, _ = await http_json(up["url"], "POST", "/v1/token",
                                        token_request(ident.signer, at=_now()))
            await http_json(up["url"], "POST", "/v1/enroll", {
                "user": "ana", "device": "cli", "node_key": ident.public_key.hex(),
                "nostr": ident.nostr.public.hex(),
                "scopes": ["world:join", "channel:open", "channel:publish:*"]}, bearer=op)
            after, _ = await http_json(up["url"], "POST", "/v1/token",
                                       token_request(ident.signer, at=_now()))
            return before, after

        assert trio.run(enrol) == (403, 200)
        script = "open c1\nsend c1 hello\nauth\nquit\n"
        p = subprocess.run([sys.executable, "-m", "p2pworld.cli.main", "node", "--home",
                            str(tmp_path / "n"), "--no-mdns", "--json", "--control",
                            up["url"]], input=script, capture_output=True, text=True,
                           timeout=60, cwd=ROOT)
        assert p.returncode == 0, p.stderr
        events = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
        assert [e["seq"] for e in events if e["event"] == "ack" and e.get("status")] == [1]
        (auth,) = [e for e in events if e["event"] == "auth"]
        assert auth["enabled"] and auth["token_expires"]
        ctl.stdin.write("quit\n")
        ctl.stdin.flush()
        assert ctl.wait(timeout=10) == 0
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()
        for f in (ctl.stdin, ctl.stdout, ctl.stderr):
            if f is not None:
                f.close()


def _now() -> int:
    import time
    return int(time.time())


def test_node_command_requests_and_serves_a_toy_job(tmp_path: Path) -> None:
    from .netns import read_event, stop

    def node(name: str, *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "p2pworld.cli.main", "node", "--home",
                                 str(tmp_path / name), "--no-mdns", "--json", *extra],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=ROOT)

    provider = node("p")
    requester = None
    try:
        up = read_event(provider, "up", 30)
        assert provider.stdin is not None
        provider.stdin.write(b"serve echo\n")
        provider.stdin.flush()
        read_event(provider, "serve", 30)
        requester = node("r", "--peer", up["url"])
        read_event(requester, "up", 30)
        assert requester.stdin is not None
        # No need to wait for the session: the request is on the requester's own channel,
        # and the provider offers once it learns of it.
        requester.stdin.write(b"request echo hello\n")
        requester.stdin.flush()
        job = read_event(requester, "job", 45)
        assert (job["phase"], job["result"]) == ("success", "HELLO")
        assert job["assignee"] == up["node"]
    finally:
        for p in (provider, requester):
            if p is not None and p.stdin is not None and not p.stdin.closed:
                p.stdin.write(b"quit\n")
                p.stdin.flush()
        stop(*[p for p in (provider, requester) if p is not None])
