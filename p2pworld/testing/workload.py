"""What a scenario does to a simulated world: its workload (channels, publishes, handoffs,
recoveries) and its faults (partitions, clock jumps, injected frames, stores lost or rolled
back), and the questions it asks (has a channel or the world converged?)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from p2pworld import codec
from p2pworld.channel.elections import ELECTION_TIMEOUT_MS
from p2pworld.channel.handoffs import HANDOFF_TIMEOUT_MS, HandoffReport
from p2pworld.core.calls import (
    Call,
    Elect,
    Handoff,
    HandOffAll,
    OpenChannel,
    Publish,
    Recover,
)
from p2pworld.core.node import Input, Received
from p2pworld.errors import P2PWorldError
from p2pworld.log.entry import ChannelPolicy
from p2pworld.testing.store import MemoryLogStore

if TYPE_CHECKING:
    import random

    from p2pworld.identity import Signer
    from p2pworld.testing.nostr_sim import SimNostr
    from p2pworld.testing.sim import SimNode, Stats, StoreFactory
    from p2pworld.wire import Message


class Workload:
    """The scenario-facing half of :class:`~p2pworld.testing.sim.Simulator`."""

    now: float
    rng: random.Random
    stats: Stats
    nodes: dict[str, SimNode]
    retired: dict[str, SimNode]
    stores: StoreFactory | None
    nostr: SimNostr | None
    blocked: set[tuple[str, str]]
    _held: dict[tuple[str, str], list[tuple[bytes, int]]]
    _session_gen: dict[frozenset[str], int]
    sessions: set[frozenset[str]]
    links: set[frozenset[str]]
    _stamped: dict[tuple[str, bytes, bytes, bytes], bytes]

    if TYPE_CHECKING:
        def now_ms(self, node: SimNode) -> int: ...
        def run(self, seconds: float) -> None: ...
        def any_node(self, name: str) -> SimNode: ...
        def retire(self, name: str) -> None: ...
        def _by_id(self) -> dict[bytes, SimNode]: ...
        def _carry(self, node: SimNode, fx: list[Any], *, inp: Input | None = None) -> None: ...
        def _calls(self, node: SimNode, calls: Sequence[Call]) -> list[Any]: ...
        def _disconnect(self, a: str, b: str) -> None: ...
        def _transmit(self, a: str, b: str, frame: bytes, gen: int) -> None: ...

    def open_channel(self, owner: str, name: str, *, policy: ChannelPolicy | None = None,
                     authority: Signer | None = None) -> bytes:
        node = self.nodes[owner]
        assert node.hub is not None
        [rec] = self._calls(node, [OpenChannel(
            name=name, policy=policy, authority_key=authority.public_key if authority else None)])
        return bytes(rec.channel)

    def fill_disk(self, name: str, full: bool = True, *, room: int = 0) -> None:
        """The node's disk fills up (``full=False``: space comes back): a write of its log
        store that needs more than ``room`` bytes fails with ``StoreFull`` and nothing of it
        is written, as when sqlite reports ``SQLITE_FULL``; smaller writes fit until the room
        is used (the real stores get a size limit of their current size plus the room)."""
        store = self.nodes[name].store
        db = getattr(store, "db", None)
        if db is None:
            store.full, store.room = full, room
        else:
            pages = (db.execute("PRAGMA page_count").fetchone()[0] + room // 4096 if full
                     else 1073741823)
            db.execute(f"PRAGMA max_page_count={pages}")
        self.stats.reach("disk_full" if full else "disk_freed")

    def publish(self, writer: str, channel: bytes, payload: bytes, *, key: bytes,
                want: str = "local") -> None:
        self.publish_many(writer, channel, [(key, payload)], want=want)

    def publish_many(self, writer: str, channel: bytes, items: list[tuple[bytes, bytes]], *,
                     want: str = "local") -> None:
        """Publishes that arrive together (concurrent callers of one node in one pass of its
        effect runner): one flush takes them all, as in the runtime. ``items``: (key,
        payload) pairs."""
        node = self.nodes.get(writer)
        if node is None or node.core is None:
            return  # down, or retired
        for key, payload in items:
            # A retry of the same payload under the same key sends the same bytes.
            stamped = self._stamped.setdefault((writer, channel, key, payload), codec.encode(
                {"t": int(self.now * 1e6), "p": payload}))
            try:
                req = node.core.handle(Publish(channel=channel, payload=stamped, idem_key=key,
                                               want=want), now_ms=self.now_ms(node)).result
            except P2PWorldError as e:
                self.stats.outcomes[e.code] = self.stats.outcomes.get(e.code, 0) + 1
                continue
            node.pending[req] = (channel, key, stamped, self.now)
        self._calls(node, [])  # one flush takes them all

    def handoff(self, owner: str, channel: bytes, to: str) -> None:
        node = self.nodes[owner]
        if node.hub is None or channel not in node.hub.own:
            return
        self._calls(node, [Handoff(channel=channel,
                                   next_sequencer=self.nodes[to].signer.public_key)])
        self.stats.reach("handoff")

    def leave(self, *names: str, timeout_ms: int = HANDOFF_TIMEOUT_MS
              ) -> dict[str, HandoffReport]:
        """The nodes leave cleanly, at once and for good, as ``node.close()`` does: each node
        core hands off what it sequences (the same call), simulated time runs until each
        core says every handoff is confirmed or past its bound, and the nodes are retired."""
        leaving = [n for n in names if self.nodes[n].hub is not None]
        for name in leaving:
            self._calls(self.nodes[name], [HandOffAll(timeout_ms=timeout_ms)])
        end = self.now + timeout_ms / 1000 + 1.0  # the cores' bound ends it before this

        def waiting() -> bool:
            return any((h := self.nodes[n].hub) is not None and not h.handoffs.done
                       for n in leaving)

        while waiting() and self.now < end:
            self.run(0.01)
        out = {}
        for name in leaving:
            hub = self.nodes[name].hub
            out[name] = hub.handoffs.report() if hub is not None else HandoffReport()
            self.stats.reach("handed_off" if out[name].handed else "not_handed_off")
            self.retire(name)
        return out

    def elect(self, at: str, channel: bytes, *, timeout_ms: int = ELECTION_TIMEOUT_MS
              ) -> None:
        """A voter starts an election by hand, as ``node.channels.elect`` does (the same
        call); its outcome is in the node's ``hub.elections.outcomes``. A call the core
        refuses (not a voter, it sequences the channel) is counted, not raised."""
        node = self.nodes[at]
        if node.hub is None:
            return
        try:
            self._calls(node, [Elect(channel=channel, timeout_ms=timeout_ms)])
        except P2PWorldError as e:
            self.stats.reach(f"elect_refused:{e.code}")
            return
        self.stats.reach("election")

    def recover(self, at: str, channel: bytes, authority: Signer) -> None:
        node = self.nodes[at]
        if node.hub is None:
            return
        self._calls(node, [Recover(channel=channel, authority=authority,
                                   new_sequencer=node.signer.public_key)])
        self.stats.reach("handoff")

    def partition(self, side: set[str], *, one_way: bool = False,
                  silent: bool = False) -> None:
        """Cut every link between ``side`` and the rest (only side -> rest if one_way:
        a session needs both directions, so it fails either way). ``silent``: no side sees
        its sessions end; their frames are lost until each node's keepalive finds them
        dead."""
        rest = set(self.nodes) - side
        for a in sorted(side):
            for b in sorted(rest):
                self.blocked.add((a, b))
                if not one_way:
                    self.blocked.add((b, a))
                if not silent:
                    self._disconnect(a, b)
        self.stats.reach("partition")

    def heal(self) -> None:
        self.blocked.clear()
        for (a, b), frames in sorted(self._held.items()):
            for frame, gen in frames:
                if frozenset((a, b)) in self.sessions and \
                        self._session_gen[frozenset((a, b))] == gen:
                    self._transmit(a, b, frame, gen)
        self._held.clear()
        # Nothing reconnects here: each node's core dials again at its own backoff, and
        # probes the direct lane from the Nostr lane (a direct session replaces a Nostr one).

    def jump_clock(self, name: str, seconds: float) -> None:
        self.nodes[name].clock_offset += seconds
        self.stats.reach("clock_jump")

    def inject(self, into: str, from_: str, msg: Message) -> None:
        """Deliver ``msg`` to ``into`` as if ``from_`` had sent it (hostile peers)."""
        dst, src = self.nodes[into], self.nodes[from_]
        if dst.cores is not None:
            self._carry(dst, [], inp=Received(peer=src.signer_id, messages=(msg,)))

    def converged(self, channel: bytes) -> bool:
        """Every node is up, holds the channel, and all heads and states are equal."""
        heads = set()
        for node in self.nodes.values():
            if node.hub is None or (channel not in node.hub.own and
                                    channel not in node.hub.replicas):
                return False
            log = node.hub.log(channel)
            heads.add((log.seq, log.head_hash, log.state.epoch))
        return len(heads) == 1

    def run_until_converged(self, channel: bytes, limit: float, step: float = 0.005
                            ) -> float | None:
        """Advance time until :meth:`converged`; returns the virtual seconds it took (None if
        not within ``limit``). Work scheduled after convergence still runs later."""
        start = self.now
        while self.now - start <= limit:
            if self.converged(channel):
                return self.now - start
            self.run(step)
        return None

    def name_of(self, nid: bytes) -> str | None:
        node = self._by_id().get(nid)
        if node is None:
            node = next((n for n in self.retired.values() if n.signer_id == nid), None)
        return node.name if node else None

    def world_converged(self) -> bool:
        """Every node is up and holds the same document positions and contents."""
        hashes = {n.world.state_hash() if n.world else b"" for n in self.nodes.values()}
        return len(hashes) == 1 and b"" not in hashes

    def run_until_world_converged(self, limit: float, step: float = 0.05) -> float | None:
        start = self.now
        while self.now - start <= limit:
            if self.world_converged():
                return self.now - start
            self.run(step)
        return None

    # --- store faults -------------------------------------------------------------------

    def destroy_store(self, name: str) -> None:
        """The node's log store is lost for good (the machine is gone): it gets a new,
        empty one."""
        node = self.any_node(name)
        node.store.close()
        node.store_generation += 1
        node.store = (self.stores.log(name, node.store_generation)
                      if self.stores is not None else MemoryLogStore())

    def copy_store(self, name: str) -> Any:
        """A copy of the node's log store as it stands (for :meth:`roll_back_store`)."""
        node = self.nodes[name]
        if self.stores is None:
            return node.store.crash()  # in memory: a deep copy of what was written
        node.store_generation += 1
        return node.store.copy_into(self.stores.log(name, node.store_generation))

    def roll_back_store(self, name: str, old: Any) -> None:
        """While the node is down, its store becomes ``old`` (an old copy restored, a lost
        WAL): it restarts from an older head."""
        node = self.nodes[name]
        assert not node.up, "a store is rolled back while its node is down"
        node.store.close()
        node.store = old
