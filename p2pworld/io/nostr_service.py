"""A node's Nostr side (shell): relay pool, fallback lane, bridge outbox and mirrors.

:class:`NostrService` is what :func:`p2pworld.runtime.node.open_node` starts when ``NodeConfig.relays``
is set. It owns

* the :class:`~p2pworld.io.nostr_relay.RelayPool` (configured relays, plus peers' NIP-65 relays
  added as the lane needs them);
* the :class:`~p2pworld.io.nostr_lane.NostrLane` (sessions over relays, when the transport mode
  allows the Nostr lane);
* the durable :class:`~p2pworld.io.nostr_outbox.Outbox` and the :class:`~p2pworld.io.nostr_relay.Bridge`
  draining it (``enqueue_nostr_bridge_event`` / ``mark_bridge_event_published``), with the
  bridge-adapter subscription (:meth:`feed`) streaming every outbox change;
* discovery from relays: workspace presence events (NIP-38) and relay lists (NIP-65).

What the relays' events and answers mean (which peers to dial, where they read, when presence
is published again, how a delivery shows on the feed) is decided in
:mod:`p2pworld.core.nostr_side` (pure); this shell subscribes, publishes and sleeps.

Nothing the primary lane does waits on a relay: mirrors are rows written to the outbox (a
thread, one sqlite transaction), and the bridge publishes them in its own tasks.

Example (what the node does; users reach it through ``Node`` methods)::

    async with open_node(NodeConfig(home=..., relays=["ws://127.0.0.1:7777"])) as node:
        feed = node.bridge_feed()                       # the bridge-adapter subscription
        await node.advertise(CapabilityAd(tools=("echo",), job_kinds=("5001",)))
        change = await feed.__anext__()                 # BridgeChange(..., state="due")
        node.health()["transport"]["nostr"]["bridge"]   # enqueued / published / pending
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from p2pworld.core.mirror import (
    PRESENCE_KIND,
    RELAY_LIST_KIND,
    presence_event,
    relay_list_event,
    workspace_tag,
)
from p2pworld.core.nostr_side import (
    RelayDiscovery,
    mark_change,
    presence_published,
    presence_wait,
)
from p2pworld.io.nostr_lane import NostrLane, NostrPipe
from p2pworld.io.nostr_outbox import Outbox
from p2pworld.io.nostr_relay import Bridge, RelayPool
from p2pworld.io.scopes import Failure, Supervisor, task
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey

FEED_BUFFER = 1024


@dataclass(frozen=True)
class BridgeChange:
    """One outbox change, as the bridge-adapter subscription yields it. ``state``: ``due``
    (enqueued), ``published`` (a relay answered ``OK true`` / ``duplicate:``) or ``retry``
    (refused or unanswered; retried later)."""

    event_id: str
    relay: str
    state: str
    source: str
    message: str = ""


class BridgeFeed:
    """Async iterator of :class:`BridgeChange` (the bridge-adapter subscription)."""

    def __init__(self, svc: NostrService, recv: trio.MemoryReceiveChannel[BridgeChange]
                 ) -> None:
        self._svc, self._recv = svc, recv

    def __aiter__(self) -> BridgeFeed:
        return self

    async def __anext__(self) -> BridgeChange:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None


class NostrService:
    """See the module docstring. ``on_candidate(key, node_id, nostr_pubkey)`` is called for
    each workspace peer seen on relays; ``on_pipe(pipe)`` for each pipe a peer opens."""

    def __init__(self, *, relays: list[str], key: NostrKey, node_id: bytes, workspace: str,
                 home: Path, lane: bool, presence: bool = True,
                 on_candidate: Callable[[str, bytes, bytes], None],
                 on_pipe: Callable[[NostrPipe], None],
                 status: Callable[[], str], rng: random.Random | None = None,
                 on_failure: Callable[[Failure], None] | None = None) -> None:
        self.key, self.node_id, self.workspace = key, node_id, workspace
        self.rng = rng or random.SystemRandom()
        self.pool = RelayPool(relays, key=key, rng=self.rng)
        self.relays = list(self.pool.urls)
        self.outbox = Outbox(home / "bridge.db", relays=self.relays)
        self.bridge = Bridge(self.outbox, self.pool, on_mark=self._on_mark)
        self.discovery = RelayDiscovery(key.public, node_id=node_id, workspace=workspace)
        self.peer_relays = self.discovery.peer_relays
        self.lane: NostrLane | None = (
            NostrLane(self.pool, key, on_incoming=on_pipe, rng=self.rng,
                      relays_of=self.discovery.relays_of) if lane else None)
        self.on_candidate, self.status, self.presence = on_candidate, status, presence
        self.on_failure = on_failure or (lambda f: None)
        """Told of every relay connection, lane or request here that ended with an error."""
        self._feeds: list[trio.MemorySendChannel[BridgeChange]] = []
        self.stats = {"enqueued": 0, "published": 0, "failed": 0, "feed_dropped": 0,
                      "presence_published": 0}

    def aux(self) -> bytes:
        return self.rng.getrandbits(256).to_bytes(32, "big")

    # --- the bridge outbox ---------------------------------------------------------------------

    async def enqueue(self, ev: Event, *, source: str, entry_hash: bytes) -> bool:
        """``enqueue_nostr_bridge_event`` (the node checks ``bridge:publish`` first)."""
        fresh = await trio.to_thread.run_sync(lambda: self.outbox.enqueue(
            ev, source=source, entry_hash=entry_hash, now=time.time()))
        if fresh:
            self.stats["enqueued"] += 1
            for r in self.relays:
                self._emit(BridgeChange(ev.id, r, "due", source))
            self.bridge.notify()
        return fresh

    def _on_mark(self, ev: Event, relay: str, ok: bool, message: str) -> None:
        counter, state, source = mark_change(ok, self.outbox.source_of(ev.id))
        self.stats[counter] += 1
        self._emit(BridgeChange(ev.id, relay, state, source, message))

    def _emit(self, change: BridgeChange) -> None:
        for ch in list(self._feeds):
            try:
                ch.send_nowait(change)
            except trio.WouldBlock:
                self.stats["feed_dropped"] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._feeds.remove(ch)

    def feed(self) -> BridgeFeed:
        """The bridge-adapter subscription: every outbox change from now on."""
        send, recv = trio.open_memory_channel[BridgeChange](FEED_BUFFER)
        self._feeds.append(send)
        return BridgeFeed(self, recv)

    def report(self) -> dict[str, Any]:
        return {"relays": {u: vars(h) for u, h in self.pool.health.items()},
                "bridge": {**self.stats, "pending": self.outbox.pending()},
                "lane": dict(self.lane.stats) if self.lane else None,
                "nostr_pubkey": self.key.public.hex()}

    # --- running ---------------------------------------------------------------------------

    @task("lane", restart=True)
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run the pool, the bridge, discovery, presence and the lane; each relay connection
        and each of them is its own scope (a failure restarts that one only)."""
        async with trio.open_nursery() as n:
            sup = Supervisor(n, on_failure=self._failed, rng=self.rng)
            self.bridge.on_failure = self.on_failure
            self.pool.attach(sup)
            sup.spawn(self.bridge.run, key="bridge")
            sup.spawn(self._discover, key="nostr-discovery")
            if self.presence:
                sup.spawn(self._presence, key="nostr-presence")
            if self.lane is not None:
                await sup.start(self.lane.run, key="nostr-lane")
            await self.enqueue(relay_list_event(
                self.key, relays=self.relays, workspace=self.workspace,
                created_at=int(time.time()), aux=self.aux()),
                source=f"relays:{self.node_id.hex()}", entry_hash=b"")
            task_status.started()

    def _failed(self, f: Failure) -> None:
        self.pool._failed(f)  # a relay connection's failure shows in its health too
        self.on_failure(f)

    def close(self) -> None:
        """Close the bridge outbox (when the node stops)."""
        self.outbox.close()

    @task("lane", restart=True)
    async def _discover(self) -> None:
        flt = {"kinds": [PRESENCE_KIND, RELAY_LIST_KIND], "#t": [workspace_tag(self.workspace)]}
        async with self.pool.subscribe(flt) as sub:
            async for ev in sub:
                peer = self.discovery.see(ev, now=time.time())
                if peer is not None:
                    self.on_candidate(peer.address, peer.node_id, peer.nostr)

    @task("lane", restart=True)
    async def _presence(self) -> None:
        """Publish this node's presence every :data:`~p2pworld.core.mirror.PRESENCE_EVERY_S`
        (replaceable; every second until a relay took it)."""
        while True:
            ev = presence_event(self.key, node=self.node_id, workspace=self.workspace,
                                status=self.status(), created_at=int(time.time()),
                                aux=self.aux())
            got = await self.pool.publish(ev, timeout=5.0)
            if presence_published(got):
                self.stats["presence_published"] += 1
            await trio.sleep(presence_wait(self.stats["presence_published"]))

    async def goodbye(self) -> None:
        """Publish ``offline`` presence (best effort, bounded)."""
        with trio.move_on_after(1.0):
            await self.pool.publish(presence_event(
                self.key, node=self.node_id, workspace=self.workspace, status="offline",
                created_at=int(time.time()), aux=self.aux()), timeout=1.0)
