"""The relay client against a real relay: publish with OK, duplicates, refusals, live and
resumed subscriptions, and a dead relay that never answers."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import trio

from p2pworld.io.nostr_relay import open_relay_pool
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey

from .relay import black_hole, free_port, real_relay

KEY = NostrKey(bytes(31) + b"\x09")


def note(i: int, created_at: int = 1_800_000_000) -> Event:
    return Event.create(KEY, kind=1, content=f"note {i}", tags=[["t", "p2pworld"]],
                        created_at=created_at + i, aux=bytes(32))


async def test_publish_subscribe_duplicate_and_refusal(tmp_path: Path) -> None:
    with real_relay(tmp_path / "r") as url, trio.fail_after(30):
        async with open_relay_pool([url], key=KEY) as pool, \
                pool.subscribe({"kinds": [1], "#t": ["p2pworld"]}) as subscription:
            first = await pool.publish(note(1))
            assert first[url] is not None and first[url].ok
            again = await pool.publish(note(1))
            assert again[url] is not None and (again[url].ok or
                                               again[url].prefix == "duplicate")
            # A forged event (valid shape, another key's signature) is refused by the relay.
            other = Event.create(NostrKey(bytes(31) + b"\x0a"), kind=1, content="x", tags=[],
                                 created_at=1_800_000_000, aux=bytes(32))
            forged = Event(id=other.id, pubkey=KEY.public.hex(), created_at=other.created_at,
                           kind=1, tags=(), content="x", sig=other.sig)
            refused = await pool.publish(forged)
            assert refused[url] is not None and not refused[url].ok
            got = await subscription.__anext__()
            assert got == note(1)
            assert pool.health[url].published_ok >= 1 and pool.health[url].state == "connected"


async def test_subscription_resumes_after_the_relay_restarts(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "r"
    with trio.fail_after(60):
        async with open_relay_pool([f"ws://127.0.0.1:{port}"]) as pool, \
                pool.subscribe({"kinds": [1]}) as sub:
            with real_relay(store, port) as url:
                while pool.health[url].state != "connected":
                    await trio.sleep(0.05)
                await pool.publish(note(1))
                assert (await sub.__anext__()).content == "note 1"
            # The relay is gone; another client publishes once it is back (same storage).
            with real_relay(store, port) as url:
                async with open_relay_pool([url]) as other:
                    assert (await other.publish(note(2)))[url] is not None
                # Our pool reconnects by itself and resumes the subscription with `since`.
                got = await sub.__anext__()
                assert got.content == "note 2"
                assert pool.health[url].connects >= 2


async def test_a_dead_relay_does_not_block_publishing_to_a_live_one(tmp_path: Path) -> None:
    async with black_hole() as dead:
        with real_relay(tmp_path / "r") as url, trio.fail_after(30):
            async with open_relay_pool([dead, url]) as pool:
                t0 = trio.current_time()
                out = await pool.publish(note(5), timeout=3.0)
                assert out[url] is not None and out[url].ok and out[dead] is None
                assert trio.current_time() - t0 <= 3.5
                assert pool.health[dead].state != "connected"


async def test_bridge_outbox_publishes_to_every_relay_and_a_dead_one_only_delays_itself(
        tmp_path: Path) -> None:
    from p2pworld.io.nostr_outbox import Outbox
    from p2pworld.io.nostr_relay import Bridge

    async with black_hole() as dead:
        with real_relay(tmp_path / "r") as url, trio.fail_after(40):
            box = Outbox(tmp_path / "bridge.db", relays=[url, dead])
            events = [note(10 + i) for i in range(20)]
            for ev in events:
                assert box.enqueue(ev, source=f"chan:{ev.content}", entry_hash=b"h" * 32, now=0)
            assert not box.enqueue(events[0], source="again", entry_hash=b"h" * 32, now=0)
            async with open_relay_pool([url, dead]) as pool, trio.open_nursery() as n:
                bridge = Bridge(box, pool, timeout=2.0)
                n.start_soon(bridge.run)
                t0 = trio.current_time()
                while any(box.state(ev.id)[url] != "published" for ev in events):
                    await trio.sleep(0.05)
                # The live relay got all 20 while the dead one held nothing up.
                assert trio.current_time() - t0 < 5
                assert all(box.state(ev.id)[dead] == "due" for ev in events)
                # The outbox survives a restart: what is not published is still due.
                n.cancel_scope.cancel()
            box.close()
            again = Outbox(tmp_path / "bridge.db", relays=[url, dead])
            assert again.pending() == 20 and again.events_for(f"chan:{events[3].content}") == [
                events[3].id]
            again.close()
            # And the relay really has them.
            want = {e.id for e in events}
            async with open_relay_pool([url]) as pool, pool.subscribe({"kinds": [1]}) as sub:
                got: set[str] = set()
                while not want <= got:
                    got.add((await sub.__anext__()).id)


def test_the_outbox_mirrors_an_entry_once_and_refuses_other_formats(tmp_path: Path) -> None:
    import sqlite3

    import pytest

    from p2pworld.errors import UnsupportedVersion
    from p2pworld.io.nostr_outbox import Outbox

    box = Outbox(tmp_path / "b.db", relays=["ws://r"])
    first = Event.create(KEY, kind=7000, content="", tags=[["status", "success"]],
                         created_at=1, aux=bytes(32))
    again = Event.create(KEY, kind=7000, content="", tags=[["status", "success"], ["x", "1"]],
                         created_at=2, aux=bytes(32))
    other_kind = Event.create(KEY, kind=6001, content="r", tags=[], created_at=1, aux=bytes(32))
    assert box.enqueue(first, source="compute:c:r1", entry_hash=b"h" * 32, now=0)
    # The same log entry mirrored again (say after a restart, with a different id): refused.
    assert not box.enqueue(again, source="compute:c:r1", entry_hash=b"h" * 32, now=1)
    assert box.enqueue(other_kind, source="compute:c:r1", entry_hash=b"h" * 32, now=1)
    assert box.first_events("compute:") == {"compute:c:r1": first.id}
    box.close()
    db = sqlite3.connect(tmp_path / "b.db")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(UnsupportedVersion):
        Outbox(tmp_path / "b.db", relays=["ws://r"])


async def test_nip42_the_pool_authenticates_to_a_relay_that_requires_it(tmp_path: Path) -> None:
    with real_relay(tmp_path / "r", writers=[KEY.public_hex]) as url, trio.fail_after(30):
        # Without a key the pool cannot answer the challenge: the relay refuses the event.
        async with open_relay_pool([url]) as anon:
            refused = (await anon.publish(note(40)))[url]
            assert refused is not None and not refused.ok
        # With the writer's key it answers AUTH (NIP-42) and the same event is accepted.
        async with open_relay_pool([url], key=KEY) as pool:
            while not pool.health[url].authed:
                await trio.sleep(0.05)
            got = (await pool.publish(note(40)))[url]
            assert got is not None and got.ok, got


async def test_an_unexpected_failure_of_a_relay_connection_is_counted_not_swallowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """e2c769c cancelled the connection's nursery before closing the stream, and the close
    (a checkpoint) raised Cancelled over whatever error was on its way out: a failure of a
    relay connection vanished, the connection redialled, nothing was counted."""
    from p2pworld.io.nostr_relay import RelayPool, open_relay_pool

    real_writer = RelayPool._writer
    failed = []

    @functools.wraps(real_writer)
    async def writer(self, url, ws):  # type: ignore[no-untyped-def]
        if not failed:
            failed.append(url)
            raise RuntimeError("a bug in the writer")
        await real_writer(self, url, ws)

    monkeypatch.setattr(RelayPool, "_writer", writer)
    with real_relay(tmp_path / "relay") as url, trio.fail_after(60):
        async with open_relay_pool([url]) as pool:
            while not (failed and pool.health[url].connects >= 2):
                await trio.sleep(0.05)
            h = pool.health[url]
            assert h.failures >= 1 and h.last_error == "INTERNAL_ERROR"
