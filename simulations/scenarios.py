"""Scenarios: a workload plus a fault schedule, all drawn from the seed.

Each scenario returns the finished :class:`~p2pworld.testing.sim.Simulator`, the channel it
used, and scenario-specific anomaly counts (e.g. ``forks_undetected``). Every scenario ends
the same way: faults stop, partitions heal, crashed nodes restart, and the cluster runs
quietly so checkers look at the converged state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pycrdt

from p2pworld import codec
from p2pworld.compute.core import COMPUTE_APP, COMPUTE_CHANNEL
from p2pworld.compute.state import encode_event
from p2pworld.core.calls import Advertise, OpenChannel, Publish
from p2pworld.identity import Ed25519Signer
from p2pworld.log.entry import ChannelPolicy, ChannelRecord, Submission
from p2pworld.log.sequencer import Sequencer
from p2pworld.log.state import ChannelState, EpochChange
from p2pworld.testing.sim import Simulator, StoreFactory
from p2pworld.wire import Entries, WorldPush
from p2pworld.world.doc import CapabilityAd, NodeInfo
from p2pworld.world.records import DocUpdate, Heartbeat, client_id

Result = tuple[Simulator, bytes, dict[str, int]]

STORES: StoreFactory | None = None
"""Set by the runner for ``--stores sqlite``: every scenario's nodes run the real stores."""
STORE_LATENCY: float = 0.0
"""Set by the runner for ``--store-latency S``: every commit takes about that long (seconds)."""


def _setup(seed: int, nodes: int = 4, policy: ChannelPolicy | None = None,
           nostr: bool = False, store_latency: float = 0.0
           ) -> tuple[Simulator, bytes, Ed25519Signer]:
    sim = Simulator(seed, nodes, nostr=nostr, stores=STORES,
                    store_latency=max(store_latency, STORE_LATENCY))
    authority = Ed25519Signer(bytes([seed % 251 + 1]) * 32)
    sim.extra_signers = [authority]  # type: ignore[attr-defined]
    ch = sim.open_channel("n0", "sim", policy=policy or ChannelPolicy(replication=1),
                          authority=authority)
    sim.channel = ch  # type: ignore[attr-defined]
    sim.run(0.2)
    return sim, ch, authority


def _traffic(sim: Simulator, ch: bytes, *, seconds: float, rate: float = 20.0,
             replicated_share: float = 0.3, large_share: float = 0.0) -> None:
    """Writers publish at random; some ask for replicated acks; some retry a key; a
    ``large_share`` of them carries 20-150 kB."""
    n = int(seconds * rate)
    names = sorted(sim.nodes)
    writers: list[str] = []
    for i in range(n):
        writer = sim.rng.choice(names)
        want = "replicated" if sim.rng.random() < replicated_share else "local"
        j = i - 3 if i > 3 and sim.rng.random() < 0.05 else i
        if j != i and sim.rng.random() < 0.5:
            writer = writers[j]  # the same writer retries: a duplicate (or a conflict)
        writers.append(writer)
        key = b"k%d" % j  # j < i: a retry (same payload) or a conflict (other payload)
        t = sim.rng.random() * seconds
        payload = b"m%d" % j
        if j != i and sim.rng.random() < 0.3:
            payload = b"other"
        if large_share and sim.rng.random() < large_share:
            payload += bytes(sim.rng.randrange(20_000, 150_000))

        def go(w: str = writer, k: bytes = key, p: bytes = payload, wn: str = want) -> None:
            sim.publish(w, ch, p, key=k, want=wn)

        sim.at(t, go)


def _settle(sim: Simulator, seconds: float = 3.0) -> None:
    """Stop faults, heal, restart everyone; measure how long convergence takes."""
    sim.loss = 0.0
    if sim.nostr is not None:
        sim.nostr.calm()
    for name in sorted(sim.nodes):
        sim.restart(name)
    sim.heal()
    ch = getattr(sim, "channel", None)
    if ch is not None:
        took = sim.run_until_converged(ch, seconds)
        sim.convergence_s = took  # type: ignore[attr-defined]
    sim.run(seconds)
    # World replicas converge by digest exchange when sessions come back (bounded wait; a
    # world that has not converged by then is reported as ``diverged``).
    sim.run_until_world_converged(15.0)


def backlog_recovery(seed: int) -> Result:
    """A node misses 10,000 entries, then returns: how long until it has caught up?"""
    sim, ch, _ = _setup(seed, nodes=3)
    sim.partition({"n2"})
    for i in range(10_000):
        sim.publish(sim.rng.choice(["n0", "n1"]), ch, b"b%d" % i, key=b"b%d" % i)
        if i % 500 == 499:
            sim.run(0.05)
    sim.run(1.0)
    sim.heal()
    took = sim.run_until_converged(ch, 10.0)
    sim.recovery_s = took  # type: ignore[attr-defined]
    _settle(sim, 1.0)
    return sim, ch, {"diverged": 0 if took is not None else 1}


def steady(seed: int) -> Result:
    """No faults: the baseline the SLOs are measured on (with relays configured and the
    fallback lane allowed, so the fallback ratio is measured, not assumed)."""
    sim, ch, _ = _setup(seed, policy=ChannelPolicy(replication=1, nostr_fallback=True),
                        nostr=True)
    sim.measure_staleness = True
    _traffic(sim, ch, seconds=3)
    sim.run(12.0)
    _settle(sim)
    return sim, ch, {}


