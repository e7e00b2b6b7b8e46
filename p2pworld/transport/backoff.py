"""Reconnect backoff: exponential with jitter (a pure core; the caller passes the rng).

Example:
    >>> import random
    >>> b = Backoff(base=0.5, cap=30.0)
    >>> rng = random.Random(1)
    >>> delays = [b.next_delay(rng) for _ in range(4)]
    >>> all(0 <= d <= 30 for d in delays), b.attempts
    (True, 4)
    >>> b.reset(); b.attempts
    0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random


@dataclass
class Backoff:
    base: float = 0.25
    cap: float = 30.0
    attempts: int = 0

    def next_delay(self, rng: random.Random) -> float:
        """The wait before the next attempt: uniform in ``[c/2, c]`` with
        ``c = min(cap, base * 2**attempts)`` ("equal jitter": never zero, never in lockstep)."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempts, 30)))
        self.attempts += 1
        return rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0
