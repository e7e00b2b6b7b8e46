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

from p2pworld.auth.book import AuthConfig
from p2pworld.compute.state import Request as ComputeRequest
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
    NotSequencer,
    P2PWorldError,
    PayloadTooLarge,
    PublishTimeout,
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
from p2pworld.home import NodeHome, default_home
from p2pworld.identity import Ed25519Signer, NodeIdentity, Signer, node_id
from p2pworld.log.entry import ChannelRecord
from p2pworld.log.hub import Notice, PublishResult
from p2pworld.node import ChannelMessage, ComputeEvent, ComputeFeed, Node, NodeConfig, open_node
from p2pworld.world.core import Member, WorldEvent
from p2pworld.world.doc import CapabilityAd, NodeInfo

__version__ = "0.1.0"

__all__ = [
    "AuthConfig", "CapabilityAd", "Member", "NodeInfo", "Revoked", "ScopeDenied",
    "TokenExpired", "Unauthorized", "WorldEvent",
    "ChannelError", "ChannelMessage", "ChannelRecord", "Conflict", "DecodeError",
    "Ed25519Signer", "HandshakeError", "IdentityError", "LocalProtocolError", "Node",
    "NodeConfig", "NodeHome", "NodeIdentity", "NotSequencer", "P2PWorldError", "PublishResult",
    "PublishTimeout", "RemoteProtocolError", "Signer", "UnknownChannel", "default_home",
    "node_id", "open_node", "InternalError", "NodeFailed", "Notice", "PayloadTooLarge",
    "StoreCorrupt", "StoreError", "StoreFull",
    "AddressUnavailable", "ComputeEvent", "ComputeFeed", "ComputeRequest", "InvalidArgument",
    "LostWrite", "NodeClosed", "Resequenced", "RollbackUnchecked", "RolledBack", "WaitTimeout",
]
