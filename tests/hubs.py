"""Test helper: pass effects between hub cores through the wire codec, like a network would."""

from __future__ import annotations

import random
from typing import Any

from p2pworld.channel.hub import ChannelHub, Send
from p2pworld.core.persist import STORE_EFFECTS
from p2pworld.identity import Ed25519Signer
from p2pworld.testing import MemoryLogStore
from p2pworld.wire import decode_message, encode_message


def hub(n: int, workspace: str = "w") -> tuple[ChannelHub, Ed25519Signer]:
    signer = Ed25519Signer(bytes([n]) * 32)
    return ChannelHub(signer, workspace=workspace, rng=random.Random(n)), signer


def run(hubs: dict[str, ChannelHub], initial: list[tuple[str, Any]],
        drop: set[str] | None = None,
        stores: dict[str, MemoryLogStore] | None = None) -> dict[str, list[Any]]:
    """Deliver Send effects between named hubs until quiet; returns every effect per hub.
    Hubs named in ``drop`` are unreachable: what is sent to them or by them is lost. With
    ``stores``, durable effects are applied to each hub's store as a node would."""
    seen: dict[str, list[Any]] = {k: [] for k in hubs}
    ids = {h.node_id: k for k, h in hubs.items()}
    queue = list(initial)
    while True:
        if not queue:
            for k, h in hubs.items():
                queue += [(k, e) for e in h.flush(now_ms=2)]
            if not queue:
                return seen
        who, e = queue.pop(0)
        seen[who].append(e)
        if stores is not None and who in stores:
            apply_durable(stores[who], e)
        if isinstance(e, Send):
            dst = ids.get(e.peer)
            if dst is None or (drop and (dst in drop or who in drop)):
                continue
            msg = decode_message(encode_message(e.message))
            queue += [(dst, x) for x in hubs[dst].receive(hubs[who].node_id, msg, now_ms=1)]


def apply_durable(store: MemoryLogStore, e: Any) -> None:
    """Apply one durable effect: the store takes the cores' own effects."""
    if isinstance(e, STORE_EFFECTS):
        store.apply([e])


def restore(signer: Ed25519Signer, store: MemoryLogStore, n: int,
            workspace: str = "w") -> ChannelHub:
    """A hub restarted from what its store holds (after a crash)."""
    h = ChannelHub(signer, workspace=workspace, rng=random.Random(n + 1000))
    for c in store.load_channels():
        h.load(c.record, c.epochs, c.base, c.entries, c.head)
    for sub, want in store.load_outbox():
        h.load_outbox(sub, want)
    h.load_votes(store.load_votes())
    return h


def connect(hubs: dict[str, ChannelHub], a: str, b: str) -> list[tuple[str, Any]]:
    ha, hb = hubs[a], hubs[b]
    return [(a, e) for e in ha.peer_up(hb.node_id, hb.signer.public_key)] + [
        (b, e) for e in hb.peer_up(ha.node_id, ha.signer.public_key)]


def disconnect(hubs: dict[str, ChannelHub], a: str, b: str) -> list[tuple[str, Any]]:
    ha, hb = hubs[a], hubs[b]
    return [(a, e) for e in ha.peer_down(hb.node_id)] + [(b, e) for e in hb.peer_down(ha.node_id)]


def outcomes(effects: list[Any]) -> list[Any]:
    return [e.outcome for e in effects if type(e).__name__ == "Resolved"]
