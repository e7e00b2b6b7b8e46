"""Checkpoints: durable read cursors, a part of :class:`~p2pworld.channel.hub.ChannelHub` (a
mixin: the state is the hub's).

``ack_message(channel, seq)`` records that the application consumed ``channel`` up to
``seq``: a :class:`Checkpoint` (the epoch and the entry hash at ``seq``, so a cursor on a log
that was later rewritten is detected), saved by a ``SaveCursor`` effect. Cursors only move
forward.

Example:
    >>> cp = Checkpoint(channel=bytes(16), epoch=1, seq=3, head_hash=bytes(32))
    >>> Checkpoint.from_wire(cp.to_wire()) == cp
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2pworld import codec
from p2pworld.channel.effects import SaveCursor
from p2pworld.codec import Value
from p2pworld.errors import LocalProtocolError

if TYPE_CHECKING:
    from p2pworld.auth.book import TokenBook
    from p2pworld.channel.effects import Effect
    from p2pworld.errors import P2PWorldError
    from p2pworld.identity import Signer
    from p2pworld.log.sequencer import ChannelLog


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A durable cursor: this node has consumed ``channel`` up to ``seq`` (``ack_message``)."""

    channel: bytes
    epoch: int
    seq: int
    head_hash: bytes

    def to_wire(self) -> dict[str, Value]:
        return {"ch": self.channel, "epoch": self.epoch, "seq": self.seq, "head": self.head_hash}

    @classmethod
    def from_wire(cls, value: Any) -> Checkpoint:
        w = "checkpoint"
        m = codec.need_map(value, w)
        return cls(channel=codec.bytes_field(m, "ch", w, size=16),
                   epoch=codec.int_field(m, "epoch", w, lo=1), seq=codec.int_field(m, "seq", w),
                   head_hash=codec.bytes_field(m, "head", w, size=32))


class Checkpoints:
    """The checkpoint methods of the channel hub."""

    if TYPE_CHECKING:  # the hub's state and methods these use
        cursors: dict[bytes, Checkpoint]
        auth: TokenBook | None
        signer: Signer
        read_only: P2PWorldError | None

        def log(self, channel: bytes) -> ChannelLog: ...

    def load_cursor(self, cp: Checkpoint) -> None:
        """Restore a cursor from durable storage (at start)."""
        self.cursors[cp.channel] = cp

    def ack_message(self, channel: bytes, seq: int, *, now_ms: int | None = None
                    ) -> list[Effect]:
        """``ack_message``: record that this node consumed ``channel`` up to ``seq``."""
        if now_ms is not None and self.auth is not None:
            self.auth.check_reducer(self.signer.public_key, "ack_message", now=now_ms / 1000,
                                    channel=channel)
        if self.read_only is not None:
            raise self.read_only
        log = self.log(channel)
        h = log.hash_at(seq)
        if h is None or seq > log.seq:
            raise LocalProtocolError("can only acknowledge a held seq")
        cp = Checkpoint(channel=channel, epoch=log.state.epoch, seq=seq, head_hash=h)
        old = self.cursors.get(channel)
        if old is not None and old.seq >= seq:
            return []
        self.cursors[channel] = cp
        return [SaveCursor(cp)]


__all__ = ["Checkpoint", "Checkpoints"]
