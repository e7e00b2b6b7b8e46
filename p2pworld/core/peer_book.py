"""What a node knows of each peer it has seen, and what the runtime does at a session's edges
(pure).

:class:`PeerBook` keeps one :class:`PeerRecord` per peer: its state (``discovered``,
``connecting``, ``connected``, ``backoff``), how it was found, its address, its last error
and counts. The trio runtime tells it what happened (a session adopted or ended, an attempt
failed, a scope failed) and carries out what it answers (which code to count);
:class:`~p2pworld.runtime.api.PeerInfo` is the public snapshot of a record.

:func:`session_refusal` is the admission check every authenticated session passes before
it is adopted: the peer's token (when the world has auth), and, on the Nostr lane, that the
pipe's Nostr key is the one the peer's node key attests. :class:`PreHandshake` bounds the
incoming connections that wait for their handshake, evicting the oldest.

Example:
    >>> book = PeerBook()
    >>> book.connected(b"\\x02", address="ws://127.0.0.1:1/", since=5.0).state
    'connected'
    >>> from p2pworld.errors import HandshakeTimeout
    >>> book.down(b"\\x02", HandshakeTimeout("silent")), book.records[b"\\x02"].state
    ('HANDSHAKE_TIMEOUT', 'backoff')
    >>> book.down(b"\\x02", SessionClosed("bye"))  # an orderly end is not counted
    >>> waiting = PreHandshake(limit=1)
    >>> waiting.add("a"), waiting.add("b"), waiting.evicted("a")
    (None, 'a', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from p2pworld.errors import SessionClosed, Unauthorized

if TYPE_CHECKING:
    from p2pworld.auth.book import TokenBook
    from p2pworld.errors import P2PWorldError
    from p2pworld.transport.handshake import HandshakeResult

K = TypeVar("K")


@dataclass
class PeerRecord:
    """What this node knows of a peer (mutable; :class:`~p2pworld.runtime.api.PeerInfo` is
    the public snapshot)."""

    node_id: bytes
    state: str = "discovered"  # discovered | connecting | connected | backoff
    via: set[str] = field(default_factory=set)
    address: str = ""
    since: float = 0.0
    last_error: str = ""
    handshakes: int = 0
    failures: int = 0


@dataclass
class PeerBook:
    """Every peer this node has seen, by node id."""

    records: dict[bytes, PeerRecord] = field(default_factory=dict)

    def record(self, pid: bytes) -> PeerRecord:
        """The peer's record, created on first sight."""
        p = self.records.get(pid)
        if p is None:
            p = self.records[pid] = PeerRecord(pid)
        return p

    def connected(self, pid: bytes, *, address: str, since: float) -> PeerRecord:
        """A session with the peer was adopted."""
        p = self.record(pid)
        p.state, p.address, p.since, p.last_error = "connected", address, since, ""
        p.handshakes += 1
        return p

    def down(self, pid: bytes, reason: P2PWorldError | None) -> str | None:
        """The adopted session ended (``reason``: why, or None): the peer backs off; the
        code to count, unless the end was orderly (``SESSION_CLOSED``)."""
        p = self.record(pid)
        p.state = "backoff"
        if reason is None or reason.code == SessionClosed.code:
            return None
        p.last_error = reason.code
        return reason.code

    def connecting(self, pid: bytes) -> PeerRecord:
        """An attempt to reach the peer starts."""
        p = self.record(pid)
        p.state = "connecting"
        return p

    def failed(self, pid: bytes, code: str) -> None:
        """An attempt (or a task holding the peer) failed with ``code``."""
        p = self.record(pid)
        p.last_error, p.failures = code, p.failures + 1

    def refused(self, pid: bytes, code: str) -> None:
        """The peer was refused or misbehaved (``code``): remembered, not counted a failure."""
        p = self.records.get(pid)
        if p is not None:
            p.last_error = code

    def scope_failed(self, key: str, code: str) -> None:
        """A peer scope keyed by the peer's id in hex ended with ``code``; other keys (an
        incoming connection, a URL) name no known peer."""
        try:
            pid = bytes.fromhex(key)
        except ValueError:
            return
        if pid in self.records:
            self.failed(pid, code)


def session_refusal(book: TokenBook | None, result: HandshakeResult, *, address: str,
                    now: float) -> P2PWorldError | None:
    """Why an authenticated session is not adopted (None: it is). Its token is checked
    against the world's token book (a world without auth has none); a session on the Nostr
    lane must run over the Nostr key the peer's node key attests."""
    refused = None if book is None else book.admit(
        result.peer_token or b"", now=now, node_key=result.peer_key,
        nostr_pubkey=result.peer_attestation.nostr_pubkey)
    nostr = f"nostr:{result.peer_attestation.nostr_pubkey.hex()}"
    if refused is None and address.startswith("nostr:") and address != nostr:
        refused = Unauthorized("Nostr lane key is not the one the peer attests")
    return refused


@dataclass
class PreHandshake(Generic[K]):
    """Incoming connections waiting for their handshake, oldest first, at most ``limit``."""

    limit: int
    waiting: dict[K, None] = field(default_factory=dict)

    def add(self, key: K) -> K | None:
        """A connection arrived: the oldest one to close to make room (None: no need)."""
        self.waiting[key] = None
        if len(self.waiting) <= self.limit:
            return None
        oldest = next(iter(self.waiting))
        del self.waiting[oldest]
        return oldest

    def done(self, key: K) -> None:
        """The connection authenticated, or ended: no longer waiting."""
        self.waiting.pop(key, None)

    def evicted(self, key: K) -> bool:
        """Whether the connection was closed to make room for newer ones."""
        return key not in self.waiting


__all__ = ["PeerBook", "PeerRecord", "PreHandshake", "session_refusal"]
