"""Worker processes for ``benchmarks.channel``: one role per process, JSON lines on stdout.

Roles (``python -m benchmarks._workers ROLE ARGS``):

* ``p2p-seq HOME``            a p2pworld node that opens the channel (the sequencer)
* ``p2p-sub HOME URL N``      a node that subscribes and measures publish->deliver latency
* ``p2p-pub HOME URL PLAN``   a node that publishes the plan's phases to the sequencer
* ``redis-sub PORT N`` / ``redis-pub PORT PLAN``
* ``nats-sub PORT N NAME`` / ``nats-pub PORT PLAN``

A plan is ``window1:COUNT,window100:COUNT,rate1000:SECONDS``. Payloads are 200 bytes: a phase
byte, the send time (ns, CLOCK_REALTIME, shared by processes on one machine) and padding.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

PAYLOAD = 200


def out(**kw: Any) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def payload(phase: int, i: int) -> bytes:
    head = bytes([phase]) + time.time_ns().to_bytes(8, "big") + i.to_bytes(8, "big")
    return head + b"." * (PAYLOAD - len(head))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def parse_plan(plan: str) -> list[tuple[str, int]]:
    return [(p.split(":")[0], int(p.split(":")[1])) for p in plan.split(",")]


class Latency:
    """Collects publish->deliver latencies of the rate phase (phase byte 3)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.lat: list[float] = []

    def see(self, data: bytes) -> None:
        self.count += 1
        if data[:1] == b"\x03":
            sent = int.from_bytes(data[1:9], "big")
            self.lat.append((time.time_ns() - sent) / 1e6)

    def report(self) -> None:
        out(event="sub_done", count=self.count, lat_ms=self.lat, cpu_s=cpu_s())


async def run_plan_asyncio(plan: str, publish: Any) -> None:
    """The plan's phases for an asyncio client; ``publish(payload)`` returns an awaitable
    that completes when the server acknowledged the message."""
    import asyncio

    for name, arg in parse_plan(plan):
        t0, c0 = time.perf_counter(), cpu_s()
        if name.startswith("window"):
            window = int(name[6:])
            sem = asyncio.Semaphore(window)

            async def one(i: int, sem: asyncio.Semaphore = sem, window: int = window) -> None:
                async with sem:
                    await publish(payload(1 if window == 1 else 2, i))

            await asyncio.gather(*(one(i) for i in range(arg)))
            count = arg
        else:
            rate = int(name[4:])
            count = rate * arg
            start = time.perf_counter()
            tasks = []
            for i in range(count):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(publish(payload(3, i))))
            await asyncio.gather(*tasks)
        out(event="phase", name=name, count=count, seconds=time.perf_counter() - t0,
            cpu_s=cpu_s() - c0)
    out(event="pub_done", cpu_s=cpu_s())


# --- p2pworld -----------------------------------------------------------------------------


