"""The feeds core (:mod:`p2pworld.core.feeds`): what each reader yields next, from where,
without trio (the runtime's iterators only wait around these answers)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from hypothesis import given, strategies as st

from p2pworld.core.calls import OpenChannel, Publish
from p2pworld.core.cores import build_cores
from p2pworld.core.feeds import (
    ChannelCursor,
    ChannelMessage,
    ComputeCursor,
    ComputeEvent,
    NodeCursor,
    WorldCursor,
)
from p2pworld.core.node import Flush, NodeCore
from p2pworld.errors import P2PWorldError
from p2pworld.identity import Ed25519Signer
from p2pworld.world.core import WorldEvent


def fake_log(floor: int, seq: int) -> Any:
    """Entries floor+1..seq held (entries[i] is seq floor+1+i, as ChannelLog holds them)."""
    return SimpleNamespace(floor=floor, seq=seq, entries=list(range(floor + 1, seq + 1)))


@given(st.integers(0, 20), st.integers(0, 20), st.integers(0, 30), st.integers(0, 30))
def test_a_channel_cursor_yields_each_readable_entry_once_in_order(
        floor: int, held: int, top_cut: int, after: int) -> None:
    log = fake_log(floor, floor + held)
    top = min(log.seq, top_cut)
    cur = ChannelCursor(b"c", after)
    got = []
    while (e := cur.next_entry(log, top)) is not None:
        got.append(e)
        assert cur.position == e  # position: the last seq yielded
    start = max(min(after, log.seq), floor)
    assert got == list(range(start + 1, top + 1))
    if got:
        assert cur.position == top
    assert cur.next_entry(log, top) is None  # nothing twice


def test_a_truncated_log_pulls_the_position_back() -> None:
    cur = ChannelCursor(b"c", 9)
    log = fake_log(0, 4)
    assert cur.next_entry(log, 4) is None and cur.position == 4
    log = fake_log(0, 6)
    assert cur.next_entry(log, 6) == 5


def test_a_node_cursor_resumes_each_channel_after_its_checkpoint() -> None:
    logs = {b"b": fake_log(0, 3), b"a": fake_log(2, 5), b"x": fake_log(0, 9)}
    hub = SimpleNamespace(
        records=lambda: [SimpleNamespace(channel=c) for c in (b"x", b"b", b"a")],
        participates=lambda ch: ch != b"x", cursors={b"b": SimpleNamespace(seq=1)},
        log=lambda ch: logs[ch])
    cur = NodeCursor()
    readable = {b"a": 4, b"b": 3, b"x": 9}
    got = []
    while (e := cur.next_entry(hub, readable.__getitem__)) is not None:  # type: ignore[arg-type]
        got.append(e)
    # channel a (below its floor 2: from 3), then b after its checkpoint 1; x: not a participant
    assert got == [3, 4, 2, 3]


@dataclass
class FakeWorld:
    events: list[WorldEvent] = field(default_factory=list)
    lost: bool = False
    event_seq: int = 0
    members_now: list[Any] = field(default_factory=list)

    def events_after(self, seq: int) -> tuple[list[WorldEvent], bool]:
        return [e for e in self.events if e.seq > seq], self.lost

    def members(self, *, now_ms: int) -> list[Any]:
        return self.members_now


def test_a_world_cursor_yields_events_then_waits() -> None:
    w = FakeWorld(events=[WorldEvent(seq=s, kind="joined", node=b"n", at_ms=0) for s in (1, 2)])
    cur = WorldCursor(0)
    assert cur.refill(w, now_ms=5)  # type: ignore[arg-type]
    assert [cur.pop().seq, cur.pop().seq] == [1, 2] and cur.position == 2
    assert not cur.refill(w, now_ms=5)  # type: ignore[arg-type]


def test_a_world_cursor_past_the_history_resets_and_rebuilds() -> None:
    w = FakeWorld(lost=True, event_seq=40, members_now=[
        SimpleNamespace(node_id=b"a", state="online"), SimpleNamespace(node_id=b"b", state="stale")])
    cur = WorldCursor(3)
    assert cur.refill(w, now_ms=77)  # type: ignore[arg-type]
    got = [cur.pop(), cur.pop(), cur.pop()]
    assert [(e.kind, e.node, e.seq, e.at_ms) for e in got] == [
        ("reset", b"", 40, 77), ("joined", b"a", 40, 77), ("updated", b"b", 40, 77)]
    assert cur.position == 40


def test_a_compute_cursor_reads_past_its_cursor_and_queues_what_it_finds() -> None:
    req = SimpleNamespace(rid="r1")
    asked = []

    class Compute:
        def provider_events(self, log: Any, ad: Any, *, after: int, now_ms: int) -> Any:
            asked.append((log.record.channel, ad, after, now_ms))
            return ([SimpleNamespace(kind="request", rid="r1", seq=after + 1)], after + 1)

        def state(self, log: Any) -> Any:
            return SimpleNamespace(requests={"r1": req})

    log = SimpleNamespace(record=SimpleNamespace(channel=b"c"))
    cores = SimpleNamespace(
        compute=Compute(), compute_logs=lambda: [log],
        world=SimpleNamespace(member=lambda nid, now_ms: SimpleNamespace(caps="ad")))
    cur = ComputeCursor({b"c": 4})
    ev = cur.next_event(cores, b"me", now_ms=9)  # type: ignore[arg-type]
    assert ev == ComputeEvent("request", b"c", req, 5)  # type: ignore[arg-type]
    assert tuple(ev) == (b"c", req)
    assert asked == [(b"c", "ad", 4, 9)] and cur.cursor == {b"c": 5}


def test_a_message_keeps_a_payload_it_cannot_open_sealed() -> None:
    core = NodeCore(build_cores(Ed25519Signer(bytes(32)), workspace="lab",
                                rng=random.Random(0), incarnation=1))
    rec = core.handle(OpenChannel(name="notes"), now_ms=0).result
    core.handle(Publish(channel=rec.channel, payload=b"hi", idem_key=b"k"), now_ms=0)
    core.handle(Flush(), now_ms=0)
    hub = core.cores.hub
    e = hub.log(rec.channel).entries[-1]
    reader = SimpleNamespace(_hub=hub, lane_of=lambda ch, seq: "local")
    m = ChannelMessage.from_entry(e, reader)  # type: ignore[arg-type]
    assert (m.payload, m.readable, m.lane, m.seq) == (b"hi", True, "local", e.seq)

    class Sealed:
        def open_payload(self, e: Any) -> bytes:
            raise P2PWorldError("no key")

    reader = SimpleNamespace(_hub=Sealed(), lane_of=lambda ch, seq: None)
    m = ChannelMessage.from_entry(e, reader)  # type: ignore[arg-type]
    assert (m.payload, m.readable, m.lane) == (e.payload, False, None)
