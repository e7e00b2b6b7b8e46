"""What the node keeps of the scopes that failed, and what a failed scope's objects need
(pure).

A scope (a session, a lane, a relay connection, a request; :mod:`p2pworld.io.scopes`) that
ends with an error is counted here per scope kind, with its last error and subject, for
``health()["scopes"]``. What the failed task held (a session, a relayed or Nostr pipe) is
closed with it, once: :meth:`ScopeBook.to_close` answers which of the task's arguments still
need closing, so a closer that fails again is not retried for ever.

Example:
    >>> book = ScopeBook.of(["peer", "lane"])
    >>> book.failed("peer", code="BAD_FRAME", subject="ab")
    >>> book.stats["peer"]
    {'failures': 1, 'last_error': 'BAD_FRAME', 'last_subject': 'ab'}
    >>> class Pipe: pass
    >>> pipe = Pipe()
    >>> [book.to_close(("key", pipe), (Pipe,)) == [pipe], book.to_close((pipe,), (Pipe,))]
    [True, []]
"""

from __future__ import annotations

from collections.abc import Iterable, MutableSet
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScopeBook:
    """Failures per scope kind, and the objects of failed scopes being closed."""

    stats: dict[str, dict[str, Any]]
    closing: MutableSet[Any] = field(default_factory=set)
    """Objects being closed (the runtime passes a weak set: a closed object may go)."""

    @classmethod
    def of(cls, scopes: Iterable[str], closing: MutableSet[Any] | None = None) -> ScopeBook:
        stats = {s: {"failures": 0, "last_error": None, "last_subject": None} for s in scopes}
        return cls(stats, set() if closing is None else closing)

    def failed(self, scope: str, *, code: str, subject: str) -> None:
        """A scope of kind ``scope`` ended with error ``code`` (``subject``: its key)."""
        st = self.stats[scope]
        st["failures"] += 1
        st["last_error"], st["last_subject"] = code, subject

    def to_close(self, held: Iterable[object], kinds: tuple[type, ...]) -> list[Any]:
        """Which of ``held`` (a failed task's arguments) are of ``kinds`` and not yet being
        closed; they count as being closed from now on."""
        out = [x for x in held if isinstance(x, kinds) and x not in self.closing]
        for x in out:
            self.closing.add(x)
        return out


__all__ = ["ScopeBook"]
