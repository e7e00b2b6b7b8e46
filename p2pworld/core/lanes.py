"""Transport policy (pure): which lanes a node may use, and how traffic splits across them.

Three modes (seed §7, §8.2):

=========================  ===============================================================
``primary-only``           direct sessions (and rendezvous-relayed ones) only
``primary-with-fallback``  the default: direct first; the Nostr lane only for a peer no
                           direct or rendezvous route reaches after a retry
``forced-nostr``           the Nostr lane only (tests, and networks with no direct path)
=========================  ===============================================================

The control service's signed policy document is authoritative: its ``primary`` and
``fallback`` list name the lanes it allows (``direct`` and ``rendezvous`` are the primary
family; ``nostr`` the fallback). Local config can only *narrow* that set: the effective lanes
are the intersection, and a mode whose lanes the policy forbids entirely is refused with
:class:`~p2pworld.errors.PolicyDenied`.

Example:
    >>> resolve_mode("primary-with-fallback", None)
    'primary-with-fallback'
    >>> resolve_mode("primary-with-fallback", {"primary": "direct", "fallback": ["rendezvous"]})
    'primary-only'
    >>> resolve_mode("forced-nostr", {"primary": "direct", "fallback": ["nostr"]})
    'forced-nostr'
    >>> resolve_mode("forced-nostr", {"primary": "direct", "fallback": []})
    Traceback (most recent call last):
    ...
    p2pworld.errors.PolicyDenied: mode 'forced-nostr' needs a lane the policy forbids
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from p2pworld.errors import LocalProtocolError, P2PWorldError, PolicyDenied
from p2pworld.wire import Message, message_channel

if TYPE_CHECKING:
    from p2pworld.channel.hub import ChannelHub

MODES = ("primary-only", "primary-with-fallback", "forced-nostr")
LANES_OF_MODE = {"primary-only": frozenset({"primary"}),
                 "primary-with-fallback": frozenset({"primary", "nostr"}),
                 "forced-nostr": frozenset({"nostr"})}
MODE_OF_LANES = {v: k for k, v in LANES_OF_MODE.items()}
PRIMARY_NAMES = frozenset({"direct", "rendezvous", "lan", "relay"})
DEFAULT_ALERT = 0.05
"""``fallback_ratio`` above this raises ``alert`` in ``node.health()`` (seed §13: at least 95%
of traffic on the primary path)."""


def policy_lanes(policy: dict[str, Any] | None) -> frozenset[str]:
    """The lanes a control-service policy allows (None: no policy, everything allowed)."""
    if policy is None:
        return frozenset({"primary", "nostr"})
    names = [policy.get("primary", "direct"), *policy.get("fallback", [])]
    out = set()
    for n in names:
        if not isinstance(n, str):
            continue
        if n in PRIMARY_NAMES:
            out.add("primary")
        elif n == "nostr":
            out.add("nostr")
    return frozenset(out)


def resolve_mode(local: str, policy: dict[str, Any] | None) -> str:
    """The effective mode: local config narrowed by the policy (never widened)."""
    if local not in LANES_OF_MODE:
        raise LocalProtocolError(f"unknown transport mode {local!r}; one of {MODES}")
    lanes = LANES_OF_MODE[local] & policy_lanes(policy)
    if not lanes:
        raise PolicyDenied(f"mode {local!r} needs a lane the policy forbids")
    return MODE_OF_LANES[lanes]


def nostr_may_carry(hub: ChannelHub, msg: Message) -> bool:
    """May this session message cross the Nostr lane? Channel traffic only for channels whose
    policy allows the fallback (``nostr_fallback``); world gossip and pings always may (they
    are signed, meant for the whole workspace, and inside the session's encryption). A
    channel this node does not know yet: its announce decides at the peer."""
    ch = message_channel(msg)
    if ch is None:
        return True
    try:
        return hub.record(ch).policy.nostr_fallback
    except P2PWorldError:
        return True


def lane_of_address(address: str) -> str:
    """A session's lane from its address: ``nostr``, ``relay`` (rendezvous) or ``direct``."""
    if address.startswith("nostr:"):
        return "nostr"
    if address.startswith("relay:"):
        return "relay"
    return "direct"


@dataclass
class LaneCounters:
    """Messages delivered per lane (entries this node received from a remote sequencer;
    entries a node sequences itself are not traffic and are not counted)."""

    delivered: dict[str, int] = field(default_factory=lambda: {
        "direct": 0, "relay": 0, "nostr": 0})
    alert_at: float = DEFAULT_ALERT

    def count(self, lane: str, n: int) -> None:
        self.delivered[lane] = self.delivered.get(lane, 0) + n

    @property
    def fallback_ratio(self) -> float:
        total = sum(self.delivered.values())
        return self.delivered.get("nostr", 0) / total if total else 0.0

    def report(self) -> dict[str, Any]:
        r = self.fallback_ratio
        return {"delivered": dict(self.delivered), "fallback_ratio": round(r, 6),
                "alert_threshold": self.alert_at, "alert": r > self.alert_at}
