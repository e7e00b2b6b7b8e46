"""Token core: signatures, expiry with leeway, scopes, binding, revocation, fuzz."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, strategies as st

from p2pworld import codec
from p2pworld.auth.token import Claims, mint, verify_token
from p2pworld.errors import Revoked, ScopeDenied, TokenExpired, Unauthorized
from p2pworld.identity import Ed25519Signer, node_id

CONTROL = Ed25519Signer(bytes([9]) * 32)
OTHER = Ed25519Signer(bytes([8]) * 32)
NODE = Ed25519Signer(bytes([1]) * 32)
KEYS = {"k1": CONTROL.public_key}


def claims(**kw) -> Claims:  # type: ignore[no-untyped-def]
    base = dict(org="o", user="u", device="d", session="s", node_key=NODE.public_key,
                nostr_pubkey=bytes(32), scopes=("world:join", "channel:publish:*"),
                issued_at=1000, expires_at=1600, token_id=bytes(16))
    base.update(kw)
    return Claims(**base)  # type: ignore[arg-type]


def test_valid_token_and_scopes() -> None:
    c = verify_token(mint(claims(), CONTROL, kid="k1"), KEYS, now=1200)
    assert c.node_id == node_id(NODE.public_key)
    c.require("channel:publish:abcd")
    with pytest.raises(ScopeDenied):
        c.require("compute:provide")


@pytest.mark.parametrize("now,ok", [(969, False), (970, True), (1630, True), (1631, False)])
def test_validity_window_uses_the_leeway(now: int, ok: bool) -> None:
    raw = mint(claims(), CONTROL, kid="k1")
    if ok:
        verify_token(raw, KEYS, now=now)
    else:
        with pytest.raises(TokenExpired):
            verify_token(raw, KEYS, now=now)


def test_forged_unknown_key_and_tampered_tokens_are_unauthorized() -> None:
    with pytest.raises(Unauthorized):
        verify_token(mint(claims(), OTHER, kid="k1"), KEYS, now=1200)
    with pytest.raises(Unauthorized):
        verify_token(mint(claims(), CONTROL, kid="k9"), KEYS, now=1200)
    m = codec.decode_frame(mint(claims(), CONTROL, kid="k1"))
    m["claims"]["scopes"] = ["*"]
    with pytest.raises(Unauthorized):
        verify_token(codec.encode_frame(m), KEYS, now=1200)


def test_revocation_of_token_or_node() -> None:
    raw = mint(claims(), CONTROL, kid="k1")
    with pytest.raises(Revoked):
        verify_token(raw, KEYS, now=1200, revoked_tokens=frozenset({bytes(16)}))
    with pytest.raises(Revoked):
        verify_token(raw, KEYS, now=1200, revoked_nodes=frozenset({node_id(NODE.public_key)}))


def test_a_token_acts_only_for_the_node_it_names() -> None:
    c = verify_token(mint(claims(), CONTROL, kid="k1"), KEYS, now=1200)
    c.require_binding(NODE.public_key, bytes(32))
    with pytest.raises(Unauthorized):
        c.require_binding(OTHER.public_key)
    with pytest.raises(Unauthorized):
        c.require_binding(NODE.public_key, bytes([1]) * 32)


def test_key_rotation_accepts_old_and_new_keys() -> None:
    keys = {"k1": CONTROL.public_key, "k2": OTHER.public_key}
    verify_token(mint(claims(), CONTROL, kid="k1"), keys, now=1200)
    verify_token(mint(replace(claims(), token_id=bytes([1]) * 16), OTHER, kid="k2"), keys,
                 now=1200)


@given(st.binary(max_size=600))
def test_malformed_tokens_only_raise_unauthorized(raw: bytes) -> None:
    with pytest.raises(Unauthorized):
        verify_token(raw, KEYS, now=1200)
