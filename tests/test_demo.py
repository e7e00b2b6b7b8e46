"""The demo as a user runs it: real processes, mDNS on loopback only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT
from .relay import real_relay


def run_demo(*args: str, timeout: float = 120) -> tuple[int, dict]:  # type: ignore[type-arg]
    p = subprocess.run([sys.executable, "-m", "p2pworld.cli.main", "demo", "--json", *args],
                       capture_output=True, timeout=timeout, cwd=ROOT)
    return p.returncode, json.loads(p.stdout)


def test_demo_three_nodes_meet_and_deliver_everything_in_order(tmp_path: Path) -> None:
    with real_relay(tmp_path / "relay") as relay:
        rc, out = run_demo("--nodes", "3", "--messages", "100", "--relay", relay)
    assert rc == 0, out
    assert out["nodes"] == 3
    assert out["discovered"] == 6
    assert out["handshakes_ok"] == 3
    assert out["messages_sent"] == 100
    assert out["messages_delivered"] == 300
    assert out["in_order"] is True
    assert len({n["head_hash"] for n in out["per_node"]}) == 1
    # Presence and capability ads: every node saw every other's ad appear, update, expire.
    assert out["world_members"] == out["ads_seen"] == out["ads_updated"] == 6
    assert out["ads_expired"] == 6
    # A compute round: one request, exactly one winner, the other provider saw the conflict.
    assert (out["compute_rounds"], out["compute_winners"], out["compute_conflicts"]) == (1, 1, 1)
    # Zero infrastructure, but not an open world: an embedded authority minted the tokens.
    assert out["auth"].startswith("embedded control authority")
    assert out["seconds"] < 60
    # The mirror lane (--relay): every mirror published, none left, all traffic direct.
    assert out["relays"] == [relay]
    assert out["bridge_published"] >= 3 + 4 and out["bridge_pending"] == 0
    assert out["bridge_failed"] == 0 and out["fallback_ratio"] == 0.0


def test_demo_without_mdns_fails() -> None:
    rc, out = run_demo("--nodes", "2", "--messages", "5", "--no-mdns", "--timeout", "4")
    assert rc != 0
    assert out["discovered"] == 0 and out["handshakes_ok"] == 0 and out["in_order"] is False
