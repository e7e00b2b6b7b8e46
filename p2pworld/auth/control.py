"""The control service core: enrolment, minting, revocation, signing keys, policy (pure).

The control service is the one authority for identity and policy (ADR 0001): it binds a node
key to a Nostr key and a user/device, and mints short-lived scoped tokens. The HTTP shell
(:mod:`p2pworld.io.http`) feeds requests into :meth:`ControlCore.handle`; state is a plain
value (:class:`ControlState`) the shell persists.

Endpoints (JSON bodies; byte strings as lowercase hex):

=======================  ==========  =====================================================
``GET /v1/keys``         public      signing keys ``[{kid, public_key}]`` and ``current``
``GET /v1/policy``       public      the transport policy document, signed
``GET /v1/revocations``  public      revoked token ids and node ids, signed, with ``at``
``POST /v1/enroll``      operator    ``{user, device, node_key, nostr, scopes}``
``POST /v1/token``       node        ``{node_key, at, sig}``: proof of possession
                                     (``sig`` over ``tagged("p2pworld/token-request/v1",
                                     {node, at})``); or operator: ``{node_key}``
``POST /v1/revoke``      operator    ``{jti}`` (a token id) or ``{node}`` (a node id)
``POST /v1/rotate``      operator    publish a new key id at once and sign with it one token
                                     lifetime later (nodes fetch keys at every refresh, so
                                     all know it before it is used); the old key stays
                                     published until its last token has expired
=======================  ==========  =====================================================

*Operator* endpoints need ``Authorization: Bearer <operator credential>``; the service keeps
only the credential's BLAKE2b-256 hash. How an operator enrols a user's device: run
``p2pworld id`` on the device to get its node key and Nostr key, then ``POST /v1/enroll`` with
the user, device, both keys and the scopes; the device's node then mints its own tokens with
``POST /v1/token``, proving possession of its node key. No token is ever minted for a node
the operator did not enrol (except in ``open_enrollment`` mode, which the zero-infrastructure
demo uses on loopback, and says so).

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> st = ControlState.create(org="acme", operator_secret=b"s" * 32, key=bytes([7]) * 32)
    >>> core = ControlCore(st)
    >>> node = Ed25519Signer(bytes([1]) * 32)
    >>> status, _ = core.handle("POST", "/v1/enroll", bearer=(b"s" * 32).hex(), body={
    ...     "user": "ana", "device": "laptop", "node_key": node.public_key.hex(),
    ...     "nostr": "00" * 32, "scopes": ["world:join"]}, now=1000, jti=bytes(16))
    >>> status, out = core.handle("POST", "/v1/token", bearer=None,
    ...                           body=token_request(node, at=1000), now=1000, jti=bytes(16))
    >>> status, sorted(out)
    (200, ['expires_at', 'token'])
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field, replace
from typing import Any

from p2pworld import codec
from p2pworld.auth.book import DEFAULT_SCOPES
from p2pworld.auth.token import Claims, mint
from p2pworld.errors import DecodeError, P2PWorldError, Unauthorized, error_from_code
from p2pworld.identity import Ed25519Signer, Signer, blake2b256, node_id, verify

TOKEN_REQUEST_DOMAIN = "p2pworld/token-request/v1"
POLICY_DOMAIN = "p2pworld/policy/v1"
REVOCATIONS_DOMAIN = "p2pworld/revocations/v1"
MAX_REQUEST_SKEW = 120
OPERATOR_FAILURES = 5
OPERATOR_WINDOW_S = 60
OPERATOR_LOCKOUT_S = 60
"""A source that presents a wrong operator credential OPERATOR_FAILURES times within
OPERATOR_WINDOW_S seconds is refused operator calls (429) for OPERATOR_LOCKOUT_S seconds,
doubling with every lockout (at most an hour); other sources are not affected."""
MAX_SOURCES = 4096


def refusal_text(e: Exception) -> str:
    """What a refused request is told, in words (not the interpreter's ``repr`` of a key).

    Example:
        >>> refusal_text(KeyError("node_key")), refusal_text(TypeError("x"))
        ("missing field 'node_key'", 'a field has the wrong type: x')
    """
    if isinstance(e, P2PWorldError):
        text = e.message
    elif isinstance(e, KeyError):
        text = f"missing field {str(e.args[0])[:64]!r}" if e.args else "missing field"
    elif isinstance(e, TypeError):
        text = f"a field has the wrong type: {e}"
    else:
        text = f"a field has a bad value: {e}"
    return text[:200]


@dataclass
class OperatorThrottle:
    """Failed operator credentials by source (pure: the caller passes ``now``).

    Example:
        >>> t = OperatorThrottle()
        >>> for _ in range(5):
        ...     t.failed("10.0.0.9", now=100)
        >>> t.locked("10.0.0.9", now=101), t.locked("10.0.0.8", now=101)
        (59, 0)
    """

    failures: dict[str, list[int]] = field(default_factory=dict)
    until: dict[str, int] = field(default_factory=dict)
    lockouts: dict[str, int] = field(default_factory=dict)

    def locked(self, source: str, *, now: int) -> int:
        """Seconds ``source`` is still refused (0: not locked)."""
        return max(0, self.until.get(source, 0) - now)

    def failed(self, source: str, *, now: int) -> None:
        if len(self.failures) >= MAX_SOURCES and source not in self.failures:
            self.failures.pop(next(iter(self.failures)))  # the oldest source
        recent = [t for t in self.failures.get(source, []) if now - t < OPERATOR_WINDOW_S]
        recent.append(now)
        self.failures[source] = recent
        if len(recent) >= OPERATOR_FAILURES:
            n = self.lockouts.get(source, 0)
            self.lockouts[source] = n + 1
            if len(self.lockouts) > MAX_SOURCES:
                self.lockouts.pop(next(iter(self.lockouts)))
            self.until[source] = now + min(3600, OPERATOR_LOCKOUT_S << n)
            if len(self.until) > MAX_SOURCES:
                self.until.pop(next(iter(self.until)))
            self.failures[source] = []

DEFAULT_POLICY: dict[str, Any] = {
    "primary": "direct",
    "fallback": ["rendezvous", "nostr"],
    "nostr_fallback_channels": "per-channel-policy",
    "refresh_before_expiry_s": 120,
    "revocation_poll_s": 30,
}


@dataclass(frozen=True, kw_only=True)
class Enrollment:
    user: str
    device: str
    node_key: bytes
    nostr_pubkey: bytes
    scopes: tuple[str, ...]

    def to_value(self) -> dict[str, Any]:
        return {"user": self.user, "device": self.device, "node": self.node_key,
                "nostr": self.nostr_pubkey, "scopes": list(self.scopes)}

    @classmethod
    def from_value(cls, v: Any) -> Enrollment:
        m = codec.need_map(v, "enrollment")
        return cls(user=codec.str_field(m, "user", "enrollment"),
                   device=codec.str_field(m, "device", "enrollment"),
                   node_key=codec.bytes_field(m, "node", "enrollment", size=32),
                   nostr_pubkey=codec.bytes_field(m, "nostr", "enrollment", size=32),
                   scopes=tuple(codec.field(m, "scopes", list, "enrollment")))


@dataclass(frozen=True, kw_only=True)
class ControlState:
    """Everything the control service remembers (persisted by the shell as one frame)."""

    org: str
    operator_hash: bytes
    keys: dict[str, bytes]
    """key id -> ed25519 seed (private: stays in the service's home)."""
    current: str
    retired: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    """key id -> unix time from which it signs (published before it is used)."""
    """key id -> unix time after which no token it signed is valid (it can be unpublished)."""
    enrolled: dict[bytes, Enrollment] = field(default_factory=dict)
    revoked_tokens: frozenset[bytes] = frozenset()
    revoked_nodes: frozenset[bytes] = frozenset()
    ttl_s: int = 900
    open_enrollment: bool = False
    policy: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_POLICY))

    @classmethod
    def create(cls, *, org: str, operator_secret: bytes, key: bytes, ttl_s: int = 900,
               open_enrollment: bool = False) -> ControlState:
        return cls(org=org, operator_hash=blake2b256(operator_secret), keys={"k1": key},
                   current="k1", ttl_s=ttl_s, open_enrollment=open_enrollment)

    def public_keys(self) -> dict[str, bytes]:
        return {kid: Ed25519Signer(seed).public_key for kid, seed in sorted(self.keys.items())}

    def encode(self) -> bytes:
        return codec.encode_frame({
            "org": self.org, "op": self.operator_hash,
            "keys": [[k, v] for k, v in sorted(self.keys.items())], "current": self.current,
            "retired": [[k, v] for k, v in sorted(self.retired.items())],
            "pending": [[k, v] for k, v in sorted(self.pending.items())],
            "enrolled": [e.to_value() for _, e in sorted(self.enrolled.items())],
            "rt": sorted(self.revoked_tokens), "rn": sorted(self.revoked_nodes),
            "ttl": self.ttl_s, "open": self.open_enrollment, "policy": codec.encode(
                self.policy)})

    @classmethod
    def decode(cls, raw: bytes) -> ControlState:
        m = codec.need_map(codec.decode_frame(raw, max_bytes=16 << 20, max_items=1 << 20),
                           "control state")
        enrolled = [Enrollment.from_value(e) for e in m["enrolled"]]
        return cls(org=m["org"], operator_hash=m["op"], keys={k: v for k, v in m["keys"]},
                   current=m["current"], retired={k: v for k, v in m["retired"]},
                   pending={k: v for k, v in m.get("pending", [])},
                   enrolled={e.node_key: e for e in enrolled},
                   revoked_tokens=frozenset(m["rt"]), revoked_nodes=frozenset(m["rn"]),
                   ttl_s=m["ttl"], open_enrollment=m["open"],
                   policy=codec.decode(m["policy"]))


