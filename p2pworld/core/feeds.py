"""What a node's reads yield, and where each reader stands (pure).

The values (:class:`ChannelMessage`, :class:`ComputeEvent`) and the cursors' decisions: the
next entry of a channel from a position (clamped to a truncated log, skipping what retention
dropped), the next entry across every channel the node participates in (each resumed after
its checkpoint), the next world event (a ``reset`` and a rebuild when the history no longer
reaches back), the next compute event for a provider (resumable from a per-channel cursor).
The trio iterators of :mod:`p2pworld.runtime.feeds` subclass these cursors: they only check
that the node is open, ask for the next value, and wait on the node's events when there is
none.

Example:
    >>> import random
    >>> from p2pworld.core.calls import OpenChannel, Publish
    >>> from p2pworld.core.cores import build_cores
    >>> from p2pworld.core.node import Flush, NodeCore
    >>> from p2pworld.identity import Ed25519Signer
    >>> core = NodeCore(build_cores(Ed25519Signer(bytes(32)), workspace="lab",
    ...                             rng=random.Random(0), incarnation=1))
    >>> rec = core.handle(OpenChannel(name="notes"), now_ms=0).result
    >>> for k in (b"k1", b"k2"):
    ...     _ = core.handle(Publish(channel=rec.channel, payload=k, idem_key=k), now_ms=0)
    >>> _ = core.handle(Flush(), now_ms=0)
    >>> cur = ChannelCursor(rec.channel, 1)
    >>> log = core.cores.hub.log(rec.channel)
    >>> cur.next_entry(log, top=log.seq).payload, cur.position
    (b'k2', 2)
    >>> cur.next_entry(log, top=log.seq) is None  # nothing more: wait for the channel
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from p2pworld.compute.state import Request as ComputeRequest
from p2pworld.errors import P2PWorldError
from p2pworld.world.core import WorldEvent

if TYPE_CHECKING:
    from p2pworld.channel.hub import ChannelHub
    from p2pworld.core.cores import Cores
    from p2pworld.log.entry import Entry
    from p2pworld.log.sequencer import ChannelLog
    from p2pworld.world.core import WorldCore


class EntryReader(Protocol):
    """What turns an entry into a message: the node's channel hub (it opens private
    payloads) and the lane each entry arrived by."""

    @property
    def _hub(self) -> ChannelHub: ...

    def lane_of(self, channel: bytes, seq: int) -> str | None: ...


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
    def from_entry(cls, e: Entry, node: EntryReader) -> ChannelMessage:
        """The message of entry ``e`` as ``node`` reads it: its payload opened by the node's
        hub (a private channel's payload this node cannot open stays sealed,
        ``readable=False``), the lane it arrived by."""
        readable = True
        try:
            payload = node._hub.open_payload(e)
        except P2PWorldError:
            payload, readable = e.payload, False
        return cls(channel=e.channel, seq=e.seq, sender=e.sender, payload=payload,
                   entry_hash=e.hash, sequencer_time_ms=e.sequencer_time, kind=e.kind,
                   readable=readable, lane=node.lane_of(e.channel, e.seq))


class ChannelCursor:
    """Where a reader of one channel stands: ``position`` is the last ``seq`` yielded."""

    def __init__(self, channel: bytes, after: int) -> None:
        self.channel = channel
        self.position = after

    def next_entry(self, log: ChannelLog, top: int) -> Entry | None:
        """The next entry of ``log`` up to ``top`` (the last readable seq), moving past it;
        None when there is none yet. A recovery that truncated the log pulls the position
        back to its head; entries below retention are skipped (the node reported them)."""
        self.position = min(self.position, log.seq)
        while self.position < top:
            e = log.entries[self.position - log.floor] if self.position >= log.floor else None
            if e is not None:
                self.position += 1
                return e
            self.position = log.floor
        return None


class NodeCursor:
    """Where a node-scoped reader stands in each channel the node participates in (each
    starts after the node's checkpoint of it)."""

    def __init__(self) -> None:
        self._pos: dict[bytes, int] = {}

    def next_entry(self, hub: ChannelHub, readable: Callable[[bytes], int]) -> Entry | None:
        """The next readable entry (``readable(channel)``: its last readable seq) of the
        first channel, by id, that has one, moving past it; None when none has."""
        for rec in sorted(hub.records(), key=lambda r: r.channel):
            ch = rec.channel
            if not hub.participates(ch):
                continue
            if ch not in self._pos:
                cp = hub.cursors.get(ch)
                self._pos[ch] = cp.seq if cp else 0
            log = hub.log(ch)
            pos = max(min(self._pos[ch], log.seq), log.floor)
            if pos < readable(ch):
                self._pos[ch] = pos + 1
                return log.entries[pos - log.floor]
        return None


class WorldCursor:
    """Where a reader of world events stands (``position`` = last ``seq``), with the events
    read but not yet yielded."""

    def __init__(self, after: int) -> None:
        self.position = after
        self._pending: list[WorldEvent] = []

    def refill(self, world: WorldCore, *, now_ms: int) -> bool:
        """Read the events after ``position``; True if there are some to yield. If the
        world's history no longer reaches back, one ``reset`` event (``node`` empty) and then
        a ``joined`` (online) / ``updated`` event per member as it stands at ``now_ms``."""
        evs, lost = world.events_after(self.position)
        if lost:
            last = world.event_seq
            self._pending = [WorldEvent(seq=last, kind="reset", node=b"", at_ms=now_ms)] + [
                WorldEvent(seq=last, kind="joined" if m.state == "online" else "updated",
                           node=m.node_id, at_ms=now_ms) for m in world.members(now_ms=now_ms)]
            self.position = last
        elif evs:
            self._pending = evs
        return bool(self._pending)

    def pop(self) -> WorldEvent:
        """The next pending event (after :meth:`refill` said there is one)."""
        ev = self._pending.pop(0)
        self.position = max(self.position, ev.seq)
        return ev


@dataclass(frozen=True)
class ComputeEvent:
    """What :class:`~p2pworld.runtime.feeds.ComputeFeed` yields: ``kind`` is ``request`` (a
    request this node's live ad satisfies, open, not offered on yet), ``assigned`` (the
    requester assigned it to this node: accept it or reject it) or ``reopened`` (its assignee
    lapsed or rejected it and it is open again); ``request`` as it stands now; ``seq`` the
    entry of the requester's compute channel that says so. Unpacks as ``(channel, request)``."""

    kind: str
    channel: bytes
    request: ComputeRequest
    seq: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.channel, self.request))


