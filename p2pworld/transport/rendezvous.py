"""The rendezvous protocol core: signed registrations, lookups and blind relaying (pure).

A rendezvous node lets nodes of a workspace find each other across subnets and, when they
cannot reach each other directly, relays their traffic. It holds **no authority**:

* A node proves its key when it connects (it signs the server's fresh challenge inside its
  :class:`Registration`), so only the real node receives traffic addressed to it.
* Registrations are signed, TTL-bound records; peers verify them again, so the rendezvous
  cannot forge or alter one undetected (a record it invents has no valid signature).
* Relayed traffic is an ordinary p2pworld session (the same handshake, the same
  ChaCha20-Poly1305 frames) carried inside ``rv.relay`` messages: the rendezvous sees only
  ciphertext and cannot impersonate either end (the handshake authenticates both keys).

Messages are canonical CBOR frames ``{t: ..., ...}`` on a websocket (see ``docs/protocol.md``):

=============  =========  ============================================================
``rv.chal``    server     ``nonce``: sign it in your registration
``rv.reg``     client     ``rec``: a signed :class:`Registration` (also to refresh it)
``rv.peers``   server     ``recs``: signed registrations of the workspace (on change)
``rv.relay``   both       client: ``to`` + ``d``; server delivers ``from`` + ``d``
``rv.nope``    server     ``to``, ``reason``: the addressee is not connected here
=============  =========  ============================================================

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> core = RendezvousCore()
    >>> a, b = Ed25519Signer(bytes(32)), Ed25519Signer(bytes([1]) * 32)
    >>> ca, fx = core.connect(1, nonce=b"n" * 16)
    >>> cb, _ = core.connect(2, nonce=b"m" * 16)
    >>> fx = core.receive(1, register(a, "lab", [], nonce=b"n" * 16, now_ms=0), now_ms=0)
    >>> fx = core.receive(2, register(b, "lab", [], nonce=b"m" * 16, now_ms=0), now_ms=0)
    >>> [(c, m["t"], len(m["recs"])) for c, m in fx]
    [(1, 'rv.peers', 2), (2, 'rv.peers', 2)]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import DecodeError, ForgedUpdate, P2PWorldError, RemoteProtocolError
from p2pworld.identity import Signer, node_id, verify_raw

REGISTRATION_DOMAIN = "p2pworld/rendezvous-registration"
MAX_TTL_MS = 300_000
MAX_URLS = 8
MAX_RELAY_BYTES = 1 << 20
MAX_PER_WORKSPACE = 4096
MAX_SKEW_MS = 120_000


@dataclass(frozen=True, kw_only=True)
class Registration:
    """``node key`` is in ``workspace`` and reachable directly at ``urls`` (maybe none) until
    ``at_ms + ttl_ms``; ``nonce`` binds it to one rendezvous connection."""

    key: bytes
    workspace: str
    urls: tuple[str, ...]
    at_ms: int
    ttl_ms: int
    nonce: bytes
    sig: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)

    def body(self) -> dict[str, Value]:
        return {"key": self.key, "ws": self.workspace, "urls": list(self.urls),
                "at": self.at_ms, "ttl": self.ttl_ms, "nonce": self.nonce}

    @property
    def node(self) -> bytes:
        return node_id(self.key)

    def expires_ms(self) -> int:
        return self.at_ms + self.ttl_ms

    @classmethod
    def decode(cls, raw: bytes) -> Registration:
        w = "registration"
        m = codec.record_map(raw, w, max_bytes=4096,
                             fields={"key", "ws", "urls", "at", "ttl", "nonce", "sig"})
        urls = codec.field(m, "urls", list, w)
        if len(urls) > MAX_URLS or not all(isinstance(u, str) and len(u) <= 256 and
                                           u.startswith("ws://") for u in urls):
            raise DecodeError(f"{w}: urls must be at most {MAX_URLS} ws:// URLs")
        return cls(key=codec.bytes_field(m, "key", w, size=32),
                   workspace=codec.str_field(m, "ws", w, max_len=128), urls=tuple(urls),
                   at_ms=codec.int_field(m, "at", w, hi=1 << 62),
                   ttl_ms=codec.int_field(m, "ttl", w, lo=1, hi=MAX_TTL_MS),
                   nonce=codec.bytes_field(m, "nonce", w, size=16),
                   sig=codec.bytes_field(m, "sig", w, size=64), raw=raw)

    def verify(self) -> None:
        if not verify_raw(self.key, codec.tagged(REGISTRATION_DOMAIN, self.body()), self.sig):
            raise ForgedUpdate("registration signature does not verify")


def registration(signer: Signer, workspace: str, urls: list[str], *, nonce: bytes,
                 now_ms: int, ttl_ms: int = 60_000) -> Registration:
    r = Registration(key=signer.public_key, workspace=workspace, urls=tuple(urls[:MAX_URLS]),
                     at_ms=now_ms, ttl_ms=ttl_ms, nonce=nonce)
    sig = signer.sign(codec.tagged(REGISTRATION_DOMAIN, r.body()))
    return Registration(key=r.key, workspace=workspace, urls=r.urls, at_ms=now_ms,
                        ttl_ms=ttl_ms, nonce=nonce, sig=sig,
                        raw=codec.encode({**r.body(), "sig": sig}))


def register(signer: Signer, workspace: str, urls: list[str], *, nonce: bytes, now_ms: int,
             ttl_ms: int = 60_000) -> dict[str, Value]:
    """The ``rv.reg`` message a client sends (after ``rv.chal`` gave it ``nonce``)."""
    rec = registration(signer, workspace, urls, nonce=nonce, now_ms=now_ms, ttl_ms=ttl_ms)
    return {"t": "rv.reg", "rec": rec.raw}


def parse_message(data: bytes) -> dict[str, Value]:
    """Decode and shape-check one rendezvous frame (either direction)."""
    m = codec.need_map(codec.decode_frame(data, max_bytes=MAX_RELAY_BYTES + 4096), "rv")
    t = m.get("t")
    if t == "rv.chal":
        codec.bytes_field(m, "nonce", t, size=16)
    elif t == "rv.reg":
        codec.bytes_field(m, "rec", t)
    elif t == "rv.peers":
        recs = codec.field(m, "recs", list, t)
        if len(recs) > MAX_PER_WORKSPACE or not all(isinstance(r, bytes) for r in recs):
            raise DecodeError("rv.peers: too many records")
    elif t == "rv.relay":
        if len(codec.field(m, "d", bytes, t)) > MAX_RELAY_BYTES:
            raise DecodeError("rv.relay: payload too large")
        if "to" in m:
            codec.bytes_field(m, "to", t, size=32)
        else:
            codec.bytes_field(m, "from", t, size=32)
    elif t == "rv.nope":
        codec.bytes_field(m, "to", t, size=32)
        codec.str_field(m, "reason", t, max_len=256)
    else:
        raise DecodeError(f"unknown rendezvous message {str(t)[:32]!r}")
    return m


def verified_peers(m: dict[str, Value], *, workspace: str, now_ms: int) -> list[Registration]:
    """The registrations of an ``rv.peers`` message that verify and belong to ``workspace``
    (the rendezvous is not trusted with any of it). Records signed far in the past are
    dropped: the server only lists connected nodes, whose records it refreshes."""
    out = []
    for raw in m["recs"]:
        try:
            r = Registration.decode(raw)
            r.verify()
        except P2PWorldError:
            continue
        if r.workspace == workspace and now_ms - r.at_ms < 24 * 3600_000:
            out.append(r)
    return out


@dataclass
class _Conn:
    nonce: bytes
    reg: Registration | None = None
    expires_ms: int = 0


Out = list[tuple[int, dict[str, Value]]]
"""Frames to send: ``(connection id, message)``."""


class RendezvousCore:
    """Server side: connections, registrations by workspace, relaying. Bounded and pure."""

    def __init__(self) -> None:
        self.conns: dict[int, _Conn] = {}
        self.by_node: dict[tuple[str, bytes], int] = {}
        self.relayed_bytes = 0
        self.relayed_frames = 0
        self.errors: dict[str, int] = {}
        """Error codes by count: frames that ended their connection, and what the shell
        reports with :meth:`count` (a full send queue, a failed connection task)."""

    def count(self, code: str) -> None:
        """Count one error of ``code`` in :attr:`errors`."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def connect(self, conn: int, *, nonce: bytes) -> tuple[_Conn, Out]:
        c = self.conns[conn] = _Conn(nonce)
        return c, [(conn, {"t": "rv.chal", "nonce": nonce})]

    def disconnect(self, conn: int) -> Out:
        c = self.conns.pop(conn, None)
        if c is None or c.reg is None:
            return []
        key = (c.reg.workspace, c.reg.node)
        if self.by_node.get(key) == conn:
            del self.by_node[key]
        return self._announce(c.reg.workspace)

    def frame(self, conn: int, data: bytes | str, *, now_ms: int) -> Out | None:
        """One websocket message from ``conn``: the frames to send, or ``None`` when the
        connection must end (a text frame, or a frame :meth:`receive` refuses; its error
        code is counted in :attr:`errors`).

        Example:
            >>> core = RendezvousCore()
            >>> _ = core.connect(1, nonce=b"n" * 16)
            >>> core.frame(1, "hello", now_ms=0) is None, core.errors
            (True, {'P2PWORLD_ERROR': 1})
        """
        try:
            if not isinstance(data, bytes):
                raise P2PWorldError("text frame")
            return self.receive(conn, data, now_ms=now_ms)
        except P2PWorldError as e:
            self.count(e.code)
            return None

    def receive(self, conn: int, data: dict[str, Value] | bytes, *, now_ms: int) -> Out:
        """Handle one frame from ``conn``. Raises :class:`RemoteProtocolError` for a frame
        that should end the connection (:meth:`frame` turns that into the end of it)."""
        c = self.conns.get(conn)
        if c is None:
            return []
        m = parse_message(data) if isinstance(data, bytes) else data
        t = m["t"]
        if t == "rv.reg":
            reg = Registration.decode(m["rec"])
            reg.verify()
            if reg.nonce != c.nonce:
                raise ForgedUpdate("registration is not bound to this connection")
            if abs(reg.at_ms - now_ms) > MAX_SKEW_MS:
                raise RemoteProtocolError("registration time too far from the server's clock")
            if c.reg is not None and (c.reg.key != reg.key or c.reg.workspace != reg.workspace):
                raise RemoteProtocolError("a connection registers one node in one workspace")
            ws_count = sum(1 for (w, _n) in self.by_node if w == reg.workspace)
            key = (reg.workspace, reg.node)
            if key not in self.by_node and ws_count >= MAX_PER_WORKSPACE:
                raise RemoteProtocolError("workspace is full on this rendezvous")
            old = self.by_node.get(key)
            out: Out = []
            if old is not None and old != conn:
                # The same node reconnected: the newer connection wins.
                self.conns.pop(old, None)
                out.append((old, {"t": "rv.nope", "to": reg.node, "reason": "replaced"}))
            changed = c.reg is None or c.reg.urls != reg.urls or old != conn
            c.reg, c.expires_ms = reg, now_ms + reg.ttl_ms
            self.by_node[key] = conn
            # A refresh that changes nothing is not announced: an ``rv.peers`` message is the
            # workspace's current membership here, and clients replace what they held.
            return out + (self._announce(reg.workspace) if changed else [])
        if c.reg is None:
            raise RemoteProtocolError("register first")
        if t == "rv.relay" and "to" in m:
            dst = self.by_node.get((c.reg.workspace, m["to"]))
            if dst is None:
                return [(conn, {"t": "rv.nope", "to": m["to"], "reason": "not connected"})]
            self.relayed_frames += 1
            self.relayed_bytes += len(m["d"])
            return [(dst, {"t": "rv.relay", "from": c.reg.node, "d": m["d"]})]
        raise RemoteProtocolError(f"unexpected {t} from a client")

    def expire(self, *, now_ms: int) -> tuple[list[int], Out]:
        """Connections whose registration lapsed (not refreshed): the shell closes them."""
        dead = [cid for cid, c in self.conns.items() if c.reg and c.expires_ms < now_ms]
        out: Out = []
        for cid in dead:
            out += self.disconnect(cid)
        return dead, out

    @staticmethod
    def closes_after(out: Out) -> list[int]:
        """The connections to close once ``out`` is queued: those told that a newer
        connection of their node replaced them.

        Example:
            >>> RendezvousCore.closes_after([(1, {"t": "rv.nope", "to": b"", "reason": "replaced"}),
            ...                              (2, {"t": "rv.peers", "recs": []})])
            [1]
        """
        return [cid for cid, msg in out
                if msg.get("t") == "rv.nope" and msg.get("reason") == "replaced"]

    def _announce(self, workspace: str) -> Out:
        conns = sorted(cid for (w, _n), cid in self.by_node.items() if w == workspace)
        recs = [self.conns[cid].reg.raw for cid in conns  # type: ignore[union-attr]
                if cid in self.conns and self.conns[cid].reg is not None]
        msg: dict[str, Value] = {"t": "rv.peers", "recs": recs}
        return [(cid, msg) for cid in conns]


__all__ = ["Registration", "RendezvousCore", "register", "registration", "parse_message",
           "verified_peers"]
