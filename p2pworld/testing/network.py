"""The simulated network: sessions between simulated nodes, frames on the wire, faults.

Sessions are what the real transport gives: ordered and reliable while they last. A lost,
duplicated or reordered frame fails the session's authentication, so link faults show up as
session resets; a silent partition keeps sessions up while their frames wait (TCP
retransmits), until a node's keepalive (its node core's) ends them. Every frame goes through
the session's own framing (:class:`~p2pworld.transport.frames.FramePacker`).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from p2pworld.core.node import CandidateSeen, DialDone, PeerDown, PeerUp, Received
from p2pworld.effects import Dial
from p2pworld.errors import RemoteProtocolError
from p2pworld.testing.control_sim import SIM_NOSTR_KEY
from p2pworld.transport.candidate import Candidate
from p2pworld.transport.frames import FramePacker, FrameReader
from p2pworld.transport.handshake import PROTOCOL_VERSIONS
from p2pworld.wire import Message, encode_message

if TYPE_CHECKING:
    from p2pworld.core.node import Input
    from p2pworld.testing.nostr_sim import SimNostr
    from p2pworld.testing.sim import SimNode, Stats

_PACKER = FramePacker()
HANDSHAKE_RTTS = 3
"""A dial takes this many one-way latencies (connect, handshake) before it answers."""


MEMO_LIMIT = 4096
MEMO_FRAME_BYTES = 16 * 1024
"""Frames up to this size (at most :data:`MEMO_LIMIT` of them: 64 MiB at worst) whose
decoding the network keeps, shared by every simulated node: decoding is a pure function of
the bytes and messages are frozen values, so each node gets what its own decoding would give.
It saves the N-fold work of a fan-out, as the verification memo does."""


def _digest(frame: bytes) -> bytes:
    """What the trace records of a frame (hashing its repr cost more than the run itself for
    1 MiB entries)."""
    return hashlib.blake2b(frame, digest_size=16).digest()


class SimNetwork:
    """The network half of :class:`~p2pworld.testing.sim.Simulator`."""

    now: float
    rng: random.Random
    stats: Stats
    nodes: dict[str, SimNode]
    nostr: SimNostr | None
    auth: bool
    workspace: str
    sessions: set[frozenset[str]]
    links: set[frozenset[str]]
    blocked: set[tuple[str, str]]
    loss: float
    latency: float
    jitter: float
    observer: Callable[[SimNode, SimNode, Message], None] | None
    _fifo: dict[tuple[str, str], float]
    _held: dict[tuple[str, str], list[tuple[bytes, int]]]
    _readers: dict[tuple[str, str, int], FrameReader]
    _session_gen: dict[frozenset[str], int]
    _ids: dict[bytes, SimNode]
    _decoded: dict[bytes, tuple[Message, ...]]

    if TYPE_CHECKING:
        def at(self, delay: float, fn: Callable[[], None]) -> None: ...
        def now_ms(self, node: SimNode) -> int: ...
        def _record(self, *parts: Any) -> None: ...
        def _carry(self, node: SimNode, fx: list[Any], *, inp: Input | None = None) -> None: ...

    def _by_id(self) -> dict[bytes, SimNode]:
        if len(getattr(self, "_ids", {})) != len(self.nodes):
            self._ids = {n.signer_id: n for n in self.nodes.values()}
        return self._ids

    def _reachable(self, a: str, b: str) -> bool:
        if a not in self.nodes or b not in self.nodes:
            return False  # retired
        return (a, b) not in self.blocked and (b, a) not in self.blocked and \
            self.nodes[a].up and self.nodes[b].up

    def _introduce(self, node: SimNode) -> None:
        """What discovery tells ``node`` (its links: the topology), as candidates; its node
        core dials them when and on the lane it decides."""
        for pair in sorted(self.links, key=sorted):
            if node.name in pair:
                (other,) = pair - {node.name}
                peer = self.nodes.get(other)
                if peer is not None:
                    self._carry(node, [], inp=CandidateSeen(key="sim", candidate=Candidate(
                        node_id=peer.signer_id, workspace=self.workspace,
                        versions=PROTOCOL_VERSIONS,
                        addresses=(f"10.0.{peer.index // 256}.{peer.index % 256}",),
                        port=7000, source="sim", nostr=peer.signer.public_key)))

    def _dial(self, node: SimNode, d: Dial) -> None:
        """Carry out a :class:`~p2pworld.effects.Dial`: a handshake's time later, a session
        (or the reason there is none), and :class:`DialDone` to the dialling core."""
        gen = node.incarnation

        def attempt() -> None:
            if node.cores is None or node.incarnation != gen:
                return
            peer = self._by_id().get(d.peer)
            code = "CONNECT_FAILED" if peer is None else self._connect(
                node.name, peer.name, "nostr" if d.lane == "nostr" else "direct")
            if node.cores is not None and node.incarnation == gen:
                self._carry(node, [], inp=DialDone(peer=d.peer, ok=not code, code=code))

        self.at(HANDSHAKE_RTTS * self.latency, attempt)

    def _connect(self, a: str, b: str, lane: str = "direct") -> str:
        """``a`` opens a session to ``b`` on ``lane``; returns why not ("" if a session is up
        now, the new one or the one both ends keep)."""
        pair = frozenset((a, b))
        na, nb = self.nodes[a], self.nodes[b]
        if pair in self.sessions:
            cur = self.nostr.lane.get(pair, "direct") if self.nostr is not None else "direct"
            new = "nostr" if lane == "nostr" else "primary"
            keep_new = na.core is not None and na.core.peers is not None and \
                na.core.peers.admit(nb.signer_id, new, initiator=True)
            if cur == lane or not keep_new:
                return ""  # the session up stays (the same lane: one as good as the other)
            if not self._reachable(a, b):
                return "CONNECT_FAILED"
            self.stats.reach("lane_returned")  # the direct lane replaces the Nostr one
            self._disconnect(a, b)
        if lane == "direct" and not self._reachable(a, b):
            return "CONNECT_FAILED"
        if lane == "nostr":
            if self.nostr is None or not self.nostr.available() or not (na.up and nb.up):
                return "NOSTR_LANE_FAILED"
            self.stats.reach("nostr_lane")
        self.sessions.add(pair)
        if self.nostr is not None:
            self.nostr.opened(pair, lane)
        self._session_gen[pair] = self._session_gen.get(pair, 0) + 1
        self._record("up", a, b)
        assert na.cores is not None and nb.cores is not None
        if self.auth and not self._handshake_tokens(na, nb):
            # The handshake refuses a peer without a valid token: no session.
            self.sessions.discard(pair)
            self.stats.reach("session_refused")
            return "UNAUTHORIZED"
        kind = "nostr" if lane == "nostr" else "primary"
        self._carry(na, [], inp=PeerUp(peer=nb.signer_id, key=nb.signer.public_key, lane=kind,
                                       initiator=True))
        self._carry(nb, [], inp=PeerUp(peer=na.signer_id, key=na.signer.public_key, lane=kind,
                                       initiator=False))
        return ""

    def _handshake_tokens(self, na: SimNode, nb: SimNode) -> bool:
        """The node's session admission (``TokenBook.admit``), on each side's own clock."""
        for me, peer in ((na, nb), (nb, na)):
            book = me.cores.auth if me.cores else None
            if book is not None and book.admit(
                    peer.token or b"", now=self.now_ms(me) / 1000,
                    node_key=peer.signer.public_key, nostr_pubkey=SIM_NOSTR_KEY) is not None:
                return False
        return True

    def _disconnect(self, a: str, b: str) -> None:
        """The session between ``a`` and ``b`` ends (both cores hear ``PeerDown``; each
        dials again as its node core decides)."""
        pair = frozenset((a, b))
        if pair not in self.sessions:
            return
        self.sessions.discard(pair)
        self._record("down", a, b)
        for x, y in ((a, b), (b, a)):
            nx, ny = self.nodes[x], self.nodes[y]
            if nx.cores is not None:
                self._carry(nx, [], inp=PeerDown(peer=ny.signer_id))

    def _send(self, src: SimNode, dst_id: bytes, msgs: tuple[Message, ...]) -> None:
        dst = self._by_id().get(dst_id)
        if dst is None:
            return
        pair = frozenset((src.name, dst.name))
        if pair not in self.sessions:
            return
        if self.loss and self.rng.random() < self.loss:
            # A lost (or duplicated, or reordered) frame fails authentication: session reset.
            self.stats.reach(self.rng.choice(["loss", "duplication", "reorder"]))
            self._disconnect(src.name, dst.name)
            return
        lane = self.nostr.lane.get(pair, "direct") if self.nostr is not None else "direct"
        gen = self._session_gen[pair]
        # The session's own framing: a message larger than a frame travels in parts.
        for frame in _PACKER.pack([encode_message(m) for m in msgs]):
            if lane == "nostr":
                assert self.nostr is not None
                self.nostr.send(src.name, dst.name, frame, gen)
                continue
            self._transmit(src.name, dst.name, frame, gen)

    def _transmit(self, a: str, b: str, frame: bytes, gen: int) -> None:
        """One frame on the wire from ``a`` to ``b``, in order. Across a silent partition the
        session stays up and the frame waits, as TCP retransmits it: it arrives after
        :meth:`heal` if neither side's keepalive ended the session first."""
        if (a, b) in self.blocked:
            self._held.setdefault((a, b), []).append((frame, gen))
            return
        key = (a, b)
        t = max(self.now + self.latency + self.rng.random() * self.jitter,
                self._fifo.get(key, 0.0))
        self._fifo[key] = t
        self.at(t - self.now, functools.partial(self._deliver_frame, a, b, frame, gen))

    def _feed(self, reader: FrameReader, frame: bytes) -> tuple[Message, ...]:
        """``reader.feed(frame)``, decoded once per distinct small frame outside a
        reassembly, per simulator (a frame that does not decode raises each time)."""
        if reader.reassembling or len(frame) > MEMO_FRAME_BYTES:
            return tuple(reader.feed(frame))
        memo = self._decoded
        got = memo.get(frame)
        if got is None:
            got = tuple(reader.feed(frame))
            if got and not reader.reassembling:
                if len(memo) >= MEMO_LIMIT:
                    memo.clear()
                memo[frame] = got
        return got

    def _deliver_frame(self, src_name: str, dst_name: str, frame: bytes, gen: int) -> None:
        pair = frozenset((src_name, dst_name))
        src, dst = self.nodes.get(src_name), self.nodes.get(dst_name)
        if pair not in self.sessions or self._session_gen[pair] != gen or dst is None \
                or src is None or dst.cores is None:
            return  # the session died with this frame in flight
        dst.bytes_in += len(frame)
        dst.frames_in += 1
        reader = self._readers.get((src_name, dst_name, gen))
        if reader is None:
            for k in [k for k in self._readers if k[:2] == (src_name, dst_name)]:
                del self._readers[k]  # an older session's
            reader = self._readers[(src_name, dst_name, gen)] = FrameReader()
        try:
            msgs = self._feed(reader, frame)
        except RemoteProtocolError as e:
            # As the real session does: a frame that does not decode ends the session.
            self.stats.reach(f"session_error:{e.code}")
            self._disconnect(src.name, dst.name)
            return
        # A frame is one input, as in the runtime (its reader hands every message to the
        # cores before the effect runner carries out what they asked for).
        self._record("recv", dst.name, src.name, _digest(frame), len(msgs))
        self._carry(dst, [], inp=Received(peer=src.signer_id, messages=msgs))
        for m in msgs if self.observer is not None else ():
            self.observer(dst, src, m)  # type: ignore[misc]
