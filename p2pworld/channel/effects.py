"""The channel hub's effects: what :class:`~p2pworld.channel.hub.ChannelHub` asks its executor
to do (persist, deliver, resolve, notify, keep outbox rows), one vocabulary from the core to the
store. :mod:`p2pworld.channel.hub` re-exports every name.

Example:
    >>> Resolved(1, None).req
    1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2pworld.effects import PeerMisbehaved, Send, SendAll

if TYPE_CHECKING:
    from p2pworld.channel.checkpoints import Checkpoint
    from p2pworld.errors import P2PWorldError
    from p2pworld.log.election import Vote
    from p2pworld.log.entry import ChannelRecord, Entry, SignedHead, Submission
    from p2pworld.log.state import EpochChange, Snapshot



@dataclass(frozen=True, kw_only=True)
class Persist:
    """Make a channel's changes durable in one transaction: record and epoch changes, new
    entries, optionally a new retention floor (``base``: the encoded state at the floor) or a
    truncation (entries after ``truncate_after`` are dropped: a recovery epoch)."""

    record: ChannelRecord
    epochs: tuple[EpochChange, ...] = ()
    entries: tuple[Entry, ...] = ()
    base: bytes | None = None
    floor: int = 0
    truncate_after: int | None = None
    snapshot: Snapshot | None = None
    """The sequencer's signature over ``base`` (stored with it and checked on every open)."""
    head: SignedHead | None = None
    """The sequencer's signature over the head these entries end at (stored with the commit
    and checked against the last row on every open)."""


@dataclass(frozen=True, kw_only=True)
class PublishResult:
    """An acknowledged publish: where the message sits in the channel and how safe it is."""

    channel: bytes
    seq: int
    entry_hash: bytes
    status: str  # "appended" or "duplicate"
    strength: str  # "local" (fsynced by the sequencer) or "replicated" (also by k replicas)


@dataclass(frozen=True)
class Delivered:
    channel: bytes
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Resolved:
    req: int
    outcome: PublishResult | P2PWorldError


@dataclass(frozen=True)
class Outcomes:
    """The outcomes of one batch (each a :class:`Resolved`), in order."""

    items: tuple[Resolved, ...]


@dataclass(frozen=True)
class ChannelKnown:
    record: ChannelRecord


@dataclass(frozen=True)
class Notice:
    """Something the application must hear about: on a channel (``Forked``, ``LostWrite``,
    ``CheckpointTooOld``, ``CheckpointMismatch``, a refused subscription) or, from the node
    runtime, a scope that ended with an error (a session, a lane, a relay connection, a
    request; see :mod:`p2pworld.io.scopes`). ``node.notices()`` is the one stream of them.

    ``scope`` is ``channel``, ``peer``, ``lane``, ``relay``, ``request``, ``node`` or
    ``store``; ``subject`` names which one (a channel or node id in hex, a relay URL, a lane or
    request name); ``channel`` is empty unless the notice is about a channel."""

    channel: bytes
    error: P2PWorldError
    scope: str = "channel"
    subject: str = ""


@dataclass(frozen=True)
class SaveCursor:
    checkpoint: Checkpoint


@dataclass(frozen=True)
class OutboxPut:
    """Persist a submission a writer sent to a remote sequencer, until it is answered."""

    submission: Submission
    want: str


@dataclass(frozen=True)
class OutboxDone:
    channel: bytes
    idem_key: bytes


@dataclass(frozen=True)
class SaveVote:
    """Make this node's vote in a channel's election durable before it is sent (what follows
    waits for the commit): the epoch it voted in, for whom, and the head it promised to
    fence older epochs at. ``withdrawn``: this node's own vote in an election it gave up
    (it signed no epoch change, so nobody can use the vote; its fence is lifted)."""

    vote: Vote
    withdrawn: bool = False


@dataclass(frozen=True)
class RecordFork:
    channel: bytes
    held: Entry
    other: Entry


Effect = (Send | SendAll | Persist | Delivered | Resolved | Outcomes | ChannelKnown
          | PeerMisbehaved | Notice | SaveCursor | OutboxPut | OutboxDone | RecordFork | SaveVote)
