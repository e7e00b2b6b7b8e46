"""What a node knows about tokens, and the one check every mutation goes through (pure).

:class:`TokenBook` holds the control service's signing keys, the latest token seen for each
node key (from session handshakes and from the records nodes sign), and the revocation list.
:meth:`TokenBook.check` is called *before* any mutation is applied — local reducers and every
ingest path (session messages, gossiped world records, relayed submissions) — and raises a
typed :class:`~p2pworld.errors.Unauthorized` (``TokenExpired``, ``ScopeDenied``, ``Revoked``)
that changes nothing. Validity is judged on the validating node's clock with a leeway.

The scope each mutation needs is in :data:`REDUCER_SCOPES` (the seed's twelve reducers) and
:func:`p2pworld.core.routes.message_scope` (each session message type of
:data:`p2pworld.wire.MESSAGE_TYPES`, from the table :data:`p2pworld.core.routes.ROUTES`).

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> from p2pworld.auth.token import Claims, mint
    >>> control, node = Ed25519Signer(bytes([9]) * 32), Ed25519Signer(bytes([1]) * 32)
    >>> raw = mint(Claims(org="o", user="u", device="d", session="s",
    ...                   node_key=node.public_key, nostr_pubkey=bytes(32),
    ...                   scopes=("world:join",), issued_at=0, expires_at=600,
    ...                   token_id=bytes(16)), control, kid="k1")
    >>> book = TokenBook(AuthConfig(keys={"k1": control.public_key}))
    >>> book.learn(raw, now=10).user
    'u'
    >>> book.check(node.public_key, "world:join", now=10).user
    'u'
    >>> book.check(node.public_key, "channel:open", now=10)
    Traceback (most recent call last):
    ...
    p2pworld.errors.ScopeDenied: token does not grant 'channel:open'
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pworld import codec
from p2pworld.auth.token import DEFAULT_LEEWAY, Claims, verify_token
from p2pworld.errors import (
    P2PWorldError,
    Revoked,
    TokenExpired,
    Unauthorized,
)
from p2pworld.identity import node_id

REDUCER_SCOPES: dict[str, str] = {
    "join_world": "world:join",
    "heartbeat": "world:join",
    "advertise_capabilities": "world:advertise",
    "open_channel": "channel:open",
    "close_channel": "channel:open",
    "publish_message": "channel:publish:{channel}",
    "ack_message": "channel:read:{channel}",
    "request_compute": "compute:request",
    "accept_compute": "compute:provide",
    "reject_compute": "compute:provide",
    "enqueue_nostr_bridge_event": "bridge:publish",
    "mark_bridge_event_published": "bridge:publish",
}
"""The seed's twelve reducers and the scope each needs (``{channel}`` = channel id hex)."""

DEFAULT_SCOPES = ("world:join", "world:advertise", "channel:open", "channel:publish:*",
                  "channel:read:*", "compute:request", "compute:provide", "bridge:publish")


def scope_for(reducer: str, *, channel: bytes = b"") -> str:
    return REDUCER_SCOPES[reducer].format(channel=channel.hex())


@dataclass(kw_only=True)
class AuthConfig:
    """How a node validates tokens.

    Attributes:
        keys: control service signing keys by key id (public ed25519 keys).
        leeway_s: clock leeway for ``iat`` / ``exp`` (at most 30 s by default).
        grace_s: membership grace: how long after its token expired a node's *heartbeats*
            (only) are still accepted, unless it is revoked.
    """

    keys: dict[str, bytes]
    leeway_s: float = DEFAULT_LEEWAY
    grace_s: float = 3600.0


