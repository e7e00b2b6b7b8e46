"""The Nostr fallback lane: an ordinary p2pworld session carried by Nostr relays.

When no direct (or rendezvous-relayed) route reaches a peer and policy allows the Nostr lane,
a node opens a *pipe* to the peer's Nostr key and runs the same end-to-end authenticated,
encrypted session over it as over a websocket (:func:`~p2pworld.transport.session.relayed_session`).
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
pure; :class:`NostrLane` is the trio shell.

Example:
    >>> part_size_for(4096), part_size_for(16384)
    (1849, 7609)
    >>> parts = split(bytes(16), True, 7, b"x" * 4000, part_size=1849)
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
import functools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from trio_websocket import CloseReason, ConnectionClosed

from p2pworld import codec
from p2pworld.errors import DecodeError, NostrError
from p2pworld.nostr import nip44
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey
from p2pworld.nostr.nip11 import RelayLimits
from p2pworld.nostr.relay import RelayPool
from p2pworld.scopes import spawn_in, task

LANE_KIND = 4242
"""A regular event kind (stored by relays) for lane frames."""
MAX_LANE_FRAME = 512 * 1024
"""Largest pipe frame the lane carries (bytes); a larger one is refused with
:class:`~p2pworld.errors.NostrError` before anything is published. Session frames are at most
256 KiB + 64 bytes."""
DEFAULT_MAX_CONTENT = 4096
"""Event content limit (characters) assumed for a relay that publishes no NIP-11
``max_content_length`` (``nostr-relay``'s default ``max_event_size``)."""
MIN_PART = 256
"""Smallest part a sender may use: a relay whose limits cannot carry a part this large gets no
lane frames (:func:`part_size_for` raises). Every part of a frame but the last has the same size,
at least this many bytes."""
MAX_PARTS = -(-MAX_LANE_FRAME // MIN_PART)
"""Most parts of one frame (2,048: the largest frame in the smallest parts)."""
EVENT_OVERHEAD = 512
"""Bytes of a lane event's ``["EVENT", {...}]`` message besides its content (measured: 456
with compact JSON, 10-digit ``created_at`` and 11-digit ``expiration``), for NIP-11
``max_message_length``."""
REORDER_WINDOW = 256
"""Frames a receiver accepts ahead of the next one it waits for."""
MAX_BUFFERED = 4 << 20
"""Bytes a pipe holds out of order before it gives up on the peer: a few whole
:data:`MAX_LANE_FRAME` frames arriving out of order across two relays fit."""
MAX_HELD_PARTS = MAX_BUFFERED // MIN_PART
"""Parts a pipe holds out of order (16,384) before it gives up on the peer."""
SEND_WINDOW = 8
"""Parts of one frame in flight at once (each waits for a relay's ``OK``)."""
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
        if len(text) > nip44.MAX_PLAINTEXT:
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
        if len(data) > PART_CAP:
            raise DecodeError("lane frame part too large")
        if part < parts - 1 and len(data) < MIN_PART:
            raise DecodeError("lane frame: a part before the last is too small")
        return cls(pipe=codec.bytes_field(m, "pipe", w, size=16),
                   opener=codec.field(m, "o", bool, w), op=op,
                   n=codec.int_field(m, "n", w, hi=2**40), part=part, parts=parts, data=data)


def _content_chars(plaintext_len: int) -> int:
    """Characters of the NIP-44 v2 payload of a ``plaintext_len``-byte plaintext: base64 of
    version (1) + nonce (32) + length prefix (2) + padded plaintext + MAC (32)."""
    return 4 * -(-(1 + 32 + 2 + nip44.padded_len(plaintext_len) + 32) // 3)


def _worst_plaintext(k: int) -> int:
    """Characters of the base64 CBOR of a part carrying ``k`` bytes with worst-case header
    values (``n`` = 2**40, ``part``/``parts`` at their maximum, the longest op)."""
    worst = LaneFrame(bytes(16), True, max(OPS, key=len), 2**40, MAX_PARTS - 1, MAX_PARTS,
                      bytes(k))
    return len(worst.encode())


@functools.lru_cache(maxsize=256)
def part_size_for(max_content_chars: int, max_message_chars: int | None = None) -> int:
    """The largest number of frame bytes per part such that the event's content (NIP-44 v2 of
    the base64 of a worst-case :class:`LaneFrame`) is at most ``max_content_chars``
    characters, the NIP-44 plaintext at most 65,535 bytes, and, if given, the whole client
    message (content + :data:`EVENT_OVERHEAD`) at most ``max_message_chars``. Raises
    :class:`~p2pworld.errors.NostrError` if that is below :data:`MIN_PART`.

    >>> part_size_for(10**9)
    49078
    >>> part_size_for(1 << 20, 8192)
    3769
    """
    def fits(k: int) -> bool:
        plain = _worst_plaintext(k)
        if plain > nip44.MAX_PLAINTEXT:
            return False
        chars = _content_chars(plain)
        return chars <= max_content_chars and (
            max_message_chars is None or chars + EVENT_OVERHEAD <= max_message_chars)

    if not fits(MIN_PART):
        raise NostrError("relay limits too small for the Nostr lane",
                         max_content_length=max_content_chars,
                         max_message_length=max_message_chars)
    lo, hi = MIN_PART, nip44.MAX_PLAINTEXT  # fits(lo); the answer is below hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def part_size_of(limits: RelayLimits | None) -> int:
    """:func:`part_size_for` a relay's published limits (None: no NIP-11 document)."""
    if limits is None:
        return part_size_for(DEFAULT_MAX_CONTENT)
    return part_size_for(limits.max_content_length or DEFAULT_MAX_CONTENT,
                         limits.max_message_length)


DEFAULT_PART = part_size_for(DEFAULT_MAX_CONTENT)
"""Bytes per part for a relay publishing no limits (1,849 for 4,096 characters)."""
MAX_PART = DEFAULT_PART
"""The former fixed part size's name: now the default part size (:data:`DEFAULT_PART`)."""
PART_CAP = part_size_for(10**9)
"""The largest part any conforming sender produces (49,078 bytes: the NIP-44 plaintext limit);
the receiver accepts parts up to this size."""


def split(pipe: bytes, opener: bool, n: int, data: bytes, *,
          part_size: int = DEFAULT_PART) -> list[LaneFrame]:
    """``data`` (one pipe frame, at most :data:`MAX_LANE_FRAME` bytes) as parts of
    ``part_size`` bytes (the last one shorter); :class:`~p2pworld.errors.NostrError` if the
    frame is too large or ``part_size`` is not in :data:`MIN_PART`..:data:`PART_CAP`."""
    if len(data) > MAX_LANE_FRAME:
        raise NostrError("frame too large for the Nostr lane", size=len(data),
                         limit=MAX_LANE_FRAME)
    if not MIN_PART <= part_size <= PART_CAP:
        raise NostrError("lane part size out of range", part_size=part_size)
    chunks = [data[i:i + part_size] for i in range(0, len(data), part_size)] or [b""]
    return [LaneFrame(pipe, opener, "data", n, i, len(chunks), c) for i, c in enumerate(chunks)]


@dataclass
class _Pending:
    """The parts of one frame received so far."""

    parts: int
    got: dict[int, bytes] = field(default_factory=dict)
    size: int | None = None
    """Length of the parts before the last (all equal), once one has arrived."""
    last: int | None = None
    """Length of the last part, once it has arrived."""
    held: int = 0


@dataclass
class Reassembler:
    """Puts one direction of a pipe back in order: whole frames, each once, in ``n`` order.

    Bounds (a :class:`~p2pworld.errors.DecodeError` when broken, and the pipe ends): frames
    up to :data:`REORDER_WINDOW` ahead (further ones are ignored), at most :data:`MAX_BUFFERED`
    bytes and :data:`MAX_HELD_PARTS` parts held, no frame above :data:`MAX_LANE_FRAME` bytes,
    and the parts of a frame consistent (one part count; every part but the last the same
    size, the last no larger).

    ``gap_since``: when the oldest still-missing frame was first found missing (None: no gap).
    """

    next_n: int = 1
    gap_since: float | None = None
    _frames: dict[int, _Pending] = field(default_factory=dict)
    _held: int = 0
    _held_parts: int = 0

    @property
    def held(self) -> int:
        """Bytes held (parts of frames not yet delivered)."""
        return self._held

    def feed(self, f: LaneFrame, *, now: float) -> list[bytes]:
        if f.n < self.next_n or f.n >= self.next_n + REORDER_WINDOW:
            return []  # a duplicate, or too far ahead (the sender would be misbehaving)
        p = self._frames.get(f.n)
        if p is None:
            p = self._frames[f.n] = _Pending(f.parts)
        if p.parts != f.parts:
            raise DecodeError("lane frame: inconsistent part count")
        if f.part not in p.got:
            size = len(f.data)
            if f.part < f.parts - 1:
                if p.size is None:
                    p.size = size
                elif size != p.size:
                    raise DecodeError("lane frame: parts of unequal size")
            else:
                p.last = size
            if p.size is not None and (
                    (p.last is not None and p.last > p.size)
                    or (p.parts - 1) * p.size + (p.last or 0) > MAX_LANE_FRAME):
                raise DecodeError("lane frame: inconsistent or too large")
            p.got[f.part] = f.data
            p.held += size
            self._held += size
            self._held_parts += 1
            if self._held > MAX_BUFFERED or self._held_parts > MAX_HELD_PARTS:
                raise DecodeError("lane: too much buffered out of order")
        out: list[bytes] = []
        while (q := self._frames.get(self.next_n)) is not None and len(q.got) == q.parts:
            out.append(b"".join(q.got[i] for i in range(q.parts)))
            self._held -= q.held
            self._held_parts -= q.parts
            del self._frames[self.next_n]
            self.next_n += 1
        self.gap_since = (None if not self._frames else
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
        """Send one pipe frame: parts sized to the relays it goes to, at most
        :data:`SEND_WINDOW` of them awaiting an ``OK`` at once. A frame over
        :data:`MAX_LANE_FRAME` raises :class:`~p2pworld.errors.NostrError` before anything is
        published (the pipe stays usable); no relay accepting a part ends the pipe
        (``ConnectionClosed``)."""
        if self.closed:
            raise ConnectionClosed(CloseReason(1000, "nostr pipe closed"))
        if len(data) > MAX_LANE_FRAME:
            raise NostrError("frame too large for the Nostr lane", size=len(data),
                             limit=MAX_LANE_FRAME)
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

    def targets(self, peer: bytes) -> list[str]:
        """The relays a frame to ``peer`` goes to: the configured relays and the peer's NIP-65
        relays (added to the pool here), less any whose published limits cannot carry a part
        of :data:`MIN_PART` bytes."""
        theirs = self.relays_of(peer)
        for url in theirs:
            self.pool.add_relay(url)
        wanted = {*self.pool.configured, *theirs}
        out = []
        for url in self.pool.urls:
            if url in wanted:
                try:
                    part_size_of(self.pool.limits.get(url))
                except NostrError:
                    continue  # this relay could not carry any useful part
                out.append(url)
        return out

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
        content = nip44.encrypt(f.encode(), self._conv_key(peer),
                                nonce=self.rng.getrandbits(256).to_bytes(32, "big"))
        ev = Event.create(self.key, kind=LANE_KIND, content=content,
                          tags=[["p", peer.hex()], ["expiration", str(now + EXPIRATION_S)]],
                          created_at=now, aux=self.rng.getrandbits(256).to_bytes(32, "big"))
        self.stats["frames_out"] += 1
        got = await self.pool.publish(ev, timeout=10.0, relays=targets, until_any=True)
        if any(o is not None and (o.ok or o.prefix == "duplicate") for o in got.values()):
            return True
        self.stats["refused"] += 1
        return False

    @task("lane", restart=True)
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        flt = {"kinds": [LANE_KIND], "#p": [self.key.public.hex()],
               "since": int(time.time()) - OPEN_MAX_AGE_S}
        async with self.pool.subscribe(flt) as sub, trio.open_nursery() as n:
            spawn_in(n, self._sweep)
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
                self.on_incoming(pipe)
            return
        if f.op == "close":
            pipe._end()
        elif f.op == "data":
            pipe._feed(f, now)

    @task("lane", boundary=False)
    async def _sweep(self) -> None:
        while True:
            await trio.sleep(1.0)
            now = time.time()
            for pipe in list(self.pipes.values()):
                if pipe.rx.gap_since is not None and now - pipe.rx.gap_since > GAP_TIMEOUT_S:
                    self.stats["gap_closed"] += 1
                    pipe._end()
