"""Private channels: a symmetric channel key, wrapped for each participant, seals payloads.

* The owner draws a 32-byte key (from the caller's rng) and wraps it for every participant:
  ``X25519(ephemeral, participant's X25519 key)`` (the participant's ed25519 key converted to
  Montgomery form) → BLAKE2b KEK → XChaCha20-Poly1305 (zero nonce: every KEK is used once).
  ``wrapped = ephemeral_public (32) || ciphertext (48)``.
* A payload is sealed as a frame ``{kid, n: nonce (24), ct}`` with XChaCha20-Poly1305, additional
  data ``channel id || key id``. Relays and rendezvous nodes see only this.
* Removing a participant rotates the key (a ``remove`` is followed by a ``rekey`` that wraps a
  fresh key for those who remain), so a removed member cannot read what follows.

Example:
    >>> import random
    >>> from p2pworld.identity import Ed25519Signer
    >>> alice = Ed25519Signer(bytes([1]) * 32)
    >>> rng = random.Random(5)
    >>> key = new_key(rng)
    >>> w = wrap(key, alice.public_key, channel=bytes(16), key_id=1, rng=rng)
    >>> unwrap(w, alice, channel=bytes(16), key_id=1) == key
    True
    >>> sealed = seal(key, b"secret", channel=bytes(16), key_id=1, rng=rng)
    >>> open_sealed({1: key}, sealed, channel=bytes(16))
    b'secret'
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import nacl.bindings as sodium
import nacl.exceptions

from p2pworld import codec
from p2pworld.errors import DecodeError, KeyUnavailable

if TYPE_CHECKING:
    import random


@runtime_checkable
class KeyAgreement(Protocol):
    """A signer that can also do X25519 with its node key (needed for private channels)."""

    @property
    def public_key(self) -> bytes: ...

    def x25519(self, peer_public: bytes) -> bytes:
        """X25519 between this node's key (Montgomery form) and ``peer_public``."""
        ...


def _rand(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def new_key(rng: random.Random) -> bytes:
    return _rand(rng, 32)


def x25519_public_of(ed25519_public: bytes) -> bytes:
    return bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(ed25519_public))


def _kek(shared: bytes, eph_pub: bytes, member_x: bytes, channel: bytes, key_id: int) -> bytes:
    h = hashlib.blake2b(digest_size=32, key=shared, person=b"p2pworld-kek-v1")
    h.update(eph_pub + member_x + channel + key_id.to_bytes(8, "big"))
    return h.digest()


def wrap(key: bytes, member_ed25519: bytes, *, channel: bytes, key_id: int,
         rng: random.Random) -> bytes:
    member_x = x25519_public_of(member_ed25519)
    eph = _rand(rng, 32)
    eph_pub = bytes(sodium.crypto_scalarmult_base(eph))
    shared = bytes(sodium.crypto_scalarmult(eph, member_x))
    kek = _kek(shared, eph_pub, member_x, channel, key_id)
    ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(key, b"", bytes(24), kek)
    return eph_pub + bytes(ct)


def unwrap(wrapped: bytes, me: KeyAgreement, *, channel: bytes, key_id: int) -> bytes:
    if len(wrapped) != 32 + 48:
        raise KeyUnavailable("wrapped key has the wrong size")
    eph_pub, ct = wrapped[:32], wrapped[32:]
    shared = me.x25519(eph_pub)
    kek = _kek(shared, eph_pub, x25519_public_of(me.public_key), channel, key_id)
    try:
        return bytes(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, b"", bytes(24), kek))
    except nacl.exceptions.CryptoError:
        raise KeyUnavailable("wrapped key does not open with this node's key") from None


def seal(key: bytes, payload: bytes, *, channel: bytes, key_id: int,
         rng: random.Random) -> bytes:
    nonce = _rand(rng, 24)
    ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        payload, channel + key_id.to_bytes(8, "big"), nonce, key)
    return codec.encode_frame({"kid": key_id, "n": nonce, "ct": bytes(ct)})


def open_sealed(keys: dict[int, bytes], sealed: bytes, *, channel: bytes) -> bytes:
    try:
        m = codec.need_map(codec.decode_frame(sealed, max_bytes=len(sealed) + 1),
                           "sealed payload")
        kid = codec.int_field(m, "kid", "sealed payload", lo=1)
        nonce = codec.bytes_field(m, "n", "sealed payload", size=24)
        ct = codec.bytes_field(m, "ct", "sealed payload")
    except DecodeError as e:
        raise KeyUnavailable(f"payload is not a sealed frame: {e.message}") from None
    key = keys.get(kid)
    if key is None:
        raise KeyUnavailable(f"no key {kid} for this channel on this node")
    try:
        return bytes(sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ct, channel + kid.to_bytes(8, "big"), nonce, key))
    except nacl.exceptions.CryptoError:
        raise KeyUnavailable("payload does not open with the channel key") from None
