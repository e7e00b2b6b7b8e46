"""The world-state core: this node's document, every peer's replica, presence and gossip.

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
from p2pworld.auth.book import token_id_of
from p2pworld.effects import PeerMisbehaved, Send
from p2pworld.errors import DecodeError, P2PWorldError, StaleUpdate, WorldError, WorldGap
from p2pworld.identity import Signer, blake2b256, node_id, verify_raw
from p2pworld.wire import (
    Message,
    WorldDigest,
    WorldGraft,
    WorldId,
    WorldIHave,
    WorldPrune,
    WorldPush,
)
from p2pworld.world.admission import authorize_record, learn_latest_tokens
from p2pworld.world.doc import (
    COMPACT_EVERY,
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
from p2pworld.world.records import DocUpdate, Heartbeat, Verifier
from p2pworld.world.timers import WorldTimers, _earliest

if TYPE_CHECKING:
    import random

    from p2pworld.auth.book import TokenBook

MAX_AUTHORS = 4096
MAX_PUSH_BYTES = 768 * 1024
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
class _Presence:
    hb: Heartbeat | None = None
    last_seen_ms: int = 0
    state: str = "unknown"
    reason: str = ""


@dataclass
class _Missing:
    peer: bytes
    deadline: int
    kind: str  # "u" or "hb"


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


class WorldCore(WorldTimers):
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

    # --- reducers: this node's own document -------------------------------------------

    def join(self, info: NodeInfo, *, now_ms: int, session: SessionInfo | None = None
             ) -> list[WorldEffect]:
        """``join_world``: start this incarnation's document (carrying over what the store
        held), set the node info (and a session), and beat once."""
        self._authorize(self.public_key, "world:join", now_ms)
        fx: list[WorldEffect] = []
        if self.author is None:
            self.author = AuthorDoc(self.signer, self.inc, token=self.token)
            carried = self.own_stored_view()
            if carried is not None:
                # Sessions of a previous incarnation ended when it did.
                carried = DocView(info=carried.info, caps=carried.caps, links=(),
                                  sessions=tuple(
                                      s if s.ended_ms is not None else
                                      SessionInfo(session_id=s.session_id,
                                                  workspace=s.workspace,
                                                  started_ms=s.started_ms, ended_ms=now_ms)
                                      for s in carried.sessions)[-16:])
            fx += self._own(self.author.start(carried), now_ms)
        self._left = False
        fx += self._own(self.author.set_info(info), now_ms)
        if session is not None:
            fx += self._own(self.author.set_session(session), now_ms)
        fx += self._beat(now_ms)
        return fx

    def advertise(self, ad: CapabilityAd, *, now_ms: int) -> list[WorldEffect]:
        """``advertise_capabilities``."""
        self._authorize(self.public_key, "world:advertise", now_ms)
        return self._own(self._need_author().set_caps(ad), now_ms)

    def set_session(self, s: SessionInfo, *, now_ms: int) -> list[WorldEffect]:
        """Record a session of this node (best effort, as :meth:`set_link`)."""
        if not self._may_update(now_ms):
            return []
        return self._own(self._need_author().set_session(s), now_ms)

    def set_link(self, link: LinkInfo, *, now_ms: int) -> list[WorldEffect]:
        """Publish a link to a peer in this node's document. Best effort: while this node's
        own token does not cover ``world:join`` (expired during a control-service outage,
        revoked) the update is skipped and counted (``stats.refused``), never raised: a
        session coming or going must not fail on it. :meth:`set_token` reconciles."""
        if not self._may_update(now_ms):
            return []
        return self._own(self._need_author().set_link(link), now_ms)

    def set_token(self, raw: bytes, *, now_ms: int) -> list[WorldEffect]:
        """A refreshed token: remember it, sign records with it from now on, and tell peers
        (a delta that re-states the node info carries it)."""
        self.token = raw
        if self.auth is not None:
            self.auth.learn(raw, now=now_ms / 1000, node_key=self.public_key)
        if self.author is None:
            return []
        self.author.token = raw
        self.own_refused = None
        info = self.author.view().info
        fx = self._own(self.author.set_info(info), now_ms) if info else []
        # Links that went down while the token was refused are still in the document.
        for lk in self.author.view().links:
            if lk.target not in self.peers:
                fx += self._own(self.author.drop_link(lk.target), now_ms)
        return fx

    def drop_link(self, target: bytes, *, now_ms: int) -> list[WorldEffect]:
        """Remove a link from this node's document (best effort, as :meth:`set_link`)."""
        a = self.author
        if a is None or "l:" + target.hex() not in a.map or not self._may_update(now_ms):
            return []
        return self._own(a.drop_link(target), now_ms)

    def _may_update(self, now_ms: int) -> bool:
        try:
            self._authorize(self.public_key, "world:join", now_ms)
        except P2PWorldError as e:
            self.stats.refuse(e.code)
            self.own_refused = e
            return False
        return True

    def heartbeat(self, *, now_ms: int, status: str = "online") -> list[WorldEffect]:
        """``heartbeat``: an explicit beat (the core also beats every ``heartbeat_ms``). The
        status (``online`` or ``busy``) stays for the automatic beats that follow, until the
        application sets another."""
        if status not in ("online", "busy"):
            raise WorldError(f"status is 'online' or 'busy', not {status[:16]!r}")
        self._status = status
        return self._beat(now_ms, status)

    def leave(self, *, now_ms: int) -> list[WorldEffect]:
        """Go offline explicitly: peers see ``left`` with ``reason="explicit_offline"``."""
        if self.auth is not None:
            self.auth.check_heartbeat(self.public_key, now=now_ms / 1000)
        a = self._need_author()
        info = a.view().info or NodeInfo()
        fx = self._own(a.set_info(NodeInfo(nostr_pubkey=info.nostr_pubkey, device=info.device,
                                           status="offline", version=info.version,
                                           region=info.region)), now_ms)
        fx += self._beat(now_ms, "offline")
        self._left = True
        return fx

    def _need_author(self) -> AuthorDoc:
        if self.author is None:
            raise WorldError("join the world first")
        return self.author

    def _own(self, u: DocUpdate, now_ms: int) -> list[WorldEffect]:
        fx: list[WorldEffect] = []
        rep = self._replica(self.public_key)
        rep.apply(u)
        fx += self._after_update(rep, u, now_ms)
        a = self.author
        assert a is not None
        if u.kind == "delta" and len(a.deltas) >= COMPACT_EVERY:
            base = a.compact()
            rep.apply(base)
            fx.append(WorldSave(self.public_key, tuple(r.raw for r in rep.records())))
            return fx + self._spread(None, [u, base], [])
        return fx + self._spread(None, [u], [])

    def _beat(self, now_ms: int, status: str | None = None) -> list[WorldEffect]:
        if self.author is None:
            return []
        self._next_hb = now_ms + self.config.heartbeat_ms
        if self.auth is not None:
            try:
                self.auth.check_heartbeat(self.public_key, now=now_ms / 1000)
            except P2PWorldError as e:
                self.stats.refuse(e.code)  # beyond the membership grace: stop beating
                return []
        self._hb_n += 1
        st = status or ("offline" if self._left else self._status)
        hb = Heartbeat.create(self.signer, inc=self.inc, n=self._hb_n, time_ms=now_ms,
                              status=st, token=token_id_of(self.token))
        fx = self._accept_hb(hb, now_ms)
        return fx + self._spread(None, [], [hb])

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

    # --- receiving ----------------------------------------------------------------------

    def receive(self, peer: bytes, msg: Message, *, now_ms: int) -> list[WorldEffect]:
        if peer not in self.peers:
            return []
        if isinstance(msg, WorldPush):
            return self._on_push(peer, msg, now_ms)
        if isinstance(msg, WorldIHave):
            return self._on_ihave(peer, msg, now_ms)
        if isinstance(msg, WorldGraft):
            return self._on_graft(peer, msg)
        if isinstance(msg, WorldPrune):
            for prefix in msg.sources:
                src = self._by_prefix.get(prefix)
                if src is not None:
                    self.pruned.setdefault(src, set()).add(peer)
            return []
        if isinstance(msg, WorldDigest):
            return self._on_digest(peer, msg)
        return []

    def _on_push(self, peer: bytes, msg: WorldPush, now_ms: int) -> list[WorldEffect]:
        fx: list[WorldEffect] = []
        new_u: list[DocUpdate] = []
        new_hb: list[Heartbeat] = []
        dup_src: list[bytes] = []
        gaps: list[WorldId] = []
        refused: set[bytes] = set()
        if self.auth is not None:
            learn_latest_tokens(self.auth, self.verifier, msg.updates, now_ms)
        for i, raw in enumerate(msg.updates):
            author: bytes | None = None
            try:
                u = DocUpdate.decode(raw)
                author = u.author
                rep = self._replica(u.author)
                if rep.check(u) in ("stale", "gap"):
                    rep.apply(u)  # raises StaleUpdate / WorldGap: nothing to authorize
                authorize_record(self.auth, self.verifier, u, now_ms)
                rep.apply(u, self._guard(u, now_ms))
            except WorldGap:
                if u.author in refused:  # our own refusal: a graft would bring it back at
                    continue             # once (a ping-pong); the digest pull repairs it
                rep = self.replicas[u.author]
                gaps.append((u.node, *rep.position))
                continue
            except StaleUpdate:
                dup_src.append(u.node)
                self.stats.upd_dup += 1
                continue
            except P2PWorldError as e:
                self.stats.refuse(e.code)
                fx.append(PeerMisbehaved(peer, e))
                if author is not None:
                    refused.add(author)
                continue
            self.stats.upd_new += 1
            self._missing.pop(("u", u.node[:8]), None)
            self.parent[u.node] = peer
            new_u.append(u)
            if i == len(msg.updates) - 1 or not _same_author(msg.updates[i + 1], u.author):
                # One event per author per batch (a newcomer's base and deltas arrive together).
                fx += self._after_update(rep, u, now_ms)
            else:
                self._digest = None
                fx.append(WorldSave(u.author, tuple(r.raw for r in rep.records())))
        for raw in msg.heartbeats:
            try:
                hb = Heartbeat.decode(raw)
                got = self._check_hb(hb, now_ms)
            except P2PWorldError as e:
                self.stats.refuse(e.code)
                fx.append(PeerMisbehaved(peer, e))
                continue
            if not got:
                dup_src.append(hb.node)
                self.stats.hb_dup += 1
                continue
            self.stats.hb_new += 1
            self._missing.pop(("hb", hb.node[:8]), None)
            self.parent[hb.node] = peer
            new_hb.append(hb)
            fx += self._accept_hb(hb, now_ms)
        if gaps:
            fx.append(Send(peer, WorldGraft(tuple(gaps))))
        if msg.tree and dup_src:
            # A duplicate along a source's tree: this link is redundant for that source.
            prune = sorted({s for s in dup_src if s != self.node_id and
                            peer not in self.pruned.get(s, ())})
            for s in prune:
                self.pruned.setdefault(s, set()).add(peer)
            if prune:
                self.stats.prunes += len(prune)
                fx.append(Send(peer, WorldPrune(tuple(s[:8] for s in prune))))
        if msg.sync:
            # Anti-entropy answers are not re-broadcast (every node runs its own), except
            # the answering peer's own records: a node that just connected spreads that way.
            key = self.peers.get(peer)
            new_u = [u for u in new_u if u.author == key]
            new_hb = [h for h in new_hb if h.author == key]
        return fx + self._spread(peer, new_u, new_hb)

    def _check_hb(self, hb: Heartbeat, now_ms: int) -> bool:
        """True if ``hb`` is new and valid; False if already held; raises if refused."""
        p = self.presence.get(hb.node)
        if p is not None and p.hb is not None and hb.position <= p.hb.position:
            return False
        if abs(hb.time_ms - now_ms) > self.config.max_skew_ms:
            raise StaleUpdate("heartbeat time too far from this node's clock",
                              author=hb.node.hex())
        hb.verify(self.verifier)
        if self.auth is not None:
            self.auth.check_heartbeat(hb.author, now=now_ms / 1000)
        if hb.node not in self.keys and len(self.keys) >= MAX_AUTHORS:
            raise WorldError("too many world members", limit=MAX_AUTHORS)
        return True

    def _accept_hb(self, hb: Heartbeat, now_ms: int) -> list[WorldEffect]:
        nid = hb.node
        self._know(hb.author)
        p = self.presence.setdefault(nid, _Presence())
        old_status = p.hb.status if p.hb else None
        p.hb, p.last_seen_ms = hb, now_ms
        if hb.status == "offline":
            if p.state != "left":
                p.state, p.reason = "left", "explicit_offline"
                return [self._event("left", nid, now_ms, "explicit_offline")]
            return []
        if p.state != "online":
            p.state, p.reason = "online", ""
            if nid != self.node_id:
                self._stale_at = _earliest(self._stale_at, now_ms + self.config.stale_ms + 1)
            return [self._event("joined", nid, now_ms)]
        if old_status != hb.status:
            return [self._event("updated", nid, now_ms, "status")]
        return []

    def _after_update(self, rep: DocReplica, u: DocUpdate, now_ms: int) -> list[WorldEffect]:
        self._digest = None
        fx: list[WorldEffect] = [WorldSave(u.author, tuple(r.raw for r in rep.records()))]
        info = rep.view.info
        p = self.presence.setdefault(u.node, _Presence())
        if info is not None and info.status == "offline" and p.state != "left":
            p.state, p.reason = "left", "explicit_offline"
            fx.append(WorldChanged(self._event_obj("left", u.node, now_ms, "explicit_offline")))
        else:
            fx.append(WorldChanged(self._event_obj("updated", u.node, now_ms, "document")))
        return fx

    def _on_ihave(self, peer: bytes, msg: WorldIHave, now_ms: int) -> list[WorldEffect]:
        for kind, ids in (("u", msg.updates), ("hb", msg.heartbeats)):
            for prefix, inc, pos in ids:
                prefix = bytes(prefix)[:8]
                held = self._held(kind, prefix)
                if (int(inc), int(pos)) > held and (kind, prefix) not in self._missing:
                    self._missing[(kind, prefix)] = _Missing(peer, now_ms + self.config.graft_ms,
                                                             kind)
                    self._missing_at = _earliest(self._missing_at,
                                                 now_ms + self.config.graft_ms)
        return []

    def _held(self, kind: str, prefix: bytes) -> tuple[int, int]:
        nid = self._by_prefix.get(prefix)
        if nid is None:
            return (0, 0)
        if kind == "u":
            rep = self.replicas.get(self.keys[nid])
            return rep.position if rep else (0, 0)
        p = self.presence.get(nid)
        return p.hb.position if p and p.hb else (0, 0)

    def _on_graft(self, peer: bytes, msg: WorldGraft) -> list[WorldEffect]:
        self.stats.grafts += 1
        ups: list[bytes] = []
        for who, inc, seq in msg.have:
            nid = self._by_prefix.get(bytes(who)[:8])
            rep = self.replicas.get(self.keys[nid]) if nid else None
            if nid is not None:
                self.pruned.get(nid, set()).discard(peer)
            if rep is not None:
                ups += [r.raw for r in rep.records_after((int(inc), int(seq)))]
        hbs = []
        for who in msg.heartbeats:
            nid = bytes(who)
            self.pruned.get(nid, set()).discard(peer)
            p = self.presence.get(nid)
            if p is not None and p.hb is not None:
                hbs.append(p.hb.raw)
        return self._push_to(peer, ups, hbs)

    def _on_digest(self, peer: bytes, msg: WorldDigest) -> list[WorldEffect]:
        h, full = self._digest_now()
        if msg.digest == h:
            return []
        if msg.full is None:
            return [Send(peer, WorldDigest(h, full))]
        theirs = {bytes(a): (int(i), int(s)) for a, i, s in msg.full}
        ups: list[bytes] = []
        behind = False
        for nid, _inc, _seq in full:
            rep = self.replicas[self.keys[nid]]
            ups += [r.raw for r in rep.records_after(theirs.get(nid, (0, 0)))]
        for nid, pos in theirs.items():
            have = self.replicas.get(self.keys.get(nid, b""))
            if have is None or have.position < pos:
                behind = True
        fx = self._push_to(peer, ups, [], sync=True)
        if behind and not msg.final:
            fx.append(Send(peer, WorldDigest(h, full, final=True)))
        return fx

    # --- spreading ----------------------------------------------------------------------

    def _spread(self, src: bytes | None, ups: list[DocUpdate], hbs: list[Heartbeat]
                ) -> list[WorldEffect]:
        if not ups and not hbs:
            return []
        out: dict[bytes, tuple[list[bytes], list[bytes]]] = {}
        peers = sorted(self.peers)
        for kind, rec, node, wid in [("u", u.raw, u.node, (u.node[:8], u.inc, u.seq))
                                     for u in ups] + \
                [("hb", h.raw, h.node, (h.node[:8], h.inc, h.n)) for h in hbs]:
            pruned = self.pruned.get(node, set())
            for p in peers:
                if p != src and p not in pruned:
                    out.setdefault(p, ([], []))[0 if kind == "u" else 1].append(rec)
            self._recent.append((kind, node, wid, src))
        fx: list[WorldEffect] = []
        for p, (u_raw, h_raw) in sorted(out.items()):
            fx += self._push_to(p, u_raw, h_raw, tree=True)
        return fx

    def _push_to(self, peer: bytes, ups: list[bytes], hbs: list[bytes], *, tree: bool = False,
                 sync: bool = False) -> list[WorldEffect]:
        fx: list[WorldEffect] = []
        batch_u: list[bytes] = []
        batch_h: list[bytes] = []
        size = 0
        for kind, raw in [("u", r) for r in ups] + [("h", r) for r in hbs]:
            if batch_u or batch_h:
                if size + len(raw) > MAX_PUSH_BYTES or \
                        max(len(batch_u), len(batch_h)) >= 1024:
                    fx.append(Send(peer, WorldPush(tuple(batch_u), tuple(batch_h), tree, sync)))
                    batch_u, batch_h, size = [], [], 0
            (batch_u if kind == "u" else batch_h).append(raw)
            size += len(raw)
        if batch_u or batch_h:
            fx.append(Send(peer, WorldPush(tuple(batch_u), tuple(batch_h), tree, sync)))
        return fx

    # --- queries ------------------------------------------------------------------------

    def member(self, nid: bytes, *, now_ms: int) -> Member | None:
        key = self.keys.get(nid)
        if key is None:
            return None
        rep = self.replicas.get(key)
        view = rep.view if rep else DocView()
        p = self.presence.get(nid) or _Presence()
        state = p.state
        if nid == self.node_id and self.author is not None:
            state = "left" if self._left else "online"
        return Member(node_id=nid, public_key=key, state=state,
                      status=p.hb.status if p.hb else (view.info.status if view.info else ""),
                      last_seen_ms=p.last_seen_ms if p.hb else None, reason=p.reason,
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
        """Document positions by node id (the anti-entropy digest's contents)."""
        return {nid: self.replicas[k].position for nid, k in sorted(self.keys.items())
                if k in self.replicas and self.replicas[k].base is not None}

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


def _same_author(raw: bytes, author: bytes) -> bool:
    """Cheap look-ahead: does the next raw record (canonical CBOR map, ``a`` first) name the
    same author? Only used to coalesce events, never to accept anything."""
    return raw[5:37] == author if len(raw) > 37 else False


__all__ = ["WorldCore", "WorldConfig", "WorldEvent", "WorldChanged", "WorldSave", "Member",
           "WorldStats", "NodeInfo", "CapabilityAd", "SessionInfo", "LinkInfo", "Send"]
