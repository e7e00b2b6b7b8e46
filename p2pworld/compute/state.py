"""Compute coordination as a fold over a channel log (pure).

Every node that needs compute keeps its requests on its own ``compute`` channel, which its
node sequences, so **one writer decides each assignment**: offers, acceptances and results
from providers are submissions to that channel, and the sequencer validates each one against
the fold below *before* appending it (:func:`validate`). Anything that would break the rules
— an offer or acceptance for a request already assigned to someone else, a second acceptance,
a result from a non-assignee — is refused with an explicit ``Conflict`` naming the assignee,
so the log only ever holds valid transitions and every replica folds to the same state.

Events (canonical CBOR maps in entry payloads, ``op`` first):

==============  ==========  ===========================================================
``request``     requester   ``rid, kind, job, policy, class, price, sla_ms, needs,
                            expires``
``offer``       provider    ``rid, price, sla_ms``
``assign``      requester   ``rid, provider (node id), attempt``
``accept``      assignee    ``rid, attempt``
``reject``      assignee    ``rid, attempt, reason``
``lapse``       requester   ``rid, attempt, reason`` (``accept_timeout``, ``assignee_stale``)
``paid``        requester   ``rid``  (policy ``paid``: after acceptance)
``progress``    assignee    ``rid``  (``processing``)
``result``      assignee    ``rid, status (success / error / partial), data``
``cancel``      requester   ``rid``
``expire``      requester   ``rid``
==============  ==========  ===========================================================

Lifecycle: ``requested → offered → assigned → accepted → (payment-required →) processing →
success | error | partial``, plus ``cancelled`` and ``expired``. A rejection or lapse moves to
the next offer (at most :data:`MAX_ATTEMPTS` assignments); an assignee that goes stale after
accepting lapses the assignment once and the request reopens.

Example:
    >>> st = ComputeState(requester=b"R" * 32)
    >>> st.apply(b"R" * 32, {"op": "request", "rid": "r1", "kind": "5001", "job": b"x",
    ...                      "policy": "first", "price": 0, "sla_ms": 0, "needs": [],
    ...                      "expires": 10**12})
    >>> st.apply(b"P" * 32, {"op": "offer", "rid": "r1", "price": 5, "sla_ms": 100})
    >>> st.apply(b"R" * 32, {"op": "assign", "rid": "r1", "provider": b"P" * 32, "attempt": 1})
    >>> st.apply(b"Q" * 32, {"op": "accept", "rid": "r1", "attempt": 1})
    Traceback (most recent call last):
    ...
    p2pworld.errors.Conflict: request r1 is assigned to 5050505050505050
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import Conflict, DecodeError, P2PWorldError, Unauthorized

MAX_ATTEMPTS = 3
REQUESTER_OPS = frozenset({"request", "assign", "lapse", "paid", "cancel", "expire"})
"""Events only the requester writes (scope ``compute:request``); the rest are the
providers' (``compute:provide``)."""
MAX_JOB_BYTES = 256 * 1024
TERMINAL = ("success", "error", "partial", "cancelled", "expired")
POLICIES = ("first", "lowest_price", "best_sla")

NIP90_STATUS = {
    "requested": None, "offered": None, "assigned": None,
    "accepted": "processing", "payment-required": "payment-required",
    "processing": "processing", "success": "success", "error": "error",
    "partial": "partial", "cancelled": "error", "expired": "error",
}
"""Phase -> NIP-90 job feedback status (kind 7000 ``status`` tag), where one applies."""


@dataclass
class Offer:
    provider: bytes
    price: int
    sla_ms: int
    order: int


