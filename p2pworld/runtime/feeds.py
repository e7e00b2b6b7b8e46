"""What a node's reads return: verified messages, and the async iterators that follow a
channel, every channel of the node, the world and the compute market (each resumable from a
position it reports).

Example::

    cursor = node.channels.messages(chan.channel, after=0)
    async for msg in cursor:            # verified, in seq order, then live
        print(msg.seq, msg.payload)     # cursor.position is the last seq yielded
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from p2pworld.compute.state import Request as ComputeRequest
from p2pworld.errors import P2PWorldError
from p2pworld.runtime import edge
from p2pworld.world.core import WorldEvent

if TYPE_CHECKING:
    from p2pworld.log.entry import Entry
    from p2pworld.runtime.node import Node


@dataclass(frozen=True, kw_only=True)
class ChannelMessage:
    """One delivered message, verified (writer signature, hash chain, sequencer head)."""

    channel: bytes
    seq: int
    sender: bytes
    payload: bytes
    entry_hash: bytes
    sequencer_time_ms: int
    kind: str = "msg"
    """``msg`` (application payload) or ``ctl`` (membership / lifecycle entry)."""
    readable: bool = True
    """False when a private channel's payload could not be opened on this node (it was sent
    under a key this node never held); ``payload`` is then the sealed bytes."""
    lane: str | None = None
    """How this node received the entry: ``direct``, ``relay`` (rendezvous), ``nostr``, or
    ``local`` (this node sequenced it); None when it arrived before this node's last start
    (or beyond the last :data:`~p2pworld.core.lanes.LANE_MEMORY` entries of the channel)."""

    @classmethod
    def from_entry(cls, e: Entry, node: Node) -> ChannelMessage:
        readable = True
        try:
            payload = node._hub.open_payload(e)
        except P2PWorldError:
            payload, readable = e.payload, False
        return cls(channel=e.channel, seq=e.seq, sender=e.sender, payload=payload,
                   entry_hash=e.hash, sequencer_time_ms=e.sequencer_time, kind=e.kind,
                   readable=readable, lane=node.lane_of(e.channel, e.seq))


class MessageCursor:
    """An async iterator over a channel's verified messages, from a position onwards."""

    def __init__(self, node: Node, channel: bytes, after: int) -> None:
        self._node = node
        self.channel = channel
        self.position = after

    def __aiter__(self) -> MessageCursor:
        return self

    async def __anext__(self) -> ChannelMessage:
        while True:
            self._node._check_open()
            log = self._node._hub.log(self.channel)
            ents = log.entries
            top = self._node._readable_seq(self.channel)
            self.position = min(self.position, log.seq)  # a recovery truncated the log
            if self.position < top:
                e = ents[self.position - log.floor] if self.position >= log.floor else None
                if e is None:
                    # Below retention: skip to what is held (the node reported it).
                    self.position = log.floor
                    continue
                self.position += 1
                return ChannelMessage.from_entry(e, self._node)
            await self._node._changed_event(self.channel).wait()


class NodeSubscription:
    """Node-scoped subscription: every channel this node participates in, each resumed after
    its checkpoint. Yields messages per channel in ``seq`` order (channels interleave)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._pos: dict[bytes, int] = {}

    def __aiter__(self) -> NodeSubscription:
        return self

    async def __anext__(self) -> ChannelMessage:
        node = self._node
        while True:
            node._check_open()
            for rec in sorted(node._hub.records(), key=lambda r: r.channel):
                ch = rec.channel
                if not node._hub.participates(ch):
                    continue
                if ch not in self._pos:
                    cp = node._hub.cursors.get(ch)
                    self._pos[ch] = cp.seq if cp else 0
                log = node._hub.log(ch)
                pos = max(min(self._pos[ch], log.seq), log.floor)
                if pos < node._readable_seq(ch):
                    self._pos[ch] = pos + 1
                    return ChannelMessage.from_entry(log.entries[pos - log.floor], node)
            ev = node._any_delivered
            await ev.wait()


class WorldSubscription:
    """Async iterator over world events from a position on (``position`` = last ``seq``).
    If events older than the core's history were needed, it yields one ``reset`` event
    (``node`` empty) and then a ``joined``/``updated`` event per member as it stands now."""

    def __init__(self, node: Node, after: int) -> None:
        self._node = node
        self.position = after
        self._pending: list[WorldEvent] = []

    def __aiter__(self) -> WorldSubscription:
        return self

    async def __anext__(self) -> WorldEvent:
        node = self._node
        while not self._pending:
            node._check_open()
            evs, lost = node._world.events_after(self.position)
            if lost:
                now = edge.now_ms()
                last = node._world.event_seq
                self._pending = [WorldEvent(seq=last, kind="reset", node=b"", at_ms=now)] + [
                    WorldEvent(seq=last, kind="joined" if m.state == "online" else "updated",
                               node=m.node_id, at_ms=now) for m in node.members()]
                self.position = last
                break
            if evs:
                self._pending = evs
                break
            await node._world_changed.wait()
        ev = self._pending.pop(0)
        self.position = max(self.position, ev.seq)
        return ev


@dataclass(frozen=True)
class ComputeEvent:
    """What :class:`ComputeFeed` yields: ``kind`` is ``request`` (a request this node's live
    ad satisfies, open, not offered on yet), ``assigned`` (the requester assigned it to this
    node: accept it or reject it) or ``reopened`` (its assignee lapsed or rejected it and it
    is open again); ``request`` as it stands now; ``seq`` the entry of the requester's compute
    channel that says so. Unpacks as ``(channel, request)``."""

    kind: str
    channel: bytes
    request: ComputeRequest
    seq: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.channel, self.request))


class ComputeFeed:
    """The provider-scoped subscription: async iterator of :class:`ComputeEvent`, live.

    ``cursor`` (channel id -> seq read up to) is where the feed stands; store it and pass it
    back to ``node.compute.feed(cursor=...)`` to resume after a restart, as with
    ``node.channels.subscribe()``: events are judged against each request as it stands when
    they are read, so a resumed feed never replays an assignment that no longer holds.
    """

    def __init__(self, node: Node, cursor: dict[bytes, int]) -> None:
        self._node = node
        self.cursor = dict(cursor)
        self._ready: list[ComputeEvent] = []

    def __aiter__(self) -> ComputeFeed:
        return self

    async def __anext__(self) -> ComputeEvent:
        node = self._node
        while True:
            node._check_open()
            if self._ready:
                return self._ready.pop(0)
            compute = node._cores.compute
            assert compute is not None
            me = node.member(node._node_id)
            now = edge.now_ms()
            for log in node._cores.compute_logs():
                ch = log.record.channel
                events, upto = compute.provider_events(
                    log, me.caps if me else None, after=self.cursor.get(ch, 0), now_ms=now)
                self.cursor[ch] = upto
                st = compute.state(log)
                self._ready += [ComputeEvent(ev.kind, ch, st.requests[ev.rid], ev.seq)
                                for ev in events]
            if not self._ready:
                with trio.move_on_after(0.25):
                    await node._any_delivered.wait()


__all__ = ["ChannelMessage", "MessageCursor", "NodeSubscription", "WorldSubscription",
           "ComputeEvent", "ComputeFeed"]
