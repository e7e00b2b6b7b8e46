"""API calls as node-core inputs (pure): what an application (or the simulator's workload) asks
of a node, as frozen, keyword-only values.

Both executors hand these to :meth:`~p2pworld.core.node.NodeCore.handle` the same way: the
trio runtime's API (:mod:`p2pworld.runtime.api`) and the simulator's workload
(:mod:`p2pworld.testing.workload`). The call runs in the core; its plan carries what it
returns (:attr:`~p2pworld.core.node.Plan.result`: a publish's request number, a channel's
record, an epoch change) and, like every event, only queues its effects for the next flush.
A refused call raises its typed error out of ``handle`` and changes nothing. A call whose
arguments could not be stored and loaded back (a type, a range, text that is not UTF-8) is
refused when it is made (:class:`~p2pworld.errors.InvalidArgument`): what a node
acknowledges must load again after a restart.

The API's own checks, made before a call is built (:func:`need`, :func:`need_timeout`,
:func:`check_channel_name`, :func:`publish_key`, :func:`check_cursor`,
:func:`relays_configured`, :func:`authorize`), live here too: the runtime's parts
(:mod:`p2pworld.runtime.api`) call them and decide nothing themselves.

Example:
    >>> import random
    >>> from p2pworld.core.cores import build_cores
    >>> from p2pworld.core.node import Flush, NodeCore
    >>> from p2pworld.identity import Ed25519Signer
    >>> core = NodeCore(build_cores(Ed25519Signer(bytes(32)), workspace="lab",
    ...                             rng=random.Random(0), incarnation=1))
    >>> rec = core.handle(OpenChannel(name="notes"), now_ms=0).result
    >>> plan = core.handle(Publish(channel=rec.channel, payload=b"hi", idem_key=b"k1"),
    ...                    now_ms=0)
    >>> plan.result, plan.ready  # its request number; a batch waits for the flush
    (1, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from p2pworld import codec
from p2pworld.auth.book import REDUCER_SCOPES
from p2pworld.channel.elections import ELECTION_TIMEOUT_MS
from p2pworld.channel.handoffs import HANDOFF_TIMEOUT_MS
from p2pworld.compute.state import MAX_JOB_BYTES, POLICIES
from p2pworld.errors import InvalidArgument, LocalProtocolError, P2PWorldError
from p2pworld.log.entry import MAX_IDEM_KEY, MAX_NAME, MAX_PARTICIPANTS, ChannelPolicy
from p2pworld.world.doc import CapabilityAd, NodeInfo, SessionInfo

if TYPE_CHECKING:
    from p2pworld.auth.book import TokenBook
    from p2pworld.core.cores import Cores, NodeEffect
    from p2pworld.identity import Signer

S = TypeVar("S")


def _need(ok: bool, arg: str, what: str) -> None:
    if not ok:
        raise InvalidArgument(f"{arg} must be {what}", arg=arg)


def _key(value: object, arg: str) -> None:
    _need(isinstance(value, bytes) and type(value) is bytes and len(value) == 32, arg,
          "a 32-byte key")


def _text(value: object, arg: str, max_len: int) -> None:
    try:
        ok = type(value) is str and len(value) <= max_len and bool(value.encode("utf-8"))
    except UnicodeEncodeError:
        ok = False
    _need(ok, arg, f"text of 1..{max_len} characters, valid UTF-8")


def _policy(policy: object) -> None:
    """A policy that is stored as given: it must load back the same."""
    _need(policy is None or isinstance(policy, ChannelPolicy), "policy", "a ChannelPolicy")
    if not isinstance(policy, ChannelPolicy):
        return
    try:
        same = ChannelPolicy.from_wire(codec.decode(codec.encode(policy.to_wire()))) == policy
    except (P2PWorldError, TypeError, ValueError) as e:
        raise InvalidArgument(f"policy does not load back: {e}", arg="policy") from None
    _need(same, "policy", "a ChannelPolicy of the documented types (bool fields, int counts)")


def need(value: object, kind: type | tuple[type, ...], name: str) -> None:
    """Type-check an argument at the API edge (a typed refusal, not an AttributeError
    somewhere below).

    >>> need(b"id", bytes, "channel")
    >>> need("id", (bytes, int), "channel")
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: channel must be bytes or int, not str
    """
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise InvalidArgument(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, "
                              f"not {type(value).__name__}", arg=name)


def need_timeout(value: object, name: str = "timeout") -> None:
    """A timeout in seconds: a finite number above 0 (checked before anything is queued).

    >>> need_timeout(2.5)
    >>> need_timeout(float("inf"))
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: timeout must be a number of seconds above 0, not inf
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0 < value < math.inf:
        raise InvalidArgument(f"{name} must be a number of seconds above 0, not {value!r}",
                              arg=name)


