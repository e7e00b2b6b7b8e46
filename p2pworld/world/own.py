"""This node's own world document, a part of :class:`~p2pworld.world.core.WorldCore` (a mixin:
the state is the core's): the reducers (``join_world``, ``advertise_capabilities``,
``heartbeat``, leaving) and the best-effort updates the node makes itself (its sessions, its
links, a refreshed token). Each change is one signed delta, applied to this node's own replica
and spread; every ``COMPACT_EVERY`` deltas a signed base replaces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pworld.auth.book import token_id_of
from p2pworld.errors import P2PWorldError, WorldError
from p2pworld.world.doc import (
    COMPACT_EVERY,
    AuthorDoc,
    CapabilityAd,
    DocView,
    LinkInfo,
    NodeInfo,
    SessionInfo,
)
from p2pworld.world.events import WorldEffect, WorldSave
from p2pworld.world.records import DocUpdate, Heartbeat

if TYPE_CHECKING:
    from p2pworld.auth.book import TokenBook
    from p2pworld.identity import Signer
    from p2pworld.world.core import WorldConfig, WorldStats
    from p2pworld.world.doc import DocReplica


class OwnDocument:
    """The methods of the world core that write this node's own document."""

    if TYPE_CHECKING:  # the core's state and methods these use
        signer: Signer
        public_key: bytes
        inc: int
        token: bytes
        auth: TokenBook | None
        config: WorldConfig
        stats: WorldStats
        author: AuthorDoc | None
        peers: dict[bytes, bytes]
        own_refused: P2PWorldError | None
        _left: bool
        _status: str
        _hb_n: int
        _next_hb: int

        def _authorize(self, key: bytes, scope: str, now_ms: int) -> None: ...
        def own_stored_view(self) -> DocView | None: ...
        def _replica(self, key: bytes) -> DocReplica: ...
        def _after_update(self, rep: DocReplica, u: DocUpdate, now_ms: int
                          ) -> list[WorldEffect]: ...
        def _spread(self, src: bytes | None, ups: list[DocUpdate], hbs: list[Heartbeat]
                    ) -> list[WorldEffect]: ...
        def _accept_hb(self, hb: Heartbeat, now_ms: int) -> list[WorldEffect]: ...

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

    def write_links(self, changed: dict[bytes, str | None], *,
                    now_ms: int) -> list[WorldEffect]:
        """The net link changes that settled (peer -> ``direct`` / ``nostr``, or None: gone;
        :class:`~p2pworld.world.links.LinkUpdates`), in one delta; a link as it already
        stands is not written again. Best effort, as :meth:`set_link`."""
        a = self.author
        if a is None or not changed:
            return []
        have = {lk.target: lk.state for lk in a.view().links}
        sets = [LinkInfo(target=p, state=st, capabilities=("v1",))
                for p, st in sorted(changed.items()) if st is not None and have.get(p) != st]
        drops = [p for p, st in sorted(changed.items()) if st is None and p in have]
        if not (sets or drops) or not self._may_update(now_ms):
            return []
        try:
            return self._own(a.set_links(sets, drops), now_ms)
        except P2PWorldError as e:
            # A session coming or going must not fail on its link: the next change of a
            # link writes it again.
            self.stats.refuse(e.code)
            return []

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
