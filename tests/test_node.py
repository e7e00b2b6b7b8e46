"""Nodes in one process over real loopback sockets: sessions, channels, restart, mDNS."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pworld import Conflict, NodeConfig, open_node
from p2pworld.errors import StoreCorrupt
from p2pworld.io.log_store import LogStore


def cfg(tmp: Path, name: str, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(home=tmp / name, workspace="test", mdns=False, keepalive=1.0, **kw)


async def collect(node, channel: bytes, n: int) -> list:  # type: ignore[no-untyped-def]
    out = []
    async for m in node.messages(channel):
        out.append(m)
        if len(out) == n:
            return out
    return out


async def test_two_nodes_exchange_ordered_messages(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "a")) as a:
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                await a.wait_peers(1)
                await b.wait_peers(1)
                chan = await a.open_channel("general")
                await exchange_ordered(a, b, chan.channel, lane="direct")


async def exchange_ordered(a, b, channel: bytes, *, lane: str) -> None:  # type: ignore[no-untyped-def]
    """The channel test every lane must pass: two writers, 50 messages, one total order that
    keeps each writer's order, idempotent retry, explicit conflict; ``b`` reaches the
    sequencer ``a`` over ``lane``."""
    rec = await b.wait_channel(a._hub.record(channel).name)
    assert rec.channel == channel

    async def pub(node, who: str) -> None:  # type: ignore[no-untyped-def]
        for i in range(25):
            await node.publish(channel, f"{who}{i}".encode(), key=f"{who}{i}".encode())

    async with trio.open_nursery() as n:
        n.start_soon(pub, a, "a")
        n.start_soon(pub, b, "b")
    got_a = await collect(a, channel, 50)
    got_b = await collect(b, channel, 50)
    assert [m.seq for m in got_b] == list(range(1, 51))
    assert [m.entry_hash for m in got_a] == [m.entry_hash for m in got_b]
    # Every delivered message records the lane it came by.
    assert {m.lane for m in got_b} == {lane} and {m.lane for m in got_a} == {"local"}
    # Per-writer order is preserved inside the total order.
    assert [m.payload for m in got_b if m.sender == b.node_id] == [
        f"b{i}".encode() for i in range(25)]
    # Idempotent retry over the session and an explicit conflict.
    r = await b.publish(channel, b"b3", key=b"b3")
    assert r.status == "duplicate"
    with pytest.raises(Conflict):
        await b.publish(channel, b"changed", key=b"b3")
    health = b.health()
    assert health["peers"][0]["state"] == "connected"
    assert health["peers"][0]["lane"] == lane
    (ch,) = [c for c in health["channels"] if c["channel"] == channel.hex()]
    assert ch["role"] == "replica" and ch["head_seq"] == 50 and ch["lane"] == lane


async def test_restart_keeps_the_log_and_resumes_from_the_cursor(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "a")) as a:
            chan = await a.open_channel("general")
            for i in range(10):
                await a.publish(chan.channel, b"m%d" % i)
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                await b.wait_channel("general")
                assert len(await collect(b, chan.channel, 10)) == 10
            for i in range(10, 15):
                await a.publish(chan.channel, b"m%d" % i)
            # b restarts from its own store and receives only the tail.
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                assert b.head(chan.channel)[0] == 10
                got = await collect(b, chan.channel, 15)
                assert [m.payload for m in got] == [b"m%d" % i for i in range(15)]
                assert b.head(chan.channel) == a.head(chan.channel)
        # The sequencer restarts too and continues the same chain.
        async with open_node(cfg(tmp_path, "a")) as a:
            assert a.head(chan.channel)[0] == 15
            r = await a.publish(chan.channel, b"after restart")
            assert r.seq == 16


async def test_a_corrupt_channel_is_quarantined_not_served(tmp_path: Path) -> None:
    async with open_node(cfg(tmp_path, "a")) as a:
        chan = await a.open_channel("general")
        for i in range(3):
            await a.publish(chan.channel, b"m%d" % i)
    store = LogStore(tmp_path / "a" / "log.db")
    store.db.execute("UPDATE entries SET body = ? WHERE seq = 2",
                     (store.db.execute("SELECT body FROM entries WHERE seq = 3").fetchone()[0],))
    store.close()
    async with open_node(cfg(tmp_path, "a")) as a:
        assert a.health()["quarantined"][chan.channel.hex()]["seq"] == 2
        with pytest.raises(StoreCorrupt):
            a.head(chan.channel)


async def test_mdns_on_loopback_finds_peers_and_ignores_other_workspaces(tmp_path: Path) -> None:
    def mk(name: str, ws: str) -> NodeConfig:
        return NodeConfig(home=tmp_path / name, workspace=ws, interfaces=["127.0.0.1"],
                          mdns=True)

    with trio.fail_after(40):
        async with open_node(mk("a", "ws1")) as a, open_node(mk("b", "ws1")) as b, \
                open_node(mk("c", "ws2")) as c:
            await a.wait_peers(1)
            await b.wait_peers(1)
            assert set(a._sessions) == {b.node_id}
            # No static peers were given: whoever dialled found the other through mDNS.
            assert "mdns" in a._peers[b.node_id].via or "mdns" in b._peers[a.node_id].via
            chan = await a.open_channel("general")
            await b.wait_channel("general")
            await b.publish(chan.channel, b"over mdns")
            (m,) = await collect(a, chan.channel, 1)
            assert m.payload == b"over mdns"
            # c saw the others (other workspace) but never joined them.
            assert not c._sessions and not a.peers.get(c.node_id)


async def test_lost_session_is_re_established_and_traffic_resumes(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "a")) as a:
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                chan = await a.open_channel("general")
                await b.wait_channel("general")
                await b.publish(chan.channel, b"before")
                old = b._sessions[a.node_id]
                await old.aclose()
                while b._sessions.get(a.node_id) in (None, old):
                    await b._peers_changed.wait()
                await b.publish(chan.channel, b"after")
                got = await collect(b, chan.channel, 2)
                assert [m.payload for m in got] == [b"before", b"after"]
                assert b._peers[a.node_id].handshakes >= 2


async def test_handoff_private_channel_and_replicated_acks_over_real_sessions(
        tmp_path: Path) -> None:
    from p2pworld.log.entry import ChannelPolicy

    with trio.fail_after(40):
        async with open_node(cfg(tmp_path, "a")) as a:
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b, \
                    open_node(cfg(tmp_path, "c", peers=[a.url, b.url])) as c:
                await a.wait_peers(2)
                await b.wait_peers(2)
                chan = await a.open_channel(
                    "secret", private=True,
                    participants=(b.identity.public_key, c.identity.public_key),
                    policy=ChannelPolicy(replication=2))
                await b.wait_channel("secret")
                await c.wait_channel("secret")
                r = await b.publish(chan.channel, b"hello", durability="replicated")
                assert r.strength == "replicated"
                got = await collect(c, chan.channel, 2)  # the rekey control entry + the message
                assert [m.payload for m in got if m.kind == "msg"] == [b"hello"]
                # On disk and on the wire the payload is ciphertext.
                raw = a._hub.entries(chan.channel)[-1].payload
                assert b"hello" not in raw
                # Planned handoff to b; c keeps publishing through the new sequencer.
                await a.handoff(chan.channel, b.identity.public_key)
                # c may still send to a: a refuses (NOT_SEQUENCER), c's outbox keeps the
                # submission and resends it to b once the signed epoch change reaches c.
                r2 = await c.publish(chan.channel, b"after handoff", timeout=10)
                assert r2.seq == r.seq + 1
                got = await collect(a, chan.channel, r2.seq)
                assert got[-1].payload == b"after handoff"
                assert {n._hub.state(chan.channel).epoch for n in (a, b, c)} == {2}
