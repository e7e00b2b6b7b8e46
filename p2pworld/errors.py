"""Typed errors with stable codes.

Every error a caller can branch on is a subclass of :class:`P2PWorldError` and carries a
``code`` that never changes between releases (log lines and metrics use it). As in h11, errors
split by who is at fault:

* :class:`LocalProtocolError` — this program misused a core or the API (a bug on our side of
  the wire, or a caller's wrong argument).
* :class:`RemoteProtocolError` — the peer sent something invalid. Cores that raise it move to
  a sticky error state: the connection or log is dead.
* :class:`Refused` — a well-formed request that was not carried out: a rule, a limit, the state
  of a channel or session, or this node's environment (its disk, its addresses) refused it.

Every error class is defined in this module, registered in :data:`ERROR_CODES` under a code of
its own, and is under exactly one of the three (a test checks it).

Example:
    >>> try:
    ...     raise DecodeError("frame too large", limit=1024)
    ... except P2PWorldError as e:
    ...     e.code
    'DECODE_ERROR'
"""

from __future__ import annotations

from typing import Any


class P2PWorldError(Exception):
    """Base of every p2pworld error. ``code`` is stable; ``details`` are for logs."""

    code: str = "P2PWORLD_ERROR"

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}: {self.message})"


class LocalProtocolError(P2PWorldError):
    """This side misused a protocol core (wrong state, wrong argument)."""

    code = "LOCAL_PROTOCOL_ERROR"


class RemoteProtocolError(P2PWorldError):
    """The peer or the disk sent input that is invalid. Nothing was changed by it."""

    code = "REMOTE_PROTOCOL_ERROR"


class Refused(P2PWorldError):
    """A well-formed request that was not carried out: a rule, a limit, the state of a channel
    or session, or this node's environment refused it. Nothing was changed by it."""

    code = "REFUSED"


# --- encoding -----------------------------------------------------------------------------


class DecodeError(RemoteProtocolError):
    """Bytes are not a valid, canonical, bounded p2pworld encoding."""

    code = "DECODE_ERROR"


class UnsupportedVersion(RemoteProtocolError):
    """A frame or file carries a format version this build does not speak."""

    code = "UNSUPPORTED_VERSION"


# --- identity -----------------------------------------------------------------------------


class IdentityError(Refused):
    """A key file or identity record is missing, unreadable or corrupt."""

    code = "IDENTITY_ERROR"


class InvalidSignature(RemoteProtocolError):
    """A signature does not verify under the key it claims."""

    code = "INVALID_SIGNATURE"


class InvalidAttestation(RemoteProtocolError):
    """A node attestation (node key <-> Nostr key binding) does not verify."""

    code = "INVALID_ATTESTATION"


# --- sessions -----------------------------------------------------------------------------


class HandshakeError(RemoteProtocolError):
    """The peer's handshake is malformed, unauthenticated or inconsistent."""

    code = "HANDSHAKE_FAILED"


class VersionMismatch(HandshakeError):
    """The two sides share no protocol version."""

    code = "VERSION_MISMATCH"


class WorkspaceMismatch(HandshakeError):
    """The peer belongs to another workspace."""

    code = "WORKSPACE_MISMATCH"


class PeerIdentityMismatch(HandshakeError):
    """The peer proved a different node id than the one we dialled (or it is ourselves)."""

    code = "PEER_IDENTITY_MISMATCH"


class HandshakeRefused(HandshakeError):
    """The peer refused our handshake and said why (``details['peer_code']``)."""

    code = "HANDSHAKE_REFUSED"


class FrameRejected(RemoteProtocolError):
    """A session frame failed authentication: forged, replayed, reordered or truncated."""

    code = "FRAME_REJECTED"


class FrameTooLarge(RemoteProtocolError):
    """A frame exceeds the negotiated size bound."""

    code = "FRAME_TOO_LARGE"


class SessionClosed(Refused):
    """The session is closed; nothing more can be sent on it."""

    code = "SESSION_CLOSED"


class RendezvousClosed(SessionClosed):
    """A rendezvous connection ended (closed by either side, at any stage); the node
    connects again after a backoff, and its relayed sessions resume on the new one."""

    code = "RENDEZVOUS_CLOSED"


class RendezvousUnreachable(SessionClosed):
    """A rendezvous could not be reached (refused, timed out, not a rendezvous)."""

    code = "RENDEZVOUS_UNREACHABLE"


