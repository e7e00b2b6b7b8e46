"""Sequencer, replica and hub cores, as transcripts between cores (no I/O)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld.channel.hub import (
    ChannelHub,
    Delivered,
    OutboxPut,
    Persist,
    PublishResult,
    Resolved,
    Send,
)
from p2pworld.errors import ChainBroken, ChannelClosed, Conflict, Forked, InvalidSignature
from p2pworld.identity import Ed25519Signer
from p2pworld.log.entry import ChannelRecord, Entry, SignedHead, Submission
from p2pworld.log.replica import Replica
from p2pworld.log.sequencer import Sequencer
from p2pworld.wire import decode_message, encode_message

OWNER = Ed25519Signer(bytes([1]) * 32)
WRITER = Ed25519Signer(bytes([2]) * 32)


def channel() -> ChannelRecord:
    return ChannelRecord.create(OWNER, workspace="w", name="general", created_at=0)


def sub(key: bytes, payload: bytes, signer: Ed25519Signer = WRITER) -> Submission:
    return Submission.create(signer, channel=channel().channel, idem_key=key, payload=payload)


def test_seq_is_monotonic_and_gapless() -> None:
    s = Sequencer.create(channel(), OWNER)
    seqs = [s.submit(sub(b"k%d" % i, b"p"), now_ms=i).seq for i in range(50)]
    assert seqs == list(range(1, 51))


def test_idempotency_duplicate_and_conflict() -> None:
    s = Sequencer.create(channel(), OWNER)
    first = s.submit(sub(b"k", b"hello"), now_ms=0)
    again = s.submit(sub(b"k", b"hello"), now_ms=5)
    assert (again.status, again.seq, again.entry_hash) == ("duplicate", 1, first.entry_hash)
    with pytest.raises(Conflict) as e:
        s.submit(sub(b"k", b"other"), now_ms=6)
    assert e.value.details["seq"] == 1 and e.value.details["entry_hash"] == first.entry_hash
    assert s.seq == 1
    # Keys are scoped per sender: another writer may use the same key.
    other = s.submit(sub(b"k", b"other", OWNER), now_ms=7)
    assert other.status == "appended" and other.seq == 2


def test_forged_sender_is_refused() -> None:
    s = Sequencer.create(channel(), OWNER)
    forged = replace(sub(b"k", b"x"), sender_key=OWNER.public_key)
    with pytest.raises(InvalidSignature):
        s.submit(forged, now_ms=0)
    assert s.seq == 0


def test_closed_channel_refuses_appends() -> None:
    s = Sequencer.create(channel(), OWNER)
    s.state.closed = True
    with pytest.raises(ChannelClosed):
        s.submit(sub(b"k", b"x"), now_ms=0)


def _filled(n: int) -> Sequencer:
    s = Sequencer.create(channel(), OWNER)
    for i in range(n):
        s.submit(sub(b"k%d" % i, b"payload %d" % i), now_ms=i)
    return s


def test_replica_accepts_a_signed_batch() -> None:
    s = _filled(10)
    r = Replica.create(channel())
    assert [e.seq for e in r.receive(s.entries[:4], s.signed_head_at(4))] == [1, 2, 3, 4]
    assert [e.seq for e in r.receive(s.entries[2:], s.signed_head())] == list(range(5, 11))
    assert r.head_hash == s.head_hash


@pytest.mark.parametrize("attack", ["payload", "sender_sig", "prev", "head_sig", "gap",
                                    "wrong_head_key", "short_of_head"])
def test_replica_refuses_tampered_batches_and_changes_nothing(attack: str) -> None:
    s = _filled(5)
    ents = list(s.entries)
    head = s.signed_head()
    if attack == "payload":
        ents[2] = replace(ents[2], payload=b"evil")
    elif attack == "sender_sig":
        ents[2] = replace(ents[2], sender_sig=bytes(64))
    elif attack == "prev":
        ents[3] = replace(ents[3], prev_hash=bytes(32))
    elif attack == "head_sig":
        head = replace(head, signature=bytes(64))
    elif attack == "gap":
        del ents[1]
    elif attack == "wrong_head_key":
        head = SignedHead.create(WRITER, channel=head.channel, epoch=1, seq=5,
                                 head_hash=head.head_hash)
    elif attack == "short_of_head":
        ents = ents[:3]
    r = Replica.create(channel())
    with pytest.raises(ChainBroken):
        r.receive(ents, head)
    assert r.seq == 0


def test_fork_is_detected_with_proof() -> None:
    s = _filled(3)
    r = Replica.create(channel())
    r.receive(s.entries, s.signed_head())
    # The same sequencer key signs a different history (equivocation).
    s2 = Sequencer.create(channel(), OWNER)
    s2.submit(sub(b"k0", b"payload 0"), now_ms=0)
    s2.submit(sub(b"x", b"different"), now_ms=1)
    with pytest.raises(Forked):
        r.receive(s2.entries[1:], s2.signed_head())
    assert r.fork_proof is not None and r.fork_proof[0].seq == 2
    with pytest.raises(Forked):
        r.receive([], s.signed_head())


def test_unsigned_conflicting_entry_is_not_a_fork() -> None:
    # A relay cannot freeze a channel by sending junk at an old seq.
    s = _filled(3)
    r = Replica.create(channel())
    r.receive(s.entries, s.signed_head())
    junk = replace(s.entries[1], payload=b"junk")
    with pytest.raises(ChainBroken):
        r.receive([junk, s.entries[2]], s.signed_head())
    assert r.fork_proof is None and r.seq == 3


def run_hubs(a: ChannelHub, b: ChannelHub, fx_a: list, fx_b: list) -> dict[str, list]:
    """Deliver Send effects between two hubs (through the wire codec) until quiet."""
    seen: dict[str, list] = {"a": [], "b": []}
    queue = [("a", e) for e in fx_a] + [("b", e) for e in fx_b]
    hubs = {"a": a, "b": b}
    ids = {a.node_id: "a", b.node_id: "b"}
    while True:
        if not queue:
            queue += [("a", x) for x in a.flush(now_ms=2)] + [("b", x) for x in b.flush(now_ms=2)]
            if not queue:
                break
        who, e = queue.pop(0)
        seen[who].append(e)
        if isinstance(e, Send):
            dst = ids[e.peer]
            msg = decode_message(encode_message(e.message))
            queue += [(dst, x) for x in hubs[dst].receive(hubs[who].node_id, msg, now_ms=1)]
    return seen


def test_two_hubs_exchange_ordered_messages() -> None:
    a = ChannelHub(OWNER, workspace="w", rng=random.Random(1))
    b = ChannelHub(WRITER, workspace="w", rng=random.Random(2))
    rec, fx = a.open_channel("general", now_ms=0)
    fx_a = fx + a.peer_up(b.node_id, WRITER.public_key)
    fx_b = b.peer_up(a.node_id, OWNER.public_key)
    run_hubs(a, b, fx_a, fx_b)
    assert rec.channel in b.replicas
    reqs = []
    fx_b = []
    for i in range(5):
        req, fx = b.publish(rec.channel, b"from b %d" % i, idem_key=b"b%d" % i, now_ms=3)
        reqs.append(req)
        fx_b += fx
    req_a, fx_a = a.publish(rec.channel, b"from a", idem_key=b"a", now_ms=3)
    seen = run_hubs(a, b, fx_a, fx_b)
    resolved_b = [e.outcome for e in seen["b"] if isinstance(e, Resolved)]
    assert all(isinstance(o, PublishResult) and o.strength == "local" for o in resolved_b)
    assert sorted(o.seq for o in resolved_b) == [2, 3, 4, 5, 6]  # a's own publish came first
    assert a.head(rec.channel) == b.head(rec.channel)
    assert [e.payload for e in b.entries(rec.channel)] == [b"from a"] + [
        b"from b %d" % i for i in range(5)]
    # Persist comes before the ack that depends on it.
    kinds = [type(e).__name__ for e in seen["a"]]
    assert kinds.index("Persist") < max(i for i, e in enumerate(seen["a"])
                                        if isinstance(e, Send) and type(e.message).__name__ == "Ack")
    assert any(isinstance(e, Delivered) for e in seen["b"])
    # Idempotent retry through the wire: same key, same payload -> original seq.
    req, fx = b.publish(rec.channel, b"from b 0", idem_key=b"b0", now_ms=4)
    seen = run_hubs(a, b, [], fx)
    (out,) = [e.outcome for e in seen["b"] if isinstance(e, Resolved)]
    assert isinstance(out, PublishResult) and (out.status, out.seq) == ("duplicate", 2)
    # Same key, different payload -> an explicit Conflict naming the original.
    req, fx = b.publish(rec.channel, b"changed", idem_key=b"b0", now_ms=4)
    seen = run_hubs(a, b, [], fx)
    (out,) = [e.outcome for e in seen["b"] if isinstance(e, Resolved)]
    assert isinstance(out, Conflict) and out.details["seq"] == 2


def test_outbox_survives_lane_loss_and_resubmits_without_duplicates() -> None:
    a = ChannelHub(OWNER, workspace="w", rng=random.Random(1))
    b = ChannelHub(WRITER, workspace="w", rng=random.Random(2))
    rec, fx = a.open_channel("general", now_ms=0)
    run_hubs(a, b, fx + a.peer_up(b.node_id, WRITER.public_key),
             b.peer_up(a.node_id, OWNER.public_key))
    _, fx = b.publish(rec.channel, b"x", idem_key=b"1", now_ms=1)
    assert fx == []  # queued: signed, written to the outbox and sent together at the flush
    put, sent = b.flush(now_ms=1)
    assert isinstance(put, OutboxPut) and isinstance(sent, Send)
    # The submission reached the sequencer, but the lane dies before the ack comes back.
    a.receive(b.node_id, decode_message(encode_message(sent.message)), now_ms=1)
    a.flush(now_ms=1)
    (lost,) = b.peer_down(a.node_id)
    a.peer_down(b.node_id)
    assert isinstance(lost, Resolved) and lost.outcome.code == "INDETERMINATE"
    # Without a lane a publish is only queued in the durable outbox.
    _, fx = b.publish(rec.channel, b"y", idem_key=b"2", now_ms=1)
    assert fx == [] and [type(e).__name__ for e in b.flush(now_ms=1)] == ["OutboxPut"]
    assert len(b.outbox) == 2
    # The lane returns: both are resubmitted with their keys; "x" is answered as a duplicate.
    seen = run_hubs(a, b, a.peer_up(b.node_id, WRITER.public_key),
                    b.peer_up(a.node_id, OWNER.public_key))
    done = [e for e in seen["b"] if type(e).__name__ == "OutboxDone"]
    assert sorted(e.idem_key for e in done) == [b"1", b"2"] and not b.outbox
    assert [e.payload for e in a.entries(rec.channel)] == [b"x", b"y"]
    assert b.head(rec.channel) == a.head(rec.channel)


def test_catch_up_after_reconnect_gets_exactly_the_tail() -> None:
    a = ChannelHub(OWNER, workspace="w", rng=random.Random(1))
    b = ChannelHub(WRITER, workspace="w", rng=random.Random(2))
    rec, fx = a.open_channel("general", now_ms=0)
    run_hubs(a, b, fx + a.peer_up(b.node_id, WRITER.public_key), b.peer_up(a.node_id, OWNER.public_key))
    for i in range(3):
        a.publish(rec.channel, b"%d" % i, idem_key=b"%d" % i, now_ms=1)
    run_hubs(a, b, [], [])
    b.peer_down(a.node_id)
    a.peer_down(b.node_id)
    for i in range(3, 600):
        a.publish(rec.channel, b"%d" % i, idem_key=b"%d" % i, now_ms=1)
    a.flush(now_ms=1)
    seen = run_hubs(a, b, a.peer_up(b.node_id, WRITER.public_key),
                    b.peer_up(a.node_id, OWNER.public_key))
    delivered = [x.seq for e in seen["b"] if isinstance(e, Delivered) for x in e.entries]
    assert delivered == list(range(4, 601))
    assert b.head(rec.channel) == a.head(rec.channel)
    persisted = [x.seq for e in seen["b"] if isinstance(e, Persist) for x in e.entries]
    assert persisted == delivered


def test_announce_of_foreign_workspace_is_refused() -> None:
    a = ChannelHub(OWNER, workspace="other", rng=random.Random(1))
    b = ChannelHub(WRITER, workspace="w", rng=random.Random(2))
    rec, fx = a.open_channel("general", now_ms=0)
    seen = run_hubs(a, b, fx + a.peer_up(b.node_id, WRITER.public_key),
                    b.peer_up(a.node_id, OWNER.public_key))
    assert rec.channel not in b.replicas
    assert any(type(e).__name__ == "PeerMisbehaved" for e in seen["b"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.binary(min_size=0, max_size=8)), max_size=40))
def test_sequencer_idempotency_property(ops: list[tuple[int, bytes]]) -> None:
    """Model: a dict key -> first payload. Every submit agrees with the model."""
    s = Sequencer.create(channel(), OWNER)
    model: dict[int, tuple[bytes, int]] = {}
    for k, payload in ops:
        key = b"k%d" % k
        if k in model:
            first, seq = model[k]
            if first == payload:
                out = s.submit(sub(key, payload), now_ms=0)
                assert (out.status, out.seq) == ("duplicate", seq)
            else:
                with pytest.raises(Conflict):
                    s.submit(sub(key, payload), now_ms=0)
        else:
            out = s.submit(sub(key, payload), now_ms=0)
            assert out.status == "appended" and out.seq == len(model) + 1
            model[k] = (payload, out.seq)
    assert s.seq == len(model)
    r = Replica.create(channel())
    if s.seq:
        r.receive(s.entries, s.signed_head())
    assert r.head_hash == s.head_hash


def test_entry_wire_round_trip() -> None:
    s = _filled(2)
    e = s.entries[1]
    assert Entry.from_wire(e.to_wire()) == e
