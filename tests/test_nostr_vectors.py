"""The official vectors: BIP-340 (every case) and NIP-44 v2 (every valid and invalid case)."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest

from p2pworld.errors import Nip44Error
from p2pworld.nostr import nip44
from p2pworld.nostr.keys import NostrKey, schnorr_verify

from .conftest import VECTORS

BIP340 = list(csv.DictReader((VECTORS / "bip340-test-vectors.csv").read_text().splitlines()))
N44 = json.loads((VECTORS / "nip44.vectors.json").read_text())["v2"]


@pytest.mark.parametrize("v", BIP340, ids=lambda v: v["index"])
def test_bip340(v: dict[str, str]) -> None:
    pub, msg, sig = (bytes.fromhex(v[k]) for k in ("public key", "message", "signature"))
    ok = v["verification result"] == "TRUE"
    if len(msg) == 32:
        assert schnorr_verify(pub, msg, sig) is ok
    if v["secret key"] and len(msg) == 32:
        key = NostrKey(bytes.fromhex(v["secret key"]))
        assert key.public == pub
        assert key.sign_schnorr(msg, bytes.fromhex(v["aux_rand"])) == sig


@pytest.mark.parametrize("v", N44["valid"]["get_conversation_key"])
def test_nip44_conversation_key(v: dict[str, str]) -> None:
    ck = nip44.conversation_key(bytes.fromhex(v["sec1"]), bytes.fromhex(v["pub2"]))
    assert ck.hex() == v["conversation_key"]


@pytest.mark.parametrize("v", N44["invalid"]["get_conversation_key"])
def test_nip44_invalid_conversation_key(v: dict[str, str]) -> None:
    with pytest.raises(Nip44Error):
        nip44.conversation_key(bytes.fromhex(v["sec1"]), bytes.fromhex(v["pub2"]))


def test_nip44_message_keys() -> None:
    mk = N44["valid"]["get_message_keys"]
    ck = bytes.fromhex(mk["conversation_key"])
    for v in mk["keys"]:
        k, n, h = nip44.message_keys(ck, bytes.fromhex(v["nonce"]))
        assert (k.hex(), n.hex(), h.hex()) == (v["chacha_key"], v["chacha_nonce"],
                                               v["hmac_key"])


@pytest.mark.parametrize("v", N44["valid"]["calc_padded_len"])
def test_nip44_padded_len(v: list[int]) -> None:
    assert nip44.padded_len(v[0]) == v[1]


@pytest.mark.parametrize("v", N44["valid"]["encrypt_decrypt"])
def test_nip44_encrypt_decrypt(v: dict[str, str]) -> None:
    a, b = NostrKey(bytes.fromhex(v["sec1"])), NostrKey(bytes.fromhex(v["sec2"]))
    ck = nip44.conversation_key(a.secret, b.public)
    assert ck.hex() == v["conversation_key"]
    assert nip44.conversation_key(b.secret, a.public) == ck
    payload = nip44.encrypt(v["plaintext"], ck, nonce=bytes.fromhex(v["nonce"]))
    assert payload == v["payload"]
    assert nip44.decrypt(payload, ck) == v["plaintext"]


@pytest.mark.parametrize("v", N44["valid"]["encrypt_decrypt_long_msg"])
def test_nip44_long_messages(v: dict[str, object]) -> None:
    text = str(v["pattern"]) * int(str(v["repeat"]))
    assert hashlib.sha256(text.encode()).hexdigest() == v["plaintext_sha256"]
    ck = bytes.fromhex(str(v["conversation_key"]))
    payload = nip44.encrypt(text, ck, nonce=bytes.fromhex(str(v["nonce"])))
    assert hashlib.sha256(payload.encode()).hexdigest() == v["payload_sha256"]
    assert nip44.decrypt(payload, ck) == text


@pytest.mark.parametrize("n", N44["invalid"]["encrypt_msg_lengths"])
def test_nip44_invalid_lengths(n: int) -> None:
    with pytest.raises(Nip44Error):
        nip44.encrypt("x" * n, bytes(32), nonce=bytes(32))


@pytest.mark.parametrize("v", N44["invalid"]["decrypt"], ids=lambda v: v["note"][:40])
def test_nip44_invalid_decrypt(v: dict[str, str]) -> None:
    with pytest.raises(Nip44Error):
        nip44.decrypt(v["payload"], bytes.fromhex(v["conversation_key"]))
