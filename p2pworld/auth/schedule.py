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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

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
