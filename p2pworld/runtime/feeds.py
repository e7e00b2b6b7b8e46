"""What a node's reads return: verified messages, and the async iterators that follow a
channel, every channel of the node, the world and the compute market (each resumable from a
position it reports). The values and the cursors' decisions (what comes next, from where)
are a core's (:mod:`p2pworld.core.feeds`); these iterators check that the node is open, ask
their cursor for the next value, and wait on the node's events when there is none.

Example::

    cursor = node.channels.messages(chan.channel, after=0)
    async for msg in cursor:            # verified, in seq order, then live
        print(msg.seq, msg.payload)     # cursor.position is the last seq yielded
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from p2pworld.core.feeds import (
    ChannelCursor,
    ChannelMessage,
    ComputeCursor,
    ComputeEvent,
    NodeCursor,
    WorldCursor,
)
from p2pworld.runtime import edge
from p2pworld.world.core import WorldEvent

if TYPE_CHECKING:
    from p2pworld.runtime.node import Node


class MessageCursor(ChannelCursor):
    """An async iterator over a channel's verified messages, from a position onwards."""

    def __init__(self, node: Node, channel: bytes, after: int) -> None:
        super().__init__(channel, after)
        self._node = node

    def __aiter__(self) -> MessageCursor:
        return self

    async def __anext__(self) -> ChannelMessage:
        node = self._node
        while True:
            node._check_open()
            e = self.next_entry(node._hub.log(self.channel), node._readable_seq(self.channel))
            if e is not None:
                return ChannelMessage.from_entry(e, node)
            await node._changed_event(self.channel).wait()


class NodeSubscription(NodeCursor):
    """Node-scoped subscription: every channel this node participates in, each resumed after
    its checkpoint. Yields messages per channel in ``seq`` order (channels interleave)."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self._node = node
        self._readable = node._readable_seq

    def __aiter__(self) -> NodeSubscription:
        return self

    async def __anext__(self) -> ChannelMessage:
        node = self._node
        while True:
            node._check_open()
            e = self.next_entry(node._hub, self._readable)
            if e is not None:
                return ChannelMessage.from_entry(e, node)
            ev = node._any_delivered
            await ev.wait()


class WorldSubscription(WorldCursor):
    """Async iterator over world events from a position on (``position`` = last ``seq``).
    If events older than the core's history were needed, it yields one ``reset`` event
    (``node`` empty) and then a ``joined``/``updated`` event per member as it stands now."""

    def __init__(self, node: Node, after: int) -> None:
        super().__init__(after)
        self._node = node

    def __aiter__(self) -> WorldSubscription:
        return self

    async def __anext__(self) -> WorldEvent:
        node = self._node
        while not self._pending:
            node._check_open()
            if not self.refill(node._world, now_ms=edge.now_ms()):
                await node._world_changed.wait()
        return self.pop()


class ComputeFeed(ComputeCursor):
    """The provider-scoped subscription: async iterator of :class:`ComputeEvent`, live.

    ``cursor`` (channel id -> seq read up to) is where the feed stands; store it and pass it
    back to ``node.compute.feed(cursor=...)`` to resume after a restart, as with
    ``node.channels.subscribe()``: events are judged against each request as it stands when
    they are read, so a resumed feed never replays an assignment that no longer holds.
    """

    def __init__(self, node: Node, cursor: dict[bytes, int]) -> None:
        super().__init__(cursor)
        self._node = node

    def __aiter__(self) -> ComputeFeed:
        return self

    async def __anext__(self) -> ComputeEvent:
        node = self._node
        while True:
            node._check_open()
            ev = self.next_event(node._cores, node._node_id, now_ms=edge.now_ms())
            if ev is not None:
                return ev
            with trio.move_on_after(0.25):
                await node._any_delivered.wait()


__all__ = ["ChannelMessage", "MessageCursor", "NodeSubscription", "WorldSubscription",
           "ComputeEvent", "ComputeFeed"]
