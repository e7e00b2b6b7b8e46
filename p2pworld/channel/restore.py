"""What a node takes from its store at start (pure): the runtime and the simulator alike.

The store has loaded and checked every channel (damaged ones are quarantined), its
checkpoints and its outbox; these functions put that into a
:class:`~p2pworld.channel.hub.ChannelHub` and say what the application must hear
(:class:`~p2pworld.channel.effects.Notice`) and which outbox rows can never be sent.
:func:`~p2pworld.io.log_store.load_into` carries them out against either store.

Example:
    >>> import random
    >>> from p2pworld.channel.hub import ChannelHub
    >>> from p2pworld.errors import StoreCorrupt
    >>> from p2pworld.identity import Ed25519Signer
    >>> hub = ChannelHub(Ed25519Signer(bytes(32)), workspace="lab", rng=random.Random(0))
    >>> bad = StoreCorrupt("channel 00..: damaged")
    >>> [n.subject for n in load_stored(hub, [], {bytes(16): bad})]
    ['00000000000000000000000000000000']
    >>> bytes(16) in hub.quarantined
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from p2pworld.channel.checkpoints import Checkpoint
from p2pworld.channel.effects import Notice
from p2pworld.channel.hub import ChannelHub
from p2pworld.errors import P2PWorldError
from p2pworld.log.entry import Submission
from p2pworld.log.verify import StoredChannel


def load_stored(hub: ChannelHub, loaded: Iterable[StoredChannel],
                quarantined: Mapping[bytes, P2PWorldError]) -> list[Notice]:
    """Load the intact channels into ``hub`` and quarantine the damaged ones (in channel
    order), each with a notice; returns the notices."""
    for c in loaded:
        hub.load(c.record, c.epochs, c.base, c.entries, c.head)
    notices = []
    for ch, err in sorted(quarantined.items()):
        hub.quarantine(ch, err)
        notices.append(Notice(ch, err, scope="channel", subject=ch.hex()))
    return notices


def load_cursors(hub: ChannelHub, cursors: Iterable[Checkpoint],
                 quarantined: Mapping[bytes, P2PWorldError]) -> None:
    """Restore the stored checkpoints, but none of a quarantined channel."""
    for cp in cursors:
        if cp.channel not in quarantined:
            hub.load_cursor(cp)


def unsendable(hub: ChannelHub, rows: Iterable[tuple[Submission, str]]
               ) -> Iterator[tuple[bytes, bytes, P2PWorldError]]:
    """Load the stored outbox rows into ``hub``, in order; yields (lazily, so the store can
    move each aside before the next is loaded) every row that can never be sent: for a
    channel this node no longer holds, or over its channel's payload limit (written by an
    older build). A quarantined channel's rows are kept on disk: sent once it is repaired."""
    for sub, want in rows:
        if sub.channel in hub.quarantined:
            continue
        err = hub.load_outbox(sub, want)
        if err is not None:
            yield sub.channel, sub.idem_key, err


def aside_notices(aside: Iterable[tuple[bytes, bytes, P2PWorldError]]) -> list[Notice]:
    """A typed notice for each outbox row moved aside (its key in ``outbox_key``)."""
    notices = []
    for ch, key, err in aside:
        err.details.setdefault("outbox_key", key.hex())
        notices.append(Notice(ch, err, scope="channel", subject=ch.hex()))
    return notices


__all__ = ["load_stored", "load_cursors", "unsendable", "aside_notices"]
