"""Channel records, writer submissions, sequenced entries and signed heads.

Byte layouts are canonical CBOR with domain tags (``docs/protocol.md``, "Channel log"):

* :class:`ChannelRecord` — signed by the channel owner (``p2pworld/channel/v1``).
* :class:`Submission` — signed by the writer, so the sequencer cannot forge a sender: alone
  (``p2pworld/submission/v1`` over its body) or in a batch (:func:`sign_batch`: one signature
  over the Merkle root of the batch's submission hashes, ``p2pworld/submission-batch/v1``;
  each submission then carries its :class:`WriterProof`).
* :class:`Entry` — a submission placed at ``(channel, epoch, seq)`` after ``prev_hash`` at
  ``sequencer_time``; its hash (``p2pworld/entry/v1``) chains the log.
* :class:`SignedHead` — the sequencer's signature over ``(channel, epoch, seq, head_hash)``
  (``p2pworld/head/v1``). One head signature authenticates a whole batch of entries, because
  each entry's hash covers its predecessor's (as hypercore signs its tree root, not each block).

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> w = Ed25519Signer(bytes(32))
    >>> sub = Submission.create(w, channel=bytes(16), idem_key=b"k1", payload=b"hi")
    >>> sub.verify()
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import DecodeError, InvalidSignature, UnsupportedVersion
from p2pworld.identity import Signer, node_id, verify, verify_raw
from p2pworld.log import merkle, verified
from p2pworld.log.policy import (  # re-exported: the policy is part of the record
    DEFAULT_MAX_PAYLOAD as DEFAULT_MAX_PAYLOAD,
    DEFAULT_MAX_VOTERS as DEFAULT_MAX_VOTERS,
    FAILOVER_MODES as FAILOVER_MODES,
    MAX_PAYLOAD_LIMIT as MAX_PAYLOAD_LIMIT,
    MAX_VOTERS as MAX_VOTERS,
    ChannelPolicy as ChannelPolicy,
)

CHANNEL_DOMAIN = "p2pworld/channel/v1"
CHANNEL_ID_DOMAIN = "p2pworld/channel-id/v1"
SUBMISSION_DOMAIN = "p2pworld/submission/v1"
SUBMISSION_BATCH_DOMAIN = "p2pworld/submission-batch/v1"
ENTRY_DOMAIN = "p2pworld/entry/v1"
HEAD_DOMAIN = "p2pworld/head/v1"

GENESIS_HASH = bytes(32)
"""``prev_hash`` of the first entry of epoch 1."""

MAX_CTL_PAYLOAD = 1 << 18
"""Control entries (membership, rekey, close) are made by the library: 256 KiB covers a rekey
wrapped for every one of MAX_PARTICIPANTS members (about 150 bytes each)."""
MAX_PAYLOAD = MAX_PAYLOAD_LIMIT + 4096
"""What a decoder accepts before it knows the channel: the largest limit plus the sealing
overhead of a private channel. The channel's own limit is checked by the fold
(:meth:`~p2pworld.log.state.ChannelState.check_submission`)."""
SEAL_OVERHEAD = 96
"""Bytes a private channel's sealing adds to a payload, at most (nonce, tag, key id, framing;
``tests/test_payload_limits.py`` checks the real figure stays below it)."""
MAX_ENTRY_BYTES = MAX_PAYLOAD + 8192
"""An encoded entry or submission: the payload bound plus every other field."""
MAX_IDEM_KEY = 64
MAX_NAME = 64
MAX_PROOF_PATH = 32
_INT_MAX = (1 << 64) - 1
SIGN_BATCH = 256
"""Most submissions one writer signature covers (a proof path of at most 8 hashes)."""


def hash_bytes(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def channel_id_for(workspace: str, owner: bytes, name: str) -> bytes:
    """Channel ids are derived, so reopening a channel after a restart gives the same id."""
    return hash_bytes(codec.tagged(CHANNEL_ID_DOMAIN, {"ws": workspace, "owner": owner,
                                                       "name": name}))[:16]


MAX_PARTICIPANTS = 1024


@dataclass(frozen=True, kw_only=True)
class ChannelRecord:
    """The channel's genesis: identity, owner, first sequencer, authority, policy, members.

    The record never changes; what changes (epoch, sequencer, participants, closed, channel
    key) is folded from the log into :class:`~p2pworld.log.state.ChannelState`.
    """

    channel: bytes
    workspace: str
    name: str
    owner_key: bytes
    authority_key: bytes
    """Signs unplanned epoch changes (the sequencer is gone) and fork recoveries."""
    private: bool
    """Payloads are end-to-end encrypted with a channel key shared with participants only."""
    participants: tuple[bytes, ...]
    """Initial member keys besides the owner; empty and not private = open to the workspace."""
    policy: ChannelPolicy
    created_at: int
    signature: bytes = b""

    def body(self) -> dict[str, Value]:
        return {
            "ch": self.channel, "ws": self.workspace, "name": self.name,
            "owner": self.owner_key, "authority": self.authority_key, "private": self.private,
            "members": list(self.participants), "policy": self.policy.to_wire(),
            "at": self.created_at,
        }

    @property
    def sequencer_key(self) -> bytes:
        """The epoch-1 sequencer (the owner). Later sequencers come from epoch changes."""
        return self.owner_key

    @property
    def owner_id(self) -> bytes:
        return node_id(self.owner_key)

    def payload_bound(self, kind: str) -> int:
        """The largest entry payload this channel admits for an entry of ``kind``: the
        policy's limit (plus the sealing overhead on a private channel) for ``msg``,
        :data:`MAX_CTL_PAYLOAD` for control entries."""
        if kind != "msg":
            return MAX_CTL_PAYLOAD
        limit = self.policy.payload_limit
        return limit + SEAL_OVERHEAD if self.private else limit

    @property
    def genesis_hash(self) -> bytes:
        """Pins the record: ``p2pworld log verify --genesis`` checks a log against it."""
        return hash_bytes(codec.tagged(CHANNEL_DOMAIN, self.to_wire()))

    @classmethod
    def create(cls, owner: Signer, *, workspace: str, name: str, created_at: int,
               private: bool = False, participants: tuple[bytes, ...] = (),
               authority_key: bytes | None = None,
               policy: ChannelPolicy | None = None) -> ChannelRecord:
        ch = channel_id_for(workspace, node_id(owner.public_key), name)
        members = tuple(sorted(set(participants) - {owner.public_key}))
        rec = cls(channel=ch, workspace=workspace, name=name, owner_key=owner.public_key,
                  authority_key=authority_key or owner.public_key, private=private,
                  participants=members, policy=policy or ChannelPolicy(),
                  created_at=created_at)
        return rec.signed(owner)

    def signed(self, owner: Signer) -> ChannelRecord:
        from dataclasses import replace

        sig = owner.sign(codec.tagged(CHANNEL_DOMAIN, self.body()))
        return replace(self, signature=sig)

    def verify(self) -> None:
        if not verify(self.owner_key, CHANNEL_DOMAIN, self.body(), self.signature):
            raise InvalidSignature("channel record signature does not verify")
        expected = channel_id_for(self.workspace, node_id(self.owner_key), self.name)
        if expected != self.channel:
            raise InvalidSignature("channel id does not match its owner and name")
        if list(self.participants) != sorted(set(self.participants)):
            raise InvalidSignature("participants must be sorted and unique")

    def to_wire(self) -> dict[str, Value]:
        return {**self.body(), "sig": self.signature}

    @classmethod
    def from_wire(cls, value: Any) -> ChannelRecord:
        w = "channel record"
        m = codec.need_map(value, w)
        members = codec.field(m, "members", list, w)
        if len(members) > MAX_PARTICIPANTS or not all(
                isinstance(x, bytes) and len(x) == 32 for x in members):
            raise DecodeError("channel record: members must be <= 1024 32-byte keys")
        return cls(
            channel=codec.bytes_field(m, "ch", w, size=16),
            workspace=codec.str_field(m, "ws", w),
            name=codec.str_field(m, "name", w, max_len=MAX_NAME),
            owner_key=codec.bytes_field(m, "owner", w, size=32),
            authority_key=codec.bytes_field(m, "authority", w, size=32),
            private=codec.field(m, "private", bool, w),
            participants=tuple(members),
            policy=ChannelPolicy.from_wire(m.get("policy")),
            created_at=codec.int_field(m, "at", w),
            signature=codec.bytes_field(m, "sig", w, size=64),
        )


KINDS = ("msg", "ctl")
"""Entry kinds: ``msg`` carries an application payload; ``ctl`` a membership or lifecycle
operation (see :mod:`p2pworld.log.state`), valid only from the channel owner."""


@dataclass(frozen=True)
class WriterProof:
    """Where a submission sits in the batch its writer signed: leaf ``index`` of ``size``
    (at least 2; a submission signed alone has no proof) and the Merkle audit path from its
    hash to the signed root."""

    index: int
    size: int
    path: tuple[bytes, ...]

    def to_wire(self) -> list[Value]:
        return [self.index, self.size, list(self.path)]

    @classmethod
    def from_wire(cls, value: Any, what: str) -> WriterProof:
        if not isinstance(value, list) or len(value) != 3:
            raise DecodeError(f"{what}: writer proof must be [index, size, path]")
        index, size, path = value
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (index, size)) or \
                not 2 <= size <= merkle.MAX_LEAVES or not 0 <= index < size:
            raise DecodeError(f"{what}: writer proof index/size out of range")
        if type(path) is not list or len(path) > MAX_PROOF_PATH or not (
                set(map(type, path)) <= {bytes} and set(map(len, path)) <= {32}):
            raise DecodeError(f"{what}: writer proof path must be <= 32 hashes of 32 bytes")
        return cls(index, size, tuple(path))


class _VerifiedRoots:
    """Batch signatures already checked, so a batch costs one ed25519 verification however
    many of its entries a process sees (a restart re-verifies once per batch). Keyed by
    everything the signature covers; bounded (emptied when full); failures are remembered
    too. Verification is a pure function of the key, so sharing it across nodes in one
    process changes no outcome."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._seen: dict[tuple[bytes, bytes, bytes, int, bytes], bool] = {}

    def check(self, sender_key: bytes, channel: bytes, root: bytes, size: int,
              signature: bytes) -> bool:
        k = (sender_key, channel, root, size, signature)
        ok = self._seen.get(k)
        if ok is None:
            ok = verify_raw(sender_key, codec.tagged(SUBMISSION_BATCH_DOMAIN, {
                "ch": channel, "sender": sender_key, "root": root, "n": size}), signature)
            if len(self._seen) >= self.LIMIT:
                self._seen = {}  # start over (one rebinding: safe from any thread)
            self._seen[k] = ok
        return ok


