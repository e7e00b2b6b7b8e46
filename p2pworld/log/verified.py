"""Signatures a process has already checked: one ed25519 verification each (a pure function of
its key, so the answer is the same for every node in the process that asks)."""

from __future__ import annotations

import hashlib

from p2pworld import codec, identity
from p2pworld.codec import Value


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


class VerifiedSignatures:
    """Single signatures already checked (a writer's lone submission, a sequencer's head), so
    each costs one ed25519 verification however many times a process sees it (every replica
    receives it; a catch-up sends it again). Keyed by the key, the hash of the signed bytes
    and the signature; bounded (emptied when full); failures are remembered too. As with
    the batch signatures of :mod:`p2pworld.log.entry`, verification is a pure function of the
    key, so sharing it across nodes in one process changes no outcome.

    Example:
        >>> from p2pworld.identity import Ed25519Signer
        >>> w = Ed25519Signer(bytes(32))
        >>> HEAD_DOMAIN = "p2pworld/head/v1"
        >>> sig = w.sign(codec.tagged(HEAD_DOMAIN, {"seq": 1}))
        >>> seen = VerifiedSignatures()
        >>> [seen.check(w.public_key, HEAD_DOMAIN, {"seq": n}, sig) for n in (1, 1, 2)]
        [True, True, False]
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self._seen: dict[tuple[bytes, bytes, bytes], bool] = {}

    def check(self, key: bytes, domain: str, body: dict[str, Value], signature: bytes) -> bool:
        message = codec.tagged(domain, body)
        k = (key, _hash(message), signature)
        ok = self._seen.get(k)
        if ok is None:
            ok = identity.verify_raw(key, message, signature)
            if len(self._seen) >= self.LIMIT:
                self._seen = {}  # start over (one rebinding: safe from any thread)
            self._seen[k] = ok
        return ok


VERIFIED_SIGNATURES = VerifiedSignatures()
check = VERIFIED_SIGNATURES.check
"""Whether ``signature`` by ``key`` over ``body`` tagged ``domain`` verifies (memoised)."""
