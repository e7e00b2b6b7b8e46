"""A hypothesis state machine over the channel-log cores: publish, retry, conflict,
partition, crash and restart (from the durable store), resume, handoff and retention.

Invariants after every step: replicas hold a prefix of the sequencer's log (same hashes),
``seq`` is gapless, and every acknowledged publish is in the log at its seq, durably."""

from __future__ import annotations

from typing import Any

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from p2pworld.channel.hub import PublishResult
from p2pworld.errors import Conflict, P2PWorldError
from p2pworld.log.entry import ChannelPolicy, hash_bytes
from p2pworld.testing import MemoryLogStore

from .hubs import connect, disconnect, hub, outcomes, restore, run

NAMES = ["a", "b", "c"]


class ChannelLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.hubs: dict[str, Any] = {}
        self.keys: dict[str, Any] = {}
        self.stores = {n: MemoryLogStore() for n in NAMES}
        for i, n in enumerate(NAMES):
            self.hubs[n], self.keys[n] = hub(i + 1)
        self.down: set[str] = set()
        init: list[Any] = []
        for i, x in enumerate(NAMES):
            for y in NAMES[i + 1:]:
                init += connect(self.hubs, x, y)
        self.run(init)
        rec, fx = self.hubs["a"].open_channel("m", now_ms=0,
                                              policy=ChannelPolicy(retention=6))
        self.ch = rec.channel
        self.run([("a", e) for e in fx])
        self.sequencer = "a"
        self.acked: dict[tuple[str, bytes], tuple[int, bytes]] = {}  # (writer, key) -> seq
        self.first_payload: dict[tuple[str, bytes], bytes] = {}
        self.handed_off = False

    def run(self, initial: list[Any]) -> dict[str, list[Any]]:
        return run(self.hubs, initial, drop=self.down, stores=self.stores)

    @rule(writer=st.sampled_from(NAMES), k=st.integers(0, 6), p=st.sampled_from([b"x", b"y"]))
    def publish(self, writer: str, k: int, p: bytes) -> None:
        if writer in self.down:
            return
        key = b"k%d" % k
        h = self.hubs[writer]
        if self.ch not in h.own and self.ch not in h.replicas:
            return
        _, fx = h.publish(self.ch, p, idem_key=key, now_ms=1)
        seen = self.run([(writer, e) for e in fx])
        seqr = self.hubs[self.sequencer]
        idem = seqr.state(self.ch).idem if self.ch in seqr.own else {}
        wkey = self.keys[writer].public_key
        for out in outcomes(fx + seen[writer]):
            if isinstance(out, PublishResult):
                # The entry at that seq is ours, with this payload; a key maps to one seq.
                prev = self.acked.get((writer, key))
                if prev is not None:
                    assert prev[0] == out.seq, "same key acknowledged at two seqs"
                    assert prev[1] == hash_bytes(p), "a different payload under a used key"
                self.acked[(writer, key)] = (out.seq, hash_bytes(p))
            elif isinstance(out, Conflict):
                held = idem.get((wkey, key))
                assert held is not None and held.payload_hash != hash_bytes(p)
            else:
                assert isinstance(out, P2PWorldError)

    @rule(node=st.sampled_from(NAMES))
    def partition(self, node: str) -> None:
        if node in self.down or len(self.down) >= 1:
            return
        fx: list[Any] = []
        for other in NAMES:
            if other != node:
                fx += disconnect(self.hubs, node, other)
        self.down.add(node)
        self.run(fx)

    @rule()
    def heal(self) -> None:
        if not self.down:
            return
        node = self.down.pop()
        fx: list[Any] = []
        for other in NAMES:
            if other != node and other not in self.down:
                fx += connect(self.hubs, node, other)
        self.run(fx)

    @rule(node=st.sampled_from(NAMES))
    def crash_and_restart(self, node: str) -> None:
        if node in self.down:
            return
        fx: list[Any] = []
        for other in NAMES:
            if other != node:
                fx += disconnect(self.hubs, node, other)
        self.run(fx)
        self.stores[node] = self.stores[node].crash()
        self.hubs[node] = restore(self.keys[node], self.stores[node], NAMES.index(node))
        fx = []
        for other in NAMES:
            if other != node and other not in self.down:
                fx += connect(self.hubs, node, other)
        self.run(fx)

    @precondition(lambda self: not self.handed_off and not self.down)
    @rule()
    def handoff(self) -> None:
        _, fx = self.hubs["a"].handoff(self.ch, self.keys["b"].public_key, now_ms=3)
        self.run([("a", e) for e in fx])
        self.sequencer = "b"
        self.handed_off = True

    @invariant()
    def logs_agree_and_acks_are_durable(self) -> None:
        seqr = self.hubs[self.sequencer]
        if self.ch not in seqr.own:
            return
        slog = seqr.log(self.ch)
        for n in NAMES:
            h = self.hubs[n]
            if self.ch not in h.replicas and self.ch not in h.own:
                continue
            log = h.log(self.ch)
            assert log.seq <= slog.seq or n == self.sequencer
            for e in log.entries:
                sh = slog.hash_at(e.seq)
                if sh is not None:
                    assert sh == e.hash, f"{n} diverges at seq {e.seq}"
            seqs = [e.seq for e in log.entries]
            assert seqs == list(range(log.floor + 1, log.seq + 1))
        for (_, _), (seq, ph) in self.acked.items():
            assert seq <= slog.seq, "an acknowledged entry is missing"
            e = slog.entry(seq)
            if e is not None:
                assert hash_bytes(e.payload) == ph

    def teardown(self) -> None:
        # After healing everyone converges on one head and one state hash.
        self.down.clear()
        fx: list[Any] = []
        for i, x in enumerate(NAMES):
            for y in NAMES[i + 1:]:
                fx += disconnect(self.hubs, x, y) + connect(self.hubs, x, y)
        self.run(fx)
        hashes = {self.hubs[n].state(self.ch).state_hash() for n in NAMES}
        heads = {self.hubs[n].head(self.ch) for n in NAMES}
        assert len(heads) == 1 and len(hashes) == 1, (heads, len(hashes))


ChannelLogMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30,
                                               deadline=None)
TestChannelLog = ChannelLogMachine.TestCase
