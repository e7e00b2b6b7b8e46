"""Parity: one scripted scenario, run by the simulator's executor and by the trio runtime,
gives each node the same sequence of effects at the executor boundary.

Both executors drive the same node core (:mod:`p2pworld.core.node`); this test checks that
neither adds a decision of its own. The script: a sequencer ``n0`` opens a channel, writers
``n1`` and ``n2`` publish in turn (``local`` and ``replicated`` acks), the replica ``n3``
crashes right after a commit that made an entry durable, restarts from its store and catches
up. The runtime runs over in-memory sessions (the real handshake, sealing and framing) with
:class:`trio.testing.MockClock`, on the real sqlite store; the simulator runs its own network
and clock on the memory store.

What is compared, per node and in the order it completed, is what the executor carried out
on the channel's data path: each commit done (what it made durable: entries by seq, outbox
rows by key) and each message handed to a session (to which peer, which message, about which
seq). Sends to different peers between two commits are concurrent (neither executor orders
them against each other), so they are compared in peer order; everything else in the order
it happened. Presence, gossip and keepalive traffic run on timers whose phase is each
executor's own and are left out.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from p2pworld.channel.effects import OutboxDone, OutboxPut, Persist
from p2pworld.core.persist import Commit
from p2pworld.identity import NodeIdentity, node_id
from p2pworld.io.session import relayed_session
from p2pworld.runtime import edge
from p2pworld.runtime.node import Node, NodeConfig, open_node
from p2pworld.testing import Simulator
from p2pworld.wire import Ack, Entries, Message, Nack, Stored, Submit, message_channel

NAMES = ("n0", "n1", "n2", "n3")
SEED = 5
Event = tuple[Any, ...]


def _seed_bytes(i: int) -> bytes:
    """The simulator's key for node i (``Simulator.__init__``)."""
    return hashlib.blake2b(b"%d/%d" % (SEED, i), digest_size=32).digest()


