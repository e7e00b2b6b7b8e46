"""Channels outlive their sequencer's clean exit (issue "Channels outlive their sequencer",
M1): a node that closes hands every channel it sequences to a live replica at its head,
waits for the new sequencer to confirm, and says which it could not hand off. Real nodes
over real sessions on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pworld import NodeClosed, NotHandedOff, open_node
from p2pworld.log.entry import ChannelPolicy

from .test_node import cfg, collect


async def test_a_closing_sequencer_hands_its_channel_to_a_replica_and_writes_go_on(
        tmp_path: Path) -> None:
    """Before: the channel named the closed node as its sequencer for ever (read-only)."""
    with trio.fail_after(60):
        async with open_node(cfg(tmp_path, "b")) as b, \
                open_node(cfg(tmp_path, "c", peers=[b.url])) as c:
            async with open_node(cfg(tmp_path, "a", peers=[b.url, c.url])) as a:
                await a.wait_peers(2)
                chan = await a.open_channel("general", policy=ChannelPolicy(replication=2))
                ch = chan.channel
                await b.wait_channel("general")
                await c.wait_channel("general")
                for i in range(5):
                    r = await a.publish(ch, b"m%d" % i, durability="replicated")
                # b and c only read: each joined the voters (a voter entry) when asked.
                assert r.seq == 7 and r.strength == "replicated"
                t0 = trio.current_time()
                report = await a.close()
                took = trio.current_time() - t0
                assert report.complete, report
                [(handed, to)] = report.handed.items()
                assert handed == ch and to in (b.node_id, c.node_id)
                with pytest.raises(NodeClosed):
                    await a.publish(ch, b"after close")
            # The new sequencer acknowledges; the other replica follows it.
            new, other = (b, c) if to == b.node_id else (c, b)
            assert new.channels.sequencer_of(ch) == new.node_id
            r = await other.publish(ch, b"after the handoff", timeout=20)
            assert r.seq == 8
            got = await collect(new, ch, 8)
            assert [m.payload for m in got if m.kind == "msg"] == [b"m0", b"m1", b"m2", b"m3", b"m4",
                                                b"after the handoff"]
            assert took < 10  # confirmed, not the end of the bound (5 s) plus leaving


async def test_a_channel_with_no_live_replica_is_reported_and_noticed(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "a")) as a:
            ch = (await a.open_channel("alone")).channel
            await a.publish(ch, b"only here")
            report = await a.close()
            assert not report.complete and set(report.not_handed) == {ch}
            notice = await a.notices()
            assert isinstance(notice.error, NotHandedOff) and notice.channel == ch
        # It is still this node's channel when it comes back.
        async with open_node(cfg(tmp_path, "a")) as a:
            assert a.channels.sequencer_of(ch) == a.node_id
            assert (await a.publish(ch, b"back")).seq == 2


async def test_the_end_of_open_node_hands_off_too(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with open_node(cfg(tmp_path, "b")) as b:
            async with open_node(cfg(tmp_path, "a", peers=[b.url])) as a:
                await a.wait_peers(1)
                ch = (await a.open_channel("general")).channel
                await b.wait_channel("general")
                await a.publish(ch, b"one")
                await collect(b, ch, 1)  # b is a live replica at the head
            assert b.channels.sequencer_of(ch) == b.node_id
            assert (await b.publish(ch, b"two")).seq == 2
            # Back again, the old sequencer follows the new one (the handoff was on its disk
            # before it left): one sequencer, one history.
            async with open_node(cfg(tmp_path, "a", peers=[b.url])) as a:
                assert a.channels.sequencer_of(ch) == b.node_id
                assert [m.payload for m in await collect(a, ch, 2)] == [b"one", b"two"]
                assert (await a.publish(ch, b"three")).seq == 3


async def test_two_sequencers_closing_at_once_leave_their_channels_to_the_one_that_stays(
        tmp_path: Path) -> None:
    """A channel handed to a node that is closing too is handed on, never back: without it,
    each could take the other's channel on its way out and leave it stranded."""
    with trio.fail_after(60):
        async with open_node(cfg(tmp_path, "c")) as c:
            async with open_node(cfg(tmp_path, "a", peers=[c.url])) as a, \
                    open_node(cfg(tmp_path, "b", peers=[a.url, c.url])) as b:
                await a.wait_peers(2)
                await b.wait_peers(2)
                ca = (await a.open_channel("from-a")).channel
                cb = (await b.open_channel("from-b")).channel
                for node, ch in ((a, ca), (b, cb)):
                    await node.publish(ch, b"first")
                for node, ch in ((b, ca), (c, ca), (a, cb), (c, cb)):
                    await collect(node, ch, 1)  # every other node replicates both
                reports = {}

                async def close(name: str, node) -> None:  # type: ignore[no-untyped-def]
                    reports[name] = await node.close()

                async with trio.open_nursery() as n:
                    n.start_soon(close, "a", a)
                    n.start_soon(close, "b", b)
            for ch in (ca, cb):
                assert c.channels.sequencer_of(ch) == c.node_id, reports
                assert (await c.publish(ch, b"second")).seq == 2


def test_p2pworld_node_hands_its_channels_off_on_sigterm(tmp_path: Path) -> None:
    """Real processes. Before: a signal cancelled ``p2pworld node`` (the node's tasks with
    it), so an operator's Ctrl-C, ``kill`` or ``docker stop`` never handed anything off."""
    import json
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent

    def node(name: str, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "p2pworld.cli.main", "node", "--home", str(tmp_path / name),
             "--no-mdns", "--json", "--workspace", "sigterm", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=root)

    def events(proc: subprocess.Popen[str], until: str) -> dict:  # type: ignore[type-arg]
        assert proc.stdout is not None
        for line in proc.stdout:
            ev = json.loads(line)
            if ev["event"] == until:
                return ev  # type: ignore[no-any-return]
        raise AssertionError(f"no {until!r} event")

    a = node("a", "--open", "general", "--send", "general", "hello")
    b = None
    try:
        url = events(a, "up")["url"]
        b = node("b", "--peer", url, "--follow", "general")
        b_id = events(b, "up")["node"]
        assert events(b, "message")  # b replicates the channel, at its head
        a.send_signal(signal.SIGTERM)
        closed = events(a, "closed")
        assert list(closed["handed"].values()) == [b_id], closed
        _, err = a.communicate(timeout=60)
        assert a.returncode == 0, err[-2000:]
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()


async def test_with_handoff_off_the_report_and_notices_say_nothing_was_handed(
        tmp_path: Path) -> None:
    """Found by an adversarial run: ``handoff_timeout_s=0`` reported ``complete`` (nothing
    handed, nothing not handed) and sent no notice, while the channel stayed with the node
    that left."""
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "b")) as b:
            async with open_node(cfg(tmp_path, "a", peers=[b.url],
                                     handoff_timeout_s=0)) as a:
                await a.wait_peers(1)
                ch = (await a.open_channel("general")).channel
                await b.wait_channel("general")
                await a.publish(ch, b"one")
                await collect(b, ch, 1)
                report = await a.close()
                assert not report.complete and "off" in report.not_handed[ch]
                assert (await a.notices()).error.code == "NOT_HANDED_OFF"
            assert b.channels.sequencer_of(ch) == a.node_id  # as the report says
