"""Peering rules: which side dials, which of two sessions survives, when a silent peer is
dead. Pure decisions, so the node runtime and any other driver apply the same rules.

* The node with the lower id dials at once; the higher id waits a grace period (so two nodes
  rarely open two sessions), then dials if nothing came.
* If two sessions to one peer exist anyway, both ends keep the one the lower id dialled:
  the choice needs no coordination, so they agree.
* A session that received nothing for ``misses`` keepalive intervals is dead: the node core
  runs :class:`Keepalive` (a ping to every peer each interval, the peer's round trip from its
  pong, and a session to close when one fell silent), in both executors.

Example:
    >>> dial_delay(b"\\x01", b"\\x02", grace=2.0, jitter=0.5)
    0.0
    >>> dial_delay(b"\\x02", b"\\x01", grace=2.0, jitter=0.5)
    3.0
    >>> keep_new_session(b"\\x01", b"\\x02", old_initiator=False, new_initiator=True)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pworld.effects import CloseSession, Send
from p2pworld.wire import Ping


def dial_delay(me: bytes, peer: bytes, *, grace: float, jitter: float) -> float:
    """Seconds to wait before dialling ``peer`` (``jitter`` in [0, 1), from the caller's rng)."""
    return 0.0 if me < peer else grace * (1 + jitter)


def keep_new_session(me: bytes, peer: bytes, *, old_initiator: bool,
                     new_initiator: bool) -> bool:
    """With a session to ``peer`` already up, should the new one replace it?"""

    def lower_dialled(initiator: bool) -> bool:
        return (me < peer) == initiator

    return lower_dialled(new_initiator) and not lower_dialled(old_initiator)


def is_dead(last_received: float, now: float, *, interval: float, misses: int = 3) -> bool:
    return now - last_received > misses * interval


@dataclass
class Keepalive:
    """Liveness of this node's sessions (pure; times are the node's clock in ms): every
    ``interval_ms`` each peer gets a ping, and a peer heard from (any frame, also a part of a
    large message) within ``misses`` intervals stays; one silent longer gets its session
    closed (``KEEPALIVE_TIMEOUT``).

    Example:
        >>> k = Keepalive(interval_ms=5_000)
        >>> k.up(b"p", now_ms=0); k.wake_at()
        5000
        >>> k.due(now_ms=5_000)
        [Send(peer=b'p', message=Ping(n=1))]
        >>> k.pong(b"p", 1, now_ms=5_040); k.rtt_ms[b"p"]
        40
        >>> [type(e).__name__ for e in k.due(now_ms=20_041)]  # silent for 3 intervals
        ['CloseSession']
    """

    interval_ms: int
    misses: int = 3
    last_rx: dict[bytes, int] = field(default_factory=dict)
    """When each peer with a session up was last heard from."""
    rtt_ms: dict[bytes, int] = field(default_factory=dict)
    next_ms: int | None = None
    _sent: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    _n: int = 0

    def up(self, peer: bytes, *, now_ms: int) -> None:
        self.last_rx[peer] = now_ms
        if self.next_ms is None:
            self.next_ms = now_ms + self.interval_ms

    def down(self, peer: bytes) -> None:
        self.last_rx.pop(peer, None)
        self._sent.pop(peer, None)
        self.rtt_ms.pop(peer, None)
        if not self.last_rx:
            self.next_ms = None

    def heard(self, peer: bytes, *, now_ms: int) -> None:
        if peer in self.last_rx:
            self.last_rx[peer] = now_ms

    def pong(self, peer: bytes, n: int, *, now_ms: int) -> None:
        sent = self._sent.get(peer)
        if sent is not None and sent[0] == n:
            self.rtt_ms[peer] = now_ms - sent[1]

    def due(self, *, now_ms: int) -> list[Send | CloseSession]:
        """At the interval: a ping to each live peer, a close for each silent one."""
        if self.next_ms is None or now_ms < self.next_ms:
            return []
        out: list[Send | CloseSession] = []
        for peer, last in sorted(self.last_rx.items()):
            if now_ms - last > self.misses * self.interval_ms:
                out.append(CloseSession(peer, "KEEPALIVE_TIMEOUT"))
                continue
            self._n += 1
            self._sent[peer] = (self._n, now_ms)
            out.append(Send(peer, Ping(self._n)))
        self.next_ms = now_ms + self.interval_ms
        return out

    def wake_at(self) -> int | None:
        return self.next_ms

    def clock_went_back(self, by_ms: int) -> None:
        if self.next_ms is not None:
            self.next_ms -= by_ms
        for peer in self.last_rx:
            self.last_rx[peer] -= by_ms
        self._sent = {p: (n, t - by_ms) for p, (n, t) in self._sent.items()}