class Recorder:
    """Events at the executor boundary, per node name, with ids mapped to names."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[bytes, Event]]] = {n: [] for n in NAMES}
        """Per node: (channel, event), every channel (which one the script opened is known
        only once ``open_channel`` returns, and peers may have answered by then)."""
        self.names = {node_id(NodeIdentity.from_seeds(_seed_bytes(i), bytes([i + 1]) * 32)
                              .public_key): n for i, n in enumerate(NAMES)}
        self.channel = b""
        self.on_commit: Callable[[str, tuple[Event, ...]], None] | None = None

    def commit(self, node: str, ops: Any) -> None:
        got: dict[bytes, list[Event]] = {}
        for op in ops:
            if isinstance(op, Persist):
                got.setdefault(op.record.channel, []).extend(
                    [("persist", e.kind, e.seq) for e in op.entries] or [("record",)])
            elif isinstance(op, OutboxPut):
                got.setdefault(op.submission.channel, []).append(
                    ("outbox+", op.submission.idem_key))
            elif isinstance(op, OutboxDone):
                got.setdefault(op.channel, []).append(("outbox-", op.idem_key))
        for ch, evs in got.items():
            self.events[node].append((ch, ("commit", tuple(evs))))
            if ch == self.channel and self.on_commit is not None:
                self.on_commit(node, tuple(evs))

    def send(self, node: str, peer: bytes, msg: Message) -> None:
        got = _data_path(msg)
        if got is not None:
            self.events[node].append((got[0], ("send", self.names.get(peer, peer.hex()),
                                               *got[1])))

    def seen(self, node: str, event: Event) -> bool:
        return (self.channel, event) in self.events[node]

    def canonical(self, node: str) -> list[Event]:
        """The script's channel only; sends between two commits in peer order (stable:
        per-peer order is kept)."""
        out: list[Event] = []
        run: list[Event] = []
        for ch, ev in self.events[node]:
            if ch != self.channel:
                continue
            if ev[0] == "send":
                run.append(ev)
                continue
            out += sorted(run, key=lambda e: e[1])
            run = []
            out.append(ev)
        return out + sorted(run, key=lambda e: e[1])


def _data_path(m: Message) -> tuple[bytes, Event] | None:
    """The channel a message is about, and what it says on the data path."""
    if isinstance(m, Submit):
        return m.submission.channel, ("submit", m.submission.idem_key, m.want)
    if isinstance(m, Ack):
        return m.channel, ("ack", m.seq, m.status, m.strength)
    if isinstance(m, Nack):
        return m.channel, ("nack", m.code)
    if isinstance(m, Entries):
        return m.head.channel, ("entries", tuple((e.kind, e.seq) for e in m.entries))
    if isinstance(m, Stored):
        return m.channel, ("stored", m.seq)
    ch = message_channel(m)
    # The start-up exchange, announcements and subscriptions (world and keepalive traffic
    # is about no channel).
    return None if ch is None else (ch, (m.TYPE,))


STEPS: tuple[tuple[str, bytes, bytes, str], ...] = (
    ("n1", b"k1", b"one", "local"),
    ("n2", b"k2", b"two", "replicated"),
    ("n1", b"k3", b"three", "replicated"),
    # n3 crashes right after it made seq 3 durable (see ``crash_after``), then restarts.
    ("n2", b"k4", b"four", "local"),
    ("n1", b"k5", b"five", "replicated"),
)
CRASH = ("n3", 3)
"""The replica crashes right after the commit that made this seq durable."""


def _crash_due(rec: Recorder, node: str, got: tuple[Event, ...]) -> bool:
    return node == CRASH[0] and any(e[0] == "persist" and e[2] == CRASH[1] for e in got)


# --- the simulator ----------------------------------------------------------------------


def run_simulated() -> Recorder:
    rec = Recorder()
    sim = Simulator(seed=SEED, nodes=4)
    try:
        send = sim._send

        def recording_send(src: Any, dst: bytes, msgs: tuple[Message, ...]) -> None:
            for m in msgs:
                rec.send(src.name, dst, m)
            send(src, dst, msgs)

        sim._send = recording_send  # type: ignore[method-assign,assignment]
        crashed: list[str] = []

        def on_commit(node: str, got: tuple[Event, ...]) -> None:
            if _crash_due(rec, node, got) and not crashed:
                crashed.append(node)
                sim.at(0, lambda: sim.crash(node))

        rec.on_commit = on_commit
        wrapped: set[int] = set()

        def wrap_stores() -> None:
            for n in sim.nodes.values():
                if id(n.store) in wrapped:
                    continue
                wrapped.add(id(n.store))
                apply = type(n.store).apply.__get__(n.store)  # not a copied recorder

                def recording_apply(ops: Any, _name: str = n.name, _apply: Any = apply) -> None:
                    _apply(ops)
                    rec.commit(_name, ops)

                n.store.apply = recording_apply

        wrap_stores()
        sim.run(3.0)  # every session up
        ch = sim.open_channel("n0", "parity")
        rec.channel = ch
        sim.run(3.0)
        for writer, key, payload, want in STEPS:
            sim.publish(writer, ch, payload, key=key, want=want)
            sim.run(3.0)
            if crashed and not sim.nodes[crashed[0]].up:
                sim.restart(crashed[0])
                wrap_stores()
                sim.run(5.0)
        assert [a.seq for a in sim.stats.acks] == [1, 2, 3, 4, 5]
        return rec
    finally:
        sim.close()


# --- the trio runtime -------------------------------------------------------------------


class _MemPipe:
    """One end of an in-memory frame pipe (what a websocket gives a session)."""

    def __init__(self, send: trio.MemorySendChannel[bytes],
                 recv: trio.MemoryReceiveChannel[bytes]) -> None:
        self._send, self._recv = send, recv

    async def get_message(self) -> bytes:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosed(None) from None

    async def send_message(self, data: bytes) -> None:
        try:
            await self._send.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed(None) from None

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._recv.aclose()


def _pipes() -> tuple[_MemPipe, _MemPipe]:
    a_send, b_recv = trio.open_memory_channel[bytes](math.inf)
    b_send, a_recv = trio.open_memory_channel[bytes](math.inf)
    return _MemPipe(a_send, a_recv), _MemPipe(b_send, b_recv)


async def _connect(a: Node, b: Node) -> None:
    """An in-memory session between two running nodes, dialled by the lower id."""
    if b.node_id < a.node_id:
        a, b = b, a
    pa, pb = _pipes()
    sessions: dict[str, Any] = {}

    async def side(key: str, node: Node, pipe: _MemPipe, peer: bytes, init: bool) -> None:
        sessions[key] = await relayed_session(
            pipe, node._hs_config(expected=peer if init else None), initiator=init,
            address=f"memory:{peer.hex()[:8]}")

    async with trio.open_nursery() as n:
        n.start_soon(side, "a", a, pa, b.node_id, True)
        n.start_soon(side, "b", b, pb, a.node_id, False)
    async with trio.open_nursery() as n:
        n.start_soon(a._start_session, b.node_id, sessions["a"])
        n.start_soon(b._start_session, a.node_id, sessions["b"])


async def _in_trio_thread(fn: Callable[..., Any], *args: Any, **_: Any) -> Any:
    """The store's calls, run in trio's own thread: the mock clock cannot jump while a
    commit is under way, so the runtime's inputs arrive at the same virtual times whatever
    the machine's speed (in a worker thread, a slow commit would let virtual time leap past
    the lazy outbox's deadline, and the node would rightly commit differently)."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


