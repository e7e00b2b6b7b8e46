"""The world core's timers, a part of :class:`~p2pworld.world.core.WorldCore` (a mixin: the
state is the core's): heartbeats, presence expiry, lazy announcements, grafts and the digest
pull, run by :meth:`WorldTimers.tick` when :meth:`WorldTimers.wake_at` says one is due, and
moved by :meth:`WorldTimers.clock_went_back` when the node's clock is set back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from p2pworld.effects import Send
from p2pworld.wire import WorldDigest, WorldGraft, WorldId, WorldIHave
from p2pworld.world.events import WorldChanged, WorldEffect, WorldEvent

if TYPE_CHECKING:
    import random

    from p2pworld.world.core import WorldConfig, WorldStats
    from p2pworld.world.doc import AuthorDoc
    from p2pworld.world.gossip import _Missing, _Presence


class WorldTimers:
    """The world core's timed duties."""

    if TYPE_CHECKING:  # the core's state and methods these use
        config: WorldConfig
        node_id: bytes
        rng: random.Random
        author: AuthorDoc | None
        presence: dict[bytes, _Presence]
        peers: dict[bytes, bytes]
        pruned: dict[bytes, set[bytes]]
        stats: WorldStats
        _by_prefix: dict[bytes, bytes]
        _recent: list[tuple[str, bytes, WorldId, bytes | None]]
        _missing: dict[tuple[str, bytes], _Missing]
        _missing_at: int | None
        _stale_at: int | None
        _next_hb: int
        _next_pull: int
        _next_ihave: int
        _left: bool

        def _beat(self, now_ms: int, status: str | None = None) -> list[WorldEffect]: ...
        def _held(self, kind: str, prefix: bytes) -> tuple[int, int]: ...
        def _digest_now(self) -> tuple[bytes, tuple[WorldId, ...]]: ...
        def _event_obj(self, kind: str, nid: bytes, now_ms: int, reason: str = ""
                       ) -> WorldEvent: ...

    # --- time ---------------------------------------------------------------------------

    def tick(self, *, now_ms: int) -> list[WorldEffect]:
        """Beat, expire, announce, graft and pull as their timers come due."""
        fx: list[WorldEffect] = []
        cfg = self.config
        if self.author is not None and not self._left and now_ms >= self._next_hb:
            fx += self._beat(now_ms)
        self._stale_at = None
        for nid, p in sorted(self.presence.items()):
            if nid != self.node_id and p.state == "online":
                if now_ms - p.last_seen_ms > cfg.stale_ms:
                    p.state, p.reason = "stale", "ttl_expired"
                    fx.append(WorldChanged(self._event_obj("stale", nid, now_ms, "ttl_expired")))
                else:
                    self._stale_at = _earliest(self._stale_at, p.last_seen_ms + cfg.stale_ms + 1)
        if now_ms >= self._next_ihave:
            self._next_ihave = now_ms + cfg.ihave_ms
            fx += self._announce()
        due = sorted((k, m) for k, m in self._missing.items() if m.deadline <= now_ms)
        grafts: dict[bytes, tuple[list[WorldId], list[bytes]]] = {}
        for (kind, prefix), m in due:
            del self._missing[(kind, prefix)]
            if m.peer not in self.peers:
                continue
            have, hbs = grafts.setdefault(m.peer, ([], []))
            known = self._by_prefix.get(prefix)
            if kind == "u":
                have.append((known or prefix, *self._held("u", prefix)))
            elif known is not None:
                hbs.append(known)
            else:
                have.append((prefix, 0, 0))
        for peer, (have, hbs) in sorted(grafts.items()):
            for wid in have:
                known = self._by_prefix.get(bytes(wid[0])[:8])
                if known is not None:
                    self.pruned.get(known, set()).discard(peer)
            for known in hbs:
                self.pruned.get(known, set()).discard(peer)
            self.stats.grafts += 1
            fx.append(Send(peer, WorldGraft(tuple(have), tuple(hbs))))
        self._missing_at = min((m.deadline for m in self._missing.values()), default=None)
        if now_ms >= self._next_pull and self.peers:
            self._next_pull = now_ms + cfg.pull_ms
            peer = self.rng.choice(sorted(self.peers))
            fx.append(Send(peer, WorldDigest(self._digest_now()[0])))
        return fx

    def wake_at(self) -> int | None:
        """When :meth:`tick` next has something to do (None: nothing before an input): a
        heartbeat, an announcement of recent records, a graft, a digest pull, a member that
        may go stale."""
        best = self._stale_at
        for t in (self._missing_at,
                  self._next_hb if self.author is not None and not self._left else None,
                  self._next_ihave if self._recent else None,
                  self._next_pull if self.peers else None):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def clock_went_back(self, by_ms: int) -> None:
        """This node's clock was set back by ``by_ms``: its timers and the age of what it
        heard move with it (a heartbeat is due one interval after the last one, not once the
        clock has caught up; a member's silence keeps its length)."""
        self._next_hb -= by_ms
        self._next_pull -= by_ms
        self._next_ihave -= by_ms
        for p in self.presence.values():
            p.last_seen_ms -= by_ms
        for k, m in self._missing.items():
            self._missing[k] = replace(m, deadline=m.deadline - by_ms)
        self._stale_at = None if self._stale_at is None else self._stale_at - by_ms
        self._missing_at = None if self._missing_at is None else self._missing_at - by_ms

    def _announce(self) -> list[WorldEffect]:
        """Lazy push: each record received lately is announced to a few peers that are
        pruned from its source's tree (they graft if the tree failed to deliver it)."""
        recent, self._recent = self._recent, []
        per: dict[bytes, tuple[list[WorldId], list[WorldId]]] = {}
        for kind, node, wid, src in recent[-8192:]:
            lazy = sorted(p for p in self.pruned.get(node, ()) if p != src and p in self.peers)
            if not lazy:
                continue
            for p in self.rng.sample(lazy, min(self.config.lazy_fanout, len(lazy))):
                per.setdefault(p, ([], []))[0 if kind == "u" else 1].append(wid)
        return [Send(p, WorldIHave(tuple(u[-4096:]), tuple(h[-4096:])))
                for p, (u, h) in sorted(per.items())]



def _earliest(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)
