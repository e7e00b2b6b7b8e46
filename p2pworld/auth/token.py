"""Tokens: signed, short-lived claims binding a node key, a Nostr key and a user/device.

A token is ``frame {claims, kid, sig}``; ``sig`` is the control service's ed25519 signature
under key ``kid`` over ``tagged("p2pworld/token/v1", claims)``. Claims (all required)::

    org, user, device, session: text      node: ed25519 key (32)   nostr: x-only key (32)
    scopes: [text]   iat, exp: int (unix seconds)   jti: bytes (16)

Validity is judged on the *validating* node's clock with a leeway (30 s by default): a token
is accepted from ``iat - leeway`` to ``exp + leeway``. Scopes are exact strings or end in
``*`` (``channel:publish:*`` covers ``channel:publish:<id>``).

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> control = Ed25519Signer(bytes([9]) * 32)
    >>> claims = Claims(org="o", user="u", device="d", session="s", node_key=bytes(32),
    ...                 nostr_pubkey=bytes(32), scopes=("channel:publish:*",), issued_at=100,
    ...                 expires_at=400, token_id=bytes(16))
    >>> raw = mint(claims, control, kid="k1")
    >>> ok = verify_token(raw, {"k1": control.public_key}, now=200)
    >>> ok.allows("channel:publish:ab12"), ok.allows("compute:provide")
    (True, False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import (
    DecodeError,
    Revoked,
    ScopeDenied,
    TokenExpired,
    Unauthorized,
    UnsupportedVersion,
)
from p2pworld.identity import Signer, node_id, verify

TOKEN_DOMAIN = "p2pworld/token/v1"
DEFAULT_LEEWAY = 30.0
MAX_TOKEN_BYTES = 4096
MAX_SCOPES = 64


@dataclass(frozen=True, kw_only=True)
class Claims:
    org: str
    user: str
    device: str
    session: str
    node_key: bytes
    nostr_pubkey: bytes
    scopes: tuple[str, ...]
    issued_at: int
    expires_at: int
    token_id: bytes

    def to_wire(self) -> dict[str, Value]:
        return {"org": self.org, "user": self.user, "device": self.device,
                "session": self.session, "node": self.node_key, "nostr": self.nostr_pubkey,
                "scopes": list(self.scopes), "iat": self.issued_at, "exp": self.expires_at,
                "jti": self.token_id}

    @classmethod
    def from_wire(cls, value: Any) -> Claims:
        w = "token claims"
        m = codec.need_map(value, w)
        scopes = codec.field(m, "scopes", list, w)
        if len(scopes) > MAX_SCOPES or not all(isinstance(x, str) and 0 < len(x) <= 128
                                               for x in scopes):
            raise DecodeError("token claims: scopes must be <= 64 short strings")
        return cls(org=codec.str_field(m, "org", w), user=codec.str_field(m, "user", w),
                   device=codec.str_field(m, "device", w),
                   session=codec.str_field(m, "session", w),
                   node_key=codec.bytes_field(m, "node", w, size=32),
                   nostr_pubkey=codec.bytes_field(m, "nostr", w, size=32),
                   scopes=tuple(scopes), issued_at=codec.int_field(m, "iat", w),
                   expires_at=codec.int_field(m, "exp", w),
                   token_id=codec.bytes_field(m, "jti", w, size=16))

    @property
    def node_id(self) -> bytes:
        return node_id(self.node_key)

    def allows(self, scope: str) -> bool:
        """Does any granted scope cover ``scope``?"""
        return any(g == scope or (g.endswith("*") and scope.startswith(g[:-1]))
                   for g in self.scopes)

    def require(self, scope: str) -> None:
        if not self.allows(scope):
            raise ScopeDenied(f"token does not grant {scope!r}", scope=scope)

    def require_binding(self, node_key: bytes, nostr_pubkey: bytes | None = None) -> None:
        """A token acts only for the node whose key it names (and its Nostr key)."""
        if node_key != self.node_key:
            raise Unauthorized("token names another node key")
        if nostr_pubkey is not None and nostr_pubkey != self.nostr_pubkey:
            raise Unauthorized("node attestation disagrees with the token's Nostr key")


def mint(claims: Claims, control: Signer, *, kid: str) -> bytes:
    """The control service's side: sign claims under key ``kid``."""
    sig = control.sign(codec.tagged(TOKEN_DOMAIN, claims.to_wire()))
    return codec.encode_frame({"claims": claims.to_wire(), "kid": kid, "sig": sig})


def verify_token(raw: bytes, keys: dict[str, bytes], *, now: float,
                 leeway: float = DEFAULT_LEEWAY, revoked_tokens: frozenset[bytes] = frozenset(),
                 revoked_nodes: frozenset[bytes] = frozenset()) -> Claims:
    """Check a token; every failure is a typed :class:`Unauthorized` and changes nothing.

    Raises:
        Unauthorized: malformed, unknown key id, or a bad signature.
        TokenExpired: outside ``[iat - leeway, exp + leeway]`` on ``now``.
        Revoked: its token id or its node is revoked.
    """
    if not isinstance(raw, bytes) or len(raw) > MAX_TOKEN_BYTES:
        raise Unauthorized("token missing or too large")
    try:
        m = codec.need_map(codec.decode_frame(raw, max_bytes=MAX_TOKEN_BYTES), "token")
        claims = Claims.from_wire(m.get("claims"))
        kid = codec.str_field(m, "kid", "token", max_len=64)
        sig = codec.bytes_field(m, "sig", "token", size=64)
    except (DecodeError, UnsupportedVersion, ValueError) as e:
        raise Unauthorized(f"malformed token: {e}") from None
    key = keys.get(kid)
    if key is None:
        raise Unauthorized(f"unknown signing key {kid!r}")
    if not verify(key, TOKEN_DOMAIN, claims.to_wire(), sig):
        raise Unauthorized("token signature does not verify")
    if claims.expires_at < claims.issued_at:
        raise Unauthorized("token expires before it is issued")
    if now > claims.expires_at + leeway:
        raise TokenExpired("token expired", exp=claims.expires_at)
    if now < claims.issued_at - leeway:
        raise TokenExpired("token not valid yet", iat=claims.issued_at)
    if claims.token_id in revoked_tokens or claims.node_id in revoked_nodes:
        raise Revoked("token or node revoked")
    return claims
