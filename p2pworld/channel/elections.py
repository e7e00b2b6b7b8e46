"""Elections of a new sequencer on a majority channel, a part of
:class:`~p2pworld.channel.hub.ChannelHub` (a mixin: the state is the hub's, in its
:class:`ElectionBook`).

The rules are :mod:`p2pworld.log.election`'s; this part runs them between nodes:

* **Joining the voters.** On a public majority channel every writer joins with its first
  entry, while the set has room (the fold, :meth:`~p2pworld.log.state.ChannelState.apply`); a
  subscriber that only reads joins with one ``voter`` entry (its own signature, a fixed
  idempotency key) when the sequencer asks it to (:class:`~p2pworld.wire.VotersWanted`: a
  ``replicated`` ack waits, and only voters count for it; :meth:`Elections._join_voters`).
  On a restricted channel the participants vote.
* **A campaign** (:meth:`Elections.elect`, started by hand for now): the candidate votes for
  itself in a new epoch (fsynced first, :class:`~p2pworld.channel.effects.SaveVote`) and asks
  every voter it reaches; with :func:`~p2pworld.log.election.quorum` votes it signs the
  election at its head and becomes the sequencer (every peer gets the epoch change); refused by
  too many, or not done within its bound, it gives up with ``NoQuorum`` and withdraws its own
  vote (it signed nothing, so nobody can use it).
* **A vote** (:func:`vote_refusal`): granted once per epoch, fsynced before it is sent, only to
  a voter whose head is at least this node's, never while this node sequences the channel or
  has a session with its sequencer. It fences: from then on this node takes no entries of an
  older epoch (:meth:`ElectionBook.fenced`).

Example:
    >>> book = ElectionBook()
    >>> book.fenced(bytes(16), epoch=1), book.wake_at()
    (False, None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2pworld.channel.effects import ChannelKnown, Effect, SaveVote
from p2pworld.effects import Send
from p2pworld.errors import (
    InvalidSignature,
    LocalProtocolError,
    NoQuorum,
    NotSequencer,
    P2PWorldError,
)
from p2pworld.identity import node_id
from p2pworld.log.election import Vote, quorum
from p2pworld.log.state import VOTER_PAYLOAD, EpochChange
from p2pworld.wire import EpochMsg, VoteReply, VoteRequest, VotersWanted, VoteWithdrawn

if TYPE_CHECKING:
    from p2pworld.channel.hub import _Own
    from p2pworld.channel.pending import _Pending
    from p2pworld.identity import Signer
    from p2pworld.log.entry import Entry
    from p2pworld.log.replica import Replica
    from p2pworld.log.sequencer import ChannelLog

ELECTION_TIMEOUT_MS = 5_000
"""How long a campaign waits for its votes by default."""
MAX_EPOCH_JUMP = 1024
"""How far past the epochs it knows a voter follows a candidate (a vote request, or a
refusal's ``seen``): a hostile voter cannot push a channel's epochs out of range."""
VOTER_KEY = b"p2pworld:voter"
"""The idempotency key of a node's ``voter`` entry (one per channel and node)."""


@dataclass
class Campaign:
    """This node's election in progress for one channel."""

    epoch: int
    voters: tuple[bytes, ...]
    need: int
    deadline_ms: int
    votes: dict[bytes, Vote] = field(default_factory=dict)
    refused: dict[bytes, str] = field(default_factory=dict)


@dataclass
class ElectionBook:
    """What this node voted (durable: loaded at start), its campaigns, and their outcomes."""

    voted: dict[bytes, SaveVote] = field(default_factory=dict)
    campaigns: dict[bytes, Campaign] = field(default_factory=dict)
    outcomes: dict[bytes, EpochChange | P2PWorldError] = field(default_factory=dict)
    joining: set[bytes] = field(default_factory=set)
    """Channels whose voters this node may join (looked at on the next flush)."""
    join_queued: set[bytes] = field(default_factory=set)
    """Channels this node submitted its ``voter`` entry to since it started."""
    asked: set[tuple[bytes, bytes]] = field(default_factory=set)
    """(channel, peer): subscribers this sequencer asked to join the voters."""

    def fenced(self, channel: bytes, *, epoch: int) -> bool:
        """This node voted in a later epoch than ``epoch`` (and did not withdraw that
        vote): it takes no entries of ``epoch`` any more."""
        v = self.voted.get(channel)
        return v is not None and not v.withdrawn and v.vote.epoch > epoch

    def last_epoch(self, channel: bytes) -> int:
        v = self.voted.get(channel)
        return v.vote.epoch if v is not None else 0

    def wake_at(self) -> int | None:
        return min((c.deadline_ms for c in self.campaigns.values()), default=None)

    def clock_went_back(self, by_ms: int) -> None:
        """The wall clock stepped back: every bound moves with it (none fires late)."""
        for c in self.campaigns.values():
            c.deadline_ms -= by_ms


def vote_refusal(*, candidate: bytes, voters: tuple[bytes, ...], me: bytes, epoch: int,
                 state_epoch: int, head: tuple[int, int], candidate_head: tuple[int, int],
                 voted: SaveVote | None, sequencing: bool, sequencer_reachable: bool
                 ) -> str | None:
    """Why this node refuses a vote for ``candidate`` as the sequencer of ``epoch`` (None: it
    grants it). Heads compare as ``(epoch, seq)``.

    Example:
        >>> vote_refusal(candidate=b"c", voters=(b"c", b"m"), me=b"m", epoch=2, state_epoch=1,
        ...              head=(1, 5), candidate_head=(1, 4), voted=None, sequencing=False,
        ...              sequencer_reachable=False)
        'the candidate is behind this voter'
    """
    if candidate not in voters or me not in voters:
        return "not a voter of this channel"
    if epoch <= state_epoch:
        return "that epoch has begun"
    if epoch > max(state_epoch, voted.vote.epoch if voted is not None else 0) + MAX_EPOCH_JUMP:
        return "that epoch is too far ahead"
    if voted is not None and (voted.vote.epoch > epoch or (
            voted.vote.epoch == epoch and voted.vote.candidate_key != candidate)):
        return "this voter voted for another in that epoch or later"
    if sequencing:
        return "this node sequences the channel"
    if sequencer_reachable:
        return "this voter is in touch with the sequencer"
    if candidate_head < head:
        return "the candidate is behind this voter"
    return None


class Elections:
    """The election methods of the channel hub."""

    if TYPE_CHECKING:  # the hub's state and methods these use
        signer: Signer
        own: dict[bytes, _Own]
        replicas: dict[bytes, Replica]
        peers: dict[bytes, bytes]
        elections: ElectionBook
        outbox: dict[tuple[bytes, bytes], _Pending]

        def log(self, channel: bytes) -> ChannelLog: ...
        def sequencer_of(self, channel: bytes) -> bytes: ...
        def publish(self, channel: bytes, payload: bytes, *, idem_key: bytes, now_ms: int,
                    want: str = "local", kind: str = "msg") -> tuple[int, list[Effect]]: ...
        def _enter_epoch(self, peer: bytes | None, ec: EpochChange, entries: list[Entry]
                         ) -> list[Effect]: ...
        def _count(self, code: str, peer: bytes, channel: bytes | None = None) -> None: ...

    def load_votes(self, votes: list[SaveVote]) -> None:
        """This node's durable votes, at start (its fences hold across restarts)."""
        for v in votes:
            self.elections.voted[v.vote.channel] = v

    def elect(self, channel: bytes, *, now_ms: int, timeout_ms: int = ELECTION_TIMEOUT_MS
              ) -> list[Effect]:
        """Start a campaign to become ``channel``'s sequencer (its outcome:
        :attr:`ElectionBook.outcomes`). Raises, changing nothing, unless the channel fails
        over by majority, this node is one of its voters and does not sequence it."""
        log = self.log(channel)
        st = log.state
        me = self.signer.public_key
        if not st.majority:
            raise LocalProtocolError("this channel fails over by its authority key "
                                     "(recover), not by election")
        if channel in self.own:
            raise LocalProtocolError("this node sequences the channel already")
        if me not in st.voters:
            raise NotSequencer("this node is not one of the channel's voters")
        book = self.elections
        if channel in book.campaigns:
            return []
        book.outcomes.pop(channel, None)
        return self._campaign(channel, max(st.epoch, book.last_epoch(channel)) + 1,
                              now_ms + timeout_ms, now_ms)

    def _campaign(self, channel: bytes, epoch: int, deadline_ms: int, now_ms: int
                  ) -> list[Effect]:
        """Vote for this node in ``epoch`` (durably, first) and ask every reachable voter."""
        log = self.log(channel)
        st = log.state
        me = self.signer.public_key
        book = self.elections
        voters = st.voters
        camp = book.campaigns[channel] = Campaign(
            epoch=epoch, voters=voters, need=quorum(len(voters), st.record.policy.replication),
            deadline_ms=deadline_ms)
        head = (st.epoch, log.seq, log.head_hash)
        own = Vote.create(self.signer, channel=channel, epoch=epoch, candidate_key=me, head=head)
        camp.votes[me] = own
        book.voted[channel] = SaveVote(own)
        fx: list[Effect] = [SaveVote(own)]
        for key in voters:
            pid = node_id(key)
            if key != me and pid in self.peers:
                fx.append(Send(pid, VoteRequest(channel, epoch, *head)))
        return fx + self._tally(channel, now_ms)

    def _ask_for_votes(self, peer: bytes) -> list[Effect]:
        """A peer reachable now (a new session): asked for its vote in every campaign that
        has not heard from it, and again to join the voters when a replicated ack needs it."""
        book = self.elections
        book.asked = {(ch, p) for ch, p in book.asked if p != peer}
        if not book.campaigns:
            return []
        key = self.peers[peer]
        fx: list[Effect] = []
        for ch, camp in sorted(self.elections.campaigns.items()):
            if key in camp.voters and key not in camp.votes and key not in camp.refused:
                own = camp.votes[self.signer.public_key]
                fx.append(Send(peer, VoteRequest(ch, camp.epoch, own.head_epoch, own.head_seq,
                                                 own.head_hash)))
        return fx

    def _on_election(self, peer: bytes, msg: VoteRequest | VoteReply | VotersWanted
                     | VoteWithdrawn, now_ms: int) -> list[Effect]:
        """An election message from ``peer`` (the hub routes all four here)."""
        if isinstance(msg, VoteRequest):
            return self._on_vote_request(peer, msg)
        return self._on_vote_reply(peer, msg, now_ms)

    def _on_vote_request(self, peer: bytes, msg: VoteRequest) -> list[Effect]:
        ch = msg.channel
        key = self.peers.get(peer)
        if key is None or (ch not in self.own and ch not in self.replicas):
            return []
        log = self.log(ch)
        st = log.state
        voted = self.elections.voted.get(ch)
        why = vote_refusal(
            candidate=key, voters=st.voters, me=self.signer.public_key, epoch=msg.epoch,
            state_epoch=st.epoch, head=(st.epoch, log.seq),
            candidate_head=(msg.head_epoch, msg.head_seq), voted=voted,
            sequencing=ch in self.own,
            sequencer_reachable=node_id(st.sequencer_key) in self.peers
            and st.sequencer_key != key)
        if why is not None:
            seen = max(st.epoch, voted.vote.epoch if voted is not None else 0)
            return [Send(peer, VoteReply(ch, msg.epoch, None, why, seen))]
        if voted is not None and voted.vote.epoch == msg.epoch:
            return [Send(peer, VoteReply(ch, msg.epoch, voted.vote))]  # asked again
        vote = Vote.create(self.signer, channel=ch, epoch=msg.epoch, candidate_key=key,
                           head=(st.epoch, log.seq, log.head_hash))
        self.elections.voted[ch] = SaveVote(vote)
        # The reply waits for the vote's commit (a gating effect before it).
        return [SaveVote(vote), Send(peer, VoteReply(ch, msg.epoch, vote))]

    def _want_voters(self, channel: bytes) -> list[Effect]:
        """A ``replicated`` ack waits on a public majority channel this node sequences with
        fewer voters besides it than the ack needs: ask each subscriber that does not vote,
        once per session, to join (only voters count for it)."""
        st = self.own[channel].seqr.state
        voters = set(st.voters)
        if not st.majority or st.restricted or \
                len(st.joined) + 1 >= st.record.policy.max_voters or \
                len(voters - {self.signer.public_key}) >= max(1, st.record.policy.replication):
            return []
        fx: list[Effect] = []
        for pid in sorted(self.own[channel].subscribers):
            key = self.peers.get(pid)
            if key is not None and key not in voters and (channel, pid) not in \
                    self.elections.asked:
                self.elections.asked.add((channel, pid))
                fx.append(Send(pid, VotersWanted(channel)))
        return fx

    def _on_vote_reply(self, peer: bytes, msg: VoteReply | VotersWanted | VoteWithdrawn,
                       now_ms: int) -> list[Effect]:
        ch = msg.channel
        if isinstance(msg, VotersWanted):
            if ch in self.replicas and self.sequencer_of(ch) == peer:
                self.elections.joining.add(ch)  # the voter entry goes with the next flush
            return []
        if isinstance(msg, VoteWithdrawn):
            mine = self.elections.voted.get(ch)
            if mine is None or mine.withdrawn or (mine.vote.epoch, mine.vote.candidate_key) != (
                    msg.epoch, self.peers.get(peer)):
                return []
            self.elections.voted[ch] = SaveVote(mine.vote, withdrawn=True)
            return [SaveVote(mine.vote, withdrawn=True)]  # the fence is lifted
        camp = self.elections.campaigns.get(ch)
        key = self.peers.get(peer)
        if camp is None or key is None or msg.epoch != camp.epoch or key not in camp.voters:
            return []
        v = msg.vote
        if v is None and camp.epoch <= msg.seen < camp.epoch + MAX_EPOCH_JUMP and \
                self.log(ch).state.epoch < msg.seen:
            # That epoch is taken (this voter voted in it, or later): campaign again in the
            # next one, within the same bound.
            return self._campaign(ch, msg.seen + 1, camp.deadline_ms, now_ms)
        if v is None:
            camp.refused[key] = msg.reason
        elif (v.channel, v.epoch, v.candidate_key, v.voter_key) == (
                ch, camp.epoch, self.signer.public_key, key):
            try:
                v.verify()
            except InvalidSignature as e:
                self._count(e.code, peer, ch)
                return []
            camp.votes[key] = v
        return self._tally(ch, now_ms)

    def _tally(self, channel: bytes, now_ms: int) -> list[Effect]:
        """Win with a quorum; give up when too many refused or the bound passed."""
        book = self.elections
        camp = book.campaigns[channel]
        log = self.log(channel)
        st = log.state
        if st.epoch >= camp.epoch or channel in self.own:
            return self._give_up(channel, "a newer epoch began during the election")
        mine = book.voted.get(channel)
        if mine is None or mine.vote.epoch != camp.epoch or \
                mine.vote.candidate_key != self.signer.public_key:
            # It voted for another in a later epoch meanwhile: that vote fences this one.
            return self._give_up(channel, "this node voted for another in a later epoch")
        if len(camp.votes) >= camp.need and st.voters == camp.voters:
            del book.campaigns[channel]
            ec = EpochChange.create(
                self.signer, channel=channel, epoch=camp.epoch,
                sequencer_key=self.signer.public_key, start_seq=log.seq,
                start_hash=log.head_hash, reason="election", voters=camp.voters,
                votes=tuple(camp.votes[k] for k in sorted(camp.votes)))
            try:
                fx = self._enter_epoch(None, ec, [])
            except P2PWorldError as e:
                # Its own proof does not hold (a vote from a voter ahead of it): nothing
                # entered, nothing sent; the campaign ends as any that is refused.
                book.campaigns[channel] = camp
                return self._give_up(channel, f"its own election does not verify: {e.message}")
            for pid in sorted(self.peers):
                fx.append(Send(pid, EpochMsg(ec, ())))
            book.outcomes[channel] = ec
            return [*fx, ChannelKnown(log.record)]  # wakes whoever waits on the outcome
        if len(camp.voters) - len(camp.refused) < camp.need or st.voters != camp.voters:
            return self._give_up(channel, "refused by too many voters")
        if now_ms >= camp.deadline_ms:
            return self._give_up(channel, "no quorum within the election's bound")
        return []

    def _give_up(self, channel: bytes, why: str) -> list[Effect]:
        book = self.elections
        camp = book.campaigns.pop(channel)
        refusals = "; ".join(f"{node_id(k).hex()[:8]}: {r}" for k, r in sorted(camp.refused.items()))
        book.outcomes[channel] = NoQuorum(
            f"election for epoch {camp.epoch} failed: {why}"
            + (f" ({refusals})" if refusals else ""),
            epoch=camp.epoch, votes=len(camp.votes), need=camp.need, voters=len(camp.voters))
        own = camp.votes[self.signer.public_key]
        mine = book.voted.get(channel)
        fx: list[Effect] = [ChannelKnown(self.log(channel).record)]
        if mine is not None and mine.vote == own:
            # It signed no epoch change: nobody can use its own vote. Lift its fence, and
            # (once that is on disk) tell the voters that voted for it to lift theirs.
            book.voted[channel] = SaveVote(own, withdrawn=True)
            fx.insert(0, SaveVote(own, withdrawn=True))
            fx += [Send(node_id(k), VoteWithdrawn(channel, camp.epoch)) for k in sorted(
                camp.votes) if k != self.signer.public_key and node_id(k) in self.peers]
        return fx

    def expire_elections(self, *, now_ms: int) -> list[Effect]:
        """Campaigns past their bound end with ``NoQuorum``."""
        fx: list[Effect] = []
        for ch in sorted(self.elections.campaigns):
            if now_ms >= self.elections.campaigns[ch].deadline_ms:
                fx += self._tally(ch, now_ms)
        return fx

    def _join_voters(self, now_ms: int) -> list[Effect]:
        """Submit this node's ``voter`` entry to each public majority channel it has
        subscribed to since the last flush, unless it votes already, the set is full, or
        the entry is on its way (its outcome is nobody's: the fold shows it)."""
        book = self.elections
        fx: list[Effect] = []
        me = self.signer.public_key
        for ch in sorted(book.joining):
            if ch not in self.replicas or (ch, VOTER_KEY) in self.outbox or \
                    ch in book.join_queued:
                continue
            st = self.replicas[ch].state
            if st.closed or me in st.voters or not st.may_write(me) or \
                    len(st.joined) + 1 >= st.record.policy.max_voters:
                continue
            try:
                _, more = self.publish(ch, VOTER_PAYLOAD, idem_key=VOTER_KEY, now_ms=now_ms,
                                         kind="ctl")
            except P2PWorldError:
                continue
            book.join_queued.add(ch)
            fx += more
        book.joining.clear()
        return fx
