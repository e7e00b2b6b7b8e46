"""The Nostr fallback lane: an ordinary p2pworld session carried by Nostr relays.

When no direct (or rendezvous-relayed) route reaches a peer and policy allows the Nostr lane,
a node opens a *pipe* to the peer's Nostr key and runs the same end-to-end authenticated,
encrypted session over it as over a websocket (:func:`~p2pworld.transport.session.relayed_session`).
Everything above the pipe is unchanged: writers' signed submissions, the sequencer's idempotency
rules, acks, and subscribers catching up from their checkpoints all work as on the direct lane,
so forced-Nostr mode passes the same channel tests.

Wire format (documented in ``docs/nostr.md``): each pipe frame travels as one or more events of
kind :data:`LANE_KIND` (a regular kind: relays store them, so a reconnecting subscriber misses
nothing), tagged ``["p", <recipient pubkey>]`` and ``["expiration", <now + 600 s>]`` (NIP-40),
signed by the sender's NIP-06 key. The content is NIP-44 v2 ciphertext, for the recipient, of
the base64 of a canonical CBOR map ``{v, pipe, o, op, n, part, parts, d}``. Frames are split into
parts of at most :data:`MAX_PART` bytes so every event's content stays below 4,096 characters.
Not gift-wrapped (NIP-59): the relay learns which two Nostr keys talk and when, not what they
say (the session inside is already encrypted end to end, and private channel payloads are sealed
with the channel key on top).

Reliability: frames carry a per-direction counter ``n``; the receiver reorders (up to
:data:`REORDER_WINDOW` frames ahead), drops duplicates (the same event from two relays), and
closes the pipe if a gap stays open for :data:`GAP_TIMEOUT_S` or if no relay accepts a frame.
A closed pipe closes its session; the node redials and resumes from its checkpoints, as after
any lost connection.

The framing (:class:`LaneFrame`, :func:`split`, :class:`Reassembler`) is pure; :class:`NostrLane`
is the trio shell.

Example:
    >>> parts = split(bytes(16), True, 7, b"x" * 4000)
    >>> [p.parts for p in parts][0], len(parts)
    (3, 3)
    >>> r = Reassembler()
    >>> r.feed(parts[2], now=0) + r.feed(parts[0], now=0) + r.feed(parts[1], now=0)
    []
    >>> r = Reassembler(next_n=7)
    >>> [len(f) for p in parts for f in r.feed(p, now=0)]
    [4000]
"""

from __future__ import annotations

import base64
import binascii
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from trio_websocket import CloseReason, ConnectionClosed

from p2pworld import codec
from p2pworld.errors import DecodeError, NostrError
from p2pworld.nostr import nip44
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey
from p2pworld.nostr.relay import RelayPool

LANE_KIND = 4242
"""A regular event kind (stored by relays) for lane frames."""
MAX_PART = 1536
"""Bytes of pipe frame per event: base64 + NIP-44 + base64 keeps content under 4,096 chars."""
MAX_PARTS = 64
"""Largest frame: 64 parts (96 KiB); session frames are bounded well below that."""
REORDER_WINDOW = 256
MAX_BUFFERED = 1 << 20
"""Bytes a pipe holds out of order before it gives up on the peer (a hostile sender could
otherwise park REORDER_WINDOW x MAX_PARTS parts)."""
MAX_INCOMING = 64
"""Pipes others opened to us that may be open at once (each runs a handshake)."""
MAX_PEER_KEYS = 4096
GAP_TIMEOUT_S = 20.0
OPEN_MAX_AGE_S = 120
"""An ``open`` older than this (by ``created_at``) is stale: ignored."""
EXPIRATION_S = 600
PIPE_QUEUE = 256
OPS = ("open", "data", "close")