def partition_heal(seed: int) -> Result:
    sim, ch, _ = _setup(seed)
    _traffic(sim, ch, seconds=4)
    names = sorted(sim.nodes)
    kind = sim.rng.choice(["halves", "isolate", "one-way", "swizzle", "silent"])
    sim.run(0.5)
    if kind == "halves":
        sim.partition(set(names[: len(names) // 2]))
    elif kind == "silent":
        # Nobody sees the sessions end: the keepalive must find them dead (3 intervals),
        # and the writes stuck behind them wait for the lane to return.
        sim.partition({sim.rng.choice(names)}, silent=True)
        sim.run(10.0 + 10 * sim.rng.random())
    elif kind == "isolate":
        sim.partition({sim.rng.choice(names)})
    elif kind == "one-way":
        sim.partition({sim.rng.choice(names)}, one_way=True)
    else:
        order = names[:]
        sim.rng.shuffle(order)
        for n in order[:-1]:
            sim.run(0.3)
            sim.partition({n})
    sim.run(1.0 + sim.rng.random())
    sim.heal()
    sim.run(2.5)
    _settle(sim)
    return sim, ch, {}


def sequencer_crash_and_handoff(seed: int) -> Result:
    sim, ch, authority = _setup(seed)
    _traffic(sim, ch, seconds=4)
    sim.run(0.8)
    sim.crash("n0")
    sim.run(0.5)
    if sim.rng.random() < 0.5:
        # The sequencer comes back; later it hands the channel off as planned.
        sim.restart("n0")
        sim.run(0.7)
        sim.handoff("n0", ch, "n1")
    else:
        # It is gone: the authority starts a recovery epoch on the most complete replica.
        live = [n for n in sorted(sim.nodes) if sim.nodes[n].hub is not None]
        best = max(live, key=lambda n: sim.nodes[n].hub.log(ch).seq)  # type: ignore[union-attr]
        sim.recover(best, ch, authority)
        sim.run(1.5)
        sim.destroy_store("n0")  # lost for good
        sim.stats.lost_for_good["n0"] = sim.now
    sim.run(3.0)
    _settle(sim)
    return sim, ch, {}


def sequencer_leaves_cleanly(seed: int) -> Result:
    """The sequencer closes under traffic (``node.close()``) and never returns: it hands the
    channel to a live replica at its head, writes go on at the new sequencer, and nothing
    acknowledged is lost (no ``lost_for_good``: a clean close keeps every ack). In some runs
    a replica is cut off first (it is not live: not chosen), in others a replica crashes
    while the handoff is on its way and restarts, or a second sequencer closes at once.
    ``not_handed_off``: a survivor still follows a closed node, or a close without crashes
    reported a channel not handed off;
    ``writes_not_resumed``: no write was acknowledged after it."""
    sim, ch, _ = _setup(seed)
    _traffic(sim, ch, seconds=4)
    sim.run(0.5 + sim.rng.random())
    if sim.rng.random() < 0.4:
        sim.partition({"n3"})
    victim = sim.rng.choice(["n1", "n2"]) if sim.rng.random() < 0.3 else None
    if victim is not None:
        # A replica (perhaps the one chosen) crashes while the handoff is on its way.
        sim.at(0.02 * sim.rng.random(), lambda: sim.crash(victim))
    # Or a second sequencer, of a channel of its own, closes at the same moment: each may be
    # handed the other's channel on its way out (it hands it on, never back).
    both = victim is None and sim.rng.random() < 0.4
    own2 = sim.open_channel("n1", "n1's") if both else None
    if own2 is not None:
        for name in ("n0", "n2", "n3"):
            sim.publish(name, own2, b"first", key=b"first-" + name.encode())
        sim.run(0.5)
    leavers = ["n0", "n1"] if both else ["n0"]
    gone = {sim.nodes[n].signer.public_key for n in leavers}
    reports = sim.leave(*leavers)
    left = sim.now
    sim.run(1.0)
    if victim is not None:
        sim.restart(victim)
    sim.run(3.0)
    _settle(sim)
    resumed = any(a.at > left for a in sim.stats.acks)
    # Every survivor follows a live sequencer; with no crash, the close said so too (a new
    # sequencer that crashed before confirming may take the channel after its restart).
    stranded = [n for n, node in sorted(sim.nodes.items()) if node.hub is not None
                for c in (ch, own2) if c is not None and c in node.hub.replicas
                and node.hub.state(c).sequencer_key in gone]
    unconfirmed = any(not r.complete for r in reports.values()) and victim is None
    return sim, ch, {"not_handed_off": int(bool(stranded) or unconfirmed),
                     "writes_not_resumed": 0 if resumed else 1}


def superseded_sequencer_returns(seed: int) -> Result:
    """The sequencer is cut off and goes on acknowledging its own writes; the authority
    starts a recovery epoch on the most complete replica of the other side; then the old
    sequencer returns (a heal, or a crash and restart on its old store) and publishes at
    once. What it acknowledged after the new epoch's start must never be lost silently: it
    steps down and resubmits (the ``lost_write`` checker fails on a sequencer that does not)."""
    sim, ch, authority = _setup(seed)
    _traffic(sim, ch, seconds=2)
    sim.run(2.5)
    sim.partition({"n0"})
    for i in range(1 + sim.rng.randrange(5)):
        sim.publish("n0", ch, b"away %d" % i, key=b"away%d" % i,
                    want=sim.rng.choice(["local", "replicated"]))
    sim.run(0.5)
    live = [n for n in sorted(sim.nodes) if n != "n0" and sim.nodes[n].hub is not None]
    best = max(live, key=lambda n: sim.nodes[n].hub.log(ch).seq)  # type: ignore[union-attr]
    sim.recover(best, ch, authority)
    for i in range(3):
        sim.publish(sim.rng.choice(live), ch, b"new %d" % i, key=b"new%d" % i)
    sim.run(1.0)
    if sim.rng.random() < 0.5:
        sim.crash("n0")
        sim.run(0.2)
        sim.restart("n0")
    sim.heal()
    for i in range(3):
        sim.publish("n0", ch, b"back %d" % i, key=b"back%d" % i)
    sim.run(3.0)
    _settle(sim)
    return sim, ch, {}


def elected_by_hand(seed: int) -> Result:
    """The sequencer crashes for good, or is cut off and goes on acknowledging its own
    writes; a voter starts an election by hand (``node.channels.elect``): the most complete
    replica, or in some runs a random one first, or one that was cut off for a while just
    before (refused as behind by a more complete voter, it gives up with ``NoQuorum``; then
    the most complete one tries). Writes resume at the
    winner; no ``replicated`` ack is lost; what the old sequencer acknowledged past the new
    start reaches its writers as ``LostWrite`` once it is back and steps down.
    ``not_elected``: no election won; ``writes_not_resumed``: no write acknowledged after."""
    sim, ch, _ = _setup(seed)
    _traffic(sim, ch, seconds=4)
    sim.run(1.0 + sim.rng.random())
    lagging = sim.rng.random() < 0.5
    behind_first = lagging and sim.rng.random() < 0.7
    if lagging:
        sim.partition({"n3"})  # n3 misses what is sequenced now
        sim.run(0.5)
        sim.heal()
    crash = sim.rng.random() < 0.5
    if crash:
        sim.crash("n0")
    else:
        sim.partition({"n0"})
        for i in range(1 + sim.rng.randrange(4)):
            sim.publish("n0", ch, b"away %d" % i, key=b"away%d" % i,
                        want=sim.rng.choice(["local", "replicated"]))
    sim.run(0.5)
    live = [n for n in sorted(sim.nodes) if n != "n0" and sim.nodes[n].hub is not None]

    def head(n: str) -> tuple[int, str]:
        hub = sim.nodes[n].hub
        return (hub.log(ch).seq if hub is not None else -1, n)

    def won() -> bool:
        return any((h := sim.nodes[n].hub) is not None and isinstance(
            h.elections.outcomes.get(ch), EpochChange) for n in live)

    best = max(live, key=head)
    first = sim.rng.choice(live) if sim.rng.random() < 0.4 else best
    if behind_first:
        first = "n3"  # behind: refused by the others (the most complete one tries next)
    sim.elect(first, ch)
    sim.run(1.0)
    if not won() and first != best:
        sim.elect(best, ch)
        sim.run(1.0)
    elected = sim.now
    sim.stats.reach("elected" if won() else "not_elected")
    for i in range(3):
        sim.publish(sim.rng.choice(live), ch, b"new %d" % i, key=b"new%d" % i)
    sim.run(1.0)
    if crash:
        sim.destroy_store("n0")  # lost for good
        sim.stats.lost_for_good["n0"] = sim.now
    else:
        sim.heal()
        for i in range(2):
            sim.publish("n0", ch, b"back %d" % i, key=b"back%d" % i)
    sim.run(3.0)
    _settle(sim)
    resumed = any(a.at >= elected for a in sim.stats.acks)
    return sim, ch, {"not_elected": 0 if won() else 1, "writes_not_resumed": 0 if resumed else 1}


def stale_checkpoint_recovery(seed: int) -> Result:
    sim, ch, _ = _setup(seed, policy=ChannelPolicy(retention=8))
    away = sim.rng.choice(["n1", "n2", "n3"])
    sim.partition({away})
    _traffic(sim, ch, seconds=3, rate=30)
    sim.run(3.5)
    sim.heal()
    sim.run(1.0)
    _settle(sim)
    return sim, ch, {}


def equivocating_sequencer(seed: int) -> Result:
    sim, ch, authority = _setup(seed, nodes=3)
    _traffic(sim, ch, seconds=1, replicated_share=0.0)
    sim.run(1.5)
    n0 = sim.nodes["n0"]
    assert n0.hub is not None
    log = n0.hub.log(ch)
    # n0's key signs a different history at an already-held seq, sent to one replica.
    rogue = Sequencer(ChannelState.genesis(log.record), n0.signer)
    for e in log.entries[: max(0, log.seq - 2)]:
        rogue.submit(e.submission(), now_ms=e.sequencer_time)
    rogue.submit(Submission.create(n0.signer, channel=ch, idem_key=b"evil", payload=b"fork"),
                 now_ms=0)
    victim = sim.rng.choice(["n1", "n2"])
    sim.inject(victim, "n0", Entries(tuple(rogue.entries[-1:]), rogue.signed_head()))
    undetected = 0 if victim in sim.stats.fork_notices else 1
    # The authority recovers the channel on the victim (which froze it).
    sim.crash("n0")
    sim.recover(victim, ch, authority)
    sim.run(2.0)
    sim.destroy_store("n0")
    _settle(sim)
    return sim, ch, {"forks_undetected": undetected if log.seq >= 2 else 0}


def retention_burst_restart(seed: int) -> Result:
    """Bursts larger than the channel's retention land in one commit (the floor passes
    entries of the same write), and nodes crash and restart between bursts: every store must
    open again whole, and every acknowledged write stay (a defect of this class bricked nodes
    whose store wrote rows below the floor it set)."""
    sim, ch, _ = _setup(seed, policy=ChannelPolicy(retention=8, replication=1))
    names = sorted(sim.nodes)
    for burst in range(4):
        # The first burst is the sequencer's own, and it is the first to crash.
        writer = "n0" if burst == 0 else sim.rng.choice(names)
        keys = [b"b%d/%d" % (burst, i) for i in range(20 + sim.rng.randrange(40))]
        sim.publish_many(writer, ch, [(k, k) for k in keys])
        sim.run(0.2 + sim.rng.random() * 0.3)
        victim = "n0" if burst == 0 else sim.rng.choice(names)
        sim.crash(victim)
        sim.run(0.1 + sim.rng.random() * 0.2)
        sim.restart(victim)
        sim.run(0.3)
    _settle(sim)
    return sim, ch, {}


def disk_full(seed: int) -> Result:
    """Disks fill up under traffic: the sequencer's, then a replica's, then both at once,
    each for a few seconds (nearly full: small writes still fit, large ones do not), and a
    node crashes while its disk is full. A full disk refuses
    writes (typed ``STORE_FULL``, nothing acknowledged that is not on disk), puts its
    channels back to what the disk holds, and resumes on its own once space is back (probe
    writes); replicas take what they missed. ``writes_not_resumed``: no write acknowledged
    after the last disk came back. Commits take 1.5-4.5 ms, so the node core plans the next
    batch while one is on its way, as in the runtime."""
    sim, ch, _ = _setup(seed, store_latency=0.003)
    names = sorted(sim.nodes)
    _traffic(sim, ch, seconds=1.0)
    sim.run(1.0)
    replica = sim.rng.choice(names[1:])
    for full in (["n0"], [replica], ["n0", replica]):
        for name in full:
            # Nearly full: a large write is refused while a small one behind it still fits
            # (with a store latency, the small one may be planned before the refusal).
            sim.fill_disk(name, room=sim.rng.choice([0, 16_384, 65_536]))
        _traffic(sim, ch, seconds=1.0 + sim.rng.random() * 2, large_share=0.15)
        sim.run(0.5 + sim.rng.random())
        if sim.rng.random() < 0.4:
            victim = sim.rng.choice(full)
            sim.crash(victim)
            sim.run(0.2)
            sim.restart(victim)
        for name in full:
            sim.fill_disk(name, False)
        sim.run(2.0)
    freed = sim.now
    _traffic(sim, ch, seconds=1.0)
    _settle(sim)
    resumed = any(a.at > freed for a in sim.stats.acks)
    return sim, ch, {"writes_not_resumed": 0 if resumed else 1}


def large_entries_catch_up(seed: int) -> Result:
    """Payloads up to the channel's limit (1 MiB), and a replica cut off while 36-50 of them,
    and at least 36 MB, are written, then healed: the catch-up travels in bounded batches of
    parted messages, and the replica converges (a defect of this class sent a catch-up batch
    larger than a session message, and the replica never caught up)."""
    sim, ch, _ = _setup(seed, nodes=3)
    sim.partition({"n2"})
    i, total, n = 0, 0, 36 + sim.rng.randrange(15)
    # At least 36 MB whatever the draws: more than one session message (34 MiB) can hold.
    while i < n or total < 36_000_000:
        # Up to the limit: the simulator's workload stamps each payload (t, p) in a few bytes.
        size = sim.rng.choice([300_000, 900_000, (1 << 20) - 64, (1 << 20) - 64])
        sim.publish(sim.rng.choice(["n0", "n1"]), ch, bytes([i % 251]) * size, key=b"L%d" % i)
        sim.run(0.05)
        i, total = i + 1, total + size
    sim.run(0.5)
    sim.heal()
    took = sim.run_until_converged(ch, 20.0)
    _settle(sim, 1.0)
    return sim, ch, {"diverged": 0 if took is not None else 1}


def rolled_back_store(seed: int) -> Result:
    """The sequencer's store is rolled back while it is down (an old copy restored): it
    restarts from an older head. Before it issues a seq, its start-up exchange takes back
    from a replica what the replica holds; what no replica held is reported to the writer
    (``LostWrite``); no seq is issued twice, and nothing acknowledged is lost silently."""
    sim, ch, _ = _setup(seed)
    _traffic(sim, ch, seconds=1.5)
    sim.run(1.6)
    old = sim.copy_store("n0")
    _traffic(sim, ch, seconds=1.5)
    sim.run(1.4 + sim.rng.random() * 0.4)
    sim.crash("n0")
    sim.roll_back_store("n0", old)
    sim.run(0.3)
    sim.restart("n0")
    sim.stats.reach("store_rollback")
    _traffic(sim, ch, seconds=1.0)
    sim.run(1.5)
    _settle(sim)
    return sim, ch, {}


def churn(seed: int) -> Result:
    sim, ch, _ = _setup(seed)
    sim.loss = 0.01
    _traffic(sim, ch, seconds=4)
    for _ in range(4):
        sim.run(0.6 + sim.rng.random() * 0.4)
        victim = sim.rng.choice(["n1", "n2", "n3"])
        sim.crash(victim)
        sim.run(0.3 + sim.rng.random() * 0.5)
        sim.restart(victim)
    _forge(sim, ch)
    sim.run(1.0)
    _settle(sim)
    return sim, ch, {"forged_visible": _forged_visible(sim, ch)}


def swarm(seed: int) -> Result:
    """Every fault at random: loss, partitions, crashes, clock jumps, handoff,
    relay outages and misbehaving relays under the Nostr fallback lane."""
    sim, ch, authority = _setup(seed, policy=ChannelPolicy(replication=1, nostr_fallback=True),
                                nostr=True)
    assert sim.nostr is not None
    relays = sorted(sim.nostr.relays)
    sim.loss = 0.01
    _traffic(sim, ch, seconds=5)
    handed = False
    for _ in range(6):
        sim.run(0.5 + sim.rng.random() * 0.5)
        roll = sim.rng.random()
        names = sorted(sim.nodes)
        if roll < 0.25:
            sim.partition({sim.rng.choice(names)})
            if sim.rng.random() < 0.5:
                sim.nostr.outage(sim.rng.choice(relays), 0.5 + sim.rng.random())
            else:
                sim.nostr.misbehave(sim.rng.choice(relays), drop=0.1, duplicate=0.3,
                                    rate_limited=0.1)
            sim.run(0.4 + sim.rng.random() * 1.5)
            sim.heal()
        elif roll < 0.5:
            v = sim.rng.choice(names[1:])
            sim.crash(v)
            sim.run(0.3)
            sim.restart(v)
        elif roll < 0.65:
            sim.jump_clock(sim.rng.choice(names), sim.rng.choice([-30.0, 45.0, 3600.0]))
        elif roll < 0.8 and not handed:
            seqr = next((n for n in names if sim.nodes[n].hub is not None
                         and ch in sim.nodes[n].hub.own), None)  # type: ignore[union-attr]
            if seqr is not None:
                sim.handoff(seqr, ch, sim.rng.choice([n for n in names if n != seqr]))
                handed = True
        else:
            _forge(sim, ch)
    _settle(sim, 4.0)
    return sim, ch, {"forged_visible": _forged_visible(sim, ch)}


def _forge(sim: Simulator, ch: bytes) -> None:
    """A peer relays a real entry with its payload altered under the real signed head."""
    seqr = next((n for n in sorted(sim.nodes) if sim.nodes[n].hub is not None
                 and ch in sim.nodes[n].hub.own), None)  # type: ignore[union-attr]
    if seqr is None:
        return
    hub = sim.nodes[seqr].hub
    assert hub is not None
    log = hub.own[ch].seqr
    if not log.entries:
        return
    e = log.entries[-1]
    forged = replace(e, payload=b"FORGED")
    others = [n for n in sorted(sim.nodes) if n != seqr]
    victim = sim.rng.choice(others)
    liar = sim.rng.choice([n for n in others if n != victim] or others)
    before = sim.nodes[victim].hub.errors.get("CHAIN_BROKEN", 0) \
        if sim.nodes[victim].hub else 0
    sim.inject(victim, liar, Entries((forged,), log.signed_head()))
    after = sim.nodes[victim].hub.errors.get("CHAIN_BROKEN", 0) \
        if sim.nodes[victim].hub else 0
    if after > before:
        sim.stats.reach("forged_entry")  # it was refused (a ChainBroken), not delivered


def forged_presence(seed: int) -> Result:
    """A node forges other nodes' presence and documents, through every hole it can find,
    while partitions, loss and restarts go on; no honest node may ever show the forgery."""

    sim, ch, _ = _setup(seed)
    _traffic(sim, ch, seconds=3)
    names = sorted(sim.nodes)
    liar = sim.rng.choice(names)
    sim.liars = [liar]  # type: ignore[attr-defined]
    honest = [n for n in names if n != liar]
    lsig = sim.nodes[liar].signer
    sim.run(1.0)
    for step in range(10):
        sim.run(0.2 + sim.rng.random() * 0.5)
        victim = sim.rng.choice(honest)
        target = sim.rng.choice([n for n in honest if n != victim] or honest)
        vnode, tnode = sim.nodes[victim], sim.nodes[target]
        if vnode.world is None or tnode.world is None or not sim.nodes[liar].up:
            continue
        vkey = vnode.signer.public_key
        rep = tnode.world.replicas.get(vkey)
        inc, seq = rep.position if rep else (1, 0)
        head = rep.head if rep else bytes(32)
        now = sim.now_ms(tnode)
        attack = step % 5
        if attack == 0:  # the victim's key, the liar's signature
            fake = Heartbeat.create(lsig, inc=inc + 5, n=1, time_ms=now)
            body = fake.body() | {"a": vkey}
            raw = codec.encode({**body, "sig": fake.sig})
            sim.inject(target, liar, WorldPush(heartbeats=(raw,), tree=True))
        elif attack == 1 and rep is not None:
            # A perfect forgery of the victim's next delta (its client id, its next clock,
            # its chain head): only the signature stands in the way.
            d = pycrdt.Doc(client_id=client_id(vkey, inc))
            for r in rep.records():
                d.apply_update(r.data)
            before = d.get_state()
            with d.transaction():
                d.get("w", type=pycrdt.Map)["node"] = codec.encode(
                    NodeInfo(device="FORGED").to_value())
            u = DocUpdate.create(lsig, inc=inc, seq=seq + 1, kind="delta",
                                 data=d.get_update(before), prev=head)
            raw = codec.encode({**u.body(), "a": vkey, "sig": u.sig})
            sim.inject(target, liar, WorldPush(updates=(raw,), tree=True))
        elif attack == 2:  # the liar's own update, written under the victim's client id
            d = pycrdt.Doc(client_id=client_id(vkey, inc))
            m = d.get("w", type=pycrdt.Map)
            with d.transaction():
                m["caps"] = codec.encode(CapabilityAd(tools=("FORGED",)).to_value())
            lrep = tnode.world.replicas.get(lsig.public_key)
            li, ls = lrep.position if lrep else (1, 0)
            u = DocUpdate.create(lsig, inc=li, seq=ls + 1, kind="delta", data=d.get_update(),
                                 prev=lrep.head if lrep else bytes(32))
            sim.inject(target, liar, WorldPush(updates=(u.raw,), tree=True))
        elif attack == 3 and rep is not None and rep.deltas:  # a relayed record, altered
            good = rep.deltas[-1]
            body = codec.decode(good.raw)
            body["d"] = body["d"].replace(b"n", b"F", 1)
            sim.inject(target, liar, WorldPush(updates=(codec.encode(body),), tree=True))
        elif attack == 4:  # an old heartbeat of the victim, replayed
            p = tnode.world.presence.get(vnode.signer_id)
            if p is not None and p.hb is not None:
                old = Heartbeat.create(vnode.signer, inc=max(1, p.hb.inc - 1), n=1, time_ms=0)
                sim.inject(target, liar, WorldPush(heartbeats=(old.raw,), tree=True))
        sim.stats.reach("forged_presence")
        if sim.rng.random() < 0.3:
            v = sim.rng.choice(honest)
            sim.crash(v)
            sim.run(0.3)
            sim.restart(v)
            sim.stats.reach("world_restart")
        if sim.rng.random() < 0.2:
            sim.partition({sim.rng.choice(names)})
            sim.run(0.5)
            sim.heal()
    _settle(sim)
    return sim, ch, {}


def token_expiry_storm(seed: int) -> Result:
    """The control service goes down for longer than a token lives (30 s tokens, a 70-90 s
    outage: past expiry plus the 30 s leeway), while writers keep publishing and one node is
    also cut off from the others and from the control service for a while, and the operator
    revokes one node after the service returns. Writes must be refused once tokens expire
    (never accepted on an invalid token), presence must not collapse (heartbeats under the
    membership grace), writes must resume within two refresh intervals after the service
    returns, and the revoked node must read nothing new and hold no new session."""
    ttl = 30.0
    sim = Simulator(seed, 4, auth=True, token_ttl=ttl, stores=STORES, store_latency=STORE_LATENCY)
    ch = sim.open_channel("n0", "sim", policy=ChannelPolicy(replication=1))
    sim.channel = ch  # type: ignore[attr-defined]
    names = sorted(sim.nodes)
    total = 150.0
    for i in range(int(total * 2)):
        w = sim.rng.choice(names)

        def go(w: str = w, i: int = i) -> None:
            sim.publish(w, ch, b"m%d" % i, key=b"k%d" % i)

        sim.at(i * 0.5 + sim.rng.random() * 0.4, go)
    sim.run(8 + sim.rng.random() * 4)
    sim.control_up = False
    sim.stats.reach("control_outage")
    outage = 70 + sim.rng.random() * 20
    cut_at = sim.rng.random() * (outage - 10)
    sim.run(cut_at)
    victim = sim.rng.choice(names[1:])
    sim.partition({victim})
    sim.control_cut.add(victim)
    sim.run(5.0)
    sim.heal()
    sim.run(outage - cut_at - 6.0)
    # Session churn with every token expired past the leeway (sessions end and are refused
    # again until tokens are refreshed).
    churned = sim.rng.choice(names)
    sim.partition({churned})
    sim.run(0.5)
    sim.heal()
    sim.run(0.5)
    sim.control_up = True
    up_at = sim.now
    sim.run(10.0)
    sim.control_cut.clear()  # the victim reaches the service again a little later
    # The operator revokes one node; once every node has polled the revocation list, a new
    # session with it is refused and nothing it writes is accepted.
    outcast = sim.rng.choice([n for n in names[1:] if n != victim] or names[1:])
    sim.revoke(outcast)
    # It keeps running: once every node polled the list, it reads nothing new on the
    # sessions it held (they end), and a new session with it is refused.
    sim.run(sim.REVOCATION_POLL + 8.0)
    sim.partition({outcast})
    sim.run(0.5)
    sim.heal()
    sim.run(total - (sim.now - 0.0) if total > sim.now else 0.0)
    sim.run(5.0)
    if sim.stats.outcomes.get("TOKEN_EXPIRED"):
        sim.stats.reach("token_expired_refusal")
    after = [a.at for a in sim.stats.acks if a.at >= up_at]
    resumed = min(after) - up_at if after else None
    sim.recovery_s = resumed  # type: ignore[attr-defined]
    out_id = sim.nodes[outcast].signer_id
    collapsed = sum(1 for n in sim.nodes.values() if n.name != outcast
                    for e in n.world_events
                    if e.kind in ("stale", "left") and e.node != out_id)
    sim.retire(outcast)
    _settle(sim)
    return sim, ch, {"presence_collapsed": collapsed,
                     "writes_not_resumed": 0 if resumed is not None and
                     resumed <= 2 * 0.8 * ttl else 1}


PROVIDER_AD = CapabilityAd(tools=("echo",), job_kinds=("5001",), expires_ms=10**13)


def _compute_market(sim: Simulator, policy: ChannelPolicy | None = None) -> ChannelRecord:
    """n1..n3 run the provider application and advertise ``echo`` for kind 5001; the
    requester n0 opens its compute channel (with ``policy``)."""
    sim.providers = {"n1", "n2", "n3"}
    for name in sorted(sim.providers):
        node = sim.nodes[name]
        assert node.world is not None
        sim._calls(node, [Advertise(ad=PROVIDER_AD)])
    req = sim.nodes["n0"]
    assert req.hub is not None
    [rec] = sim._calls(req, [OpenChannel(name=COMPUTE_CHANNEL, policy=replace(
        policy or ChannelPolicy(), app=COMPUTE_APP))])
    assert isinstance(rec, ChannelRecord)
    return rec


def _post_requests(sim: Simulator, channel: bytes, count: int, *,
                   when: Callable[[int], float], policies: list[str], expires_ms: int) -> None:
    """The requester posts ``count`` jobs (``r0``, ``r1``, ...) at ``when(i)`` seconds."""
    for i in range(count):
        def post(i: int = i) -> None:
            n = sim.nodes["n0"]
            if n.hub is None:
                return
            now = sim.now_ms(n)
            sim._calls(n, [Publish(channel=channel, payload=encode_event(
                "request", rid=f"r{i}", kind="5001", job=b"job%d" % i,
                policy=policies[i % len(policies)], price=0, sla_ms=0, needs=["echo"],
                expires=now + expires_ms), idem_key=b"r%d/request" % i)])
            sim.stats.reach("compute_contention")

        sim.at(when(i), post)


def compute_contention(seed: int) -> Result:
    """The requester (n0) posts jobs that three providers race for, with frame loss (session
    resets and resubmissions: duplicates), partitions, provider rejections, and crashes and
    restarts of the requester and of providers. At most one assignee per request, ever, and
    every request ends terminal or open or with a live assignee."""
    sim = Simulator(seed, 4, stores=STORES, store_latency=STORE_LATENCY)
    sim.reject_rate = 0.2
    sim.greedy = {"n3"}
    rec = _compute_market(sim)
    ad = PROVIDER_AD
    sim.channel = rec.channel  # type: ignore[attr-defined]
    sim.loss = 0.01
    _post_requests(sim, rec.channel, 12, when=lambda i: 0.5 + i * 0.7 + sim.rng.random() * 0.3,
                   policies=["first", "lowest_price", "best_sla"], expires_ms=60_000)
    handed = False
    for _ in range(5):
        sim.run(1.0 + sim.rng.random())
        roll = sim.rng.random()
        names = sorted(sim.nodes)
        if not handed and sim.rng.random() < 0.3:
            # A planned handoff of the compute channel: another node sequences (and validates)
            # it from now on; the requester keeps driving its requests through it.
            seqr = next((n for n in names if sim.nodes[n].hub is not None
                         and rec.channel in sim.nodes[n].hub.own), None)  # type: ignore
            if seqr is not None:
                sim.handoff(seqr, rec.channel, sim.rng.choice([n for n in names if n != seqr]))
                handed = True
        if roll < 0.3:
            sim.partition({sim.rng.choice(names)})
            sim.run(0.5 + sim.rng.random())
            sim.heal()
        elif roll < 0.6:
            v = sim.rng.choice(names)
            sim.crash(v)
            sim.run(0.4)
            sim.restart(v)
            if v in sim.providers:
                w = sim.nodes[v].world
                if w is not None:
                    sim._carry(sim.nodes[v], w.advertise(ad, now_ms=sim.now_ms(sim.nodes[v])))
    sim.loss = 0.0
    _settle(sim)
    sim.run(20.0)  # accept windows, results and expiries play out
    return sim, rec.channel, {}


def bridge_outage(seed: int) -> Result:
    """Relays go down (one, then both at once) and misbehave (drop, duplicate,
    ``rate-limited:``) while a partition cuts one node's direct lane: its channel traffic
    moves to the Nostr lane, stops while no relay is up, resumes when one returns, and moves
    back to direct after the heal. Meanwhile the compute requester's NIP-90 mirror keeps
    writing to its bridge outbox. Nothing acknowledged is lost; after the relays recover,
    every mirrored event is on every relay exactly once (``check_bridge``)."""
    sim = Simulator(seed, 4, nostr=True, stores=STORES, store_latency=STORE_LATENCY)
    nostr = sim.nostr
    assert nostr is not None
    authority = Ed25519Signer(bytes([seed % 251 + 1]) * 32)
    sim.extra_signers = [authority]  # type: ignore[attr-defined]
    ch = sim.open_channel("n0", "sim", authority=authority,
                          policy=ChannelPolicy(replication=1, nostr_fallback=True))
    sim.channel = ch  # type: ignore[attr-defined]
    rec = _compute_market(sim, ChannelPolicy(nostr_mirror=True, nostr_fallback=True))
    _post_requests(sim, rec.channel, 6, when=lambda i: 1.0 + i * 5.0 + sim.rng.random(),
                   policies=["first"], expires_ms=120_000)
    _traffic(sim, ch, seconds=40, rate=3)
    relays = sorted(nostr.relays)
    victim = sim.rng.choice(["n1", "n2", "n3"])
    sim.run(1.0 + sim.rng.random())
    sim.partition({victim})
    sim.run(3.0 + sim.rng.random() * 2)
    bad = sim.rng.choice(relays)
    nostr.misbehave(bad, drop=0.2, duplicate=0.3, rate_limited=0.1)
    sim.run(6.0 + sim.rng.random() * 4)
    nostr.misbehave(bad)
    first = sim.rng.choice(relays)
    nostr.outage(first, 12.0 + sim.rng.random() * 8)
    sim.run(3.0 + sim.rng.random() * 3)
    for url in relays:
        if url != first:
            nostr.outage(url, 6.0 + sim.rng.random() * 6)  # both down for a while
    sim.run(20.0)
    nostr.calm()
    _settle(sim)
    sim.run(10.0)  # compute results and expiries play out
    took = 0.0
    while nostr.pending() and took < 600.0:
        sim.run(5.0)
        took += 5.0
    return sim, ch, {}


def _forged_visible(sim: Simulator, ch: bytes) -> int:
    return sum(1 for log in sim.final_logs(ch).values() for e in log if e.payload == b"FORGED")


def provider_dies_mid_job(seed: int) -> Result:
    """A provider dies for good (its machine is gone) while it holds an accepted job: the
    requester's duties see it go stale, lapse the assignment once, and the job is done by
    another provider. ``compute_stuck`` fires on a requester that leaves it with the dead
    one; a run whose job did not end counts as ``compute_stuck`` too."""
    sim = Simulator(seed, 4, stores=STORES, store_latency=STORE_LATENCY)
    rec = _compute_market(sim)
    sim.channel = rec.channel  # type: ignore[attr-defined]
    _post_requests(sim, rec.channel, 3, when=lambda i: 0.5 + i * 0.4,
                   policies=["first", "lowest_price", "best_sla"], expires_ms=300_000)
    victim: str | None = None
    for _ in range(400):
        sim.run(0.01 + 0.02 * sim.rng.random())
        victim = _holder_of_an_accepted_job(sim, rec.channel)
        if victim is not None:
            break
    if victim is not None:
        sim.providers.discard(victim)
        sim.retire(victim)  # no restart, no goodbye
        sim.stats.reach("provider_died")
    sim.run(90.0)  # presence goes stale, the assignment lapses, another provider takes it
    req = sim.nodes["n0"]
    log = req.cores.own_compute() if req.cores is not None else None
    unfinished = 0
    if log is not None and req.cores is not None and req.cores.compute is not None:
        unfinished = sum(not r.terminal for r in req.cores.compute.state(log).requests.values())
    return sim, rec.channel, {"compute_stuck": unfinished}


def _holder_of_an_accepted_job(sim: Simulator, channel: bytes) -> str | None:
    req = sim.nodes["n0"]
    if req.cores is None or req.cores.compute is None:
        return None
    log = req.cores.own_compute()
    if log is None:
        return None
    for _, r in sorted(req.cores.compute.state(log).requests.items()):
        if r.phase in ("accepted", "processing") and r.accepted_by is not None:
            return sim.name_of(r.accepted_by)
    return None


SCENARIOS: dict[str, Callable[[int], Result]] = {
    "steady": steady,
    "partition-heal": partition_heal,
    "sequencer-crash-and-handoff": sequencer_crash_and_handoff,
    "sequencer-leaves-cleanly": sequencer_leaves_cleanly,
    "superseded-sequencer-returns": superseded_sequencer_returns,
    "elected-by-hand": elected_by_hand,
    "stale-checkpoint-recovery": stale_checkpoint_recovery,
    "equivocating-sequencer": equivocating_sequencer,
    "churn": churn,
    "swarm": swarm,
    "forged-presence": forged_presence,
    "token-expiry-storm": token_expiry_storm,
    "compute-contention": compute_contention,
    "provider-dies-mid-job": provider_dies_mid_job,
    "bridge-outage": bridge_outage,
    "retention-burst-restart": retention_burst_restart,
    "large-entries-catch-up": large_entries_catch_up,
    "disk-full": disk_full,
    "rolled-back-store": rolled_back_store,
}

# Heavy scenarios (about 40 MB each run): a sweep of every scenario runs the first
# ``--heavy-seeds`` seeds of them (2 by default; ``make soak`` asks for more); a run of one
# scenario takes every seed asked for.
HEAVY = frozenset({"large-entries-catch-up"})

# Run on demand (``--scenario backlog-recovery``): the replay-recovery SLO, 10,000 entries.
EXTRA: dict[str, Callable[[int], Result]] = {"backlog-recovery": backlog_recovery}

NOT_YET: dict[str, str] = {}
