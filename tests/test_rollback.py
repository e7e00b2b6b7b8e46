"""A sequencer whose store rolled back (an old copy restored, a lost WAL) is found out by its
peers at start, takes its lost entries back from a replica, and never issues a seq twice in
one epoch (robustness issue, section C: the start-up exchange). Real nodes, sockets and
sqlite files; the core paths (nothing restorable, a bound with no answer) on the hubs too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from p2pworld import NodeConfig, open_node
from p2pworld.channel.hub import Notice, Persist, Resolved
from p2pworld.io.log_store import LogStore
from p2pworld.testing import MemoryLogStore
from p2pworld.wire import HeadReport, Restore

from .hubs import apply_durable, hub, run


def cfg(home: Path, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    # No handoff when a node leaves (the sequencer restarts in place): what these tests try is a
    # sequencer coming back to its channels (docs/guarantees.md, a clean close).
    kw.setdefault("handoff_timeout_s", 0)
    return NodeConfig(home=home, workspace="rollback", mdns=False, **kw)


async def _notices(node, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [(await node.notices()).error.code for _ in range(n)]


def _roll_back(home: Path, copy: Path) -> None:
    """Put an older copy of the log back, as a restored backup or a lost WAL leaves it."""
    for suffix in ("", "-wal", "-shm"):
        (home / f"log.db{suffix}").unlink(missing_ok=True)
    shutil.copy(copy, home / "log.db")


async def test_a_rolled_back_sequencer_takes_its_entries_back_from_a_replica(
        tmp_path: Path) -> None:
    # On e2c769c the restarted sequencer went on from its old head and issued seq 11 again
    # (the replica held a different entry 11: refused, the channel split).
    a_home, snapshot = tmp_path / "a", tmp_path / "a-log-at-10.db"
    with trio.fail_after(120):
        async with open_node(cfg(tmp_path / "b")) as b:
            async with open_node(cfg(a_home, peers=[b.url])) as a:
                chan = await a.open_channel("general")
                await b.wait_channel("general")
                await a.wait_peers(1)
                for i in range(10):
                    await a.publish(chan.channel, b"m%d" % i, durability="replicated")
            shutil.copy(a_home / "log.db", snapshot)  # a stopped cleanly: the whole log
            async with open_node(cfg(a_home, peers=[b.url])) as a:
                for i in range(10, 15):
                    r = await a.publish(chan.channel, b"m%d" % i, durability="replicated")
                # b only reads: it joined the voters (one entry) when a first asked.
                assert r.seq == 16
            assert b.head(chan.channel)[0] == 16
            _roll_back(a_home, snapshot)
            async with open_node(cfg(a_home, peers=[b.url])) as a:
                r = await a.publish(chan.channel, b"after the rollback")
                assert r.seq == 17
                assert "ROLLED_BACK" in await _notices(a, 1)
                while b.head(chan.channel)[0] < 17:
                    await trio.sleep(0.05)
                assert a.head(chan.channel) == b.head(chan.channel)
                got = [m.payload async for m in _take(a.messages(chan.channel), 17)
                       if m.kind == "msg"]
                assert got == [b"m%d" % i for i in range(15)] + [b"after the rollback"]
                assert "FORKED" not in b.health()["errors"]
    store = LogStore(a_home / "log.db")  # what was taken back is on a's disk
    try:
        (c,) = store.load_channels()
        assert c.entries[-1].seq == 17
    finally:
        store.close()


async def _take(it, n: int):  # type: ignore[no-untyped-def]
    async for m in it:
        yield m
        n -= 1
        if n == 0:
            return


async def test_with_no_peer_to_ask_it_goes_on_after_the_bound_and_says_so(tmp_path: Path
                                                                          ) -> None:
    home = tmp_path / "a"
    async with open_node(cfg(home)) as a:
        chan = await a.open_channel("general")
        await a.publish(chan.channel, b"one")
    with trio.fail_after(60):
        async with open_node(cfg(home, startup_check_s=0.5)) as a:
            t0 = trio.current_time()
            r = await a.publish(chan.channel, b"two")
            assert r.seq == 2 and trio.current_time() - t0 >= 0.4
            assert await _notices(a, 1) == ["ROLLBACK_UNCHECKED"]


def _replicated(n: int) -> tuple:  # type: ignore[type-arg]
    """Hubs a (sequencer) and b (replica) with stores, connected, and n entries on a channel
    of a's. Returns (a, b, record, stores)."""
    a, sa = hub(1)
    b, _ = hub(2)
    stores = {"a": MemoryLogStore(), "b": MemoryLogStore()}
    rec, fx = a.open_channel("c", now_ms=0)
    for e in fx:
        apply_durable(stores["a"], e)
    run({"a": a, "b": b}, [("a", x) for x in a.peer_up(b.node_id, b.signer.public_key)] +
        [("b", x) for x in b.peer_up(a.node_id, sa.public_key)], stores=stores)
    for i in range(n):
        a.publish(rec.channel, b"%d" % i, idem_key=b"k%d" % i, now_ms=1)
    run({"a": a, "b": b}, [], stores=stores)
    return a, b, rec, stores


