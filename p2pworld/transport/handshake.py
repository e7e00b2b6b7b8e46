"""Session handshake and frame protection: a sans-I/O core.

The handshake is shaped like Noise XX / SIGMA-I: both sides send ephemeral X25519 keys, each
side signs the transcript (which covers both ephemeral keys) with its ed25519 node key, and the
static identities travel encrypted under the ephemeral Diffie-Hellman secret. Both sides are
authenticated; the session keys depend only on ephemeral secrets (forward secrecy). Three
messages::

    I -> R   hs1  {versions, e_i, ws}                               (clear)
    R -> I   hs2  {v, e_r, box: seal(k2, {key, att, token, sig_R})}
    I -> R   hs3  {box: seal(k3, {key, att, token, sig_I})}

``sig_R`` signs ``H(hs1 || v || e_r || ws || key_R)``; ``sig_I`` signs ``H(hs1 || hs2 ||
key_I)``. The session keys (one per direction) are derived from the DH secret and the hash of
all three messages. After the handshake every frame is ChaCha20-Poly1305 with a per-direction
64-bit counter as nonce (as in Noise's transport phase): a replayed, reordered, dropped or
forged frame fails authentication and kills the session (sticky error). We use counter nonces
instead of libsodium's secretstream because secretstream draws its header from the OS random
source, which the deterministic simulator cannot seed.

Example (two cores, bytes passed by hand):
    >>> import random
    >>> from p2pworld.identity import NodeIdentity
    >>> a = NodeIdentity.from_seeds(bytes([1]) * 32, bytes([1]) * 32)
    >>> b = NodeIdentity.from_seeds(bytes([2]) * 32, bytes([2]) * 32)
    >>> rng = random.Random(7)
    >>> i = Handshake(HandshakeConfig(identity=a, workspace="w"), initiator=True, rng=rng)
    >>> r = Handshake(HandshakeConfig(identity=b, workspace="w"), initiator=False, rng=rng)
    >>> m3 = i.receive(r.receive(i.start()))
    >>> _ = r.receive(m3)
    >>> i.result.peer_id == b.node_id and r.result.peer_id == a.node_id
    True
    >>> ti, tr = i.result.transport(), r.result.transport()
    >>> tr.open(ti.seal(b"hello"))
    b'hello'
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nacl.bindings as sodium
import nacl.exceptions

from p2pworld import codec
from p2pworld.errors import (
    FrameRejected,
    FrameTooLarge,
    HandshakeError,
    HandshakeRefused,
    InvalidAttestation,
    LocalProtocolError,
    P2PWorldError,
    PeerIdentityMismatch,
    RemoteProtocolError,
    SessionClosed,
    VersionMismatch,
    WorkspaceMismatch,
)
from p2pworld.identity import Attestation, NodeIdentity, node_id, verify_raw
from p2pworld.transport.frames import MAX_PLAINTEXT

PROTOCOL_VERSIONS: tuple[int, ...] = (3,)
"""3: messages larger than a frame travel in parts, channel records carry a payload limit,
catch-up is flow-controlled (``tip``). 2 had entries as canonical bytes with writer batch
proofs; 1 had neither."""
MAX_HANDSHAKE_BYTES = 16 * 1024
MAX_TOKEN_BYTES = 4096
RESPONDER_DOMAIN = "p2pworld/handshake/responder/v1"
INITIATOR_DOMAIN = "p2pworld/handshake/initiator/v1"
_TAG = sodium.crypto_aead_chacha20poly1305_ietf_ABYTES
DEFAULT_MAX_FRAME = MAX_PLAINTEXT + _TAG
"""Largest session frame (ciphertext): one bundle or one part (``transport/frames.py``);
larger messages, snapshots included, travel in parts."""

if TYPE_CHECKING:
    import random


def _h(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=32, person=b"p2pworld-hs-v1")
    for p in parts:
        h.update(len(p).to_bytes(4, "big"))
        h.update(p)
    return h.digest()


def _kdf(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    return hashlib.blake2b(label + transcript, key=secret, digest_size=32).digest()


def _nonce(counter: int) -> bytes:
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")


def _seal(key: bytes, counter: int, plaintext: bytes, ad: bytes = b"") -> bytes:
    return bytes(sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, _nonce(counter), key))


def _open(key: bytes, counter: int, ciphertext: bytes, ad: bytes = b"") -> bytes:
    try:
        return bytes(
            sodium.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, _nonce(counter), key)
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise FrameRejected("frame failed authentication (forged, replayed or reordered)") from None


@dataclass(frozen=True, kw_only=True)
class HandshakeConfig:
    """What one side brings to a handshake.

    Attributes:
        identity: this node's keys and attestation.
        workspace: the workspace id; peers of another workspace are refused.
        token: the auth token slot (opaque bytes; the auth layer fills and checks it).
        versions: protocol versions this side speaks, best first.
        expected_peer: (initiator) the node id we meant to reach; anybody else is refused.
        max_frame: largest transport frame accepted, in bytes.
    """

    identity: NodeIdentity
    workspace: str
    token: bytes | None = None
    versions: tuple[int, ...] = PROTOCOL_VERSIONS
    expected_peer: bytes | None = None
    max_frame: int = DEFAULT_MAX_FRAME


@dataclass(frozen=True, kw_only=True)
class HandshakeResult:
    """The authenticated outcome: who the peer is and the keys of the session."""

    version: int
    initiator: bool
    workspace: str
    peer_key: bytes
    peer_id: bytes
    peer_attestation: Attestation
    peer_token: bytes | None
    send_key: bytes = field(repr=False)
    recv_key: bytes = field(repr=False)
    max_frame: int

    def transport(self) -> Transport:
        return Transport(self.send_key, self.recv_key, max_frame=self.max_frame)


class HandshakeState(enum.Enum):
    START = "start"
    SENT_HS1 = "sent_hs1"
    WAIT_HS1 = "wait_hs1"
    SENT_HS2 = "sent_hs2"
    DONE = "done"
    ERROR = "error"


class Handshake:
    """One side of a handshake. ``start()`` (initiator) then ``receive()`` until ``done``.

    Every ``receive`` either returns the bytes to send next (or ``None``) or raises a typed
    :class:`HandshakeError`; after an error the core stays in ``ERROR`` and ``refusal()``
    gives a frame telling the peer why.
    """

    def __init__(self, config: HandshakeConfig, *, initiator: bool, rng: random.Random) -> None:
        self.config = config
        self.initiator = initiator
        self.state = HandshakeState.START if initiator else HandshakeState.WAIT_HS1
        self._e_secret = bytes(rng.getrandbits(8) for _ in range(32))
        self._e_public = bytes(sodium.crypto_scalarmult_base(self._e_secret))
        self._hs1 = b""
        self._hs2 = b""
        self._dh = b""
        self._version = 0
        self._result: HandshakeResult | None = None
        self.error: P2PWorldError | None = None

    @property
    def done(self) -> bool:
        return self.state is HandshakeState.DONE

    @property
    def result(self) -> HandshakeResult:
        if self._result is None:
            raise LocalProtocolError("handshake not finished")
        return self._result

    def start(self) -> bytes:
        """Initiator: the first message."""
        if not self.initiator or self.state is not HandshakeState.START:
            raise LocalProtocolError("start() is for a fresh initiator")
        self._hs1 = codec.encode_frame(
            {"t": "hs1", "versions": list(self.config.versions), "e": self._e_public,
             "ws": self.config.workspace}
        )
        self.state = HandshakeState.SENT_HS1
        return self._hs1

    def receive(self, data: bytes) -> bytes | None:
        """Feed one peer message; returns the message to send back, if any."""
        if self.state in (HandshakeState.DONE, HandshakeState.ERROR, HandshakeState.START):
            raise LocalProtocolError(f"receive() in state {self.state.value}")
        try:
            if len(data) > MAX_HANDSHAKE_BYTES:
                raise HandshakeError("handshake message too large", size=len(data))
            msg = codec.need_map(codec.decode_frame(data, max_bytes=MAX_HANDSHAKE_BYTES), "hs")
            if msg.get("t") == "refuse":
                raise HandshakeRefused(
                    f"peer refused: {msg.get('code')}: {str(msg.get('reason', ''))[:200]}",
                    peer_code=str(msg.get("code", ""))[:64],
                )
            if self.state is HandshakeState.WAIT_HS1:
                return self._on_hs1(data, msg)
            if self.state is HandshakeState.SENT_HS1:
                return self._on_hs2(data, msg)
            self._on_hs3(data, msg)
            return None
        except P2PWorldError as e:
            if not isinstance(e, HandshakeError):
                e = HandshakeError(f"bad handshake message: {e.message}", cause=e.code)
            self.state = HandshakeState.ERROR
            self.error = e
            raise e from None

    def refusal(self) -> bytes:
        """A cleartext frame telling the peer why we gave up (informational only)."""
        code = self.error.code if self.error else "HANDSHAKE_FAILED"
        reason = self.error.message if self.error else ""
        body: dict[str, Any] = {"t": "refuse", "code": code, "reason": reason[:200]}
        if isinstance(self.error, VersionMismatch):
            body["versions"] = list(self.config.versions)
        return codec.encode_frame(body)

    # --- steps ------------------------------------------------------------------------------

    def _on_hs1(self, raw: bytes, msg: dict[str, Any]) -> bytes:
        what = "hs1"
        if msg.get("t") != "hs1":
            raise HandshakeError("expected hs1")
        versions = codec.field(msg, "versions", list, what)
        e_i = codec.bytes_field(msg, "e", what, size=32)
        ws = codec.str_field(msg, "ws", what)
        common = [v for v in self.config.versions if v in versions]
        if not common:
            raise VersionMismatch(f"no common protocol version (peer speaks {versions[:8]})")
        if ws != self.config.workspace:
            raise WorkspaceMismatch(f"peer is in workspace {ws!r}")
        self._hs1 = raw
        self._version = common[0]
        self._dh = self._x25519(e_i)
        ident = self.config.identity
        bind = _h(raw, bytes([self._version]), self._e_public, ws.encode(), ident.public_key)
        payload = {
            "key": ident.public_key,
            "att": ident.attestation.to_wire(),
            "token": self.config.token,
            "sig": ident.signer.sign(codec.tagged(RESPONDER_DOMAIN, bind)),
        }
        k2 = _kdf(self._dh, b"hs2", _h(raw, self._e_public))
        self._hs2 = codec.encode_frame(
            {"t": "hs2", "v": self._version, "e": self._e_public,
             "box": _seal(k2, 0, codec.encode(payload))}
        )
        self.state = HandshakeState.SENT_HS2
        return self._hs2

    def _on_hs2(self, raw: bytes, msg: dict[str, Any]) -> bytes:
        what = "hs2"
        if msg.get("t") != "hs2":
            raise HandshakeError("expected hs2")
        version = codec.int_field(msg, "v", what, hi=255)
        e_r = codec.bytes_field(msg, "e", what, size=32)
        box = codec.bytes_field(msg, "box", what)
        if version not in self.config.versions:
            raise VersionMismatch(f"peer chose version {version}, which we did not offer")
        self._version = version
        self._dh = self._x25519(e_r)
        k2 = _kdf(self._dh, b"hs2", _h(self._hs1, e_r))
        try:
            payload = _open(k2, 0, box)
        except FrameRejected:
            raise HandshakeError("hs2 box failed authentication") from None
        bind = _h(self._hs1, bytes([version]), e_r, self.config.workspace.encode(),
                  self._peer_key(payload))
        self._hs2 = raw
        result_peer = self._check_payload(payload, RESPONDER_DOMAIN, bind)
        ident = self.config.identity
        bind_i = _h(self._hs1, raw, ident.public_key)
        mine = {
            "key": ident.public_key,
            "att": ident.attestation.to_wire(),
            "token": self.config.token,
            "sig": ident.signer.sign(codec.tagged(INITIATOR_DOMAIN, bind_i)),
        }
        k3 = _kdf(self._dh, b"hs3", _h(self._hs1, raw))
        hs3 = codec.encode_frame({"t": "hs3", "box": _seal(k3, 0, codec.encode(mine))})
        self._finish(result_peer, hs3)
        return hs3

    def _on_hs3(self, raw: bytes, msg: dict[str, Any]) -> None:
        if msg.get("t") != "hs3":
            raise HandshakeError("expected hs3")
        box = codec.bytes_field(msg, "box", "hs3")
        k3 = _kdf(self._dh, b"hs3", _h(self._hs1, self._hs2))
        try:
            payload = _open(k3, 0, box)
        except FrameRejected:
            raise HandshakeError("hs3 box failed authentication") from None
        bind = _h(self._hs1, self._hs2, self._peer_key(payload))
        peer = self._check_payload(payload, INITIATOR_DOMAIN, bind)
        self._finish(peer, raw)

    # --- helpers ----------------------------------------------------------------------------

    def _x25519(self, peer_public: bytes) -> bytes:
        try:
            dh = bytes(sodium.crypto_scalarmult(self._e_secret, peer_public))
        except (nacl.exceptions.RuntimeError, nacl.exceptions.CryptoError, ValueError):
            raise HandshakeError("invalid ephemeral key") from None
        if dh == bytes(32):
            raise HandshakeError("ephemeral key of low order")
        return dh

    @staticmethod
    def _peer_key(payload: bytes) -> bytes:
        m = codec.need_map(codec.decode(payload, max_bytes=MAX_HANDSHAKE_BYTES), "hs payload")
        return codec.bytes_field(m, "key", "hs payload", size=32)

    def _check_payload(
        self, payload: bytes, domain: str, bind: bytes
    ) -> tuple[bytes, Attestation, bytes | None]:
        what = "hs payload"
        m = codec.need_map(codec.decode(payload, max_bytes=MAX_HANDSHAKE_BYTES), what)
        key = codec.bytes_field(m, "key", what, size=32)
        sig = codec.bytes_field(m, "sig", what, size=64)
        token = m.get("token")
        if token is not None and (not isinstance(token, bytes) or len(token) > MAX_TOKEN_BYTES):
            raise HandshakeError("token slot malformed")
        att = Attestation.from_wire(m.get("att"))
        if not verify_raw(key, codec.tagged(domain, bind), sig):
            raise HandshakeError("transcript signature does not verify")
        if att.node_key != key:
            raise InvalidAttestation("attestation names another node key")
        att.verify()
        pid = node_id(key)
        if pid == self.config.identity.node_id:
            raise PeerIdentityMismatch("connected to ourselves")
        exp = self.config.expected_peer
        if self.initiator and exp is not None and pid != exp:
            raise PeerIdentityMismatch(
                f"dialled node {exp.hex()[:8]} but peer proved {pid.hex()[:8]}"
            )
        return key, att, token

    def _finish(self, peer: tuple[bytes, Attestation, bytes | None], hs3: bytes) -> None:
        key, att, token = peer
        h = _h(self._hs1, self._hs2, hs3)
        i2r = _kdf(self._dh, b"i2r", h)
        r2i = _kdf(self._dh, b"r2i", h)
        self._result = HandshakeResult(
            version=self._version,
            initiator=self.initiator,
            workspace=self.config.workspace,
            peer_key=key,
            peer_id=node_id(key),
            peer_attestation=att,
            peer_token=token,
            send_key=i2r if self.initiator else r2i,
            recv_key=r2i if self.initiator else i2r,
            max_frame=self.config.max_frame,
        )
        self._e_secret = b""
        self.state = HandshakeState.DONE


class Transport:
    """Per-direction authenticated encryption with strict ordering (sticky on error)."""

    def __init__(self, send_key: bytes, recv_key: bytes, *, max_frame: int = DEFAULT_MAX_FRAME):
        self._send_key = send_key
        self._recv_key = recv_key
        self._send_n = 0
        self._recv_n = 0
        self.max_frame = max_frame
        self.broken: P2PWorldError | None = None

    def seal(self, plaintext: bytes) -> bytes:
        if self.broken is not None:
            raise SessionClosed("transport is broken", cause=self.broken.code)
        if len(plaintext) + _TAG > self.max_frame:
            raise LocalProtocolError("frame too large to send", size=len(plaintext))
        if self._send_n >= (1 << 64) - 1:
            raise SessionClosed("nonce space exhausted")
        out = _seal(self._send_key, self._send_n, plaintext)
        self._send_n += 1
        return out

    def open(self, ciphertext: bytes) -> bytes:
        if self.broken is not None:
            raise SessionClosed("transport is broken", cause=self.broken.code)
        try:
            if len(ciphertext) > self.max_frame:
                raise FrameTooLarge("frame exceeds bound", size=len(ciphertext), limit=self.max_frame)
            if len(ciphertext) < _TAG:
                raise FrameRejected("frame shorter than its tag")
            out = _open(self._recv_key, self._recv_n, ciphertext)
        except RemoteProtocolError as e:
            self.broken = e
            raise
        self._recv_n += 1
        return out

    @property
    def frames_sent(self) -> int:
        return self._send_n

    @property
    def frames_received(self) -> int:
        return self._recv_n
