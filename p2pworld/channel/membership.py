"""Membership, lifecycle and channel keys, a part of :class:`~p2pworld.channel.hub.ChannelHub`
(a mixin: the state is the hub's).

Adding or removing a participant, closing a channel and rotating its key are control entries
(``ctl``) published through the channel itself, so every replica folds the same membership from
the same prefix. On a private channel the sequencer rotates the key on every membership change:
a fresh key wrapped for each member (a new member reads what is sent after it joins; a removed
one reads nothing sent after). Keys are unwrapped lazily from the folded state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pworld.errors import KeyUnavailable
from p2pworld.identity import node_id
from p2pworld.log import channel_key
from p2pworld.log.state import ctl_payload

if TYPE_CHECKING:
    import random

    from p2pworld.channel.effects import Effect
    from p2pworld.channel.hub import _Own
    from p2pworld.identity import Signer
    from p2pworld.log.entry import ChannelRecord, Entry
    from p2pworld.log.state import ChannelState


class Membership:
    """The membership, lifecycle and key methods of the channel hub."""

    if TYPE_CHECKING:  # the hub's state and methods these use
        own: dict[bytes, _Own]
        rng: random.Random
        signer: Signer
        node_id: bytes
        _keys: dict[bytes, dict[int, bytes]]

        def publish(self, channel: bytes, payload: bytes, *, idem_key: bytes, now_ms: int,
                    want: str = "local", kind: str = "msg") -> tuple[int, list[Effect]]: ...
        def record(self, channel: bytes) -> ChannelRecord: ...
        def state(self, channel: bytes) -> ChannelState: ...
        def _announce(self, channel: bytes, only: bytes | None = None) -> list[Effect]: ...

    def add_participant(self, channel: bytes, member: bytes, *, now_ms: int
                        ) -> tuple[int, list[Effect]]:
        req, fx = self.publish(channel, ctl_payload("add", member=member),
                               idem_key=b"add:" + member + _nonce(self.rng), now_ms=now_ms,
                               kind="ctl")
        if self.record(channel).private and channel in self.own:
            # A fresh key wrapped for everyone, the new member included: members read what is
            # sent after they join, not before.
            _, more = self._rekey(channel, now_ms)
            fx += more
        if channel in self.own:
            fx += self._announce(channel, only=node_id(member))
        return req, fx

    def remove_participant(self, channel: bytes, member: bytes, *, now_ms: int
                           ) -> tuple[int, list[Effect]]:
        req, fx = self.publish(channel, ctl_payload("remove", member=member),
                               idem_key=b"rm:" + member + _nonce(self.rng), now_ms=now_ms,
                               kind="ctl")
        if self.record(channel).private and channel in self.own:
            _, more = self._rekey(channel, now_ms, excluding=member)
            fx += more
        return req, fx

    def close_channel(self, channel: bytes, *, now_ms: int) -> tuple[int, list[Effect]]:
        """``close_channel``: no more appends; readers can still catch up."""
        return self.publish(channel, ctl_payload("close"), idem_key=b"close", now_ms=now_ms,
                            kind="ctl")

    def _rekey(self, channel: bytes, now_ms: int, excluding: bytes | None = None
               ) -> tuple[int, list[Effect]]:
        st = self.state(channel)
        key_id = max(st.keys, default=0) + 1
        key = channel_key.new_key(self.rng)
        members = sorted((st.participants | {st.record.owner_key}) - {excluding or b""})
        wrapped = {node_id(m).hex(): channel_key.wrap(key, m, channel=channel, key_id=key_id,
                                                      rng=self.rng) for m in members}
        self._keys.setdefault(channel, {})[key_id] = key
        return self.publish(channel, ctl_payload("rekey", key_id=key_id, wrapped=wrapped),
                            idem_key=b"rekey:%d" % key_id, now_ms=now_ms, kind="ctl")

    def channel_keys(self, channel: bytes) -> dict[int, bytes]:
        """The channel keys this node can open (unwrapped lazily from the folded state)."""
        st = self.state(channel)
        have = self._keys.setdefault(channel, {})
        me = self.node_id.hex()
        for kid, wrapped in st.keys.items():
            if kid not in have and me in wrapped and isinstance(self.signer,
                                                                channel_key.KeyAgreement):
                try:
                    have[kid] = channel_key.unwrap(wrapped[me], self.signer, channel=channel,
                                                   key_id=kid)
                except KeyUnavailable:
                    continue
        return have

    def _seal(self, channel: bytes, payload: bytes) -> bytes:
        keys = self.channel_keys(channel)
        if not keys:
            raise KeyUnavailable("no channel key yet for this private channel")
        kid = max(keys)
        return channel_key.seal(keys[kid], payload, channel=channel, key_id=kid, rng=self.rng)

    def open_payload(self, entry: Entry) -> bytes:
        """The application payload of an entry (decrypted on private channels)."""
        if entry.kind != "msg" or not self.record(entry.channel).private:
            return entry.payload
        return channel_key.open_sealed(self.channel_keys(entry.channel), entry.payload,
                                       channel=entry.channel)


def _nonce(rng: random.Random) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(8))
