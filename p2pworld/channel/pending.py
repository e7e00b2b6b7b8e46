"""A publish waiting for its answer, as the channel hub tracks it (internal records of
:class:`~p2pworld.channel.hub.ChannelHub`, shared with its parts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p2pworld.log.entry import Submission


@dataclass
class _Waiter:
    req: int
    peer: bytes | None  # None: a publish by this node on its own channel
    peer_req: int = 0
    want: str = "local"


@dataclass
class _Pending:
    """A submission sent to a remote sequencer (also in the durable outbox)."""

    sub: Submission
    want: str
    req: int | None
    sent_to: bytes | None = None
