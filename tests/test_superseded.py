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

from pathlib import Path

import trio

from p2pworld import NodeConfig, open_node
from p2pworld.log.hub import Notice, PublishResult, Resolved

from .hubs import connect, disconnect, run
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


def cfg(home: Path, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
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
                while min(b.head(chan.channel)[0], c.head(chan.channel)[0]) < 5:
                    await trio.sleep(0.05)
            # a is gone; b is made the sequencer with the authority key (a's node key).
            from p2pworld.home import NodeHome
            authority = NodeHome(tmp_path / "a").load().signer
            await b.recover(chan.channel, authority, NodeHome(tmp_path / "b").load().public_key)
            r = await c.publish(chan.channel, b"from c")
            assert r.seq == 6
            async with open_node(cfg(tmp_path / "a", peers=[b.url, c.url])) as a:
                r = await a.publish(chan.channel, b"a is back")
                assert r.seq == 7  # e2c769c: seq 6 of epoch 1, which no replica takes
                while min(x.head(chan.channel)[0] for x in (a, b, c)) < 7:
                    await trio.sleep(0.05)
                assert a.head(chan.channel) == b.head(chan.channel) == c.head(chan.channel)
                assert a.health()["channels"][0]["role"] == "replica"