def token_request(node: Signer, *, at: int, nostr: bytes | None = None) -> dict[str, Any]:
    """A node's signed request for its own token (proof of possession of its key). ``nostr``
    is only used by ``open_enrollment``; an enrolled node's Nostr key comes from enrolment."""
    sig = node.sign(codec.tagged(TOKEN_REQUEST_DOMAIN, {"node": node.public_key, "at": at}))
    out = {"node_key": node.public_key.hex(), "at": at, "sig": sig.hex()}
    if nostr is not None:
        out["nostr"] = nostr.hex()
    return out


def published_keys(status: int, doc: Any) -> dict[str, bytes] | None:
    """The signing keys from a ``GET /v1/keys`` answer (None: not answered with 200).
    Raises :class:`~p2pworld.errors.Unauthorized` on a malformed list.

    Example:
        >>> published_keys(200, {"keys": [{"kid": "k1", "public_key": "41"}]})
        {'k1': b'A'}
        >>> published_keys(503, {}) is None
        True
    """
    if status != 200:
        return None
    try:
        return {str(k["kid"]): bytes.fromhex(k["public_key"]) for k in doc["keys"]}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise Unauthorized("control service published malformed keys") from None


def minted_token(status: int, out: Any) -> tuple[bytes, float]:
    """The token and its expiry from a ``POST /v1/token`` answer. Raises the error the
    service named (:func:`~p2pworld.errors.error_from_code`; ``Unauthorized`` by default) or
    ``Unauthorized`` on a malformed answer.

    Example:
        >>> minted_token(200, {"token": "4142", "expires_at": 60})
        (b'AB', 60.0)
        >>> minted_token(403, {"error": "REVOKED"})
        Traceback (most recent call last):
        ...
        p2pworld.errors.Revoked: control service refused a token (403)
    """
    if status != 200 or not isinstance(out, dict) or "token" not in out:
        err = out.get("error", "UNAUTHORIZED") if isinstance(out, dict) else "UNAUTHORIZED"
        raise error_from_code(str(err) or "UNAUTHORIZED",
                              f"control service refused a token ({status})")
    try:
        return bytes.fromhex(out["token"]), float(out.get("expires_at", 0))
    except (TypeError, ValueError):
        raise Unauthorized("control service answered a malformed token") from None


