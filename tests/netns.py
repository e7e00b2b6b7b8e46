"""Network namespaces for integration tests: created, used and always deleted by the test.

Two namespaces joined by a veth pair (10.77.0.1 <-> 10.77.0.2). Names carry the test
process's pid so parallel runs cannot collide. Fails (never skips) when it cannot create them.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@dataclass
class NetnsPair:
    a: str
    b: str
    ip_a: str = "10.77.0.1"
    ip_b: str = "10.77.0.2"

    def spawn(self, ns: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": ROOT}
        return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=ROOT, env=env)


@contextmanager
def netns_pair() -> Iterator[NetnsPair]:
    pid = os.getpid()
    pair = NetnsPair(f"pw{pid}a", f"pw{pid}b")
    va, vb = f"pw{pid}va", f"pw{pid}vb"
    try:
        sh("ip", "netns", "add", pair.a)
        sh("ip", "netns", "add", pair.b)
        sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        sh("ip", "link", "set", va, "netns", pair.a)
        sh("ip", "link", "set", vb, "netns", pair.b)
        sh("ip", "-n", pair.a, "addr", "add", f"{pair.ip_a}/24", "dev", va)
        sh("ip", "-n", pair.b, "addr", "add", f"{pair.ip_b}/24", "dev", vb)
        for ns, dev in ((pair.a, va), (pair.b, vb)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield pair
    finally:
        for ns in (pair.a, pair.b):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)


@dataclass
class Subnets:
    """A rendezvous host ``r`` with one subnet to each leaf host; no routes between leaves
    (and ``r`` does not forward), so leaves reach each other only through ``r``'s services."""

    r: str
    leaves: list[str]
    r_ips: list[str]
    leaf_ips: list[str]

    def spawn(self, ns: str, *args: str) -> subprocess.Popen[bytes]:
        return NetnsPair(ns, ns).spawn(ns, *args)


@contextmanager
def netns_subnets(leaves: int = 2) -> Iterator[Subnets]:
    pid = os.getpid()
    net = Subnets(f"pw{pid}r", [f"pw{pid}l{i}" for i in range(leaves)],
                  [f"10.78.{i + 1}.1" for i in range(leaves)],
                  [f"10.78.{i + 1}.2" for i in range(leaves)])
    try:
        sh("ip", "netns", "add", net.r)
        sh("ip", "-n", net.r, "link", "set", "lo", "up")
        sh("ip", "netns", "exec", net.r, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        for i, leaf in enumerate(net.leaves):
            vr, vl = f"pw{pid}r{i}", f"pw{pid}v{i}"
            sh("ip", "netns", "add", leaf)
            sh("ip", "link", "add", vr, "type", "veth", "peer", "name", vl)
            sh("ip", "link", "set", vr, "netns", net.r)
            sh("ip", "link", "set", vl, "netns", leaf)
            sh("ip", "-n", net.r, "addr", "add", f"{net.r_ips[i]}/24", "dev", vr)
            sh("ip", "-n", leaf, "addr", "add", f"{net.leaf_ips[i]}/24", "dev", vl)
            sh("ip", "-n", net.r, "link", "set", vr, "up")
            sh("ip", "-n", leaf, "link", "set", "lo", "up")
            sh("ip", "-n", leaf, "link", "set", vl, "up")
        yield net
    finally:
        for ns in (net.r, *net.leaves):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)


def read_event(proc: subprocess.Popen[bytes], kind: str, timeout: float) -> dict[str, Any]:
    """Read JSON lines from ``proc`` until one has ``event == kind``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == kind:
                return ev
    err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.poll() is not None \
        and proc.stderr else ""
    raise AssertionError(f"no {kind!r} event within {timeout} s (exit {proc.poll()}): {err}")


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.stdin and not p.stdin.closed:
            try:
                p.stdin.close()
            except OSError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        for f in (p.stdout, p.stderr):
            if f:
                f.close()
