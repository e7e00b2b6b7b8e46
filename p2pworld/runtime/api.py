"""A running node's API, by what it is for: ``node.channels``, ``node.world``,
``node.compute``, ``node.bridge`` and ``node.peers``.

Each is a small view of one :class:`~p2pworld.runtime.node.Node` (it holds no state of its
own): the calls an application makes, checked at the edge (a wrong argument is a typed
``InvalidArgument``), every one raising :class:`~p2pworld.errors.NodeClosed` once the node has
stopped. The node's flat methods (``node.publish``, ``node.members``, ...) are the same calls
under their earlier names, kept for at least one release.

Example::

    async with open_node(NodeConfig(home=Path("/tmp/a"), workspace="lab")) as node:
        chan = await node.channels.open("general")
        await node.channels.publish(chan.channel, b"hello")
        print([m.node_id.hex()[:8] for m in node.world.members()])
        await node.peers.wait(1, timeout=30)
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import trio

from p2pworld.channel.hub import ChannelHub, Checkpoint, PublishResult
from p2pworld.compute.core import COMPUTE_CHANNEL
from p2pworld.compute.keys import op_key
from p2pworld.compute.state import Request as ComputeRequest, encode_event
from p2pworld.core.answers import (
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
from p2pworld.core.calls import (
    AckMessage,
    AddParticipant,
    Advertise,
    CloseChannel,
    Elect,
    Handoff,
    Heartbeat,
    Publish,
    Recover,
    RemoveParticipant,
    authorize,
    check_channel_name,
    check_compute_request,
    check_cursor,
    election_timeout_ms,
    need_count,
    publish_key,
    relays_configured,
)
from p2pworld.core.statistics import PeerInfo, peer_info, peer_infos
from p2pworld.errors import Conflict, P2PWorldError
from p2pworld.identity import Signer
from p2pworld.io.nostr_service import BridgeFeed
from p2pworld.log.entry import ChannelPolicy, ChannelRecord
from p2pworld.log.state import EpochChange
from p2pworld.nostr.event import Event as NostrEvent
from p2pworld.runtime import edge
from p2pworld.runtime.edge import need, need_timeout
from p2pworld.runtime.feeds import ComputeFeed, MessageCursor, NodeSubscription, WorldSubscription
from p2pworld.world.core import Member
from p2pworld.world.doc import CapabilityAd

if TYPE_CHECKING:
    from p2pworld.runtime.node import Node


class _Part:
    """One sub-API: a view of the node it was made for."""

    __slots__ = ("_node",)

    def __init__(self, node: Node) -> None:
        self._node = node

    @property
    def _hub(self) -> ChannelHub:
        return self._node._hub


class Channels(_Part):
    """Channels: open one, publish, read, follow every channel, membership, epochs
    (``node.channels``). Calling it, ``node.channels()``, lists the channels this node knows
    (the flat method it replaces)."""

    __slots__ = ()

    async def open(self, name: str, *, private: bool = False,
                   participants: tuple[bytes, ...] = (),
                   policy: ChannelPolicy | None = None,
                   authority_key: bytes | None = None) -> ChannelRecord:
        """``open_channel``: open (or reopen) a channel sequenced by this node.

        Args:
            private: payloads are end-to-end encrypted with a channel key shared with
                participants only.
            participants: node public keys allowed besides this node (empty and not private:
                open to the workspace).
            policy: retention, replication factor ``k``, Nostr mirror / fallback flags, the
                payload limit ``max_payload`` (default 1 MiB, at most 16 MiB).
            authority_key: signs unplanned handoffs (default: this node's key).

        Names starting with ``~`` are the library's own (``InvalidArgument``).
        """
        check_channel_name(name, policy)
        return await self._node._open_channel(name, private=private, participants=participants,
                                              policy=policy, authority_key=authority_key)

    def __call__(self) -> list[ChannelRecord]:
        """The channels this node knows (as :meth:`known`)."""
        return self.known()

    def known(self) -> list[ChannelRecord]:
        """The channels this node knows: opened here, announced by a peer, or loaded."""
        return self._hub.records()

    async def wait(self, name: str, *, timeout: float | None = None) -> ChannelRecord:
        """Wait until a channel called ``name`` is known (opened here or announced by a
        peer). Raises :class:`~p2pworld.errors.WaitTimeout` after ``timeout`` seconds (None:
        no bound), :class:`~p2pworld.errors.NodeClosed` if the node stops meanwhile."""
        need(name, str, "name")
        return await self._node._until(lambda: channel_ready(self._hub, name),
                                       lambda: self._node._channels_changed, timeout,
                                       f"channel {name!r}")

    async def publish(self, channel: bytes, payload: bytes, *, key: bytes | None = None,
                      durability: str = "local", timeout: float = 10.0) -> PublishResult:
        """``publish_message``: returns once the sequencer acknowledged the message.

        ``key`` is the idempotency key (unique if omitted: a random prefix drawn at start
        and a counter): publishing again with the same key and payload returns the original
        ``seq`` (``status="duplicate"``); with another payload it raises
        :class:`~p2pworld.errors.Conflict`. ``durability="replicated"`` waits until k
        participants besides the sequencer have the entry on disk.

        Raises:
            PublishTimeout: the outcome is indeterminate. A submission to a remote sequencer
                stays in the durable outbox and is resubmitted with the same key when a lane
                returns; calling ``publish`` again with the same key is also safe.
            Conflict, NotSequencer, NotParticipant, ChannelClosed: the publish was refused.
        """
        node = self._node
        node._check_open()
        key = publish_key(channel, payload, key, durability, timeout, node._key_prefix,
                          node._key_counter)
        if awaits_channel_key(self._hub, channel):
            with trio.move_on_after(timeout):
                # A member that just learned of a private channel may not hold its key yet:
                # the rekey entry is on its way. Wait for the channel to move, then try again.
                while not self._hub.channel_keys(channel):
                    await self._node._changed_event(channel).wait()
        req = node._call(Publish(channel=channel, payload=payload, idem_key=key, want=durability))
        return await node._await_outcome(req, timeout, key)

    async def add_participant(self, channel: bytes, member: bytes,
                              timeout: float = 10.0) -> PublishResult:
        """Owner only: add a member (a sequenced control entry; private channels rekey)."""
        self._node._check_open()
        need_timeout(timeout)
        req = self._node._call(AddParticipant(channel=channel, member=member))
        return await self._node._await_outcome(req, timeout, b"")

    async def remove_participant(self, channel: bytes, member: bytes,
                                 timeout: float = 10.0) -> PublishResult:
        """Owner only: remove a member; on private channels the key is rotated."""
        self._node._check_open()
        need_timeout(timeout)
        req = self._node._call(RemoveParticipant(channel=channel, member=member))
        return await self._node._await_outcome(req, timeout, b"")

    async def close(self, channel: bytes, timeout: float = 10.0) -> PublishResult:
        """``close_channel`` (owner only): no more appends; readers can still catch up."""
        self._node._check_open()
        need_timeout(timeout)
        req = self._node._call(CloseChannel(channel=channel))
        return await self._node._await_outcome(req, timeout, b"")

    async def handoff(self, channel: bytes, next_sequencer: bytes) -> EpochChange:
        """Planned handoff of a channel this node sequences to ``next_sequencer`` (a key)."""
        self._node._check_open()
        ec: EpochChange = self._node._call(Handoff(channel=channel,
                                                   next_sequencer=next_sequencer))
        await self._node._settle()
        return ec

    async def recover(self, channel: bytes, authority: Signer,
                      new_sequencer: bytes) -> EpochChange:
        """Unplanned handoff, signed by the channel's authority key (see ``docs/``)."""
        self._node._check_open()
        ec: EpochChange = self._node._call(Recover(channel=channel, authority=authority,
                                                   new_sequencer=new_sequencer))
        await self._node._settle()
        return ec

    async def elect(self, channel: bytes, *, timeout: float = 5.0) -> EpochChange:
        """Become ``channel``'s sequencer by election: its sequencer is gone and this node is
        one of its voters (a majority channel, the default; ``docs/guarantees.md``,
        failover). Returns the signed epoch change once a quorum voted, within ``timeout``
        seconds. Raises ``NoQuorum`` (nothing changed: refused by too many voters, or no
        quorum in time), or at once when this node sequences it, is not a voter, or the
        channel fails over by its authority key (``recover``). Example::

            ec = await node.channels.elect(channel)  # ec.epoch, ec.start_seq
        """
        self._node._check_open()
        self._node._call(Elect(channel=channel, timeout_ms=election_timeout_ms(timeout)))
        await self._node._settle()
        book = self._hub.elections
        while channel in book.campaigns:
            self._node._check_open()
            await self._node._channels_changed.wait()
        outcome = book.outcomes[channel]  # kept: every caller waiting on it gets it
        if isinstance(outcome, P2PWorldError):
            raise outcome
        return outcome

    async def ack(self, channel: bytes, seq: int) -> Checkpoint | None:
        """``ack_message``: durably record that this node consumed ``channel`` up to ``seq``."""
        self._node._check_open()
        self._node._call(AckMessage(channel=channel, seq=seq))
        await self._node._settle()
        return self._hub.cursors.get(channel)

    def checkpoint(self, channel: bytes) -> Checkpoint | None:
        need(channel, bytes, "channel")
        return self._hub.cursors.get(channel)

    def messages(self, channel: bytes, *, after: int = 0) -> MessageCursor:
        """Every message of ``channel`` with ``seq > after``, in order, then live ones.

        Returns an async iterator (not a generator, so breaking out of ``async for`` needs no
        cleanup); ``cursor.position`` is the last ``seq`` yielded.
        """
        self._node._check_open()
        need(channel, bytes, "channel")
        need_count(after, "after")
        self._hub.record(channel)  # raises UnknownChannel now, not on first iteration
        return MessageCursor(self._node, channel, after)

    def subscribe(self) -> NodeSubscription:
        """The node-scoped subscription: traffic of every channel this node participates in,
        resumed after each channel's checkpoint (``ack``), live after that."""
        return NodeSubscription(self._node)

    def sequencer_of(self, channel: bytes) -> bytes:
        """The node id of the channel's current sequencer, as this node knows it."""
        need(channel, bytes, "channel")
        return self._hub.sequencer_of(channel)

    def lane_of(self, channel: bytes, seq: int) -> str | None:
        """The lane this node received entry ``seq`` of ``channel`` by (see
        :attr:`~p2pworld.runtime.feeds.ChannelMessage.lane`)."""
        need(channel, bytes, "channel")
        need_count(seq, "seq")
        return self._node.lane_of(channel, seq)

    def head(self, channel: bytes) -> tuple[int, bytes]:
        """The channel's head as this node holds it: ``(seq, entry hash)``."""
        need(channel, bytes, "channel")
        return self._hub.head(channel)

    def state_hash(self, channel: bytes) -> bytes:
        """The hash of the channel's folded state at this node's head: equal on two nodes
        at one head (``node.state_hash(ch) == other.state_hash(ch)``), and what ``p2pworld
        log verify`` prints from the store. Raises ``UnknownChannel``."""
        self._node._check_open()
        need(channel, bytes, "channel")
        return self._hub.log(channel).state.state_hash()


class World(_Part):
    """The world: presence, capability ads, the capability query and world events
    (``node.world``)."""

    __slots__ = ()

    async def advertise(self, ad: CapabilityAd) -> None:
        """``advertise_capabilities``: publish (replace) this node's capability ad (and, with
        relays, mirror it as NIP-89 handler information)."""
        self._node._check_open()
        self._node._call(Advertise(ad=ad))
        await self._node._settle()
        await self._node._mirror_ad(ad)

    async def heartbeat(self, status: str = "online") -> None:
        """``heartbeat``: beat now (the node also beats every ``world.heartbeat_ms``);
        ``status`` is ``online`` or ``busy``."""
        self._node._check_open()
        self._node._call(Heartbeat(status=status))
        await self._node._settle()

    def members(self) -> list[Member]:
        """Every node of the world this node knows (itself included), with presence."""
        return self._node._world.members(now_ms=edge.now_ms())

    def member(self, nid: bytes) -> Member | None:
        need(nid, bytes, "nid")
        return self._node._world.member(nid, now_ms=edge.now_ms())

    def query(self, match: Any) -> list[Member]:
        """The capability query: live members whose unexpired ad satisfies ``match(ad)``."""
        return self._node._world.query(match, now_ms=edge.now_ms())

    def events(self, *, after: int = 0) -> WorldSubscription:
        """The workspace-scoped subscription: ``joined`` / ``updated`` / ``stale`` / ``left``
        events after position ``after`` (``event.seq``), then live ones."""
        need_count(after, "after")
        return WorldSubscription(self._node, after)

    async def changed(self) -> None:
        """Wait until the world changes as this node sees it (a record, a heartbeat, a
        member's state). Expiry of an ad is judged at read time and is no event."""
        node = self._node
        node._check_open()
        await node._world_changed.wait()
        node._check_open()

    async def wait_member(self, nid: bytes, state: str = "online", *,
                          timeout: float | None = None) -> Member:
        """Wait until ``nid`` is known here in ``state`` (and, for ``online``, its document
        has arrived too: heartbeats may overtake it). Typed timeout as :meth:`Channels.wait`."""
        need(nid, bytes, "nid")
        return await self._node._until(lambda: member_ready(self.member(nid), state),
                                       lambda: self._node._world_changed, timeout,
                                       f"member {nid.hex()[:16]} {state}")


class Compute(_Part):
    """Compute jobs: request one, and as a provider see, offer, accept and complete them
    (``node.compute``)."""

    __slots__ = ()

    async def channel(self) -> ChannelRecord:
        """This node's compute channel (opened on first use): its requests live there, and
        this node, sequencing it, is the one writer that decides each assignment."""
        node = self._node
        log = node._cores.own_compute()
        if log is not None:
            return log.record
        return await node._open_channel(COMPUTE_CHANNEL, policy=compute_channel_policy(
            node._config.mirror, node._config.relays))

    async def request(self, job: bytes, *, kind: str = "5000",
                      needs: tuple[str, ...] = (), price: int = 0, sla_ms: int = 0,
                      policy: str = "first", policy_class: str = "free",
                      expires_in: float = 300.0) -> tuple[bytes, str]:
        """``request_compute``: returns ``(channel, request id)``. ``needs``: tools, models or
        job kinds a provider's ad must list; ``policy``: ``first`` (default),
        ``lowest_price`` or ``best_sla``; ``policy_class="paid"`` waits for :meth:`paid`."""
        check_compute_request(job, kind=kind, needs=needs, price=price, sla_ms=sla_ms,
                              policy=policy, policy_class=policy_class, expires_in=expires_in)
        rec = await self.channel()
        rid = secrets.token_hex(8)
        await self._node.channels.publish(rec.channel, encode_event(
            "request", rid=rid, kind=kind, job=job, policy=policy, price=price, sla_ms=sla_ms,
            needs=list(needs), expires=edge.now_ms() + int(expires_in * 1000),
            **{"class": policy_class}), key=f"{rid}/request".encode())
        return rec.channel, rid

    def get(self, channel: bytes, rid: str) -> ComputeRequest | None:
        """A request as this node's copy of the requester's log says it stands."""
        assert self._node._cores.compute is not None
        return self._node._cores.compute.state(self._hub.log(channel)).requests.get(rid)

    def eligible(self) -> list[tuple[bytes, ComputeRequest]]:
        """The provider-scoped query: open requests this node's live ad satisfies."""
        cores = self._node._cores
        assert cores.compute is not None
        now = edge.now_ms()
        return cores.compute.eligible(cores.compute_logs(),
                                      provider_ad(cores.world, self._node._node_id, now_ms=now),
                                      now_ms=now)

    async def _compute_op(self, channel: bytes, rid: str, op: str, **fields: Any) -> PublishResult:
        key = op_key(rid, op, by=self._node._node_id, attempt=int(fields.get("attempt", 0)))
        try:
            return await self._node.channels.publish(channel, encode_event(op, rid=rid, **fields),
                                                     key=key)
        except Conflict as e:
            e.details.update(conflict_details(self.get(channel, rid)))
            raise

    async def offer(self, channel: bytes, rid: str, *, price: int = 0,
                    sla_ms: int = 0) -> PublishResult:
        """Offer to run a request. Raises ``Conflict`` (with ``details["assignee"]``) if it
        is already assigned to someone else."""
        return await self._compute_op(channel, rid, "offer", price=price, sla_ms=sla_ms)

    async def accept(self, channel: bytes, rid: str) -> PublishResult:
        """``accept_compute``: the assigned provider accepts (``Conflict`` for anyone else)."""
        attempt = attempt_of(self.get(channel, rid))
        return await self._compute_op(channel, rid, "accept", attempt=attempt)

    async def reject(self, channel: bytes, rid: str, reason: str) -> PublishResult:
        """``reject_compute``: the assigned provider declines; the next offer is assigned."""
        attempt = attempt_of(self.get(channel, rid))
        return await self._compute_op(channel, rid, "reject", attempt=attempt, reason=reason)

    async def complete(self, channel: bytes, rid: str, data: bytes, *,
                       status: str = "success") -> PublishResult:
        """The accepted provider returns the result (``success``, ``error`` or ``partial``)."""
        return await self._compute_op(channel, rid, "result", status=status, data=data)

    async def cancel(self, channel: bytes, rid: str) -> PublishResult:
        """The requester cancels a request that has not ended."""
        return await self._compute_op(channel, rid, "cancel")

    async def paid(self, channel: bytes, rid: str) -> PublishResult:
        """The requester marks a ``paid``-class job paid (payment itself is the runtime's)."""
        return await self._compute_op(channel, rid, "paid")

    def feed(self, *, cursor: dict[bytes, int] | None = None) -> ComputeFeed:
        """The provider-scoped subscription (live): requests this node's live ad satisfies,
        assignments to this node (a reassignment after another provider lapsed too) and
        requests that reopened, as :class:`ComputeEvent` s. Resume from a stored
        ``feed.cursor``.

        Example (a provider's loop)::

            async for ev in node.compute_feed():
                if ev.kind in ("request", "reopened"):
                    await node.offer_compute(ev.channel, ev.request.rid)
                elif ev.kind == "assigned":
                    await node.accept_compute(ev.channel, ev.request.rid)
                    await node.complete_compute(ev.channel, ev.request.rid, run(ev.request))
        """
        return ComputeFeed(self._node, check_cursor(cursor))

    async def wait(self, channel: bytes, rid: str,
                   until: Any = lambda r: r.terminal, *,
                   timeout: float | None = None) -> ComputeRequest:
        """Wait until the request satisfies ``until`` (default: a terminal phase). Typed
        timeout as :meth:`Channels.wait`."""
        need(channel, bytes, "channel")
        return await self._node._until(lambda: request_ready(self.get(channel, rid), until),
                                       lambda: self._node._changed_event(channel), timeout,
                                       f"compute request {rid}")


class Bridge(_Part):
    """The Nostr bridge outbox: events mirrored to the configured relays (``node.bridge``)."""

    __slots__ = ()

    async def enqueue(self, ev: NostrEvent, *, source: str,
                      entry_hash: bytes) -> bool:
        """``enqueue_nostr_bridge_event``: store a signed Nostr event in the durable bridge
        outbox, once per event id, to be published on every configured relay. ``source`` is
        the p2pworld id it mirrors and ``entry_hash`` the log entry / record hash (the
        mapping is kept both ways). Needs ``bridge:publish``; False if already held.

        Raises:
            LocalProtocolError: no relays configured. Unauthorized / ScopeDenied: no scope.
        """
        node = self._node
        nostr = relays_configured(node._nostr)
        authorize(node._cores.auth, node._identity.public_key, "enqueue_nostr_bridge_event",
                  now=time.time())
        return await nostr.enqueue(ev, source=source, entry_hash=entry_hash)

    def feed(self) -> BridgeFeed:
        """The bridge-adapter subscription: every outbox change (``due``, ``published``,
        ``retry``) from now on, per event and relay."""
        return relays_configured(self._node._nostr).feed()

    def source(self, event_id: str) -> str | None:
        """The p2pworld id a bridged Nostr event mirrors (None: not one of ours)."""
        return outbox_of(self._node._nostr).source_of(event_id)

    def pending(self) -> int:
        """Deliveries (event and relay) waiting to be published (0: no relays)."""
        return outbox_of(self._node._nostr).pending()

    def events(self, source: str) -> list[str]:
        """The Nostr event ids mirroring a p2pworld id (oldest first)."""
        return outbox_of(self._node._nostr).events_for(source)


class Peers(_Part):
    """The node's peers: who is known and connected, by which lane; the transport mode
    (``node.peers``)."""

    __slots__ = ()

    def known(self) -> list[PeerInfo]:
        """Every peer this node knows (discovered, dialled or connected), by node id."""
        node = self._node
        return peer_infos(sorted(node._peers), node._peers, node._sessions)

    def connected(self) -> list[PeerInfo]:
        """The peers with an authenticated session now, by node id."""
        node = self._node
        return peer_infos(sorted(node._sessions), node._peers, node._sessions)

    def get(self, node_id: bytes) -> PeerInfo | None:
        """What this node knows of one peer (None: nothing)."""
        need(node_id, bytes, "node_id")
        node = self._node
        return peer_info(node_id, node._peers.get(node_id), node._sessions.get(node_id))

    async def wait(self, count: int, *, timeout: float | None = None) -> None:
        """Wait until at least ``count`` peers have authenticated sessions. Typed timeout
        as :meth:`Channels.wait`."""
        need_count(count, "count")
        node = self._node
        await node._until(lambda: enough_peers(node._sessions, count),
                          lambda: node._peers_changed, timeout, f"{count} peers")

    async def changed(self) -> None:
        """Wait until a peer is found, connects, disconnects or changes state."""
        node = self._node
        node._check_open()
        await node._peers_changed.wait()
        node._check_open()

    @property
    def transport_mode(self) -> str:
        """The effective transport mode (``primary-only``, ``primary-with-fallback``,
        ``forced-nostr``); settable at run time."""
        return self._node.transport_mode

    @transport_mode.setter
    def transport_mode(self, mode: str) -> None:
        self._node.transport_mode = mode

    @property
    def other_workspaces(self) -> dict[str, int]:
        """Workspaces of peers discovered but not joined (at most 64 names), by sightings."""
        return dict(self._node.other_workspaces)


__all__ = ["Channels", "World", "Compute", "Bridge", "Peers", "PeerInfo"]
