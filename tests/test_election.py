"""Majority failover (issue 16, M2): the quorum rules over every voter count, the election
proof, voters folded from the log, durable votes and fencing, and elections between hub
cores through the wire codec."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from p2pworld.channel.elections import VOTER_KEY, vote_refusal
from p2pworld.channel.hub import PublishResult, SaveVote
from p2pworld.errors import NoQuorum, P2PWorldError, Unauthorized
from p2pworld.identity import Ed25519Signer
from p2pworld.log.election import Vote, quorum
from p2pworld.log.entry import ChannelPolicy, ChannelRecord
from p2pworld.log.replica import Replica
from p2pworld.log.state import VOTER_PAYLOAD, ChannelState, EpochChange, ctl_payload
from p2pworld.testing import MemoryLogStore

from .hubs import connect, disconnect, hub, outcomes, restore, run

# --- the rules ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", range(2, 8))
def test_every_quorum_meets_every_replicated_ack_and_every_other_quorum(n: int) -> None:
    voters = range(n)
    for k in range(1, n):
        q = quorum(n, k)
        quorums = [set(c) for size in range(q, n + 1) for c in itertools.combinations(voters, size)]
        # A replicated ack is held by the sequencer and k other voters: k + 1 of n.
        holders = [set(c) for c in itertools.combinations(voters, k + 1)]
        assert all(qs & hs for qs in quorums for hs in holders), (n, k)
        assert all(a & b for a in quorums for b in quorums), (n, k)
        # And no smaller quorum would do: one vote fewer misses some ack or some quorum.
        smaller = [set(c) for c in itertools.combinations(voters, q - 1)]
        assert any(not (s & h) for s in smaller for h in holders) or \
            any(not (s & t) for s in smaller for t in smaller), (n, k)
    # Two voters: an election needs both, so a dead sequencer's channel needs a witness.
    assert quorum(2, 1) == 2


def _signers(n: int) -> list[Ed25519Signer]:
    return [Ed25519Signer(bytes([i + 1]) * 32) for i in range(n)]


def _election(st: ChannelState, cand: Ed25519Signer, voters: list[Ed25519Signer], *,
              epoch: int = 2, start: int | None = None) -> EpochChange:
    start = st.seq if start is None else start
    votes = tuple(Vote.create(v, channel=st.channel, epoch=epoch,
                              candidate_key=cand.public_key, head=(st.epoch, st.seq, st.head_hash))
                  for v in voters)
    return EpochChange.create(cand, channel=st.channel, epoch=epoch,
                              sequencer_key=cand.public_key, start_seq=start,
                              start_hash=st.head_hash, reason="election", voters=st.voters,
                              votes=votes)


@pytest.mark.parametrize("n", range(2, 8))
def test_an_election_is_valid_with_exactly_a_quorum_of_votes(n: int) -> None:
    keys = _signers(n)
    for k in range(1, n):
        rec = ChannelRecord.create(keys[0], workspace="w", name="c", created_at=0,
                                   participants=tuple(s.public_key for s in keys[1:]),
                                   policy=ChannelPolicy(replication=k))
        st = ChannelState.genesis(rec)
        assert st.voters == tuple(sorted(s.public_key for s in keys))
        q = quorum(n, k)
        cand = keys[-1]
        st.check_epoch_change(_election(st, cand, keys[-q:]))
        with pytest.raises(Unauthorized, match=f"needs {q} votes"):
            st.check_epoch_change(_election(st, cand, keys[-(q - 1):] if q > 1 else []))


def test_an_election_is_refused_unless_it_proves_a_quorum_from_the_channel_voters() -> None:
    a, b, c, x = _signers(4)
    rec = ChannelRecord.create(a, workspace="w", name="c", created_at=0,
                               participants=(b.public_key, c.public_key))
    st = ChannelState.genesis(rec)
    good = _election(st, b, [b, c])
    st.check_epoch_change(good)
    forged = replace(good.votes[1], signature=bytes(64))
    bad = {
        "forged vote": replace(good, votes=(good.votes[0], forged)),
        "non-voter": _election(st, b, [b, x]),
        "two from one": replace(good, votes=(good.votes[0], good.votes[0])),
        "another epoch": replace(good, votes=(good.votes[0], replace(good.votes[1], epoch=3))),
        "another candidate": EpochChange.create(
            c, channel=st.channel, epoch=2, sequencer_key=c.public_key, start_seq=0,
            start_hash=st.head_hash, reason="election", voters=st.voters, votes=good.votes),
        "head past start": replace(good, votes=(good.votes[0], Vote.create(
            c, channel=st.channel, epoch=2, candidate_key=b.public_key,
            head=(1, 5, bytes(32))))),
        "winner not signer": EpochChange.create(
            c, channel=st.channel, epoch=2, sequencer_key=b.public_key, start_seq=0,
            start_hash=st.head_hash, reason="election", voters=st.voters, votes=good.votes),
        "not a later epoch": _election(st, b, [b, c], epoch=1),
    }
    for what, ec in bad.items():
        if what not in ("another candidate", "winner not signer", "not a later epoch"):
            ec = EpochChange.create(b, channel=ec.channel, epoch=ec.epoch,
                                    sequencer_key=ec.sequencer_key, start_seq=ec.start_seq,
                                    start_hash=ec.start_hash, reason="election",
                                    voters=ec.voters, votes=ec.votes)
        with pytest.raises((Unauthorized, P2PWorldError)):
            st.check_epoch_change(ec)
            pytest.fail(what)
        # Whatever was refused round-trips as bytes: a hostile peer's copy is refused the same.
        with pytest.raises((Unauthorized, P2PWorldError)):
            st.check_epoch_change(EpochChange.from_wire(ec.to_wire()))
    # A channel that fails over by its authority key takes no election at all.
    old = ChannelRecord.create(a, workspace="w", name="old", created_at=0,
                               participants=(b.public_key, c.public_key),
                               policy=ChannelPolicy(failover="authority"))
    ost = ChannelState.genesis(old)
    assert ost.voters == ()
    with pytest.raises(Unauthorized, match="authority"):
        ost.check_epoch_change(EpochChange.create(
            b, channel=old.channel, epoch=2, sequencer_key=b.public_key, start_seq=0,
            start_hash=ost.head_hash, reason="election", voters=st.voters, votes=good.votes))


def test_a_record_made_before_elections_reads_as_authority_and_keeps_its_bytes() -> None:
    a = _signers(1)[0]
    old = ChannelRecord.create(a, workspace="w", name="c", created_at=0,
                               policy=ChannelPolicy(failover="authority"))
    wire = old.to_wire()
    assert "failover" not in wire["policy"]  # type: ignore[operator]
    back = ChannelRecord.from_wire(wire)
    assert back.policy.failover == "authority" and back == old
    back.verify()
    new = ChannelRecord.create(a, workspace="w", name="d", created_at=0)
    assert new.policy.failover == "majority"
    assert ChannelRecord.from_wire(new.to_wire()) == new
    # The state hash of an authority channel has no voter fields (old snapshots verify).
    assert "joined" not in ChannelState.genesis(old).canonical()


def test_voters_are_folded_from_the_log_joined_by_voter_entries_up_to_the_bound() -> None:
    from p2pworld.log.entry import Submission
    from p2pworld.log.sequencer import Sequencer

    keys = _signers(6)
    owner = keys[0]
    rec = ChannelRecord.create(owner, workspace="w", name="pub", created_at=0,
                               policy=ChannelPolicy(max_voters=3, witness=keys[5].public_key))
    seqr = Sequencer.create(rec, owner)
    assert seqr.state.voters == tuple(sorted([owner.public_key, keys[5].public_key]))
    for i, s in enumerate(keys[1:5]):
        out = seqr.submit(Submission.create(s, channel=rec.channel, idem_key=VOTER_KEY,
                                            payload=VOTER_PAYLOAD, kind="ctl"), now_ms=i)
        assert out.status == "appended"
    # The owner and two joiners (the bound), and the witness beside them; the fourth joiner
    # found the set full. A replay from zero folds the same set.
    want = tuple(sorted([owner.public_key, keys[1].public_key, keys[2].public_key,
                         keys[5].public_key]))
    assert seqr.state.voters == want
    again = ChannelState.genesis(rec)
    again.replay(list(seqr.entries), [])
    assert again.voters == want and again.state_hash() == seqr.state.state_hash()
    assert ChannelState.decode(seqr.state.encode()).voters == want
    # Anything else as a ctl payload from a non-owner is still refused.
    with pytest.raises(Unauthorized):
        seqr.state.check_submission(Submission.create(
            keys[3], channel=rec.channel, idem_key=b"x", payload=ctl_payload("close"),
            kind="ctl"))
    # On a restricted channel the participants vote (up to the bound), no entry needed.
    team = ChannelRecord.create(owner, workspace="w", name="team", created_at=0,
                                participants=tuple(k.public_key for k in keys[1:5]),
                                policy=ChannelPolicy(max_voters=3))
    tst = ChannelState.genesis(team)
    others = sorted(k.public_key for k in keys[1:5])[:2]
    assert tst.voters == tuple(sorted([owner.public_key, *others]))


def test_an_election_naming_another_voter_set_than_the_fold_changes_nothing() -> None:
    a, b, c, x = _signers(4)
    rec = ChannelRecord.create(a, workspace="w", name="c", created_at=0,
                               participants=(b.public_key, c.public_key))
    r = Replica.create(rec)
    st = r.state
    votes = tuple(Vote.create(v, channel=rec.channel, epoch=2, candidate_key=x.public_key,
                              head=(1, 0, st.head_hash)) for v in (x, b))
    fake = EpochChange.create(x, channel=rec.channel, epoch=2, sequencer_key=x.public_key,
                              start_seq=0, start_hash=st.head_hash, reason="election",
                              voters=tuple(sorted([x.public_key, b.public_key, c.public_key])),
                              votes=votes)
    before = st.state_hash()
    with pytest.raises(Unauthorized, match="voter set"):
        r.receive_epoch(fake)
    assert r.state.state_hash() == before and r.state.epoch == 1


def test_a_vote_is_refused_for_every_reason_the_rules_name() -> None:
    base = dict(candidate=b"c", voters=(b"c", b"m", b"s"), me=b"m", epoch=3, state_epoch=2,
                head=(2, 5), candidate_head=(2, 5), voted=None, sequencing=False,
                sequencer_reachable=False)
    assert vote_refusal(**base) is None  # type: ignore[arg-type]
    other = SaveVote(Vote(channel=bytes(16), epoch=3, candidate_key=b"d", voter_key=b"m",
                          head_epoch=2, head_seq=5, head_hash=bytes(32)))
    cases = {
        "not a voter": dict(candidate=b"x"),
        "that epoch has begun": dict(epoch=2),
        "voted for another": dict(voted=other),
        "sequences the channel": dict(sequencing=True),
        "in touch with the sequencer": dict(sequencer_reachable=True),
        "candidate is behind": dict(candidate_head=(2, 4)),
    }
    for why, change in cases.items():
        got = vote_refusal(**{**base, **change})  # type: ignore[arg-type]
        assert got is not None and why in got, (why, got)
    # A later epoch's head is ahead of any longer head of an earlier epoch.
    assert vote_refusal(**{**base, "candidate_head": (3, 0), "epoch": 4,  # type: ignore[arg-type]
                           "state_epoch": 3}) is None


# --- between hub cores -------------------------------------------------------------------

def _three() -> tuple[dict, dict, bytes]:  # type: ignore[type-arg]
    hubs, keys = {}, {}
    for i, name in enumerate("abc"):
        hubs[name], keys[name] = hub(i + 1)
    init = []
    for x, y in (("a", "b"), ("a", "c"), ("b", "c")):
        init += connect(hubs, x, y)
    run(hubs, init)
    rec, fx = hubs["a"].open_channel("general", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    for name in "bc":  # a writer's first entry makes it a voter
        _publish(hubs, name, rec.channel, b"hello", b"hello-" + name.encode())
    return hubs, keys, rec.channel


def _publish(hubs, who, ch, payload, key, **kw):  # type: ignore[no-untyped-def]
    _, fx = hubs[who].publish(ch, payload, idem_key=key, now_ms=5, **kw)
    return outcomes(run(hubs, [(who, e) for e in fx])[who] + fx)


def _elect(hubs, who, ch, drop=None, now_ms=10):  # type: ignore[no-untyped-def]
    fx = hubs[who].elect(ch, now_ms=now_ms)
    run(hubs, [(who, e) for e in fx], drop=drop)
    return hubs[who].elections.outcomes.get(ch)


def test_writers_and_asked_readers_join_the_voters_and_only_voters_count_for_acks() -> None:
    hubs, keys, ch = _three()
    st = hubs["a"].log(ch).state
    assert st.voters == tuple(sorted(k.public_key for k in keys.values()))
    # Every copy folds the same set from the same prefix.
    assert hubs["b"].log(ch).state.voters == hubs["c"].log(ch).state.voters == st.voters
    (ok,) = _publish(hubs, "b", ch, b"x", b"1", want="replicated")
    assert isinstance(ok, PublishResult) and ok.strength == "replicated"
    # On a channel whose replicas only read, a replicated ack waits: the sequencer asks
    # them to join (one voter entry each), and then they count.
    rec, fx = hubs["a"].open_channel("readers", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    assert hubs["a"].log(rec.channel).state.voters == (keys["a"].public_key,)
    (ok,) = _publish(hubs, "a", rec.channel, b"x", b"1", want="replicated")
    assert isinstance(ok, PublishResult) and ok.strength == "replicated"
    st = hubs["a"].log(rec.channel).state
    assert st.voters == tuple(sorted(k.public_key for k in keys.values()))
    voter_entries = [e for e in hubs["a"].log(rec.channel).entries if e.idem_key == VOTER_KEY]
    assert len(voter_entries) == 2 and all(e.kind == "ctl" for e in voter_entries)


def test_the_sequencer_gone_a_voter_is_elected_by_a_quorum_and_writes_resume() -> None:
    hubs, keys, ch = _three()
    (ok,) = _publish(hubs, "b", ch, b"before", b"1", want="replicated")
    assert ok.strength == "replicated"
    run(hubs, disconnect(hubs, "a", "b") + disconnect(hubs, "a", "c"))
    ec = _elect(hubs, "b", ch, drop={"a"})
    assert isinstance(ec, EpochChange) and ec.reason == "election" and ec.epoch == 2
    assert ec.start_seq >= ok.seq
    assert ch in hubs["b"].own and hubs["c"].log(ch).state.epoch == 2
    assert hubs["c"].log(ch).state.sequencer_key == keys["b"].public_key
    (after,) = _publish(hubs, "c", ch, b"after", b"2", want="replicated")
    assert isinstance(after, PublishResult) and after.seq == ec.start_seq + 1
    # Every replicated ack is in the new epoch, on both copies.
    for name in "bc":
        held = {e.idem_key: e.payload for e in hubs[name].log(ch).entries}
        assert held[b"1"] == b"before" and held[b"2"] == b"after"


def test_a_voter_in_touch_with_the_sequencer_refuses_and_the_election_fails_typed() -> None:
    hubs, keys, ch = _three()
    run(hubs, disconnect(hubs, "a", "b"))  # b lost a, c did not: a partial partition
    assert _elect(hubs, "b", ch) is None  # c refused; a might still answer: it waits
    run(hubs, [("b", e) for e in hubs["b"].expire_elections(now_ms=10 + 5_000)])
    out = hubs["b"].elections.outcomes.get(ch)
    assert isinstance(out, NoQuorum) and "in touch with the sequencer" in out.message
    assert ch in hubs["a"].own and hubs["c"].log(ch).state.epoch == 1
    # b gave up its own vote (it signed nothing): it is not fenced, a keeps the channel.
    assert not hubs["b"].elections.fenced(ch, epoch=1)
    run(hubs, connect(hubs, "a", "b"))
    (ok,) = _publish(hubs, "c", ch, b"still a's", b"3")
    assert isinstance(ok, PublishResult)
    # The next campaign uses a later epoch than the one given up.
    run(hubs, disconnect(hubs, "a", "b") + disconnect(hubs, "a", "c"))
    ec = _elect(hubs, "b", ch, drop={"a"})
    assert isinstance(ec, EpochChange) and ec.epoch == 3


def test_a_vote_is_durable_and_fences_the_old_epoch_across_a_restart() -> None:
    hubs, keys, ch = _three()
    stores = {n: MemoryLogStore() for n in hubs}
    (ok,) = _publish(hubs, "b", ch, b"x", b"1")
    run(hubs, disconnect(hubs, "a", "b") + disconnect(hubs, "a", "c"))
    fx = hubs["b"].elect(ch, now_ms=10)
    seen = run(hubs, [("b", e) for e in fx], drop={"a"}, stores=stores)
    # c's vote was on disk before its reply left (the gating effect comes first).
    kinds = [type(e).__name__ for e in seen["c"]]
    assert "SaveVote" in kinds and kinds.index("SaveVote") < max(
        i for i, e in enumerate(seen["c"]) if type(e).__name__ == "Send"
        and type(e.message).__name__ == "VoteReply")
    (vote,) = stores["c"].load_votes()
    assert vote.vote.epoch == 2 and vote.vote.candidate_key == keys["b"].public_key
    # c restarts from its store: it still refuses another candidate for epoch 2 ...
    c2 = restore(keys["c"], stores["c"], 3)
    assert c2.elections.fenced(ch, epoch=1)
    assert vote_refusal(candidate=keys["a"].public_key, voters=c2.log(ch).state.voters,
                        me=keys["c"].public_key, epoch=2, state_epoch=1, head=(1, ok.seq),
                        candidate_head=(1, ok.seq), voted=c2.elections.voted[ch],
                        sequencing=False, sequencer_reachable=False) is not None


def test_a_fenced_voter_takes_no_entries_of_the_old_epoch_so_no_replicated_ack_forms() -> None:
    from p2pworld.wire import VoteRequest

    hubs, keys, ch = _three()
    run(hubs, disconnect(hubs, "a", "c"))
    # c votes for b in epoch 2 (its reply is lost: b never wins), out of a's reach.
    rc = hubs["c"].log(ch)
    fx = hubs["c"].receive(hubs["b"].node_id, VoteRequest(ch, 2, 1, rc.seq, rc.head_hash),
                           now_ms=10)
    assert any(isinstance(e, SaveVote) for e in fx)
    assert hubs["c"].elections.fenced(ch, epoch=1)
    head_c = rc.seq
    # a, still sequencing epoch 1, reaches c again (b is cut off, so only c could count
    # for k=1) and appends: c takes none of it, so no replicated ack forms.
    run(hubs, disconnect(hubs, "a", "b") + connect(hubs, "a", "c"))
    _, more = hubs["a"].publish(ch, b"late", idem_key=b"9", now_ms=20, want="replicated")
    seen = run(hubs, [("a", e) for e in more], drop={"b"})
    assert hubs["c"].log(ch).seq == head_c and hubs["a"].log(ch).seq == head_c + 1
    assert not any(isinstance(o, PublishResult) and o.strength == "replicated"
                   for o in outcomes(seen["a"] + more))
    assert hubs["c"].errors.get("FENCED", 0) == 0  # refused quietly, no resubscribe loop


def test_a_candidate_that_gives_up_lifts_the_fences_of_those_that_voted_for_it() -> None:
    hubs, keys = {}, {}
    for i, name in enumerate("abcd"):
        hubs[name], keys[name] = hub(i + 1)
    init = []
    for x, y in itertools.combinations("abcd", 2):
        init += connect(hubs, x, y)
    run(hubs, init)
    rec, fx = hubs["a"].open_channel("four", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    ch = rec.channel
    for name in "bcd":
        _publish(hubs, name, ch, b"hello", b"hello-" + name.encode())
    # b and c lose a; d does not (it refuses: in touch with the sequencer). c votes for b,
    # which waits for a quorum of 3 that never comes and gives up at its bound.
    run(hubs, disconnect(hubs, "a", "b") + disconnect(hubs, "a", "c"))
    _elect(hubs, "b", ch)
    assert hubs["c"].elections.fenced(ch, epoch=1)
    run(hubs, [("b", e) for e in hubs["b"].expire_elections(now_ms=10 + 5_000)])
    assert isinstance(hubs["b"].elections.outcomes[ch], NoQuorum)
    # b withdrew (it signed nothing): c's vote for it is of no use, c's fence is lifted, and c
    # follows a again when it reaches it.
    assert not hubs["c"].elections.fenced(ch, epoch=1)
    run(hubs, connect(hubs, "a", "c"))
    (ok,) = _publish(hubs, "a", ch, b"on", b"on")
    assert isinstance(ok, PublishResult)
    assert hubs["c"].log(ch).seq == hubs["a"].log(ch).seq


# --- real nodes over sockets -------------------------------------------------------------

def _cfg(home, **kw):  # type: ignore[no-untyped-def]
    from p2pworld import NodeConfig

    # No handoff when a node leaves: it is gone as if it had crashed.
    return NodeConfig(home=home, workspace="elections", mdns=False, handoff_timeout_s=0, **kw)


async def test_real_nodes_elect_a_new_sequencer_when_the_old_one_is_gone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import trio

    from p2pworld import open_node

    with trio.fail_after(120):
        async with open_node(_cfg(tmp_path / "b")) as b, \
                open_node(_cfg(tmp_path / "c", peers=[b.url])) as c:
            async with open_node(_cfg(tmp_path / "a", peers=[b.url, c.url])) as a:
                ch = (await a.channels.open("general")).channel
                await b.wait_channel("general")
                await c.wait_channel("general")
                await b.publish(ch, b"from b")  # a writer's first entry: a voter
                await c.publish(ch, b"from c")
                kept = await c.publish(ch, b"kept", durability="replicated")
                # a is alive and c is in touch with it: the election is refused, typed, to
                # every caller waiting on it (two at once: before, the second got KeyError).
                from p2pworld.errors import InvalidArgument

                with pytest.raises(InvalidArgument, match="timeout must be at most"):
                    await b.channels.elect(ch, timeout=1e300)
                outcomes: list[object] = []

                async def try_elect() -> None:
                    try:
                        await b.channels.elect(ch, timeout=2)
                    except NoQuorum as e:
                        outcomes.append(e)

                async with trio.open_nursery() as n:
                    n.start_soon(try_elect)
                    n.start_soon(try_elect)
                assert len(outcomes) == 2 and outcomes[0] is outcomes[1]
                assert outcomes[0].details["need"] == 2  # type: ignore[attr-defined]
                gone = a.node_id
            # a is gone for good: b wins (c votes), writes resume on b, nothing is lost.
            while gone in b._hub.peers or gone in c._hub.peers:  # the sessions ended
                await trio.sleep(0.05)
            ec = await b.channels.elect(ch, timeout=20)
            assert ec.reason == "election" and ec.start_seq >= kept.seq
            assert b.channels.sequencer_of(ch) == b.node_id
            r = await c.publish(ch, b"after", durability="replicated", timeout=20)
            assert r.seq == ec.start_seq + 1 and r.strength == "replicated"
            while c.head(ch)[0] < r.seq:
                await trio.sleep(0.05)
            got = [e.payload for e in c._hub.entries(ch)]
            assert b"kept" in got and got[-1] == b"after"
            assert c._hub.log(ch).state.sequencer_key == ec.sequencer_key


def _deliver(src, dst, msg):  # type: ignore[no-untyped-def]
    from p2pworld.wire import decode_message, encode_message

    return dst.receive(src.node_id, decode_message(encode_message(msg)), now_ms=10)


def _sent(fx):  # type: ignore[no-untyped-def]
    from p2pworld.effects import Send

    return [e.message for e in fx if isinstance(e, Send)]


def test_a_hostile_voter_cannot_push_the_epochs_out_of_range() -> None:
    # Before: a vote request for epoch 2**64-1 was granted, and a refusal claiming that
    # epoch was seen made the candidate campaign in 2**64; its vote then did not load from
    # its own store at the next start (found by an adversarial test).
    from p2pworld.wire import VoteReply, VoteRequest

    hubs, keys, ch = _three()
    stores = {n: MemoryLogStore() for n in hubs}
    run(hubs, disconnect(hubs, "a", "b") + disconnect(hubs, "a", "c"))
    b, c = hubs["b"], hubs["c"]
    rc = c.log(ch)
    (reply,) = _sent(_deliver(b, c, VoteRequest(ch, (1 << 64) - 1, 1, rc.seq, rc.head_hash)))
    assert reply.vote is None and "too far ahead" in reply.reason
    assert not c.elections.fenced(ch, epoch=1)
    fx = c.elect(ch, now_ms=5)
    fx += _deliver(b, c, VoteReply(ch, 2, None, "no", (1 << 64) - 1))
    for e in fx:
        if type(e).__name__ == "SaveVote":
            stores["c"].apply([e])
    assert c.elections.campaigns[ch].epoch == 2  # the claim was not followed
    assert [v.vote.epoch for v in stores["c"].load_votes()] == [2]


def test_a_candidate_that_voted_for_a_later_epoch_does_not_win_its_own() -> None:
    # Before: c campaigned in epoch 2, granted b epoch 3, then b's delayed vote for c in
    # epoch 2 arrived and c sequenced epoch 2, an epoch its own vote had fenced.
    hubs, keys, ch = _three()
    run(hubs, disconnect(hubs, "a", "b") + disconnect(hubs, "a", "c"))
    b, c = hubs["b"], hubs["c"]
    (req2,) = [m for m in _sent(c.elect(ch, now_ms=5)) if m.epoch == 2]
    (late,) = _sent(_deliver(c, b, req2))
    assert late.vote is not None
    (req3,) = [m for m in _sent(b.elect(ch, now_ms=6)) if m.epoch == 3]
    (grant3,) = _sent(_deliver(b, c, req3))
    assert grant3.vote is not None
    _deliver(b, c, late)
    assert ch not in c.own and isinstance(c.elections.outcomes[ch], NoQuorum)
    _deliver(c, b, grant3)
    assert ch in b.own and b.log(ch).state.epoch == 3