_VERIFIED_ROOTS = _VerifiedRoots()


@dataclass(frozen=True, kw_only=True)
class Submission:
    """What a writer asks the sequencer to append, signed by the writer (alone, or in a
    batch: then ``proof`` places it under the signed root)."""

    channel: bytes
    sender_key: bytes
    idem_key: bytes
    payload: bytes
    signature: bytes
    kind: str = "msg"
    proof: WriterProof | None = None

    def body(self) -> dict[str, Value]:
        return {"ch": self.channel, "sender": self.sender_key, "key": self.idem_key,
                "payload": self.payload, "kind": self.kind}

    @property
    def sender(self) -> bytes:
        return node_id(self.sender_key)

    @property
    def payload_hash(self) -> bytes:
        return hash_bytes(self.payload)

    @cached_property
    def leaf_hash(self) -> bytes:
        """The submission's hash: a leaf of its batch's Merkle tree."""
        return hash_bytes(codec.tagged(SUBMISSION_DOMAIN, self.body()))

    @classmethod
    def create(cls, writer: Signer, *, channel: bytes, idem_key: bytes, payload: bytes,
               kind: str = "msg") -> Submission:
        body = {"ch": channel, "sender": writer.public_key, "key": idem_key, "payload": payload,
                "kind": kind}
        return cls(channel=channel, sender_key=writer.public_key, idem_key=idem_key,
                   payload=payload, kind=kind,
                   signature=writer.sign(codec.tagged(SUBMISSION_DOMAIN, body)))

    def verify(self) -> None:
        if self.proof is None:
            if not verified.check(self.sender_key, SUBMISSION_DOMAIN, self.body(), self.signature):
                raise InvalidSignature("writer signature does not verify")
            return
        p = self.proof
        root = merkle.root_from_path(self.leaf_hash, p.index, p.size, p.path)
        if root is None or not _VERIFIED_ROOTS.check(self.sender_key, self.channel, root,
                                                     p.size, self.signature):
            raise InvalidSignature("writer batch signature does not verify")

    def to_wire(self) -> dict[str, Value]:
        w = {**self.body(), "sig": self.signature}
        if self.proof is not None:
            w["sp"] = self.proof.to_wire()
        return w

    @classmethod
    def from_wire(cls, value: Any) -> Submission:
        w = "submission"
        m = codec.need_map(value, w)
        key = codec.bytes_field(m, "key", w)
        if not 1 <= len(key) <= MAX_IDEM_KEY:
            raise DecodeError("submission: idempotency key must be 1..64 bytes")
        payload = codec.bytes_field(m, "payload", w)
        if len(payload) > MAX_PAYLOAD:
            raise DecodeError("submission: payload too large", limit=MAX_PAYLOAD)
        return cls(
            channel=codec.bytes_field(m, "ch", w, size=16),
            sender_key=codec.bytes_field(m, "sender", w, size=32),
            idem_key=key,
            payload=payload,
            signature=codec.bytes_field(m, "sig", w, size=64),
            kind=_kind(m, w),
            proof=WriterProof.from_wire(m["sp"], w) if "sp" in m else None,
        )


