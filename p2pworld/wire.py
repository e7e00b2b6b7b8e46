"""Session messages: the registry of every message type peers exchange after the handshake.

Each message is a frozen dataclass with a wire name ``TYPE`` and a ``MUTATES`` flag (does
accepting it change shared state?). :data:`MESSAGE_TYPES` is the one registry: the decoder
uses it, and the auth tests iterate it so no mutation path can be forgotten. A session frame's
plaintext is ``encode_frame({"t": TYPE, ...fields})``. The base class and the registry are
:mod:`p2pworld.message`'s; the election messages are :mod:`p2pworld.wire_elections`'.

Example:
    >>> decode_message(encode_message(Ping(n=3)))
    Ping(n=3)
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import DecodeError
from p2pworld.log.entry import ChannelRecord, Entry, SignedHead, Submission
from p2pworld.log.state import EpochChange, Snapshot
from p2pworld.message import MESSAGE_TYPES as MESSAGE_TYPES, Message as Message, message
from p2pworld.wire_elections import VoteReply, VoteRequest, VotersWanted, VoteWithdrawn

MAX_BATCH = 512
"""Most entries in one ``ents`` message."""
MAX_RESTORE = 4096
"""Entries one :class:`Restore` may carry (a rollback larger than that is reported lost)."""
MAX_EPOCHS = 1024
"""Most epoch changes in one ``headr`` message."""
MAX_EPOCH_ENTRIES = 4096
"""Most old-epoch entries in one ``epoch`` message."""


@message
@dataclass(frozen=True)
class Ping(Message):
    TYPE = "ping"
    n: int

    def fields(self) -> dict[str, Value]:
        return {"n": self.n}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Ping:
        return cls(codec.int_field(m, "n", "ping"))


@message
@dataclass(frozen=True)
class Pong(Message):
    TYPE = "pong"
    n: int

    def fields(self) -> dict[str, Value]:
        return {"n": self.n}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Pong:
        return cls(codec.int_field(m, "n", "pong"))


@message
@dataclass(frozen=True)
class ChannelAnnounce(Message):
    """``open_channel`` as seen by peers: a channel record signed by its owner."""

    TYPE = "chan"
    MUTATES = True
    record: ChannelRecord
    epochs: tuple[EpochChange, ...] = ()

    def fields(self) -> dict[str, Value]:
        return {"rec": self.record.to_wire(), "epochs": [e.to_wire() for e in self.epochs]}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> ChannelAnnounce:
        raw = codec.field(m, "epochs", list, "chan")
        if len(raw) > MAX_BATCH:
            raise DecodeError("chan: too many epoch changes")
        return cls(ChannelRecord.from_wire(m.get("rec")),
                   tuple(EpochChange.from_wire(e) for e in raw))


@message
@dataclass(frozen=True)
class Subscribe(Message):
    """Ask a channel's sequencer for every entry after ``after`` and then live traffic."""

    TYPE = "sub"
    channel: bytes
    after: int
    after_hash: bytes = bytes(32)
    epoch: int = 1

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel, "after": self.after, "hash": self.after_hash,
                "epoch": self.epoch}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Subscribe:
        w = "sub"
        return cls(codec.bytes_field(m, "ch", w, size=16), codec.int_field(m, "after", w),
                   codec.bytes_field(m, "hash", w, size=32), codec.int_field(m, "epoch", w, lo=1))


@message
@dataclass(frozen=True)
class SubscribeRefused(Message):
    """The cursor sent with ``sub`` does not match the log (``CHECKPOINT_MISMATCH``) or the
    peer may not read the channel (``NOT_PARTICIPANT``)."""

    TYPE = "subr"
    channel: bytes
    code: str
    reason: str

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel, "code": self.code, "reason": self.reason}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> SubscribeRefused:
        w = "subr"
        return cls(codec.bytes_field(m, "ch", w, size=16), codec.str_field(m, "code", w, max_len=64),
                   codec.str_field(m, "reason", w, max_len=512))


@message
@dataclass(frozen=True)
class SnapshotMsg(Message):
    """A signed snapshot: the answer to a cursor older than retention (``CHECKPOINT_TOO_OLD``)."""

    TYPE = "snap"
    channel: bytes
    snapshot: Snapshot

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel, "snap": self.snapshot.to_wire()}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> SnapshotMsg:
        return cls(codec.bytes_field(m, "ch", "snap", size=16), Snapshot.from_wire(m.get("snap")))


