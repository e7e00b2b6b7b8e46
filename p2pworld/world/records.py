"""Signed world records: document updates and heartbeats, as their authors signed them.

Each node writes exactly one world document (its presence, sessions, peer links and capability
ad). It publishes the document as a chain of :class:`DocUpdate` records, each a pycrdt (Yrs V1)
update signed with the node key together with its position in the author's stream:

* ``kind="base"``: the whole document at position ``(inc, seq)``. ``seq=0`` starts an
  incarnation (the author restarted: it bumps ``inc``, rewrites its document under a fresh CRDT
  client id and publishes it whole); ``seq>0`` is a compaction that replaces the history up to
  ``seq`` (``head`` is the hash of the delta it compacts).
* ``kind="delta"``: the change from ``seq-1`` to ``seq``; ``prev`` is the head hash at
  ``seq-1``, so the deltas of an incarnation form a hash chain.

The CRDT client id of an author's incarnation is derived from its node key and ``inc``
(:func:`client_id`); an update that inserts under any other client id is refused. Heartbeats
(:class:`Heartbeat`) are ephemeral: signed, ordered by ``(inc, n)``, never part of the CRDT
history, so a world with a fixed set of nodes keeps a flat encoded size.

Peers forward the ``raw`` bytes of a record unchanged: what a relaying peer forwards is exactly
what the author signed, and any change is caught by the signature.

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> s = Ed25519Signer(bytes(32))
    >>> hb = Heartbeat.create(s, inc=1, n=7, time_ms=5000, status="online")
    >>> Heartbeat.decode(hb.raw) == hb
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import DecodeError, ForgedUpdate
from p2pworld.identity import Signer, blake2b256, node_id, verify_raw

UPDATE_DOMAIN = "p2pworld/world-update"
HEAD0_DOMAIN = "p2pworld/world-head0"
HEARTBEAT_DOMAIN = "p2pworld/heartbeat"
CLIENT_ID_DOMAIN = b"p2pworld/world-client-id\x00"

MAX_DELTA_BYTES = 64 * 1024
MAX_BASE_BYTES = 256 * 1024
MAX_RECORD_BYTES = MAX_BASE_BYTES + 1024
STATUSES = ("online", "busy", "offline")
ZERO32 = bytes(32)

Verifier = Any
"""``(public_key, message, signature) -> bool``; the default is ed25519. A simulator may pass a
memoised one (verification is a pure function of its inputs)."""


def client_id(public_key: bytes, inc: int) -> int:
    """The CRDT client id of ``public_key``'s incarnation ``inc`` (53 bits, as Yjs requires)."""
    d = blake2b256(CLIENT_ID_DOMAIN + public_key + inc.to_bytes(8, "big"))
    return int.from_bytes(d[:8], "big") & ((1 << 53) - 1)


@dataclass(frozen=True, kw_only=True)
class DocUpdate:
    """One signed step of an author's world document (see the module docs)."""

    author: bytes
    inc: int
    seq: int
    kind: str
    data: bytes
    prev: bytes = ZERO32
    """delta: head hash at ``seq-1``; base: head hash at ``seq`` (zeros when ``seq == 0``)."""
    token: bytes = b""
    """Reference to the author's token (checked when auth lands; empty until then)."""
    sig: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)

    def body(self) -> dict[str, Value]:
        return {"a": self.author, "i": self.inc, "s": self.seq, "k": self.kind,
                "d": self.data, "p": self.prev, "tok": self.token}

    @property
    def node(self) -> bytes:
        return node_id(self.author)

    @property
    def head(self) -> bytes:
        """The head hash after this record: what the next delta's ``prev`` must be."""
        if self.kind == "base" and self.seq > 0:
            return self.prev
        domain = HEAD0_DOMAIN if self.kind == "base" else UPDATE_DOMAIN
        return blake2b256(codec.tagged(domain, self.body()))

    @classmethod
    def create(cls, signer: Signer, *, inc: int, seq: int, kind: str, data: bytes,
               prev: bytes = ZERO32, token: bytes = b"") -> DocUpdate:
        u = cls(author=signer.public_key, inc=inc, seq=seq, kind=kind, data=data, prev=prev,
                token=token)
        sig = signer.sign(codec.tagged(UPDATE_DOMAIN, u.body()))
        raw = codec.encode({**u.body(), "sig": sig})
        return cls(author=u.author, inc=inc, seq=seq, kind=kind, data=data, prev=prev,
                   token=token, sig=sig, raw=raw)

    @classmethod
    def decode(cls, raw: bytes) -> DocUpdate:
        """Parse (not verify) a record received from anyone. Raises :class:`DecodeError`."""
        w = "world update"
        m = codec.record_map(raw, w, max_bytes=MAX_RECORD_BYTES,
                             fields={"a", "i", "s", "k", "d", "p", "tok", "sig"})
        kind = codec.str_field(m, "k", w, max_len=8)
        if kind not in ("base", "delta"):
            raise DecodeError(f"{w}: unknown kind")
        data = codec.bytes_field(m, "d", w)
        if len(data) > (MAX_BASE_BYTES if kind == "base" else MAX_DELTA_BYTES):
            raise DecodeError(f"{w}: document data too large")
        seq = codec.int_field(m, "s", w, hi=1 << 62)
        if kind == "delta" and seq == 0:
            raise DecodeError(f"{w}: a delta starts at seq 1")
        token = codec.bytes_field(m, "tok", w)
        if len(token) > 4096:
            raise DecodeError(f"{w}: token reference too large")
        prev = codec.bytes_field(m, "p", w, size=32)
        if kind == "base" and seq == 0 and prev != ZERO32:
            raise DecodeError(f"{w}: an incarnation base has no head")
        return cls(author=codec.bytes_field(m, "a", w, size=32),
                   inc=codec.int_field(m, "i", w, lo=1, hi=1 << 62), seq=seq, kind=kind,
                   data=data, prev=prev, token=token, sig=codec.bytes_field(m, "sig", w, size=64),
                   raw=raw)

    def verify(self, verifier: Verifier = verify_raw) -> None:
        """Raise :class:`ForgedUpdate` unless the author's key signed exactly this record."""
        if not verifier(self.author, codec.tagged(UPDATE_DOMAIN, self.body()), self.sig):
            raise ForgedUpdate("world update signature does not verify",
                               author=self.node.hex())