async def run_runtime(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(edge, "now_ms", lambda: int(trio.current_time() * 1000))  # its clock
    monkeypatch.setattr(trio.to_thread, "run_sync", _in_trio_thread)
    nodes: dict[str, Node] = {}
    scopes: dict[str, trio.CancelScope] = {}
    crashed: list[str] = []
    done: dict[str, trio.Event] = {}
    idents = {n: NodeIdentity.from_seeds(_seed_bytes(i), bytes([i + 1]) * 32)
              for i, n in enumerate(NAMES)}

    def on_commit(node: str, got: tuple[Event, ...]) -> None:
        if _crash_due(rec, node, got) and not crashed:
            crashed.append(node)
            crash(node)  # nothing after this commit's event is carried out

    def crash(node: str) -> None:
        scopes[node].cancel()
        del nodes[node]

    rec.on_commit = on_commit

    async def run_node(name: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        done[name] = trio.Event()
        try:
            await _run_node(name, task_status)
        finally:
            done[name].set()

    async def _run_node(name: str, task_status: Any) -> None:
        cfg = NodeConfig(home=tmp / name, workspace="sim", mdns=False, dial_grace=0,
                         startup_check_s=0, keepalive=3600)
        with trio.CancelScope() as scope:
            scopes[name] = scope
            async with open_node(cfg, identity=idents[name]) as node:
                apply = node._store.apply

                def recording_apply(ops: Any) -> None:
                    apply(ops)
                    rec.commit(name, ops)

                node._store.apply = recording_apply  # type: ignore[method-assign]
                send = node._send

                def recording_send(peer: bytes, msg: Message) -> None:
                    rec.send(name, peer, msg)
                    send(peer, msg)

                node._send = recording_send  # type: ignore[method-assign]
                nodes[name] = node
                task_status.started()
                await trio.sleep_forever()

    async def quiet(seq: int) -> None:
        """Until every node holds ``seq``, every replica reported it stored and no node has
        work queued, in its store task or on its way (a commit in the store's worker thread
        lets the mock clock jump, so waiting out virtual time alone would not do)."""
        with trio.move_on_after(600):
            while True:
                await trio.sleep(0.5)
                done = all(
                    (ch := rec.channel) == b"" or (ch in n._hub.replicas or ch in n._hub.own) and
                    n._hub.log(ch).seq == seq for n in nodes.values())
                done = done and all(rec.seen(r, ("send", "n0", "stored", seq))
                                    for r in NAMES[1:] if seq and r in nodes)
                if done and all(n._core.idle and not n._running and not n._storing
                                for n in nodes.values()):
                    return
        raise AssertionError(f"the runtime did not settle at seq {seq}: " + "; ".join(
            f"{k}: {len(n._sessions)} sessions, idle {n._core.idle}, storing {n._storing}, "
            f"errors {n._errors}" for k, n in nodes.items()))

    async with trio.open_nursery() as top:
        for name in NAMES:
            await top.start(run_node, name)
        for i, a in enumerate(NAMES):
            for b in NAMES[i + 1:]:
                await _connect(nodes[a], nodes[b])
        await quiet(0)
        chan = await nodes["n0"].open_channel("parity")
        rec.channel = chan.channel
        await quiet(0)
        for seq, (writer, key, payload, want) in enumerate(STEPS, 1):
            await nodes[writer].publish(chan.channel, payload, key=key, durability=want,
                                        timeout=600)
            await quiet(seq)
            if len(crashed) == 1:
                name = crashed[0]
                await done[name].wait()
                await top.start(run_node, name)
                for other in NAMES:
                    if other != name:
                        await _connect(nodes[name], nodes[other])
                crashed.append("restarted")
                await quiet(seq)
        top.cancel_scope.cancel()
    return rec


def _differences(real: Recorder, simulated: Recorder) -> dict[str, tuple[int, Any, Any]]:
    """Per node, the first place where the two sequences differ."""
    out = {}
    for name in NAMES:
        a, b = real.canonical(name), simulated.canonical(name)
        for i in range(max(len(a), len(b))):
            x, y = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
            if x != y:
                out[name] = (i, x, y)
                break
    return out


def _run_both(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Recorder, Recorder]:
    simulated = run_simulated()
    real = trio.run(run_runtime, tmp, monkeypatch,
                    clock=trio.testing.MockClock(autojump_threshold=0))
    return real, simulated


def test_the_simulator_and_the_runtime_carry_out_the_same_effects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, simulated = _run_both(tmp_path, monkeypatch)
    assert _differences(real, simulated) == {}
    seq = real.canonical("n0")
    assert [e for e in seq if e[0] == "commit"] == [("commit", (("record",),))] + [
        ("commit", (("persist", "msg", n),)) for n in range(1, 6)]
    assert ("send", "n1", "ack", 3, "appended", "replicated") in seq
    # The replica's crash came right after seq 3 was durable; after its restart it took 4, 5.
    assert real.canonical("n3").count(("send", "n0", "headr")) == 1
    assert [e[1] for e in real.canonical("n3") if e[0] == "commit"] == [
        (("record",),), *[(("persist", "msg", n),) for n in range(1, 6)]]


def test_an_executor_that_decides_is_caught(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: a runtime that carries a plan's sends before the commit
    they wait on (the order is the node core's, not the executor's) differs at once."""
    carry_out = Node._carry_out

    async def sends_first(self: Node, steps: tuple[Any, ...]) -> None:
        await carry_out(self, tuple(sorted(steps, key=lambda s: isinstance(s, Commit))))

    monkeypatch.setattr(Node, "_carry_out", sends_first)
    real, simulated = _run_both(tmp_path, monkeypatch)
    _, runtime_did, simulator_did = _differences(real, simulated)["n0"]
    assert runtime_did[0] == "send" and simulator_did[0] == "commit"  # the channel's record
