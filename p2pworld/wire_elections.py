"""The session messages of an election (:mod:`p2pworld.channel.elections`): a candidate's
request for a vote, a voter's reply, and a sequencer's request that a reader join the voters.
Part of :mod:`p2pworld.wire` (which imports and re-exports them; ``docs/protocol.md``).

Example:
    >>> from p2pworld.wire import decode_message, encode_message
    >>> decode_message(encode_message(VotersWanted(bytes(16)))) == VotersWanted(bytes(16))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.log.election import Vote
from p2pworld.message import Message, message


@message
@dataclass(frozen=True)
class VoteRequest(Message):
    """A candidate asks a voter for its vote as the sequencer of ``epoch``, at the
    candidate's head ``(head_epoch, head_seq, head_hash)`` (:mod:`p2pworld.log.election`)."""

    TYPE = "vote?"
    TYPED = True
    channel: bytes
    epoch: int
    head_epoch: int
    head_seq: int
    head_hash: bytes

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel, "epoch": self.epoch, "he": self.head_epoch,
                "hs": self.head_seq, "hh": self.head_hash}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> VoteRequest:
        w = "vote request"
        return cls(codec.bytes_field(m, "ch", w, size=16), codec.int_field(m, "epoch", w, lo=2),
                   codec.int_field(m, "he", w, lo=1), codec.int_field(m, "hs", w),
                   codec.bytes_field(m, "hh", w, size=32))


@message
@dataclass(frozen=True)
class VotersWanted(Message):
    """The sequencer of a public majority channel asks a subscriber that does not vote to
    join the voters (a ``replicated`` ack waits, and only voters count for it)."""

    TYPE = "voters?"
    TYPED = True
    channel: bytes

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> VotersWanted:
        return cls(codec.bytes_field(m, "ch", "voters wanted", size=16))


@message
@dataclass(frozen=True)
class VoteWithdrawn(Message):
    """A candidate that gave up its election for ``epoch`` (it signed no epoch change, and
    its withdrawal is on its disk) tells the voters that voted for it: their votes are of no
    use to anyone, so they lift their fences (the session says who sends it)."""

    TYPE = "unvote"
    TYPED = True
    channel: bytes
    epoch: int

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel, "epoch": self.epoch}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> VoteWithdrawn:
        w = "vote withdrawn"
        return cls(codec.bytes_field(m, "ch", w, size=16), codec.int_field(m, "epoch", w, lo=2))


@message
@dataclass(frozen=True)
class VoteReply(Message):
    """A voter's answer: its signed ``vote`` (fsynced before it was sent), or None and why
    not (``reason``), with the latest epoch it voted in or holds (``seen``: a candidate
    refused for an epoch already taken tries a later one)."""

    TYPE = "vote"
    channel: bytes
    epoch: int
    vote: Vote | None
    reason: str = ""
    seen: int = 0

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel, "epoch": self.epoch,
                "vote": None if self.vote is None else self.vote.to_wire(), "why": self.reason,
                "seen": self.seen}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> VoteReply:
        w = "vote reply"
        vote = m.get("vote")
        return cls(codec.bytes_field(m, "ch", w, size=16), codec.int_field(m, "epoch", w, lo=2),
                   None if vote is None else Vote.from_wire(vote),
                   codec.str_field(m, "why", w, max_len=256), codec.int_field(m, "seen", w))