def p2p_main(role: str, args: list[str]) -> None:
    import trio

    from p2pworld.runtime.node import NodeConfig, open_node

    async def seq(home: str) -> None:
        async with open_node(NodeConfig(home=home, workspace="bench", mdns=False)) as node:
            rec = await node.open_channel("bench")
            out(event="ready", url=node.url, channel=rec.channel.hex())
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            out(event="seq_done", cpu_s=cpu_s(), head=node.head(rec.channel)[0])

    async def sub(home: str, url: str, n: int) -> None:
        async with open_node(NodeConfig(home=home, workspace="bench", mdns=False,
                                        peers=[url])) as node:
            rec = await node.wait_channel("bench")
            out(event="ready")
            lat = Latency(n)
            async for msg in node.messages(rec.channel):
                lat.see(msg.payload)
                if lat.count >= n:
                    break
            lat.report()
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)

    async def pub(home: str, url: str, plan: str) -> None:
        async with open_node(NodeConfig(home=home, workspace="bench", mdns=False,
                                        peers=[url])) as node:
            rec = await node.wait_channel("bench")
            await node.wait_peers(1)
            out(event="ready")
            for name, arg in parse_plan(plan):
                t0, c0 = time.perf_counter(), cpu_s()
                if name.startswith("window"):
                    window = int(name[6:])
                    sent = 0
                    limit = trio.Semaphore(window)

                    async def one(i: int, window: int = window,
                                  limit: trio.Semaphore = limit) -> None:
                        try:
                            await node.publish(rec.channel, payload(1 if window == 1 else 2, i),
                                               timeout=60)
                        finally:
                            limit.release()

                    async with trio.open_nursery() as n:
                        for i in range(arg):
                            await limit.acquire()
                            n.start_soon(one, i)
                            sent += 1
                    count = arg
                else:
                    rate = int(name[4:])
                    count = rate * arg
                    async with trio.open_nursery() as n:
                        start = time.perf_counter()
                        for i in range(count):
                            due = start + i / rate
                            delay = due - time.perf_counter()
                            if delay > 0:
                                await trio.sleep(delay)
                            n.start_soon(node.publish, rec.channel, payload(3, i))
                out(event="phase", name=name, count=count, seconds=time.perf_counter() - t0,
                    cpu_s=cpu_s() - c0)
            out(event="pub_done", cpu_s=cpu_s(), signing=node.health()["writer_signatures"])
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)

    if role == "p2p-seq":
        trio.run(seq, args[0])
    elif role == "p2p-sub":
        trio.run(sub, args[0], args[1], int(args[2]))
    else:
        trio.run(pub, args[0], args[1], args[2])


# --- Redis streams ------------------------------------------------------------------------


def redis_main(role: str, args: list[str]) -> None:
    import asyncio

    import redis.asyncio as aioredis

    async def sub(port: int, n: int) -> None:
        r = aioredis.Redis(host="127.0.0.1", port=port)
        out(event="ready")
        lat = Latency(n)
        last = "0-0"
        while lat.count < n:
            res = await r.xread({"bench": last}, count=1000, block=1000)
            for _, items in res or []:
                for mid, fields in items:
                    last = mid
                    lat.see(fields[b"p"])
        lat.report()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    async def pub(port: int, plan: str) -> None:
        r = aioredis.Redis(host="127.0.0.1", port=port, max_connections=128)
        out(event="ready")
        await run_plan_asyncio(plan, lambda p: r.xadd("bench", {"p": p}))
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    if role == "redis-sub":
        asyncio.run(sub(int(args[0]), int(args[1])))  # args[2]: consumer name (unused)
    else:
        asyncio.run(pub(int(args[0]), args[1]))


# --- NATS JetStream -----------------------------------------------------------------------


def nats_main(role: str, args: list[str]) -> None:
    import asyncio

    import nats

    async def sub(port: int, n: int, name: str) -> None:
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        js = nc.jetstream()
        psub = await js.pull_subscribe("bench", durable=name)
        out(event="ready")
        lat = Latency(n)
        while lat.count < n:
            try:
                msgs = await psub.fetch(500, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                lat.see(m.data)
            if msgs:
                await msgs[-1].ack()  # ack_policy=all: one ack covers the batch
        lat.report()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await nc.close()

    async def pub(port: int, plan: str) -> None:
        nc = await nats.connect(f"nats://127.0.0.1:{port}", pending_size=64 << 20)
        js = nc.jetstream()
        out(event="ready")
        await run_plan_asyncio(plan, lambda p: js.publish("bench", p, timeout=30))
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await nc.close()

    if role == "nats-sub":
        asyncio.run(sub(int(args[0]), int(args[1]), args[2]))
    else:
        asyncio.run(pub(int(args[0]), args[1]))


if __name__ == "__main__":
    role, rest = sys.argv[1], sys.argv[2:]
    os.environ.setdefault("PYTHONHASHSEED", "0")
    if role.startswith("p2p") and os.environ.get("P2P_PROFILE_DIR"):
        # Deterministic profile of each p2pworld process (finding hot spots, not measuring).
        import cProfile

        out_path = Path(os.environ["P2P_PROFILE_DIR"]) / f"{role}-{os.getpid()}.prof"
        cProfile.run("p2p_main(role, rest)", str(out_path))
    elif role.startswith("p2p"):
        p2p_main(role, rest)
    elif role.startswith("redis"):
        redis_main(role, rest)
    else:
        nats_main(role, rest)