class ComputeCursor:
    """Where a provider's compute feed stands: ``cursor`` maps each compute channel to the
    seq read up to; events are judged against each request as it stands when read."""

    def __init__(self, cursor: dict[bytes, int]) -> None:
        self.cursor = dict(cursor)
        self._ready: list[ComputeEvent] = []

    def next_event(self, cores: Cores, node_id: bytes, *, now_ms: int) -> ComputeEvent | None:
        """The next event for provider ``node_id`` (its live ad, at ``now_ms``, decides what
        it may run), reading every compute channel past the cursor when none is waiting;
        None when there is none."""
        if not self._ready:
            compute = cores.compute
            assert compute is not None
            me = cores.world.member(node_id, now_ms=now_ms)
            for log in cores.compute_logs():
                ch = log.record.channel
                events, upto = compute.provider_events(
                    log, me.caps if me else None, after=self.cursor.get(ch, 0), now_ms=now_ms)
                self.cursor[ch] = upto
                st = compute.state(log)
                self._ready += [ComputeEvent(ev.kind, ch, st.requests[ev.rid], ev.seq)
                                for ev in events]
        return self._ready.pop(0) if self._ready else None


__all__ = ["ChannelCursor", "ChannelMessage", "ComputeCursor", "ComputeEvent", "EntryReader",
           "NodeCursor", "WorldCursor"]
