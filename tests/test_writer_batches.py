"""Writer batch signatures: one signature per burst, each entry independently verifiable."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld import codec
from p2pworld.channel.hub import Delivered, Persist
from p2pworld.errors import ChainBroken, DecodeError, InvalidSignature
from p2pworld.identity import Ed25519Signer
from p2pworld.io.log_store import STORE_FORMAT, LogStore
from p2pworld.log import entry as entry_mod, merkle
from p2pworld.log.entry import (
    ChannelRecord,
    Entry,
    Submission,
    WriterProof,
    sign_batch,
)
from p2pworld.log.replica import Replica
from p2pworld.log.sequencer import Sequencer

from .hubs import connect, hub, run

OWNER = Ed25519Signer(bytes([1]) * 32)
WRITER = Ed25519Signer(bytes([2]) * 32)


def _leaves(n: int) -> list[bytes]:
    return [bytes([i % 256, i // 256]) * 16 for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_every_leaf_proves_the_root_and_nothing_else_does(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    root, paths = merkle.tree(leaves)
    for i in range(n):
        assert merkle.root_from_path(leaves[i], i, n, paths[i]) == root
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n))
    if j != i:  # another position (the size is bound by the signature, not by the path)
        assert merkle.root_from_path(leaves[i], j, n, paths[i]) != root
    if n > 1:
        assert merkle.root_from_path(leaves[i], i, n, paths[i][:-1]) != root
        k = data.draw(st.integers(0, len(paths[i]) - 1))
        bent = list(paths[i])
        bent[k] = bytes([0xAB]) * 32  # not a hash of this tree
        assert merkle.root_from_path(leaves[i], i, n, bent) != root
    other = bytes([255]) * 32
    assert merkle.root_from_path(other, i, n, paths[i]) != root


def _batch(n: int, ch: bytes = bytes(16)) -> list[Submission]:
    return sign_batch(WRITER, channel=ch,
                      items=[(b"k%d" % i, b"payload %d" % i, "msg") for i in range(n)])


def test_a_batch_has_one_signature_and_each_submission_verifies_alone() -> None:
    subs = _batch(7)
    assert len({s.signature for s in subs}) == 1
    for s in subs:
        # Through the wire form, so the proof is what a sequencer would receive.
        back = Submission.from_wire(codec.decode(codec.encode(s.to_wire())))
        assert back == s
        back.verify()
    (alone,) = _batch(1)
    assert alone.proof is None and "sp" not in alone.to_wire()
    alone.verify()


def test_tampered_batch_members_are_refused() -> None:
    subs = _batch(5)
    other = _batch(5, ch=bytes([1]) * 16)
    bad = [
        replace(subs[2], payload=b"forged"),
        replace(subs[2], idem_key=b"k9"),
        replace(subs[2], proof=subs[3].proof),  # another member's proof
        replace(subs[2], signature=other[2].signature),  # another batch's signature
        replace(other[2], channel=bytes(16)),  # the root's signature binds the channel
        replace(subs[2], proof=None),  # a batch signature is not a single signature
        replace(subs[2], sender_key=OWNER.public_key),
    ]
    # Leaf 0 of 4 has the same path and root read as leaf 0 of 3; the signature covers the
    # size, so the smaller claim still fails.
    four = _batch(4)
    p = four[0].proof
    assert p is not None
    assert merkle.root_from_path(four[0].leaf_hash, 0, 3, p.path) == \
        merkle.root_from_path(four[0].leaf_hash, 0, 4, p.path)
    bad.append(replace(four[0], proof=WriterProof(0, 3, p.path)))
    for s in bad:
        with pytest.raises(InvalidSignature):
            s.verify()


@settings(max_examples=200, deadline=None)
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5), max_leaves=20))
def test_writer_proof_decoder_refuses_anything_malformed(value: object) -> None:
    try:
        p = WriterProof.from_wire(value, "test")
    except DecodeError:
        return
    assert 0 <= p.index < p.size and len(p.path) <= entry_mod.MAX_PROOF_PATH


def test_entry_bytes_are_strict_and_kept() -> None:
    rec = ChannelRecord.create(OWNER, workspace="w", name="c", created_at=0)
    s = Sequencer.create(rec, OWNER)
    subs = sign_batch(OWNER, channel=rec.channel,
                      items=[(b"a", b"1", "msg"), (b"b", b"2", "msg")])
    ents = [s.submit(x, now_ms=0).entry for x in subs]
    for e in ents:
        assert e is not None
        back = Entry.from_bytes(e.encoded)
        assert back == e and back.hash == e.hash and back.encoded == e.encoded
        assert Entry.from_frame(e.to_frame()) == e
        extra = codec.encode({**e.to_wire(), "x": 1})
        with pytest.raises(DecodeError):
            Entry.from_bytes(extra)
        missing = dict(e.to_wire())
        del missing["t"]
        with pytest.raises(DecodeError):
            Entry.from_bytes(codec.encode(missing))


def test_a_remote_burst_is_one_signature_verified_once_per_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = hub(1)
    b, _ = hub(2)
    c, _ = hub(3)
    hubs = {"a": a, "b": b, "c": c}
    rec, fx = a.open_channel("general", now_ms=0)
    run(hubs, [("a", e) for e in fx] + connect(hubs, "a", "b") + connect(hubs, "a", "c"))
    calls: list[int] = []
    real = entry_mod.verify_raw

    def counting(*args: object) -> bool:
        calls.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(entry_mod, "verify_raw", counting)
    monkeypatch.setattr(entry_mod, "_VERIFIED_ROOTS", entry_mod._VerifiedRoots())
    for i in range(40):
        b.publish(rec.channel, b"m%d" % i, idem_key=b"%d" % i, now_ms=1)
    seen = run(hubs, [])
    ents = a.entries(rec.channel)
    assert [e.payload for e in ents] == [b"m%d" % i for i in range(40)]
    assert len({e.sender_sig for e in ents}) == 1
    assert all(e.sender_proof is not None and e.sender_proof.size == 40 for e in ents)
    # Sequencer and subscriber share one process here, so one check in all; the writer
    # itself recognises its own submissions without a check.
    assert len(calls) == 1
    got = [x for e in seen["c"] if isinstance(e, Delivered) for x in e.entries]
    assert [x.hash for x in got] == [e.hash for e in ents]
    assert b.entries(rec.channel) == ents


def test_own_submission_shortcut_does_not_trust_a_forgery() -> None:
    rec = ChannelRecord.create(OWNER, workspace="w", name="c", created_at=0)
    s = Sequencer.create(rec, OWNER)
    subs = _batch(3, ch=rec.channel)
    mine = {(x.channel, x.idem_key): x for x in subs}
    # The sequencer (a liar) appends a payload the writer never signed under the same key.
    forged = replace(subs[0], payload=b"not mine")
    s.state.idem.clear()
    e = s.submit(subs[1], now_ms=0).entry
    assert e is not None
    bad = Entry(channel=rec.channel, epoch=1, seq=2, prev_hash=e.hash,
                sender_key=forged.sender_key, sender_sig=forged.signature,
                idem_key=forged.idem_key, payload=forged.payload, sequencer_time=0,
                sender_proof=forged.proof)
    s.append(bad)
    r = Replica.create(rec)
    with pytest.raises(ChainBroken):
        r.receive([e, bad], s.signed_head(), mine)
    assert r.receive([e], s.signed_head_at(1), mine) == [e]


def test_format_2_store_is_migrated_and_read(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = LogStore(path)
    rec = ChannelRecord.create(OWNER, workspace="w", name="c", created_at=0)
    s = Sequencer.create(rec, OWNER)
    e = s.submit(Submission.create(OWNER, channel=rec.channel, idem_key=b"a", payload=b"x"),
                 now_ms=0).entry
    assert e is not None
    store.write([Persist(record=rec, entries=(e,))])
    store.close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value=2 WHERE key='format'")
    con.commit()
    con.close()
    store = LogStore(path)
    (chan,) = store.load_channels()
    store.close()
    assert chan.entries == [e]
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key='format'").fetchone() == (STORE_FORMAT,)
    con.close()


def _sample_entries() -> list[Entry]:
    rec = ChannelRecord.create(OWNER, workspace="w", name="c", created_at=0)
    s = Sequencer.create(rec, OWNER)
    subs = sign_batch(WRITER, channel=rec.channel,
                      items=[(b"k%d" % i, b"payload %d" % i, "msg") for i in range(5)])
    s.state.participants.add(WRITER.public_key)
    return [e for x in subs if (e := s.submit(x, now_ms=0).entry) is not None]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_entry_bytes_decode_strictly_or_are_refused(data: st.DataObject) -> None:
    e = data.draw(st.sampled_from(_sample_entries()))
    raw = bytearray(e.encoded)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(raw)))
    blob = bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw)
    try:
        got = Entry.from_bytes(blob)
    except DecodeError:
        return
    # Accepted only as the canonical encoding of what it decodes to, hashed from those bytes.
    assert got.encoded == blob == codec.encode(got.to_wire())
    assert got.hash == entry_mod.hash_bytes(codec.tagged(entry_mod.ENTRY_DOMAIN, got.to_wire()))
