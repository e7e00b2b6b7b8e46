"""The world-state core: this node's document, every peer's replica, presence and gossip.

The core holds the state, the peers, loading and the queries; its parts are mixins over that
state, one noun each: :mod:`p2pworld.world.own` (this node's own document),
:mod:`p2pworld.world.gossip` (receiving and spreading records) and
:mod:`p2pworld.world.timers` (heartbeats, expiry, announcements, grafts, pulls).

Pure: messages and ``now_ms`` in, effects out (the node runtime and the simulator carry them
out the same way). See ``docs/world.md`` for the design; in short:

* **Authority.** Each node writes only its own document (:class:`~p2pworld.world.doc.AuthorDoc`)
  and signs every record; replicas accept a record only if the author's key signed it, in chain
  order, inserting only under the author's derived CRDT client id.
* **Liveness.** Heartbeats are signed, ephemeral and ordered by ``(incarnation, n)``; they never
  enter CRDT history. A member is ``stale`` when this node has not heard a newer heartbeat for
  ``stale_ms`` by its *own* clock, ``left`` when the author said so.
* **Gossip** (Plumtree-shaped, one broadcast tree per source). New records are pushed eagerly
  to every peer not pruned for their source; a duplicate received over a link prunes that link
  from the source's tree (both ends). A source's records follow each other, so two nodes never
  prune the same cycle twice for it and each tree stays connected (a tree shared by all
  sources is pruned concurrently by many of them and falls apart). Record ids are announced
  in batches to a few pruned peers, which graft the link back if the eager push did not arrive
  in time; losing the peer a source's records came from un-prunes that source; a periodic
  digest exchange with one random peer (hash first, full positions only when the hashes
  differ) repairs anything else, e.g. after a partition or a restart.

Example (two cores wired by hand; the node runtime and the simulator do this for real):
    >>> import random
    >>> from p2pworld.identity import Ed25519Signer
    >>> a = WorldCore(Ed25519Signer(bytes(32)), inc=1, rng=random.Random(1))
    >>> b = WorldCore(Ed25519Signer(bytes([1]) * 32), inc=1, rng=random.Random(2))
    >>> def run(fx, src):                   # deliver every Send until nothing is left
    ...     todo = [(src, e) for e in fx]
    ...     while todo:
    ...         s, e = todo.pop(0)
    ...         if isinstance(e, Send):
    ...             dst = b if s is a else a
    ...             todo += [(dst, x) for x in dst.receive(s.node_id, e.message, now_ms=1)]
    >>> run(a.join(NodeInfo(device="laptop"), now_ms=0), a)
    >>> fa = a.peer_up(b.node_id, b.public_key, now_ms=0)
    >>> fb = b.peer_up(a.node_id, a.public_key, now_ms=0)
    >>> run(fa, a); run(fb, b)
    >>> run(a.advertise(CapabilityAd(tools=("grep",), expires_ms=60_000), now_ms=1), a)
    >>> m = b.member(a.node_id, now_ms=1)
    >>> m.state, m.info.device, m.caps.tools
    ('online', 'laptop', ('grep',))
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2pworld import codec
from p2pworld.effects import Send
from p2pworld.errors import DecodeError, P2PWorldError, WorldError
from p2pworld.identity import Signer, blake2b256, node_id, verify_raw
from p2pworld.wire import WorldDigest, WorldId
from p2pworld.world.doc import (
    AuthorDoc,
    CapabilityAd,
    DocReplica,
    DocView,
    LinkInfo,
    LiveDocs,
    NodeInfo,
    SessionInfo,
)
from p2pworld.world.events import (  # re-exported: the core's effects and values
    Member as Member,
    WorldChanged as WorldChanged,
    WorldEffect as WorldEffect,
    WorldEvent as WorldEvent,
    WorldSave as WorldSave,
)
from p2pworld.world.gossip import MAX_AUTHORS, Gossip, _Missing, _Presence
from p2pworld.world.own import OwnDocument
from p2pworld.world.records import DocUpdate, Verifier
from p2pworld.world.timers import WorldTimers

if TYPE_CHECKING:
    import random

    from p2pworld.auth.book import TokenBook

EVENT_HISTORY = 4096


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Timers and bounds of the world core (milliseconds)."""

    heartbeat_ms: int = 5_000
    stale_ms: int = 30_000
    max_skew_ms: int = 60_000
    """A heartbeat whose author time is further than this from ours is refused (it bounds how
    long a replayed heartbeat can keep a dead node looking alive on a node that restarted)."""
    pull_ms: int = 10_000
    ihave_ms: int = 500
    graft_ms: int = 1_000
    lazy_fanout: int = 3