@dataclass
class Request:
    """One request as the log says it stands."""

    rid: str
    kind: str
    job: bytes
    policy: str
    price: int
    sla_ms: int
    needs: tuple[str, ...]
    expires_ms: int
    policy_class: str = "free"
    """``free``, or ``paid``: an accepted job waits for the requester's ``paid`` event."""
    phase: str = "requested"
    offers: list[Offer] = field(default_factory=list)
    tried: list[bytes] = field(default_factory=list)
    assignee: bytes | None = None
    attempt: int = 0
    accepted_by: bytes | None = None
    reopened: bool = False
    result: bytes = b""
    reason: str = ""
    history: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    @property
    def open(self) -> bool:
        return self.phase in ("requested", "offered")

    def next_offer(self, live: Callable[[bytes], bool] | None = None) -> Offer | None:
        """The next provider to assign, by the request's selection policy; with ``live``,
        only among providers it accepts (whose presence is live)."""
        left = [o for o in self.offers if o.provider not in self.tried
                and (live is None or live(o.provider))]
        if not left:
            return None
        if self.policy == "lowest_price":
            return min(left, key=lambda o: (o.price, o.order))
        if self.policy == "best_sla":
            return min(left, key=lambda o: (o.sla_ms, o.order))
        return min(left, key=lambda o: o.order)


def _str(m: dict[str, Value], k: str, limit: int = 128) -> str:
    return codec.str_field(m, k, "compute event", max_len=limit)


def _int(m: dict[str, Value], k: str) -> int:
    return codec.int_field(m, k, "compute event", hi=1 << 62)


