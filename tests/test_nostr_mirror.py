"""Mirrors and the bridge outbox through a node, against a real relay, checked by nostr-sdk:
NIP-89 capability ads, a NIP-90 compute round, NIP-38 presence, NIP-65 relay lists; the
id mapping both ways; the bridge-adapter subscription; a relay outage that loses nothing and
duplicates nothing; a black-hole relay that does not slow the primary lane."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pworld import NodeConfig, open_node
from p2pworld.errors import LocalProtocolError
from p2pworld.world.doc import CapabilityAd

from .relay import black_hole, free_port, real_relay, sdk_fetch

AD = CapabilityAd(tools=("echo",), job_kinds=("5001",), expires_ms=2**62)


def cfg(tmp: Path, name: str, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(home=tmp / name, workspace="mirror", mdns=False, keepalive=2.0, **kw)


async def drained(node) -> None:  # type: ignore[no-untyped-def]
    while node.bridge.pending():
        await trio.sleep(0.05)


async def test_ads_and_a_compute_round_appear_as_valid_nip89_nip90_events(
        tmp_path: Path) -> None:
    with real_relay(tmp_path / "relay") as url, trio.fail_after(90):
        async with open_node(cfg(tmp_path, "req", relays=[url])) as req, \
                open_node(cfg(tmp_path, "prov", peers=[req.url], capabilities=AD,
                              relays=[url])) as prov:
            await req.wait_member(prov.node_id)
            ch, rid = await req.request_compute(b"hello", kind="5001", needs=("echo",))
            await prov.compute_feed().__anext__()
            await prov.offer_compute(ch, rid, price=2)
            await prov.wait_compute(ch, rid, lambda r: r.assignee == prov.node_id)
            await prov.accept_compute(ch, rid)
            await prov.complete_compute(ch, rid, b"HELLO")
            assert (await req.wait_compute(ch, rid)).phase == "success"
            link = f"compute:{ch.hex()}:{rid}"
            while len(req.bridge_events(link)) < 4:  # request, processing, success, result
                await trio.sleep(0.05)
            await drained(req)
            await drained(prov)
            rq, pv = req.identity.nostr.public_hex, prov.identity.nostr.public_hex

            # The provider's ad: NIP-89 handler information, verified by nostr-sdk.
            (ad,) = sdk_fetch(url, {"kinds": [31990], "authors": [pv]})
            assert ad["verified"] and ["k", "5001"] in ad["tags"]
            assert ["d", prov.node_id.hex()] in ad["tags"]
            assert ["p2pworld", f"ad:{prov.node_id.hex()}"] in ad["tags"]

            # The compute round: job request, feedback, result, all linked to the log.
            evs = sdk_fetch(url, {"kinds": [5001, 6001, 7000], "authors": [rq]})
            assert evs and all(e["verified"] for e in evs)
            by_kind = {k: [e for e in evs if e["kind"] == k] for k in (5001, 6001, 7000)}
            (request,) = by_kind[5001]
            assert ["i", "hello", "text"] in request["tags"]
            assert ["param", "need", "echo"] in request["tags"]
            assert ["p2pworld", link] in request["tags"]
            statuses = sorted(next(t[1] for t in e["tags"] if t[0] == "status")
                              for e in by_kind[7000])
            assert statuses == ["processing", "success"]
            assert all(["e", request["id"]] in e["tags"] for e in by_kind[7000] + by_kind[6001])
            assert all(["p", pv] in e["tags"] for e in by_kind[7000])
            (result,) = by_kind[6001]
            assert result["content"] == "HELLO"
            # Every event carries the hash of the log entry it came from, and the mapping
            # holds both ways.
            log = req._hub.log(ch)
            hashes = {e.hash.hex() for e in log.read(0, 10_000)}
            for e in evs:
                (h,) = [t[1] for t in e["tags"] if t[0] == "p2pworld-hash"]
                assert h in hashes
                assert req.bridge_source(str(e["id"])) == link
            assert set(req.bridge_events(link)) == {str(e["id"]) for e in evs}

            # Presence (NIP-38, addressable) and relay lists (NIP-65).
            pres = sdk_fetch(url, {"kinds": [30315], "authors": [rq, pv]})
            assert {p["pubkey"] for p in pres} == {rq, pv}
            assert all(p["verified"] and p["content"] == "online" for p in pres)
            lists = sdk_fetch(url, {"kinds": [10002], "authors": [rq]})
            assert lists and ["r", url] in lists[0]["tags"]


async def test_relay_outage_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    with trio.fail_after(90):
        async with open_node(cfg(tmp_path, "a", relays=[url])) as a:
            feed = a.bridge_feed()
            # The relay is down: every mirror waits in the durable outbox.
            for i in range(5):
                await a.advertise(CapabilityAd(tools=(f"t{i}",), job_kinds=("5001",),
                                               expires_ms=2**62))
            assert a._nostr is not None and a._nostr.outbox.pending() >= 5
            ids = a.bridge_events(f"ad:{a.node_id.hex()}")
            assert len(ids) == 5
            seen_due = set()
            while len(seen_due) < 5:
                c = await feed.__anext__()
                if c.state == "due" and c.source.startswith("ad:"):
                    seen_due.add(c.event_id)
            # The relay comes up: the bridge drains with backoff, the feed says so.
            with real_relay(tmp_path / "relay", port):
                published = set()
                while not set(ids) <= published:
                    c = await feed.__anext__()
                    if c.state == "published":
                        published.add(c.event_id)
                await drained(a)
                got = sdk_fetch(url, {"kinds": [31990], "authors": [
                    a.identity.nostr.public_hex]})
                # Each event is there at most once; the newest is there (31990 is addressable:
                # a relay may keep only the newest, this one keeps all five).
                got_ids = [str(g["id"]) for g in got]
                assert len(got_ids) == len(set(got_ids)) and set(got_ids) <= set(ids)
                assert ids[-1] in got_ids and all(g["verified"] for g in got)
                h = a.health()["transport"]["nostr"]
                assert h["bridge"]["pending"] == 0 and h["bridge"]["published"] >= 5


async def test_a_black_hole_relay_does_not_block_the_primary_lane(tmp_path: Path) -> None:
    async with black_hole() as dead:
        with trio.fail_after(60):
            async with open_node(cfg(tmp_path, "a", relays=[dead], capabilities=AD)) as a, \
                    open_node(cfg(tmp_path, "b", peers=[a.url], relays=[dead])) as b:
                await b.wait_peers(1)
                chan = await a.open_channel("work")
                await b.wait_channel("work")
                # Mirrors pile up for a relay that never answers (each publish waits up to its
                # 5 s timeout); the primary lane does not wait on any of it.
                for i in range(30):
                    await a.advertise(CapabilityAd(tools=(f"t{i}",), expires_ms=2**62))
                    with trio.fail_after(2.0):
                        r = await b.publish(chan.channel, f"m{i}".encode())
                    assert r.seq == i + 1
                assert a._nostr is not None and a._nostr.outbox.pending() >= 30
                assert a.health()["transport"]["nostr"]["relays"][dead]["state"] != "connected"


async def test_bridge_calls_need_relays_and_the_bridge_scope(tmp_path: Path) -> None:
    async with open_node(cfg(tmp_path, "a")) as a:
        with pytest.raises(LocalProtocolError):
            a.bridge_feed()


async def test_bridge_events_need_the_bridge_publish_scope(tmp_path: Path) -> None:
    import time

    from p2pworld.auth.book import AuthConfig
    from p2pworld.auth.token import Claims, mint
    from p2pworld.core.mirror import presence_event
    from p2pworld.errors import ScopeDenied
    from p2pworld.identity import Ed25519Signer
    from p2pworld.io.home import NodeHome

    control = Ed25519Signer(bytes([7]) * 32)
    ident = NodeHome(tmp_path / "a").load_or_create()
    now = int(time.time())
    raw = mint(Claims(org="o", user="u", device="d", session="s", node_key=ident.public_key,
                      nostr_pubkey=ident.nostr.public, scopes=("world:join", "world:advertise"),
                      issued_at=now - 10, expires_at=now + 600, token_id=bytes(16)),
               control, kid="k1")
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "a", relays=[f"ws://127.0.0.1:{free_port()}"],
                                 auth=AuthConfig(keys={"k1": control.public_key}),
                                 token=raw)) as a:
            ev = presence_event(a.identity.nostr, node=a.node_id, workspace="mirror",
                                status="online", created_at=now, aux=bytes(32))
            with pytest.raises(ScopeDenied):
                await a.enqueue_bridge_event(ev, source="x", entry_hash=b"")
            # Mirrors are refused the same way (and counted), never written.
            await a.advertise(AD)
            assert a._errors.get("SCOPE_DENIED", 0) >= 1
            assert a._nostr is not None and a._nostr.outbox.events_for(
                f"ad:{a.node_id.hex()}") == []


async def test_the_control_policy_narrows_the_transport_mode(tmp_path: Path) -> None:
    from dataclasses import replace

    from p2pworld.auth.control import ControlCore, ControlState
    from p2pworld.errors import PolicyDenied
    from p2pworld.io.http import serve_control

    state = ControlState.create(org="acme", operator_secret=b"o" * 32, key=bytes([5]) * 32,
                                open_enrollment=True)
    core = ControlCore(replace(state, policy={**state.policy, "fallback": ["rendezvous"]}))
    relay = f"ws://127.0.0.1:{free_port()}"
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            server = await n.start(serve_control, core, "127.0.0.1", 0)
            async with open_node(cfg(tmp_path, "a", control=server.url, relays=[relay])) as a:
                assert a._policy is not None and a.transport_mode == "primary-only"
                assert a._nostr is not None and a._nostr.lane is None
            with pytest.raises(PolicyDenied):
                async with open_node(cfg(tmp_path, "b", control=server.url, relays=[relay],
                                         transport="forced-nostr")):
                    pass
            n.cancel_scope.cancel()


def test_which_mirrors_a_node_publishes_is_the_mirror_cores_answer() -> None:
    """``NodeConfig.mirror`` gates each mirror in the mirror core (both executors run it):
    no capability row without ``capabilities``; presence with ``presence`` or when the mode
    is ``forced-nostr``."""
    from p2pworld.core.mirror import ad_mirror_row, mirrors_presence
    from p2pworld.nostr.keys import NostrKey

    key, ad = NostrKey(b"\x05" * 32), CapabilityAd(tools=("search",), job_kinds=("5000",))
    row = ad_mirror_row(key, mirror=("capabilities",), node=b"\x01" * 32, ad=ad,
                        created_at=7, aux=bytes(32))
    assert row is not None
    ev, source, h = row
    assert source == "ad:" + "01" * 32 and ev.kind == 31990 and ev.created_at == 7
    assert ("k", "5000") in ev.tags and ("p2pworld-hash", h.hex()) in ev.tags
    assert ad_mirror_row(key, mirror=("presence", "compute"), node=b"\x01" * 32, ad=ad,
                         created_at=7, aux=bytes(32)) is None
    assert mirrors_presence(("presence",), "primary-only")
    assert mirrors_presence((), "forced-nostr")
    assert not mirrors_presence(("compute",), "primary-with-fallback")
