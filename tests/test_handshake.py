"""The handshake and frame core, as transcripts: two cores, bytes passed by hand."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld import codec
from p2pworld.errors import (
    FrameRejected,
    FrameTooLarge,
    HandshakeError,
    HandshakeRefused,
    LocalProtocolError,
    PeerIdentityMismatch,
    RemoteProtocolError,
    SessionClosed,
    VersionMismatch,
    WorkspaceMismatch,
)
from p2pworld.transport.handshake import (
    PROTOCOL_VERSIONS,
    Handshake,
    HandshakeConfig,
    HandshakeState,
)

from .conftest import make_identity

A, B, C = make_identity(1), make_identity(2), make_identity(3)


def pair(rng: random.Random, *, a_cfg: dict | None = None, b_cfg: dict | None = None
         ) -> tuple[Handshake, Handshake]:
    i = Handshake(HandshakeConfig(identity=A, workspace="w", **(a_cfg or {})), initiator=True,
                  rng=rng)
    r = Handshake(HandshakeConfig(identity=B, workspace="w", **(b_cfg or {})), initiator=False,
                  rng=rng)
    return i, r


def run(i: Handshake, r: Handshake) -> None:
    hs1 = i.start()
    hs2 = r.receive(hs1)
    assert hs2 is not None
    hs3 = i.receive(hs2)
    assert hs3 is not None
    assert r.receive(hs3) is None


def test_success_authenticates_both_sides(rng: random.Random) -> None:
    i, r = pair(rng, a_cfg={"token": b"tok-a", "expected_peer": B.node_id},
                b_cfg={"token": b"tok-b"})
    run(i, r)
    assert i.done and r.done
    assert i.result.peer_id == B.node_id and r.result.peer_id == A.node_id
    assert i.result.peer_token == b"tok-b" and r.result.peer_token == b"tok-a"
    assert i.result.peer_attestation.nostr_pubkey == B.nostr.public
    ti, tr = i.result.transport(), r.result.transport()
    for n in range(5):
        assert tr.open(ti.seal(b"i%d" % n)) == b"i%d" % n
        assert ti.open(tr.seal(b"r%d" % n)) == b"r%d" % n


def test_keys_differ_per_session(rng: random.Random) -> None:
    i1, r1 = pair(rng)
    run(i1, r1)
    i2, r2 = pair(rng)
    run(i2, r2)
    assert i1.result.send_key != i2.result.send_key  # fresh ephemerals each time


def test_dialling_the_wrong_node_is_refused(rng: random.Random) -> None:
    i, r = pair(rng, a_cfg={"expected_peer": C.node_id})
    hs2 = r.receive(i.start())
    with pytest.raises(PeerIdentityMismatch):
        i.receive(hs2)
    assert i.state is HandshakeState.ERROR
    refusal = i.refusal()
    with pytest.raises(HandshakeRefused) as e:
        r.receive(refusal)
    assert e.value.details["peer_code"] == "PEER_IDENTITY_MISMATCH"


def test_connecting_to_ourselves_is_refused(rng: random.Random) -> None:
    i = Handshake(HandshakeConfig(identity=A, workspace="w"), initiator=True, rng=rng)
    r = Handshake(HandshakeConfig(identity=A, workspace="w"), initiator=False, rng=rng)
    with pytest.raises(PeerIdentityMismatch):
        i.receive(r.receive(i.start()))


@pytest.mark.parametrize("target", ["hs2", "hs3"])
def test_tampered_transcript_fails(rng: random.Random, target: str) -> None:
    i, r = pair(rng)
    hs1 = i.start()
    hs2 = r.receive(hs1)
    assert hs2 is not None
    if target == "hs2":
        bad = bytearray(hs2)
        bad[-5] ^= 1
        with pytest.raises(HandshakeError):
            i.receive(bytes(bad))
        return
    hs3 = i.receive(hs2)
    assert hs3 is not None
    bad = bytearray(hs3)
    bad[-5] ^= 1
    with pytest.raises(HandshakeError):
        r.receive(bytes(bad))
    assert not r.done


def test_tampered_hs1_breaks_the_signature(rng: random.Random) -> None:
    # A man in the middle swaps the initiator's ephemeral key: the responder signs a
    # transcript the initiator never sent, so the initiator refuses.
    i, r = pair(rng)
    hs1 = codec.decode_frame(i.start())
    hs1["e"] = bytes(range(32))
    hs2 = r.receive(codec.encode_frame(hs1))
    assert hs2 is not None
    with pytest.raises(HandshakeError):
        i.receive(hs2)


def test_a_third_party_cannot_splice_its_identity(rng: random.Random) -> None:
    # C answers A's hs1 and then replays B's signed payload: the key/signature binding fails.
    i, r = pair(rng)
    hs1 = i.start()
    hs2_b = r.receive(hs1)
    c = Handshake(HandshakeConfig(identity=C, workspace="w"), initiator=False, rng=rng)
    hs2_c = codec.decode_frame(c.receive(hs1))
    hs2_c["box"] = codec.decode_frame(hs2_b)["box"]
    with pytest.raises(HandshakeError):
        i.receive(codec.encode_frame(hs2_c))


def test_version_mismatch_is_a_typed_refusal(rng: random.Random) -> None:
    i, r = pair(rng, a_cfg={"versions": (7,)})
    with pytest.raises(VersionMismatch):
        r.receive(i.start())
    refusal = r.refusal()
    with pytest.raises(HandshakeRefused) as e:
        i.receive(refusal)
    assert e.value.details["peer_code"] == "VERSION_MISMATCH"
    assert codec.decode_frame(refusal)["versions"] == list(PROTOCOL_VERSIONS)


def test_workspace_mismatch(rng: random.Random) -> None:
    i = Handshake(HandshakeConfig(identity=A, workspace="x"), initiator=True, rng=rng)
    r = Handshake(HandshakeConfig(identity=B, workspace="y"), initiator=False, rng=rng)
    with pytest.raises(WorkspaceMismatch):
        r.receive(i.start())


def test_truncated_and_oversized_handshake_input(rng: random.Random) -> None:
    i, r = pair(rng)
    hs1 = i.start()
    with pytest.raises(HandshakeError):
        r.receive(hs1[:-3])
    i, r = pair(rng)
    with pytest.raises(HandshakeError):
        r.receive(b"\x01" + b"\x00" * 20000)


def test_error_state_is_sticky(rng: random.Random) -> None:
    i, r = pair(rng)
    with pytest.raises(HandshakeError):
        r.receive(b"junk")
    with pytest.raises(LocalProtocolError):
        r.receive(i.start())


def established(rng: random.Random):  # type: ignore[no-untyped-def]
    i, r = pair(rng)
    run(i, r)
    return i.result.transport(), r.result.transport()


def test_replayed_frame_is_rejected(rng: random.Random) -> None:
    ti, tr = established(rng)
    f = ti.seal(b"once")
    assert tr.open(f) == b"once"
    with pytest.raises(FrameRejected):
        tr.open(f)
    with pytest.raises(SessionClosed):  # sticky
        tr.open(ti.seal(b"next"))


def test_reordered_frame_is_rejected(rng: random.Random) -> None:
    ti, tr = established(rng)
    f1, f2 = ti.seal(b"1"), ti.seal(b"2")
    with pytest.raises(FrameRejected):
        tr.open(f2)
    del f1


def test_reflected_frame_is_rejected(rng: random.Random) -> None:
    # A frame sent by A cannot be bounced back to A (per-direction keys).
    ti, tr = established(rng)
    with pytest.raises(FrameRejected):
        ti.open(ti.seal(b"x"))


def test_oversized_and_truncated_frames(rng: random.Random) -> None:
    ti, tr = established(rng)
    tr.max_frame = 100
    with pytest.raises(FrameTooLarge):
        tr.open(b"\x00" * 101)
    ti, tr = established(rng)
    with pytest.raises(FrameRejected):
        tr.open(ti.seal(b"hello")[:-1])
    ti, tr = established(rng)
    with pytest.raises(FrameRejected):
        tr.open(b"short")


@settings(max_examples=200)
@given(st.binary(max_size=400))
def test_handshake_fuzz_only_typed_errors(data: bytes) -> None:
    r = Handshake(HandshakeConfig(identity=B, workspace="w"), initiator=False,
                  rng=random.Random(0))
    try:
        r.receive(data)
    except RemoteProtocolError:
        assert r.state is HandshakeState.ERROR


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_frame_fuzz_only_typed_errors_and_no_delivery(data: bytes) -> None:
    ti, tr = established(random.Random(1))
    with pytest.raises(RemoteProtocolError):
        tr.open(data)
    assert tr.frames_received == 0
