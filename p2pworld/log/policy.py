"""A channel's policy: the flags its owner signs into the genesis record (retention,
replication, Nostr lanes, payload limit, failover and voters).

Example:
    >>> ChannelPolicy().failover, ChannelPolicy.from_wire({"retention": 0, "k": 1,
    ...     "mirror": False, "fallback": False}).failover
    ('majority', 'authority')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import DecodeError, LocalProtocolError

DEFAULT_MAX_PAYLOAD = 1 << 20
"""A channel's payload limit when its policy names none (1 MiB)."""
MAX_PAYLOAD_LIMIT = 16 << 20
"""The largest payload limit a channel policy may set (16 MiB)."""
FAILOVER_MODES = ("majority", "authority")
DEFAULT_MAX_VOTERS = 7
MAX_VOTERS = 64


@dataclass(frozen=True, kw_only=True)
class ChannelPolicy:
    """Per-channel policy flags (part of the signed genesis record)."""

    retention: int = 0
    """Entries kept behind the head (0 = keep everything). Older ones live on as a snapshot."""
    replication: int = 1
    """``k``: participants (besides the sequencer) that must fsync an entry for a
    ``replicated`` ack."""
    nostr_mirror: bool = False
    """The Nostr mirror lane may carry this channel's entries."""
    nostr_fallback: bool = False
    """The Nostr fallback lane may carry submissions when the direct lane is down."""
    app: str = ""
    """What the library uses the channel for (``"compute"``: a compute channel, whose entries
    follow the compute rules). Empty for an application's own channels; a channel's name
    never decides it."""
    max_payload: int | None = None
    """The largest application payload, in bytes (1 .. :data:`MAX_PAYLOAD_LIMIT`). None in a
    record means :data:`DEFAULT_MAX_PAYLOAD`; ``open_channel`` always records the value, so
    the sequencer and every replica apply the same one. Records made before the limit existed
    carry no field and keep verifying byte for byte."""
    failover: str = "majority"
    """Who may start a new epoch when the sequencer is gone: ``"majority"`` (the channel's
    voters elect one, :mod:`p2pworld.log.election`; the default) or ``"authority"`` (only the
    authority key's ``recover``). Records made before elections existed carry no field and
    read as ``"authority"``."""
    max_voters: int = DEFAULT_MAX_VOTERS
    """Most voters a majority channel counts (1 .. :data:`MAX_VOTERS`), the witness aside."""
    witness: bytes | None = None
    """A designated extra voter's key (it votes, it need not replicate): what lets a
    channel of two nodes fail over."""

    def __post_init__(self) -> None:
        if self.max_payload is not None and not 1 <= self.max_payload <= MAX_PAYLOAD_LIMIT:
            raise LocalProtocolError(
                f"max_payload must be 1..{MAX_PAYLOAD_LIMIT} bytes", limit=MAX_PAYLOAD_LIMIT)
        if self.failover not in FAILOVER_MODES:
            raise LocalProtocolError(f"failover must be one of {FAILOVER_MODES}")
        if not 1 <= self.max_voters <= MAX_VOTERS:
            raise LocalProtocolError(f"max_voters must be 1..{MAX_VOTERS}", limit=MAX_VOTERS)
        if self.witness is not None and (type(self.witness) is not bytes
                                         or len(self.witness) != 32):
            raise LocalProtocolError("witness must be a 32-byte public key")

    @property
    def payload_limit(self) -> int:
        """The payload limit in force (the recorded one, else the default)."""
        return DEFAULT_MAX_PAYLOAD if self.max_payload is None else self.max_payload

    def to_wire(self) -> dict[str, Value]:
        out: dict[str, Value] = {"retention": self.retention, "k": self.replication,
                                 "mirror": self.nostr_mirror, "fallback": self.nostr_fallback}
        if self.max_payload is not None:
            out["max"] = self.max_payload
        if self.app:
            out["app"] = self.app
        if self.failover == "majority":
            out["failover"] = self.failover
            out["voters"] = self.max_voters
            if self.witness is not None:
                out["witness"] = self.witness
        return out

    @classmethod
    def from_wire(cls, value: Any) -> ChannelPolicy:
        w = "policy"
        m = codec.need_map(value, w)
        return cls(retention=codec.int_field(m, "retention", w, hi=2**40),
                   replication=codec.int_field(m, "k", w, hi=64),
                   nostr_mirror=codec.field(m, "mirror", bool, w),
                   nostr_fallback=codec.field(m, "fallback", bool, w),
                   max_payload=codec.int_field(m, "max", w, lo=1, hi=MAX_PAYLOAD_LIMIT)
                   if "max" in m else None,
                   app=codec.str_field(m, "app", w, max_len=16) if "app" in m else "",
                   **_failover_fields(m, w))


def _failover_fields(m: dict[str, Value], w: str) -> dict[str, Any]:
    """A policy's failover fields; none (a record made before elections): authority."""
    if "failover" not in m:
        return {"failover": "authority"}
    mode = codec.str_field(m, "failover", w, max_len=16)
    if mode != "majority":
        raise DecodeError(f"{w}: unknown failover mode")
    return {"failover": mode, "max_voters": codec.int_field(m, "voters", w, lo=1, hi=MAX_VOTERS),
            "witness": codec.bytes_field(m, "witness", w, size=32) if "witness" in m else None}
