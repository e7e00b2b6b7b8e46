"""p2pworld: one shared collaboration world for AI agents, with no server.

Nodes find each other on a LAN (mDNS) or through a rendezvous node, prove who they are in an
authenticated handshake, see each other's presence and capability ads, talk on channels whose
messages are strictly ordered by one sequencer per channel, hash-chained and signed, and hand
out compute jobs with exactly one assignee; with a control service, every mutation is checked
against short-lived tokens.

Ten-line embedding::

    import trio
    from pathlib import Path
    from p2pworld import NodeConfig, open_node

    async def main():
        async with open_node(NodeConfig(home=Path("~/.p2pw").expanduser(), workspace="lab")) as node:
            chan = await node.open_channel("general")
            await node.publish(chan.channel, b"hello, world")
            async for msg in node.messages(chan.channel):
                print(msg.seq, msg.sender.hex()[:8], msg.payload)

    trio.run(main)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from p2pworld.errors import (
    AddressUnavailable,
    ChannelError,
    Conflict,
    DecodeError,
    HandshakeError,
    IdentityError,
    InternalError,
    InvalidArgument,
    LocalProtocolError,
    LostWrite,
    NodeClosed,
    NodeFailed,
    NoQuorum,
    NotHandedOff,
    NotSequencer,
    P2PWorldError,
    PayloadTooLarge,
    PublishTimeout,
    Refused,
    RemoteProtocolError,
    Resequenced,
    Revoked,
    RollbackUnchecked,
    RolledBack,
    ScopeDenied,
    StoreCorrupt,
    StoreError,
    StoreFull,
    TokenExpired,
    Unauthorized,
    UnknownChannel,
    WaitTimeout,
)

# Everything else is resolved on first use (PEP 562), so that ``import p2pworld`` and importing
# a core (``p2pworld.log.sequencer``) load no runtime: no trio, zeroconf, sqlite3 or pycrdt.
_LAZY: dict[str, tuple[str, str]] = {
    "Checkpoint": ("p2pworld.channel.hub", "Checkpoint"),
    "BridgeChange": ("p2pworld.io.nostr_service", "BridgeChange"),
    "BridgeFeed": ("p2pworld.io.nostr_service", "BridgeFeed"),
    "EpochChange": ("p2pworld.log.state", "EpochChange"),
    "HandoffReport": ("p2pworld.channel.handoffs", "HandoffReport"),
    "MessageCursor": ("p2pworld.runtime.feeds", "MessageCursor"),
    "NodeSubscription": ("p2pworld.runtime.feeds", "NodeSubscription"),
    "WorldSubscription": ("p2pworld.runtime.feeds", "WorldSubscription"),
    "Channels": ("p2pworld.runtime.api", "Channels"),
    "World": ("p2pworld.runtime.api", "World"),
    "Compute": ("p2pworld.runtime.api", "Compute"),
    "Bridge": ("p2pworld.runtime.api", "Bridge"),
    "Peers": ("p2pworld.runtime.api", "Peers"),
    "PeerInfo": ("p2pworld.runtime.api", "PeerInfo"),
    "AuthConfig": ("p2pworld.auth.book", "AuthConfig"),
    "CapabilityAd": ("p2pworld.world.doc", "CapabilityAd"),
    "ChannelMessage": ("p2pworld.runtime.feeds", "ChannelMessage"),
    "ChannelRecord": ("p2pworld.log.entry", "ChannelRecord"),
    "ComputeEvent": ("p2pworld.runtime.feeds", "ComputeEvent"),
    "ComputeFeed": ("p2pworld.runtime.feeds", "ComputeFeed"),
    "ComputeRequest": ("p2pworld.compute.state", "Request"),
    "Ed25519Signer": ("p2pworld.identity", "Ed25519Signer"),
    "Member": ("p2pworld.world.core", "Member"),
    "Node": ("p2pworld.runtime.node", "Node"),
    "AuthStatistics": ("p2pworld.runtime.statistics", "AuthStatistics"),
    "ChannelStatistics": ("p2pworld.runtime.statistics", "ChannelStatistics"),
    "NodeStatistics": ("p2pworld.runtime.statistics", "NodeStatistics"),
    "PeerStatistics": ("p2pworld.runtime.statistics", "PeerStatistics"),
    "TransportStatistics": ("p2pworld.runtime.statistics", "TransportStatistics"),
    "WorldStatistics": ("p2pworld.runtime.statistics", "WorldStatistics"),
    "NodeConfig": ("p2pworld.runtime.config", "NodeConfig"),
    "NodeHome": ("p2pworld.io.home", "NodeHome"),
    "NodeIdentity": ("p2pworld.identity", "NodeIdentity"),
    "NodeInfo": ("p2pworld.world.doc", "NodeInfo"),
    "Notice": ("p2pworld.channel.hub", "Notice"),
    "PublishResult": ("p2pworld.channel.hub", "PublishResult"),
    "Signer": ("p2pworld.identity", "Signer"),
    "WorldEvent": ("p2pworld.world.core", "WorldEvent"),
    "default_home": ("p2pworld.io.home", "default_home"),
    "node_id": ("p2pworld.identity", "node_id"),
    "open_node": ("p2pworld.runtime.node", "open_node"),
}

if TYPE_CHECKING:
    from p2pworld.auth.book import AuthConfig
    from p2pworld.channel.handoffs import HandoffReport
    from p2pworld.channel.hub import Checkpoint, Notice, PublishResult
    from p2pworld.compute.state import Request as ComputeRequest
    from p2pworld.identity import Ed25519Signer, NodeIdentity, Signer, node_id
    from p2pworld.io.home import NodeHome, default_home
    from p2pworld.io.nostr_service import BridgeChange, BridgeFeed
    from p2pworld.log.entry import ChannelRecord
    from p2pworld.log.state import EpochChange
    from p2pworld.runtime.api import Bridge, Channels, Compute, PeerInfo, Peers, World
    from p2pworld.runtime.config import NodeConfig
    from p2pworld.runtime.feeds import (
        ChannelMessage,
        ComputeEvent,
        ComputeFeed,
        MessageCursor,
        NodeSubscription,
        WorldSubscription,
    )
    from p2pworld.runtime.node import Node, open_node
    from p2pworld.runtime.statistics import (
        AuthStatistics,
        ChannelStatistics,
        NodeStatistics,
        PeerStatistics,
        TransportStatistics,
        WorldStatistics,
    )
    from p2pworld.world.core import Member, WorldEvent
    from p2pworld.world.doc import CapabilityAd, NodeInfo

__version__ = "0.1.0"

__all__ = [
    "AuthStatistics",
    "ChannelStatistics",
    "NodeStatistics",
    "PeerStatistics",
    "TransportStatistics",
    "WorldStatistics",
    "Checkpoint",
    "BridgeChange",
    "BridgeFeed",
    "EpochChange",
    "HandoffReport",
    "NoQuorum",
    "NotHandedOff",
    "MessageCursor",
    "NodeSubscription",
    "WorldSubscription",
    "Channels",
    "World",
    "Compute",
    "Bridge",
    "Peers",
    "PeerInfo",
    "AddressUnavailable",
    "AuthConfig",
    "CapabilityAd",
    "ChannelError",
    "ChannelMessage",
    "ChannelRecord",
    "ComputeEvent",
    "ComputeFeed",
    "ComputeRequest",
    "Conflict",
    "DecodeError",
    "Ed25519Signer",
    "HandshakeError",
    "IdentityError",
    "InternalError",
    "InvalidArgument",
    "LocalProtocolError",
    "LostWrite",
    "Member",
    "Node",
    "NodeClosed",
    "NodeConfig",
    "NodeFailed",
    "NodeHome",
    "NodeIdentity",
    "NodeInfo",
    "NotSequencer",
    "Notice",
    "P2PWorldError",
    "PayloadTooLarge",
    "PublishResult",
    "PublishTimeout",
    "Refused",
    "RemoteProtocolError",
    "Resequenced",
    "Revoked",
    "RollbackUnchecked",
    "RolledBack",
    "ScopeDenied",
    "Signer",
    "StoreCorrupt",
    "StoreError",
    "StoreFull",
    "TokenExpired",
    "Unauthorized",
    "UnknownChannel",
    "WaitTimeout",
    "WorldEvent",
    "default_home",
    "node_id",
    "open_node",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'p2pworld' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
