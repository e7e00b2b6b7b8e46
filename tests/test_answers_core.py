"""The answers core (:mod:`p2pworld.core.answers`): what the API's waits and small reads
decide about the node's state, checked without a running node."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from p2pworld.compute.core import COMPUTE_APP
from p2pworld.core.answers import (
    EMPTY_OUTBOX,
    attempt_of,
    awaits_channel_key,
    channel_ready,
    compute_channel_policy,
    conflict_details,
    enough_peers,
    member_ready,
    outbox_of,
    provider_ad,
    request_ready,
)
from p2pworld.core.calls import OpenChannel
from p2pworld.core.cores import build_cores
from p2pworld.core.node import NodeCore
from p2pworld.identity import Ed25519Signer


def _core() -> NodeCore:
    return NodeCore(build_cores(Ed25519Signer(bytes(32)), workspace="lab",
                                rng=random.Random(0), incarnation=1))


def test_a_channel_is_ready_once_known_by_name() -> None:
    core = _core()
    hub = core.cores.hub
    assert channel_ready(hub, "notes") is None
    rec = core.handle(OpenChannel(name="notes"), now_ms=0).result
    assert channel_ready(hub, "notes") == rec


def test_an_own_private_channel_needs_no_wait_for_its_key() -> None:
    core = _core()
    hub = core.cores.hub
    pub = core.handle(OpenChannel(name="pub"), now_ms=0).result
    priv = core.handle(OpenChannel(name="priv", private=True), now_ms=0).result
    assert not awaits_channel_key(hub, pub.channel)
    assert not awaits_channel_key(hub, priv.channel)
    fake = SimpleNamespace(record=lambda ch: SimpleNamespace(private=True), own={},
                           channel_keys=lambda ch: [])
    assert awaits_channel_key(fake, b"c") is True  # type: ignore[arg-type]
    fake.channel_keys = lambda ch: [b"key"]
    assert awaits_channel_key(fake, b"c") is False  # type: ignore[arg-type]


def test_a_member_is_ready_in_its_state_and_online_with_its_document() -> None:
    m = SimpleNamespace(state="online", info=None)
    assert member_ready(None, "online") is None
    assert member_ready(m, "online") is None  # heartbeat before the document
    m.info = object()
    assert member_ready(m, "online") is m  # type: ignore[arg-type]
    assert member_ready(m, "stale") is None  # type: ignore[arg-type]
    left = SimpleNamespace(state="left", info=None)
    assert member_ready(left, "left") is left  # type: ignore[arg-type]


def test_a_request_is_ready_when_it_satisfies_until() -> None:
    r = SimpleNamespace(terminal=True)
    assert request_ready(None, lambda r: True) is None
    assert request_ready(r, lambda r: r.terminal) is r
    assert request_ready(r, lambda r: not r.terminal) is None


def test_enough_peers() -> None:
    assert enough_peers([1, 2], 2) is True
    assert enough_peers([1], 2) is None
    assert enough_peers([], 0) is True


def test_a_conflict_names_who_holds_the_request() -> None:
    a, b = b"\xaa" * 32, b"\xbb" * 32
    assert conflict_details(None) == {}
    got = SimpleNamespace(accepted_by=None, assignee=None, attempt=3)
    assert conflict_details(got) == {}  # type: ignore[arg-type]
    got.assignee = b
    assert conflict_details(got) == {"assignee": b.hex()}  # type: ignore[arg-type]
    got.accepted_by = a
    assert conflict_details(got) == {"assignee": a.hex()}  # type: ignore[arg-type]
    assert attempt_of(got) == 3 and attempt_of(None) == 0  # type: ignore[arg-type]


def test_the_compute_channel_mirrors_only_with_relays_and_compute_mirrored() -> None:
    for mirror, relays, want in [(("compute",), ("wss://r",), True), (("compute",), (), False),
                                 ((), ("wss://r",), False)]:
        p = compute_channel_policy(mirror, relays)
        assert (p.nostr_mirror, p.app) == (want, COMPUTE_APP)


def test_a_provider_ad_is_its_members_caps() -> None:
    world: Any = SimpleNamespace(member=lambda nid, now_ms: None)
    assert provider_ad(world, b"n", now_ms=0) is None
    world.member = lambda nid, now_ms: SimpleNamespace(caps="ad")
    assert provider_ad(world, b"n", now_ms=0) == "ad"


def test_without_relays_the_bridge_reads_an_empty_outbox() -> None:
    assert outbox_of(None) is EMPTY_OUTBOX
    assert (EMPTY_OUTBOX.source_of("e"), EMPTY_OUTBOX.pending(),
            EMPTY_OUTBOX.events_for("s")) == (None, 0, [])
    box = object()
    assert outbox_of(SimpleNamespace(outbox=box)) is box  # type: ignore[arg-type]
