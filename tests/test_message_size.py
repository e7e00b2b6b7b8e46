"""One size limit, part of the channel, checked before anything is queued; messages up to it
travel on every lane (real sockets, sqlite).

Regression tests for issue "Never crash, never lose an acknowledged write silently", section
B: on e2c769c a sequencer's own 300 kB publish was acknowledged and then no replica could get
past it, a remote 300 kB publish timed out and poisoned the outbox, 10 MB crashed the node.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
import trio

from p2pworld import NodeConfig, P2PWorldError, open_node
from p2pworld.core.node import Called
from p2pworld.log.entry import ChannelPolicy
from p2pworld.testing import Acknowledged

from .homes import check_homes
from .test_node import collect

MiB = 1 << 20


def cfg(tmp: Path, name: str, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(home=tmp / name, workspace="size", mdns=False, keepalive=1.0, **kw)


async def test_a_300_kB_message_reaches_every_replica_and_later_ones_follow(
        tmp_path: Path) -> None:
    """e2c769c: the sequencer acked it, the replica hit DECODE_ERROR for ever, lag read 0."""
    acks: list[Acknowledged] = []
    with trio.fail_after(60):
        async with open_node(cfg(tmp_path, "a")) as a, \
                open_node(cfg(tmp_path, "b", peers=[a.url])) as b:

            async def publish(node, payload: bytes):  # type: ignore[no-untyped-def]
                key = b"k%d" % len(acks)
                r = await node.publish(chan.channel, payload, key=key)
                acks.append(Acknowledged(writer_key=node.identity.public_key, key=key,
                                         payload=payload, seq=r.seq))
                return r

            await a.wait_peers(1)
            chan = await a.open_channel("big")
            await b.wait_channel("big")
            await publish(a, b"x" * 300_000)
            for i in range(3):
                await publish(a, b"small %d" % i)
            got = await collect(b, chan.channel, 4)
            assert [len(m.payload) for m in got] == [300_000, 7, 7, 7]
            # A remote publish of the same size is acknowledged too (e2c769c: an
            # indeterminate PublishTimeout, and every later publish on the channel with it).
            r = await publish(b, b"y" * 300_000)
            assert r.seq == 5 and r.status == "appended"
            r = await publish(b, b"after")
            assert r.seq == 6
            (row,) = [c for c in b.health()["channels"] if c["name"] == "big"]
            assert row["lag"] == 0 and row["head_seq"] >= 5
            while b.head(chan.channel) != a.head(chan.channel):
                await trio.sleep(0.01)
    # What both stores hold, checked as a simulation's are: every ack there, one history.
    anomalies = check_homes({"a": tmp_path / "a", "b": tmp_path / "b"}, chan.channel, acks)
    assert {k: v for k, v in anomalies.items() if v} == {}


async def test_over_the_limit_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """e2c769c: 10 MB from the sequencer itself ended the node (frame too large to send)."""
    with trio.fail_after(60):
        async with open_node(cfg(tmp_path, "a")) as a, \
                open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
            await a.wait_peers(1)
            chan = await a.open_channel("general")
            await b.wait_channel("general")
            for node in (a, b):
                with pytest.raises(P2PWorldError) as got:
                    await node.publish(chan.channel, b"z" * (10 * MiB))
                assert got.value.code == "PAYLOAD_TOO_LARGE"
                assert got.value.details["limit"] == MiB
            # Nothing was written or sent: the log is empty, the outbox too, the nodes run.
            assert a.head(chan.channel)[0] == 0 and b._hub.outbox == {}
            with contextlib.closing(sqlite3.connect(tmp_path / "b" / "log.db")) as db:
                rows = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            assert rows == (0,)
            assert (await b.publish(chan.channel, b"fine")).seq == 1
            assert a._hub.record(chan.channel).policy.max_payload == MiB  # recorded


async def test_ten_megabytes_travel_when_the_channel_allows_them(tmp_path: Path) -> None:
    """A limit up to 16 MiB: the message travels in parts on the direct lane, both ways."""
    with trio.fail_after(120):
        async with open_node(cfg(tmp_path, "a")) as a, \
                open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
            await a.wait_peers(1)
            chan = await a.open_channel("bulk", policy=ChannelPolicy(max_payload=16 * MiB))
            await b.wait_channel("bulk")
            big = bytes(range(256)) * (10 * MiB // 256)
            assert (await a.publish(chan.channel, big, timeout=60)).seq == 1
            assert (await b.publish(chan.channel, big[::-1], timeout=60)).seq == 2
            got = await collect(b, chan.channel, 2)
            assert [m.payload for m in got] == [big, big[::-1]]
            with pytest.raises(P2PWorldError) as over:
                await b.publish(chan.channel, bytes(16 * MiB + 1))
            assert over.value.code == "PAYLOAD_TOO_LARGE"


async def test_an_oversized_submission_is_refused_alone_and_the_session_stays_up(
        tmp_path: Path) -> None:
    """An older or hostile writer sends a submission over the channel's limit anyway: the
    sequencer refuses that submission with a typed error; the session is not dropped."""
    from p2pworld.log.entry import Submission

    with trio.fail_after(60):
        async with open_node(cfg(tmp_path, "a")) as a, \
                open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
            await a.wait_peers(1)
            await b.wait_peers(1)
            chan = await a.open_channel("small")
            await b.wait_channel("small")
            session = b._sessions[a.node_id]
            # Bypass b's own check, as a writer of another build would.
            sub = Submission.create(b.identity.signer, channel=chan.channel, idem_key=b"big",
                                    payload=bytes(2 * MiB))
            req = next(b._hub._reqs)
            ev = b._outcome_events[req] = trio.Event()
            b._input(Called(effects=tuple(b._hub._submit(req, sub, "local", 0))))
            await ev.wait()
            out = b._outcomes.pop(req)
            assert isinstance(out, P2PWorldError) and out.code == "PAYLOAD_TOO_LARGE"
            assert b._sessions.get(a.node_id) is session and not session.closed.is_set()
            assert (await b.publish(chan.channel, b"ok")).seq == 1


async def test_an_offline_replica_catches_up_on_fifty_one_mebibyte_messages(
        tmp_path: Path) -> None:
    acks: list[Acknowledged] = []
    with trio.fail_after(180):
        async with open_node(cfg(tmp_path, "a")) as a:
            chan = await a.open_channel("backlog")
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                await b.wait_channel("backlog")
            payloads = [bytes([i]) * MiB for i in range(50)]
            for i, p in enumerate(payloads):
                r = await a.publish(chan.channel, p, key=b"m%d" % i)
                acks.append(Acknowledged(writer_key=a.identity.public_key, key=b"m%d" % i,
                                         payload=p, seq=r.seq))
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                got = await collect(b, chan.channel, 50)
                assert [m.payload for m in got] == payloads
                assert b.head(chan.channel) == a.head(chan.channel)
                # The sequencer paced the catch-up by what b reported stored.
                assert a.health()["errors"].get("BACKPRESSURE", 0) == 0
    anomalies = check_homes({"a": tmp_path / "a", "b": tmp_path / "b"}, chan.channel, acks)
    assert {k: v for k, v in anomalies.items() if v} == {}


async def test_lag_is_measured_against_the_head_the_sequencer_announced(
        tmp_path: Path) -> None:
    """A replica that cannot take entries (here: its disk refuses writes) shows the lag."""
    with trio.fail_after(60):
        async with open_node(cfg(tmp_path, "a")) as a:
            chan = await a.open_channel("lagging")
            for i in range(5):
                await a.publish(chan.channel, b"m%d" % i)
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                await b.wait_channel("lagging")
                b._hub.read_only = P2PWorldError("disk full for this test")
                b._hub.read_only.code = "STORE_FULL"
                for i in range(5):
                    await a.publish(chan.channel, b"n%d" % i)
                while True:
                    # The replica holds fewer entries than the sequencer announced: it knows.
                    (row,) = [c for c in b.health()["channels"] if c["name"] == "lagging"]
                    if row["lag"] > 0 and row["head_seq"] + row["lag"] == 10:
                        break
                    await trio.sleep(0.05)
                assert row["head_seq"] < 10
                b._input(Called(effects=tuple(b._hub.resume_writes())))
                got = await collect(b, chan.channel, 10)
                assert [m.seq for m in got] == list(range(1, 11))


async def test_an_outbox_row_that_can_never_be_sent_is_moved_aside(tmp_path: Path) -> None:
    """e2c769c refused to start (StoreCorrupt: outbox unreadable). Now the row is kept aside,
    a typed notice says so, and the rest of the outbox goes out."""
    from p2pworld import codec
    from p2pworld.log.entry import Submission

    with trio.fail_after(60):
        async with open_node(cfg(tmp_path, "a")) as a:
            chan = await a.open_channel("general")
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                await b.wait_channel("general")
                signer = b.identity.signer
            db = sqlite3.connect(tmp_path / "b" / "log.db")
            for key, payload in ((b"too-big", bytes(2 * MiB)), (b"fine", b"hello")):
                sub = Submission.create(signer, channel=chan.channel, idem_key=key,
                                        payload=payload)
                db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?)", (
                    chan.channel, key, codec.encode_frame(sub.to_wire()), "local"))
            db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?)",
                       (chan.channel, b"garbage", b"\x01\xff\xfe", "local"))
            db.commit()
            db.close()
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                codes = sorted([(await b.notices()).error.code for _ in range(2)])
                assert codes == ["DECODE_ERROR", "PAYLOAD_TOO_LARGE"]
                got = await collect(a, chan.channel, 1)
                assert got[0].payload == b"hello"
            db = sqlite3.connect(tmp_path / "b" / "log.db")
            aside = sorted(k for (k,) in db.execute("SELECT key FROM outbox_aside"))
            assert aside == [b"garbage", b"too-big"]
            assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
            db.close()


async def test_large_messages_cross_the_nostr_lane(tmp_path: Path) -> None:
    """e2c769c: a ~100 KB frame on the Nostr lane ended the node (NostrError from the session
    writer). Now a message travels in session parts, each in lane parts sized to the relay's
    limit (nostr-relay's default: 4,096 characters of content)."""
    from .relay import real_relay

    fallback = ChannelPolicy(nostr_fallback=True)
    with real_relay(tmp_path / "relay") as url, trio.fail_after(240):
        nostr = {"relays": [url], "transport": "forced-nostr"}
        async with open_node(cfg(tmp_path, "a", **nostr)) as a, \
                open_node(cfg(tmp_path, "b", **nostr)) as b:
            await a.wait_peers(1)
            await b.wait_peers(1)
            chan = await a.open_channel("wan", policy=fallback)
            await b.wait_channel("wan")
            medium, big = bytes(range(256)) * 400, bytes([7]) * MiB
            assert (await b.publish(chan.channel, medium, timeout=120)).seq == 1
            assert (await b.publish(chan.channel, big, timeout=180)).seq == 2
            got = await collect(b, chan.channel, 2)
            assert [m.payload for m in got] == [medium, big]
            assert {m.lane for m in got} == {"nostr"}