def verified_batches(subs: Sequence[Submission]) -> set[int]:
    """Positions in ``subs`` whose writer signatures are proven by whole batches: when every
    member of a signed batch is present, the tree is rebuilt from their hashes (``n - 1``
    interior hashes instead of about ``log2 n`` per member) and each member's proof must be
    exactly its path in it. Anything else (partial batches, single signatures) is left to
    :meth:`Submission.verify`. Never raises.

    Example:
        >>> from p2pworld.identity import Ed25519Signer
        >>> subs = sign_batch(Ed25519Signer(bytes(32)), channel=bytes(16),
        ...                   items=[(b"%d" % i, b"x", "msg") for i in range(5)])
        >>> sorted(verified_batches(subs)), sorted(verified_batches(subs[1:]))
        ([0, 1, 2, 3, 4], [])
    """
    groups: dict[tuple[bytes, bytes, bytes, int], list[int]] = {}
    for k, sub in enumerate(subs):
        p = sub.proof
        if p is not None:
            groups.setdefault((sub.sender_key, sub.channel, sub.signature, p.size), []).append(k)
    ok: set[int] = set()
    for (key, ch, sig, n), ks in groups.items():
        if len(ks) != n:
            continue
        order = sorted(ks, key=lambda k: subs[k].proof.index)  # type: ignore[union-attr]
        if [subs[k].proof.index for k in order] != list(range(n)):  # type: ignore[union-attr]
            continue
        root, paths = merkle.tree([subs[k].leaf_hash for k in order])
        if all(subs[k].proof.path == tuple(paths[i])  # type: ignore[union-attr]
               for i, k in enumerate(order)) and _VERIFIED_ROOTS.check(key, ch, root, n, sig):
            ok.update(ks)
    return ok


