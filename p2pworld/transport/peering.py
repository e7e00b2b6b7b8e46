"""Peering rules: which side dials, which of two sessions survives, when a silent peer is
dead. Pure decisions, so the node runtime and any other driver apply the same rules.

* The node with the lower id dials at once; the higher id waits a grace period (so two nodes
  rarely open two sessions), then dials if nothing came.
* If two sessions to one peer exist anyway, both ends keep the one the lower id dialled:
  the choice needs no coordination, so they agree.
* A session that received nothing for ``misses`` keepalive intervals is dead.

Example:
    >>> dial_delay(b"\\x01", b"\\x02", grace=2.0, jitter=0.5)
    0.0
    >>> dial_delay(b"\\x02", b"\\x01", grace=2.0, jitter=0.5)
    3.0
    >>> keep_new_session(b"\\x01", b"\\x02", old_initiator=False, new_initiator=True)
    True
"""

from __future__ import annotations


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
