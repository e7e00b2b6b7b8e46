"""Durability: acks leave only after fsync, kill -9 loses no acknowledged entry, corrupted
log files are refused, never served (not even as a shorter log)."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings, strategies as st

from p2pworld import NodeConfig, codec, open_node
from p2pworld.channel.hub import Checkpoint
from p2pworld.cli.main import main as cli_main
from p2pworld.errors import StoreCorrupt, UnsupportedVersion
from p2pworld.io.home import NodeHome
from p2pworld.io.log_store import LogStore
from p2pworld.testing import Acknowledged, MemoryLogStore
from p2pworld.wire import Ack, Stored

from .conftest import ROOT
from .homes import check_homes
from .netns import read_event


def cfg(tmp: Path, name: str, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(home=tmp / name, workspace="test", mdns=False, **kw)


class SentAfterPersist:
    """A node tracer: every sent message of ``kind`` (``Ack``, ``Stored``) must name a
    ``(channel, seq)`` the node had already persisted (fsynced) when it left."""

    def __init__(self, kind: type[Ack] | type[Stored]) -> None:
        self.kind = kind
        self.persisted: set[tuple[bytes, int]] = set()
        self.sent: list[int] = []
        self.violations: list[int] = []

    def __call__(self, what: str, arg: object) -> None:
        if what == "persist":
            self.persisted.update(arg)  # type: ignore[call-overload]
        elif what == "send" and isinstance(arg, self.kind):
            self.sent.append(arg.seq)
            if (arg.channel, arg.seq) not in self.persisted:
                self.violations.append(arg.seq)


async def test_ack_leaves_only_after_its_entry_is_persisted(tmp_path: Path) -> None:
    check = SentAfterPersist(Ack)
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "a")) as a:
            a._tracer = check
            chan = await a.open_channel("general")
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                await b.wait_channel("general")
                async with trio.open_nursery() as n:
                    for i in range(50):
                        n.start_soon(b.publish, chan.channel, b"m%d" % i)
    assert len(check.sent) == 50 and check.violations == []


async def test_replica_vouches_for_entries_only_after_they_are_persisted(tmp_path: Path
                                                                          ) -> None:
    # A replica's Stored (what a "replicated" ack counts) leaves only after its entries are
    # on its disk.
    check = SentAfterPersist(Stored)
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "a")) as a:
            chan = await a.open_channel("general")
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                b._tracer = check
                await b.wait_channel("general")
                await a.wait_peers(1)
                async with trio.open_nursery() as n:
                    for i in range(30):
                        n.start_soon(functools.partial(a.publish, chan.channel, b"m%d" % i,
                                                       durability="replicated"))
                res = await a.publish(chan.channel, b"last", durability="replicated")
                # b only reads: it joined the voters (one entry) when a asked it to.
                assert res.strength == "replicated" and res.seq == 32
    assert check.sent and max(check.sent) == 32 and check.violations == []


async def test_checkpoints_and_node_scoped_subscription_resume(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "a")) as a:
            c1 = await a.open_channel("one")
            c2 = await a.open_channel("two")
            for i in range(3):
                await a.publish(c1.channel, b"1-%d" % i)
                await a.publish(c2.channel, b"2-%d" % i)
            sub = a.subscribe()
            got = [await sub.__anext__() for _ in range(6)]
            assert sorted((m.channel, m.seq) for m in got) == sorted(
                (c, s) for c in (c1.channel, c2.channel) for s in (1, 2, 3))
            await a.ack(c1.channel, 3)
            await a.ack(c2.channel, 1)
        async with open_node(cfg(tmp_path, "a")) as a:
            assert a.checkpoint(c1.channel) == Checkpoint(
                channel=c1.channel, epoch=1, seq=3, head_hash=a.head(c1.channel)[1])
            await a.publish(c1.channel, b"1-3")
            sub = a.subscribe()
            got = [await sub.__anext__() for _ in range(3)]
            assert sorted((m.channel, m.seq) for m in got) == sorted(
                [(c2.channel, 2), (c2.channel, 3), (c1.channel, 4)])


def test_kill_9_during_a_burst_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    home = tmp_path / "seq"
    proc = subprocess.Popen([sys.executable, "-m", "tests.tools.burst", str(home), "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        ready = read_event(proc, "ready", 30)
        acked: dict[int, int] = {}
        for _ in range(400):
            ev = read_event(proc, "ack", 30)
            acked[ev["seq"]] = ev["key"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
    store = LogStore(home / "log.db")
    (chan,) = store.load_channels()  # verifies the chain from genesis
    store.close()
    assert chan.record.channel.hex() == ready["channel"]
    by_seq = {e.seq: e for e in chan.entries}
    assert len(acked) == 400
    for seq, key in acked.items():
        assert by_seq[seq].payload == b"payload %d" % key
    assert [e.seq for e in chan.entries] == list(range(1, len(chan.entries) + 1))
    assert len(chan.entries) >= max(acked)
    rc, out = log_verify(home / "log.db")
    assert rc == 0 and out["entries"] == len(chan.entries)
    me = NodeHome(home).load().public_key
    anomalies = check_homes({"seq": home}, chan.record.channel, [
        Acknowledged(writer_key=me, key=b"k%d" % key, payload=b"payload %d" % key, seq=seq)
        for seq, key in acked.items()])
    assert {k: v for k, v in anomalies.items() if v} == {}


@pytest.fixture(scope="module")
def sample_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sample")

    async def make() -> None:
        async with open_node(cfg(tmp, "a")) as a:
            chan = await a.open_channel("general")
            for i in range(40):
                await a.publish(chan.channel, b"entry %d" % i)
            # A remote writer's burst: entries signed in batches, carrying Merkle proofs.
            async with open_node(cfg(tmp, "b", peers=[a.url])) as b:
                await b.wait_channel("general")
                await b.wait_peers(1)
                async with trio.open_nursery() as n:
                    for i in range(40):
                        n.start_soon(b.publish, chan.channel, b"burst %d" % i)

    trio.run(make)
    db = tmp / "a" / "log.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return db


def log_verify(path: Path, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    """``p2pworld log verify PATH --json`` in-process."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["log", "verify", str(path), "--json", *extra])
    return rc, json.loads(buf.getvalue())


