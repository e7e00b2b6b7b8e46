"""Two hosts (network namespaces on a veth pair): real mDNS, real sessions, hostile peers."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import NetnsPair, netns_pair, read_event, stop

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def hosts() -> Iterator[NetnsPair]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("network namespace tests need root and iproute2 (ip)")
    with netns_pair() as pair:
        yield pair


def test_two_hosts_discover_each_other_and_exchange_100_messages(
        hosts: NetnsPair, tmp_path: Path) -> None:
    ws = "lab"
    common = ["--nodes", "2", "--messages", "100", "--workspace", ws, "--timeout", "40"]
    a = hosts.spawn(hosts.a, "-m", "p2pworld.cli.main", "demo-node", "--index", "0",
                    "--home", str(tmp_path / "a"), "--interface", hosts.ip_a, *common)
    b = hosts.spawn(hosts.b, "-m", "p2pworld.cli.main", "demo-node", "--index", "1",
                    "--home", str(tmp_path / "b"), "--interface", hosts.ip_b, *common)
    # A node of another workspace on the same link: seen by mDNS, never joined.
    other = hosts.spawn(hosts.b, "-m", "p2pworld.cli.main", "node", "--workspace", "elsewhere",
                        "--home", str(tmp_path / "o"), "--interface", hosts.ip_b, "--json")
    try:
        up_o = read_event(other, "up", 30)
        ra = read_event(a, "result", 60)
        rb = read_event(b, "result", 60)
        for r, peer in ((ra, rb), (rb, ra)):
            assert r["status"] == "ok"
            assert r["in_order"] and r["delivered"] == 100
            assert peer["node"] in r["discovered_mdns"]
            assert r["sessions"] == [peer["node"]]
            assert up_o["node"] not in r["sessions"]
        assert ra["head_hash"] == rb["head_hash"]
        other.stdin.write(b"health\n")  # type: ignore[union-attr]
        other.stdin.flush()  # type: ignore[union-attr]
        health = read_event(other, "health", 10)
        assert health["peers"] == [] or all(p["state"] != "connected" for p in health["peers"])
    finally:
        stop(a, b, other)


def test_a_node_claiming_another_id_is_refused(hosts: NetnsPair, tmp_path: Path) -> None:
    claimed = "ff" * 32  # the honest node (lower id) dials it at once
    imp = hosts.spawn(hosts.a, "-m", "tests.tools.impostor", "--interface", hosts.ip_a,
                      "--workspace", "lab2", "--home", str(tmp_path / "imp"), "--claim", claimed)
    honest = hosts.spawn(hosts.b, "-m", "p2pworld.cli.main", "node", "--workspace", "lab2",
                         "--home", str(tmp_path / "h"), "--interface", hosts.ip_b, "--json")
    try:
        ready = read_event(imp, "ready", 30)
        read_event(honest, "up", 30)
        # The honest node is another process in another namespace: ask it, a bounded number
        # of times, until its dial of the impostor has failed.
        deadline = time.monotonic() + 30
        while True:
            honest.stdin.write(b"health\n")  # type: ignore[union-attr]
            honest.stdin.flush()  # type: ignore[union-attr]
            h = read_event(honest, "health", 10)
            if h["errors"].get("PEER_IDENTITY_MISMATCH"):
                break
            assert time.monotonic() < deadline, f"impostor never refused: {h}"
            time.sleep(0.5)
        connected = [p["node_id"] for p in h["peers"] if p["state"] == "connected"]
        assert connected == []
        assert ready["real_id"] not in connected and claimed not in connected
        (claim,) = [p for p in h["peers"] if p["node_id"] == claimed]
        assert claim["last_error"] == "PEER_IDENTITY_MISMATCH"
    finally:
        stop(imp, honest)


def test_two_subnets_meet_only_through_a_rendezvous(tmp_path: Path) -> None:
    from .netns import netns_subnets

    with netns_subnets(2) as net:
        rv = net.spawn(net.r, "-m", "p2pworld.cli.main", "rendezvous", "--listen",
                       "0.0.0.0:7700", "--json")
        procs = [rv]
        try:
            read_event(rv, "up", 30)
            common = ["--nodes", "2", "--messages", "50", "--workspace", "subnets",
                      "--timeout", "40", "--no-mdns"]
            for i, leaf in enumerate(net.leaves):
                procs.append(net.spawn(
                    leaf, "-m", "p2pworld.cli.main", "demo-node", "--index", str(i),
                    "--home", str(tmp_path / f"n{i}"), "--interface", net.leaf_ips[i],
                    "--rendezvous", f"ws://{net.r_ips[i]}:7700/", *common))
            ra = read_event(procs[1], "result", 90)
            rb = read_event(procs[2], "result", 90)
            for r, peer in ((ra, rb), (rb, ra)):
                assert r["status"] == "ok", r
                assert r["sessions"] == [peer["node"]]
                assert r["in_order"] and r["delivered"] == 50
                assert r["world_members"] == r["ads_seen"] == r["ads_updated"] == 1
                (p,) = r["health"]["peers"]
                # The direct URL was published and tried: no route, so the session is relayed.
                assert p["lane"] == "relay" and "rendezvous" in p["via"]
            assert ra["head_hash"] == rb["head_hash"]
            rv.stdin.write(b"stats\n")  # type: ignore[union-attr]
            rv.stdin.flush()  # type: ignore[union-attr]
            stats = read_event(rv, "stats", 10)
            assert stats["registered"] == 2 and stats["relayed_frames"] > 50
        finally:
            if rv.stdin:
                try:
                    rv.stdin.write(b"quit\n")
                    rv.stdin.flush()
                except OSError:
                    pass
            stop(*procs)