@message
@dataclass(frozen=True)
class EpochMsg(Message):
    """An epoch change, with the old-epoch entries a subscriber lacks up to its start."""

    TYPE = "epoch"
    MUTATES = True
    change: EpochChange
    entries: tuple[Entry, ...] = ()

    def fields(self) -> dict[str, Value]:
        return {"ec": self.change.to_wire(), "ents": [e.encoded for e in self.entries]}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> EpochMsg:
        raw = codec.field(m, "ents", list, "epoch")
        if len(raw) > MAX_EPOCH_ENTRIES:
            raise DecodeError("epoch: batch too large", limit=MAX_EPOCH_ENTRIES)
        return cls(EpochChange.from_wire(m.get("ec")), tuple(Entry.from_bytes(e) for e in raw))


@message
@dataclass(frozen=True)
class Stored(Message):
    """A replica's durable cursor, sent to the sequencer after it fsynced entries up to
    ``seq``: what ``replicated`` acks are counted from."""

    TYPE = "stored"
    TYPED = True
    channel: bytes
    epoch: int
    seq: int
    head_hash: bytes

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel, "epoch": self.epoch, "seq": self.seq, "head": self.head_hash}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Stored:
        w = "stored"
        return cls(codec.bytes_field(m, "ch", w, size=16), codec.int_field(m, "epoch", w, lo=1),
                   codec.int_field(m, "seq", w), codec.bytes_field(m, "head", w, size=32))


@message
@dataclass(frozen=True)
class Tip(Message):
    """The sequencer's head as it stands (``seq`` in ``epoch``), sent to a subscriber when it
    subscribes and whenever catch-up holds entries back: what a replica's ``lag`` is measured
    against, so a replica that cannot get past an entry shows it. Informational (unsigned):
    entries are still accepted only under signed heads."""

    TYPE = "tip"
    TYPED = True
    channel: bytes
    epoch: int
    seq: int

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel, "epoch": self.epoch, "seq": self.seq}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Tip:
        w = "tip"
        return cls(codec.bytes_field(m, "ch", w, size=16), codec.int_field(m, "epoch", w, lo=1),
                   codec.int_field(m, "seq", w))


@message
@dataclass(frozen=True)
class Entries(Message):
    """A batch of consecutive entries and the signed head that covers the last one."""

    TYPE = "ents"
    TYPED = True
    entries: tuple[Entry, ...]
    head: SignedHead

    def fields(self) -> dict[str, Value]:
        return {"ents": [e.encoded for e in self.entries], "head": self.head.to_wire()}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Entries:
        raw = codec.field(m, "ents", list, "ents")
        if len(raw) > MAX_BATCH:
            raise DecodeError("ents: batch too large", limit=MAX_BATCH)
        return cls(tuple(Entry.from_bytes(e) for e in raw), SignedHead.from_wire(m.get("head")))


@message
@dataclass(frozen=True)
class HeadQuery(Message):
    """A sequencer that has just loaded its channels from disk asks a peer what it holds of
    ``channel`` (the start-up exchange, ``docs/protocol.md`` §5.7): its store may have rolled
    back, and only peers can tell."""

    TYPE = "headq"
    TYPED = True
    channel: bytes

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> HeadQuery:
        return cls(codec.bytes_field(m, "ch", "headq", size=16))


@message
@dataclass(frozen=True)
class HeadReport(Message):
    """The answer to :class:`HeadQuery`: this node's head of ``channel`` (``seq`` 0 and a
    zero hash: it holds no copy), its epoch, and the epoch changes it knows, each checked by
    the asker as any epoch-change proof."""

    TYPE = "headr"
    TYPED = True
    channel: bytes
    epoch: int
    seq: int
    head_hash: bytes
    epochs: tuple[EpochChange, ...] = ()
    signed: SignedHead | None = None
    """The sequencer's signature over this head, when the peer holds it: a claim to be ahead
    counts only with it (an unsigned report cannot make a sequencer restore or declare
    anything lost)."""

    def fields(self) -> dict[str, Value]:
        out: dict[str, Value] = {"ch": self.channel, "epoch": self.epoch, "seq": self.seq,
                                 "head": self.head_hash,
                                 "ecs": [e.to_wire() for e in self.epochs]}
        if self.signed is not None:
            out["sig"] = self.signed.to_wire()
        return out

    @classmethod
    def parse(cls, m: dict[str, Value]) -> HeadReport:
        w = "headr"
        raw = codec.field(m, "ecs", list, w)
        if len(raw) > MAX_EPOCHS:
            raise DecodeError("headr: too many epoch changes", limit=MAX_EPOCHS)
        sig = m.get("sig")
        return cls(codec.bytes_field(m, "ch", w, size=16), codec.int_field(m, "epoch", w, lo=1),
                   codec.int_field(m, "seq", w), codec.bytes_field(m, "head", w, size=32),
                   tuple(EpochChange.from_wire(e) for e in raw),
                   None if sig is None else SignedHead.from_wire(sig))


