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
