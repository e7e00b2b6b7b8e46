"""This node's links (``peer_link``) in its world document, written once sessions settle (pure).

Every session up or down would otherwise be a signed document update gossiped to the whole
workspace; sessions that flap (a churning link, a token storm, a peer redialling) would flood
it. The node core (:mod:`p2pworld.core.node`) notes each change here and writes the net change
:data:`SETTLE_MS` after the first one: a session that came and went in between writes
nothing, and a link that did not change is not written again.

Example:
    >>> links = LinkUpdates()
    >>> links.up(b"p", "direct", now_ms=0); links.down(b"p", now_ms=100)
    >>> links.up(b"q", "nostr", now_ms=200)
    >>> links.wake_at(), links.take(now_ms=999)
    (1000, None)
    >>> links.take(now_ms=1000)
    {b'p': None, b'q': 'nostr'}
"""

from __future__ import annotations

from dataclasses import dataclass, field

SETTLE_MS = 1_000
"""How long link changes gather before the net change is written."""


@dataclass
class LinkUpdates:
    """Link changes not yet written (peer -> ``direct`` / ``nostr``, or None: gone)."""

    settle_ms: int = SETTLE_MS
    pending: dict[bytes, str | None] = field(default_factory=dict)
    due_ms: int | None = None

    def up(self, peer: bytes, state: str, *, now_ms: int) -> None:
        self._note(peer, state, now_ms)

    def down(self, peer: bytes, *, now_ms: int) -> None:
        self._note(peer, None, now_ms)

    def _note(self, peer: bytes, state: str | None, now_ms: int) -> None:
        self.pending[peer] = state
        if self.due_ms is None:
            self.due_ms = now_ms + self.settle_ms

    def take(self, *, now_ms: int) -> dict[bytes, str | None] | None:
        """The net changes, once they settled (None: not yet, or none)."""
        if self.due_ms is None or now_ms < self.due_ms:
            return None
        out, self.pending, self.due_ms = self.pending, {}, None
        return out

    def wake_at(self) -> int | None:
        return self.due_ms

    def clock_went_back(self, by_ms: int) -> None:
        if self.due_ms is not None:
            self.due_ms -= by_ms
