"""The Nostr fallback lane: an ordinary p2pworld session carried by Nostr relays.

When no direct (or rendezvous-relayed) route reaches a peer and policy allows the Nostr lane,
a node opens a *pipe* to the peer's Nostr key and runs the same end-to-end authenticated,
encrypted session over it as over a websocket (:func:`~p2pworld.io.session.relayed_session`).
Everything above the pipe is unchanged: writers' signed submissions, the sequencer's idempotency
rules, acks, and subscribers catching up from their checkpoints all work as on the direct lane,
so forced-Nostr mode passes the same channel tests.

Wire format (documented in ``docs/nostr.md``): each pipe frame (at most
:data:`MAX_LANE_FRAME` bytes) travels as one or more events of kind :data:`LANE_KIND` (a
regular kind: relays store them, so a reconnecting subscriber misses nothing), tagged
``["p", <recipient pubkey>]`` and ``["expiration", <now + 600 s>]`` (NIP-40), signed by the
sender's NIP-06 key. The content is NIP-44 v2 ciphertext, for the recipient, of the base64 of a
canonical CBOR map ``{v, pipe, o, op, n, part, parts, d}``. Frames are split into parts sized to
the relays the frame goes to (:func:`part_size_for`: the largest part whose event content fits
every relay's NIP-11 ``max_content_length``, 4,096 characters where a relay publishes none, and
its ``max_message_length`` where published). Not gift-wrapped (NIP-59): the relay learns which
two Nostr keys talk and when, not what they say (the session inside is already encrypted end to
end, and private channel payloads are sealed with the channel key on top).

Reliability: frames carry a per-direction counter ``n``; the receiver reorders (up to
:data:`REORDER_WINDOW` frames ahead and :data:`MAX_BUFFERED` bytes), drops duplicates (the
same event from two relays), and closes the pipe if a gap stays open for :data:`GAP_TIMEOUT_S`
or if no relay accepts a frame. A closed pipe closes its session; the node redials and resumes
from its checkpoints, as after any lost connection.

The framing (:class:`LaneFrame`, :func:`split`, :class:`Reassembler`, :func:`part_size_for`) is
pure, in :mod:`p2pworld.nostr.lane_frames`; what the lane decides (which relays a frame goes
to, whether a relay took it, what an incoming event means, which pipes waited too long on a
gap) is its :class:`~p2pworld.nostr.lane_book.LaneBook` (pure); :class:`NostrLane` is the trio
shell that carries out what the book says.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import CloseReason, ConnectionClosed

from p2pworld.io.nostr_relay import RelayPool
from p2pworld.io.scopes import spawn_in, task
from p2pworld.nostr import nip44
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey
from p2pworld.nostr.lane_book import (
    Accept,
    End,
    Feed,
    LaneBook,
    check_frame,
    lane_targets,
    part_size_of,
)
from p2pworld.nostr.lane_frames import (
    DEFAULT_PART,
    EXPIRATION_S,
    LANE_KIND,
    OPEN_MAX_AGE_S,
    PIPE_QUEUE,
    SEND_WINDOW,
    LaneFrame,
    split,
)

__all__ = ["NostrLane", "NostrPipe", "part_size_of"]


class NostrPipe:
    """One pipe to a peer's Nostr key (a websocket look-alike for the session above)."""

    def __init__(self, lane: NostrLane, peer: bytes, pipe_id: bytes, opener: bool) -> None:
        self.lane, self.peer, self.pipe_id, self.opener = lane, peer, pipe_id, opener
        self._send, self._recv = trio.open_memory_channel[bytes](PIPE_QUEUE)
        self._n = 0
        self.rx = lane.book.opened((peer, pipe_id, opener))
        self.closed = False

    @property
    def address(self) -> str:
        return f"nostr:{self.peer.hex()}"

    async def get_message(self) -> bytes:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ConnectionClosed(CloseReason(1000, "nostr pipe closed")) from None

    async def send_message(self, data: bytes) -> None:
        """Send one pipe frame: parts sized to the relays it goes to, at most
        :data:`SEND_WINDOW` of them awaiting an ``OK`` at once. A frame over
        :data:`MAX_LANE_FRAME` raises :class:`~p2pworld.errors.NostrError` before anything is
        published (the pipe stays usable); no relay accepting a part ends the pipe
        (``ConnectionClosed``)."""
        if self.closed:
            raise ConnectionClosed(CloseReason(1000, "nostr pipe closed"))
        check_frame(data)
        targets = self.lane.targets(self.peer)
        parts = split(self.pipe_id, self.opener, self._n + 1, data,
                      part_size=self.lane.part_size(targets))
        self._n += 1
        if not await self._publish_parts(parts, targets):
            self._end()
            raise ConnectionClosed(CloseReason(1011, "no relay accepted a lane frame"))

    async def _publish_parts(self, parts: list[LaneFrame], targets: list[str]) -> bool:
        if len(parts) == 1:
            return await self.lane._publish(self.peer, parts[0], targets)
        window = trio.Semaphore(SEND_WINDOW)
        failed: list[bool] = []
        async with trio.open_nursery() as n:
            for part in parts:
                await window.acquire()
                if failed:
                    break
                spawn_in(n, self._publish_part, part, targets, window, failed)
        return not failed

    @task("peer", boundary=False)
    async def _publish_part(self, part: LaneFrame, targets: list[str], window: trio.Semaphore,
                            failed: list[bool]) -> None:
        """One part of a frame (a few are in flight at once, see SEND_WINDOW)."""
        try:
            if not await self.lane._publish(self.peer, part, targets):
                failed.append(True)  # no new parts; those in flight end by their timeout
        finally:
            window.release()

    async def aclose(self) -> None:
        if not self.closed:
            self._end()
            with trio.move_on_after(2):
                await self.lane._publish(self.peer, LaneFrame(
                    self.pipe_id, self.opener, "close", self._n + 1))

    def _feed(self, frames: list[bytes]) -> None:
        for data in frames:
            try:
                self._send.send_nowait(data)
            except trio.WouldBlock:
                self._end()  # the session above is not reading: end the pipe
                return
            except trio.ClosedResourceError:
                return

    def _end(self) -> None:
        self.closed = True
        self._send.close()
        key = (self.peer, self.pipe_id, self.opener)
        self.lane.pipes.pop(key, None)
        self.lane.book.closed(key)


