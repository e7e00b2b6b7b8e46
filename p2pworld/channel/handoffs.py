"""Handing a leaving node's channels to live replicas (pure; the hub's book of them).

A node that leaves cleanly (``await node.close()``, or the end of ``open_node``) hands every
channel it sequences to one of its live replicas, so writes go on without it:

* **Who.** Among the peers subscribed to the channel now (a participant, for a private
  channel): the one with the most entries on disk, then the most sent to it, then the lowest
  node id (:func:`choose`). The epoch change carries the entries it lacks; a replica further
  behind than one ``epoch`` message carries is not chosen (it could not sequence from its
  head). A channel nobody replicates now, or a closed one, is not handed off.
* **Acknowledged** when the new sequencer announces the channel at the new epoch to this node
  (it does so as it takes over), within ``timeout_ms``
  (:data:`HANDOFF_TIMEOUT_MS` by default).
* **Handed to a leaving node** (two nodes closing at once may hand their channels to each
  other): it is handed on, never back to the node that just handed it over, as soon as a
  replica has subscribed to it here, within the bound.
* **What the application hears:** :class:`HandoffReport` (what ``close`` returns), and a
  :class:`~p2pworld.errors.NotHandedOff` notice for every channel not handed off.

Example:
    >>> a = Candidate(peer=b"a", key=b"A", stored=7, sent=9)
    >>> b = Candidate(peer=b"b", key=b"B", stored=9, sent=9)
    >>> choose([a, b], restricted=False, participants=set()).peer
    b'b'
    >>> book = HandoffBook()
    >>> book.start(b"ch", b"b", epoch=2, now_ms=0, timeout_ms=5000)
    >>> book.announced(b"ch", b"b", epoch=2), book.done, book.report().handed
    (True, True, {b'ch': b'b'})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

HANDOFF_TIMEOUT_MS = 5_000
"""How long a leaving node waits for its new sequencers to confirm (``NodeConfig``
``handoff_timeout_s`` sets it)."""
SEEK_RETRY_MS = 100
"""A channel handed to a node while it leaves, with no live replica yet to hand it on to
(they subscribe to it as they learn of the change), is tried again this often, within the
bound."""


@dataclass(frozen=True)
class Candidate:
    """A live replica of a channel, as its sequencer sees it: ``stored``, the seq it
    reported on disk; ``sent``, the last seq sent to it."""

    peer: bytes
    key: bytes
    stored: int
    sent: int


def choose(candidates: Iterable[Candidate], *, restricted: bool, participants: set[bytes]
           ) -> Candidate | None:
    """The replica to hand a channel to (see the module's docstring); None: none may take
    it."""
    eligible = [c for c in candidates if not restricted or c.key in participants]
    if not eligible:
        return None
    best = max(c.stored for c in eligible)
    top = [c for c in eligible if c.stored == best]
    most = max(c.sent for c in top)
    return min((c for c in top if c.sent == most), key=lambda c: c.peer)


@dataclass(frozen=True)
class HandoffReport:
    """What a node that closed did with the channels it sequenced: ``handed``, channel id to
    the node id now sequencing it; ``not_handed``, channel id to why not (also sent as a
    :class:`~p2pworld.errors.NotHandedOff` notice)."""

    handed: dict[bytes, bytes] = field(default_factory=dict)
    not_handed: dict[bytes, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every channel this node sequenced was handed off."""
        return not self.not_handed


@dataclass
class _Pending:
    target: bytes
    epoch: int
    deadline_ms: int


@dataclass
class HandoffBook:
    """The handoffs of one leaving node: on their way, confirmed, or not made."""

    pending: dict[bytes, _Pending] = field(default_factory=dict)
    seeking: dict[bytes, int] = field(default_factory=dict)
    """Channels handed here while leaving, waiting for a replica: the bound of each."""
    next_try_ms: int = 0
    handed: dict[bytes, bytes] = field(default_factory=dict)
    not_handed: dict[bytes, str] = field(default_factory=dict)
    started: bool = False
    """The node began leaving (a book that never started is not ``done``)."""
    timeout_ms: int = HANDOFF_TIMEOUT_MS
    """The bound of each handoff (the one the node's close asked for)."""

    def start(self, channel: bytes, target: bytes, *, epoch: int, now_ms: int,
              timeout_ms: int) -> None:
        """``channel`` was handed to ``target`` at ``epoch``; it confirms by ``timeout_ms``."""
        self.started = True
        self.seeking.pop(channel, None)
        self.pending[channel] = _Pending(target, epoch, now_ms + timeout_ms)

    def seek(self, channel: bytes, *, now_ms: int) -> bool:
        """``channel`` was handed here while leaving and has no replica to go to yet: True
        while it may wait for one (tried again in :data:`SEEK_RETRY_MS`), False once its
        bound has passed."""
        deadline = self.seeking.setdefault(channel, now_ms + self.timeout_ms)
        if now_ms >= deadline:
            del self.seeking[channel]
            return False
        self.next_try_ms = now_ms + SEEK_RETRY_MS
        return True

    def refuse(self, channel: bytes, why: str) -> None:
        """``channel`` is not handed off, for ``why``."""
        self.started = True
        self.seeking.pop(channel, None)
        self.not_handed[channel] = why

    def announced(self, channel: bytes, peer: bytes, *, epoch: int) -> bool:
        """``peer`` announced ``channel`` at ``epoch``: True if that confirms its handoff."""
        p = self.pending.get(channel)
        if p is None or peer != p.target or epoch < p.epoch:
            return False
        del self.pending[channel]
        self.handed[channel] = peer
        return True

    def expire(self, *, now_ms: int) -> list[bytes]:
        """The handoffs not confirmed in time (now not handed off), in channel order."""
        late = sorted(ch for ch, p in self.pending.items() if now_ms >= p.deadline_ms)
        for ch in late:
            p = self.pending.pop(ch)
            self.not_handed[ch] = (f"the new sequencer ({p.target.hex()[:16]}) did not "
                                   "confirm in time (it may still take the channel)")
        return late

    def wake_at(self) -> int | None:
        best = min((p.deadline_ms for p in self.pending.values()), default=None)
        if self.seeking and (best is None or self.next_try_ms < best):
            best = self.next_try_ms
        return best

    def clock_went_back(self, by_ms: int) -> None:
        for p in self.pending.values():
            p.deadline_ms -= by_ms
        self.seeking = {ch: t - by_ms for ch, t in self.seeking.items()}
        self.next_try_ms -= by_ms

    @property
    def done(self) -> bool:
        """The node began leaving and no handoff waits any more."""
        return self.started and not self.pending and not self.seeking

    def report(self) -> HandoffReport:
        return HandoffReport(dict(self.handed), dict(self.not_handed))


__all__ = ["HANDOFF_TIMEOUT_MS", "Candidate", "HandoffBook", "HandoffReport", "choose"]
