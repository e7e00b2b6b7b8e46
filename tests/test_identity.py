"""Identity: NIP-06 vector, key files, attestations, the signer interface."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from p2pworld import codec
from p2pworld.errors import IdentityError, InvalidAttestation
from p2pworld.identity import Attestation, Ed25519Signer, NodeIdentity, node_id
from p2pworld.io.home import NodeHome
from p2pworld.nostr.keys import NostrKey, nip06_path

from .conftest import VECTORS


def test_nip06_vector() -> None:
    data = json.loads((VECTORS / "nip06.json").read_text())
    assert data["path"] == nip06_path(0)
    for v in data["vectors"]:
        key = NostrKey.from_mnemonic(v["mnemonic"])
        assert key.secret.hex() == v["private_key_hex"]
        assert key.public_hex == v["public_key_hex"]
        assert key.nsec == v["nsec"]
        assert key.npub == v["npub"]


def test_home_creates_then_loads_the_same_identity(tmp_path: Path) -> None:
    home = NodeHome(tmp_path / "h")
    a = home.create()
    b = NodeHome(tmp_path / "h").load()
    assert a.node_id == b.node_id and a.nostr.public == b.nostr.public
    for f in (home.node_key_path, home.nostr_key_path):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    b.attestation.verify()


def test_import_mnemonic(tmp_path: Path) -> None:
    v = json.loads((VECTORS / "nip06.json").read_text())["vectors"][0]
    ident = NodeHome(tmp_path).create(mnemonic=v["mnemonic"].upper())
    assert ident.nostr.public_hex == v["public_key_hex"]
    assert NodeHome(tmp_path).mnemonic() == v["mnemonic"]


def test_bad_mnemonic_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IdentityError):
        NodeHome(tmp_path).create(mnemonic="leader monkey parrot ring guide accident before "
                                           "fence cannon height naive naive")
    assert not NodeHome(tmp_path).exists()


def test_existing_identity_is_never_replaced(tmp_path: Path) -> None:
    home = NodeHome(tmp_path)
    home.create()
    with pytest.raises(IdentityError):
        home.create()


@pytest.mark.parametrize("which", ["node", "nostr"])
def test_a_changed_bit_in_a_key_file_is_refused_naming_it_never_another_identity(
        tmp_path: Path, which: str) -> None:
    """Found by an adversarial run: junk in ``node.key`` raised ``UnsupportedVersion`` (not
    an IdentityError, and naming no file), and 32 of the 64 single-bit flips of ``node.key``
    (one of ``nostr.key``: its account number) started the node under another identity."""
    home = NodeHome(tmp_path / "h")
    ident = home.create()
    f = home.node_key_path if which == "node" else home.nostr_key_path
    good = f.read_bytes()
    for i in range(len(good)):
        for bit in range(8):
            bad = bytearray(good)
            bad[i] ^= 1 << bit
            f.write_bytes(bytes(bad))
            try:
                got = home.load()
            except IdentityError as e:
                assert str(f) in e.message, e.message
                continue
            assert (got.node_id, got.nostr.public) == (ident.node_id, ident.nostr.public), \
                f"byte {i} bit {bit}: another identity"
    f.write_bytes(b"hello world")
    with pytest.raises(IdentityError, match=f"{f.name} is corrupt"):
        home.load()


def test_a_key_file_from_before_gets_its_public_key_and_loads_the_same(tmp_path: Path) -> None:
    from p2pworld.core.home_rules import node_key_frame

    home = NodeHome(tmp_path / "h")
    ident = home.create()
    seed = codec.decode_frame(home.node_key_path.read_bytes())["seed"]
    home.node_key_path.write_bytes(node_key_frame(seed))  # as written before (no key)
    assert home.load().node_id == ident.node_id
    assert codec.decode_frame(home.node_key_path.read_bytes())["public"] == \
        ident.signer.public_key


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_kind", "delete_one",
                                    "unreadable"])
def test_corrupt_key_file_is_an_error_not_a_new_identity(tmp_path: Path, damage: str) -> None:
    home = NodeHome(tmp_path)
    before = home.create().node_id
    f = home.node_key_path
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:10])
    elif damage == "garbage":
        f.write_bytes(b"\x01\xff\xfe")
    elif damage == "wrong_kind":
        f.write_bytes(codec.encode_frame({"kind": "other", "seed": bytes(32)}))
    elif damage == "delete_one":
        home.nostr_key_path.unlink()
    elif damage == "unreadable":
        f.unlink()
        f.mkdir()
    with pytest.raises(IdentityError):
        home.load()
    with pytest.raises(IdentityError):
        home.load_or_create()
    if damage != "unreadable" and damage != "delete_one":
        assert f.exists()
    assert before  # the old identity was not silently replaced


def test_attestation_binds_both_keys() -> None:
    a = NodeIdentity.from_seeds(bytes([1]) * 32, bytes([1]) * 32)
    a.attestation.verify()
    other = NostrKey(bytes([9]) * 32)
    forged = Attestation(node_key=a.attestation.node_key, nostr_pubkey=other.public,
                         created_at=a.attestation.created_at, node_sig=a.attestation.node_sig,
                         nostr_sig=a.attestation.nostr_sig)
    with pytest.raises(InvalidAttestation):
        forged.verify()


def test_custom_signer_is_used_for_everything() -> None:
    calls = []

    class Custody:
        """An application-held key: we only see sign() calls."""

        def __init__(self) -> None:
            self._inner = Ed25519Signer(bytes([5]) * 32)

        @property
        def public_key(self) -> bytes:
            return self._inner.public_key

        def sign(self, message: bytes) -> bytes:
            calls.append(message)
            return self._inner.sign(message)

    ident = NodeIdentity.create(Custody(), NostrKey(bytes([5]) * 32), created_at=0,
                                aux=bytes(32))
    ident.attestation.verify()
    assert calls and ident.node_id == node_id(Ed25519Signer(bytes([5]) * 32).public_key)
