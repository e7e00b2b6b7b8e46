"""Which peers a node dials, on which lane, when, and which session survives (pure).

The node core runs one :class:`PeerCore`; both executors carry out its :class:`Dial` effects
(the trio runtime over real sockets, rendezvous pipes and relays; the simulator over its
network) and report each attempt back with :class:`~p2pworld.core.node.DialDone`. The rules,
in one place:

* **Candidates.** A discovery record (mDNS, a rendezvous listing, a relay's presence event,
  a world record) says where a peer may be. A record of another workspace is counted, not
  dialled. A peer with no candidate left is not dialled again.
* **Who dials.** The lower node id dials at once; the higher waits a grace period
  (:func:`~p2pworld.transport.peering.dial_delay`) and dials if no session came.
* **Lane precedence** (seed §8.2): the primary lane first (direct URLs in order, then a
  rendezvous that knows the peer); after two failed primary attempts in a row, the Nostr lane
  if the transport mode allows it; ``forced-nostr`` dials only the Nostr lane. After a failed
  round, an exponential backoff with jitter (0.25 s to 30 s).
* **Back to the direct lane.** While on the Nostr lane (mode ``primary-with-fallback``), the
  direct lane is probed (1 s to 15 s backoff); a primary session that comes up replaces the
  Nostr one.
* **Which session survives** (:meth:`PeerCore.admit`): a primary-lane session replaces a Nostr
  one, never the other way round; on one lane, both ends keep the one the lower id dialled.
* **Incoming** sessions on a lane the mode forbids are refused (:meth:`PeerCore.accepts`).
* **Configured peers** (``NodeConfig.peers``: URLs, their ids unknown until the handshake)
  are dialled at start and again after their session ends or an attempt fails, with the same
  backoff; not in ``forced-nostr`` mode (they are direct addresses).
* An attempt with no answer within its bound (its task failed) counts as failed.

Example:
    >>> import random
    >>> from p2pworld.transport.candidate import from_urls
    >>> pc = PeerCore(me=b"\\x01", workspace="lab", mode="primary-only", rng=random.Random(0))
    >>> pc.seen("mdns:x", from_urls(b"\\x02", "lab", ["ws://127.0.0.1:1"], source="mdns"),
    ...         now_ms=0)
    >>> [(d.lane, d.urls) for d in pc.due(now_ms=0)]
    [('primary', ('ws://127.0.0.1:1/',))]
    >>> pc.dialled(b"\\x02", ok=False, code="CONNECT_FAILED", now_ms=5)
    >>> pc.due(now_ms=5), 5 < pc.wake_at() <= 255  # backing off
    ([], True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from p2pworld.effects import Dial
from p2pworld.transport.backoff import Backoff
from p2pworld.transport.peering import dial_delay, keep_new_session

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from p2pworld.transport.candidate import Candidate

DIAL_GRACE_MS = 2_000
"""Default grace the higher node id gives the lower one to dial first."""
ATTEMPT_MS = 10_000
"""Default bound of one target of an attempt (a URL, a relay, a pipe): the handshake time."""
MAX_OTHER_WORKSPACES = 64
"""Names of other workspaces remembered (sightings counted per name)."""


_UNKNOWN: Any = object()

@dataclass
class PeerState:
    """What the peer core knows of one peer."""

    candidates: dict[str, Candidate] = field(default_factory=dict)
    lane: str | None = None
    """The lane of the session up (``primary`` or ``nostr``), None without one."""
    initiator: bool = False
    dialling: Dial | None = None
    deadline_ms: int | None = None
    """When the attempt on its way counts as failed, or when the next one is due."""
    direct_failures: int = 0
    next_lane: str = "primary"
    """The lane of the next attempt: the Nostr lane right after the second failed primary
    attempt in a row (mode ``primary-with-fallback``), then the primary lane again."""
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.25, cap=30.0))
    probe: Backoff = field(default_factory=lambda: Backoff(base=1.0, cap=15.0))
    nostr: bytes = b""
    failures: int = 0
    last_error: str = ""


@dataclass
class StaticPeer:
    """A configured peer, by URL."""

    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.25, cap=30.0))
    deadline_ms: int | None = 0
    dialling: bool = False
    peer: bytes | None = None
    """The node id its last session gave (its session's end schedules the next dial)."""


@dataclass
class PeerCore:
    """The dialling and admission rules of one node (see the module's docstring)."""

    me: bytes
    workspace: str
    mode: str
    rng: random.Random
    grace_ms: int = DIAL_GRACE_MS
    attempt_ms: int = ATTEMPT_MS
    peers: dict[bytes, PeerState] = field(default_factory=dict)
    other_workspaces: dict[str, int] = field(default_factory=dict)
    statics: dict[str, StaticPeer] = field(default_factory=dict)
    _wake: Any = field(default=_UNKNOWN, init=False, repr=False, compare=False)
    """:meth:`wake_at`'s answer, until a method that moves a deadline runs."""

    def add_static(self, url: str) -> None:
        """Dial ``url`` (a configured peer) at the next wake-up, and keep a session to it."""
        self._wake = _UNKNOWN
        self.statics.setdefault(url, StaticPeer())

    def dialled_static(self, url: str, peer: bytes, *, ok: bool, now_ms: int) -> None:
        """A configured peer's dial ended: ``ok`` with a session to ``peer`` (its end
        schedules the next dial), or failed (the next after a backoff)."""
        self._wake = _UNKNOWN
        st = self.statics.get(url)
        if st is None:
            return
        st.dialling = False
        if ok:
            st.backoff.reset()
            st.peer, st.deadline_ms = peer, None
        else:
            st.deadline_ms = now_ms + self._delay(st.backoff)

    # --- what discovery says --------------------------------------------------------------

    def seen(self, key: str, c: Candidate, *, now_ms: int) -> None:
        """A discovery record ``key`` says ``c.node_id`` may be at ``c``."""
        self._wake = _UNKNOWN
        if c.node_id == self.me:
            return
        if c.workspace != self.workspace:
            if c.workspace in self.other_workspaces or \
                    len(self.other_workspaces) < MAX_OTHER_WORKSPACES:
                self.other_workspaces[c.workspace] = self.other_workspaces.get(c.workspace, 0) + 1
            return
        p = self.peers.get(c.node_id)
        if p is None:
            p = self.peers[c.node_id] = PeerState()
        fresh, new_record = not p.candidates, key not in p.candidates
        p.candidates[key] = c
        if c.nostr:
            p.nostr = c.nostr
        if fresh and p.lane is None and p.dialling is None:
            self._schedule(c.node_id, p, now_ms)
        elif new_record and p.lane == "nostr" and p.dialling is None and c.urls() and \
                self.mode == "primary-with-fallback":
            p.deadline_ms = now_ms  # a direct route for a peer reached over Nostr: probe it

    def gone(self, key: str, peer: bytes | None = None) -> None:
        """Record ``key`` no longer lists ``peer`` (None: any peer)."""
        for pid, p in self.peers.items():
            if peer is None or pid == peer:
                p.candidates.pop(key, None)

    def learned_nostr(self, peer: bytes, key: bytes) -> None:
        """The peer's Nostr key, from its world record or its session's attestation."""
        p = self.peers.get(peer)
        if p is not None and len(key) == 32:
            p.nostr = key

    # --- sessions ---------------------------------------------------------------------------

    def accepts(self, lane: str) -> bool:
        """May an incoming session on ``lane`` be taken at all (the transport mode)?"""
        return not ((lane == "nostr" and self.mode == "primary-only") or
                    (lane == "primary" and self.mode == "forced-nostr"))

    def admit(self, peer: bytes, lane: str, *, initiator: bool) -> bool:
        """With a session to ``peer`` already up, does one new on ``lane`` replace it? (No
        session up: yes.)"""
        p = self.peers.get(peer)
        if p is None or p.lane is None:
            return True
        if lane != p.lane:
            return lane == "primary"
        return keep_new_session(self.me, peer, old_initiator=p.initiator,
                                new_initiator=initiator)

    def up(self, peer: bytes, lane: str, *, initiator: bool, now_ms: int) -> None:
        self._wake = _UNKNOWN
        p = self.peers.get(peer)
        if p is None:
            p = self.peers[peer] = PeerState()
        p.lane, p.initiator = lane, initiator
        p.deadline_ms = None
        if lane == "primary":
            p.direct_failures = 0
            p.probe.reset()
        elif self.mode == "primary-with-fallback" and p.dialling is None:
            p.deadline_ms = now_ms + self._delay(p.probe)

    def down(self, peer: bytes, *, now_ms: int) -> None:
        self._wake = _UNKNOWN
        for st in self.statics.values():
            if st.peer == peer and not st.dialling and st.deadline_ms is None:
                st.deadline_ms = now_ms + self._delay(st.backoff)
        p = self.peers.get(peer)
        if p is None:
            return
        p.lane = None
        if p.dialling is None:
            self._schedule(peer, p, now_ms)

    def dialled(self, peer: bytes, *, ok: bool, code: str = "", now_ms: int) -> None:
        """An attempt ended: ``ok`` if it opened a session (kept or not)."""
        self._wake = _UNKNOWN
        p = self.peers.get(peer)
        if p is None or p.dialling is None:
            return
        d, p.dialling, p.deadline_ms = p.dialling, None, None
        p.next_lane = "primary"
        if ok:
            p.backoff.reset()
            if d.probe:
                p.probe.reset()
        else:
            p.failures += 1
            p.last_error = code
            if d.lane == "primary" and not d.probe:
                p.direct_failures += 1
                if self.mode == "primary-with-fallback" and p.direct_failures >= 2:
                    p.next_lane = "nostr"
        if p.lane == "nostr" and self.mode == "primary-with-fallback":
            p.deadline_ms = now_ms + self._delay(p.probe)  # the next probe
        elif p.lane is None:
            if ok:
                self._schedule(peer, p, now_ms)
            elif p.next_lane == "nostr":
                p.deadline_ms = now_ms  # the Nostr lane at once
            else:
                p.deadline_ms = now_ms + self._delay(p.backoff)

    # --- time ---------------------------------------------------------------------------

    def due(self, *, now_ms: int, nostr_of: Callable[[bytes], bytes] | None = None
            ) -> list[Dial]:
        """The attempts to make now (at most one per peer on its way at a time).
        ``nostr_of``: a peer's Nostr key from what else the node knows (its world record)."""
        self._wake = _UNKNOWN
        out: list[Dial] = []
        for url, st in sorted(self.statics.items()) if self.mode != "forced-nostr" else ():
            if st.deadline_ms is None or now_ms < st.deadline_ms:
                continue
            if st.dialling:  # no answer within its bound
                self.dialled_static(url, b"", ok=False, now_ms=now_ms)
                continue
            st.dialling, st.deadline_ms = True, now_ms + 2 * self.attempt_ms
            out.append(Dial(b"", "primary", (url,), static=url))
        for pid, p in sorted(self.peers.items()):
            if p.deadline_ms is None or now_ms < p.deadline_ms:
                continue
            if p.dialling is not None:  # no answer within its bound
                self.dialled(pid, ok=False, code="DIAL_TIMEOUT", now_ms=now_ms)
                if p.deadline_ms is None or now_ms < p.deadline_ms:
                    continue
            d = self._next_dial(pid, p, nostr_of)
            if d is None:
                # No candidate left (not dialled again); no way on the lane due (no Nostr
                # key yet: look again after a backoff); on the Nostr lane, no direct route
                # known yet (probe again later: a discovery record may bring one).
                p.next_lane = "primary"
                if p.lane == "nostr" and self.mode == "primary-with-fallback":
                    p.deadline_ms = now_ms + self._delay(p.probe)
                elif not p.candidates or p.lane is not None:
                    p.deadline_ms = None
                else:
                    p.deadline_ms = now_ms + self._delay(p.backoff)
                continue
            p.dialling = d
            p.deadline_ms = now_ms + self.attempt_ms * (len(d.urls) + len(d.relays) + 1)
            out.append(d)
        return out

    def wake_at(self) -> int | None:
        """The earliest deadline of a peer or a configured peer (None: none)."""
        if self._wake is not _UNKNOWN:
            return self._wake  # type: ignore[no-any-return]
        best = None
        for group in (self.peers.values(),
                      self.statics.values() if self.mode != "forced-nostr" else ()):
            for x in group:
                d = x.deadline_ms
                if d is not None and (best is None or d < best):
                    best = d
        self._wake = best
        return best

    def clock_went_back(self, by_ms: int) -> None:
        self._wake = _UNKNOWN
        for p in self.peers.values():
            if p.deadline_ms is not None:
                p.deadline_ms -= by_ms
        for st in self.statics.values():
            if st.deadline_ms is not None:
                st.deadline_ms -= by_ms

    # --- rules ------------------------------------------------------------------------------

    def _delay(self, b: Backoff) -> int:
        return round(1000 * b.next_delay(self.rng))

    def _schedule(self, peer: bytes, p: PeerState, now_ms: int) -> None:
        """No session: dial now (the lower id), or after the grace (the higher)."""
        if not p.candidates:
            p.deadline_ms = None
            return
        p.deadline_ms = now_ms + round(dial_delay(self.me, peer, grace=self.grace_ms,
                                                  jitter=self.rng.random()))

    def _next_dial(self, peer: bytes, p: PeerState,
                   nostr_of: Callable[[bytes], bytes] | None) -> Dial | None:
        if not p.candidates:
            return None
        cands = list(p.candidates.values())
        urls = tuple(sorted({u for c in cands for u in c.urls()}))
        relays = tuple(sorted({c.relay for c in cands if c.relay}))
        if p.lane == "nostr":
            return Dial(peer, "primary", urls, relays, probe=True) if urls or relays else None
        if p.lane is not None:
            return None
        if self.mode == "forced-nostr" or p.next_lane == "nostr":
            nostr = next((c.nostr for c in cands if c.nostr), b"") or (
                nostr_of(peer) if nostr_of is not None else b"") or p.nostr
            return Dial(peer, "nostr", nostr=nostr) if len(nostr) == 32 else None
        return Dial(peer, "primary", urls, relays)
