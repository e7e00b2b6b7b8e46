"""Node identity: ed25519 node keys, node ids, the signer interface and the node↔Nostr attestation.

* A **node id** is ``BLAKE2b-256(tagged("p2pworld/node-id/v1", ed25519_public_key))``.
* All node signatures go through :class:`Signer`, so an application can keep keys in its own
  custody (hardware, OS keychain, the Autopilot desktop). :class:`Ed25519Signer` is the default.
* An :class:`Attestation` binds a node key to a Nostr (NIP-06) key: the same canonical body is
  signed by both keys, so neither can be claimed without the other.

Example:
    >>> signer = Ed25519Signer.from_seed(bytes(32))
    >>> nid = node_id(signer.public_key)
    >>> len(nid), verify(signer.public_key, "p2pworld/example/v1", {"a": 1},
    ...                  sign(signer, "p2pworld/example/v1", {"a": 1}))
    (32, True)
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import nacl.bindings
import nacl.exceptions
import nacl.signing

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import IdentityError, InvalidAttestation
from p2pworld.nostr.keys import NostrKey, schnorr_verify

NODE_ID_DOMAIN = "p2pworld/node-id/v1"
ATTESTATION_DOMAIN = "p2pworld/attestation/v1"


def blake2b256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def node_id(public_key: bytes) -> bytes:
    """The 32-byte node id of an ed25519 public key."""
    if len(public_key) != 32:
        raise IdentityError("ed25519 public key must be 32 bytes")
    return _node_id(bytes(public_key))


@functools.lru_cache(maxsize=4096)
def _node_id(public_key: bytes) -> bytes:
    # A pure function asked for the same few keys on every message (routing, senders).
    return blake2b256(codec.tagged(NODE_ID_DOMAIN, public_key))


def short_id(nid: bytes) -> str:
    """First 8 hex digits of a node id, for logs and views."""
    return nid.hex()[:8]


@runtime_checkable
class Signer(Protocol):
    """Anything that holds an ed25519 node key and signs bytes with it."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte ed25519 signature of ``message``."""
        ...


@dataclass(frozen=True)
class Ed25519Signer:
    """The default, in-process signer (the key lives in this process's memory)."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise IdentityError("ed25519 seed must be 32 bytes")

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        return cls(seed)

    @cached_property
    def _key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @cached_property
    def public_key(self) -> bytes:
        return bytes(self._key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(nacl.bindings.crypto_sign(message, self._secret)[:64])

    @cached_property
    def _secret(self) -> bytes:
        return bytes(self._key._signing_key)

    def x25519(self, peer_public: bytes) -> bytes:
        """X25519 with this key in Montgomery form (private channels' key wrapping)."""
        sk = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(self.seed + self.public_key)
        return bytes(nacl.bindings.crypto_scalarmult(sk, peer_public))


def sign(signer: Signer, domain: str, value: Value) -> bytes:
    """Sign the domain-tagged canonical encoding of ``value``."""
    return signer.sign(codec.tagged(domain, value))


def verify(public_key: bytes, domain: str, value: Value, signature: bytes) -> bool:
    """Check an ed25519 signature made by :func:`sign`; False for any malformed input."""
    return verify_raw(public_key, codec.tagged(domain, value), signature)


def verify_raw(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """ed25519 verification; False (never an exception) for any malformed input."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError,
            TypeError):
        return False


@dataclass(frozen=True, kw_only=True)
class Attestation:
    """A node key and a Nostr key, each signing the same body, so the binding is mutual."""

    node_key: bytes
    nostr_pubkey: bytes
    created_at: int
    node_sig: bytes
    nostr_sig: bytes

    def body(self) -> dict[str, Value]:
        return {"node_key": self.node_key, "nostr": self.nostr_pubkey, "at": self.created_at}

    @classmethod
    def create(
        cls, signer: Signer, nostr: NostrKey, *, created_at: int, aux: bytes
    ) -> Attestation:
        body = {"node_key": signer.public_key, "nostr": nostr.public, "at": created_at}
        msg = codec.tagged(ATTESTATION_DOMAIN, body)
        return cls(
            node_key=signer.public_key,
            nostr_pubkey=nostr.public,
            created_at=created_at,
            node_sig=signer.sign(msg),
            nostr_sig=nostr.sign_schnorr(hashlib.sha256(msg).digest(), aux),
        )

    def verify(self) -> None:
        """Raise :class:`InvalidAttestation` unless both signatures verify."""
        msg = codec.tagged(ATTESTATION_DOMAIN, self.body())
        if not verify_raw(self.node_key, msg, self.node_sig):
            raise InvalidAttestation("node signature on attestation does not verify")
        if not schnorr_verify(self.nostr_pubkey, hashlib.sha256(msg).digest(), self.nostr_sig):
            raise InvalidAttestation("Nostr signature on attestation does not verify")

    def to_wire(self) -> dict[str, Value]:
        return {**self.body(), "node_sig": self.node_sig, "nostr_sig": self.nostr_sig}

    @classmethod
    def from_wire(cls, value: Any) -> Attestation:
        what = "attestation"
        m = codec.need_map(value, what)
        return cls(
            node_key=codec.bytes_field(m, "node_key", what, size=32),
            nostr_pubkey=codec.bytes_field(m, "nostr", what, size=32),
            created_at=codec.int_field(m, "at", what),
            node_sig=codec.bytes_field(m, "node_sig", what, size=64),
            nostr_sig=codec.bytes_field(m, "nostr_sig", what, size=64),
        )


@dataclass(frozen=True)
class NodeIdentity:
    """What a running node is: its signer, its Nostr key and their attestation."""

    signer: Signer
    nostr: NostrKey
    attestation: Attestation

    @property
    def node_id(self) -> bytes:
        return node_id(self.signer.public_key)

    @property
    def public_key(self) -> bytes:
        return self.signer.public_key

    @classmethod
    def create(
        cls, signer: Signer, nostr: NostrKey, *, created_at: int, aux: bytes
    ) -> NodeIdentity:
        return cls(signer, nostr, Attestation.create(signer, nostr, created_at=created_at, aux=aux))

    @classmethod
    def from_seeds(cls, node_seed: bytes, nostr_secret: bytes, *, created_at: int = 0) -> NodeIdentity:
        """Deterministic identity for tests and the simulator."""
        signer = Ed25519Signer(node_seed)
        return cls.create(signer, NostrKey(nostr_secret), created_at=created_at,
                          aux=blake2b256(node_seed + nostr_secret))
