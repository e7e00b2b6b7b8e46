"""Channel benchmark: p2pworld against Redis streams and NATS JetStream, in one run.

    python -m benchmarks.channel --json            (``make bench`` installs the peers)

Workload (the same for all three): one channel/stream, 200-byte payloads, one writer process,
two subscriber processes, all on 127.0.0.1. Phases: acked publishes with 1 in flight, with
100 in flight, then publish->deliver latency at 1,000 msgs/s offered load. Library defaults
stay on for p2pworld (fsync per commit, writer signatures, sequencer head signatures,
verification at subscribers, encrypted sessions); Redis runs with ``appendfsync always`` and
NATS JetStream with file storage and ``sync_interval: always``. Servers are started here on
loopback and stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    def __init__(self, *args: str, cwd: Path = ROOT) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "benchmarks._workers", *args],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, cwd=cwd)

    def read(self, event: str, timeout: float = 120) -> dict[str, Any]:
        assert self.p.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                err = self.p.stderr.read().decode()[-3000:] if self.p.stderr else ""
                raise RuntimeError(f"worker exited waiting for {event}: {err}")
            ev = json.loads(line)
            if ev.get("event") == event:
                return ev
        raise TimeoutError(event)

    def stop(self) -> None:
        if self.p.stdin and not self.p.stdin.closed:
            self.p.stdin.close()
        try:
            self.p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def free_port() -> int:
    # Only for servers that cannot bind port 0 and report it (redis-server, nats-server);
    # a collision makes the start fail and is retried.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_workload(name: str, pub: Proc, subs: list[Proc], plan: str,
                 total: int, others: dict[str, int] | None = None) -> dict[str, Any]:
    """Run ``plan``; ``others`` names further processes (by pid) whose CPU is reported."""
    others = others or {}
    for p in [pub, *subs]:
        p.read("ready")
    # CPU is counted from here (every process started and connected) to the last delivery,
    # so start-up (imports, key derivation) is not charged to the messages.
    pids = [pub.p.pid, *(x.p.pid for x in subs), *others.values()]
    cpu0 = [proc_cpu_s(pid) for pid in pids]
    phases = {}
    for _ in plan.split(","):
        ev = pub.read("phase", timeout=600)
        phases[ev["name"]] = ev
    pub_done = pub.read("pub_done")
    lat: list[float] = []
    for s in subs:
        ev = s.read("sub_done", timeout=600)
        lat += ev["lat_ms"]
    cpu = [proc_cpu_s(pid) - c0 for pid, c0 in zip(pids, cpu0, strict=True)]
    lat.sort()
    return {
        "acked_msgs_per_s_window1": phases["window1"]["count"] / phases["window1"]["seconds"],
        "acked_msgs_per_s": phases["window100"]["count"] / phases["window100"]["seconds"],
        "p50_ms": statistics.median(lat) if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] if lat else None,
        "cpu_us_per_msg": {"writer": cpu[0] / total * 1e6,
                           "subscribers": [c / total * 1e6 for c in cpu[1: 1 + len(subs)]],
                           **{k: c / total * 1e6
                              for k, c in zip(others, cpu[1 + len(subs):], strict=True)}},
        **({"writer_signatures": pub_done["signing"]} if "signing" in pub_done else {}),
    }


def bench_p2pworld(plan: str, total: int, tmp: Path) -> dict[str, Any]:
    seq = Proc("p2p-seq", str(tmp / "seq"))
    ready = seq.read("ready", timeout=60)
    url = ready["url"]
    subs = [Proc("p2p-sub", str(tmp / f"sub{i}"), url, str(total)) for i in range(2)]
    pub = Proc("p2p-pub", str(tmp / "pub"), url, plan)
    try:
        res = run_workload("p2pworld", pub, subs, plan, total, others={"sequencer": seq.p.pid})
        # Replay recovery: a fresh subscriber catches up the whole backlog from the sequencer
        # (verifying every writer signature and the chain), timed from its "ready".
        late = Proc("p2p-sub", str(tmp / "late"), url, str(total))
        try:
            late.read("ready", timeout=60)
            t0 = time.perf_counter()
            late.read("sub_done", timeout=600)
            res["catchup_entries"] = total
            res["catchup_s"] = time.perf_counter() - t0
        finally:
            late.stop()
    finally:
        for p in [pub, *subs]:
            p.stop()
        seq.stop()
    assert seq.p.stdout is not None
    tail = [json.loads(x) for x in seq.p.stdout.read().splitlines() if x.strip()]
    done = [e for e in tail if e.get("event") == "seq_done"]
    if done:
        res["head"] = done[0]["head"]
    return res


def start_server(command: Any) -> tuple[subprocess.Popen[bytes], int] | None:
    """Start a server that cannot report a port-0 bind: ``command(port)`` gives its argv."""
    for _ in range(5):
        port = free_port()
        srv = subprocess.Popen(command(port), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        if _wait_port(port, srv):
            return srv, port
    return None


def bench_peer(kind: str, started: tuple[subprocess.Popen[bytes], int] | None, plan: str,
               total: int, setup: Any = None) -> dict[str, Any] | None:
    if started is None:
        return None
    srv, port = started
    try:
        if setup is not None:
            setup(port)
        subs = [Proc(f"{kind}-sub", str(port), str(total), f"c{i}") for i in range(2)]
        pub = Proc(f"{kind}-pub", str(port), plan)
        try:
            return run_workload(kind, pub, subs, plan, total, others={"server": srv.pid})
        finally:
            for p in [pub, *subs]:
                p.stop()
    finally:
        srv.terminate()
        srv.wait(timeout=10)


def bench_redis(plan: str, total: int, tmp: Path) -> dict[str, Any] | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    started = start_server(lambda port: [
        exe, "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
        "--appendfsync", "always", "--save", "", "--dir", str(tmp)])
    return bench_peer("redis", started, plan, total)


def bench_nats(plan: str, total: int, tmp: Path) -> dict[str, Any] | None:
    exe = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not Path(exe).exists():
        return None
    conf = tmp / "nats.conf"

    def command(port: int) -> list[str]:
        conf.write_text(f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {tmp / 'js'}, "
                        "sync_interval: always }\n")
        return [exe, "-c", str(conf)]

    def setup(port: int) -> None:
        subprocess.run([sys.executable, "-c", _NATS_SETUP, str(port)], check=True, timeout=30)

    return bench_peer("nats", start_server(command), plan, total, setup)


_NATS_SETUP = """
import asyncio, sys, nats
from nats.js.api import StreamConfig, StorageType, ConsumerConfig, AckPolicy
async def main(port):
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="BENCH", subjects=["bench"], storage=StorageType.FILE))
    for name in ("c0", "c1"):
        await js.add_consumer("BENCH", ConsumerConfig(durable_name=name, ack_policy=AckPolicy.ALL))
    await nc.close()