@dataclass(frozen=True)
class LaneFrame:
    """One part of one pipe frame."""

    pipe: bytes
    opener: bool
    """True when sent by the side that opened the pipe."""
    op: str
    n: int
    part: int = 0
    parts: int = 1
    data: bytes = b""

    def encode(self) -> str:
        return base64.b64encode(codec.encode({
            "v": 1, "pipe": self.pipe, "o": self.opener, "op": self.op, "n": self.n,
            "part": self.part, "parts": self.parts, "d": self.data})).decode()

    @classmethod
    def decode(cls, text: str) -> LaneFrame:
        """Check everything; raises :class:`~p2pworld.errors.DecodeError`."""
        w = "lane frame"
        if len(text) > 4 * MAX_PART:
            raise DecodeError("lane frame too large")
        try:
            raw = base64.b64decode(text.encode(), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise DecodeError("lane frame is not base64") from None
        m = codec.need_map(codec.decode(raw), w)
        if codec.int_field(m, "v", w, hi=255) != 1:
            raise DecodeError("lane frame: unknown version")
        op = codec.str_field(m, "op", w, max_len=8)
        if op not in OPS:
            raise DecodeError("lane frame: unknown op")
        parts = codec.int_field(m, "parts", w, lo=1, hi=MAX_PARTS)
        part = codec.int_field(m, "part", w, hi=parts - 1)
        data = codec.bytes_field(m, "d", w)
        if len(data) > MAX_PART:
            raise DecodeError("lane frame part too large")
        return cls(pipe=codec.bytes_field(m, "pipe", w, size=16),
                   opener=codec.field(m, "o", bool, w), op=op,
                   n=codec.int_field(m, "n", w, hi=2**40), part=part, parts=parts, data=data)


def split(pipe: bytes, opener: bool, n: int, data: bytes) -> list[LaneFrame]:
    """``data`` (one pipe frame) as parts of at most :data:`MAX_PART` bytes."""
    chunks = [data[i:i + MAX_PART] for i in range(0, len(data), MAX_PART)] or [b""]
    if len(chunks) > MAX_PARTS:
        raise NostrError("frame too large for the Nostr lane", size=len(data))
    return [LaneFrame(pipe, opener, "data", n, i, len(chunks), c) for i, c in enumerate(chunks)]


@dataclass
class Reassembler:
    """Puts one direction of a pipe back in order: whole frames, each once, in ``n`` order.

    ``gap_since``: when the oldest still-missing frame was first found missing (None: no gap).
    """

    next_n: int = 1
    gap_since: float | None = None
    _parts: dict[int, dict[int, LaneFrame]] = field(default_factory=dict)
    _held: int = 0

    def feed(self, f: LaneFrame, *, now: float) -> list[bytes]:
        if f.n < self.next_n or f.n >= self.next_n + REORDER_WINDOW:
            return []  # a duplicate, or too far ahead (the sender would be misbehaving)
        got = self._parts.setdefault(f.n, {})
        first = next(iter(got.values()), None)
        if first is not None and first.parts != f.parts:
            raise DecodeError("lane frame: inconsistent part count")
        if f.part not in got:
            got[f.part] = f
            self._held += len(f.data)
            if self._held > MAX_BUFFERED:
                raise DecodeError("lane: too much buffered out of order")
        out: list[bytes] = []
        while (p := self._parts.get(self.next_n)) is not None and len(p) == next(
                iter(p.values())).parts:
            out.append(b"".join(p[i].data for i in range(len(p))))
            self._held -= sum(len(x.data) for x in p.values())
            del self._parts[self.next_n]
            self.next_n += 1
        self.gap_since = (None if not self._parts else
                          (self.gap_since if self.gap_since is not None and not out else now))
        return out


class NostrPipe:
    """One pipe to a peer's Nostr key (a websocket look-alike for the session above)."""

    def __init__(self, lane: NostrLane, peer: bytes, pipe_id: bytes, opener: bool) -> None:
        self.lane, self.peer, self.pipe_id, self.opener = lane, peer, pipe_id, opener
        self._send, self._recv = trio.open_memory_channel[bytes](PIPE_QUEUE)
        self._n = 0
        self.rx = Reassembler()
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
        if self.closed:
            raise ConnectionClosed(CloseReason(1000, "nostr pipe closed"))
        self._n += 1
        for part in split(self.pipe_id, self.opener, self._n, data):
            if not await self.lane._publish(self.peer, part):
                self._end()
                raise ConnectionClosed(CloseReason(1011, "no relay accepted a lane frame"))

    async def aclose(self) -> None:
        if not self.closed:
            self._end()
            with trio.move_on_after(2):
                await self.lane._publish(self.peer, LaneFrame(
                    self.pipe_id, self.opener, "close", self._n + 1))

    def _feed(self, f: LaneFrame, now: float) -> None:
        try:
            frames = self.rx.feed(f, now=now)
        except DecodeError:
            self.lane.stats["bad_frames"] += 1
            self._end()
            return
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
        self.lane.pipes.pop((self.peer, self.pipe_id, self.opener), None)


class NostrLane:
    """Pipes to peers' Nostr keys over a :class:`~p2pworld.nostr.relay.RelayPool`.

    ``on_incoming(pipe)`` is started for every pipe a peer opens to us; run :meth:`run` in a
    nursery. ``relays_of(peer)`` names extra relays a peer reads from (its NIP-65 list).
    """

    def __init__(self, pool: RelayPool, key: NostrKey, *,
                 on_incoming: Callable[[NostrPipe], Awaitable[None]],
                 relays_of: Callable[[bytes], list[str]] | None = None,
                 rng: random.Random | None = None) -> None:
        self.pool, self.key, self.on_incoming = pool, key, on_incoming
        self.relays_of = relays_of or (lambda _: [])
        self.rng = rng or random.SystemRandom()
        self.pipes: dict[tuple[bytes, bytes, bool], NostrPipe] = {}
        self._conv: dict[bytes, bytes] = {}
        self.stats = {"frames_out": 0, "frames_in": 0, "bad_frames": 0, "refused": 0,
                      "pipes_opened": 0, "pipes_accepted": 0, "gap_closed": 0,
                      "refused_opens": 0}
        self.ready = trio.Event()

    def _conv_key(self, peer: bytes) -> bytes:
        k = self._conv.get(peer)
        if k is None:
            if len(self._conv) >= MAX_PEER_KEYS:
                self._conv.clear()
            k = self._conv[peer] = nip44.conversation_key(self.key.secret, peer)
        return k

    async def open_pipe(self, peer: bytes) -> NostrPipe:
        """Open a pipe to ``peer`` (an x-only Nostr public key)."""
        pid = self.rng.getrandbits(128).to_bytes(16, "big")
        pipe = self.pipes[(peer, pid, True)] = NostrPipe(self, peer, pid, True)
        self.stats["pipes_opened"] += 1
        if not await self._publish(peer, LaneFrame(pid, True, "open", 0)):
            pipe._end()
            raise ConnectionClosed(CloseReason(1011, "no relay accepted the lane open"))
        return pipe

    async def _publish(self, peer: bytes, f: LaneFrame) -> bool:
        now = int(time.time())
        content = nip44.encrypt(f.encode(), self._conv_key(peer),
                                nonce=self.rng.getrandbits(256).to_bytes(32, "big"))
        ev = Event.create(self.key, kind=LANE_KIND, content=content,
                          tags=[["p", peer.hex()], ["expiration", str(now + EXPIRATION_S)]],
                          created_at=now, aux=self.rng.getrandbits(256).to_bytes(32, "big"))
        for url in self.relays_of(peer):
            self.pool.add_relay(url)
        self.stats["frames_out"] += 1
        got = await self.pool.publish(ev, timeout=10.0, until_any=True)
        if any(o is not None and (o.ok or o.prefix == "duplicate") for o in got.values()):
            return True
        self.stats["refused"] += 1
        return False

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        flt = {"kinds": [LANE_KIND], "#p": [self.key.public.hex()],
               "since": int(time.time()) - OPEN_MAX_AGE_S}
        async with self.pool.subscribe(flt) as sub, trio.open_nursery() as n:
            n.start_soon(self._sweep)
            self.ready.set()
            task_status.started()
            async for ev in sub:
                self._on_event(ev, n)

    def _on_event(self, ev: Event, n: trio.Nursery) -> None:
        try:
            peer = bytes.fromhex(ev.pubkey)
            f = LaneFrame.decode(nip44.decrypt(ev.content, self._conv_key(peer)))
        except (DecodeError, NostrError, ValueError):
            self.stats["bad_frames"] += 1
            return
        self.stats["frames_in"] += 1
        now = time.time()
        key = (peer, f.pipe, not f.opener)  # our side's view: we opened it iff it did not
        pipe = self.pipes.get(key)
        if pipe is None:
            incoming = sum(1 for k in self.pipes if not k[2])
            if incoming >= MAX_INCOMING:
                self.stats["refused_opens"] += 1
                return
            if f.op == "open" and f.opener and ev.created_at >= now - OPEN_MAX_AGE_S:
                pipe = self.pipes[key] = NostrPipe(self, peer, f.pipe, False)
                self.stats["pipes_accepted"] += 1
                n.start_soon(self.on_incoming, pipe)
            return
        if f.op == "close":
            pipe._end()
        elif f.op == "data":
            pipe._feed(f, now)

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(1.0)
            now = time.time()
            for pipe in list(self.pipes.values()):
                if pipe.rx.gap_since is not None and now - pipe.rx.gap_since > GAP_TIMEOUT_S:
                    self.stats["gap_closed"] += 1
                    pipe._end()
