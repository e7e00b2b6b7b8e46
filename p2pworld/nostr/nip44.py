"""NIP-44 v2 encryption (pure): secp256k1 ECDH, HKDF-SHA256, ChaCha20, HMAC-SHA256, padding.

PyNaCl has no raw ChaCha20 (only the AEAD constructions), so the stream cipher comes from
``cryptography``; everything else is the standard library and coincurve. The nonce is always
an argument: callers pass randomness (the simulator passes seeded bytes), so encryption is
deterministic under test. Checked against every valid and invalid case of the official
vectors (``tests/vectors/nip44.vectors.json``).

Example:
    >>> from p2pworld.nostr.keys import NostrKey
    >>> ck = conversation_key(bytes(31) + b"\\x01", NostrKey(bytes(31) + b"\\x02").public)
    >>> payload = encrypt("a", ck, nonce=bytes(31) + b"\\x01")
    >>> decrypt(payload, ck)
    'a'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import coincurve
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from p2pworld.errors import Nip44Error

VERSION = 2
MIN_PLAINTEXT = 1
MAX_PLAINTEXT = 65535
SALT = b"nip44-v2"


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


def conversation_key(secret: bytes, peer_public_xonly: bytes) -> bytes:
    """``HKDF-extract(salt="nip44-v2", IKM = x of secret·P)``; symmetric between the two."""
    try:
        point = coincurve.PublicKey(b"\x02" + peer_public_xonly).multiply(secret)
    except (ValueError, TypeError) as e:
        raise Nip44Error(f"invalid key for NIP-44: {e}") from None
    shared_x = point.format(compressed=True)[1:]
    return _hkdf_extract(SALT, shared_x)


def message_keys(conv_key: bytes, nonce: bytes) -> tuple[bytes, bytes, bytes]:
    """``(chacha key, chacha nonce, hmac key)`` for one message."""
    if len(conv_key) != 32 or len(nonce) != 32:
        raise Nip44Error("conversation key and nonce are 32 bytes")
    k = _hkdf_expand(conv_key, nonce, 76)
    return k[:32], k[32:44], k[44:76]


def padded_len(n: int) -> int:
    """The padded length of an ``n``-byte plaintext (powers of two, then 1/8 chunks)."""
    if n <= 32:
        return 32
    next_power = 1 << ((n - 1).bit_length())
    chunk = 32 if next_power <= 256 else next_power // 8
    return chunk * ((n - 1) // chunk + 1)


def _pad(plaintext: bytes) -> bytes:
    n = len(plaintext)
    if not MIN_PLAINTEXT <= n <= MAX_PLAINTEXT:
        raise Nip44Error("NIP-44 plaintext must be 1..65535 bytes")
    return n.to_bytes(2, "big") + plaintext + bytes(padded_len(n) - n)


def _unpad(padded: bytes) -> bytes:
    n = int.from_bytes(padded[:2], "big")
    body = padded[2:2 + n]
    if n < MIN_PLAINTEXT or len(body) != n or len(padded) != 2 + padded_len(n):
        raise Nip44Error("invalid NIP-44 padding")
    return body


def _chacha(key: bytes, nonce12: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.ChaCha20(key, b"\x00\x00\x00\x00" + nonce12), mode=None).encryptor()
    return enc.update(data) + enc.finalize()


def encrypt(plaintext: str, conv_key: bytes, *, nonce: bytes) -> str:
    """The base64 payload ``version || nonce || ciphertext || mac``."""
    ck, cn, hk = message_keys(conv_key, nonce)
    ct = _chacha(ck, cn, _pad(plaintext.encode("utf-8")))
    mac = hmac.new(hk, nonce + ct, hashlib.sha256).digest()
    return base64.b64encode(bytes([VERSION]) + nonce + ct + mac).decode("ascii")


def decrypt(payload: str, conv_key: bytes) -> str:
    """Verify the MAC (constant time) and decrypt; every failure is :class:`Nip44Error`."""
    if not payload or payload[0] == "#":
        raise Nip44Error("unknown NIP-44 encryption version")
    if not 132 <= len(payload) <= 87472:
        raise Nip44Error("invalid NIP-44 payload size")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise Nip44Error("NIP-44 payload is not base64") from None
    if not 99 <= len(data) <= 65603:
        raise Nip44Error("invalid NIP-44 data size")
    if data[0] != VERSION:
        raise Nip44Error(f"unknown NIP-44 version {data[0]}")
    nonce, ct, mac = data[1:33], data[33:-32], data[-32:]
    ck, cn, hk = message_keys(conv_key, nonce)
    if not hmac.compare_digest(hmac.new(hk, nonce + ct, hashlib.sha256).digest(), mac):
        raise Nip44Error("NIP-44 MAC does not verify")
    try:
        return _unpad(_chacha(ck, cn, ct)).decode("utf-8")
    except UnicodeDecodeError:
        raise Nip44Error("NIP-44 plaintext is not UTF-8") from None


__all__ = ["conversation_key", "message_keys", "padded_len", "encrypt", "decrypt",
           "Nip44Error"]
