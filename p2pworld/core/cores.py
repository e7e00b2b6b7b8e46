"""The cores of one node, built and wired in one place.

Both the trio node runtime (:mod:`p2pworld.runtime.node`) and the simulator
(:mod:`p2pworld.testing.sim`) build a node's protocol cores with :func:`build_cores` and route
session events through :class:`Cores`, so a simulated node runs exactly the logic a real one
runs. Pure: no I/O.

Example:
    >>> import random
    >>> from p2pworld.identity import Ed25519Signer
    >>> c = build_cores(Ed25519Signer(bytes(32)), workspace="lab", rng=random.Random(0),
    ...                 incarnation=1)
    >>> c.hub.workspace, c.world.inc
    ('lab', 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2pworld.auth.book import TokenBook
from p2pworld.channel.hub import ChannelHub, Effect, Notice
from p2pworld.compute.core import ComputeCore
from p2pworld.compute.state import REQUESTER_OPS, decode_event
from p2pworld.core.routes import ROUTES, message_scope
from p2pworld.effects import (
    CloseSession,
    ConnectRendezvous,
    Dial,
    PeerMisbehaved,
    ProbeStore,
    RefreshToken,
)
from p2pworld.errors import P2PWorldError, RemoteProtocolError
from p2pworld.identity import Signer, node_id, verify_raw
from p2pworld.log.entry import Submission
from p2pworld.log.sequencer import ChannelLog
from p2pworld.wire import Message
from p2pworld.world.core import WorldConfig, WorldCore, WorldEffect
from p2pworld.world.records import Verifier

if TYPE_CHECKING:
    import random

NodeEffect = (Effect | WorldEffect | RefreshToken | CloseSession | Dial | ProbeStore
              | ConnectRendezvous)
"""Any effect a node's cores (and its node core) emit."""

WORLD_MESSAGES = tuple(t for t, r in ROUTES.items() if r.core == "world")
"""The world core's messages (kept for importers; :data:`~p2pworld.core.routes.ROUTES` decides)."""