@message
@dataclass(frozen=True)
class RestoreRequest(Message):
    """A sequencer whose head is behind a peer's (its store rolled back) asks that peer for
    the entries after ``after`` (whose hash is ``after_hash``)."""

    TYPE = "restq"
    TYPED = True
    channel: bytes
    after: int
    after_hash: bytes

    def fields(self) -> dict[str, Value]:
        return {"ch": self.channel, "after": self.after, "hash": self.after_hash}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> RestoreRequest:
        w = "restq"
        return cls(codec.bytes_field(m, "ch", w, size=16), codec.int_field(m, "after", w),
                   codec.bytes_field(m, "hash", w, size=32))


@message
@dataclass(frozen=True)
class Restore(Message):
    """The answer to :class:`RestoreRequest`: the entries after the asker's head up to this
    replica's last signed head, which authenticates them all (the asker signed it before its
    store rolled back). ``head`` None: this node cannot (it holds no such prefix, or the gap
    is over the restore bound)."""

    TYPE = "rest"
    TYPED = True
    channel: bytes
    entries: tuple[Entry, ...] = ()
    head: SignedHead | None = None

    def fields(self) -> dict[str, Value]:
        out: dict[str, Value] = {"ch": self.channel, "ents": [e.encoded for e in self.entries]}
        if self.head is not None:
            out["head"] = self.head.to_wire()
        return out

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Restore:
        w = "rest"
        raw = codec.field(m, "ents", list, w)
        if len(raw) > MAX_RESTORE:
            raise DecodeError("rest: too many entries", limit=MAX_RESTORE)
        head = m.get("head")
        return cls(codec.bytes_field(m, "ch", w, size=16),
                   tuple(Entry.from_bytes(e) for e in raw),
                   None if head is None else SignedHead.from_wire(head))


@message
@dataclass(frozen=True)
class Submit(Message):
    """``publish_message``: a writer's signed submission, sent to the sequencer."""

    TYPE = "submit"
    TYPED = True
    MUTATES = True
    req: int
    submission: Submission
    want: str = "local"
    """The ack strength the writer waits for: ``local`` or ``replicated``."""

    def fields(self) -> dict[str, Value]:
        return {"req": self.req, "sub": self.submission.to_wire(), "want": self.want}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Submit:
        want = codec.str_field(m, "want", "submit", max_len=16)
        if want not in ("local", "replicated"):
            raise DecodeError("submit: unknown ack strength")
        return cls(codec.int_field(m, "req", "submit"), Submission.from_wire(m.get("sub")), want)


@message
@dataclass(frozen=True)
class Ack(Message):
    """The sequencer's answer to ``submit``: ``appended`` or ``duplicate``, after fsync."""

    TYPE = "ack"
    TYPED = True
    req: int
    channel: bytes
    status: str
    seq: int
    entry_hash: bytes
    strength: str

    def fields(self) -> dict[str, Value]:
        return {"req": self.req, "ch": self.channel, "status": self.status, "seq": self.seq,
                "hash": self.entry_hash, "strength": self.strength}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Ack:
        w = "ack"
        status = codec.str_field(m, "status", w, max_len=16)
        strength = codec.str_field(m, "strength", w, max_len=16)
        if status not in ("appended", "duplicate") or strength not in ("local", "replicated"):
            raise DecodeError("ack: unknown status or strength")
        return cls(codec.int_field(m, "req", w), codec.bytes_field(m, "ch", w, size=16), status,
                   codec.int_field(m, "seq", w, lo=1), codec.bytes_field(m, "hash", w, size=32),
                   strength)


@message
@dataclass(frozen=True)
class Nack(Message):
    """A refused submission, with the typed error's stable code."""

    TYPE = "nack"
    TYPED = True
    req: int
    channel: bytes
    code: str
    reason: str
    seq: int = 0
    entry_hash: bytes = b""

    def fields(self) -> dict[str, Value]:
        return {"req": self.req, "ch": self.channel, "code": self.code, "reason": self.reason,
                "seq": self.seq, "hash": self.entry_hash}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Nack:
        w = "nack"
        return cls(codec.int_field(m, "req", w), codec.bytes_field(m, "ch", w, size=16),
                   codec.str_field(m, "code", w, max_len=64),
                   codec.str_field(m, "reason", w, max_len=512), codec.int_field(m, "seq", w),
                   codec.field(m, "hash", bytes, w))


