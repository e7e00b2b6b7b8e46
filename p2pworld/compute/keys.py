"""The idempotency key of every compute op a node publishes (pure; the runtime and the
simulator both use it).

A key is scoped to its request, its op and the node that publishes it, and, for ``accept``
and ``reject``, to the attempt: retrying an op (after a crash, a lost lane, an indeterminate
outcome) returns the original ``seq``; a provider accepting a later attempt of a request it
once lost is a new op. The requester's duties (assign, lapse, expire) take their keys in
:meth:`~p2pworld.compute.core.ComputeCore.drive`.

Example:
    >>> op_key("r1", "offer", by=bytes(32))
    b'r1/offer/0000000000000000'
    >>> op_key("r1", "accept", by=bytes.fromhex("ab" * 32), attempt=2)
    b'r1/accept/2/abababababababab'
"""

from __future__ import annotations

PER_ATTEMPT = frozenset({"accept", "reject"})


def op_key(rid: str, op: str, *, by: bytes, attempt: int = 0) -> bytes:
    """The key of ``op`` on request ``rid`` published by the node ``by`` (its node id)."""
    part = f"{op}/{attempt}" if op in PER_ATTEMPT else op
    return f"{rid}/{part}/{by.hex()[:16]}".encode()