class ControlCore:
    """Request handling over a :class:`ControlState` (``state`` is replaced on changes;
    ``changed`` tells the shell to persist it)."""

    def __init__(self, state: ControlState) -> None:
        self.state = state
        self.changed = False
        self.minted = 0
        self.refused: dict[str, int] = {}
        self.throttle = OperatorThrottle()

    def signer(self) -> Signer:
        return Ed25519Signer(self.state.keys[self.state.current])

    def handle(self, method: str, path: str, *, bearer: str | None, body: Any, now: int,
               jti: bytes, new_key: bytes | None = None, source: str = ""
               ) -> tuple[int, dict[str, Any]]:
        """One request; returns ``(HTTP status, JSON body)``. Never raises for bad input.
        ``source`` (the client's address) is what wrong operator credentials are throttled
        by."""
        if bearer:
            wait = self.throttle.locked(source, now=now)
            if wait:
                self.refused["TOO_MANY_ATTEMPTS"] = self.refused.get("TOO_MANY_ATTEMPTS", 0) + 1
                return 429, {"error": "TOO_MANY_ATTEMPTS", "retry_after": wait,
                             "message": "too many wrong operator credentials from here"}
            if not self._operator(bearer):
                self.throttle.failed(source, now=now)
        try:
            return self._handle(method, path, bearer, body, now, jti, new_key)
        except (P2PWorldError, KeyError, ValueError, TypeError) as e:
            code = getattr(e, "code", "BAD_REQUEST")
            self.refused[code] = self.refused.get(code, 0) + 1
            return 400, {"error": code, "message": refusal_text(e)}

    def _operator(self, bearer: str | None) -> bool:
        if not bearer:
            return False
        try:
            return hmac.compare_digest(blake2b256(bytes.fromhex(bearer)),
                                       self.state.operator_hash)
        except ValueError:
            return False

    def _handle(self, method: str, path: str, bearer: str | None, body: Any, now: int,
                jti: bytes, new_key: bytes | None) -> tuple[int, dict[str, Any]]:
        due = sorted((t, k) for k, t in self.state.pending.items() if t <= now)
        if due:
            _, kid = due[-1]
            old = self.state
            self._set(replace(old, current=kid,
                              pending={k: t for k, t in old.pending.items() if t > now},
                              retired={**old.retired, old.current: now + old.ttl_s + 60}))
        st = self.state
        if method == "GET" and path == "/v1/keys":
            live = {k: v for k, v in st.public_keys().items()
                    if k not in st.retired or st.retired[k] > now}
            return 200, {"keys": [{"kid": k, "public_key": v.hex()} for k, v in live.items()],
                         "current": st.current}
        if method == "GET" and path == "/v1/policy":
            return 200, self._signed(POLICY_DOMAIN, {"policy": codec.encode(st.policy)},
                                     {"policy": st.policy})
        if method == "GET" and path == "/v1/revocations":
            toks, nodes = sorted(st.revoked_tokens), sorted(st.revoked_nodes)
            value = {"tokens": toks, "nodes": nodes, "at": now}
            return 200, self._signed(REVOCATIONS_DOMAIN, value, {
                "tokens": [t.hex() for t in toks], "nodes": [n.hex() for n in nodes],
                "at": now})
        if method != "POST":
            return 404, {"error": "NOT_FOUND"}
        if not isinstance(body, dict):
            raise DecodeError("body must be a JSON object")
        op = self._operator(bearer)
        if path == "/v1/token":
            key = bytes.fromhex(body["node_key"])
            if not op:
                at = int(body["at"])
                sig = bytes.fromhex(body["sig"])
                if abs(at - now) > MAX_REQUEST_SKEW or not verify(
                        key, TOKEN_REQUEST_DOMAIN, {"node": key, "at": at}, sig):
                    return 401, {"error": "UNAUTHORIZED", "message": "bad proof of possession"}
            enr = st.enrolled.get(key)
            if enr is None and st.open_enrollment and not op:
                nostr = bytes.fromhex(body.get("nostr", "00" * 32))
                enr = Enrollment(user="demo", device=node_id(key).hex()[:8], node_key=key,
                                 nostr_pubkey=nostr, scopes=DEFAULT_SCOPES)
            if enr is None:
                return 403, {"error": "UNAUTHORIZED", "message": "node not enrolled"}
            if node_id(key) in st.revoked_nodes:
                return 403, {"error": "REVOKED", "message": "node revoked"}
            claims = Claims(org=st.org, user=enr.user, device=enr.device,
                            session=jti.hex(), node_key=key, nostr_pubkey=enr.nostr_pubkey,
                            scopes=enr.scopes, issued_at=now, expires_at=now + st.ttl_s,
                            token_id=jti)
            self.minted += 1
            return 200, {"token": mint(claims, self.signer(), kid=st.current).hex(),
                         "expires_at": now + st.ttl_s}
        if not op:
            return 401, {"error": "UNAUTHORIZED", "message": "operator credential required"}
        if path == "/v1/enroll":
            scopes = tuple(body.get("scopes", DEFAULT_SCOPES))
            if not all(isinstance(s, str) and 0 < len(s) <= 128 for s in scopes) or \
                    len(scopes) > 64:
                raise DecodeError("scopes must be <= 64 short strings")
            e = Enrollment(user=str(body["user"])[:128], device=str(body["device"])[:128],
                           node_key=_b32(body["node_key"]), nostr_pubkey=_b32(body["nostr"]),
                           scopes=scopes)
            self._set(replace(st, enrolled={**st.enrolled, e.node_key: e}))
            return 200, {"enrolled": node_id(e.node_key).hex()}
        if path == "/v1/revoke":
            if "jti" in body:
                self._set(replace(st, revoked_tokens=st.revoked_tokens | {
                    bytes.fromhex(body["jti"])}))
            elif "node" in body:
                self._set(replace(st, revoked_nodes=st.revoked_nodes | {
                    bytes.fromhex(body["node"])}))
            else:
                raise DecodeError("revoke needs jti or node")
            return 200, {"revoked": True}
        if path == "/v1/rotate":
            if new_key is None:
                raise DecodeError("no key material")
            kid = f"k{len(st.keys) + 1}"
            self._set(replace(st, keys={**st.keys, kid: new_key},
                              pending={**st.pending, kid: now + st.ttl_s}))
            return 200, {"next": kid, "signs_from": now + st.ttl_s, "current": st.current}
        return 404, {"error": "NOT_FOUND"}

    def _set(self, st: ControlState) -> None:
        self.state, self.changed = st, True

    def _signed(self, domain: str, value: dict[str, Any], shown: dict[str, Any]
                ) -> dict[str, Any]:
        sig = self.signer().sign(codec.tagged(domain, value))
        return {**shown, "kid": self.state.current, "sig": sig.hex()}