def need_count(value: object, name: str) -> None:
    """A count or a position: an int of 0 or more (not a bool).

    >>> need_count(3, "count")
    >>> need_count(-1, "after")
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: after must be an int of 0 or more, not -1
    """
    if type(value) is not int or not 0 <= value < 1 << 62:
        raise InvalidArgument(f"{name} must be an int of 0 or more, not {value!r:.40}",
                              arg=name)


def need_choice(value: object, choices: Sequence[str], name: str) -> None:
    """One of ``choices`` (text).

    >>> need_choice("busy", ("online", "busy"), "status")
    >>> need_choice(12, ("online", "busy"), "status")
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: status must be one of online, busy, not 12
    """
    if type(value) is not str or value not in choices:
        raise InvalidArgument(f"{name} must be one of {', '.join(choices)}, not {value!r:.40}",
                              arg=name)


def check_compute_request(job: object, *, kind: object, needs: object, price: object,
                          sla_ms: object, policy: object, policy_class: object,
                          expires_in: object) -> None:
    """``request_compute``'s arguments, checked before anything is written (what a
    provider's fold would refuse, refused here instead).

    >>> check_compute_request(b"job", kind="5000", needs=("gpu",), price=0, sla_ms=0,
    ...                       policy="first", policy_class="free", expires_in=300.0)
    >>> check_compute_request(b"job", kind="5000", needs="gpu", price=0, sla_ms=0,
    ...                       policy="first", policy_class="free", expires_in=300.0)
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: needs must be at most 32 texts of at most 128 characters
    """
    _need(type(job) is bytes and len(job) <= MAX_JOB_BYTES, "job",
          f"bytes, at most {MAX_JOB_BYTES}")
    _need(type(kind) is str and 0 < len(kind) <= 16, "kind", "a text of 1..16 characters")
    _need(isinstance(needs, (tuple, list)) and len(needs) <= 32 and all(
        type(x) is str and len(x) <= 128 for x in needs), "needs",
        "at most 32 texts of at most 128 characters")
    need_count(price, "price")
    need_count(sla_ms, "sla_ms")
    need_choice(policy, POLICIES, "policy")
    need_choice(policy_class, ("free", "paid"), "policy_class")
    need_timeout(expires_in, "expires_in")


def check_channel_name(name: str, policy: ChannelPolicy | None) -> None:
    """``open_channel``'s own checks: ``name`` is text, ``policy`` a ChannelPolicy or None,
    and names starting with ``~`` and ``policy.app`` are the library's own.

    >>> check_channel_name("~compute", None)
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: channel names starting with '~' and policy.app are the library's own
    """
    need(name, str, "name")
    if policy is not None:
        need(policy, ChannelPolicy, "policy")
    if name.startswith("~") or (policy is not None and policy.app):
        raise InvalidArgument("channel names starting with '~' and policy.app are the "
                              "library's own", arg="name")


def publish_key(channel: object, payload: object, key: bytes | None, durability: object,
                timeout: object, prefix: bytes, counter: Iterator[int]) -> bytes:
    """Check a publish's arguments and return its idempotency key: ``key`` as given, or
    (None) this node's next one, ``prefix`` and the next of ``counter`` as 8 bytes.

    >>> import itertools
    >>> publish_key(b"c", b"p", None, "local", 10.0, b"pre:", itertools.count(7))
    b'pre:\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x07'
    >>> publish_key(b"c", b"p", b"k", "quorum", 10.0, b"", itertools.count())
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: durability is 'local' or 'replicated'
    """
    # need() only on a refusal: a publish that passes makes no call for its type checks.
    if not isinstance(channel, bytes):
        need(channel, bytes, "channel")
    if not isinstance(payload, bytes):
        need(payload, bytes, "payload")
    need_timeout(timeout)
    if key is not None:
        need(key, bytes, "key")
    if durability not in ("local", "replicated"):
        raise InvalidArgument("durability is 'local' or 'replicated'", arg="durability")
    if key is None:
        key = prefix + next(counter).to_bytes(8, "big")
    return key


