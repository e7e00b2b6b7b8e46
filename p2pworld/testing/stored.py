"""The checkers over the stores real nodes left on disk: what a real-process test holds.

A test that runs nodes as processes (kill -9 at any moment, a sequencer that steps down, a
message of many megabytes) ends with their stores on disk and the acks its writers printed.
:func:`check_stored_logs` takes each node's log store (opened read-only by the caller, after
the node stopped), replays the channel, and runs the same log checks as a simulation
(:func:`~p2pworld.testing.checkers.check_logs`: ``lost_write``, ``duplicate``,
``inconsistent_offsets``, ``diverged``) plus those about the store itself: ``store_refused``
(the store refused the channel: quarantined) and ``replay_mismatch`` (replaying it from its
base does not reach the head it stored, or from a snapshot taken half way, signed by one of
``signers``, does not reach the same state).

Example:
    >>> import trio, tempfile
    >>> from pathlib import Path
    >>> from p2pworld import NodeConfig, open_node
    >>> from p2pworld.io.log_store import LogStore
    >>> home = Path(tempfile.mkdtemp()) / "a"
    >>> async def main():
    ...     async with open_node(NodeConfig(home=home, mdns=False)) as a:
    ...         chan = await a.open_channel("notes")
    ...         r = await a.publish(chan.channel, b"hello", key=b"k1")
    ...         return chan.channel, Acknowledged(writer_key=a.identity.public_key, key=b"k1",
    ...                                           payload=b"hello", seq=r.seq)
    >>> channel, ack = trio.run(main)
    >>> store = LogStore(home / "log.db", read_only=True)
    >>> sum(check_stored_logs({"a": store}, channel, [ack]).values())
    0
    >>> store.close()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from p2pworld.identity import Signer
from p2pworld.io.log_store import LogStore
from p2pworld.log.entry import Entry
from p2pworld.log.state import ChannelState
from p2pworld.log.verify import StoredChannel
from p2pworld.testing.checkers import (
    ANOMALIES,
    Acknowledged,
    check_logs,
    replay,
    replay_mismatch,
)


def check_stored_logs(stores: Mapping[str, LogStore], channel: bytes,
                      acks: Iterable[Acknowledged] = (), *, signers: Iterable[Signer] = (),
                      reference: str | None = None, converged: bool = True) -> dict[str, int]:
    """Anomaly counts (:data:`~p2pworld.testing.checkers.ANOMALIES`) over the channel as the
    stopped nodes' stores hold it. A store with no copy of the channel is left out;
    ``converged``: every copy should be at one head by now (else ``diverged`` is not
    checked, only that no two copies differ at a seq)."""
    out = dict.fromkeys(ANOMALIES, 0)
    logs: dict[str, tuple[list[Entry], ChannelState]] = {}
    stored: dict[str, StoredChannel] = {}
    by_key = {s.public_key: s for s in signers}
    for name, store in stores.items():
        chans = store.load_channels(quarantine=True)
        out["store_refused"] += int(channel in store.quarantined)
        c = next((c for c in chans if c.record.channel == channel), None)
        if c is None:
            continue
        state = replay(c)
        if c.head is not None and (c.head.seq, c.head.head_hash) != (state.seq,
                                                                     state.head_hash):
            out["replay_mismatch"] += 1
        logs[name], stored[name] = (c.entries, state), c
    for k, v in check_logs(logs, acks, reference=reference, converged=converged).items():
        out[k] += v
    for name, c in stored.items():
        out["replay_mismatch"] += replay_mismatch(c, logs[name][1].state_hash(), by_key.get)
    return out


__all__ = ["check_stored_logs"]