@dataclass
class TokenBook:
    """Tokens by node key, revocations, and the check (see the module docs)."""

    config: AuthConfig
    tokens: dict[bytes, tuple[bytes, Claims]] = field(default_factory=dict)
    revoked_tokens: frozenset[bytes] = frozenset()
    revoked_nodes: frozenset[bytes] = frozenset()
    refused: dict[str, int] = field(default_factory=dict)
    checked: int = 0

    def learn(self, raw: bytes, *, now: float, node_key: bytes | None = None,
              nostr_pubkey: bytes | None = None, grace: bool = False) -> Claims:
        """Verify a token (signature, key id, validity now, revocation; and that it names
        ``node_key`` / ``nostr_pubkey`` when given) and remember it as that node's latest.
        A token older than the one held is verified but not kept. ``grace``: accept a token
        that expired less than ``grace_s`` ago (session handshakes: membership, not writes)."""
        leeway = self.config.leeway_s + (self.config.grace_s if grace else 0.0)
        try:
            claims = verify_token(raw, self.config.keys, now=now, leeway=leeway,
                                  revoked_tokens=self.revoked_tokens,
                                  revoked_nodes=self.revoked_nodes)
            if node_key is not None:
                claims.require_binding(node_key, nostr_pubkey)
        except Unauthorized as e:
            self._count(e)
            raise
        held = self.tokens.get(claims.node_key)
        if held is None or held[1].expires_at <= claims.expires_at:
            self.tokens[claims.node_key] = (raw, claims)
        return claims

    def check(self, node_key: bytes, scope: str, *, now: float, grace: bool = False
              ) -> Claims:
        """The node's latest token, valid now (with leeway; with ``grace``, also up to
        ``grace_s`` past its expiry), not revoked, covering ``scope``.
        Raises ``Unauthorized`` / ``TokenExpired`` / ``ScopeDenied`` / ``Revoked``."""
        self.checked += 1
        try:
            held = self.tokens.get(node_key)
            if held is None:
                raise Unauthorized("no token for this node", node=node_id(node_key).hex())
            claims = held[1]
            self._live(claims, now, extra=self.config.grace_s if grace else 0.0)
            claims.require(scope)
            return claims
        except Unauthorized as e:
            self._count(e)
            raise

    def admit(self, raw: bytes, *, now: float, node_key: bytes,
              nostr_pubkey: bytes | None) -> P2PWorldError | None:
        """Session admission, after a handshake proved ``node_key`` (and, by its
        attestation, ``nostr_pubkey``): the peer's token must name both, grant
        ``world:join`` and be valid now or within the membership grace (a session carries
        reads; every write on it is checked again against a live token). None: admitted;
        else the refusal (counted), and the session ends with it."""
        try:
            self.learn(raw, now=now, node_key=node_key, nostr_pubkey=nostr_pubkey, grace=True)
            self.check_heartbeat(node_key, now=now)
        except P2PWorldError as e:  # a refused token, or one that does not even decode
            return e
        return None

    def check_reducer(self, node_key: bytes, reducer: str, *, now: float,
                      **fields: bytes) -> Claims:
        """:meth:`check` for one of the seed's reducers (:data:`REDUCER_SCOPES`), its scope
        filled from ``fields`` (bytes as hex): ``check_reducer(k, "ack_message", now=t,
        channel=ch)`` checks ``channel:read:<ch hex>``."""
        scope = REDUCER_SCOPES[reducer].format(**{k: v.hex() for k, v in fields.items()})
        return self.check(node_key, scope, now=now)

    def check_heartbeat(self, node_key: bytes, *, now: float) -> None:
        """Heartbeats are allowed under the membership grace: a token that expired less than
        ``grace_s`` ago still lets its node beat (never after revocation)."""
        self.check(node_key, "world:join", now=now, grace=True)

    def _live(self, claims: Claims, now: float, extra: float = 0.0) -> None:
        if claims.token_id in self.revoked_tokens or claims.node_id in self.revoked_nodes:
            raise Revoked("token or node revoked")
        if now > claims.expires_at + self.config.leeway_s + extra:
            raise TokenExpired("token expired" + (" beyond the membership grace" if extra
                                                  else ""), exp=claims.expires_at)
        if now < claims.issued_at - self.config.leeway_s:
            raise TokenExpired("token not valid yet", iat=claims.issued_at)

    def revoke(self, *, tokens: frozenset[bytes] = frozenset(),
               nodes: frozenset[bytes] = frozenset()) -> set[bytes]:
        """Apply a (verified) revocation list: from now on these tokens and nodes fail.
        Returns the node keys whose latest token is revoked now (their sessions end)."""
        self.revoked_tokens |= tokens
        self.revoked_nodes |= nodes
        return {k for k, (_, c) in self.tokens.items()
                if c.token_id in self.revoked_tokens or c.node_id in self.revoked_nodes}

    def expires(self, node_key: bytes, raw: bytes | None) -> int | None:
        """When ``raw``, the latest token held for ``node_key``, expires (unix s); None when
        the latest token held is another one, or there is none."""
        held = self.tokens.get(node_key)
        return held[1].expires_at if held is not None and held[0] == raw else None

    def own(self, node_key: bytes) -> bytes | None:
        held = self.tokens.get(node_key)
        return held[0] if held else None

    def _count(self, e: P2PWorldError) -> None:
        self.refused[e.code] = self.refused.get(e.code, 0) + 1


def own_book(auth: AuthConfig | None, token: bytes | None, *, now: float, node_key: bytes,
             nostr_pubkey: bytes) -> TokenBook | None:
    """A node's token book, its own token learnt (None: an open world, no auth). A node
    with auth on needs a valid token of its own to join its world: without one, or with
    one that does not verify, this raises :class:`~p2pworld.errors.Unauthorized`."""
    if auth is None:
        return None
    if not token:
        raise Unauthorized("auth is on but this node has no token (set control or token)")
    book = TokenBook(auth)
    book.learn(token, now=now, node_key=node_key, nostr_pubkey=nostr_pubkey)
    return book


def token_id_of(raw: bytes) -> bytes:
    """The ``jti`` of a token without verifying it (for references); ``b""`` if malformed."""
    try:
        m = codec.need_map(codec.decode_frame(raw, max_bytes=4096), "token")
        claims = codec.need_map(m.get("claims"), "claims")
        jti = claims.get("jti")
        return jti if isinstance(jti, bytes) else b""
    except P2PWorldError:
        return b""
