"""The Nostr lane against a real relay: forced-Nostr channel traffic with no direct lane at
all, fallback and return in mixed mode (strict precedence), per-channel policy, and the
policy that only narrows."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import trio

from p2pworld import NodeConfig, open_node
from p2pworld.codec import decode
from p2pworld.errors import PolicyDenied
from p2pworld.log.entry import ChannelPolicy
from p2pworld.nostr.lane_frames import LANE_KIND

from .relay import black_hole, real_relay, sdk_fetch
from .test_node import exchange_ordered

FALLBACK = ChannelPolicy(nostr_fallback=True)


def cfg(tmp: Path, name: str, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(home=tmp / name, workspace="lane", mdns=False, keepalive=2.0, **kw)


async def test_forced_nostr_passes_the_channel_test_with_no_direct_lane(tmp_path: Path) -> None:
    with real_relay(tmp_path / "relay") as url, trio.fail_after(120):
        # No mDNS, no static peers, no rendezvous: the nodes find each other through their
        # presence events on the relay and talk only through it.
        async with open_node(cfg(tmp_path, "a", relays=[url], transport="forced-nostr")) as a, \
                open_node(cfg(tmp_path, "b", relays=[url], transport="forced-nostr")) as b:
            await a.wait_peers(1)
            await b.wait_peers(1)
            chan = await a.open_channel("general", policy=FALLBACK)
            await exchange_ordered(a, b, chan.channel, lane="nostr")
            t = b.health()["transport"]
            assert t["mode"] == "forced-nostr"
            assert t["delivered"]["nostr"] >= 50 and t["delivered"]["direct"] == 0
            assert t["fallback_ratio"] == 1.0 and t["alert"]
            # What the relay holds is NIP-44 ciphertext for the peer: nostr-sdk (an
            # implementation we did not write) verifies and decrypts it with a's key, and
            # inside is only our lane framing around the session's own ciphertext.
            got = sdk_fetch(url, {"kinds": [LANE_KIND], "#p": [a.identity.nostr.public_hex],
                                  "limit": 20}, secret=a.identity.nostr.secret)
            assert got and all(e["verified"] for e in got)
            for e in got:
                frame = decode(base64.b64decode(str(e["plaintext"])))
                assert isinstance(frame, dict) and frame["v"] == 1
                assert b"general" not in frame["d"]  # session-encrypted, not readable
            # A subscriber that arrives later catches up on the whole backlog through the
            # relay, from its checkpoint (zero), and then follows live.
            async with open_node(cfg(tmp_path, "c", relays=[url],
                                     transport="forced-nostr")) as c:
                await c.wait_channel("general")
                late = [m async for m in _take(c.messages(chan.channel), 50)]
                assert [m.seq for m in late] == list(range(1, 51))
                assert {m.lane for m in late} == {"nostr"}
                assert [m.entry_hash for m in late] == [
                    m.entry_hash for m in [x async for x in _take(a.messages(chan.channel),
                                                                  50)]]


async def test_mixed_mode_falls_back_to_nostr_and_returns_to_direct(tmp_path: Path) -> None:
    """Precedence: direct, a direct retry, then Nostr; back to direct when it returns. A
    channel whose policy forbids the fallback never crosses the relay."""
    from p2pworld.transport.candidate import from_urls

    from .tools.proxy import TcpProxy

    with real_relay(tmp_path / "relay") as url, trio.fail_after(180):
        async with open_node(cfg(tmp_path, "a", relays=[url])) as a, \
                open_node(cfg(tmp_path, "b", relays=[url])) as b, \
                TcpProxy(target=("127.0.0.1", a.listen_port)) as proxy:
            # b reaches a only through a proxy we can cut.
            b._on_candidate("test", from_urls(a.node_id, "lane", [proxy.url], source="test"))
            # Whatever came up first (a, with no route to b, may reach it over the relay),
            # the direct session wins: it replaces a Nostr-lane one, never the reverse.
            while not (b.health()["peers"] and b.health()["peers"][0]["lane"] == "direct"):
                await b._peers_changed.wait()
            open_ch = await a.open_channel("open", policy=FALLBACK)
            closed_ch = await a.open_channel("direct-only")
            await b.wait_channel("open")
            await b.wait_channel("direct-only")
            for i in range(20):
                await b.publish(open_ch.channel, f"d{i}".encode())
            # Cut the direct lane: b retries direct, then moves to the Nostr lane.
            proxy.cut()
            while not (b.health()["peers"] and b.health()["peers"][0]["lane"] == "nostr"):
                await b._peers_changed.wait()
            # Whoever dialled it first tried the direct lane twice before the relay.
            assert max(b._core.peers.peers[a.node_id].direct_failures,  # type: ignore[union-attr]
                       a._core.peers.peers[b.node_id].direct_failures) >= 2  # type: ignore[union-attr]
            r = await b.publish(open_ch.channel, b"via-nostr", key=b"k-n")
            assert r.seq == 21
            # The direct-only channel does not cross the relay: its publish stays
            # indeterminate (its key is kept in the durable outbox)...
            from p2pworld.errors import PublishTimeout
            with pytest.raises(PublishTimeout):
                await b.publish(closed_ch.channel, b"must-wait", key=b"k-d", timeout=3)
            assert b.statistics().errors.get("LANE_FORBIDDEN_BY_CHANNEL_POLICY", 0) >= 1
            # ... and the direct lane returns: traffic moves back, the outbox resubmits.
            proxy.restore()
            while b.health()["peers"][0]["lane"] != "direct":
                await b._peers_changed.wait()
            got = [m.payload async for m in _take(b.messages(closed_ch.channel), 1)]
            assert got == [b"must-wait"]
            for i in range(20):
                await b.publish(open_ch.channel, f"e{i}".encode())
            msgs = [m async for m in _take(b.messages(open_ch.channel), 41)]
            assert [m.seq for m in msgs] == list(range(1, 42))
            t = b.health()["transport"]
            assert t["mode"] == "primary-with-fallback"
            assert t["delivered"]["nostr"] >= 1 and t["delivered"]["direct"] >= 40
            assert 0 < t["fallback_ratio"] < 0.1


async def _take(it, n: int):  # type: ignore[no-untyped-def]
    k = 0
    async for m in it:
        yield m
        k += 1
        if k == n:
            return


async def test_primary_only_never_uses_the_relay_and_policy_only_narrows(
        tmp_path: Path) -> None:
    with real_relay(tmp_path / "relay") as url, trio.fail_after(60):
        async with open_node(cfg(tmp_path, "a", relays=[url], transport="primary-only")) as a:
            assert a._nostr is not None and a._nostr.lane is None
            assert a.health()["transport"]["mode"] == "primary-only"
    # A policy without the Nostr lane turns the default mode into primary-only and refuses
    # forced-nostr outright: local config cannot widen it.
    from p2pworld.core.lanes import resolve_mode
    assert resolve_mode("primary-with-fallback", {"fallback": ["rendezvous"]}) == "primary-only"
    with pytest.raises(PolicyDenied):
        resolve_mode("forced-nostr", {"fallback": ["rendezvous"]})


async def test_a_peers_nip65_relays_join_the_pool(tmp_path: Path) -> None:
    """Relays for a peer come from config and from its NIP-65 list: a publishes its lane
    frames to b on the relay only b listed too."""
    with real_relay(tmp_path / "r1") as r1, real_relay(tmp_path / "r2") as r2, \
            trio.fail_after(90):
        async with open_node(cfg(tmp_path, "a", relays=[r1], transport="forced-nostr")) as a, \
                open_node(cfg(tmp_path, "b", relays=[r1, r2], transport="forced-nostr")) as b:
            await a.wait_peers(1)
            await b.wait_peers(1)
            assert a._nostr is not None
            while not (r2 in a._nostr.pool.health
                       and a._nostr.pool.health[r2].published_ok > 0):
                await trio.sleep(0.05)
            assert a._nostr.peer_relays[b.identity.nostr.public] == [r1, r2]


async def test_a_dead_relay_does_not_slow_the_nostr_lane(tmp_path: Path) -> None:
    async with black_hole() as dead:
        with real_relay(tmp_path / "relay") as url, trio.fail_after(90):
            relays = [dead, url]
            async with open_node(cfg(tmp_path, "a", relays=relays, transport="forced-nostr")) as a, \
                    open_node(cfg(tmp_path, "b", relays=relays, transport="forced-nostr",
                                  peers=[a.url])) as b:
                # b knows a's direct address, but forced-Nostr mode never uses it.
                await b.wait_peers(1)
                chan = await a.open_channel("general", policy=FALLBACK)
                await b.wait_channel("general")
                # Each lane frame goes on as soon as one relay has it: the dead relay (which would
                # hold every publish for its 10 s timeout) costs nothing.
                for i in range(20):
                    with trio.fail_after(3):
                        r = await b.publish(chan.channel, b"m%d" % i)
                    assert r.seq == i + 1
                assert b.health()["peers"][0]["lane"] == "nostr"
