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

from p2pworld.effects import Send, SendAll
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


def resolve_mode(local: str, policy: dict[str, Any] | None, *, relays: bool = True) -> str:
    """The effective mode: local config narrowed by the policy (never widened); a node
    with no relays (``relays=False``) has the primary lane only."""
    if not relays:
        return "primary-only"
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


def held_back(fx: list[Any], nostr_peers: set[bytes], hub: ChannelHub) -> list[Any]:
    """``fx`` without the messages that may not cross the Nostr lane to the peers in
    ``nostr_peers`` (:func:`nostr_may_carry`); each held back counts as
    ``LANE_FORBIDDEN_BY_CHANNEL_POLICY`` in ``hub.errors``. The peer resumes from its
    checkpoint when a direct lane returns; a writer's submission stays in its outbox.

    Example (a ping is no channel's traffic: it may cross; the hub is not asked)::

        >>> from p2pworld.effects import Send
        >>> from p2pworld.wire import Ping
        >>> held_back([Send(b"p", Ping(1))], {b"p"}, hub=None)  # type: ignore[arg-type]
        [Send(peer=b'p', message=Ping(n=1))]
    """
    out = []
    for e in fx:
        if isinstance(e, (Send, SendAll)) and e.peer in nostr_peers:
            msgs = (e.message,) if isinstance(e, Send) else e.messages
            kept = tuple(m for m in msgs if nostr_may_carry(hub, m))
            if len(kept) < len(msgs):
                code = "LANE_FORBIDDEN_BY_CHANNEL_POLICY"
                hub.errors[code] = hub.errors.get(code, 0) + len(msgs) - len(kept)
                if not kept:
                    continue
                e = Send(e.peer, kept[0]) if isinstance(e, Send) else SendAll(e.peer, kept)
        out.append(e)
    return out


LANE_MEMORY = 10_000
"""Entries per channel whose receiving lane a node remembers (for ``ChannelMessage.lane``)."""


class LaneLedger:
    """Which lane each of a channel's recent entries reached this node by (``local``,
    ``direct``, ``relay`` or ``nostr``; at most :data:`LANE_MEMORY` per channel).

    Example:
        >>> book = LaneLedger()
        >>> book.delivered(b"c", [1, 2], "nostr")
        >>> book.lane_of(b"c", 2, now="direct"), book.lane_of(b"c", 3, now="direct")
        ('nostr', 'direct')
        >>> book.lane_of(b"c", 1, now=None), LaneLedger().lane_of(b"d", 5, now="relay")
        ('nostr', 'relay')
    """

    def __init__(self) -> None:
        self.seen: dict[bytes, dict[int, str]] = {}
        self.top: dict[bytes, int] = {}
        """The highest seq in ``seen`` per channel, or the head loaded from disk."""

    def loaded(self, channel: bytes, head: int) -> None:
        """``channel``'s entries up to ``head`` were on disk at start: their lane is unknown."""
        self.top[channel] = head

    def delivered(self, channel: bytes, seqs: list[int], lane: str) -> None:
        seen = self.seen.setdefault(channel, {})
        for seq in seqs:
            seen[seq] = lane
        if seqs:
            self.top[channel] = max(self.top.get(channel, 0), max(seqs))
        while len(seen) > LANE_MEMORY:
            del seen[next(iter(seen))]

    def lane_of(self, channel: bytes, seq: int, *, now: str | None) -> str | None:
        """The lane entry ``seq`` came by; one newer than any delivered (read from the log
        before its delivery was carried out) came by the lane the channel uses ``now``."""
        lane = self.seen.get(channel, {}).get(seq)
        return now if lane is None and seq > self.top.get(channel, 0) else lane


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


@dataclass
class LaneBook:
    """This node's lanes (pure): which lane each peer's session is on (``direct``, ``relay``
    or ``nostr``), what may cross the Nostr lane (:func:`held_back`), and which lane each
    delivery came by (:class:`LaneCounters`, :class:`LaneLedger`). The node core keeps it;
    both executors read it.

    Example:
        >>> book = LaneBook()
        >>> book.up(b"p", "nostr"); sorted(book.nostr_peers)
        [b'p']
        >>> book.down(b"p"); book.nostr_peers
        set()
    """

    counters: LaneCounters = field(default_factory=LaneCounters)
    ledger: LaneLedger = field(default_factory=LaneLedger)
    via: dict[bytes, str] = field(default_factory=dict)
    nostr_peers: set[bytes] = field(default_factory=set)

    def up(self, peer: bytes, via: str) -> None:
        self.via[peer] = via
        (self.nostr_peers.add if via == "nostr" else self.nostr_peers.discard)(peer)

    def down(self, peer: bytes) -> None:
        self.via.pop(peer, None)
        self.nostr_peers.discard(peer)

    def now(self, hub: ChannelHub, channel: bytes) -> str | None:
        """The lane ``channel``'s entries reach this node by now (None: no session)."""
        return "local" if channel in hub.own else self.via.get(hub.sequencer_of(channel))

    def delivered(self, hub: ChannelHub, channel: bytes, seqs: list[int]) -> None:
        """Entries ``seqs`` of ``channel`` were delivered: counted by the lane they came by
        (an entry this node sequences is not traffic)."""
        lane = self.now(hub, channel) or "direct"
        if lane != "local":
            self.counters.count(lane, len(seqs))
        self.ledger.delivered(channel, seqs, lane)

    def lane_of(self, hub: ChannelHub, channel: bytes, seq: int) -> str | None:
        return self.ledger.lane_of(channel, seq, now=self.now(hub, channel))
