"""Handing a leaving node's channels to live replicas (p2pworld.channel.handoffs), and the
hub carrying it out: who is chosen, what confirms, what is reported, the bound."""

from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from p2pworld.channel.handoffs import Candidate, HandoffBook, choose
from p2pworld.channel.hub import ChannelHub, Notice
from p2pworld.errors import NotHandedOff
from p2pworld.identity import Ed25519Signer, node_id
from p2pworld.wire import ChannelAnnounce, EpochMsg, Subscribe

CANDIDATES = st.lists(st.builds(Candidate, peer=st.sampled_from([b"a", b"b", b"c", b"d"]),
                                key=st.sampled_from([b"A", b"B", b"C"]),
                                stored=st.integers(0, 9), sent=st.integers(0, 9)),
                      max_size=6, unique_by=lambda c: c.peer)


@settings(max_examples=300, deadline=None)
@given(cands=CANDIDATES, restricted=st.booleans(),
       participants=st.sets(st.sampled_from([b"A", b"B", b"C"])))
def test_the_chosen_replica_may_take_the_channel_and_holds_the_most(
        cands: list[Candidate], restricted: bool, participants: set[bytes]) -> None:
    got = choose(cands, restricted=restricted, participants=participants)
    eligible = [c for c in cands if not restricted or c.key in participants]
    if not eligible:
        assert got is None
        return
    assert got in eligible
    assert got.stored == max(c.stored for c in eligible)
    # The same answer whatever order the candidates come in.
    assert choose(list(reversed(cands)), restricted=restricted,
                  participants=participants) == got


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from(["announce", "wrong-peer", "old-epoch",
                                                  "time"]), st.integers(0, 3000)),
                       max_size=12))
def test_a_handoff_is_confirmed_once_by_its_target_or_ends_at_its_bound(
        events: list[tuple[str, int]]) -> None:
    book = HandoffBook()
    book.start(b"ch", b"t", epoch=3, now_ms=0, timeout_ms=5000)
    now = 0
    for kind, dt in events:
        now += dt
        if kind == "announce" and now < 5000:
            book.announced(b"ch", b"t", epoch=3)
        elif kind == "wrong-peer":
            assert not book.announced(b"ch", b"x", epoch=3)
        elif kind == "old-epoch":
            assert not book.announced(b"ch", b"t", epoch=2)
        else:
            book.expire(now_ms=now)
        report = book.report()
        # Never both, and once decided it stays decided.
        assert not (b"ch" in report.handed and b"ch" in report.not_handed)
        assert book.done == (b"ch" in report.handed or b"ch" in report.not_handed)
        if not book.done:
            assert book.wake_at() == 5000
    book.expire(now_ms=10_000)
    assert book.done and book.wake_at() is None


def _hubs() -> tuple[ChannelHub, ChannelHub, ChannelHub]:
    out = []
    for i in range(3):
        out.append(ChannelHub(Ed25519Signer(bytes([i + 1]) * 32), workspace="w",
                              rng=random.Random(i)))
    a, b, c = out
    for x in out:
        for y in out:
            if x is not y:
                x.peer_up(y.node_id, y.signer.public_key)
    return a, b, c


def test_the_hub_hands_off_to_the_subscriber_at_its_head_and_the_announce_confirms() -> None:
    a, b, c = _hubs()
    rec, _ = a.open_channel("general", now_ms=0)
    ch = rec.channel
    for i in range(3):
        a.publish(ch, b"m%d" % i, idem_key=b"k%d" % i, now_ms=1)
    a.flush(now_ms=2)
    # b subscribed and stored everything; c subscribed from the start and stored nothing.
    b.receive(a.node_id, ChannelAnnounce(rec), now_ms=3)
    a.receive(b.node_id, Subscribe(ch, 3, a.own[ch].seqr.hash_at(3) or b""), now_ms=3)
    a.receive(c.node_id, Subscribe(ch, 0), now_ms=3)
    a.own[ch].subscribers[b.node_id].stored(3)
    fx = a.hand_off_all(now_ms=10, timeout_ms=5000)
    epoch_to_b, *_ = [e for e in fx if getattr(e, "peer", None) == b.node_id
                      and isinstance(e.message, EpochMsg)]  # type: ignore[attr-defined]
    assert epoch_to_b.message.change.sequencer_key == b.signer.public_key  # type: ignore[attr-defined]
    assert a.handoffs.pending and not a.handoffs.done
    assert ch not in a.own  # a replica from now on: nothing more is acknowledged here
    # Only the new sequencer's announce at the new epoch confirms.
    a.receive(c.node_id, ChannelAnnounce(rec, (epoch_to_b.message.change,)),  # type: ignore[attr-defined]
              now_ms=11)
    assert not a.handoffs.done
    a.receive(b.node_id, ChannelAnnounce(rec, (epoch_to_b.message.change,)),  # type: ignore[attr-defined]
              now_ms=12)
    assert a.handoffs.done and a.handoffs.report().handed == {ch: b.node_id}


def test_a_channel_nobody_replicates_is_reported_with_a_notice_not_handed_off() -> None:
    a, _, _ = _hubs()
    rec, _ = a.open_channel("alone", now_ms=0)
    fx = a.hand_off_all(now_ms=1)
    [notice] = [e for e in fx if isinstance(e, Notice)]
    assert isinstance(notice.error, NotHandedOff) and notice.channel == rec.channel
    assert a.handoffs.done and rec.channel in a.handoffs.report().not_handed
    assert rec.channel in a.own  # still its sequencer: it returns to it


def test_an_unconfirmed_handoff_ends_at_its_bound_with_a_notice() -> None:
    a, b, _ = _hubs()
    rec, _ = a.open_channel("general", now_ms=0)
    a.receive(b.node_id, Subscribe(rec.channel, 0), now_ms=1)
    a.hand_off_all(now_ms=10, timeout_ms=500)
    assert a.handoffs.wake_at() == 510
    assert a.expire_handoffs(now_ms=509) == []
    [notice, _known] = a.expire_handoffs(now_ms=510)
    assert isinstance(notice, Notice) and isinstance(notice.error, NotHandedOff)
    assert a.handoffs.done and not a.handoffs.report().complete
    assert node_id(b.signer.public_key) == b.node_id


def test_a_channel_handed_over_while_leaving_waits_for_a_replica_within_its_bound() -> None:
    book = HandoffBook(timeout_ms=1000)
    book.started = True
    assert book.seek(b"ch", now_ms=0) and not book.done
    assert book.wake_at() == 100  # tried again soon, not at the end of the bound
    assert book.seek(b"ch", now_ms=500) and book.wake_at() == 600
    book.start(b"ch", b"t", epoch=3, now_ms=550, timeout_ms=1000)  # a replica came
    assert b"ch" not in book.seeking and book.wake_at() == 1550
    assert book.seek(b"other", now_ms=0)
    assert not book.seek(b"other", now_ms=2000)  # past its bound: given up