def check_cursor(cursor: object) -> dict[bytes, int]:
    """A compute feed's cursor: None (from the start) or a dict of channel id -> seq.

    >>> check_cursor(None), check_cursor({b"c": 3})
    ({}, {b'c': 3})
    """
    if cursor is not None and not (isinstance(cursor, dict) and all(
            isinstance(k, bytes) and isinstance(v, int) for k, v in cursor.items())):
        raise InvalidArgument("cursor is a dict of channel id -> seq", arg="cursor")
    return cursor or {}


def relays_configured(service: S | None) -> S:
    """The node's Nostr service, refused (``LocalProtocolError``) when no relays are
    configured.

    >>> relays_configured(None)
    Traceback (most recent call last):
    ...
    p2pworld.errors.LocalProtocolError: no Nostr relays configured (NodeConfig.relays)
    """
    if service is None:
        raise LocalProtocolError("no Nostr relays configured (NodeConfig.relays)")
    return service


def authorize(book: TokenBook | None, node_key: bytes, reducer: str, *, now: float) -> None:
    """Check that ``node_key``'s token covers ``reducer``'s scope (:data:`REDUCER_SCOPES`),
    when the node checks tokens (a book; None: an open world, nothing to check)."""
    if book is not None:
        book.check(node_key, REDUCER_SCOPES[reducer], now=now)


class Call:
    """An API call (every call below is one)."""

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class OpenChannel(Call):
    """``open_channel``: create (or reopen) a channel this node sequences; the result is its
    :class:`~p2pworld.log.entry.ChannelRecord`."""

    name: str
    private: bool = False
    participants: tuple[bytes, ...] = ()
    policy: ChannelPolicy | None = None
    authority_key: bytes | None = None

    def __post_init__(self) -> None:
        _text(self.name, "name", MAX_NAME)
        _need(type(self.private) is bool, "private", "True or False")
        _need(isinstance(self.participants, (tuple, list)) and
              len(self.participants) <= MAX_PARTICIPANTS, "participants",
              f"a tuple of at most {MAX_PARTICIPANTS} keys")
        for p in self.participants:
            _key(p, "participants")
        if self.authority_key is not None:
            _key(self.authority_key, "authority_key")
        _policy(self.policy)

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return c.hub.open_channel(self.name, now_ms=now_ms, private=self.private,
                                  participants=self.participants, policy=self.policy,
                                  authority_key=self.authority_key)


@dataclass(frozen=True, kw_only=True)
class Publish(Call):
    """``publish_message``; the result is its request number (its outcome comes later as a
    :class:`~p2pworld.channel.hub.Resolved`)."""

    channel: bytes
    payload: bytes
    idem_key: bytes
    want: str = "local"

    def __post_init__(self) -> None:
        _need(type(self.channel) is bytes, "channel", "bytes")
        _need(type(self.payload) is bytes, "payload", "bytes")
        _need(type(self.idem_key) is bytes and 1 <= len(self.idem_key) <= MAX_IDEM_KEY,
              "key", f"1..{MAX_IDEM_KEY} bytes")
        _need(self.want in ("local", "replicated"), "durability", "'local' or 'replicated'")

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return c.hub.publish(self.channel, self.payload, idem_key=self.idem_key,
                             now_ms=now_ms, want=self.want)


@dataclass(frozen=True, kw_only=True)
class _Membership(Call):
    channel: bytes
    member: bytes

    def __post_init__(self) -> None:
        _need(type(self.channel) is bytes, "channel", "bytes")
        _key(self.member, "member")


@dataclass(frozen=True, kw_only=True)
class AddParticipant(_Membership):
    """Owner only: add ``member`` (a sequenced control entry); the result: a request
    number."""

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return c.hub.add_participant(self.channel, self.member, now_ms=now_ms)


@dataclass(frozen=True, kw_only=True)
class RemoveParticipant(_Membership):
    """Owner only: remove ``member`` (private channels rekey); the result: a request
    number."""

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return c.hub.remove_participant(self.channel, self.member, now_ms=now_ms)


@dataclass(frozen=True, kw_only=True)
class CloseChannel(Call):
    """``close_channel`` (owner only); the result: a request number."""

    channel: bytes

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return c.hub.close_channel(self.channel, now_ms=now_ms)


@dataclass(frozen=True, kw_only=True)
class Handoff(Call):
    """Planned handoff to ``next_sequencer`` (a key); the result: the epoch change."""

    channel: bytes
    next_sequencer: bytes

    def __post_init__(self) -> None:
        _need(type(self.channel) is bytes, "channel", "bytes")
        _key(self.next_sequencer, "next_sequencer")

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return c.hub.handoff(self.channel, self.next_sequencer, now_ms=now_ms)


