"""When a node refreshes its token (pure): both the runtime and the simulator ask this.

A node refreshes at 80% of its token's remaining lifetime, minus up to 10% jitter (so a fleet
minted together does not refresh together), and never sooner than a second; while the control
service is unreachable it retries every twentieth of that lifetime, between 1 and 5 seconds,
so writes resume well within two refresh intervals after the service returns.

Example:
    >>> import random
    >>> delay = refresh_after_s(expires_at=1060, now=1000, rng=random.Random(1))
    >>> 42 <= delay <= 48  # 80% of the 60 s left, minus up to 10%
    True
    >>> retry_after_s(expires_at=1060, now=1000), retry_after_s(expires_at=0, now=1000)
    (3.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

ASK_TIMEOUT_MS = 30_000
"""An ask for a token unanswered for this long counts as failed, and the node asks again."""
MIN_LIFE_S = 10.0
"""A token already expired (or none yet) counts as this much lifetime left."""


def _life(expires_at: float, now: float) -> float:
    return max(MIN_LIFE_S, expires_at - now)


def refresh_after_s(*, expires_at: float, now: float, rng: random.Random) -> float:
    """Seconds from ``now`` until the next refresh of a token expiring at ``expires_at``."""
    return max(1.0, _life(expires_at, now) * (0.8 - 0.1 * rng.random()))


def retry_after_s(*, expires_at: float, now: float) -> float:
    """Seconds until the next try after a refresh failed."""
    return min(5.0, max(1.0, _life(expires_at, now) / 20))


@dataclass
class TokenSchedule:
    """When this node asks the control service for a fresh token: the decision both executors
    carry out (the node core asks it at each wake-up, :mod:`p2pworld.core.node`). Times are the
    node's clock in ms; ``expires_at`` is the current token's expiry in unix seconds, as its
    claims say (0: none).

    Example:
        >>> import random
        >>> s = TokenSchedule(random.Random(1))
        >>> s.start(expires_at=60, now_ms=0)
        >>> 42_000 <= s.wake_at() <= 48_000, s.take(now_ms=1_000)
        (True, False)
        >>> t = s.wake_at()
        >>> s.take(now_ms=t), s.take(now_ms=t + 1), s.wake_at() - t  # one ask at a time
        (True, False, 30000)
        >>> s.failed(now_ms=50_000); s.wake_at()  # a twentieth of the lifetime left then
        53000
        >>> s.minted(expires_at=160, now_ms=53_000); s.refreshes, s.failures
        (1, 1)
    """

    rng: random.Random
    expires_at: float = 0.0
    due_ms: int | None = None
    """When the next ask is due, or (while one is on its way) when it counts as failed; None:
    the schedule has not started."""
    asking: bool = False
    refreshes: int = 0
    failures: int = 0
    _from_s: float = 0.0

    def start(self, *, expires_at: float, now_ms: int) -> None:
        """The node holds a token expiring at ``expires_at``: schedule its refresh."""
        self.expires_at = expires_at
        self._plan(now_ms)

    def _plan(self, now_ms: int) -> None:
        self._from_s = now_ms / 1000
        self.due_ms = now_ms + round(1000 * refresh_after_s(
            expires_at=self.expires_at, now=self._from_s, rng=self.rng))

    def take(self, *, now_ms: int) -> bool:
        """Whether to ask now. One ask at a time: the next comes after :meth:`minted` or
        :meth:`failed`, or when this one had no answer for :data:`ASK_TIMEOUT_MS` (the task
        carrying it out may have failed: it counts as a failure, and the node asks again)."""
        if self.due_ms is None or now_ms < self.due_ms:
            return False
        if self.asking:
            self.failures += 1
        self.asking, self.due_ms = True, now_ms + ASK_TIMEOUT_MS
        return True

    def minted(self, *, expires_at: float, now_ms: int) -> None:
        """The ask returned a token expiring at ``expires_at``."""
        self.asking = False
        self.refreshes += 1
        self.start(expires_at=expires_at, now_ms=now_ms)

    def failed(self, *, now_ms: int) -> None:
        """The ask failed (the service is unreachable or refused): retry soon."""
        self.asking = False
        self.failures += 1
        self.due_ms = now_ms + round(1000 * retry_after_s(expires_at=self.expires_at,
                                                          now=self._from_s))

    def wake_at(self) -> int | None:
        return self.due_ms

    def clock_went_back(self, by_ms: int) -> None:
        if self.due_ms is not None:
            self.due_ms -= by_ms
