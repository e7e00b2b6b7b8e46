"""A full disk: what the node does when a transaction did not commit, and when it tries again
(pure).

When the node's store refuses a transaction for lack of space
(:class:`~p2pworld.errors.StoreFull`), nothing of it is on disk. The node then goes read-only
(the hub refuses new writes with that error; reads go on), puts every channel the transaction
changed back to what the disk holds, and carries out the rest of the batch with every
acknowledgement that waited on it turned into a refusal (:func:`store_full`). While read-only
it asks for a tiny probe write every :data:`PROBE_MS` (:class:`StoreProbe`: the executor tries
it and answers :class:`~p2pworld.core.node.StoreProbed`); when one commits, writes resume and
replicas ask their sequencers for what they missed. Both executors (the trio runtime and the
simulator) carry this out; neither decides it.

Example:
    >>> probe = StoreProbe()
    >>> probe.start(now_ms=0), probe.start(now_ms=10)  # the first failure starts it
    (True, False)
    >>> probe.wake_at(), probe.take(now_ms=999), probe.take(now_ms=1000)
    (1000, False, True)
    >>> probe.probed(False, now_ms=1005); probe.wake_at()
    2005
    >>> probe.probed(True, now_ms=2010); probe.wake_at() is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2pworld.channel.hub import ChannelHub, Notice
from p2pworld.core.cores import NodeEffect
from p2pworld.core.persist import refused_after
from p2pworld.errors import P2PWorldError
from p2pworld.log.verify import StoredChannel

PROBE_MS = 1_000
"""How often a read-only node tries a tiny write to learn that space is back."""


@dataclass
class StoreProbe:
    """When the next probe write is due while the store is full (None: not read-only, or a
    probe is under way)."""

    interval_ms: int = PROBE_MS
    due_ms: int | None = None
    active: bool = False

    def start(self, *, now_ms: int) -> bool:
        """The store refused a transaction; True the first time (read-only begins)."""
        if self.active:
            return False
        self.active, self.due_ms = True, now_ms + self.interval_ms
        return True

    def take(self, *, now_ms: int) -> bool:
        """Whether a probe write is due now (then none is until its answer)."""
        if self.due_ms is None or now_ms < self.due_ms:
            return False
        self.due_ms = None
        return True

    def probed(self, ok: bool, *, now_ms: int) -> None:
        if ok:
            self.active, self.due_ms = False, None
        elif self.active:
            self.due_ms = now_ms + self.interval_ms

    def wake_at(self) -> int | None:
        return self.due_ms

    def clock_went_back(self, by_ms: int) -> None:
        if self.due_ms is not None:
            self.due_ms -= by_ms


def store_full(hub: ChannelHub, probe: StoreProbe, err: P2PWorldError,
               on_disk: Sequence[tuple[bytes, StoredChannel | P2PWorldError | None]],
               tail: Sequence[NodeEffect], *, now_ms: int) -> list[NodeEffect]:
    """A transaction did not commit for lack of space: read-only mode (a notice the first
    time, counted after), every channel it changed put back to ``on_disk`` (what the disk
    holds of it; None: not stored; an error: the disk's copy is damaged, and the channel is
    quarantined), and ``tail`` (what was to follow the commit) carried out with every
    acknowledgement turned into a refusal."""
    fx: list[NodeEffect] = []
    if probe.start(now_ms=now_ms):
        fx.append(Notice(b"", err, scope="store", subject=str(err.details.get("path", ""))))
    else:
        hub.errors[err.code] = hub.errors.get(err.code, 0) + 1
    # What writers are told (remote ones in a nack): the refusal, not this node's file paths.
    err = type(err)("this node's disk is full: writes are refused until space returns",
                    **{k: v for k, v in err.details.items() if k != "path"})
    hub.read_only = err
    for ch, c in on_disk:
        if isinstance(c, P2PWorldError):
            hub.quarantine(ch, c)
            fx.append(Notice(ch, c))
            continue
        fx += hub.restore(ch, None if c is None else (c.record, c.epochs, c.base, c.entries))
    return fx + refused_after(err, tail)


def writable_again(hub: ChannelHub) -> list[NodeEffect]:
    """A probe write committed: writes resume (replicas ask for what they missed)."""
    hub.errors["STORE_WRITABLE_AGAIN"] = hub.errors.get("STORE_WRITABLE_AGAIN", 0) + 1
    return list(hub.resume_writes())
