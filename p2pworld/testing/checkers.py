"""Jepsen-style checkers over a finished simulation: each returns anomaly counts.

* ``lost_write`` — an acknowledged publish missing (or different) at the end, unless its ack
  was ``local`` and the writer was told by a ``LostWrite`` notice (an unplanned handoff), or
  the writer's own machine was lost for good after the ack (nobody left to tell).
* ``lost_replicated`` — a ``replicated`` ack missing at the end (also a ``lost_write``): no
  notice excuses it, and no failover may lose it.
* ``stale_ack`` — an ack missing at the end that was issued after a later epoch starting
  below its seq was on a disk (a sequencer acknowledging past its supersession), and whose
  writer was not told (``LostWrite``).
* ``not_elected`` — an election a scenario expects to win (the old sequencer gone, a quorum
  reachable) did not.
* ``duplicate`` — one (writer, key) acknowledged at two seqs, or present twice in a log.
* ``poll_skip`` — a node delivered seq n+2 after n (outside a snapshot catch-up).
* ``nonmonotonic`` — a node delivered a seq at or below one it had delivered (outside a
  restart or a recovery truncation it was told about).
* ``inconsistent_offsets`` — two nodes hold different entries at one seq.
* ``diverged`` — after heal, nodes' heads or state hashes differ.
* ``replay_mismatch`` — replaying a node's store (from zero, and from a mid-log snapshot plus
  the tail) does not give the node's state hash.
* ``store_refused`` — a node's own store refused one of its channels at a restart (the
  channel was quarantined): a crash must leave every store whole (:func:`check_stores`).
* ``crashed`` — a core raised out of an input and the run could not go on (counted by the
  runner): in the runtime that would end a scope or the node.
* Bridge (:func:`check_bridge`, runs with the Nostr model): an event some outbox accepted that
  a relay does not hold after the relays recovered and the outboxes drained counts as
  ``lost_write``; two events on one relay mirroring the same log entry (same p2pworld id,
  entry hash and kind) count as ``duplicate``.

Example:
    >>> from p2pworld.testing.sim import Simulator
    >>> sim = Simulator(seed=3, nodes=2)
    >>> ch = sim.open_channel("n0", "c"); sim.run(0.1)
    >>> sim.publish("n1", ch, b"x", key=b"1"); sim.run(1)
    >>> sum(check_channel(sim, ch).values())
    0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from p2pworld.identity import Signer
from p2pworld.log.entry import Entry, hash_bytes
from p2pworld.log.state import ChannelState, Snapshot
from p2pworld.log.verify import StoredChannel

if TYPE_CHECKING:
    from p2pworld.testing.sim import Simulator

def check_all(sim: Simulator, channel: bytes) -> dict[str, int]:
    """Every checker over a finished run, summed per anomaly (all zero: nothing found)."""
    out = check_channel(sim, channel)
    for more in (check_world(sim), check_auth(sim, channel), check_compute(sim),
                 check_bridge(sim), check_stores(sim)):
        for k, v in more.items():
            out[k] += v
    return out


ANOMALIES = ("lost_write", "duplicate", "poll_skip", "nonmonotonic", "inconsistent_offsets",
             "diverged", "unauthorized_accepted", "forged_visible", "forks_undetected",
             "replay_mismatch", "multiple_winners", "presence_collapsed", "writes_not_resumed",
             "compute_stuck", "store_refused", "crashed", "revoked_read", "not_handed_off",
             "lost_replicated", "stale_ack", "not_elected")


@dataclass(frozen=True, kw_only=True)
class Acknowledged:
    """A publish its writer saw acknowledged: what a lost-write check holds a log to.

    ``told``: the writer was told this ack no longer holds (a ``LostWrite`` notice of a
    ``local`` ack, or its own machine is gone for good), so its absence is no anomaly."""

    writer_key: bytes
    key: bytes
    payload: bytes
    seq: int
    strength: str = "local"
    told: bool = False


def check_logs(logs: Mapping[str, tuple[list[Entry], ChannelState]], acks: Iterable[Acknowledged],
               *, reference: str | None = None, converged: bool = True) -> dict[str, int]:
    """The log checks shared by simulated and real runs, over each node's copy of one
    channel (its entries and folded state): ``lost_write`` and ``duplicate`` for the acks,
    ``inconsistent_offsets`` across copies and, when every copy should be at one head by now
    (``converged``), ``diverged``. ``reference``: the copy acks are checked against (default:
    the longest)."""
    out = dict.fromkeys(ANOMALIES, 0)
    if not logs:
        return out
    ref = reference if reference is not None else max(logs, key=lambda n: logs[n][1].seq)
    ref_entries, ref_state = logs[ref]
    first: dict[tuple[bytes, bytes], Acknowledged] = {}
    for a in acks:
        prev = first.setdefault((a.writer_key, a.key), a)
        if prev.seq != a.seq and not prev.told:
            out["duplicate"] += 1
        rec = ref_state.idem.get((a.writer_key, a.key))
        if (rec is None or rec.seq != a.seq or rec.payload_hash != hash_bytes(a.payload)) and \
                not (a.told and a.strength == "local"):
            out["lost_write"] += 1
            out["lost_replicated"] += a.strength == "replicated"
    keys = [(e.sender_key, e.idem_key) for e in ref_entries]
    out["duplicate"] += len(keys) - len(set(keys))
    by_seq: dict[int, set[bytes]] = {}
    for entries, _ in logs.values():
        for e in entries:
            by_seq.setdefault(e.seq, set()).add(e.hash)
    out["inconsistent_offsets"] = sum(1 for hs in by_seq.values() if len(hs) > 1)
    if converged:
        heads = {(st.seq, st.head_hash, st.state_hash()) for _, st in logs.values()}
        out["diverged"] = len(heads) - 1
    return out


def check_channel(sim: Simulator, channel: bytes) -> dict[str, int]:
    up = {n: node for n, node in sim.nodes.items() if node.hub is not None and (
        channel in node.hub.own or channel in node.hub.replicas)}
    if not up:
        return dict.fromkeys(ANOMALIES, 0)
    # Reference: the node that sequences the channel now (else the longest log).
    ref = next((n for n, node in up.items() if channel in node.hub.own),  # type: ignore[union-attr]
               None)
    logs = {n: node.hub.log(channel) for n, node in up.items()}  # type: ignore[union-attr]
    acks = []
    for a in sim.stats.acks:
        if a.channel == channel:
            told = (a.writer, channel, a.seq) in sim.stats.lost_notices or (
                # A `local` ack survives the sequencer's crash and restart, not the permanent
                # loss of its machine (an unplanned handoff); when the writer was on that
                # machine too, there is no one left to tell.
                sim.stats.lost_for_good.get(a.writer, -1.0) >= a.at)
            acks.append(Acknowledged(writer_key=sim.any_node(a.writer).signer.public_key,
                                     key=a.key, payload=a.payload, seq=a.seq,
                                     strength=a.strength, told=told))
    out = check_logs({n: (list(log.entries), log.state) for n, log in logs.items()}, acks,
                     reference=ref)
    out["stale_ack"] = stale_acks(sim, channel, acks, logs[ref or max(
        logs, key=lambda n: logs[n].seq)].state)

    # poll_skip / nonmonotonic from what each node delivered, per incarnation
    for node in sim.nodes.values():
        codes = {e.code for e in node.notices}
        last: dict[int, int] = {}
        for inc, seq, _ in node.delivered.get(channel, []):
            prev_seq = last.get(inc)
            if prev_seq is not None:
                if seq > prev_seq + 1 and "CHECKPOINT_TOO_OLD" not in codes:
                    out["poll_skip"] += 1
                elif seq <= prev_seq and "LOST_WRITE" not in codes and \
                        "CHECKPOINT_TOO_OLD" not in codes:
                    out["nonmonotonic"] += 1
            last[inc] = seq

    # replay: the node's store replayed from zero, and from a mid snapshot plus the tail
    for n, node in up.items():
        stored = [c for c in node.store.load_channels(quarantine=True)
                  if c.record.channel == channel]
        # A store that no longer opens the channel whole (a node that built on what it
        # never wrote) is refused, as it would be at the node's next start.
        out["store_refused"] += int(channel in node.store.quarantined)
        if stored:
            out["replay_mismatch"] += replay_mismatch(
                stored[0], logs[n].state.state_hash(),
                lambda key: _snap_signer(sim, key))
    return out


def stale_acks(sim: Simulator, channel: bytes, acks: Iterable[Acknowledged],
               final: ChannelState) -> int:
    """``stale_ack`` (see the module docstring): the untold acks the final state lacks that
    came after a later epoch starting below them was durable somewhere."""
    times = [a.at for a in sim.stats.acks if a.channel == channel]
    changes = [(start, at) for (ch, _), (start, at) in sim.stats.epochs.items()
               if ch == channel]
    n = 0
    for a, at in zip(acks, times, strict=True):
        rec = final.idem.get((a.writer_key, a.key))
        if a.told or (rec is not None and rec.seq == a.seq):
            continue
        n += any(start < a.seq and signed <= at for start, signed in changes)
    return n


def replay(c: StoredChannel) -> ChannelState:
    """A stored channel's state, replayed from its base through every entry and epoch."""
    full = c.base.copy()
    full.replay(c.entries, c.epochs)
    for ec in c.epochs:
        if ec.epoch > full.epoch and ec.start_seq == full.seq:
            full.apply_epoch(ec)
    return full


