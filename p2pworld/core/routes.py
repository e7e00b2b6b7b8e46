"""Where every session message goes, and the token scope its sender needs: one table (pure).

:data:`ROUTES` has one :class:`Route` per type of :data:`p2pworld.wire.MESSAGE_TYPES`: the
core that handles it (``node``: the keepalive in :class:`~p2pworld.core.node.NodeCore`;
``world``: :class:`~p2pworld.world.core.WorldCore`; ``hub``:
:class:`~p2pworld.channel.hub.ChannelHub`) and, for a message that mutates shared state, the
scope its sender's token must grant, as a template (``{channel}``: the channel id in hex).
:class:`~p2pworld.core.cores.Cores` routes by it, and the hub takes the scope of every message
it receives from :func:`message_scope` (given to it by
:func:`~p2pworld.core.cores.build_cores`: the hub sits below this package). *When* a scope is
checked (a channel this node does not know yet, an epoch newer than its own) stays with the
core; *which* scope is stated here only. ``None``: the message mutates nothing shared, or its
contents are checked record by record (``why`` says which).

Example:
    >>> from p2pworld.wire import ChannelAnnounce, Ping, Submit, WorldPush
    >>> ROUTES[Ping].core, ROUTES[WorldPush].core, ROUTES[ChannelAnnounce].core
    ('node', 'world', 'hub')
    >>> message_scope(Submit, channel=bytes(16))
    'channel:publish:00000000000000000000000000000000'
    >>> message_scope(Submit, channel=bytes(16), kind="ctl"), message_scope(WorldPush)
    ('channel:open', None)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from p2pworld.wire import (
    Ack,
    ChannelAnnounce,
    Entries,
    EpochMsg,
    HeadQuery,
    HeadReport,
    Message,
    Nack,
    Ping,
    Pong,
    Restore,
    RestoreRequest,
    SnapshotMsg,
    Stored,
    Submit,
    Subscribe,
    SubscribeRefused,
    Tip,
    VoteReply,
    VoteRequest,
    VotersWanted,
    VoteWithdrawn,
    WorldDigest,
    WorldGraft,
    WorldIHave,
    WorldPrune,
    WorldPush,
)

CoreName = Literal["node", "world", "hub"]


@dataclass(frozen=True)
class Route:
    """Which core handles a message type, and the scope a sender needs for it."""

    core: CoreName
    scope: str | None
    """A scope template (``{channel}``: the channel id in hex); None: no token scope."""
    why: str
    control_scope: str | None = None
    """For a submission of a control entry (any kind but ``msg``: membership, close, rekey):
    the scope it needs instead of :attr:`scope`."""


_SIGNED = "authenticated by signatures (records, epoch changes, signed heads), not tokens"

ROUTES: Mapping[type[Message], Route] = {
    Ping: Route("node", None, "keepalive: answered with a pong; mutates nothing"),
    Pong: Route("node", None, "keepalive: a round-trip time; mutates nothing"),
    ChannelAnnounce: Route(
        "hub", "channel:open", "learning a channel this node holds no copy of: its owner "
        f"must hold the scope; an announce of a known channel is {_SIGNED}"),
    Subscribe: Route(
        "hub", "channel:read:{channel}", "a read: the subscriber must hold the scope "
        "(refused with a SubscribeRefused naming the token's fault); restricted channels "
        "also admit participants only"),
    SubscribeRefused: Route("hub", None, "an answer: a notice, nothing shared changes"),
    SnapshotMsg: Route("hub", None, f"from the channel's sequencer only; {_SIGNED}"),
    EpochMsg: Route(
        "hub", "channel:open", "a new sequencer takes over the channel: the new sequencer "
        f"must hold the scope; the change itself is {_SIGNED}"),
    Stored: Route("hub", None, "a replica's cursor: flow control and replicated acks"),
    Tip: Route("hub", None, "informational: a replica's lag"),
    Entries: Route("hub", None, f"entries the sequencer checked when it appended them; {_SIGNED}"),
    HeadQuery: Route("hub", None, "a read (the start-up exchange)"),
    HeadReport: Route("hub", None, f"an answer in the start-up exchange; {_SIGNED}"),
    RestoreRequest: Route("hub", None, "a read (the start-up exchange)"),
    Restore: Route("hub", None, f"entries under this node's own signed head; {_SIGNED}"),
    Submit: Route(
        "hub", "channel:publish:{channel}", "a writer's entry, checked for its signer by the "
        "sequencer (compute channels also check the op's compute scope)",
        control_scope="channel:open"),
    Ack: Route("hub", None, "an answer to this node's own submission"),
    Nack: Route("hub", None, "an answer to this node's own submission"),
    VoteRequest: Route("hub", None, "an election: answered only to a voter of the channel, "
                       "and what it yields is a signed vote, counted only by that voter"),
    VoteReply: Route("hub", None, "an answer to this node's own election; the vote is signed"),
    VoteWithdrawn: Route("hub", None, "a candidate's own withdrawal (its session says who): "
                         "only a vote for that candidate in that epoch is lifted"),
    VotersWanted: Route("hub", None, "a hint from the channel's sequencer: this node submits "
                        "its own signed voter entry, checked as any submission"),
    WorldPush: Route(
        "world", None, "records checked per record kind by the world core's own auth "
        "(document updates: world:join, and world:advertise when capabilities change; "
        "heartbeats: world:join with the membership grace)"),
    WorldIHave: Route("world", None, "gossip: ids of records, mutates nothing shared"),
    WorldGraft: Route("world", None, "gossip: a request for records, mutates nothing shared"),
    WorldPrune: Route("world", None, "gossip: this link's tree, mutates nothing shared"),
    WorldDigest: Route("world", None, "anti-entropy: positions, mutates nothing shared"),
}
"""One route per type of :data:`p2pworld.wire.MESSAGE_TYPES` (``tests/test_routes.py``)."""


def message_scope(msg_type: type[Message], *, kind: str = "msg",
                  **fields: bytes | str) -> str | None:
    """The scope a sender of ``msg_type`` needs (None: none), its template filled from
    ``fields`` (bytes as hex). ``kind``: a submission's entry kind. KeyError for a type with
    no route."""
    route = ROUTES[msg_type]
    template = route.control_scope if kind != "msg" and route.control_scope else route.scope
    if template is None:
        return None
    return template.format(**{k: v.hex() if isinstance(v, bytes) else v
                              for k, v in fields.items()})


__all__ = ["ROUTES", "Route", "message_scope"]