class NostrLane:
    """Pipes to peers' Nostr keys over a :class:`~p2pworld.io.nostr_relay.RelayPool`.

    ``on_incoming(pipe)`` is called for every pipe a peer opens to us (the caller starts its
    session in a scope of its own); run :meth:`run` in a
    nursery. ``relays_of(peer)`` names extra relays a peer reads from (its NIP-65 list).
    """

    def __init__(self, pool: RelayPool, key: NostrKey, *,
                 on_incoming: Callable[[NostrPipe], None],
                 relays_of: Callable[[bytes], list[str]] | None = None,
                 rng: random.Random | None = None) -> None:
        self.pool, self.key, self.on_incoming = pool, key, on_incoming
        self.relays_of = relays_of or (lambda _: [])
        self.rng = rng or random.SystemRandom()
        self.pipes: dict[tuple[bytes, bytes, bool], NostrPipe] = {}
        self.book = LaneBook(key.secret)
        self.stats = self.book.stats
        self.ready = trio.Event()

    async def open_pipe(self, peer: bytes) -> NostrPipe:
        """Open a pipe to ``peer`` (an x-only Nostr public key)."""
        pid = self.rng.getrandbits(128).to_bytes(16, "big")
        pipe = self.pipes[(peer, pid, True)] = NostrPipe(self, peer, pid, True)
        self.stats["pipes_opened"] += 1
        if not await self._publish(peer, LaneFrame(pid, True, "open", 0)):
            pipe._end()
            raise ConnectionClosed(CloseReason(1011, "no relay accepted the lane open"))
        return pipe

    def targets(self, peer: bytes) -> list[str]:
        """The relays a frame to ``peer`` goes to: the configured relays and the peer's NIP-65
        relays (added to the pool here), less any whose published limits cannot carry a part
        of :data:`MIN_PART` bytes."""
        theirs = self.relays_of(peer)
        for url in theirs:
            self.pool.add_relay(url)
        return lane_targets(self.pool.urls, {*self.pool.configured, *theirs}, self.pool.limits)

    def part_size(self, targets: list[str]) -> int:
        """The part size for a frame to ``targets``: the smallest any of them needs. A relay
        whose NIP-11 limits are not known yet, or that published none, counts as
        :data:`DEFAULT_MAX_CONTENT` characters."""
        return min((part_size_of(self.pool.limits.get(u)) for u in targets),
                   default=DEFAULT_PART)

    async def _publish(self, peer: bytes, f: LaneFrame, targets: list[str] | None = None
                       ) -> bool:
        if targets is None:
            targets = self.targets(peer)
        now = int(time.time())
        content = nip44.encrypt(f.encode(), self.book.conversation_key(peer),
                                nonce=self.rng.getrandbits(256).to_bytes(32, "big"))
        ev = Event.create(self.key, kind=LANE_KIND, content=content,
                          tags=[["p", peer.hex()], ["expiration", str(now + EXPIRATION_S)]],
                          created_at=now, aux=self.rng.getrandbits(256).to_bytes(32, "big"))
        self.stats["frames_out"] += 1
        got = await self.pool.publish(ev, timeout=10.0, relays=targets, until_any=True)
        return self.book.answered(got)

    @task("lane", restart=True)
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        flt = {"kinds": [LANE_KIND], "#p": [self.key.public.hex()],
               "since": int(time.time()) - OPEN_MAX_AGE_S}
        async with self.pool.subscribe(flt) as sub, trio.open_nursery() as n:
            spawn_in(n, self._sweep)
            self.ready.set()
            task_status.started()
            async for ev in sub:
                self._on_event(ev)

    def _on_event(self, ev: Event) -> None:
        act = self.book.read(ev, now=time.time())
        carry = _CARRY.get(type(act))
        if carry is not None:
            carry(self, act)

    def _accept(self, a: Accept) -> None:
        peer, pipe_id, _ = a.key
        pipe = self.pipes[a.key] = NostrPipe(self, peer, pipe_id, False)
        self.on_incoming(pipe)

    def _fed(self, f: Feed) -> None:
        self.pipes[f.key]._feed(f.frames)

    def _ended(self, e: End) -> None:
        self.pipes[e.key]._end()

    @task("lane", boundary=False)
    async def _sweep(self) -> None:
        while True:
            await trio.sleep(1.0)
            for key in self.book.overdue(time.time()):
                self.pipes[key]._end()


_CARRY: dict[type, Callable[[NostrLane, Any], None]] = {
    Accept: NostrLane._accept, Feed: NostrLane._fed, End: NostrLane._ended}
"""How the lane carries out what its book makes of an incoming event."""