def replay_mismatch(c: StoredChannel, live_hash: bytes,
                    signer_of: Callable[[bytes], Signer | None]) -> int:
    """1 if replaying the stored channel from its base, or from a snapshot taken half way
    (signed by ``signer_of(sequencer key)``; skipped when that gives None) plus the tail, does
    not give ``live_hash``, the state its node holds; else 0."""
    full = replay(c)
    if full.state_hash() != live_hash:
        return 1
    mid = len(c.entries) // 2
    part = c.base.copy()
    part.replay(c.entries[:mid], c.epochs)
    signer = signer_of(part.sequencer_key)
    if signer is None:
        return 0
    restored = Snapshot.create(signer, part).open(c.record)
    restored.replay(c.entries[mid:], c.epochs)
    for ec in c.epochs:
        if ec.epoch > restored.epoch and ec.start_seq == restored.seq:
            restored.apply_epoch(ec)
    return int(restored.state_hash() != full.state_hash())


def _snap_signer(sim: Simulator, key: bytes) -> Signer:
    for node in [*sim.nodes.values(), *sim.retired.values()]:
        if node.signer.public_key == key:
            return node.signer
    extra: list[Signer] = getattr(sim, "extra_signers", [])
    for s in extra:
        if s.public_key == key:
            return s
    raise LookupError("no signer for the snapshot's sequencer")