def _entries(path: Path) -> list[bytes]:
    s = LogStore(path)
    try:
        return [e.hash for c in s.load_channels() for e in c.entries]
    finally:
        s.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_log_files_are_refused_never_served(
        sample_log: Path, tmp_path: Path, data: st.DataObject) -> None:
    original = _entries(sample_log)
    raw = bytearray(sample_log.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        off = data.draw(st.integers(0, 2**31)) % len(raw)  # independent of the file's size
        raw[off] ^= data.draw(st.integers(1, 255))
    bad = tmp_path / f"bad-{os.getpid()}-{data.draw(st.integers(0, 10**9))}.db"
    bad.write_bytes(bytes(raw))
    rc, report = log_verify(bad)
    try:
        got = _entries(bad)
    except (StoreCorrupt, UnsupportedVersion):
        assert rc == 1  # log verify refuses what the node refuses
        return
    # Served only whole: never a prefix (sqlite commits are atomic, so a shorter log is
    # damage), and log verify vouches for exactly the same.
    assert got == original
    assert rc == 0 and report["entries"] == len(original)
    assert report["head_hash"] == original[-1].hex()
    bad.unlink()


def test_log_verify_accepts_real_logs_and_rejects_tampering(sample_log: Path,
                                                             tmp_path: Path) -> None:
    rc, out = log_verify(sample_log)
    assert rc == 0 and out["entries"] == 80 and out["chain_ok"] and out["signatures_ok"]
    store = LogStore(sample_log)
    (chan,) = store.load_channels()
    store.close()
    # Both signature forms are covered: alone (the owner's) and in batches (the burst's).
    proofs = [e.sender_proof for e in chan.entries]
    assert proofs[0] is None and any(p is not None and p.size > 1 for p in proofs)
    assert out["head_hash"] == chan.entries[-1].hash.hex()
    rc, _ = log_verify(sample_log, "--genesis", chan.record.genesis_hash.hex())
    assert rc == 0
    rc, out = log_verify(sample_log, "--genesis", "00" * 32)
    assert rc == 1 and out["genesis_ok"] is False
    # A well-formed but altered entry (signed alone, or in a batch): the writer signature
    # fails and the chain breaks at its successor.
    for i in (10, 60):
        bad = tmp_path / f"tampered-{i}.db"
        shutil.copy(sample_log, bad)
        e = chan.entries[i]
        forged = replace(e, payload=b"forged")
        con = sqlite3.connect(bad)
        con.execute("UPDATE entries SET hash=?, body=? WHERE seq=?",
                    (forged.hash, codec.encode_frame(forged.to_wire()), e.seq))
        con.commit()
        con.close()
        rc, out = log_verify(bad)
        assert rc == 1 and not out["signatures_ok"] and not out["chain_ok"]
        with pytest.raises(StoreCorrupt):
            _entries(bad)


def test_an_undecodable_last_row_is_damage_not_a_torn_write(tmp_path: Path) -> None:
    def make(store: MemoryLogStore) -> bytes:
        from p2pworld.channel.hub import Persist
        from p2pworld.identity import Ed25519Signer
        from p2pworld.log.entry import ChannelRecord, Submission
        from p2pworld.log.sequencer import Sequencer
        owner = Ed25519Signer(bytes([1]) * 32)
        s = Sequencer.create(ChannelRecord.create(owner, workspace="w", name="t",
                                                  created_at=0), owner)
        for i in range(5):
            s.submit(Submission.create(owner, channel=s.channel, idem_key=b"%d" % i,
                                       payload=b"%d" % i), now_ms=0)
        store.write([Persist(record=s.record, entries=tuple(s.take_unsynced()))])
        return s.channel

    store = MemoryLogStore()
    ch = make(store)
    # sqlite commits are atomic and acks leave after the commit: a half-written last row
    # cannot come from a crash, and dropping it would drop an acknowledged entry.
    torn = store.crash()
    h, body = torn.channels[ch].rows[5]
    torn.channels[ch].rows[5] = (h, body[: len(body) // 2])
    with pytest.raises(StoreCorrupt, match="entry 5 unreadable"):
        torn.load_channels()
    damaged = store.crash()
    row = damaged.channels[ch].rows[3]
    damaged.channels[ch].rows[3] = (row[0], row[1][:-5] + b"\x00" * 5)
    with pytest.raises(StoreCorrupt):
        damaged.load_channels()


async def test_state_hash_is_the_api_s_and_log_verify_s(tmp_path: Path) -> None:
    """``node.state_hash(channel)`` (issue 15: before, only the command line had it): equal on
    two nodes at one head, and the hash ``p2pworld log verify`` prints from the store."""
    cfg = {"workspace": "sh", "mdns": False, "keepalive": 1.0}
    async with open_node(NodeConfig(home=tmp_path / "a", **cfg)) as a, \
            open_node(NodeConfig(home=tmp_path / "b", peers=[a.url], **cfg)) as b:
        rec = await a.open_channel("c")
        await b.wait_channel("c", timeout=30)
        for i in range(5):
            await b.publish(rec.channel, b"m%d" % i, key=b"k%d" % i, timeout=30)
        with trio.fail_after(30):
            while b.head(rec.channel) != a.head(rec.channel):
                await trio.sleep(0.02)
        assert a.state_hash(rec.channel) == b.state_hash(rec.channel)
        mine = a.state_hash(rec.channel)
    rc, out = log_verify(tmp_path / "a" / "log.db", "--channel", rec.channel.hex())
    assert rc == 0 and out["state_hash"] == mine.hex()
