"""Channel-log features as transcripts between hub cores: membership, close, private
channels, replicated acks, handoff, recovery, forks, retention, checkpoints, replay."""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2pworld.channel.hub import PublishResult
from p2pworld.errors import (
    ChainBroken,
    ChannelClosed,
    Fenced,
    KeyUnavailable,
    NotParticipant,
    P2PWorldError,
)
from p2pworld.identity import Ed25519Signer
from p2pworld.log.entry import ChannelPolicy, Entry, SignedHead, Submission
from p2pworld.log.replica import Replica
from p2pworld.log.sequencer import Sequencer
from p2pworld.log.state import ChannelState, Snapshot
from p2pworld.wire import Entries

from .hubs import connect, disconnect, hub, outcomes, run


def world(n: int = 3):  # type: ignore[no-untyped-def]
    hubs = {}
    keys = {}
    for i, name in enumerate("abcdefg"[:n]):
        hubs[name], keys[name] = hub(i + 1)
    init = []
    names = list(hubs)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            init += connect(hubs, x, y)
    run(hubs, init)
    return hubs, keys


def publish(hubs, who, ch, payload, key, **kw):  # type: ignore[no-untyped-def]
    _, fx = hubs[who].publish(ch, payload, idem_key=key, now_ms=5, **kw)
    return outcomes(run(hubs, [(who, e) for e in fx])[who] + fx)


def test_membership_is_sequenced_and_enforced() -> None:
    hubs, keys = world()
    rec, fx = hubs["a"].open_channel("team", now_ms=0, participants=(keys["b"].public_key,))
    run(hubs, [("a", e) for e in fx])
    assert rec.channel in hubs["b"].replicas and rec.channel not in hubs["c"].replicas
    (ok,) = publish(hubs, "b", rec.channel, b"hi", b"1")
    assert isinstance(ok, PublishResult)
    # c learns of the channel only when added; until then its writes are refused.
    hubs["c"].replicas[rec.channel] = Replica.create(rec)
    (refused,) = publish(hubs, "c", rec.channel, b"me too", b"2")
    assert isinstance(refused, NotParticipant)
    _, fx = hubs["a"].add_participant(rec.channel, keys["c"].public_key, now_ms=6)
    run(hubs, [("a", e) for e in fx])
    (ok,) = publish(hubs, "c", rec.channel, b"me too", b"2")
    assert isinstance(ok, PublishResult)
    _, fx = hubs["a"].remove_participant(rec.channel, keys["b"].public_key, now_ms=7)
    run(hubs, [("a", e) for e in fx])
    (refused,) = publish(hubs, "b", rec.channel, b"again", b"3")
    assert isinstance(refused, NotParticipant)
    # The membership history is part of the log, and every replica folds the same state.
    assert hubs["c"].state(rec.channel).state_hash() == hubs["a"].state(rec.channel).state_hash()


