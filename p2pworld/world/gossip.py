"""World gossip, a part of :class:`~p2pworld.world.core.WorldCore` (a mixin: the state is the
core's): receiving pushes, announcements, grafts, prunes and digests from peers, and spreading
new records along each source's broadcast tree (see :mod:`p2pworld.world.core` for the
design). Every record from a peer is hostile until checked: a refusal is counted and answered
with a typed ``PeerMisbehaved``, never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2pworld.effects import PeerMisbehaved, Send
from p2pworld.errors import P2PWorldError, StaleUpdate, WorldError, WorldGap
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
from p2pworld.world.events import WorldChanged, WorldEffect, WorldEvent, WorldSave
from p2pworld.world.records import DocUpdate, Heartbeat, Verifier
from p2pworld.world.timers import _earliest

if TYPE_CHECKING:
    from p2pworld.auth.book import TokenBook
    from p2pworld.world.core import WorldConfig, WorldStats
    from p2pworld.world.doc import DocReplica, DocView

MAX_AUTHORS = 4096
"""World members a node tracks (a newcomer beyond it is refused)."""
MAX_PUSH_BYTES = 768 * 1024
"""Record bytes in one push (more go in further pushes)."""


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


class Gossip:
    """The gossip methods of the world core."""

    if TYPE_CHECKING:  # the core's state and methods these use
        auth: TokenBook | None
        verifier: Verifier
        config: WorldConfig
        stats: WorldStats
        node_id: bytes
        keys: dict[bytes, bytes]
        replicas: dict[bytes, DocReplica]
        presence: dict[bytes, _Presence]
        peers: dict[bytes, bytes]
        pruned: dict[bytes, set[bytes]]
        parent: dict[bytes, bytes]
        _by_prefix: dict[bytes, bytes]
        _recent: list[tuple[str, bytes, WorldId, bytes | None]]
        _missing: dict[tuple[str, bytes], _Missing]
        _missing_at: int | None
        _stale_at: int | None
        _digest: tuple[bytes, tuple[WorldId, ...]] | None

        def _replica(self, key: bytes) -> DocReplica: ...
        def _know(self, key: bytes) -> bytes: ...
        def _guard(self, u: DocUpdate, now_ms: int
                   ) -> Callable[[DocView, DocView], None] | None: ...
        def _digest_now(self) -> tuple[bytes, tuple[WorldId, ...]]: ...
        def _event(self, kind: str, nid: bytes, now_ms: int, reason: str = ""
                   ) -> WorldChanged: ...
        def _event_obj(self, kind: str, nid: bytes, now_ms: int, reason: str = ""
                       ) -> WorldEvent: ...

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


def _same_author(raw: bytes, author: bytes) -> bool:
    """Cheap look-ahead: does the next raw record (canonical CBOR map, ``a`` first) name the
    same author? Only used to coalesce events, never to accept anything."""
    return raw[5:37] == author if len(raw) > 37 else False
