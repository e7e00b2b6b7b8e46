"""A superseded sequencer steps down (robustness issue, section D).

After an unplanned recovery (an authority-signed epoch 2 on b) the old sequencer a comes back.
On e2c769c it stayed "sequencer, epoch 1" and acknowledged new local writes that no replica
would ever take, with no LostWrite, no Forked, no error anywhere. Now the first peer that
knows the newer epoch tells it (its announce, or its answer to a head query), a checks the
epoch change as any epoch-change proof, steps down, and what it acknowledged after the new
epoch's start goes back into its outbox and is resubmitted with the same keys: its writer
gets LostWrite(seq, key), then RESEQUENCED with the new seq. Hubs (the core the simulator runs
too) and real nodes over sockets.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from p2pworld import NodeConfig, open_node
from p2pworld.channel.hub import Notice, PublishResult, Resolved
from p2pworld.io.home import NodeHome
from p2pworld.testing import Acknowledged
from p2pworld.wire import HeadReport

from .conftest import ROOT
from .homes import check_homes
from .hubs import connect, disconnect, outcomes, run
from .test_channel_features import publish, world


def test_a_returning_superseded_sequencer_steps_down_and_resubmits() -> None:
    hubs, keys = world()
    rec, fx = hubs["a"].open_channel("sup", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    for i in range(3):
        publish(hubs, "a", rec.channel, b"kept %d" % i, b"k%d" % i)
    # a is cut off, and acknowledges two more of its own writes that nobody else holds.
    run(hubs, disconnect(hubs, "a", "b") + disconnect(hubs, "a", "c"))
    away = {"a": hubs["a"]}
    for i in range(2):
        (ok,) = publish(away, "a", rec.channel, b"away %d" % i, b"away%d" % i)
        assert isinstance(ok, PublishResult) and ok.seq == 4 + i
    # The authority (a's own key, the default) makes b the sequencer at b's head.
    others = {k: hubs[k] for k in "bc"}
    ec, fx = hubs["b"].recover(rec.channel, keys["a"], keys["b"].public_key, now_ms=9)
    run(others, [("b", e) for e in fx])
    (ok,) = publish(others, "c", rec.channel, b"from c", b"c1")
    assert ok.seq == 4 and hubs["c"].state(rec.channel).epoch == 2  # type: ignore[union-attr]
    # a comes back and publishes at once.
    req, fx = hubs["a"].publish(rec.channel, b"at once", idem_key=b"now", now_ms=10)
    seen = run(hubs, [("a", e) for e in fx] + connect(hubs, "a", "b") + connect(hubs, "a", "c"))
    notices = [e.error for e in seen["a"] if isinstance(e, Notice)]
    lost = sorted((n.details["seq"], n.details["idem_key"]) for n in notices
                  if n.code == "LOST_WRITE")
    assert lost == [(4, b"away0".hex()), (5, b"away1".hex())]
    reseq = sorted((n.details["old_seq"], n.details["seq"]) for n in notices
                   if n.code == "RESEQUENCED")
    assert [old for old, _ in reseq] == [4, 5] and all(new > 4 for _, new in reseq)
    (now,) = [e.outcome for e in seen["a"] + fx if isinstance(e, Resolved) and e.req == req]
    assert isinstance(now, PublishResult) and now.seq > 4  # by the new sequencer
    assert rec.channel not in hubs["a"].own and hubs["a"].state(rec.channel).epoch == 2
    heads = {h.head(rec.channel) for h in hubs.values()}
    assert len(heads) == 1 and heads.pop()[0] == 7
    payloads = [e.payload for e in hubs["b"].entries(rec.channel)]
    assert payloads[:4] == [b"kept 0", b"kept 1", b"kept 2", b"from c"]
    assert sorted(payloads[4:]) == [b"at once", b"away 0", b"away 1"]


def test_an_acknowledged_entry_cut_while_a_replicated_retry_of_it_waits_is_told() -> None:
    # Before: when a stepping-down sequencer cut an entry it had acknowledged (local) while a
    # retry of the same key with want="replicated" still waited on it, only the waiting
    # retry was requeued: the first ack was lost silently (no LostWrite). Found by the
    # elected-by-hand sweep (seeds 148, 184, 197).
    hubs, keys = world()
    rec, fx = hubs["a"].open_channel("retry", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    publish(hubs, "a", rec.channel, b"kept", b"k0")
    run(hubs, disconnect(hubs, "a", "b") + disconnect(hubs, "a", "c"))
    away = {"a": hubs["a"]}
    (first,) = publish(away, "a", rec.channel, b"away", b"away")
    assert isinstance(first, PublishResult) and first.strength == "local"
    # The same key again, now wanting a replicated ack: it waits (no replica reachable).
    assert publish(away, "a", rec.channel, b"away", b"away", want="replicated") == []
    others = {k: hubs[k] for k in "bc"}
    _, fx = hubs["b"].recover(rec.channel, keys["a"], keys["b"].public_key, now_ms=9)
    run(others, [("b", e) for e in fx])
    seen = run(hubs, connect(hubs, "a", "b") + connect(hubs, "a", "c"))
    lost = [e.error.details["seq"] for e in seen["a"]
            if isinstance(e, Notice) and e.error.code == "LOST_WRITE"]
    assert lost == [first.seq]
    # The waiting retry is answered by the new sequencer, with the key it resubmits.
    (again,) = [e.outcome for e in seen["a"] if isinstance(e, Resolved)]
    assert isinstance(again, PublishResult)


def cfg(home: Path, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    # No handoff when a node leaves (it is gone as if it had crashed): what these tests try
    # is a sequencer coming back to its channels (docs/guarantees.md, a clean close).
    kw.setdefault("handoff_timeout_s", 0)
    return NodeConfig(home=home, workspace="superseded", mdns=False, **kw)


async def test_three_nodes_the_old_sequencer_returns_and_publishes_at_once(tmp_path: Path
                                                                           ) -> None:
    with trio.fail_after(120):
        async with open_node(cfg(tmp_path / "b")) as b, \
                open_node(cfg(tmp_path / "c", peers=[b.url])) as c:
            async with open_node(cfg(tmp_path / "a", peers=[b.url, c.url])) as a:
                chan = await a.open_channel("general")
                await b.wait_channel("general")
                await c.wait_channel("general")
                for i in range(5):
                    await a.publish(chan.channel, b"m%d" % i, durability="replicated")
                # b and c only read: each joined the voters with one entry when asked (only
                # voters count for replicated acks).
                top = a.head(chan.channel)[0]
                assert top == 7
                while min(b.head(chan.channel)[0], c.head(chan.channel)[0]) < top:
                    await trio.sleep(0.05)
            # a is gone; b is made the sequencer with the authority key (a's node key).
            from p2pworld.io.home import NodeHome
            authority = NodeHome(tmp_path / "a").load().signer
            await b.recover(chan.channel, authority, NodeHome(tmp_path / "b").load().public_key)
            r = await c.publish(chan.channel, b"from c")
            assert r.seq == top + 1
            async with open_node(cfg(tmp_path / "a", peers=[b.url, c.url])) as a:
                r = await a.publish(chan.channel, b"a is back")
                # e2c769c: not top + 1 of epoch 1, which no replica takes
                assert r.seq == top + 2
                while min(x.head(chan.channel)[0] for x in (a, b, c)) < top + 2:
                    await trio.sleep(0.05)
                assert a.head(chan.channel) == b.head(chan.channel) == c.head(chan.channel)
                assert a.health()["channels"][0]["role"] == "replica"


def _writer(home: Path, peers: list[str], prefix: str, count: int, wait_s: float = 0.0
            ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.tools.writer", str(home), "superseded", ",".join(peers),
         prefix, str(count), str(wait_s)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, start_new_session=True)


def _events(proc: subprocess.Popen[bytes], timeout: float = 90) -> list[dict]:  # type: ignore[type-arg]
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the writer process did not finish: {err.decode()[-2000:]}"
                             ) from None
    assert proc.returncode == 0, err.decode()[-2000:]
    return [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]


async def test_real_processes_the_old_sequencer_goes_away_and_returns(tmp_path: Path) -> None:
    # a is its own process: it opens the channel and writes, is killed (-9), b recovers with
    # the authority key, and a returns as a new process that publishes at once.
    a_home = tmp_path / "a"
    with trio.fail_after(240):
        async with open_node(cfg(tmp_path / "b")) as b, \
                open_node(cfg(tmp_path / "c", peers=[b.url])) as c:
            first = _writer(a_home, [b.url, c.url], "r:m", 5, wait_s=60)
            assert first.stdout is not None
            acks: list[dict] = []  # type: ignore[type-arg]
            while len(acks) < 5:  # read acks as they come, then kill -9 mid-wait
                line = await trio.to_thread.run_sync(first.stdout.readline)
                assert line, first.stderr.read().decode()[-2000:] if first.stderr else ""
                if json.loads(line).get("event") == "ack":
                    acks.append(json.loads(line))
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            for f in (first.stdout, first.stderr):
                if f:
                    f.close()
            chan = next(r.channel for r in b.channels() if r.name == "general")
            # b and c only read: they joined the voters (one entry each) when asked.
            top = max(e["seq"] for e in acks)
            while min(b.head(chan)[0], c.head(chan)[0]) < top:
                await trio.sleep(0.05)
            await b.recover(chan, NodeHome(a_home).load().signer,
                            NodeHome(tmp_path / "b").load().public_key)
            from_c = await c.publish(chan, b"from c", key=b"from c")
            assert from_c.seq == top + 1
            back = _writer(a_home, [b.url, c.url], "back", 1, wait_s=2.0)
            evs = await trio.to_thread.run_sync(_events, back)
            acked = [e for e in evs if e["event"] == "ack"]
            # e2c769c: not top + 1, an epoch-1 seq nobody takes
            assert [e["seq"] for e in acked] == [top + 2]
            (role,) = [e for e in evs if e["event"] == "role"]
            assert role["role"] == ["replica"] and role["head"] == top + 2
            while min(b.head(chan)[0], c.head(chan)[0]) < top + 2:
                await trio.sleep(0.05)
            assert b.head(chan) == c.head(chan)
            assert [m.payload for m in b._hub.entries(chan)][-2:] == [b"from c", b"back0"]
            c_key = c.identity.public_key
    # The three stores, checked as a simulation's are: every ack held, one history.
    a_key = NodeHome(a_home).load().public_key
    seen = [Acknowledged(writer_key=a_key, key=e["payload"].encode(),
                         payload=e["payload"].encode(), seq=e["seq"], strength=e["strength"])
            for e in [*acks, *acked]]
    seen.append(Acknowledged(writer_key=c_key, key=b"from c", payload=b"from c", seq=from_c.seq))
    anomalies = check_homes({n: tmp_path / n for n in "abc"}, chan, seen)
    assert {k: v for k, v in anomalies.items() if v} == {}


def test_a_replica_that_enters_the_new_epoch_tells_the_old_sequencer() -> None:
    # a is cut off from b (the new sequencer) but not from c: c, entering epoch 2, passes
    # the change on to a, which steps down at once instead of acknowledging epoch-1 writes
    # that no peer would store.
    hubs, keys = world()
    rec, fx = hubs["a"].open_channel("sup", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    publish(hubs, "a", rec.channel, b"kept", b"k0")
    run(hubs, disconnect(hubs, "a", "b"))
    ab = {k: hubs[k] for k in "ac"}
    _, fx = hubs["b"].recover(rec.channel, keys["a"], keys["b"].public_key, now_ms=9)
    run(hubs, [("b", e) for e in fx])
    assert rec.channel not in hubs["a"].own and hubs["a"].state(rec.channel).epoch == 2
    _, fx = hubs["a"].publish(rec.channel, b"after", idem_key=b"after", now_ms=10)
    seen = run(ab, [("a", e) for e in fx])
    acks = [o for o in outcomes(seen["a"]) if isinstance(o, PublishResult)]
    assert acks == []  # no epoch-1 ack; it waits in the outbox for the new sequencer
    seen = run(hubs, connect(hubs, "a", "b"))
    (ok,) = [o for o in outcomes(seen["a"]) if isinstance(o, PublishResult)]
    assert ok.seq == 2 and hubs["b"].head(rec.channel) == hubs["a"].head(rec.channel)


def test_a_partial_epoch_chain_makes_no_false_fork() -> None:
    # A peer passes on a genuine epoch 3 change with epoch 2 left out (it starts on epoch 2's
    # history, which a does not hold): a stops sequencing, with no FORKED notice, and takes
    # the missing epochs from the new sequencer.
    hubs, keys = world(4)
    rec, fx = hubs["a"].open_channel("sup", now_ms=0)
    run(hubs, [("a", e) for e in fx])
    publish(hubs, "a", rec.channel, b"kept", b"k0")
    rest = {k: hubs[k] for k in "bcd"}
    run(hubs, disconnect(hubs, "a", "b") + disconnect(hubs, "a", "c") +
        disconnect(hubs, "a", "d"))
    _, fx = hubs["b"].recover(rec.channel, keys["a"], keys["b"].public_key, now_ms=9)
    run(rest, [("b", e) for e in fx])
    publish(rest, "c", rec.channel, b"epoch 2", b"c1")
    _, fx = hubs["c"].recover(rec.channel, keys["a"], keys["c"].public_key, now_ms=10)
    run(rest, [("c", e) for e in fx])
    e3 = hubs["c"].state(rec.channel).epochs[-1]
    assert e3.epoch == 3
    fx = hubs["a"].receive(hubs["d"].node_id, HeadReport(rec.channel, 3, 0, bytes(32), (e3,)),
                           now_ms=11)
    assert not [e for e in fx if isinstance(e, Notice) and e.error.code == "FORKED"]
    assert rec.channel not in hubs["a"].own
    run(hubs, fx and [("a", e) for e in fx] + connect(hubs, "a", "c"))
    assert hubs["a"].head(rec.channel) == hubs["c"].head(rec.channel)
    assert hubs["a"].state(rec.channel).epoch == 3
