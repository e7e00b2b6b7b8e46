"""The Nostr lane's framing (pure): pipe frames as parts of NIP-44 sealed events.

Each pipe frame (at most :data:`MAX_LANE_FRAME` bytes) travels as one or more
:class:`LaneFrame` parts sized to the relays (:func:`part_size_for`), and the receiver puts
them back in order with a :class:`Reassembler`. The trio shell that publishes and subscribes is
:mod:`p2pworld.io.nostr_lane`; the simulator runs this same framing.

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
from dataclasses import dataclass, field

from p2pworld import codec
from p2pworld.errors import DecodeError, NostrError
from p2pworld.nostr import nip44

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