class Backpressure(Refused):
    """A bounded queue is full; the caller may retry later."""

    code = "BACKPRESSURE"


# --- channels and logs --------------------------------------------------------------------


class ChannelError(Refused):
    """A channel refused the request (unknown, closed, not its sequencer, a conflict...)."""

    code = "CHANNEL_ERROR"


class UnknownChannel(ChannelError):
    """No channel with this id is known to this node (not opened, not announced to it)."""

    code = "UNKNOWN_CHANNEL"


class NotSequencer(ChannelError):
    """A submission reached a node that is not the channel's current sequencer."""

    code = "NOT_SEQUENCER"


class ChannelClosed(ChannelError):
    """The channel was closed (a signed ``close`` entry): nothing more is accepted on it."""

    code = "CHANNEL_CLOSED"


class NotParticipant(ChannelError):
    """The node is not a participant of this private channel."""

    code = "NOT_PARTICIPANT"


class Conflict(ChannelError):
    """Same idempotency key, different payload. ``details`` carry the original seq and hash."""

    code = "CONFLICT"


class ChainBroken(RemoteProtocolError):
    """An entry does not extend the verified chain (bad prev hash, gap, bad signature)."""

    code = "CHAIN_BROKEN"


class Forked(RemoteProtocolError):
    """Two different signed entries exist for one (channel, epoch, seq)."""

    code = "FORKED"


class StoreCorrupt(Refused):
    """A durable store failed verification: a row, an index or a signed head does not match.
    ``details`` name the file and, where one is to blame, the channel and seq."""

    code = "STORE_CORRUPT"


class StoreError(Refused):
    """The node's own store failed (an I/O error such as EIO): the one failure that ends a
    node. ``details["path"]`` names the file."""

    code = "STORE_ERROR"


class StoreFull(Refused):
    """The node's disk (or its store's size limit) is full: writes are refused, nothing was
    acknowledged, reads go on. The node retries and accepts writes again once space returns."""

    code = "STORE_FULL"


class CheckpointTooOld(ChannelError):
    """A cursor is older than the channel's retention: catch up from a snapshot plus tail."""

    code = "CHECKPOINT_TOO_OLD"


class CheckpointMismatch(ChannelError):
    """A cursor's hash does not match the log at its seq (another history, or a bad cursor)."""

    code = "CHECKPOINT_MISMATCH"


class LostWrite(ChannelError):
    """An acknowledged entry is not in the log any more: an unplanned handoff started the new
    epoch before it, or the sequencer's store rolled back and no reachable replica held it.
    ``details``: ``seq`` (and ``last`` for a range), ``idem_key`` where the writer's node
    knows it."""

    code = "LOST_WRITE"


class Resequenced(ChannelError):
    """An entry this node's writer held an ack for, lost when its old sequencer stepped down
    (:class:`LostWrite` first), was resubmitted with the same key and acknowledged again by
    the new sequencer: ``details`` ``old_seq``, ``seq`` (the new one) and ``idem_key``."""

    code = "RESEQUENCED"


class RolledBack(ChannelError):
    """This node's store had rolled back (an old copy restored, a lost WAL): a peer held a
    longer signed log of a channel it sequences. The entries were taken back from that peer
    (``details``: ``from_seq``, ``restored``); what no peer held is reported as
    :class:`LostWrite`. No seq is ever issued twice in one epoch."""

    code = "ROLLED_BACK"


class RollbackUnchecked(ChannelError):
    """A sequencer that loaded a channel from disk heard from no peer within the start-up
    bound (``NodeConfig.startup_check_s``), so a rollback of its store could not be checked
    (it cannot be seen offline). It went on acknowledging."""

    code = "ROLLBACK_UNCHECKED"


class PayloadTooLarge(ChannelError):
    """A payload is larger than the channel's limit (``ChannelPolicy.max_payload``).
    ``details``: ``size`` and ``limit`` in bytes. Raised before anything is written or sent;
    a sequencer refuses such a submission alone (the session stays up)."""

    code = "PAYLOAD_TOO_LARGE"


class NotHandedOff(ChannelError):
    """A channel this node sequenced was not handed to a live replica as the node closed (no
    replica was live, handoff is off, or the new sequencer did not confirm in time: then it
    may still take the channel). Otherwise writes wait until this node returns, or its
    authority recovers the channel. ``details``: ``reason``."""

    code = "NOT_HANDED_OFF"