# --- world state gossip (see docs/protocol.md, "World state") ---------------------------

MAX_WORLD_ITEMS = 1024
WorldId = tuple[bytes, int, int]
"""``(author prefix, incarnation, position)``: names a world record in ``wihave`` / ``wgraft`` /
``wdig``. The prefix is the first 8 bytes of the author's node id (a hint, never trusted: the
records themselves are signed)."""


def _raw_list(m: dict[str, Value], key: str, w: str, limit: int = MAX_WORLD_ITEMS
              ) -> tuple[bytes, ...]:
    v = codec.field(m, key, list, w)
    if len(v) > limit or not all(isinstance(x, bytes) for x in v):
        raise DecodeError(f"{w}: {key} must be a list of at most {limit} byte strings")
    return tuple(v)


def _ids(m: dict[str, Value], key: str, w: str, width: int = 3) -> tuple[tuple[Value, ...], ...]:
    v = codec.field(m, key, list, w)
    if len(v) > 4 * MAX_WORLD_ITEMS:
        raise DecodeError(f"{w}: too many ids")
    out = []
    for x in v:
        if not (isinstance(x, list) and len(x) == width and isinstance(x[0], bytes)
                and len(x[0]) in (8, 32)
                and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 62
                        for n in x[1:])):
            raise DecodeError(f"{w}: malformed id")
        out.append(tuple(x))
    return tuple(out)


@message
@dataclass(frozen=True)
class WorldPush(Message):
    """``join_world`` / ``heartbeat`` / ``advertise_capabilities`` as peers see them: signed
    world records, forwarded byte for byte (``u``: document updates, ``hb``: heartbeats).
    ``tree`` is set on pushes along the broadcast tree (a duplicate among them prunes the
    link); repairs (graft and digest answers) leave it unset. ``sync`` marks a digest answer:
    its records are not broadcast further (each node runs its own anti-entropy), except the
    sender's own records (a node that just connected spreads through its first peers)."""

    TYPE = "wpush"
    MUTATES = True
    updates: tuple[bytes, ...] = ()
    heartbeats: tuple[bytes, ...] = ()
    tree: bool = False
    sync: bool = False

    def fields(self) -> dict[str, Value]:
        return {"u": list(self.updates), "hb": list(self.heartbeats), "tree": self.tree,
                "sync": self.sync}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> WorldPush:
        tree, sync = m.get("tree"), m.get("sync", False)
        if not isinstance(tree, bool) or not isinstance(sync, bool):
            raise DecodeError("wpush: tree and sync must be bools")
        return cls(_raw_list(m, "u", "wpush"), _raw_list(m, "hb", "wpush"), tree, sync)


@message
@dataclass(frozen=True)
class WorldIHave(Message):
    """Lazy push: ids of records received lately, sent to peers off the broadcast tree."""

    TYPE = "wihave"
    updates: tuple[WorldId, ...] = ()
    heartbeats: tuple[WorldId, ...] = ()

    def fields(self) -> dict[str, Value]:
        return {"u": [list(x) for x in self.updates], "hb": [list(x) for x in self.heartbeats]}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> WorldIHave:
        return cls(_ids(m, "u", "wihave"), _ids(m, "hb", "wihave"))


@message
@dataclass(frozen=True)
class WorldGraft(Message):
    """Put the link back on the broadcast tree and send what I lack: for each author, the
    position I hold (full 32-byte node id)."""

    TYPE = "wgraft"
    have: tuple[WorldId, ...] = ()
    heartbeats: tuple[bytes, ...] = ()
    """Node ids whose latest heartbeat I want."""

    def fields(self) -> dict[str, Value]:
        return {"have": [list(x) for x in self.have], "hb": list(self.heartbeats)}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> WorldGraft:
        hb = _raw_list(m, "hb", "wgraft", 4 * MAX_WORLD_ITEMS)
        if not all(len(x) == 32 for x in hb):
            raise DecodeError("wgraft: node ids are 32 bytes")
        return cls(_ids(m, "have", "wgraft"), hb)


@message
@dataclass(frozen=True)
class WorldPrune(Message):
    """Take this link off the broadcast trees of these sources (node id prefixes): I received
    a duplicate of their records over it."""

    TYPE = "wprune"
    sources: tuple[bytes, ...] = ()

    def fields(self) -> dict[str, Value]:
        return {"src": list(self.sources)}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> WorldPrune:
        src = _raw_list(m, "src", "wprune", 4 * MAX_WORLD_ITEMS)
        if not all(len(x) == 8 for x in src):
            raise DecodeError("wprune: sources are 8-byte node id prefixes")
        return cls(src)