def sign_batch(writer: Signer, *, channel: bytes,
               items: Sequence[tuple[bytes, bytes, str]]) -> list[Submission]:
    """Sign ``items`` (``(idem_key, payload, kind)``, at most :data:`SIGN_BATCH`) with one
    signature over the Merkle root of their hashes. One item is signed alone.

    Example:
        >>> from p2pworld.identity import Ed25519Signer
        >>> subs = sign_batch(Ed25519Signer(bytes(32)), channel=bytes(16),
        ...                   items=[(b"k1", b"a", "msg"), (b"k2", b"b", "msg")])
        >>> [s.proof.index for s in subs], subs[0].signature == subs[1].signature
        ([0, 1], True)
        >>> subs[1].verify()
    """
    if not 1 <= len(items) <= SIGN_BATCH:
        raise ValueError(f"a batch holds 1..{SIGN_BATCH} submissions")
    if len(items) == 1:
        key, payload, kind = items[0]
        return [Submission.create(writer, channel=channel, idem_key=key, payload=payload,
                                  kind=kind)]
    subs = [Submission(channel=channel, sender_key=writer.public_key, idem_key=key,
                       payload=payload, kind=kind, signature=b"")
            for key, payload, kind in items]
    root, paths = merkle.tree([s.leaf_hash for s in subs])
    n = len(subs)
    sig = writer.sign(codec.tagged(SUBMISSION_BATCH_DOMAIN, {
        "ch": channel, "sender": writer.public_key, "root": root, "n": n}))
    return [Submission(channel=channel, sender_key=writer.public_key, idem_key=s.idem_key,
                       payload=s.payload, kind=s.kind, signature=sig,
                       proof=WriterProof(i, n, tuple(paths[i])))
            for i, s in enumerate(subs)]


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A sequenced submission: one link of the channel's hash chain."""

    channel: bytes
    epoch: int
    seq: int
    prev_hash: bytes
    sender_key: bytes
    sender_sig: bytes
    idem_key: bytes
    payload: bytes
    sequencer_time: int
    """Milliseconds since the Unix epoch on the sequencer's clock (informational)."""
    kind: str = "msg"
    sender_proof: WriterProof | None = None
    """The writer's batch proof (None: the writer signed this submission alone)."""

    def body(self) -> dict[str, Value]:
        b = {
            "ch": self.channel, "epoch": self.epoch, "seq": self.seq, "prev": self.prev_hash,
            "sender": self.sender_key, "ssig": self.sender_sig, "key": self.idem_key,
            "payload": self.payload, "t": self.sequencer_time, "kind": self.kind,
        }
        if self.sender_proof is not None:
            b["sp"] = self.sender_proof.to_wire()
        return b

    @cached_property
    def encoded(self) -> bytes:
        """The entry's canonical CBOR: what its hash covers and what the wire and the store
        carry (encoded once per entry, however many subscribers it goes to)."""
        return codec.encode(self.body())

    @cached_property
    def hash(self) -> bytes:
        return hash_bytes(_ENTRY_PREFIX + self.encoded)

    def to_frame(self) -> bytes:
        """Version byte + :attr:`encoded` (a store row)."""
        return _FRAME_PREFIX + self.encoded

    @classmethod
    def from_bytes(cls, raw: Any) -> Entry:
        """Decode an entry's canonical bytes (strictly: exactly the fields of an entry, in
        their canonical encoding), keeping them as :attr:`encoded`.

        Raises:
            DecodeError: anything else.
        """
        if not isinstance(raw, bytes):
            raise DecodeError("entry: expected its encoded bytes")
        # No data-model walk: the field set is exact and from_wire checks every field's type.
        m = codec.need_map(codec.decode(raw, max_bytes=MAX_ENTRY_BYTES, walk=False), "entry")
        if not _ENTRY_FIELDS[0] <= set(m) <= _ENTRY_FIELDS[1]:
            raise DecodeError("entry: unexpected or missing fields")
        e = cls.from_wire(m)
        e.__dict__["encoded"] = raw  # decode checked: raw is the canonical encoding of m
        return e

    @classmethod
    def from_frame(cls, data: bytes) -> Entry:
        """Inverse of :meth:`to_frame`."""
        if not data:
            raise DecodeError("empty frame")
        if data[0] != codec.FORMAT_VERSION:
            raise UnsupportedVersion(f"frame version {data[0]} not supported", version=data[0])
        return cls.from_bytes(bytes(data[1:]))

    @property
    def sender(self) -> bytes:
        return node_id(self.sender_key)

    def submission(self) -> Submission:
        return Submission(channel=self.channel, sender_key=self.sender_key,
                          idem_key=self.idem_key, payload=self.payload, signature=self.sender_sig,
                          kind=self.kind, proof=self.sender_proof)

    def to_wire(self) -> dict[str, Value]:
        return self.body()

    @classmethod
    def from_wire(cls, value: Any) -> Entry:
        # Hot (every entry a replica receives): one flat check instead of a helper per field.
        m = codec.need_map(value, "entry")
        try:
            ch, epoch, seq, prev, sender, ssig, key, payload, t, kind = (
                m["ch"], m["epoch"], m["seq"], m["prev"], m["sender"], m["ssig"], m["key"],
                m["payload"], m["t"], m["kind"])
        except KeyError as e:
            raise DecodeError(f"entry: missing field {e.args[0]!r}") from None
        if not (type(ch) is bytes and len(ch) == 16 and type(prev) is bytes and len(prev) == 32
                and type(sender) is bytes and len(sender) == 32
                and type(ssig) is bytes and len(ssig) == 64
                and type(key) is bytes and 1 <= len(key) <= MAX_IDEM_KEY
                and type(payload) is bytes and len(payload) <= MAX_PAYLOAD
                and type(epoch) is int and 1 <= epoch <= _INT_MAX
                and type(seq) is int and 1 <= seq <= _INT_MAX
                and type(t) is int and 0 <= t <= _INT_MAX and kind in KINDS):
            raise DecodeError("entry: a field has the wrong type, size or range (payload <= "
                              f"{MAX_PAYLOAD} bytes, key 1..{MAX_IDEM_KEY} bytes)")
        return cls(channel=ch, epoch=epoch, seq=seq, prev_hash=prev, sender_key=sender,
                   sender_sig=ssig, idem_key=key, payload=payload, sequencer_time=t,
                   kind=kind,
                   sender_proof=WriterProof.from_wire(m["sp"], "entry") if "sp" in m else None)