def _b32(h: Any) -> bytes:
    b = bytes.fromhex(str(h))
    if len(b) != 32:
        raise DecodeError("keys are 32 bytes")
    return b


def verify_revocations(doc: dict[str, Any], keys: dict[str, bytes]
                       ) -> tuple[frozenset[bytes], frozenset[bytes]]:
    """Check a ``/v1/revocations`` document against the service's published keys."""
    tokens = [bytes.fromhex(t) for t in doc["tokens"]]
    nodes = [bytes.fromhex(n) for n in doc["nodes"]]
    value = {"tokens": sorted(tokens), "nodes": sorted(nodes), "at": int(doc["at"])}
    key = keys.get(str(doc["kid"]))
    if key is None or not verify(key, REVOCATIONS_DOMAIN, value, bytes.fromhex(doc["sig"])):
        raise DecodeError("revocation list signature does not verify")
    return frozenset(tokens), frozenset(nodes)


def published_revocations(status: int, doc: Any, keys: dict[str, bytes]
                          ) -> tuple[frozenset[bytes], frozenset[bytes]] | None:
    """The revoked tokens and nodes from a ``GET /v1/revocations`` answer (None: not
    answered with 200). Raises :class:`~p2pworld.errors.DecodeError` on a malformed or
    unsigned list.

    Example:
        >>> published_revocations(503, {}, {}) is None
        True
        >>> published_revocations(200, {"nodes": []}, {})
        Traceback (most recent call last):
        ...
        p2pworld.errors.DecodeError: malformed revocation list: KeyError
    """
    if status != 200:
        return None
    try:
        return verify_revocations(doc, keys)
    except (KeyError, TypeError, ValueError) as e:
        raise DecodeError(f"malformed revocation list: {type(e).__name__}") from None


def verify_policy(doc: dict[str, Any], keys: dict[str, bytes]) -> dict[str, Any]:
    """Check a ``/v1/policy`` document against the service's published keys; returns the
    policy. Raises :class:`~p2pworld.errors.DecodeError` if it does not verify."""
    try:
        policy = doc["policy"]
        key = keys.get(str(doc["kid"]))
        sig = bytes.fromhex(doc["sig"])
        ok = isinstance(policy, dict) and key is not None and verify(
            key, POLICY_DOMAIN, {"policy": codec.encode(policy)}, sig)
    except (KeyError, TypeError, ValueError, P2PWorldError):
        ok = False
    if not ok:
        raise DecodeError("policy document signature does not verify")
    return dict(policy)
