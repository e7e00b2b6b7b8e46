"""The Nostr side of the simulator: relays, the fallback lane and the bridge outbox.

:class:`SimNostr` is what :class:`~p2pworld.testing.sim.Simulator` runs when built with
``nostr=True``. It uses the real pieces wherever they are pure or deterministic:

* **Lane frames** go through the real :func:`~p2pworld.nostr.lane_frames.split` and
  :class:`~p2pworld.nostr.lane_frames.Reassembler`: every part is published to every relay that is up,
  each relay may drop it, refuse it (``rate-limited:``) or deliver it twice, and copies arrive
  out of order (relays are not FIFO with each other). A frame no relay accepted closes the pipe
  (a session reset, as in :class:`~p2pworld.io.nostr_lane.NostrPipe`); a part every relay lost
  leaves a gap that closes the pipe after :data:`~p2pworld.nostr.lane_frames.GAP_TIMEOUT_S`.
* **Which messages may cross** is the node core's rule (:func:`~p2pworld.core.lanes.held_back`
  on every flush); lane precedence is the node's: direct, a direct retry, then Nostr, and back
  to direct as soon as it answers.
* **Mirrors** are built by :func:`~p2pworld.core.mirror.compute_mirror_rows` (the node's
  code) and written to a real :class:`~p2pworld.io.nostr_outbox.Outbox` (sqlite in memory: each
  enqueue and mark is one committed transaction, which is what survives a crash, so the outbox
  object outlives a simulated crash). The bridge drains it every tick with the outbox's own
  due/mark/backoff logic against the simulated relays.

Lane parts travel as the real lane sends them: :meth:`~p2pworld.nostr.lane_frames.LaneFrame.encode`,
NIP-44 v2 encryption for the recipient's Nostr key, and on arrival decryption and the checking
:meth:`~p2pworld.nostr.lane_frames.LaneFrame.decode`. Everything random comes from the simulator's
seeded rng: Nostr keys are derived from the seed, and BIP-340 aux randomness and NIP-44 nonces
are drawn from ``sim.rng``.

Example:
    >>> from p2pworld.log.entry import ChannelPolicy
    >>> from p2pworld.testing.sim import Simulator
    >>> sim = Simulator(seed=2, nodes=3, nostr=True)
    >>> ch = sim.open_channel("n0", "c", policy=ChannelPolicy(nostr_fallback=True))
    >>> sim.run(0.1)
    >>> sim.partition({"n2"})          # n2 loses its direct lane...
    >>> sim.run(1.0)
    >>> sim.nostr.lane[frozenset(("n0", "n2"))]   # ...and reaches n0 through the relays
    'nostr'
    >>> sim.publish("n2", ch, b"hi", key=b"k"); sim.run(1.0)
    >>> sim.nostr.lanes.delivered["nostr"] >= 1, sim.stats.outcomes
    (True, {'appended': 1})
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2pworld.core.lanes import LaneCounters
from p2pworld.core.mirror import compute_mirror_rows
from p2pworld.io.nostr_outbox import Outbox
from p2pworld.nostr import nip44
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey
from p2pworld.nostr.lane_frames import GAP_TIMEOUT_S, LaneFrame, Reassembler, split

if TYPE_CHECKING:
    from p2pworld.channel.hub import Delivered
    from p2pworld.testing.sim import SimNode, Simulator

RELAY_LATENCY = 0.03
RELAY_JITTER = 0.03
PIPE = bytes(16)


@dataclass
class SimRelay:
    url: str
    up: bool = True
    drop: float = 0.0
    """Share of events accepted (``OK true``) and then lost."""
    duplicate: float = 0.0
    """Share of events delivered twice to subscribers."""
    rate_limited: float = 0.0
    """Share of events refused with ``rate-limited:``."""
    events: dict[str, Event] = field(default_factory=dict)
    """What the relay stores (bridge events), by id."""

    @property
    def healthy(self) -> bool:
        return self.up and not (self.drop or self.duplicate or self.rate_limited)


class SimNostr:
    """Relays, lane and bridge for one :class:`~p2pworld.testing.sim.Simulator`."""

    def __init__(self, sim: Simulator, *, relays: int = 2, fallback: bool = True) -> None:
        self.sim = sim
        self.fallback = fallback
        self.relays = {f"ws://relay{i}": SimRelay(f"ws://relay{i}") for i in range(relays)}
        self.keys: dict[str, NostrKey] = {}
        self.outboxes: dict[str, Outbox] = {}
        self.requests: dict[str, dict[str, str]] = {}
        self.lane: dict[frozenset[str], str] = {}
        self._tx: dict[tuple[str, str], int] = {}
        self._rx: dict[tuple[str, str], Reassembler] = {}
        self._past = LaneCounters()
        """The lanes counted by nodes' cores that have since crashed."""
        self._conv_keys: dict[tuple[str, str], bytes] = {}

    # --- per node ------------------------------------------------------------------------

    def boot(self, node: SimNode) -> None:
        if node.name not in self.keys:
            secret = hashlib.blake2b(b"nostr/%d/%s" % (self.sim.seed, node.name.encode()),
                                     digest_size=32).digest()
            self.keys[node.name] = NostrKey(secret)
            box = self.outboxes[node.name] = Outbox(":memory:", relays=sorted(self.relays))
            # A simulation has no teardown: its outboxes close when it is collected (an open
            # sqlite connection left to the garbage collector warns on Python 3.13).
            weakref.finalize(self, box.close)
        # Memory is gone after a crash; the outbox (durable) tells the mirror what it sent.
        self.requests[node.name] = self.outboxes[node.name].first_events("compute:")

    def crashed(self, node: SimNode) -> None:
        """``node`` crashed: what its core counted stays in :attr:`lanes`."""
        if node.core is not None:
            for lane, n in node.core.lanes.counters.delivered.items():
                self._past.count(lane, n)

    @property
    def lanes(self) -> LaneCounters:
        """Deliveries by lane, counted by every node's core (crashed ones included)."""
        out = LaneCounters()
        for c in [self._past, *(n.core.lanes.counters for n in self.sim.nodes.values()
                                if n.core is not None)]:
            for lane, k in c.delivered.items():
                out.count(lane, k)
        return out

    def aux(self) -> bytes:
        return self.sim.rng.getrandbits(256).to_bytes(32, "big")

    def delivered(self, node: SimNode, e: Delivered) -> None:
        """Mirror a delivery (the node's code; the node core counted its lane)."""
        sim, cores = self.sim, node.cores
        assert cores is not None
        rows = compute_mirror_rows(cores, self.keys[node.name], e.channel, e.entries,
                                   now_ms=sim.now_ms(node), aux=self.aux,
                                   requests=self.requests[node.name])
        box = self.outboxes[node.name]
        for ev, source, h in rows:
            if box.enqueue(ev, source=source, entry_hash=h, now=sim.now):
                sim.stats.reach("bridge_enqueued")
                sim._record("bridge", node.name, ev.id)

    def drain(self, node: SimNode) -> None:
        """The bridge: publish what is due, mark it, as :class:`~p2pworld.io.nostr_relay.Bridge`."""
        sim, box = self.sim, self.outboxes[node.name]
        for ev, url in box.due(now=sim.now):
            relay = self.relays.get(url)
            ok, why = False, "no answer"
            if relay is None or not relay.up:
                sim.stats.reach("relay_outage")
            elif sim.rng.random() < relay.rate_limited:
                why = "rate-limited: slow down"
                sim.stats.reach("relay_rate_limited")
            elif sim.rng.random() < relay.drop:
                sim.stats.reach("relay_drop")  # accepted and lost: it stays due, retried
            else:
                ok = True
                why = "duplicate: already have it" if ev.id in relay.events else ""
                relay.events[ev.id] = ev
            box.mark(ev.id, url, ok=ok, message=why, now=sim.now)
            sim._record("mark", node.name, ev.id, url, ok)

    # --- the lane ------------------------------------------------------------------------

    def available(self) -> bool:
        return self.fallback and any(r.up for r in self.relays.values())

    def opened(self, pair: frozenset[str], lane: str) -> None:
        self.lane[pair] = lane
        a, b = sorted(pair)
        for key in ((a, b), (b, a)):
            self._tx[key] = 0
            self._rx[key] = Reassembler()

    def send(self, src: str, dst: str, frame: bytes, gen: int) -> None:
        """Carry one session frame over the relays (parts, copies, reordering, loss)."""
        sim = self.sim
        pair = frozenset((src, dst))
        self._tx[(src, dst)] += 1
        n = self._tx[(src, dst)]
        for part in split(PIPE, True, n, frame):
            accepted = delivered = 0
            for url in sorted(self.relays):
                relay = self.relays[url]
                if not relay.up:
                    continue
                if sim.rng.random() < relay.rate_limited:
                    sim.stats.reach("relay_rate_limited")
                    continue
                accepted += 1
                if sim.rng.random() < relay.drop:
                    sim.stats.reach("relay_drop")
                    continue
                copies = 2 if sim.rng.random() < relay.duplicate else 1
                if copies == 2:
                    sim.stats.reach("duplication")
                wire = nip44.encrypt(part.encode(), self._conv(src, dst),
                                     nonce=sim.rng.getrandbits(256).to_bytes(32, "big"))
                for _ in range(copies):
                    delivered += 1
                    delay = RELAY_LATENCY + sim.rng.random() * RELAY_JITTER
                    sim.at(delay, self._arrival(src, dst, wire, gen))
            if not accepted:
                # No relay took the frame: the pipe closes, the session resets.
                sim.stats.reach("relay_outage" if not any(
                    r.up for r in self.relays.values()) else "relay_rate_limited")
                sim._disconnect(src, dst)
                return
            if not delivered:
                # Lost everywhere: a gap the receiver closes the pipe on.
                def gap_check() -> None:
                    rx = self._rx.get((src, dst))
                    if sim._session_gen.get(pair) == gen and rx is not None and \
                            rx.gap_since is not None:
                        sim._disconnect(src, dst)
                    elif sim._session_gen.get(pair) == gen:
                        # No later frame made the gap visible yet: check again later.
                        sim.at(GAP_TIMEOUT_S, gap_check)

                sim.at(GAP_TIMEOUT_S, gap_check)

    def _conv(self, a: str, b: str) -> bytes:
        """The NIP-44 conversation key between two nodes (symmetric, cached)."""
        pair = (a, b) if a < b else (b, a)
        k = self._conv_keys.get(pair)
        if k is None:
            k = self._conv_keys[pair] = nip44.conversation_key(
                self.keys[pair[0]].secret, self.keys[pair[1]].public)
        return k

    def _arrival(self, src: str, dst: str, wire: str, gen: int) -> Callable[[], None]:
        def arrive() -> None:
            sim = self.sim
            pair = frozenset((src, dst))
            if pair not in sim.sessions or sim._session_gen[pair] != gen:
                return
            part = LaneFrame.decode(nip44.decrypt(wire, self._conv(src, dst)))
            for frame in self._rx[(src, dst)].feed(part, now=sim.now):
                sim._deliver_frame(src, dst, frame, gen)

        return arrive

    # --- faults --------------------------------------------------------------------------

    def outage(self, url: str, seconds: float) -> None:
        """Relay ``url`` goes down for ``seconds``."""
        sim = self.sim
        self.relays[url].up = False
        sim._record("relay_down", url)
        if not any(r.up for r in self.relays.values()):
            for pair in sorted(self.lane, key=sorted):
                if self.lane[pair] == "nostr" and pair in sim.sessions:
                    sim.stats.reach("relay_outage")
                    sim._disconnect(*sorted(pair))

        def back() -> None:
            self.relays[url].up = True
            sim._record("relay_up", url)

        sim.at(seconds, back)

    def misbehave(self, url: str, *, drop: float = 0.0, duplicate: float = 0.0,
                  rate_limited: float = 0.0) -> None:
        r = self.relays[url]
        r.drop, r.duplicate, r.rate_limited = drop, duplicate, rate_limited

    def calm(self) -> None:
        """Every relay up and honest (the end of a scenario)."""
        for r in self.relays.values():
            r.up, r.drop, r.duplicate, r.rate_limited = True, 0.0, 0.0, 0.0

    def pending(self) -> int:
        return sum(box.pending() for box in self.outboxes.values())