@message
@dataclass(frozen=True)
class WorldDigest(Message):
    """Anti-entropy: the hash of my document positions; the full list when hashes differ.
    A ``final`` digest is answered with records only, never with another digest."""

    TYPE = "wdig"
    digest: bytes
    full: tuple[WorldId, ...] | None = None
    final: bool = False

    def fields(self) -> dict[str, Value]:
        return {"h": self.digest, "full": None if self.full is None else
                [list(x) for x in self.full], "final": self.final}

    @classmethod
    def parse(cls, m: dict[str, Value]) -> WorldDigest:
        w = "wdig"
        final = m.get("final")
        if not isinstance(final, bool):
            raise DecodeError(f"{w}: final must be a bool")
        full = None if m.get("full") is None else _ids(m, "full", w)
        return cls(codec.bytes_field(m, "h", w, size=32), full, final)


def encode_message(msg: Message) -> bytes:
    return codec.encode_frame({"t": msg.TYPE, **msg.fields()})


def decode_message(data: bytes, *, max_bytes: int = codec.MAX_FRAME_BYTES) -> Message:
    """Decode one session message; any problem is a :class:`DecodeError` (or subclass)."""
    return _parse(codec.decode_frame(data, max_bytes=max_bytes, walk=False))


MAX_BUNDLE = 256
BUNDLE = "bundle"


def encode_bundle(encoded: list[bytes]) -> bytes:
    """Several encoded messages in one frame: ``frame {t: "bundle", m: [message frame]}``."""
    return codec.encode_frame({"t": BUNDLE, "m": encoded})


def decode_frame_messages(data: bytes, *, max_bytes: int = codec.MAX_FRAME_BYTES
                          ) -> list[Message]:
    """A session frame's messages: one message, or every message of a bundle (in order).
    Bundles do not nest; any bad member rejects the whole frame."""
    m = codec.need_map(codec.decode_frame(data, max_bytes=max_bytes, walk=False), "message")
    return messages_of(m, max_bytes=max_bytes)


def messages_of(m: dict[str, Value], *, max_bytes: int) -> list[Message]:
    """The messages of a decoded (not yet walked) frame map: one message or a bundle's."""
    if m.get("t") != BUNDLE:
        return [_parse(m)]
    items = codec.field(m, "m", list, "bundle")
    if not 1 <= len(items) <= MAX_BUNDLE or not all(isinstance(x, bytes) for x in items):
        raise DecodeError("bundle: 1..256 encoded messages expected")
    out = []
    for raw in items:
        inner = codec.need_map(codec.decode_frame(raw, max_bytes=max_bytes, walk=False),
                               "message")
        if inner.get("t") == BUNDLE:
            raise DecodeError("bundles do not nest")
        out.append(_parse(inner))
    return out


def _parse(value: Value) -> Message:
    """A decoded (not yet walked) message value: typed messages parse it directly, the others
    after the data-model walk."""
    m = codec.need_map(value, "message")
    t = m.get("t")
    cls = MESSAGE_TYPES.get(t) if isinstance(t, str) else None
    if cls is None:
        raise DecodeError(f"unknown message type {str(t)[:32]!r}")
    if not cls.TYPED:
        codec.check_decoded(m)
    return cls.parse(m)


def message_types(*, mutating: bool | None = None) -> list[type[Message]]:
    """Every registered message type (optionally only the mutating ones)."""
    return [c for c in MESSAGE_TYPES.values() if mutating is None or c.MUTATES == mutating]


__all__ = ["Message", "MESSAGE_TYPES", "encode_message", "decode_message", "message_types",
           "Ping", "Pong", "ChannelAnnounce", "Subscribe", "SubscribeRefused", "SnapshotMsg",
           "EpochMsg", "Stored", "Tip", "Entries", "Submit", "Ack", "Nack", "VoteRequest",
           "VoteReply", "VotersWanted", "VoteWithdrawn", "WorldPush", "WorldIHave",
           "WorldGraft", "WorldPrune", "WorldDigest"]


def message_channel(msg: Message) -> bytes | None:
    """The channel a session message belongs to (None: not channel traffic), for per-channel
    lane policy."""
    if isinstance(msg, ChannelAnnounce):
        return msg.record.channel
    if isinstance(msg, EpochMsg):
        return msg.change.channel
    if isinstance(msg, Entries):
        return msg.head.channel
    if isinstance(msg, Submit):
        return msg.submission.channel
    ch = getattr(msg, "channel", None)
    return ch if isinstance(ch, bytes) else None