def check_stores(sim: Simulator) -> dict[str, int]:
    """``store_refused``: channels a node's own store refused at a restart (quarantined).
    A store that nobody damaged must open again whole after any crash."""
    out = dict.fromkeys(ANOMALIES, 0)
    out["store_refused"] = len(sim.stats.quarantined)
    return out


def check_world(sim: Simulator, *, marker: str = "FORGED") -> dict[str, int]:
    """World-state anomalies after heal: ``diverged`` (replicas whose document positions or
    contents differ) and ``forged_visible`` (a member other than the forger shows content the
    forger injected, marked with ``marker``, on some node)."""
    out = dict.fromkeys(ANOMALIES, 0)
    worlds = {n: node.world for n, node in sim.nodes.items() if node.world is not None}
    if len({w.state_hash() for w in worlds.values()}) > 1 or len(worlds) < len(sim.nodes):
        out["diverged"] += 1
    liars = set(getattr(sim, "liars", ()))
    for name, w in worlds.items():
        if name in liars:
            continue
        for m in w.members(now_ms=sim.now_ms(sim.nodes[name])):
            if sim.name_of(m.node_id) in liars:
                continue
            shown = [m.info.device if m.info else "", *(m.caps.tools if m.caps else ())]
            if marker in shown:
                out["forged_visible"] += 1
    return out