_ENTRY_PREFIX = ENTRY_DOMAIN.encode() + b"\x00"
_FRAME_PREFIX = bytes([codec.FORMAT_VERSION])
_ENTRY_REQUIRED = frozenset({"ch", "epoch", "seq", "prev", "sender", "ssig", "key", "payload",
                             "t", "kind"})
_ENTRY_FIELDS = (_ENTRY_REQUIRED, _ENTRY_REQUIRED | {"sp"})


def _kind(m: dict[str, Value], what: str) -> str:
    k = codec.str_field(m, "kind", what, max_len=8)
    if k not in KINDS:
        raise DecodeError(f"{what}: unknown kind {k!r}")
    return k


@dataclass(frozen=True, kw_only=True)
class SignedHead:
    """The sequencer's signature over the chain head; authenticates every entry up to ``seq``."""

    channel: bytes
    epoch: int
    seq: int
    head_hash: bytes
    signature: bytes

    def body(self) -> dict[str, Value]:
        return {"ch": self.channel, "epoch": self.epoch, "seq": self.seq, "head": self.head_hash}

    @classmethod
    def create(cls, sequencer: Signer, *, channel: bytes, epoch: int, seq: int,
               head_hash: bytes) -> SignedHead:
        body = {"ch": channel, "epoch": epoch, "seq": seq, "head": head_hash}
        return cls(channel=channel, epoch=epoch, seq=seq, head_hash=head_hash,
                   signature=sequencer.sign(codec.tagged(HEAD_DOMAIN, body)))

    def verify(self, sequencer_key: bytes) -> None:
        if not verified.check(sequencer_key, HEAD_DOMAIN, self.body(), self.signature):
            raise InvalidSignature("head signature does not verify")

    def to_wire(self) -> dict[str, Value]:
        return {**self.body(), "sig": self.signature}

    @classmethod
    def from_wire(cls, value: Any) -> SignedHead:
        w = "head"
        m = codec.need_map(value, w)
        return cls(
            channel=codec.bytes_field(m, "ch", w, size=16),
            epoch=codec.int_field(m, "epoch", w, lo=1),
            seq=codec.int_field(m, "seq", w),
            head_hash=codec.bytes_field(m, "head", w, size=32),
            signature=codec.bytes_field(m, "sig", w, size=64),
        )