class NoQuorum(ChannelError):
    """Too few of a majority channel's voters agreed: an election failed (refused by too many,
    or not done within its bound), and nothing changed. ``details``: ``epoch``, ``votes``,
    ``need``, ``voters``."""

    code = "NO_QUORUM"


class PublishTimeout(ChannelError):
    """The publish outcome is indeterminate: the lane died or timed out after sending."""

    code = "INDETERMINATE"


ERROR_CODES: dict[str, type[P2PWorldError]] = {}


def _register() -> None:
    stack: list[type[P2PWorldError]] = [P2PWorldError]
    while stack:
        cls = stack.pop()
        ERROR_CODES[cls.code] = cls
        stack.extend(cls.__subclasses__())


_register()


def error_from_code(code: str, message: str = "", **details: Any) -> P2PWorldError:
    """Rebuild a typed error from a code received on the wire (unknown codes -> base)."""
    cls = ERROR_CODES.get(code, RemoteProtocolError)
    return cls(message, **details)


class Unauthorized(RemoteProtocolError):
    """The signer may not perform this operation (not the owner, not the authority, ...)."""

    code = "UNAUTHORIZED"


class TokenExpired(Unauthorized):
    """The token is outside its validity window on this node's clock (beyond the leeway)."""

    code = "TOKEN_EXPIRED"


class ScopeDenied(Unauthorized):
    """The token is valid but its scopes do not cover the operation."""

    code = "SCOPE_DENIED"


class Revoked(Unauthorized):
    """The token, or the node it names, has been revoked."""

    code = "REVOKED"


class PolicyDenied(Unauthorized):
    """The control service's policy forbids what was asked (for example a transport lane)."""

    code = "POLICY_DENIED"


class Fenced(RemoteProtocolError):
    """An entry or head of an epoch that a signed epoch change has superseded."""

    code = "FENCED"


class NodeFailed(LocalProtocolError):
    """A task of the node's own machinery (its effect runner, store task or timers) failed:
    the node ended. This is a bug; ``__cause__`` holds the original exception."""

    code = "NODE_FAILED"


class NodeClosed(Refused):
    """The node has stopped: a call on it (or one still waiting on it) cannot go on."""

    code = "NODE_CLOSED"


class WaitTimeout(Refused, TimeoutError):
    """A ``wait_*`` call's condition did not hold within its ``timeout``."""

    code = "WAIT_TIMEOUT"


class InvalidArgument(LocalProtocolError, TypeError):
    """An argument of the wrong type or out of range, refused at the API edge."""

    code = "INVALID_ARGUMENT"


class AddressUnavailable(Refused):
    """A node cannot listen where it was told to (the port is taken, the address or the
    interface does not exist); ``details["address"]`` names it."""

    code = "ADDRESS_UNAVAILABLE"


class InternalError(LocalProtocolError):
    """An exception that is not a typed p2pworld error ended one scope (a session, a lane, a
    relay connection or a request); ``details["exception"]`` names it. The scope was closed
    and, where it should be, retried."""

    code = "INTERNAL_ERROR"


class HandshakeTimeout(HandshakeError):
    """The handshake did not finish within its time bound."""

    code = "HANDSHAKE_TIMEOUT"


class NostrError(DecodeError):
    """A Nostr event or relay message that is malformed, mis-signed or out of bounds."""

    code = "NOSTR_INVALID"


class Nip44Error(DecodeError):
    """A NIP-44 payload or key that is invalid (bad version, length, padding or MAC)."""

    code = "NIP44_INVALID"


class WorldError(RemoteProtocolError):
    """A world-state update or heartbeat was refused (nothing was applied)."""

    code = "WORLD_ERROR"


class ForgedUpdate(WorldError):
    """A world update whose signature, author or CRDT client id does not belong to the node
    it claims to come from."""

    code = "FORGED_UPDATE"


class StaleUpdate(WorldError):
    """A world update or heartbeat older than what this node holds (a replay or a duplicate):
    harmless, ignored."""

    code = "STALE_UPDATE"


class WorldGap(StaleUpdate):
    """Records are missing before this one: fetch them (anti-entropy); nothing was applied."""

    code = "WORLD_GAP"


class KeyUnavailable(Refused):
    """This node holds no key for the payload (not a participant, or removed before it)."""

    code = "KEY_UNAVAILABLE"


class DiscoveryError(Refused):
    """mDNS discovery could not start on the interfaces it was given."""

    code = "DISCOVERY_ERROR"


_register()
