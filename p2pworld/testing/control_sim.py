"""The simulated control service: tokens minted on true time, refreshed when the node's own
token schedule says (:class:`~p2pworld.auth.schedule.TokenSchedule`, in its node core),
revocations learned at the next poll."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from p2pworld.auth.book import DEFAULT_SCOPES
from p2pworld.auth.token import Claims, mint
from p2pworld.core.calls import Join
from p2pworld.core.node import RevocationsLearned, TokenMinted, TokenRefused
from p2pworld.world.doc import NodeInfo

if TYPE_CHECKING:
    import random

    from p2pworld.core.node import Input
    from p2pworld.identity import Signer
    from p2pworld.testing.sim import SimNode, Stats

CONTROL_RTT_S = 0.004
"""A round trip to the simulated control service."""
SIM_NOSTR_KEY = bytes(32)
"""The Nostr key the simulated control service's tokens name (the simulator runs no Nostr
keys)."""


class SimControl:
    """The control-service half of :class:`~p2pworld.testing.sim.Simulator`."""

    now: float
    rng: random.Random
    stats: Stats
    nodes: dict[str, SimNode]
    control: Signer
    control_up: bool
    control_cut: set[str]
    revoked_at: dict[str, float]
    minted: dict[str, list[tuple[int, int]]]
    token_ttl: float
    world_on: bool
    sessions: set[frozenset[str]]

    if TYPE_CHECKING:
        def now_ms(self, node: SimNode) -> int: ...
        def at(self, delay: float, fn: Callable[[], None]) -> None: ...
        def blocked_pairs(self) -> set[tuple[str, str]]: ...
        def _carry(self, node: SimNode, fx: list[Any], *, inp: Input | None = None) -> None: ...
        def _calls(self, node: SimNode, calls: list[Join]) -> list[Any]: ...

    def _mint(self, node: SimNode) -> bytes | None:
        """A token from the control service (its clock is true time), if it is reachable."""
        if not self.control_up or node.name in self.control_cut or node.name in self.revoked_at:
            return None
        iat = int(self.now)
        exp = iat + int(self.token_ttl)
        n = sum(len(v) for v in self.minted.values())
        self.minted.setdefault(node.name, []).append((iat, exp))
        node.token_exp = exp  # the claim (the control service's clock), as a node holds it
        claims = Claims(org="sim", user=node.name, device=node.name, session="s",
                        node_key=node.signer.public_key, nostr_pubkey=SIM_NOSTR_KEY,
                        scopes=DEFAULT_SCOPES, issued_at=iat, expires_at=exp,
                        token_id=n.to_bytes(16, "big"))
        return mint(claims, self.control, kid="k1")

    def _ask_token(self, node: SimNode) -> None:
        """Carry out a :class:`~p2pworld.effects.RefreshToken` (the node core said when): the
        answer, a control round trip later, goes back to the core as an input."""
        gen = node.incarnation
        self.at(CONTROL_RTT_S, lambda: self._answer_token(node, gen))

    def _answer_token(self, node: SimNode, gen: int) -> None:
        if node.cores is None or node.incarnation != gen:
            return
        raw = self._mint(node)
        if raw is None:
            self.stats.reach("token_refresh_failed")
            if self.sessions and any(node.name in p for p in self.blocked_pairs()):
                self.stats.reach("token_refresh_during_partition")
            self._carry(node, [], inp=TokenRefused(code="CONTROL_UNREACHABLE"))
            return
        first = node.token is None
        node.token = raw
        self._carry(node, [], inp=TokenMinted(token=raw, expires_at=node.token_exp))
        if first and self.world_on:
            # The runtime's start waits for a first token (``runtime.startup.bootstrap_auth``); a node
            # booted while the service was away joins now.
            self._calls(node, [Join(info=NodeInfo(device=node.name))])
        self.stats.reach("token_refresh")

    REVOCATION_POLL = 30.0

    def revoke(self, name: str) -> None:
        """The control service revokes a node; every node learns it at its next revocation
        poll (within :attr:`REVOCATION_POLL` seconds), as real nodes do."""
        nid = self.nodes[name].signer_id
        self.revoked_at[name] = self.now
        for other in sorted(self.nodes):
            node = self.nodes[other]

            def apply(node: SimNode = node) -> None:
                if node.cores is not None and node.cores.auth is not None:
                    self._carry(node, [], inp=RevocationsLearned(nodes=frozenset({nid})))

            self.at(self.rng.random() * self.REVOCATION_POLL, apply)