@dataclass
class ComputeState:
    """The fold of one requester's compute channel."""

    requester: bytes
    """The requester's node id (the only one who may request, assign, lapse, cancel)."""
    requests: dict[str, Request] = field(default_factory=dict)
    folded: int = 0
    """The channel seq folded up to (set by the caller that feeds entries)."""

    def apply(self, sender: bytes, ev: dict[str, Value]) -> None:
        """Apply one event sent by ``sender`` (a node id), or raise and change nothing:
        ``Conflict`` (the request is someone else's now, or already decided),
        ``Unauthorized`` (the wrong party), ``DecodeError`` (malformed)."""
        op = _str(ev, "op", 16)
        rid = _str(ev, "rid")
        own = sender == self.requester
        if op == "request":
            if not own:
                raise Unauthorized("only the channel's node requests compute on it")
            if rid in self.requests:
                raise Conflict(f"request {rid} exists")
            job = codec.bytes_field(ev, "job", "compute event")
            needs = codec.field(ev, "needs", list, "compute event")
            policy = _str(ev, "policy", 16)
            cls = _str(ev, "class", 16) if "class" in ev else "free"
            if len(job) > MAX_JOB_BYTES or policy not in POLICIES or len(needs) > 32 or \
                    cls not in ("free", "paid") or \
                    not all(isinstance(x, str) and len(x) <= 128 for x in needs):
                raise DecodeError("compute request: bad job, policy, class or needs")
            self.requests[rid] = Request(
                rid=rid, kind=_str(ev, "kind", 16), job=job, policy=policy,
                price=_int(ev, "price"), sla_ms=_int(ev, "sla_ms"), needs=tuple(needs),
                expires_ms=_int(ev, "expires"), policy_class=cls)
            return
        r = self.requests.get(rid)
        if r is None:
            raise Conflict(f"no request {rid}")
        if r.terminal:
            raise Conflict(f"request {rid} is {r.phase}")
        if op == "offer":
            if own:
                raise Unauthorized("a requester does not offer on its own request")
            if not r.open:
                raise self._taken(r)
            if any(o.provider == sender for o in r.offers):
                raise Conflict(f"{sender.hex()[:16]} already offered on {rid}")
            if sender in r.tried:
                # Its assignment lapsed (it went stale, or missed the accept window) and its
                # offer went with it: offering again says it is back, and may be assigned
                # again (within MAX_ATTEMPTS).
                r.tried.remove(sender)
            r.offers.append(Offer(sender, _int(ev, "price"), _int(ev, "sla_ms"),
                                  len(r.offers)))
            r.phase = "offered"
        elif op == "assign":
            if not own:
                raise Unauthorized("only the requester assigns")
            provider = codec.bytes_field(ev, "provider", "compute event", size=32)
            if not r.open or _int(ev, "attempt") != r.attempt + 1:
                raise self._taken(r)
            if r.attempt >= MAX_ATTEMPTS:
                raise Conflict(f"request {rid} used its {MAX_ATTEMPTS} attempts")
            if not any(o.provider == provider for o in r.offers) or provider in r.tried:
                raise Conflict(f"{provider.hex()[:16]} has no open offer on {rid}")
            r.assignee, r.attempt, r.phase = provider, r.attempt + 1, "assigned"
            r.tried.append(provider)
        elif op in ("accept", "reject"):
            if r.assignee != sender or r.phase != "assigned" or \
                    _int(ev, "attempt") != r.attempt:
                raise self._taken(r)
            if op == "accept":
                r.accepted_by = sender
                r.phase = "payment-required" if r.policy_class == "paid" else "accepted"
            else:
                r.reason = _str(ev, "reason", 256)
                self._reopen(r)
        elif op == "lapse":
            if not own:
                raise Unauthorized("only the requester lapses an assignment")
            if r.assignee is None or _int(ev, "attempt") != r.attempt:
                raise Conflict(f"request {rid} has no such assignment")
            reason = _str(ev, "reason", 64)
            if r.phase in ("accepted", "payment-required", "processing"):
                if r.reopened or reason != "assignee_stale":
                    raise Conflict(f"request {rid} was accepted; it reopens only once")
                r.reopened = True
            r.reason = reason
            lapsed = r.assignee
            r.offers = [o for o in r.offers if o.provider != lapsed]  # it may offer anew
            self._reopen(r)
        elif op == "paid":
            if not own or r.phase != "payment-required":
                raise Conflict(f"request {rid} is {r.phase}")
            r.phase = "accepted"
        elif op == "progress":
            if r.accepted_by != sender or r.phase not in ("accepted", "processing"):
                raise self._taken(r)
            r.phase = "processing"
        elif op == "result":
            if r.accepted_by != sender or r.phase not in ("accepted", "processing"):
                raise self._taken(r)
            status = _str(ev, "status", 16)
            if status not in ("success", "error", "partial"):
                raise DecodeError("compute result: unknown status")
            data = codec.bytes_field(ev, "data", "compute event")
            if len(data) > MAX_JOB_BYTES:
                raise DecodeError("compute result too large")
            r.phase, r.result = status, data
        elif op in ("cancel", "expire"):
            if not own:
                raise Unauthorized("only the requester cancels or expires")
            r.phase = "cancelled" if op == "cancel" else "expired"
        else:
            raise DecodeError(f"unknown compute op {op!r}")
        r.history.append((op, sender))

    def _reopen(self, r: Request) -> None:
        r.assignee, r.accepted_by = None, None
        r.phase = "offered" if r.next_offer() is not None else "requested"

    def _taken(self, r: Request) -> Conflict:
        who = r.accepted_by or r.assignee
        if who is not None:
            return Conflict(f"request {r.rid} is assigned to {who.hex()[:16]}",
                            assignee=who.hex())
        return Conflict(f"request {r.rid} is {r.phase}")

    def fold(self, entries: list[tuple[bytes, bytes]]) -> None:
        """Fold ``(sender node id, payload)`` of entries not yet folded. Entries in the log
        were validated by the sequencer; one that does not apply here (a log written by a
        buggy or hostile sequencer) is skipped identically on every replica."""
        for sender, payload in entries:
            try:
                self.apply(sender, decode_event(payload))
            except P2PWorldError:
                continue


def decode_event(payload: bytes) -> dict[str, Value]:
    m = codec.need_map(codec.decode(payload, max_bytes=MAX_JOB_BYTES + 4096), "compute event")
    return m


def encode_event(op: str, **fields: Any) -> bytes:
    return codec.encode({"op": op, **fields})

