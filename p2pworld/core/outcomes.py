"""What a caller gets back (pure): a publish's answer, and the one error that leaves a node.

* :func:`publish_outcome`: a publish waits for the node core's answer (a result, or a typed
  refusal); no answer within its timeout, or the node stopped first, is a
  :class:`~p2pworld.errors.PublishTimeout` that says to resubmit with the same key (the
  outcome is unknown: it may yet be sequenced, and the key makes a retry safe).
* :class:`Deadlines`: when each waiting publish times out; one timer for all of them.
* :func:`leaving_error`: what leaves ``open_node`` when its tasks end with a group of
  errors: the application's own exception unchanged; else the node's one typed error (the
  failure that ended it) when every other leaf is typed or a cancellation; else the group.

Example:
    >>> waits = Deadlines()
    >>> waits.add(5.0, 1), waits.add(9.0, 2), waits.add(2.0, 3)  # True: a new earliest
    (True, False, True)
    >>> waits.due(6.0), waits.next_at()
    ([3, 1], 9.0)
    >>> from p2pworld.errors import StoreError
    >>> publish_outcome(None, closed=False, timeout=2.0, key=b"k")
    Traceback (most recent call last):
    ...
    p2pworld.errors.PublishTimeout: no answer within 2.0 s; resubmit with the same key
    >>> err = StoreError("disk")
    >>> leaving_error(BaseExceptionGroup("x", [err, KeyboardInterrupt()]), [], ()) is None
    True
    >>> leaving_error(BaseExceptionGroup("x", [err]), [], ()) is err
    True
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2pworld.errors import P2PWorldError, PublishTimeout

if TYPE_CHECKING:
    from p2pworld.channel.hub import PublishResult


def publish_outcome(out: PublishResult | P2PWorldError | None, *, closed: bool,
                    timeout: float, key: bytes) -> PublishResult:
    """The publish's result; its refusal, or an unknown outcome, raised typed."""
    if out is None and closed:
        raise PublishTimeout("the node stopped before an answer came; resubmit with the "
                             "same key", key=key.hex(), node_closed=True)
    if out is None:
        raise PublishTimeout(f"no answer within {timeout} s; resubmit with the same key",
                             key=key.hex())
    if isinstance(out, P2PWorldError):
        raise out
    return out


@dataclass
class Deadlines:
    """Publish waits by deadline (the executor's clock, seconds), earliest first."""

    heap: list[tuple[float, int]] = field(default_factory=list)

    def add(self, at: float, req: int) -> bool:
        """Request ``req`` times out at ``at``: whether it is now the earliest (the timer
        must wake sooner)."""
        heapq.heappush(self.heap, (at, req))
        return self.heap[0][1] == req

    def next_at(self) -> float:
        """When the timer must wake next (infinity: nothing waits)."""
        return self.heap[0][0] if self.heap else math.inf

    def due(self, now: float) -> list[int]:
        """The requests whose deadline has passed, taken out, earliest first."""
        out = []
        while self.heap and self.heap[0][0] <= now:
            out.append(heapq.heappop(self.heap)[1])
        return out


def leaves(e: BaseException) -> list[BaseException]:
    """The exceptions at the leaves of a (nested) exception group, in order."""
    if isinstance(e, BaseExceptionGroup):
        return [x for sub in e.exceptions for x in leaves(sub)]
    return [e]


def leaving_error(group: BaseExceptionGroup[BaseException], caller: list[BaseException],
                  benign: tuple[type[BaseException], ...]) -> BaseException | None:
    """What leaves instead of ``group``: the application's own exception (``caller``: it,
    or nothing) if it is among the leaves; else the first typed error when every leaf is
    typed or ``benign`` (a cancellation); None: the group itself leaves."""
    found = leaves(group)
    mine = [x for x in found if any(x is c for c in caller)]
    if mine:
        return mine[0]
    typed = [x for x in found if isinstance(x, P2PWorldError)]
    if typed and all(isinstance(x, (P2PWorldError, *benign)) for x in found):
        return typed[0]
    return None


__all__ = ["Deadlines", "leaves", "leaving_error", "publish_outcome"]
