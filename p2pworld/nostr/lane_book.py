"""What the Nostr lane knows and decides (pure): which relays a frame goes to and in what
part size, whether a relay took it, what an incoming lane event means, and which pipes have
waited too long on a gap.

The trio shell (:class:`~p2pworld.io.nostr_lane.NostrLane`) owns the relay pool, the pipes'
memory channels and the clock; every lane event it receives goes to :meth:`LaneBook.read`,
and it carries out what comes back:

* :class:`Accept`: a peer opened a pipe to us (a fresh ``open``, and fewer than
  :data:`~p2pworld.nostr.lane_frames.MAX_INCOMING` incoming pipes open);
* :class:`Feed`: whole frames, in order, for an open pipe;
* :class:`End`: the peer closed the pipe, or broke its framing (counted as a bad frame);
* None: nothing to do (a bad event, a duplicate, a stale or refused ``open``, a frame for a
  pipe that is not open).

The book keeps each open pipe's :class:`~p2pworld.nostr.lane_frames.Reassembler` (a pipe is
registered with :meth:`LaneBook.opened` and forgotten with :meth:`LaneBook.closed`), the NIP-44
conversation keys (at most :data:`~p2pworld.nostr.lane_frames.MAX_PEER_KEYS`, then forgotten
at once) and the lane's counters.

Example:
    >>> from p2pworld.nostr.keys import NostrKey
    >>> from p2pworld.nostr.event import Event
    >>> from p2pworld.nostr.lane_frames import DEFAULT_PART, LANE_KIND
    >>> a, b = NostrKey(bytes(31) + b"\\x01"), NostrKey(bytes(31) + b"\\x02")
    >>> book_a, book_b = LaneBook(a.secret), LaneBook(b.secret)
    >>> opening = LaneFrame(bytes(16), True, "open", 0)
    >>> ev = Event.create(a, kind=LANE_KIND, created_at=1000, aux=bytes(32), tags=[],
    ...                   content=nip44.encrypt(opening.encode(),
    ...                                         book_a.conversation_key(b.public),
    ...                                         nonce=bytes(32)))
    >>> book_b.read(ev, now=1000.0) == Accept((a.public, bytes(16), False))
    True
    >>> book_b.read(ev, now=1000.0 + OPEN_MAX_AGE_S + 1) is None  # stale
    True
    >>> part_size_of(None) == DEFAULT_PART
    True
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from p2pworld.errors import DecodeError, NostrError
from p2pworld.nostr import nip44
from p2pworld.nostr.event import Event
from p2pworld.nostr.lane_frames import (
    DEFAULT_MAX_CONTENT,
    GAP_TIMEOUT_S,
    MAX_INCOMING,
    MAX_LANE_FRAME,
    MAX_PEER_KEYS,
    OPEN_MAX_AGE_S,
    LaneFrame,
    Reassembler,
    part_size_for,
)
from p2pworld.nostr.limits import RelayLimits
from p2pworld.nostr.pool import Ok, has_it

PipeKey = tuple[bytes, bytes, bool]
"""A pipe as this side sees it: (peer's x-only key, pipe id, whether we opened it)."""


def part_size_of(limits: RelayLimits | None) -> int:
    """:func:`~p2pworld.nostr.lane_frames.part_size_for` a relay's published limits (None:
    no NIP-11 document, :data:`~p2pworld.nostr.lane_frames.DEFAULT_MAX_CONTENT` characters);
    raises :class:`~p2pworld.errors.NostrError` when they cannot carry a useful part."""
    if limits is None:
        return part_size_for(DEFAULT_MAX_CONTENT)
    return part_size_for(limits.max_content_length or DEFAULT_MAX_CONTENT,
                         limits.max_message_length)


def lane_targets(urls: Collection[str], wanted: Collection[str],
                 limits: Mapping[str, RelayLimits | None]) -> list[str]:
    """The relays of the pool (``urls``, in order) a lane frame goes to: those ``wanted`` (the
    configured relays and the peer's NIP-65 relays), less any whose published ``limits``
    cannot carry a part of :data:`~p2pworld.nostr.lane_frames.MIN_PART` bytes.

    >>> lane_targets(["ws://a", "ws://b", "ws://c"], {"ws://a", "ws://b"},
    ...              {"ws://b": RelayLimits(max_content_length=300)})
    ['ws://a']
    """
    out = []
    for url in urls:
        if url in wanted:
            try:
                part_size_of(limits.get(url))
            except NostrError:
                continue  # this relay could not carry any useful part
            out.append(url)
    return out


def check_frame(data: bytes) -> None:
    """Refuse a pipe frame the lane cannot carry (over
    :data:`~p2pworld.nostr.lane_frames.MAX_LANE_FRAME` bytes) before anything is published:
    :class:`~p2pworld.errors.NostrError`."""
    if len(data) > MAX_LANE_FRAME:
        raise NostrError("frame too large for the Nostr lane", size=len(data),
                         limit=MAX_LANE_FRAME)


@dataclass(frozen=True)
class Accept:
    """A peer opened pipe ``key`` to us: start its session."""

    key: PipeKey


@dataclass(frozen=True)
class Feed:
    """Whole ``frames`` (in order, each once) for open pipe ``key``."""

    key: PipeKey
    frames: list[bytes]


@dataclass(frozen=True)
class End:
    """Pipe ``key`` is over (the peer closed it, or broke its framing)."""

    key: PipeKey


class LaneBook:
    """The lane's state (see the module's docstring); ``secret``: our Nostr secret key."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._conv: dict[bytes, bytes] = {}
        self.rx: dict[PipeKey, Reassembler] = {}
        """Each open pipe's reassembler."""
        self.stats = {"frames_out": 0, "frames_in": 0, "bad_frames": 0, "refused": 0,
                      "pipes_opened": 0, "pipes_accepted": 0, "gap_closed": 0,
                      "refused_opens": 0}

    def conversation_key(self, peer: bytes) -> bytes:
        """The NIP-44 conversation key with ``peer`` (cached; the cache is emptied when it
        holds :data:`~p2pworld.nostr.lane_frames.MAX_PEER_KEYS`)."""
        k = self._conv.get(peer)
        if k is None:
            if len(self._conv) >= MAX_PEER_KEYS:
                self._conv.clear()
            k = self._conv[peer] = nip44.conversation_key(self._secret, peer)
        return k

    def opened(self, key: PipeKey) -> Reassembler:
        """Pipe ``key`` is open (ours or a peer's): its reassembler."""
        return self.rx.setdefault(key, Reassembler())

    def closed(self, key: PipeKey) -> None:
        """Pipe ``key`` is over: frames for it are ignored from now on."""
        self.rx.pop(key, None)

    def answered(self, answers: Mapping[str, Ok | None]) -> bool:
        """Whether some relay took a lane event (``OK true`` or ``duplicate:``); a frame no
        relay took is counted as refused (and ends its pipe)."""
        if any(has_it(o) for o in answers.values()):
            return True
        self.stats["refused"] += 1
        return False

    def read(self, ev: Event, *, now: float) -> Accept | Feed | End | None:
        """One lane event addressed to us (hostile: anything that does not decrypt or decode
        is counted as a bad frame and dropped)."""
        try:
            peer = bytes.fromhex(ev.pubkey)
            f = LaneFrame.decode(nip44.decrypt(ev.content, self.conversation_key(peer)))
        except (DecodeError, NostrError, ValueError):
            self.stats["bad_frames"] += 1
            return None
        self.stats["frames_in"] += 1
        key = (peer, f.pipe, not f.opener)  # our side's view: we opened it iff it did not
        rx = self.rx.get(key)
        if rx is None:
            return self._admit(key, f, ev.created_at, now)
        if f.op == "close":
            return End(key)
        if f.op == "data":
            try:
                return Feed(key, rx.feed(f, now=now))
            except DecodeError:
                self.stats["bad_frames"] += 1
                return End(key)
        return None

    def _admit(self, key: PipeKey, f: LaneFrame, created_at: int, now: float) -> Accept | None:
        """A frame for a pipe that is not open: a fresh ``open`` from its opener is accepted
        while fewer than :data:`~p2pworld.nostr.lane_frames.MAX_INCOMING` incoming pipes are
        open; any other frame is ignored."""
        if sum(1 for k in self.rx if not k[2]) >= MAX_INCOMING:
            self.stats["refused_opens"] += 1
            return None
        if f.op == "open" and f.opener and created_at >= now - OPEN_MAX_AGE_S:
            self.stats["pipes_accepted"] += 1
            return Accept(key)
        return None

    def overdue(self, now: float) -> list[PipeKey]:
        """The open pipes whose gap (a frame missing while later ones wait) has stayed open for
        more than :data:`~p2pworld.nostr.lane_frames.GAP_TIMEOUT_S`: each is counted, and is to
        be closed."""
        out = [k for k, rx in self.rx.items()
               if rx.gap_since is not None and now - rx.gap_since > GAP_TIMEOUT_S]
        self.stats["gap_closed"] += len(out)
        return out