@dataclass
class WorldStats:
    """Counters for the benchmark and ``health()``: receptions are full records received."""

    hb_new: int = 0
    hb_dup: int = 0
    upd_new: int = 0
    upd_dup: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    grafts: int = 0
    prunes: int = 0

    def refuse(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1


class WorldCore(OwnDocument, Gossip, WorldTimers):
    """World state of one node (see the module docs). Not thread-safe; one per node."""

    def __init__(self, signer: Signer, *, inc: int, rng: random.Random,
                 config: WorldConfig | None = None, verifier: Verifier = verify_raw,
                 stored: list[list[bytes]] | None = None, token: bytes = b"",
                 auth: TokenBook | None = None) -> None:
        self.signer = signer
        self.auth = auth
        """Token checks before every mutation (None: an open world without a control service)."""
        self.public_key = signer.public_key
        self.node_id = node_id(signer.public_key)
        self.inc = inc
        self.rng = rng
        self.config = config or WorldConfig()
        self.verifier = verifier
        self.token = token
        self.replicas: dict[bytes, DocReplica] = {}
        self._live = LiveDocs()
        self.keys: dict[bytes, bytes] = {}
        self._by_prefix: dict[bytes, bytes] = {}
        self.presence: dict[bytes, _Presence] = {}
        self.peers: dict[bytes, bytes] = {}
        self.pruned: dict[bytes, set[bytes]] = {}
        """source node id -> peers its records are not eagerly pushed to (the lazy links)."""
        self.parent: dict[bytes, bytes] = {}
        """source node id -> the peer its latest new record came from."""
        self.author: AuthorDoc | None = None
        self.stats = WorldStats()
        self.events: collections.deque[WorldEvent] = collections.deque(maxlen=EVENT_HISTORY)
        self.event_seq = 0
        self._hb_n = 0
        self._next_hb = 0
        self._next_pull = 0
        self._next_ihave = 0
        self._recent: list[tuple[str, bytes, WorldId, bytes | None]] = []
        self._missing: dict[tuple[str, bytes], _Missing] = {}
        self._missing_at: int | None = None  # the earliest graft deadline (or earlier)
        self._stale_at: int | None = None  # when the next member may go stale (or earlier)
        self._digest: tuple[bytes, tuple[WorldId, ...]] | None = None
        self._left = False
        self._status = "online"
        self.own_refused: P2PWorldError | None = None
        """Why this node's own last document update was skipped (its token), if it was."""
        for records in stored or []:
            self._load(records)

    # --- loading ------------------------------------------------------------------------

    def _load(self, records: list[bytes]) -> None:
        """Rebuild a replica from stored records (hostile: a bad store row is skipped)."""
        try:
            ups = [DocUpdate.decode(r) for r in records]
            if not ups:
                return
            rep = self._replica(ups[0].author)
            for u in ups:
                rep.apply(u)
        except P2PWorldError:
            self.stats.refuse("STORE_RECORD_REFUSED")

    def own_stored_view(self) -> DocView | None:
        rep = self.replicas.get(self.node_id)
        return rep.view if rep and rep.base else None

    # --- peers --------------------------------------------------------------------------

    def peer_up(self, peer: bytes, key: bytes, *, now_ms: int) -> list[WorldEffect]:
        self.peers[peer] = key
        h, full = self._digest_now()
        fx: list[WorldEffect] = [Send(peer, WorldDigest(h, full))]
        hbs = [p.hb.raw for a, p in sorted(self.presence.items())
               if p.hb is not None and p.state == "online"]
        fx += self._push_to(peer, [], hbs, sync=True)
        return fx

    def peer_down(self, peer: bytes) -> list[WorldEffect]:
        self.peers.pop(peer, None)
        for k in [k for k, m in self._missing.items() if m.peer == peer]:
            del self._missing[k]
        for src in sorted(self.pruned):
            self.pruned[src].discard(peer)
        for src in [s for s, p in self.parent.items() if p == peer]:
            # Its records reached us through that peer: un-prune the source's tree here (the
            # next record floods our links once, and duplicates prune them again).
            del self.parent[src]
            self.pruned.pop(src, None)
        return []

    # --- queries ------------------------------------------------------------------------

    def member(self, nid: bytes, *, now_ms: int) -> Member | None:
        key = self.keys.get(nid)
        if key is None:
            return None
        rep = self.replicas.get(key)
        view = rep.view if rep else DocView()
        p = self.presence.get(nid) or _Presence()
        state, reason = p.state, p.reason
        if nid == self.node_id and self.author is not None:
            state = "left" if self._left else "online"
        elif self.revoked(key):
            state, reason = "left", "revoked"
        return Member(node_id=nid, public_key=key, state=state,
                      status=p.hb.status if p.hb else (view.info.status if view.info else ""),
                      last_seen_ms=p.last_seen_ms if p.hb else None, reason=reason,
                      info=view.info, caps=view.caps, sessions=view.sessions,
                      links=view.links, position=rep.position if rep else (0, 0))

    def members(self, *, now_ms: int) -> list[Member]:
        out = [self.member(nid, now_ms=now_ms) for nid in sorted(self.keys)]
        return [m for m in out if m is not None]

    def query(self, match: Callable[[CapabilityAd], bool], *, now_ms: int) -> list[Member]:
        """The capability query: live members whose unexpired ad satisfies ``match``."""
        return [m for m in self.members(now_ms=now_ms)
                if m.state == "online" and m.caps is not None and m.caps.live(now_ms)
                and match(m.caps)]

    def positions(self) -> dict[bytes, tuple[int, int]]:
        """Document positions by node id (the anti-entropy digest's contents). A revoked
        author is out of them: its records are refused from the moment each node learns the
        revocation, so its document stays as each node last accepted it, and no node tries
        to repair that."""
        return {nid: self.replicas[k].position for nid, k in sorted(self.keys.items())
                if k in self.replicas and self.replicas[k].base is not None
                and not self.revoked(k)}

    def revoked(self, key: bytes) -> bool:
        """Whether the author ``key`` is revoked (its node, or its latest token)."""
        book = self.auth
        if book is None or not (book.revoked_nodes or book.revoked_tokens):
            return False
        held = book.tokens.get(key)
        return node_id(key) in book.revoked_nodes or (
            held is not None and held[1].token_id in book.revoked_tokens)

    def revocations_learned(self) -> None:
        """A revocation list was applied to the token book: the digest is computed anew
        (revoked authors are out of it)."""
        self._digest = None

    def state_hash(self) -> bytes:
        """Hash of every replica's position and contents: equal on converged nodes."""
        return blake2b256(codec.tagged("p2pworld/world-state", [
            [nid, self.replicas[self.keys[nid]].state_hash()] for nid in self.positions()]))

    def events_after(self, seq: int) -> tuple[list[WorldEvent], bool]:
        """Events with ``seq`` greater than the given one; True if some were already dropped
        (the subscriber must rebuild from :meth:`members`)."""
        if not self.events:
            return [], False
        first = self.events[0].seq
        lost = seq + 1 < first
        return [e for e in self.events if e.seq > seq], lost

    # --- internals ----------------------------------------------------------------------

    def _authorize(self, key: bytes, scope: str, now_ms: int) -> None:
        if self.auth is not None:
            self.auth.check(key, scope, now=now_ms / 1000)

    def _guard(self, u: DocUpdate, now_ms: int) -> Callable[[DocView, DocView], None] | None:
        if self.auth is None:
            return None
        auth = self.auth

        def guard(old: DocView, new: DocView) -> None:
            if new.caps != old.caps:
                auth.check(u.author, "world:advertise", now=now_ms / 1000)

        return guard

    def _know(self, key: bytes) -> bytes:
        nid = node_id(key)
        if nid not in self.keys:
            if len(self.keys) >= MAX_AUTHORS:
                raise WorldError("too many world members", limit=MAX_AUTHORS)
            self.keys[nid] = key
            self._by_prefix[nid[:8]] = nid
        return nid

    def _replica(self, key: bytes) -> DocReplica:
        if (rep := self.replicas.get(key)) is None:
            if len(key) != 32:
                raise DecodeError("world update: bad author key")
            self._know(key)
            rep = self.replicas[key] = DocReplica(key, self.verifier, holder=self._live)
        return rep

    def _digest_now(self) -> tuple[bytes, tuple[WorldId, ...]]:
        if self._digest is None:
            full = tuple((nid, i, s) for nid, (i, s) in self.positions().items())
            self._digest = (blake2b256(codec.tagged("p2pworld/world-digest",
                                                    [list(x) for x in full])), full)
        return self._digest

    def _event_obj(self, kind: str, nid: bytes, now_ms: int, reason: str = "") -> WorldEvent:
        self.event_seq += 1
        ev = WorldEvent(seq=self.event_seq, kind=kind, node=nid, at_ms=now_ms, reason=reason)
        self.events.append(ev)
        return ev

    def _event(self, kind: str, nid: bytes, now_ms: int, reason: str = "") -> WorldChanged:
        return WorldChanged(self._event_obj(kind, nid, now_ms, reason))


__all__ = ["WorldCore", "WorldConfig", "WorldEvent", "WorldChanged", "WorldSave", "Member",
           "WorldStats", "NodeInfo", "CapabilityAd", "SessionInfo", "LinkInfo", "Send"]
