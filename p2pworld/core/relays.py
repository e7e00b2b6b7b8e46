"""When a node connects to each of its rendezvous nodes (pure).

A node keeps one connection to every rendezvous node it is configured with
(``NodeConfig.rendezvous``): it registers there, learns the workspace's peers, and takes
relayed sessions. The node core asks for a connection at start and, when one ends, again
after an exponential backoff with jitter (:class:`~p2pworld.transport.backoff.Backoff`)
that starts over once a connection had registered, so a rendezvous node that restarts is
rejoined within a second and one that is down is not hammered. The runtime carries out each
:class:`~p2pworld.effects.ConnectRendezvous` and answers
:class:`~p2pworld.core.node.RendezvousEnded` when that connection ends, whatever ended it.

Example:
    >>> import random
    >>> s = RendezvousSchedule(random.Random(0))
    >>> s.add("ws://rv:7000/", now_ms=0); s.take(now_ms=0), s.take(now_ms=1)
    (['ws://rv:7000/'], [])
    >>> s.ended("ws://rv:7000/", registered=False, now_ms=100)
    >>> 100 + 125 <= s.wake_at() <= 100 + 250
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2pworld.transport.backoff import Backoff

if TYPE_CHECKING:
    import random

BASE_MS = 250
"""The first wait before reconnecting (the waits double up to :data:`CAP_MS`)."""
CAP_MS = 30_000
"""The longest wait between two connection attempts to one rendezvous node."""


@dataclass
class RendezvousSchedule:
    """When each rendezvous node is connected to next (absent: a connection is up or under
    way)."""

    rng: random.Random
    due: dict[str, int] = field(default_factory=dict)
    backoff: dict[str, Backoff] = field(default_factory=dict)

    @classmethod
    def of(cls, urls: list[str], rng: random.Random, now_ms: int) -> RendezvousSchedule | None:
        """A schedule that connects to each of ``urls`` from now (None: there are none)."""
        if not urls:
            return None
        s = cls(rng)
        for u in urls:
            s.add(u, now_ms=now_ms)
        return s

    def add(self, url: str, *, now_ms: int) -> None:
        """A rendezvous node to keep a connection to, from now."""
        self.due[url] = now_ms
        self.backoff[url] = Backoff(base=BASE_MS / 1000, cap=CAP_MS / 1000)

    def take(self, *, now_ms: int) -> list[str]:
        """The rendezvous nodes to connect to now."""
        urls = sorted(u for u, t in self.due.items() if t <= now_ms)
        for u in urls:
            del self.due[u]
        return urls

    def ended(self, url: str, *, registered: bool, now_ms: int) -> None:
        """The connection to ``url`` ended (``registered``: it had registered, so the node
        was reachable: the backoff starts over)."""
        b = self.backoff.get(url)
        if b is None:
            return
        if registered:
            b.reset()
        self.due[url] = now_ms + int(b.next_delay(self.rng) * 1000)

    def wake_at(self) -> int | None:
        return min(self.due.values(), default=None)

    def clock_went_back(self, by_ms: int) -> None:
        self.due = {u: t - by_ms for u, t in self.due.items()}


def announced_urls(url: str, host: str, relay: str, *,
                   public_urls: list[str] | None) -> list[str]:
    """Where this node tells rendezvous node ``relay`` that peers may reach it directly:
    ``public_urls`` when configured, else its listen ``url`` (on ``host``), unless that is
    loopback and the rendezvous is not (a remote peer would dial its own loopback).

    Example:
        >>> me = "ws://127.0.0.1:7000/"
        >>> announced_urls(me, "127.0.0.1", "ws://10.0.0.2:9", public_urls=None)
        []
        >>> announced_urls(me, "127.0.0.1", "ws://localhost:9", public_urls=None)
        ['ws://127.0.0.1:7000/']
        >>> announced_urls(me, "127.0.0.1", "ws://10.0.0.2:9", public_urls=["wss://me"])
        ['wss://me']
    """
    if public_urls is not None:
        return list(public_urls)
    loop = host.startswith("127.") or host == "::1"
    relay_loop = "//127." in relay or "//localhost" in relay or "//[::1]" in relay
    return [url] if not loop or relay_loop else []
