"""Nostr keys: NIP-06 derivation from a BIP-39 mnemonic, BIP-340 signatures, NIP-19 bech32.

Pure functions: no file or clock access. Signing takes the BIP-340 auxiliary randomness as an
argument, so a caller that needs determinism (the simulator) passes it from a seeded source.

Example:
    >>> words = "leader monkey parrot ring guide accident before fence cannon height naive bean"
    >>> key = NostrKey.from_mnemonic(words)
    >>> key.public_hex
    '17162c921dc4d2518f9a101db33695df1afb56ab82f5ff3e5da6eec3ca5cd917'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import coincurve
from mnemonic import Mnemonic

from p2pworld.errors import IdentityError, InvalidSignature

NIP06_PURPOSE = 44
NIP06_COIN = 1237
_WORDLIST = Mnemonic("english")


def nip06_path(account: int = 0) -> str:
    """The NIP-06 derivation path ``m/44'/1237'/<account>'/0/0``."""
    if not 0 <= account < 2**31:
        raise IdentityError("account index out of range", account=account)
    return f"m/{NIP06_PURPOSE}'/{NIP06_COIN}'/{account}'/0/0"


def mnemonic_from_entropy(entropy: bytes) -> str:
    """A BIP-39 English mnemonic for 16 or 32 bytes of entropy (12 or 24 words)."""
    if len(entropy) not in (16, 32):
        raise IdentityError("mnemonic entropy must be 16 or 32 bytes")
    return str(_WORDLIST.to_mnemonic(entropy))


def check_mnemonic(words: str) -> str:
    """Normalise and validate a mnemonic (word list and checksum); returns the normal form."""
    normal = " ".join(words.strip().lower().split())
    if not _WORDLIST.check(normal):
        raise IdentityError("not a valid BIP-39 English mnemonic (word or checksum error)")
    return normal


def derive_private_key(words: str, *, passphrase: str = "", account: int = 0) -> bytes:
    """NIP-06: BIP-39 seed, then BIP-32 secp256k1 along :func:`nip06_path`."""
    # bip_utils is imported lazily: it loads every coin's tables (~0.5 s).
    from bip_utils import Bip32Secp256k1, Bip39SeedGenerator

    normal = check_mnemonic(words)
    seed = Bip39SeedGenerator(normal).Generate(passphrase)
    node = Bip32Secp256k1.FromSeed(seed).DerivePath(nip06_path(account))
    return bytes(node.PrivateKey().Raw().ToBytes())


def bech32_encode(hrp: str, data: bytes) -> str:
    from bip_utils import Bech32Encoder

    return str(Bech32Encoder.Encode(hrp, data))


def schnorr_verify(pubkey_xonly: bytes, message32: bytes, signature: bytes) -> bool:
    """BIP-340 verification; False (never an exception) for any malformed input."""
    if len(pubkey_xonly) != 32 or len(signature) != 64 or len(message32) != 32:
        return False
    try:
        return bool(coincurve.PublicKeyXOnly(pubkey_xonly).verify(signature, message32))
    except (ValueError, TypeError):
        return False


def require_schnorr(pubkey_xonly: bytes, message32: bytes, signature: bytes) -> None:
    if not schnorr_verify(pubkey_xonly, message32, signature):
        raise InvalidSignature("BIP-340 signature does not verify")


@dataclass(frozen=True)
class NostrKey:
    """A secp256k1 key pair used for Nostr (BIP-340 x-only public key)."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise IdentityError("Nostr secret key must be 32 bytes")
        try:
            coincurve.PrivateKey(self.secret)
        except ValueError:
            raise IdentityError("Nostr secret key is out of range") from None

    @classmethod
    def from_mnemonic(cls, words: str, *, passphrase: str = "", account: int = 0) -> NostrKey:
        return cls(derive_private_key(words, passphrase=passphrase, account=account))

    @property
    def public(self) -> bytes:
        """32-byte x-only public key."""
        return bytes(coincurve.PrivateKey(self.secret).public_key_xonly.format())

    @property
    def public_hex(self) -> str:
        return self.public.hex()

    @property
    def npub(self) -> str:
        return bech32_encode("npub", self.public)

    @property
    def nsec(self) -> str:
        return bech32_encode("nsec", self.secret)

    def sign_schnorr(self, message32: bytes, aux: bytes) -> bytes:
        """BIP-340 signature of a 32-byte message with explicit 32-byte aux randomness."""
        if len(message32) != 32 or len(aux) != 32:
            raise IdentityError("BIP-340 signs 32-byte messages with 32 bytes of aux randomness")
        return bytes(coincurve.PrivateKey(self.secret).sign_schnorr(message32, aux))


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
