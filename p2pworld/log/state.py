"""Channel state: a deterministic fold over the log, its hash, epoch changes and snapshots.

The state of a channel is everything a replica needs to validate the next entry and to
answer an idempotent resubmission, and nothing else:

* the genesis record (pinned by its hash), the current epoch and sequencer,
* participants, closed flag, channel-key wrappings (private channels),
* the head ``(seq, hash)`` and the retention floor,
* the per-sender idempotency index ``(sender, key) -> (seq, payload hash, entry hash)``.

``state_hash`` is BLAKE2b-256 over ``tagged("p2pworld/channel-state/v1", canonical state)``
(``docs/protocol.md`` §5.4). Replaying a snapshot plus the tail gives the same hash as replaying
from zero: the replay tests check it at every prefix.

Control entries (``kind="ctl"``, owner only) carry a canonical map:

* ``{"op": "add", "member": key}`` / ``{"op": "remove", "member": key}``
* ``{"op": "rekey", "key_id": n, "wrapped": {node_id_hex: bytes}}`` (private channels)
* ``{"op": "close"}`` — no more appends; readers can still catch up.

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> from p2pworld.log.entry import ChannelRecord
    >>> owner = Ed25519Signer(bytes(32))
    >>> st = ChannelState.genesis(ChannelRecord.create(owner, workspace="w", name="c",
    ...                                               created_at=0))
    >>> (st.epoch, st.seq, len(st.state_hash()))
    (1, 0, 32)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import (
    ChainBroken,
    ChannelClosed,
    DecodeError,
    Fenced,
    InvalidSignature,
    LocalProtocolError,
    NotParticipant,
    PayloadTooLarge,
    RemoteProtocolError,
    Unauthorized,
)
from p2pworld.identity import Signer, node_id, verify
from p2pworld.log.election import Vote, check_election, votes_from_wire, votes_to_wire
from p2pworld.log.entry import (
    GENESIS_HASH,
    MAX_CTL_PAYLOAD,
    MAX_VOTERS,
    ChannelRecord,
    Entry,
    Submission,
    hash_bytes,
)

STATE_DOMAIN = "p2pworld/channel-state/v1"
EPOCH_DOMAIN = "p2pworld/epoch/v1"
SNAPSHOT_DOMAIN = "p2pworld/snapshot/v1"
CTL_OPS = ("add", "remove", "rekey", "close", "voter")
EPOCH_REASONS = ("handoff", "recovery", "rollback", "election")
VOTER_PAYLOAD = codec.encode({"op": "voter"})
"""The payload of a ``voter`` control entry (any writer's: it joins the voters)."""
MAX_STATE_BYTES = 256 << 20
MAX_STATE_ITEMS = 1 << 22


@dataclass(frozen=True, kw_only=True)
class EpochChange:
    """Moves the sequencer role: ``handoff`` (signed by the current sequencer), ``recovery``
    (signed by the channel's authority key: the sequencer is gone, or the channel forked) or
    ``election`` (signed by its winner, with a quorum of ``votes`` from the ``voters`` in force
    at its start: :mod:`p2pworld.log.election`).

    The new epoch continues the chain after ``(start_seq, start_hash)``; entries of older
    epochs past ``start_seq`` are refused from then on (fencing).
    """

    channel: bytes
    epoch: int
    sequencer_key: bytes
    start_seq: int
    start_hash: bytes
    reason: str
    signer_key: bytes
    signature: bytes = b""
    voters: tuple[bytes, ...] = ()
    votes: tuple[Vote, ...] = ()

    def body(self) -> dict[str, Value]:
        out: dict[str, Value] = {
            "ch": self.channel, "epoch": self.epoch, "seqr": self.sequencer_key,
            "start": self.start_seq, "start_hash": self.start_hash, "reason": self.reason,
            "by": self.signer_key}
        if self.reason == "election":
            out["elect"] = votes_to_wire(self.voters, self.votes)
        return out

    @classmethod
    def create(cls, signer: Signer, *, channel: bytes, epoch: int, sequencer_key: bytes,
               start_seq: int, start_hash: bytes, reason: str,
               voters: tuple[bytes, ...] = (), votes: tuple[Vote, ...] = ()) -> EpochChange:
        ec = cls(channel=channel, epoch=epoch, sequencer_key=sequencer_key, start_seq=start_seq,
                 start_hash=start_hash, reason=reason, signer_key=signer.public_key,
                 voters=voters, votes=votes)
        from dataclasses import replace

        return replace(ec, signature=signer.sign(codec.tagged(EPOCH_DOMAIN, ec.body())))

    def verify_signature(self) -> None:
        if not verify(self.signer_key, EPOCH_DOMAIN, self.body(), self.signature):
            raise InvalidSignature("epoch change signature does not verify")

    def to_wire(self) -> dict[str, Value]:
        return {**self.body(), "sig": self.signature}

    @classmethod
    def from_wire(cls, value: Any) -> EpochChange:
        w = "epoch change"
        m = codec.need_map(value, w)
        reason = codec.str_field(m, "reason", w, max_len=16)
        if reason not in EPOCH_REASONS:
            raise DecodeError("epoch change: unknown reason")
        voters, votes = votes_from_wire(m.get("elect")) if reason == "election" else ((), ())
        return cls(voters=voters, votes=votes,
                   channel=codec.bytes_field(m, "ch", w, size=16),
                   epoch=codec.int_field(m, "epoch", w, lo=2),
                   sequencer_key=codec.bytes_field(m, "seqr", w, size=32),
                   start_seq=codec.int_field(m, "start", w),
                   start_hash=codec.bytes_field(m, "start_hash", w, size=32),
                   reason=reason, signer_key=codec.bytes_field(m, "by", w, size=32),
                   signature=codec.bytes_field(m, "sig", w, size=64))


@dataclass(frozen=True)
class IdemRecord:
    seq: int
    payload_hash: bytes
    entry_hash: bytes


@dataclass
class ChannelState:
    """The fold of a channel's log (see module docs). Mutated only by ``apply*``."""

    record: ChannelRecord
    epoch: int = 1
    sequencer_key: bytes = b""
    participants: set[bytes] = field(default_factory=set)
    closed: bool = False
    keys: dict[int, dict[str, bytes]] = field(default_factory=dict)
    seq: int = 0
    head_hash: bytes = GENESIS_HASH
    floor: int = 0
    """Highest seq no longer held as an entry (retention); the log starts at ``floor + 1``."""
    idem: dict[tuple[bytes, bytes], IdemRecord] = field(default_factory=dict)
    epochs: list[EpochChange] = field(default_factory=list)
    joined: set[bytes] = field(default_factory=set)
    """Keys that joined a public majority channel's voters: the senders of its entries (a
    writer's first entry, or a reader's ``voter`` entry), while the set had room."""

    @classmethod
    def genesis(cls, record: ChannelRecord) -> ChannelState:
        return cls(record=record, sequencer_key=record.owner_key,
                   participants=set(record.participants) | {record.owner_key})

    def copy(self) -> ChannelState:
        return copy.deepcopy(self)

    def trial(self) -> ChannelState:
        """A cheap scratch copy for validating a batch: everything but the idempotency index
        (which validation never reads), so checking a batch costs O(batch), not O(log)."""
        return ChannelState(record=self.record, epoch=self.epoch,
                            sequencer_key=self.sequencer_key,
                            participants=set(self.participants), closed=self.closed,
                            keys={k: dict(v) for k, v in self.keys.items()}, seq=self.seq,
                            head_hash=self.head_hash, floor=self.floor, idem={},
                            epochs=list(self.epochs), joined=set(self.joined))

    @property
    def channel(self) -> bytes:
        return self.record.channel

    @property
    def sequencer_id(self) -> bytes:
        return node_id(self.sequencer_key)

    @property
    def restricted(self) -> bool:
        """Only participants may read and write (private, or members were named)."""
        return self.record.private or bool(self.record.participants)

    def may_write(self, key: bytes) -> bool:
        return not self.restricted or key in self.participants

    @property
    def majority(self) -> bool:
        """The channel fails over by election (:mod:`p2pworld.log.election`)."""
        return self.record.policy.failover == "majority"

    @property
    def voters(self) -> tuple[bytes, ...]:
        """Who votes in an election, sorted (empty unless :attr:`majority`): the owner; the
        first participants by key up to the policy's bound on a restricted channel, else the
        keys that joined (:attr:`joined`); and the policy's witness."""
        pol = self.record.policy
        if pol.failover != "majority":
            return ()
        owner = self.record.owner_key
        if self.restricted:
            chosen = {owner, *sorted(self.participants - {owner})[:pol.max_voters - 1]}
        else:
            chosen = {owner, *self.joined}
        if pol.witness is not None:
            chosen.add(pol.witness)
        return tuple(sorted(chosen))

    def ack_counters(self) -> set[bytes] | None:
        """The keys whose stored cursors count for ``replicated`` acks: the voters on a
        majority channel (so every election quorum meets each such ack), else None (any
        writer)."""
        return set(self.voters) if self.majority else None

    # --- validation and fold ----------------------------------------------------------------

    def check_submission(self, sub: Submission) -> None:
        """Would this submission be valid as the next entry? Raises a typed refusal."""
        if self.closed:
            raise ChannelClosed("channel is closed to new entries")
        bound = self.record.payload_bound(sub.kind)
        if len(sub.payload) > bound:
            raise PayloadTooLarge(f"payload of {len(sub.payload)} bytes is over the channel's "
                                  f"limit of {bound}", size=len(sub.payload), limit=bound)
        if sub.kind == "ctl":
            if self._voter_op(sub.sender_key, sub.payload):
                return
            if sub.sender_key != self.record.owner_key:
                raise Unauthorized("only the channel owner may submit control entries")
            self._parse_ctl(sub.payload)
        elif not self.may_write(sub.sender_key):
            raise NotParticipant("sender is not a participant of this channel")

    def apply(self, entry: Entry) -> None:
        """Fold one entry that extends the head (chain and signatures already checked)."""
        if entry.seq != self.seq + 1 or entry.prev_hash != self.head_hash:
            raise ChainBroken("entry does not extend the head", seq=entry.seq)
        if entry.epoch != self.epoch:
            raise Fenced("entry of another epoch", epoch=entry.epoch)
        sender = entry.sender_key
        if sender not in self.joined and sender != self.record.owner_key:
            self._join(sender)  # a writer joins a public majority channel's voters
        if entry.kind == "ctl" and entry.sender_key == self.record.owner_key and \
                not self.closed:
            op = self._parse_ctl(entry.payload)
            if op["op"] == "add":
                self.participants.add(op["member"])
            elif op["op"] == "remove":
                self.participants.discard(op["member"])
                if op["member"] == self.record.owner_key:
                    self.participants.add(op["member"])
            elif op["op"] == "rekey":
                self.keys[op["key_id"]] = dict(op["wrapped"])
            elif op["op"] == "close":
                self.closed = True
        h = entry.hash
        self.idem[(entry.sender_key, entry.idem_key)] = IdemRecord(
            entry.seq, hash_bytes(entry.payload), h)
        self.seq = entry.seq
        self.head_hash = h

    def replay(self, entries: list[Entry], epochs: list[EpochChange]) -> None:
        """Fold ``entries``, entering each epoch of ``epochs`` where the log crosses it."""
        later = [ec for ec in epochs if ec.epoch > self.epoch]
        for e in entries:
            while e.epoch != self.epoch and later and later[0].start_seq == self.seq:
                self.apply_epoch(later.pop(0))
            self.apply(e)

    def check_epoch_change(self, ec: EpochChange) -> None:
        """Is ``ec`` a valid successor of this state's epoch? Raises a typed refusal."""
        if ec.channel != self.channel:
            raise ChainBroken("epoch change for another channel")
        ec.verify_signature()
        if ec.reason == "handoff":
            if ec.signer_key != self.sequencer_key or ec.epoch != self.epoch + 1:
                raise Unauthorized("a handoff must be signed by the current sequencer")
        elif ec.reason == "rollback":
            # The sequencer itself, whose store rolled back, starts a new epoch at the head
            # it still holds: it stays the sequencer, and what followed is reported lost.
            if ec.signer_key != self.sequencer_key or ec.sequencer_key != ec.signer_key \
                    or ec.epoch != self.epoch + 1:
                raise Unauthorized("a rollback epoch is the current sequencer's own")
        elif ec.reason == "election":
            if not self.majority:
                raise Unauthorized("this channel fails over by its authority key, not by vote")
            check_election(ec, epoch=self.epoch, replication=self.record.policy.replication)
        elif ec.signer_key != self.record.authority_key or ec.epoch <= self.epoch:
            raise Unauthorized("a recovery must be signed by the channel's authority key")

    def apply_epoch(self, ec: EpochChange) -> None:
        """Enter ``ec``'s epoch. The head must already be ``(start_seq, start_hash)``."""
        if (self.seq, self.head_hash) != (ec.start_seq, ec.start_hash):
            raise LocalProtocolError("truncate or catch up to the epoch start first")
        self.check_voters(ec)
        self.epoch = ec.epoch
        self.sequencer_key = ec.sequencer_key
        self.epochs.append(ec)

    def check_voters(self, ec: EpochChange) -> None:
        """An election names the voter set this state (at its start) folds to; else
        ``Unauthorized``: votes from another set prove nothing."""
        if ec.reason == "election" and ec.voters != self.voters:
            raise Unauthorized("the election's voter set is not the channel's at its start")

    def _join(self, sender: bytes) -> None:
        """Every sequenced entry of a writer (a ``voter`` entry, or any other) joins it to a
        public majority channel's voters, while the set has room."""
        pol = self.record.policy
        if pol.failover == "majority" and not self.restricted and \
                len(self.joined) + 1 < pol.max_voters:
            self.joined.add(sender)

    def _voter_op(self, sender: bytes, payload: bytes) -> bool:
        """Is this a ``voter`` entry (a writer joining a majority channel's voters)?"""
        if not self.majority or payload != VOTER_PAYLOAD:
            return False
        return self.may_write(sender)

    @staticmethod
    def _parse_ctl(payload: bytes) -> dict[str, Any]:
        w = "control entry"
        try:
            m = codec.need_map(codec.decode(payload, max_bytes=MAX_CTL_PAYLOAD), w)
        except DecodeError:
            raise Unauthorized("control entry payload is malformed") from None
        op = m.get("op")
        if op not in CTL_OPS:
            raise Unauthorized(f"unknown control operation {str(op)[:16]!r}")
        try:
            if op in ("add", "remove"):
                codec.bytes_field(m, "member", w, size=32)
            elif op == "rekey":
                codec.int_field(m, "key_id", w, lo=1)
                wrapped = codec.need_map(m.get("wrapped"), w)
                if not all(isinstance(v, bytes) for v in wrapped.values()):
                    raise DecodeError("wrapped keys must be bytes")
        except DecodeError as e:
            raise Unauthorized(f"control entry malformed: {e.message}") from None
        return m

    # --- hashing and snapshots --------------------------------------------------------------

    def canonical(self) -> dict[str, Value]:
        return {
            "genesis": self.record.genesis_hash,
            "epoch": self.epoch,
            "seqr": self.sequencer_key,
            "members": sorted(self.participants),
            "closed": self.closed,
            "keys": [[k, [[n, self.keys[k][n]] for n in sorted(self.keys[k])]]
                     for k in sorted(self.keys)],
            "seq": self.seq,
            "head": self.head_hash,
            "idem": [[s, k, r.seq, r.payload_hash, r.entry_hash]
                     for (s, k), r in sorted(self.idem.items())],
            "epochs": [ec.to_wire() for ec in self.epochs],
            **({"joined": sorted(self.joined)} if self.joined else {}),
        }

    def state_hash(self) -> bytes:
        return hash_bytes(codec.tagged(STATE_DOMAIN, self.canonical()))

    def encode(self) -> bytes:
        """The full state as bytes (snapshots, store): canonical state plus the record."""
        return codec.encode_frame({"state": self.canonical(), "floor": self.floor,
                                   "record": self.record.to_wire()})

    @classmethod
    def decode(cls, data: bytes) -> ChannelState:
        w = "channel state"
        # A state holds one idempotency record per (sender, key) ever used: its collections
        # may be far larger than a message's.
        m = codec.need_map(codec.decode_frame(data, max_bytes=MAX_STATE_BYTES,
                                              max_items=MAX_STATE_ITEMS), w)
        rec = ChannelRecord.from_wire(m.get("record"))
        s = codec.need_map(m.get("state"), w)
        if codec.bytes_field(s, "genesis", w, size=32) != rec.genesis_hash:
            raise DecodeError("channel state: genesis hash does not match the record")
        st = cls(record=rec, epoch=codec.int_field(s, "epoch", w, lo=1),
                 sequencer_key=codec.bytes_field(s, "seqr", w, size=32),
                 participants=set(codec.field(s, "members", list, w)),
                 closed=codec.field(s, "closed", bool, w),
                 seq=codec.int_field(s, "seq", w), head_hash=codec.bytes_field(s, "head", w,
                                                                               size=32),
                 floor=codec.int_field(m, "floor", w))
        for k, pairs in codec.field(s, "keys", list, w):
            st.keys[int(k)] = {str(n): bytes(v) for n, v in pairs}
        for row in codec.field(s, "idem", list, w):
            if not (isinstance(row, list) and len(row) == 5):
                raise DecodeError("channel state: bad idempotency row")
            sender, key, seq, ph, eh = row
            st.idem[(bytes(sender), bytes(key))] = IdemRecord(int(seq), bytes(ph), bytes(eh))
        st.epochs = [EpochChange.from_wire(e) for e in codec.field(s, "epochs", list, w)]
        joined = codec.field(s, "joined", list, w) if "joined" in s else []
        if not all(type(k) is bytes and len(k) == 32 for k in joined) or \
                len(joined) > MAX_VOTERS:
            raise DecodeError("channel state: bad voter keys")
        st.joined = set(joined)
        return st


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """A state at ``seq``, signed by the sequencer of its epoch: a newcomer or a cursor older
    than retention starts from it and then takes the tail."""

    state: bytes
    seq: int
    state_hash: bytes
    signer_key: bytes
    signature: bytes

    @classmethod
    def create(cls, signer: Signer, state: ChannelState) -> Snapshot:
        h = state.state_hash()
        body = {"ch": state.channel, "seq": state.seq, "hash": h}
        return cls(state=state.encode(), seq=state.seq, state_hash=h,
                   signer_key=signer.public_key,
                   signature=signer.sign(codec.tagged(SNAPSHOT_DOMAIN, body)))

    def open(self, record: ChannelRecord) -> ChannelState:
        """Decode and verify against the channel's genesis: the epoch changes inside must form
        a valid chain from the owner, and the snapshot must be signed by the sequencer that
        chain ends at."""
        st = ChannelState.decode(self.state)
        body = {"ch": st.channel, "seq": self.seq, "hash": self.state_hash}
        if st.record.genesis_hash != record.genesis_hash:
            raise ChainBroken("snapshot of another channel")
        if st.seq != self.seq or st.state_hash() != self.state_hash:
            raise ChainBroken("snapshot contents do not match its hash")
        walk = ChannelState.genesis(record)
        for ec in st.epochs:
            try:
                walk.check_epoch_change(ec)
            except RemoteProtocolError:
                raise ChainBroken("snapshot carries an invalid epoch change") from None
            walk.epoch, walk.sequencer_key = ec.epoch, ec.sequencer_key
        if (walk.epoch, walk.sequencer_key) != (st.epoch, st.sequencer_key):
            raise ChainBroken("snapshot epoch does not follow from its epoch changes")
        if self.signer_key != st.sequencer_key or not verify(
                self.signer_key, SNAPSHOT_DOMAIN, body, self.signature):
            raise ChainBroken("snapshot signature does not verify")
        return st

    def to_wire(self) -> dict[str, Value]:
        return {"state": self.state, "seq": self.seq, "hash": self.state_hash,
                "by": self.signer_key, "sig": self.signature}

    @classmethod
    def from_wire(cls, value: Any) -> Snapshot:
        w = "snapshot"
        m = codec.need_map(value, w)
        return cls(state=codec.bytes_field(m, "state", w), seq=codec.int_field(m, "seq", w),
                   state_hash=codec.bytes_field(m, "hash", w, size=32),
                   signer_key=codec.bytes_field(m, "by", w, size=32),
                   signature=codec.bytes_field(m, "sig", w, size=64))


def scope_kind(kind: str, payload: bytes) -> str:
    """The kind a submission's token scope is taken from: a ``voter`` entry joins with the
    scope to publish (it is any writer's), other control entries need the owner's."""
    return "msg" if kind == "ctl" and payload == VOTER_PAYLOAD else kind


def ctl_payload(op: str, **fields: Value) -> bytes:
    """Encode a control operation (see module docs)."""
    return codec.encode({"op": op, **fields})