@dataclass(frozen=True, kw_only=True)
class HandOffAll(Call):
    """This node leaves: hand every channel it sequences to a live replica
    (:mod:`p2pworld.channel.handoffs`), each confirmed within ``timeout_ms``."""

    timeout_ms: int = HANDOFF_TIMEOUT_MS

    def __post_init__(self) -> None:
        need_count(self.timeout_ms, "timeout_ms")

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return None, c.hub.hand_off_all(now_ms=now_ms, timeout_ms=self.timeout_ms)


MAX_ELECTION_TIMEOUT_S = 3600
"""The longest bound an election may be given, in seconds."""


def election_timeout_ms(timeout: object) -> int:
    """The bound of an election asked for with ``timeout`` seconds (above 0, at most
    :data:`MAX_ELECTION_TIMEOUT_S`), checked before anything is queued.

    >>> election_timeout_ms(2.5)
    2500
    """
    need_timeout(timeout)
    assert isinstance(timeout, (int, float))
    _need(timeout <= MAX_ELECTION_TIMEOUT_S, "timeout", f"at most {MAX_ELECTION_TIMEOUT_S} "
          "seconds")
    return math.ceil(timeout * 1000)


@dataclass(frozen=True, kw_only=True)
class Elect(Call):
    """Start an election to become ``channel``'s sequencer (a majority channel whose
    sequencer is gone), bounded by ``timeout_ms``; its outcome lands in the hub's
    ``elections.outcomes`` (the epoch change, or ``NoQuorum``)."""

    channel: bytes
    timeout_ms: int = ELECTION_TIMEOUT_MS

    def __post_init__(self) -> None:
        _need(type(self.channel) is bytes, "channel", "bytes")
        need_count(self.timeout_ms, "timeout_ms")
        _need(self.timeout_ms <= MAX_ELECTION_TIMEOUT_S * 1000, "timeout_ms",
              f"at most {MAX_ELECTION_TIMEOUT_S * 1000}")

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return None, c.hub.elect(self.channel, now_ms=now_ms, timeout_ms=self.timeout_ms)


@dataclass(frozen=True, kw_only=True)
class Recover(Call):
    """Unplanned handoff signed by the channel's ``authority``; the result: the epoch
    change."""

    channel: bytes
    authority: Signer
    new_sequencer: bytes

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return c.hub.recover(self.channel, self.authority, self.new_sequencer, now_ms=now_ms)


@dataclass(frozen=True, kw_only=True)
class AckMessage(Call):
    """``ack_message``: this node consumed ``channel`` up to ``seq``."""

    channel: bytes
    seq: int

    def __post_init__(self) -> None:
        _need(type(self.channel) is bytes, "channel", "bytes")
        _need(type(self.seq) is int and self.seq >= 0, "seq", "an int of 0 or more")

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return None, c.hub.ack_message(self.channel, self.seq, now_ms=now_ms)


@dataclass(frozen=True, kw_only=True)
class Join(Call):
    """Join the world with this node's info (and its session)."""

    info: NodeInfo
    session: SessionInfo | None = None

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return None, c.world.join(self.info, now_ms=now_ms, session=self.session)


@dataclass(frozen=True, kw_only=True)
class Advertise(Call):
    """``advertise``: publish this node's capability ad."""

    ad: CapabilityAd

    def __post_init__(self) -> None:
        need(self.ad, CapabilityAd, "ad")

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return None, c.world.advertise(self.ad, now_ms=now_ms)


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Call):
    """``heartbeat``: an explicit beat; ``status`` stays for the automatic beats."""

    status: str = "online"

    def __post_init__(self) -> None:
        need_choice(self.status, ("online", "busy"), "status")

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return None, c.world.heartbeat(now_ms=now_ms, status=self.status)


@dataclass(frozen=True, kw_only=True)
class SetSession(Call):
    """This node's session in its world document (best effort, as a link)."""

    session: SessionInfo

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return None, c.own_world(c.world.set_session(self.session, now_ms=now_ms))


@dataclass(frozen=True, kw_only=True)
class Leave(Call):
    """Leave the world: peers see ``left`` at once."""

    def apply(self, c: Cores, now_ms: int) -> tuple[Any, Sequence[NodeEffect]]:
        return None, c.world.leave(now_ms=now_ms)


CALLS: tuple[type[Call], ...] = (OpenChannel, Publish, AddParticipant, RemoveParticipant,
                                 CloseChannel, Handoff, HandOffAll, Elect, Recover, AckMessage,
                                 Join,
                                 Advertise, Heartbeat, SetSession, Leave)
"""Every API call the node core takes."""
