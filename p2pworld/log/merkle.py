"""Merkle trees over writer submissions: one signature for a batch (``docs/protocol.md`` §5.2).

The tree shape is RFC 9162's (§2.1.1: split at the largest power of two below ``n``); leaves
are submission hashes (already domain-tagged by ``p2pworld/submission/v1``) and an interior
node is ``BLAKE2b-256("p2pworld/merkle-node/v1" || 0x00 || left || right)``, so a leaf can never
be read as a node or the reverse. An inclusion proof is ``(index, size, path)``, checked with
RFC 9162 §2.1.3.2.

Example:
    >>> leaves = [bytes([i]) * 32 for i in range(5)]
    >>> root, paths = tree(leaves)
    >>> root_from_path(leaves[3], 3, 5, paths[3]) == root
    True
    >>> root_from_path(leaves[3], 2, 5, paths[3]) == root
    False
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

NODE_DOMAIN = b"p2pworld/merkle-node/v1\x00"

MAX_LEAVES = 1 << 16
"""Largest batch a proof may claim (a writer signs at most a few hundred at a time)."""


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.blake2b(NODE_DOMAIN + left + right, digest_size=32).digest()


def tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of ``leaves`` and every leaf's audit path (deepest sibling first)."""
    n = len(leaves)
    if n == 0:
        raise ValueError("a Merkle tree needs at least one leaf")
    if n == 1:
        return leaves[0], [[]]
    k = 1 << ((n - 1).bit_length() - 1)
    left, lpaths = tree(leaves[:k])
    right, rpaths = tree(leaves[k:])
    for p in lpaths:
        p.append(right)
    for p in rpaths:
        p.append(left)
    return node(left, right), lpaths + rpaths


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root that ``path`` proves ``leaf`` (at ``index`` of ``size``) under, or None when
    the path cannot belong to a tree of that size (wrong length, index out of range)."""
    if not 0 <= index < size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None
