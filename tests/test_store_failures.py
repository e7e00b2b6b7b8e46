"""The node's own disk: the one failure of the outside world that may end a node.

Real filesystems, made for the test (root, as CI runs): an ext4 image on a loop device that
the test shuts down (``EXT4_IOC_SHUTDOWN``: every read and write on it then fails with EIO),
and a tmpfs small enough to fill.

* An I/O error ends the node with a typed :class:`~p2pworld.errors.StoreError` naming the
  file; nothing acknowledged is lost (the acked entries are on the image, verified after it
  is mounted again).
* A full disk refuses writes with a typed ``STORE_FULL`` (nothing acknowledged that is not on
  disk), keeps serving reads and replication to others, and takes writes again once space
  returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
import threading
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from p2pworld import NodeConfig, P2PWorldError, open_node
from p2pworld.channel.effects import Persist
from p2pworld.io.log_store import LogStore
from p2pworld.testing import Acknowledged

from .homes import check_homes
from .test_node import collect

EXT4_IOC_SHUTDOWN = 0x8004587D
NOLOGFLUSH = 2


def cfg(home: Path, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(home=home, workspace="disk", mdns=False, keepalive=1.0, **kw)


@contextmanager
def ext4_image(tmp: Path, size_mb: int = 32) -> Iterator[Path]:
    img, mnt = tmp / "disk.img", tmp / "mnt"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", f"{size_mb}M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def shut_down(mnt: Path) -> None:
    """From now on every I/O on the filesystem fails with EIO (as a dying disk does)."""
    fd = os.open(mnt, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", NOLOGFLUSH))
    finally:
        os.close(fd)


@contextmanager
def small_tmpfs(tmp: Path, size_kb: int) -> Iterator[Path]:
    mnt = tmp / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_an_io_error_on_the_nodes_disk_ends_it_typed_and_loses_no_ack(
        tmp_path: Path) -> None:
    acked: list[int] = []
    with ext4_image(tmp_path) as mnt, trio.fail_after(60):
        with pytest.raises(P2PWorldError) as got:
            async with open_node(cfg(mnt / "a")) as a:
                chan = await a.open_channel("general")
                for i in range(20):
                    acked.append((await a.publish(chan.channel, b"m%d" % i)).seq)
                shut_down(mnt)
                for i in range(20, 40):
                    try:
                        acked.append((await a.publish(chan.channel, b"m%d" % i)).seq)
                    except P2PWorldError as e:
                        assert e.code in ("STORE_ERROR", "INDETERMINATE"), e
                        break
                await trio.sleep_forever()  # the node ends itself
        assert got.value.code == "STORE_ERROR", repr(got.value)
        assert "log.db" in got.value.message or "log.db" in str(got.value.details)
    # Everything acknowledged is on the image (mounted again, verified on open).
    with ext4_image_again(tmp_path) as mnt:
        store = LogStore(mnt / "a" / "log.db")
        try:
            (c,) = store.load_channels()
            assert [e.seq for e in c.entries][: len(acked)] == acked
        finally:
            store.close()


@contextmanager
def ext4_image_again(tmp: Path) -> Iterator[Path]:
    mnt = tmp / "mnt2"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(tmp / "disk.img"), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_a_full_disk_refuses_writes_typed_and_keeps_serving_reads(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path, 1024) as mnt, trio.fail_after(90):
        async with open_node(cfg(mnt / "a")) as a, \
                open_node(cfg(tmp_path / "b", peers=[a.url])) as b:
            chan = await a.open_channel("general")
            await b.wait_channel("general")
            acked = []
            with pytest.raises(P2PWorldError) as full:
                for _ in range(2000):
                    acked.append((await a.publish(chan.channel, os.urandom(2000))).seq)
            assert full.value.code == "STORE_FULL"
            assert acked == list(range(1, len(acked) + 1))
            health = a.health()
            assert health["errors"].get("STORE_FULL", 0) >= 1
            notice = await a.notices()
            assert notice.error.code == "STORE_FULL" and notice.scope == "store"
            # Reads go on, here and at the replica, up to what was acknowledged.
            got = await collect(a, chan.channel, len(acked))
            assert [m.seq for m in got] == acked
            assert [m.seq for m in await collect(b, chan.channel, len(acked))] == acked
            # Still refused while full, typed; the node has not ended.
            with pytest.raises(P2PWorldError) as again:
                await a.publish(chan.channel, b"more")
            assert again.value.code == "STORE_FULL"
            # A remote writer is told the disk is full, not where a's files are.
            with pytest.raises(P2PWorldError) as remote:
                await b.publish(chan.channel, b"from b", timeout=20)
            assert remote.value.code == "STORE_FULL", remote.value
            assert str(mnt) not in remote.value.message
            # Space comes back: writes resume on their own (the node probes).
            subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)
            with trio.fail_after(30):
                while True:
                    try:
                        r = await a.publish(chan.channel, b"after", key=b"after")
                        break
                    except P2PWorldError as e:
                        assert e.code == "STORE_FULL"
                        await trio.sleep(0.2)
            assert r.seq == len(acked) + 1
            got = await collect(b, chan.channel, r.seq)
            assert got[-1].payload == b"after"


async def test_a_batch_planned_before_a_failed_commit_is_refused_not_written(
        tmp_path: Path) -> None:
    """Found by an adversarial run (full tmpfs, 150 kB and 50 B publishes): when a commit
    failed for lack of space, the batch already planned behind it (its entries numbered after
    the failed ones, which the failure took back) was written and acknowledged anyway: a
    hole in the store, its seqs issued again once space returned (acknowledged writes
    overwritten), or the channel refused at the next start.

    Real sqlite: the big batch's commit is the one the disk refuses (a size limit at the
    file's size, so sqlite itself reports SQLITE_FULL), once the small batch is planned behind
    it; the limit is lifted as soon as that commit failed, so the small batch would fit."""
    acks: list[Acknowledged] = []
    home = tmp_path / "a"
    with trio.fail_after(60):
        async with open_node(cfg(home)) as a:
            chan = await a.open_channel("c")
            me = a.identity.public_key

            async def publish(key: bytes, payload: bytes) -> P2PWorldError | None:
                try:
                    r = await a.publish(chan.channel, payload, key=key)
                except P2PWorldError as e:
                    return e
                acks.append(Acknowledged(writer_key=me, key=key, payload=payload, seq=r.seq))
                return None

            assert await publish(b"first", b"first") is None
            store, real_apply = a._store, a._store.apply
            entered, armed = threading.Event(), [True]

            def apply(ops: object) -> None:
                if not armed or not any(isinstance(op, Persist) and op.entries
                                        for op in ops):  # type: ignore[attr-defined]
                    return real_apply(ops)
                armed.clear()
                entered.set()
                deadline = time.monotonic() + 20
                while a._storing < 2 and time.monotonic() < deadline:
                    time.sleep(0.002)  # the small batch is planned and waits behind this one
                pages = store.db.execute("PRAGMA page_count").fetchone()[0]
                store.db.execute(f"PRAGMA max_page_count={pages}")
                try:
                    return real_apply(ops)
                finally:
                    store.db.execute("PRAGMA max_page_count=1073741823")

            a._store.apply = apply  # type: ignore[method-assign]
            async with trio.open_nursery() as n:
                big: list[P2PWorldError | None] = []
                n.start_soon(lambda: _into(big, publish(b"big", os.urandom(300_000))))
                while not entered.is_set():
                    await trio.sleep(0.001)
                small = await publish(b"small", b"small")
            assert big[0] is not None and big[0].code == "STORE_FULL"
            # The small publish was planned on top of the big one: refused too, not written.
            assert small is not None and small.code == "STORE_FULL", small
            with trio.fail_after(30):  # space is back: the node takes writes again
                while await publish(b"after", b"after") is not None:
                    await trio.sleep(0.1)
    assert [a.seq for a in acks] == [1, 2]  # "after" takes the seq nothing durable holds
    found = check_homes({"a": home}, chan.channel, acks)
    assert found == {}, found


async def _into(out: list[P2PWorldError | None], aw: Awaitable[P2PWorldError | None]) -> None:
    out.append(await aw)


def fill(path: Path) -> None:
    """Write ``path`` until its file system is full."""
    with contextlib.suppress(OSError), open(path, "wb") as f:
        while True:
            f.write(bytes(4096))
            f.flush()


async def test_a_node_started_on_a_full_disk_fails_typed(tmp_path: Path) -> None:
    """Found by an adversarial run: a fresh home on a full disk gave an untyped
    ``OSError: [Errno 28]`` out of ``open_node`` (from writing the home's lock file), and
    the lock file stayed open."""
    with small_tmpfs(tmp_path, 2048) as mnt:
        fill(mnt / "filler")
        with pytest.raises(P2PWorldError) as err:
            async with open_node(cfg(mnt / "fresh")):
                pass
        assert err.value.code in ("STORE_FULL", "IDENTITY_ERROR"), err.value
        assert str(mnt) in err.value.message
        os.unlink(mnt / "filler")  # space is back: the same home starts
        async with open_node(cfg(mnt / "fresh")) as a:
            assert (await a.publish((await a.open_channel("c")).channel, b"x")).seq == 1


async def test_an_existing_home_on_a_full_disk_fails_store_full(tmp_path: Path) -> None:
    """Found by an adversarial run: a home that already held a log, opened again once its
    disk was full, failed with ``STORE_ERROR`` ("disk I/O error": sqlite reports growing the
    WAL index on a full disk as ``SQLITE_IOERR_SHMSIZE``), so an operator was told the disk
    was failing when it was only full. It is ``STORE_FULL``, and the home starts again, with
    what it held, once space is back."""
    with small_tmpfs(tmp_path, 2048) as mnt:
        async with open_node(cfg(mnt / "home")) as a:
            ch = (await a.open_channel("c")).channel
            await a.publish(ch, b"kept")
        fill(mnt / "filler")
        with pytest.raises(P2PWorldError) as err:
            async with open_node(cfg(mnt / "home")):
                pass
        assert err.value.code == "STORE_FULL", err.value
        assert str(mnt) in err.value.message
        os.unlink(mnt / "filler")
        async with open_node(cfg(mnt / "home")) as a:
            assert (await a.publish(ch, b"again")).seq == 2


async def test_a_channel_opened_as_the_disk_fills_is_refused_typed(tmp_path: Path) -> None:
    """Found by an adversarial run: ``open_channel`` returned the record of a channel whose
    record the full disk refused (``channels()`` did not list it; publishing on it gave
    ``UNKNOWN_CHANNEL``)."""
    async with open_node(cfg(tmp_path / "a")) as a:
        await a.open_channel("first")
        db = a._store.db
        db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(P2PWorldError) as full:
            for i in range(200):  # until a record does not fit in the pages left
                await a.open_channel(f"c{i}", policy=None)
        assert full.value.code == "STORE_FULL"
        assert [r.name for r in a.channels()] == ["first", *[f"c{j}" for j in range(i)]]
