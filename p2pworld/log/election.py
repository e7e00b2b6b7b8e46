"""Majority failover: who votes, how many votes an election needs, and what proves one.

A channel whose policy says ``failover="majority"`` (the default for new channels) has a set of
**voters**, folded from its log (:attr:`~p2pworld.log.state.ChannelState.voters`), so every
node computes the same set from the same prefix. When its sequencer is gone, a voter may ask
the others for their votes and, with enough of them, start a new epoch as its sequencer: an
epoch change with ``reason="election"``, signed by the winner, carrying the voter set in force
at its start and the signed votes (``docs/guarantees.md``, failover).

The rules (``tests/test_election.py`` checks them over every voter count 2..7 and
replication 1..n-1):

* The sequencer counts as a voter, so a ``replicated`` ack is held by ``k + 1`` of the ``n``
  voters. An election needs :func:`quorum` ``= max(n // 2 + 1, n - k)`` votes: any two
  quorums meet (one winner per epoch), and every quorum meets every ``replicated`` ack.
* A voter grants one vote per epoch, fsynced before it is sent, and only to a candidate whose
  head is at least its own (``(epoch, seq)``: a later epoch first, then the
  longer log): the winner holds the longest log among its
  voters, so the new epoch's start includes every ``replicated`` ack.
* A vote is also the voter's promise (fencing): it refuses entries of older epochs past the
  head it voted with.

Example:
    >>> quorum(3, 1), quorum(5, 1), quorum(5, 3), quorum(2, 1)
    (2, 4, 3, 2)
    >>> from p2pworld.identity import Ed25519Signer
    >>> v = Vote.create(Ed25519Signer(bytes(32)), channel=bytes(16), epoch=2,
    ...                 candidate_key=bytes(32), head=(1, 5, bytes(32)))
    >>> v.verify(); Vote.from_wire(v.to_wire()) == v
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import DecodeError, InvalidSignature, Unauthorized
from p2pworld.identity import Signer, verify
from p2pworld.log.policy import MAX_VOTERS

if TYPE_CHECKING:
    from p2pworld.log.state import EpochChange

VOTE_DOMAIN = "p2pworld/vote/v1"
MAX_WITNESSED = MAX_VOTERS + 1
"""Voters an election names, at most: the policy's bound plus its witness."""


def quorum(n: int, k: int) -> int:
    """Votes an election among ``n`` voters needs when ``replicated`` acks are held by the
    sequencer and ``k`` other voters: a majority, and at least ``n - k`` so that every quorum
    meets every set of ``k + 1`` holders."""
    return max(n // 2 + 1, n - max(1, k))


@dataclass(frozen=True, kw_only=True)
class Vote:
    """A voter's signed vote for ``candidate_key`` as the sequencer of ``epoch``, made at the
    voter's head ``(head_epoch, head_seq, head_hash)``."""

    channel: bytes
    epoch: int
    candidate_key: bytes
    voter_key: bytes
    head_epoch: int
    head_seq: int
    head_hash: bytes
    signature: bytes = b""

    def body(self) -> dict[str, Value]:
        return {"ch": self.channel, "epoch": self.epoch, "cand": self.candidate_key,
                "by": self.voter_key, "he": self.head_epoch, "hs": self.head_seq,
                "hh": self.head_hash}

    @classmethod
    def create(cls, voter: Signer, *, channel: bytes, epoch: int, candidate_key: bytes,
               head: tuple[int, int, bytes]) -> Vote:
        v = cls(channel=channel, epoch=epoch, candidate_key=candidate_key,
                voter_key=voter.public_key, head_epoch=head[0], head_seq=head[1],
                head_hash=head[2])
        return replace(v, signature=voter.sign(codec.tagged(VOTE_DOMAIN, v.body())))

    def verify(self) -> None:
        if not verify(self.voter_key, VOTE_DOMAIN, self.body(), self.signature):
            raise InvalidSignature("vote signature does not verify")

    def to_wire(self) -> dict[str, Value]:
        return {**self.body(), "sig": self.signature}

    @classmethod
    def from_wire(cls, value: Any) -> Vote:
        w = "vote"
        m = codec.need_map(value, w)
        return cls(channel=codec.bytes_field(m, "ch", w, size=16),
                   epoch=codec.int_field(m, "epoch", w, lo=2),
                   candidate_key=codec.bytes_field(m, "cand", w, size=32),
                   voter_key=codec.bytes_field(m, "by", w, size=32),
                   head_epoch=codec.int_field(m, "he", w, lo=1),
                   head_seq=codec.int_field(m, "hs", w),
                   head_hash=codec.bytes_field(m, "hh", w, size=32),
                   signature=codec.bytes_field(m, "sig", w, size=64))


def votes_from_wire(value: Any) -> tuple[tuple[bytes, ...], tuple[Vote, ...]]:
    """An election's voter set and votes, as an epoch change carries them (bounded)."""
    w = "election"
    m = codec.need_map(value, w)
    voters = codec.field(m, "voters", list, w)
    votes = codec.field(m, "votes", list, w)
    if len(voters) > MAX_WITNESSED or len(votes) > MAX_WITNESSED or not all(
            type(x) is bytes and len(x) == 32 for x in voters):
        raise DecodeError(f"election: at most {MAX_WITNESSED} voters (32-byte keys) and votes")
    return tuple(voters), tuple(Vote.from_wire(v) for v in votes)


def votes_to_wire(voters: Sequence[bytes], votes: Sequence[Vote]) -> dict[str, Value]:
    return {"voters": list(voters), "votes": [v.to_wire() for v in votes]}


def check_election(ec: EpochChange, *, epoch: int, replication: int) -> None:
    """Is ``ec`` a valid election from a state at ``epoch``? Raises ``Unauthorized`` unless it
    is signed by its winner, a voter of the set it names, with :func:`quorum` distinct valid
    votes from that set for this channel, epoch and winner, none made at a head past its
    start. (That the named set is the channel's, folded at the start, is checked where the
    epoch is entered: :meth:`~p2pworld.log.state.ChannelState.apply_epoch`.)"""
    if ec.epoch <= epoch:
        raise Unauthorized("an election must start a later epoch")
    if ec.signer_key != ec.sequencer_key:
        raise Unauthorized("an election is signed by the sequencer it elects")
    voters = ec.voters
    if list(voters) != sorted(set(voters)) or ec.sequencer_key not in voters:
        raise Unauthorized("an election names a sorted voter set holding its winner")
    need = quorum(len(voters), replication)
    counted: set[bytes] = set()
    for v in ec.votes:
        if (v.channel, v.epoch, v.candidate_key) != (ec.channel, ec.epoch, ec.sequencer_key):
            raise Unauthorized("a vote of another channel, epoch or candidate")
        if v.voter_key not in voters or v.voter_key in counted:
            raise Unauthorized("a vote from a non-voter, or two from one voter")
        if v.head_seq > ec.start_seq or v.head_epoch > epoch:
            raise Unauthorized("a voter's head is past the election's start")
        try:
            v.verify()
        except InvalidSignature:
            raise Unauthorized("a vote's signature does not verify") from None
        counted.add(v.voter_key)
    if len(counted) < need:
        raise Unauthorized(f"an election among {len(voters)} voters needs {need} votes, "
                           f"it has {len(counted)}", votes=len(counted), need=need)