def test_entries_no_replica_can_give_back_are_reported_and_never_reissued(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The core path on the hubs: a's store rolls back to seq 3, b (the only peer) proves head
    # 6 (a's own signed head) but cannot give the entries back (over the restore bound, say).
    # a reports LostWrite for 4..6 and starts a new epoch at 3; b truncates to it, and the
    # next publish is seq 4 of epoch 2 on both, never a second seq 4 in epoch 1.
    a, b, rec, stores = _replicated(3)
    sa = a.signer
    old = stores["a"].crash()
    for i in range(3, 6):
        a.publish(rec.channel, b"%d" % i, idem_key=b"k%d" % i, now_ms=1)
    run({"a": a, "b": b}, [], stores=stores)
    assert b.head(rec.channel)[0] == 6
    monkeypatch.setattr(b, "_restore_for", lambda peer, msg: Restore(msg.channel))
    # a restarts on the rolled-back store.
    a2, _ = hub(1)
    stores["a"] = old
    for c in old.load_channels():
        a2.load(c.record, c.epochs, c.base, c.entries, c.head)
    req, fx = a2.publish(rec.channel, b"new", idem_key=b"new", now_ms=2)
    assert not [e for e in fx if isinstance(e, Resolved)]  # held: not acknowledged yet
    b.peer_down(a.node_id)
    seen = run({"a": a2, "b": b},
               [("a", x) for x in a2.peer_up(b.node_id, b.signer.public_key)] +
               [("b", x) for x in b.peer_up(a2.node_id, sa.public_key)] +
               [("a", x) for x in a2.tick(now_ms=3)], stores=stores)
    notices = [e.error for e in seen["a"] if isinstance(e, Notice)]
    lost = [n for n in notices if n.code == "LOST_WRITE"]
    assert lost and (lost[0].details["seq"], lost[0].details["last"]) == (4, 6)
    (res,) = [e.outcome for e in seen["a"] if isinstance(e, Resolved) and e.req == req]
    assert res.seq == 4  # type: ignore[union-attr]
    assert a2.state(rec.channel).epoch == b.state(rec.channel).epoch == 2
    assert a2.head(rec.channel) == b.head(rec.channel)
    assert [e.payload for e in b.entries(rec.channel)] == [b"0", b"1", b"2", b"new"]
    persisted = [e for e in seen["a"] if isinstance(e, Persist) and e.entries]
    assert persisted and persisted[-1].entries[-1].seq == 4


def _rolled_back_pair() -> tuple:  # type: ignore[type-arg]
    """a sequences a channel with 3 entries that b replicates; a restarts on its store with a
    publish waiting. Returns (a2, b, channel, the publish's req)."""
    _, b, rec, stores = _replicated(3)
    a2, _ = hub(1)
    for c in stores["a"].load_channels():
        a2.load(c.record, c.epochs, c.base, c.entries, c.head)
    req, _ = a2.publish(rec.channel, b"new", idem_key=b"new", now_ms=2)
    a2.peer_up(b.node_id, b.signer.public_key)
    a2.tick(now_ms=10)  # the bound starts: 2 s
    return a2, b, rec.channel, req


def test_an_unsigned_claim_to_be_ahead_is_no_evidence() -> None:
    # A hostile peer answers the head query with seq 10**15 and no signature: counted as an
    # answer, never as a rollback (no LostWrite, no new epoch, nothing asked of it).
    a2, b, ch, req = _rolled_back_pair()
    fx = a2.receive(b.node_id, HeadReport(ch, 1, 10**15, bytes(32)), now_ms=20)
    assert not [e for e in fx if isinstance(e, Notice)]
    assert a2.state(ch).epoch == 1
    assert a2.errors.get("UNPROVEN_HEAD") == 1
    out = a2.flush(now_ms=21)
    (res,) = [e.outcome for e in fx + out if isinstance(e, Resolved) and e.req == req]
    assert res.seq == 4  # type: ignore[union-attr]


def test_a_peer_that_never_answers_the_restore_cannot_hold_the_channel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # b proves it is ahead (a signed head of a's) but never answers the restore request: at
    # the bound the exchange ends anyway, the writes held are answered.
    a2, b, ch, req = _rolled_back_pair()
    r = b.replicas[ch]
    proven = HeadReport(ch, 1, r.seq + 2, bytes(32), (), None)
    monkeypatch.setattr(a2, "_proven", lambda seqr, msg: True)
    fx = a2.receive(b.node_id, proven, now_ms=20)
    assert [type(e.message).__name__ for e in fx if hasattr(e, "message")] == ["RestoreRequest"]
    assert a2.checking(ch)
    assert not [e for e in a2.tick(now_ms=1_000) if isinstance(e, Resolved)]
    fx = a2.tick(now_ms=2_011) + a2.flush(now_ms=2_012)
    assert not a2.checking(ch) and a2.errors.get("RESTORE_TIMEOUT") == 1
    assert [e.outcome for e in fx if isinstance(e, Resolved) and e.req == req]
