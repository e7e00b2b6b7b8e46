"""Pure parts of the Nostr lane: frame splitting and reassembly under reordering and
duplication, hostile frames, and the transport policy that local config may only narrow."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld.core.lanes import (
    LANES_OF_MODE,
    MODES,
    LaneCounters,
    policy_lanes,
    resolve_mode,
)
from p2pworld.errors import DecodeError, LocalProtocolError, PolicyDenied
from p2pworld.nostr.lane_frames import MAX_PART, LaneFrame, Reassembler, split

PIPE = bytes(range(16))


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(st.binary(max_size=3 * MAX_PART + 7), min_size=1, max_size=6),
       seed=st.integers(0, 2**32), dups=st.integers(0, 10))
def test_reassembly_yields_each_frame_once_in_order(frames: list[bytes], seed: int,
                                                   dups: int) -> None:
    parts = [p for n, f in enumerate(frames, start=1) for p in split(PIPE, True, n, f)]
    rng = random.Random(seed)
    stream = parts + [rng.choice(parts) for _ in range(dups)]  # relays deliver twice
    rng.shuffle(stream)  # and out of order (two relays, reconnects)
    r = Reassembler()
    out = [f for p in stream for f in r.feed(p, now=0)]
    assert out == frames
    assert r.gap_since is None and r.next_n == len(frames) + 1


def test_a_gap_is_reported_until_it_is_filled() -> None:
    a, b = split(PIPE, True, 1, b"a"), split(PIPE, True, 2, b"b")
    r = Reassembler()
    assert r.feed(b[0], now=5.0) == [] and r.gap_since == 5.0
    assert r.feed(b[0], now=9.0) == [] and r.gap_since == 5.0  # the same gap, still open
    assert r.feed(a[0], now=10.0) == [b"a", b"b"] and r.gap_since is None


def test_frames_round_trip_and_hostile_ones_are_typed_errors() -> None:
    f = LaneFrame(PIPE, False, "data", 3, 1, 2, b"xyz")
    assert LaneFrame.decode(f.encode()) == f
    for bad in ("", "not base64!", "AAAA", "x" * (5 * MAX_PART),
                LaneFrame(PIPE[:5], True, "data", 1).encode(),
                LaneFrame(PIPE, True, "bogus", 1).encode(),
                LaneFrame(PIPE, True, "data", 1, 3, 2).encode()):
        with pytest.raises(DecodeError):
            LaneFrame.decode(bad)
    with pytest.raises(DecodeError):  # parts disagree about the frame's size
        r = Reassembler()
        r.feed(LaneFrame(PIPE, True, "data", 1, 0, 2, b"a"), now=0)
        r.feed(LaneFrame(PIPE, True, "data", 1, 1, 3, b"b"), now=0)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_frame_decoder(data: bytes) -> None:
    import base64
    try:
        LaneFrame.decode(base64.b64encode(data).decode())
    except DecodeError:
        pass


policies = st.one_of(st.none(), st.fixed_dictionaries({
    "primary": st.sampled_from(["direct", "nostr", "carrier-pigeon"]),
    "fallback": st.lists(st.sampled_from(["rendezvous", "nostr", "direct", "smoke"]),
                         max_size=3)}))


@given(local=st.sampled_from(MODES), policy=policies)
def test_local_config_only_narrows_the_policy(local: str, policy: dict | None) -> None:  # type: ignore[type-arg]
    try:
        mode = resolve_mode(local, policy)
    except PolicyDenied:
        assert not (LANES_OF_MODE[local] & policy_lanes(policy))
        return
    lanes = LANES_OF_MODE[mode]
    assert lanes <= LANES_OF_MODE[local] and lanes <= policy_lanes(policy)
    assert lanes == LANES_OF_MODE[local] & policy_lanes(policy)


def test_unknown_modes_are_refused_and_the_ratio_alerts() -> None:
    with pytest.raises(LocalProtocolError):
        resolve_mode("always-nostr", None)
    c = LaneCounters()
    c.count("direct", 95)
    c.count("nostr", 5)
    assert c.fallback_ratio == 0.05 and not c.report()["alert"]
    c.count("nostr", 1)
    assert c.report()["alert"]


def test_a_sender_cannot_park_unbounded_out_of_order_data() -> None:
    from p2pworld.nostr.lane_frames import MAX_BUFFERED

    r = Reassembler()
    with pytest.raises(DecodeError):
        # Frame 1 never comes; large frames 2.. pile up (within the reorder window) until
        # the byte bound stops them.
        for n in range(2, 2 + MAX_BUFFERED // (64 * MAX_PART) + 2):
            for part in range(64):
                r.feed(LaneFrame(PIPE, True, "data", n, part, 64, b"x" * MAX_PART), now=0)