@dataclass(frozen=True, kw_only=True)
class Heartbeat:
    """An ephemeral, signed liveness beat: newer ``(inc, n)`` wins; never stored in a CRDT."""

    author: bytes
    inc: int
    n: int
    time_ms: int
    status: str = "online"
    token: bytes = b""
    sig: bytes = b""
    raw: bytes = field(default=b"", compare=False, repr=False)

    def body(self) -> dict[str, Value]:
        return {"a": self.author, "i": self.inc, "n": self.n, "t": self.time_ms,
                "st": self.status, "tok": self.token}

    @property
    def node(self) -> bytes:
        return node_id(self.author)

    @property
    def position(self) -> tuple[int, int]:
        return (self.inc, self.n)

    @classmethod
    def create(cls, signer: Signer, *, inc: int, n: int, time_ms: int, status: str = "online",
               token: bytes = b"") -> Heartbeat:
        hb = cls(author=signer.public_key, inc=inc, n=n, time_ms=time_ms, status=status,
                 token=token)
        sig = signer.sign(codec.tagged(HEARTBEAT_DOMAIN, hb.body()))
        return cls(author=hb.author, inc=inc, n=n, time_ms=time_ms, status=status, token=token,
                   sig=sig, raw=codec.encode({**hb.body(), "sig": sig}))

    @classmethod
    def decode(cls, raw: bytes) -> Heartbeat:
        w = "heartbeat"
        m = codec.record_map(raw, w, max_bytes=8192,
                             fields={"a", "i", "n", "t", "st", "tok", "sig"})
        status = codec.str_field(m, "st", w, max_len=16)
        if status not in STATUSES:
            raise DecodeError(f"{w}: unknown status")
        token = codec.bytes_field(m, "tok", w)
        if len(token) > 4096:
            raise DecodeError(f"{w}: token reference too large")
        return cls(author=codec.bytes_field(m, "a", w, size=32),
                   inc=codec.int_field(m, "i", w, lo=1, hi=1 << 62),
                   n=codec.int_field(m, "n", w, hi=1 << 62),
                   time_ms=codec.int_field(m, "t", w, hi=1 << 62), status=status, token=token,
                   sig=codec.bytes_field(m, "sig", w, size=64), raw=raw)

    def verify(self, verifier: Verifier = verify_raw) -> None:
        if not verifier(self.author, codec.tagged(HEARTBEAT_DOMAIN, self.body()), self.sig):
            raise ForgedUpdate("heartbeat signature does not verify", author=self.node.hex())


def state_vector_clients(update: bytes) -> dict[int, int]:
    """The client ids (and clocks) an update inserts under, read from its encoded state.

    ``update`` is hostile input: any failure to parse raises :class:`DecodeError`.
    """
    import pycrdt  # the world core's CRDT engine (pure: no I/O)

    try:
        sv = pycrdt.get_state(update)
    except Exception as e:  # noqa: BLE001 - pycrdt raises assorted types on bad updates
        raise DecodeError(f"world update: not a valid CRDT update ({type(e).__name__})") from None
    return decode_state_vector(sv)


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Decode a Yjs state vector: ``varuint n, then n pairs (client, clock)``."""
    pos = 0

    def varuint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            if pos >= len(sv) or shift > 63:
                raise DecodeError("state vector: truncated or overlong varint")
            b = sv[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value

    n = varuint()
    if n > 4096:
        raise DecodeError("state vector: too many clients")
    out: dict[int, int] = {}
    for _ in range(n):
        c = varuint()
        out[c] = varuint()
    if pos != len(sv):
        raise DecodeError("state vector: trailing bytes")
    return out
