"""Session framing (pure): encoded messages in, frame plaintexts out, and back.

A session frame's plaintext is one of

* one encoded message (``encode_frame({"t": TYPE, ...})``);
* a bundle of several small ones: ``{t: "bundle", m: [encoded message, ...]}`` (1..256);
* one part of a message larger than :data:`PART_BYTES`:
  ``{t: "part", i: index, n: parts, len: message bytes, d: bytes}``.

The writer packs whatever is queued: messages up to :data:`PART_BYTES` go into bundles of at
most :data:`PART_BYTES`, a larger message leaves alone as consecutive parts (the session is
ordered, so parts never interleave). Every frame plaintext is therefore at most
:data:`MAX_PLAINTEXT` bytes on every lane (direct, rendezvous-relayed, Nostr), whatever the
message size. The reader reassembles parts with explicit bounds: one message at a time, at
most :data:`MAX_MESSAGE` bytes, parts in order with consistent headers. A message declared
larger than that is skipped part by part and counted (the session stays up); anything
inconsistent is a :class:`~p2pworld.errors.DecodeError` that ends the session.

Example:
    >>> from p2pworld.wire import Ping, WorldPush, encode_message
    >>> packer, reader = FramePacker(), FrameReader()
    >>> frames = packer.pack([encode_message(Ping(1)), encode_message(Ping(2))])
    >>> len(frames), [m for f in frames for m in reader.feed(f)]
    (1, [Ping(n=1), Ping(n=2)])
    >>> big = WorldPush(updates=(bytes(5000),))
    >>> parts = FramePacker(part_bytes=2048).pack([encode_message(big)])
    >>> len(parts), [m for f in parts for m in reader.feed(f)] == [big]
    (3, True)
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pworld import codec
from p2pworld.errors import DecodeError
from p2pworld.wire import BUNDLE, MAX_BUNDLE, Message, decode_message, messages_of

PART = "part"
PART_BYTES = 256 * 1024
"""Largest message sent in one frame, and the size of each part of a larger one."""
MAX_PLAINTEXT = PART_BYTES + 8 * MAX_BUNDLE + 64
"""Largest frame plaintext a conforming writer produces (a full bundle or part, with its
framing)."""
MAX_MESSAGE = 34 << 20
"""Largest message the reader reassembles: an ``epoch`` message with its bounded old-epoch
catch-up (16 MiB plus one entry of at most 16 MiB) and framing."""
_MIN_PART = 1024
"""Smallest part a conforming writer sends (but the last): bounds the part count."""


def encode_part(i: int, n: int, total: int, data: bytes) -> bytes:
    return codec.encode_frame({"t": PART, "i": i, "n": n, "len": total, "d": data})


@dataclass
class FramePacker:
    """Packs encoded messages into frame plaintexts (see the module docs)."""

    part_bytes: int = PART_BYTES

    def pack(self, encoded: list[bytes]) -> list[bytes]:
        if len(encoded) == 1 and len(encoded[0]) <= self.part_bytes:
            return [encoded[0]]  # the commonest frame: one message that fits
        frames: list[bytes] = []
        bundle: list[bytes] = []
        size = 0

        def close_bundle() -> None:
            nonlocal bundle, size
            if bundle:
                frames.append(bundle[0] if len(bundle) == 1 else codec.encode_frame(
                    {"t": BUNDLE, "m": bundle}))
            bundle, size = [], 0

        for m in encoded:
            if len(m) > self.part_bytes:
                close_bundle()
                frames += self.parts(m)
                continue
            if bundle and (size + len(m) > self.part_bytes or len(bundle) >= MAX_BUNDLE):
                close_bundle()
            bundle.append(m)
            size += len(m)
        close_bundle()
        return frames

    def parts(self, m: bytes) -> list[bytes]:
        step = self.part_bytes
        n = -(-len(m) // step)
        return [encode_part(i, n, len(m), m[i * step:(i + 1) * step]) for i in range(n)]


class FrameReader:
    """Reassembles frame plaintexts into messages, bounded (see the module docs).

    ``skipped``: messages over ``max_message`` that were dropped part by part.
    """

    def __init__(self, *, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self.skipped = 0
        self._buf: list[bytes] = []
        self._got = 0
        self._next = 0
        self._n = 0
        self._len = 0
        self._skip = False

    @property
    def reassembling(self) -> bool:
        """A message is partly received."""
        return self._n > 0

    def feed(self, plaintext: bytes) -> list[Message]:
        """The messages completed by this frame (none while a large one is arriving).

        Raises:
            DecodeError: the frame or a reassembled message is invalid (end the session).
        """
        m = codec.need_map(codec.decode_frame(plaintext, max_bytes=MAX_PLAINTEXT, walk=False),
                           "frame")
        if m.get("t") == PART:
            return self._part(m)
        if self.reassembling:
            raise DecodeError("a frame interleaved with the parts of a message")
        return messages_of(m, max_bytes=MAX_PLAINTEXT)

    def _part(self, m: dict[str, codec.Value]) -> list[Message]:
        w = "part"
        i = codec.int_field(m, "i", w)
        n = codec.int_field(m, "n", w, lo=2, hi=MAX_MESSAGE // _MIN_PART + 1)
        total = codec.int_field(m, "len", w, lo=1)
        data = codec.bytes_field(m, "d", w)
        if set(m) != {"t", "i", "n", "len", "d"}:
            raise DecodeError("part: unexpected fields")
        if i == 0:
            if self.reassembling:
                raise DecodeError("part: a new message started before the last one ended")
            self._n, self._len, self._next, self._got, self._buf = n, total, 0, 0, []
            self._skip = total > self.max_message
        elif not self.reassembling or (i, n, total) != (self._next, self._n, self._len):
            raise DecodeError("part: out of order or inconsistent with its first part")
        if i < n - 1 and len(data) < _MIN_PART:
            raise DecodeError("part: too small")
        self._got += len(data)
        if self._got > total:
            raise DecodeError("part: more bytes than the message declared")
        if not self._skip:
            self._buf.append(data)
        self._next += 1
        if self._next < n:
            return []
        skip, buf = self._skip, self._buf
        self._n, self._buf, self._skip = 0, [], False
        if self._got != total:
            raise DecodeError("part: fewer bytes than the message declared")
        if skip:
            self.skipped += 1
            return []
        return [decode_message(b"".join(buf), max_bytes=self.max_message)]


__all__ = ["FramePacker", "FrameReader", "PART_BYTES", "MAX_MESSAGE", "MAX_PLAINTEXT"]
