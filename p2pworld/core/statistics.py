"""What a node can say about itself (pure): the typed statistics view
(:class:`NodeStatistics`, what :meth:`Node.statistics() <p2pworld.runtime.node.Node.statistics>`
returns) and the peer snapshots of ``node.peers`` (:class:`PeerInfo`), computed from the
node's cores and plain records.

The runtime (:mod:`p2pworld.runtime.statistics`, :mod:`p2pworld.runtime.api`) hands these
functions what it holds (the channel hub, the world core, its peer records and sessions, the
clock) and returns what they compute; it decides nothing itself. Ids and hashes are hex
strings, as in ``health()``, so a value read here and one read from the admin endpoint or a
log line compare equal.

Example:
    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Rec:
    ...     state: str = "backoff"; address: str = "ws://h:1/"; since: float = 9.5
    ...     via: set[str] = field(default_factory=lambda: {"mdns"})
    ...     last_error: str = "DIAL_FAILED"; handshakes: int = 1; failures: int = 2
    >>> s = peer_statistics(b"\\x01", None, Rec(), keepalive=None, now_s=10.0)
    >>> s.state, s.lane, s.since_s, s.last_error
    ('backoff', None, 0.5, 'DIAL_FAILED')
    >>> peer_info(b"\\x01", None, None) is None, peer_info(b"\\x01", Rec(), None).state
    (True, 'backoff')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from p2pworld.core.lanes import lane_of_address

if TYPE_CHECKING:
    from p2pworld.auth.book import TokenBook
    from p2pworld.auth.schedule import TokenSchedule
    from p2pworld.channel.hub import ChannelHub
    from p2pworld.core.lanes import LaneCounters
    from p2pworld.log.entry import ChannelRecord
    from p2pworld.transport.peering import Keepalive
    from p2pworld.world.core import WorldCore


class PeerRecord(Protocol):
    """What the runtime remembers of a peer (its dialler's record), as read here."""

    @property
    def state(self) -> str: ...
    @property
    def via(self) -> Iterable[str]: ...
    @property
    def address(self) -> str: ...
    @property
    def since(self) -> float: ...
    @property
    def last_error(self) -> str: ...
    @property
    def handshakes(self) -> int: ...
    @property
    def failures(self) -> int: ...


class SessionRecord(Protocol):
    """An authenticated session, as read here: its address and frame counters."""

    @property
    def address(self) -> str: ...
    @property
    def frames_in(self) -> int: ...
    @property
    def frames_out(self) -> int: ...


@dataclass(frozen=True, kw_only=True)
class PeerInfo:
    """One peer as this node knows it (a snapshot). ``state``: ``discovered``,
    ``connecting``, ``connected`` or ``backoff``; ``lane`` (while ``connected``): ``direct``,
    ``relay`` (through a rendezvous node) or ``nostr``; ``via``: how it was found (``mdns``,
    ``static``, ``rendezvous``, ``nostr``); ``last_error``: the code that ended its last
    session or dial."""

    node_id: bytes
    connected: bool
    state: str
    lane: str | None
    address: str
    via: tuple[str, ...]
    since: float
    last_error: str
    handshakes: int
    failures: int


def peer_info(pid: bytes, peer: PeerRecord | None,
              session: SessionRecord | None) -> PeerInfo | None:
    """The snapshot of one peer from its record and its session (None: neither, so this
    node knows nothing of it). A session without a record is ``connected``; the session's
    address wins over the record's."""
    if peer is None and session is None:
        return None
    return PeerInfo(node_id=pid, connected=session is not None,
                    state=peer.state if peer else "connected",
                    lane=lane_of_address(session.address) if session else None,
                    address=session.address if session else (peer.address if peer else ""),
                    via=tuple(sorted(peer.via)) if peer else (),
                    since=peer.since if peer else 0.0,
                    last_error=peer.last_error if peer else "",
                    handshakes=peer.handshakes if peer else 0,
                    failures=peer.failures if peer else 0)


def peer_infos(pids: Iterable[bytes], peers: Mapping[bytes, PeerRecord],
               sessions: Mapping[bytes, SessionRecord]) -> list[PeerInfo]:
    """:func:`peer_info` of each of ``pids`` (in their order), skipping unknown ones."""
    out = []
    for pid in pids:
        info = peer_info(pid, peers.get(pid), sessions.get(pid))
        if info is not None:
            out.append(info)
    return out


@dataclass(frozen=True, kw_only=True)
class PeerStatistics:
    """One peer this node knows: its session (if up) and how dialling it went."""

    node_id: str
    state: str
    """``connected``, or the dialler's state (``connecting``, ``backoff``, ...)."""
    lane: str | None
    """The session's lane (``direct``, ``relay``, ``nostr``), None without one."""
    via: list[str]
    """Where it was discovered (``mdns``, ``rendezvous``, ``static``, ``nostr``)."""
    address: str
    since_s: float | None
    rtt_ms: float | None
    frames_in: int
    frames_out: int
    handshakes: int
    failures: int
    last_error: str | None


@dataclass(frozen=True, kw_only=True)
class ChannelStatistics:
    """One channel this node sequences or replicates."""

    channel: str
    name: str
    role: str
    """``sequencer`` or ``replica``."""
    sequencer: str
    epoch: int
    head_seq: int
    head_hash: str
    floor: int
    lane: str | None
    """How entries reach this node: ``local`` (it sequences), a session's lane, or None."""
    lag: int
    """Entries the sequencer announced that this node does not hold yet."""
    checkpoint: int | None
    private: bool
    closed: bool
    participants: int | None
    subscribers: int
    replicated_seq: int | None
    last_error: str | None


@dataclass(frozen=True, kw_only=True)
class WorldStatistics:
    """The world replica: members by state, gossip counters."""

    incarnation: int
    members: int
    online: int
    stale: int
    left: int
    pruned_links: int
    heartbeats_new: int
    heartbeats_dup: int
    updates_new: int
    updates_dup: int
    refused: dict[str, int]


@dataclass(frozen=True, kw_only=True)
class AuthStatistics:
    """Tokens: whether they are checked, this node's own, refusals by code."""

    enabled: bool
    control: str | None
    token_expires: float | None
    refused: dict[str, int]
    refreshes: int
    refresh_failures: int
    revocation_polls: int


@dataclass(frozen=True, kw_only=True)
class TransportStatistics:
    """Lanes: the transport mode, deliveries by lane, the fallback ratio and its alert."""

    mode: str
    delivered: dict[str, int]
    fallback_ratio: float
    alert_threshold: float
    alert: bool
    nostr: dict[str, Any] | None
    """Relays, bridge and Nostr lane (None: no relays configured)."""


@dataclass(frozen=True, kw_only=True)
class NodeStatistics:
    """Everything :meth:`Node.statistics() <p2pworld.runtime.node.Node.statistics>` reports
    (the fields of ``node.health()``)."""

    node_id: str
    workspace: str
    listen: str
    peers: list[PeerStatistics]
    channels: list[ChannelStatistics]
    writer_signatures: dict[str, int]
    world: WorldStatistics
    auth: AuthStatistics
    transport: TransportStatistics
    scopes: dict[str, dict[str, Any]]
    """Failures per scope (peer, lane, relay, request, node)."""
    other_workspaces: dict[str, int]
    quarantined: dict[str, dict[str, Any]]
    """Channels whose stored rows are damaged: code, message, seq."""
    errors: dict[str, int]
    """Everything refused or failed, by stable error code."""

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, JSON-ready: ``node.health()``."""
        return dataclasses.asdict(self)


def peer_statistics(pid: bytes, session: SessionRecord | None, peer: PeerRecord, *,
                    keepalive: Keepalive | None, now_s: float) -> PeerStatistics:
    """One peer's statistics from its session (None: not connected), its dialler's record
    and the keepalive's round trips (None: no keepalive); ``now_s``: the monotonic clock
    the record's ``since`` was taken on (0: never, reported as None)."""
    return PeerStatistics(
        node_id=pid.hex(), state="connected" if session else peer.state,
        lane=lane_of_address(session.address) if session else None, via=sorted(peer.via),
        address=peer.address, since_s=round(now_s - peer.since, 3) if peer.since else None,
        rtt_ms=keepalive.rtt_ms.get(pid) if keepalive is not None else None,
        frames_in=session.frames_in if session else 0,
        frames_out=session.frames_out if session else 0,
        handshakes=peer.handshakes, failures=peer.failures, last_error=peer.last_error or None)


def channel_statistics(hub: ChannelHub, rec: ChannelRecord,
                       sessions: Mapping[bytes, SessionRecord]) -> ChannelStatistics:
    """One channel's statistics: its role here, head, lag behind the sequencer's announced
    head, and the lane entries reach this node by (``local`` when it sequences, else the
    sequencer's session lane, None without a session)."""
    ch = rec.channel
    log = hub.log(ch)
    st = log.state
    own = ch in hub.own
    seqr = hub.sequencer_of(ch)
    cp = hub.cursors.get(ch)
    return ChannelStatistics(
        channel=ch.hex(), name=rec.name, role="sequencer" if own else "replica",
        sequencer=seqr.hex(), epoch=st.epoch, head_seq=log.seq,
        head_hash=log.head_hash.hex(), floor=log.floor,
        lane="local" if own else (lane_of_address(sessions[seqr].address)
                                  if seqr in sessions else None),
        lag=max(0, hub.seen_head.get(ch, log.seq) - log.seq),
        checkpoint=cp.seq if cp else None, private=rec.private, closed=st.closed,
        participants=len(st.participants) if st.restricted else None,
        subscribers=len(hub.own[ch].subscribers) if own else 0,
        replicated_seq=hub.replicated_seq(ch) if own else None,
        last_error=hub.channel_errors.get(ch))


def world_statistics(world: WorldCore, *, now_ms: int) -> WorldStatistics:
    """The world replica's statistics: members by presence state at ``now_ms``, pruned
    links and the gossip counters."""
    members = world.members(now_ms=now_ms)
    return WorldStatistics(
        incarnation=world.inc, members=len(members),
        online=sum(m.state == "online" for m in members),
        stale=sum(m.state == "stale" for m in members),
        left=sum(m.state == "left" for m in members),
        pruned_links=sum(len(x) for x in world.pruned.values()),
        heartbeats_new=world.stats.hb_new, heartbeats_dup=world.stats.hb_dup,
        updates_new=world.stats.upd_new, updates_dup=world.stats.upd_dup,
        refused=dict(world.stats.refused))


def auth_statistics(book: TokenBook | None, *, control: str | None,
                    token_expires: float | None, schedule: TokenSchedule | None,
                    counters: Mapping[str, Any]) -> AuthStatistics:
    """Token statistics: enabled when the node checks tokens (a book), refusals by code,
    refreshes by the token schedule (0 without one) and the runtime's ``counters``
    (``refresh_failures``, ``revocation_polls``)."""
    return AuthStatistics(
        enabled=book is not None, control=control, token_expires=token_expires,
        refused=dict(book.refused) if book else {},
        refreshes=schedule.refreshes if schedule else 0,
        refresh_failures=counters["refresh_failures"],
        revocation_polls=counters["revocation_polls"])


def transport_statistics(mode: str, counters: LaneCounters,
                         nostr: dict[str, Any] | None) -> TransportStatistics:
    """Lane statistics from the lane counters, the transport mode and the Nostr service's
    report (None: no relays)."""
    lanes = counters.report()
    return TransportStatistics(
        mode=mode, delivered=lanes["delivered"], fallback_ratio=lanes["fallback_ratio"],
        alert_threshold=lanes["alert_threshold"], alert=lanes["alert"], nostr=nostr)


__all__ = ["AuthStatistics", "ChannelStatistics", "NodeStatistics", "PeerInfo", "PeerRecord",
           "PeerStatistics", "SessionRecord", "TransportStatistics", "WorldStatistics",
           "auth_statistics", "channel_statistics", "peer_info", "peer_infos",
           "peer_statistics", "transport_statistics", "world_statistics"]