def test_close_channel_stops_appends_but_not_reads() -> None:
    hubs, _ = world()
    rec, fx = hubs["a"].open_channel("c", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    publish(hubs, "b", rec.channel, b"1", b"1")
    _, fx = hubs["a"].close_channel(rec.channel, now_ms=5)
    run(hubs, [("a", e) for e in fx])
    (refused,) = publish(hubs, "b", rec.channel, b"2", b"2")
    assert isinstance(refused, ChannelClosed)
    # A resubmission of something already sequenced still gets its original seq.
    (dup,) = publish(hubs, "b", rec.channel, b"1", b"1")
    assert isinstance(dup, PublishResult) and dup.status == "duplicate"
    assert hubs["c"].state(rec.channel).closed and hubs["c"].head(rec.channel)[0] == 2


def test_private_channel_payloads_are_end_to_end_encrypted_and_rotated() -> None:
    hubs, keys = world()
    rec, fx = hubs["a"].open_channel("secret", now_ms=0, private=True,
                                     participants=(keys["b"].public_key,
                                                   keys["c"].public_key))
    run(hubs, [("a", e) for e in fx])
    publish(hubs, "b", rec.channel, b"plaintext one", b"1")
    for h in hubs.values():
        ents = [e for e in h.entries(rec.channel) if e.kind == "msg"]
        assert ents and all(b"plaintext" not in e.payload for e in ents)
        assert h.open_payload(ents[0]) == b"plaintext one"
    _, fx = hubs["a"].remove_participant(rec.channel, keys["c"].public_key, now_ms=6)
    run(hubs, [("a", e) for e in fx])
    publish(hubs, "b", rec.channel, b"plaintext two", b"2")
    last = hubs["c"].entries(rec.channel)[-1]
    assert last.payload == hubs["a"].entries(rec.channel)[-1].payload  # c still relays bytes
    with pytest.raises(KeyUnavailable):
        hubs["c"].open_payload(last)
    assert hubs["b"].open_payload(last) == b"plaintext two"


def test_replicated_ack_waits_for_k_replicas() -> None:
    hubs, _ = world()
    rec, fx = hubs["a"].open_channel("r", now_ms=0, policy=ChannelPolicy(replication=2))
    run(hubs, [("a", e) for e in fx])
    # With c unreachable only one replica stores the entry: no replicated ack yet.
    _, fx = hubs["b"].publish(rec.channel, b"x", idem_key=b"1", now_ms=5, want="replicated")
    seen = run(hubs, [("b", e) for e in fx], drop={"c"})
    assert outcomes(seen["b"]) == []
    assert hubs["a"].replicated_seq(rec.channel) == 0
    # c comes back, catches up, joins the voters when the sequencer asks (only voters count
    # for replicated acks; b joined with its write) and reports what it stored: now the ack
    # is replicated (seq 2 is c's voter entry).
    (out,) = outcomes(run(hubs, connect(hubs, "a", "c"))["b"])
    assert isinstance(out, PublishResult) and (out.seq, out.strength) == (1, "replicated")
    assert hubs["a"].replicated_seq(rec.channel) == 2
    # A local-strength publish is answered at once, before any replica reports.
    (fast,) = publish(hubs, "b", rec.channel, b"y", b"2")
    assert isinstance(fast, PublishResult) and fast.strength == "local"


def test_planned_handoff_fences_the_old_epoch() -> None:
    hubs, keys = world()
    rec, fx = hubs["a"].open_channel("h", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    for i in range(3):
        publish(hubs, "c", rec.channel, b"%d" % i, b"%d" % i)
    old_head = hubs["a"].own[rec.channel].seqr.signed_head()
    ec, fx = hubs["a"].handoff(rec.channel, keys["b"].public_key, now_ms=6)
    run(hubs, [("a", e) for e in fx])
    assert rec.channel in hubs["b"].own and rec.channel not in hubs["a"].own
    (ok,) = publish(hubs, "c", rec.channel, b"after", b"after")
    assert isinstance(ok, PublishResult) and ok.seq == 4
    for h in hubs.values():
        assert h.state(rec.channel).epoch == 2 and h.head(rec.channel)[0] == 4
    # An old-epoch head (a stale or lying former sequencer) is refused everywhere.
    with pytest.raises(Fenced):
        hubs["c"].replicas[rec.channel].receive([], old_head)


def test_recovery_by_authority_reports_lost_local_acks() -> None:
    hubs, keys = world()
    authority = Ed25519Signer(bytes([99]) * 32)
    rec, fx = hubs["a"].open_channel("rec", now_ms=0, authority_key=authority.public_key)
    run(hubs, [("a", e) for e in fx])
    publish(hubs, "c", rec.channel, b"kept", b"1")
    # b is cut off; c gets two more local acks that only a and c hold.
    run(hubs, disconnect(hubs, "a", "b"))
    publish(hubs, "c", rec.channel, b"lost 1", b"2")
    publish(hubs, "c", rec.channel, b"lost 2", b"3")
    assert hubs["b"].head(rec.channel)[0] == 1 and hubs["c"].head(rec.channel)[0] == 3
    # a dies. The authority makes b the sequencer at b's head.
    run(hubs, disconnect(hubs, "a", "c"))
    del hubs["a"]
    ec, fx = hubs["b"].recover(rec.channel, authority, keys["b"].public_key, now_ms=9)
    seen = run(hubs, [("b", e) for e in fx])
    notices = [e.error for e in seen["c"] if type(e).__name__ == "Notice"]
    lost = [n for n in notices if n.code == "LOST_WRITE"]
    assert sorted(n.details["seq"] for n in lost) == [2, 3]
    # The writer's node resubmits them with their keys: the new sequencer acknowledges them
    # again (RESEQUENCED, old and new seq).
    again = sorted((n.details["old_seq"], n.details["seq"]) for n in notices
                   if n.code == "RESEQUENCED")
    assert again == [(2, 2), (3, 3)]
    assert hubs["c"].head(rec.channel) == hubs["b"].head(rec.channel)
    (ok,) = publish(hubs, "c", rec.channel, b"lost 1", b"2")  # an application retry
    assert isinstance(ok, PublishResult) and ok.seq == 2 and ok.status == "duplicate"


def test_equivocation_is_a_fork_with_proof_and_recovery_resumes() -> None:
    hubs, keys = world(2)
    authority = Ed25519Signer(bytes([99]) * 32)
    rec, fx = hubs["a"].open_channel("f", now_ms=0, authority_key=authority.public_key)
    run(hubs, [("a", e) for e in fx])
    publish(hubs, "b", rec.channel, b"one", b"1")
    # a's key signs a second, different history (equivocation).
    rogue = Sequencer(ChannelState.genesis(rec), keys["a"])
    rogue.submit(Submission.create(keys["a"], channel=rec.channel, idem_key=b"x",
                                   payload=b"other"), now_ms=0)
    fx = hubs["b"].receive(hubs["a"].node_id, Entries(tuple(rogue.entries),
                                                      rogue.signed_head()), now_ms=1)
    kinds = [type(e).__name__ for e in fx]
    assert kinds == ["Notice", "RecordFork"] and fx[0].error.code == "FORKED"
    assert hubs["b"].replicas[rec.channel].frozen
    ec, fx = hubs["b"].recover(rec.channel, authority, keys["b"].public_key, now_ms=2)
    assert rec.channel in hubs["b"].own
    (ok,) = publish(hubs, "b", rec.channel, b"two", b"2")
    assert isinstance(ok, PublishResult) and ok.seq == 2


def test_retention_snapshot_catch_up_gives_the_same_state() -> None:
    hubs, keys = world(2)
    rec, fx = hubs["a"].open_channel("ret", now_ms=0, policy=ChannelPolicy(retention=10))
    run(hubs, [("a", e) for e in fx])
    run(hubs, disconnect(hubs, "a", "b"))
    for i in range(100):
        hubs["a"].publish(rec.channel, b"%d" % i, idem_key=b"%d" % i, now_ms=3)
    run(hubs, [])
    assert hubs["a"].log(rec.channel).floor > 0
    seen = run(hubs, connect(hubs, "a", "b"))
    notices = [e.error.code for e in seen["b"] if type(e).__name__ == "Notice"]
    assert notices == ["CHECKPOINT_TOO_OLD"]
    a_state, b_state = hubs["a"].state(rec.channel), hubs["b"].state(rec.channel)
    assert b_state.state_hash() == a_state.state_hash()
    # The idempotency index survived retention: a late resubmission is recognised.
    (dup,) = publish(hubs, "a", rec.channel, b"0", b"0")
    assert isinstance(dup, PublishResult) and (dup.status, dup.seq) == ("duplicate", 1)


def test_checkpoint_mismatch_is_reported() -> None:
    hubs, _ = world(2)
    rec, fx = hubs["a"].open_channel("cp", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    publish(hubs, "a", rec.channel, b"1", b"1")
    from p2pworld.wire import Subscribe
    fx = hubs["a"].receive(hubs["b"].node_id, Subscribe(rec.channel, 1, bytes(32), 1),
                           now_ms=1)
    assert fx[0].message.code == "CHECKPOINT_MISMATCH"  # type: ignore[attr-defined]
    out = hubs["b"].receive(hubs["a"].node_id, fx[0].message, now_ms=1)  # type: ignore
    assert out[0].error.code == "CHECKPOINT_MISMATCH"
    cps = hubs["b"].ack_message(rec.channel, 1)
    assert cps[0].checkpoint.seq == 1


def _fold_log(n: int, owner: Ed25519Signer, writer: Ed25519Signer) -> Sequencer:
    from p2pworld.log.entry import ChannelRecord
    from p2pworld.log.state import ctl_payload
    rec = ChannelRecord.create(owner, workspace="w", name="replay", created_at=0,
                               participants=(writer.public_key,))
    s = Sequencer.create(rec, owner)
    for i in range(n):
        if i % 7 == 3:
            sub = Submission.create(owner, channel=rec.channel, idem_key=b"c%d" % i,
                                    payload=ctl_payload("add", member=bytes([i]) * 32),
                                    kind="ctl")
        else:
            # Every third submission repeats an earlier key (a duplicate: no new entry).
            k = i - 1 if i % 3 == 2 else i
            sub = Submission.create(writer, channel=rec.channel, idem_key=b"k%d" % k,
                                    payload=b"p%d" % k)
        s.submit(sub, now_ms=i)
    return s


def replay(rec_state: ChannelState, entries: list[Entry]) -> bytes:
    st = rec_state.copy()
    for e in entries:
        st.apply(e)
    return st.state_hash()


def test_snapshot_plus_tail_equals_full_replay_at_every_prefix() -> None:
    owner, writer = Ed25519Signer(bytes([1]) * 32), Ed25519Signer(bytes([2]) * 32)
    s = _fold_log(40, owner, writer)
    genesis = ChannelState.genesis(s.record)
    for cut in range(0, s.seq + 1):
        snap_state = genesis.copy()
        for e in s.entries[:cut]:
            snap_state.apply(e)
        snap = Snapshot.create(owner, snap_state)
        restored = snap.open(s.record)
        assert replay(restored, s.entries[cut:]) == replay(genesis, s.entries)
    assert replay(genesis, s.entries) == s.state.state_hash()


def test_a_wrong_fold_fails_the_replay_check(monkeypatch: pytest.MonkeyPatch) -> None:
    owner, writer = Ed25519Signer(bytes([1]) * 32), Ed25519Signer(bytes([2]) * 32)
    s = _fold_log(20, owner, writer)
    genesis = ChannelState.genesis(s.record)
    snap_state = genesis.copy()
    for e in s.entries[:10]:
        snap_state.apply(e)
    restored = Snapshot.create(owner, snap_state).open(s.record)
    good = replay(genesis, s.entries)
    real_apply = ChannelState.apply

    def forgetful(self: ChannelState, entry: Entry) -> None:
        real_apply(self, entry)
        if entry.kind == "ctl":
            self.participants.clear()  # a fold that mishandles membership

    monkeypatch.setattr(ChannelState, "apply", forgetful)
    with pytest.raises((AssertionError, P2PWorldError)):
        # Either the fold refuses an entry or the hashes differ; both fail the check.
        assert replay(restored, s.entries[10:]) == good


def test_forged_head_replay_and_tampered_batch_change_nothing() -> None:
    owner, writer = Ed25519Signer(bytes([1]) * 32), Ed25519Signer(bytes([2]) * 32)
    s = _fold_log(5, owner, writer)
    r = Replica.create(s.record)
    before = r.state.state_hash()
    bad_head = SignedHead.create(writer, channel=s.channel, epoch=1, seq=5,
                                 head_hash=s.head_hash)
    with pytest.raises(ChainBroken):
        r.receive(s.entries, bad_head)
    with pytest.raises(ChainBroken):
        r.receive([replace(s.entries[0], payload=b"x")] + s.entries[1:], s.signed_head())
    assert r.state.state_hash() == before and r.seq == 0