asyncio.run(main(int(sys.argv[1])))
"""


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    proc.kill()
    return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--window1", type=int, default=1000)
    ap.add_argument("--window100", type=int, default=20000)
    ap.add_argument("--rate-seconds", type=int, default=5)
    ap.add_argument("--only", choices=["p2pworld", "redis", "nats"], default=None)
    args = ap.parse_args()
    plan = f"window1:{args.window1},window100:{args.window100},rate1000:{args.rate_seconds}"
    total = args.window1 + args.window100 + 1000 * args.rate_seconds
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="p2pw-bench-") as tmp:
        t = Path(tmp)
        for name, fn in (("p2pworld", bench_p2pworld), ("redis", bench_redis),
                         ("nats", bench_nats)):
            if args.only and args.only != name:
                continue
            d = t / name
            d.mkdir()
            results[name] = fn(plan, total, d)
    p = results.get("p2pworld") or {}
    r, n = results.get("redis"), results.get("nats")
    out = {
        "acked_msgs_per_s": p.get("acked_msgs_per_s"),
        "acked_msgs_per_s_window1": p.get("acked_msgs_per_s_window1"),
        "p50_ms": p.get("p50_ms"), "p99_ms": p.get("p99_ms"),
        "cpu_us_per_msg": p.get("cpu_us_per_msg"),
        "catchup_s": p.get("catchup_s"), "catchup_entries": p.get("catchup_entries"),
        "writer_signatures": p.get("writer_signatures"),
        "redis_msgs_per_s": r and r["acked_msgs_per_s"],
        "nats_msgs_per_s": n and n["acked_msgs_per_s"],
        "redis_ratio": r and p and p["acked_msgs_per_s"] / r["acked_msgs_per_s"],
        "nats_ratio": n and p and p["acked_msgs_per_s"] / n["acked_msgs_per_s"],
        "peers": {"redis": r, "nats": n},
        "settings": {
            "payload_bytes": 200, "subscribers": 2, "processes": "separate, 127.0.0.1",
            "p2pworld": "sqlite WAL synchronous=FULL (fsync per group commit), writer "
                        "ed25519 signatures (one per flushed batch, Merkle proofs), one "
                        "sequencer head signature per batch, subscribers verify writer "
                        "signatures + proofs + chain + head, ChaCha20-Poly1305 sessions",
            "redis": "XADD, appendonly yes, appendfsync always, 2 XREAD consumers",
            "nats": "JetStream file storage, sync_interval always, 2 pull consumers",
            "plan": plan, "machine_cores": os.cpu_count(),
        },
    }
    print(json.dumps(out, indent=2 if not args.json else None, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