def check_auth(sim: Simulator, channel: bytes) -> dict[str, int]:
    """``unauthorized_accepted``: an entry in some node's log whose sender held no token that
    was valid (within the leeway) at the entry's ``sequencer_time`` — the validating
    sequencer's own clock. Only meaningful when the simulation runs with ``auth``."""
    out = dict.fromkeys(ANOMALIES, 0)
    if not getattr(sim, "auth", False):
        return out
    leeway = sim.auth_config.leeway_s
    seen: set[bytes] = set()
    for log in sim.final_logs(channel).values():
        for e in log:
            if e.hash in seen:
                continue
            seen.add(e.hash)
            name = sim.name_of(e.sender)
            t = e.sequencer_time / 1000
            windows = sim.minted.get(name or "", [])
            # A revocation binds every node within its polling interval (the documented bound).
            end = sim.revoked_at.get(name or "", float("inf")) + sim.REVOCATION_POLL
            # A token cannot be used before it was minted (the control service's clock is
            # true time; scenarios with auth do not skew clocks), and not past its expiry plus
            # the leeway on the sequencer's clock.
            if not any(iat <= t <= min(exp + leeway, end) for iat, exp in windows):
                out["unauthorized_accepted"] += 1
    # ``revoked_read``: a revoked node that keeps running read entries sequenced after every
    # node had polled the revocation (its sessions end then, with what it subscribed to).
    sequenced = {e.hash: e.sequencer_time / 1000 for log in sim.final_logs(channel).values()
                 for e in log}
    for name, at in sim.revoked_at.items():
        cutoff = at + sim.REVOCATION_POLL + 2.0
        for _, _, h in sim.any_node(name).delivered.get(channel, []):
            if sequenced.get(h, 0.0) > cutoff:
                out["revoked_read"] += 1
    return out


def check_compute(sim: Simulator) -> dict[str, int]:
    """``multiple_winners``: walking a compute channel's log independently of the fold, an
    acceptance while another provider's acceptance is still active, or a result from a
    provider that is not the active one. ``compute_stuck``: at the end, a request that is not
    terminal, not open, and whose assignee is not online (no live lease)."""
    from p2pworld.compute.state import decode_event

    out = dict.fromkeys(ANOMALIES, 0)
    for node in sim.nodes.values():
        cores = node.cores
        if cores is None or cores.compute is None:
            continue
        log = cores.own_compute()
        if log is None:
            continue
        active: dict[str, bytes | None] = {}
        for e in log.entries:
            if e.kind != "msg":
                continue
            try:
                ev = decode_event(e.payload)
            except Exception:  # noqa: BLE001 - a checker counts, it never crashes
                continue
            rid, op = ev.get("rid"), ev.get("op")
            if not isinstance(rid, str):
                continue
            if op == "accept":
                if active.get(rid) not in (None, e.sender):
                    out["multiple_winners"] += 1
                active[rid] = e.sender
            elif op in ("lapse", "reject"):
                active[rid] = None
            elif op == "result" and active.get(rid) != e.sender:
                out["multiple_winners"] += 1
        st = cores.compute.state(log)
        now = sim.now_ms(node)
        for r in st.requests.values():
            if r.terminal or r.open:
                continue
            who = r.accepted_by or r.assignee
            m = cores.world.member(who, now_ms=now) if who else None
            if m is None or m.state != "online":
                out["compute_stuck"] += 1
    return out


def check_bridge(sim: Simulator) -> dict[str, int]:
    """The bridge outbox against the relays (see the module docstring); call after the
    scenario calmed the relays and drained the outboxes."""
    out = dict.fromkeys(ANOMALIES, 0)
    nostr = sim.nostr
    if nostr is None:
        return out
    for _, box in sorted(nostr.outboxes.items()):
        for eid in box.ids():
            for url in sorted(nostr.relays):
                if eid not in nostr.relays[url].events:
                    out["lost_write"] += 1
    for url in sorted(nostr.relays):
        seen: set[tuple[str, str, str, int]] = set()
        for ev in nostr.relays[url].events.values():
            link = ev.tag("p2pworld")[:1]
            h = ev.tag("p2pworld-hash")[:1]
            if not link or not h:
                continue
            key = (ev.pubkey, link[0], h[0], ev.kind)
            if key in seen:
                out["duplicate"] += 1
            seen.add(key)
    return out