@dataclass
class Cores:
    """A node's channel hub and world core, and the routing between them and its sessions."""

    hub: ChannelHub
    world: WorldCore
    auth: TokenBook | None = None
    compute: ComputeCore | None = None
    _token_noticed: P2PWorldError | None = field(default=None, repr=False)

    def compute_logs(self) -> list[ChannelLog]:
        """Every compute channel this node holds (its own and the ones it replicates)."""
        assert self.compute is not None
        return [self.hub.log(r.channel) for r in self.hub.records()
                if self.compute.is_compute(r)]

    def own_compute(self) -> ChannelLog | None:
        """This node's own compute channel (it owns it: its requests live there), whether it
        sequences it now or handed sequencing to another node."""
        assert self.compute is not None
        me = self.hub.signer.public_key
        for r in sorted(self.hub.records(), key=lambda r: r.channel):
            if self.compute.is_compute(r) and r.owner_key == me:
                return self.hub.log(r.channel)
        return None

    def drive_compute(self, *, now_ms: int) -> list[NodeEffect]:
        """The requester's duties on its own compute channel (assign, lapse, expire), as
        idempotent publishes; stale = not online in this node's world view."""
        if self.compute is None:
            return []
        log = self.own_compute()
        if log is None:
            return []

        def stale(nid: bytes) -> bool:
            m = self.world.member(nid, now_ms=now_ms)
            return m is None or m.state != "online"

        fx: list[NodeEffect] = []
        for it in self.compute.drive(log, now_ms=now_ms, stale=stale):
            _, more = self.hub.publish(log.record.channel, it.payload, idem_key=it.key,
                                       now_ms=now_ms)
            fx += more
        return fx

    def compute_open(self) -> bool:
        """Whether this node's own compute channel has requests not yet decided (its duties
        depend on offers and presence, so the node core runs them every tick meanwhile)."""
        log = self.own_compute() if self.compute is not None else None
        return log is not None and self.compute is not None and any(
            not r.terminal for r in self.compute.state(log).requests.values())

    def is_own_compute(self, channel: bytes) -> bool:
        if self.compute is None:
            return False
        try:
            rec = self.hub.record(channel)
        except P2PWorldError:
            return False
        return self.compute.is_compute(rec) and rec.owner_key == self.hub.signer.public_key

    def wake_at(self) -> int | None:
        """When the world's or the channels' timers next have something to do (a handoff's
        or an election's bound among them)."""
        book = self.hub.handoffs
        times = [self.world.wake_at(), self.hub.wake_at(), self.hub.elections.wake_at(),
                 book.wake_at() if book.pending or book.seeking else None]
        return min((t for t in times if t is not None), default=None)

    def clock_went_back(self, by_ms: int) -> None:
        self.world.clock_went_back(by_ms)
        self.hub.clock_went_back(by_ms)
        self.hub.handoffs.clock_went_back(by_ms)
        self.hub.elections.clock_went_back(by_ms)

    def peer_up(self, peer: bytes, key: bytes, *, now_ms: int) -> list[NodeEffect]:
        return [*self.hub.peer_up(peer, key), *self.world.peer_up(peer, key, now_ms=now_ms)]

    def peer_down(self, peer: bytes) -> list[NodeEffect]:
        return [*self.hub.peer_down(peer), *self.world.peer_down(peer)]

    def own_world(self, fx: list[WorldEffect]) -> list[NodeEffect]:
        """A best-effort update of this node's own world document (a link, a session); if it
        was skipped because this node's own token no longer covers it (expired in a control
        outage, revoked), a notice, once per cause."""
        out: list[NodeEffect] = list(fx)
        refused = self.world.own_refused
        if refused is not None and refused is not self._token_noticed:
            self._token_noticed = refused
            out.append(Notice(b"", refused, scope="node", subject="token"))
        return out

    def receive(self, peer: bytes, msg: Message, *, now_ms: int) -> list[NodeEffect]:
        """Hand ``msg`` to the core :data:`~p2pworld.core.routes.ROUTES` names (keepalive
        messages are the node core's: nothing here); a type with no route is a typed refusal."""
        route = ROUTES.get(type(msg))
        if route is None:
            err = RemoteProtocolError(f"no route for message type {type(msg).__name__}")
            return [PeerMisbehaved(peer, err)]
        if route.core == "world":
            return list[NodeEffect](self.world.receive(peer, msg, now_ms=now_ms))
        if route.core == "hub":
            return list(self.hub.receive(peer, msg, now_ms=now_ms))
        return []

    def tick(self, *, now_ms: int) -> list[NodeEffect]:
        """The cores' timers: presence and gossip, the channels' start-up exchange, the
        handoffs of a leaving node, the bounds of elections."""
        return [*self.world.tick(now_ms=now_ms), *self.hub.tick(now_ms=now_ms),
                *self.hub.expire_handoffs(now_ms=now_ms),
                *self.hub.expire_elections(now_ms=now_ms)]


def build_cores(signer: Signer, *, workspace: str, rng: random.Random, incarnation: int,
                world_records: list[list[bytes]] | None = None,
                world_config: WorldConfig | None = None,
                verifier: Verifier = verify_raw, token: bytes = b"",
                auth: TokenBook | None = None) -> Cores:
    """Build a node's cores. ``incarnation`` must already be durably bumped for this run.
    ``auth``: the token book every mutation is checked against (None: an open world)."""
    hub = ChannelHub(signer, workspace=workspace, rng=rng, auth=auth, message_scope=message_scope)
    world = WorldCore(signer, inc=incarnation, rng=rng, config=world_config, verifier=verifier,
                      stored=world_records, token=token, auth=auth)
    compute = ComputeCore(node_id(signer.public_key))

    def validate(log: ChannelLog, sub: Submission, now_ms: int) -> None:
        if compute.is_compute(log.record):
            if auth is not None:
                op = decode_event(sub.payload).get("op")
                auth.check(sub.sender_key, "compute:request" if op in REQUESTER_OPS
                           else "compute:provide", now=now_ms / 1000)
            compute.validate(log, sub.sender, sub.payload)

    hub.validator = validate
    return Cores(hub, world, auth, compute)
