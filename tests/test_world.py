"""World state: write authority, presence, gossip convergence, persistence, real nodes."""

from __future__ import annotations

import random
from pathlib import Path

import pycrdt
import pytest
import trio
from hypothesis import HealthCheck, given, settings, strategies as st

from p2pworld import NodeConfig, codec, open_node
from p2pworld.effects import PeerMisbehaved, Send
from p2pworld.errors import DecodeError, ForgedUpdate, StaleUpdate, WorldGap
from p2pworld.identity import Ed25519Signer
from p2pworld.io.world_store import WorldStore
from p2pworld.testing.sim import Simulator
from p2pworld.wire import WorldPush, decode_message, encode_message
from p2pworld.world.core import WorldConfig, WorldCore
from p2pworld.world.doc import AuthorDoc, CapabilityAd, DocReplica, NodeInfo
from p2pworld.world.records import DocUpdate, Heartbeat, client_id

A = Ed25519Signer(bytes([1]) * 32)
M = Ed25519Signer(bytes([2]) * 32)  # mallory


def started(signer: Ed25519Signer = A, inc: int = 1) -> tuple[AuthorDoc, DocReplica]:
    author = AuthorDoc(signer, inc)
    rep = DocReplica(signer.public_key)
    rep.apply(author.start())
    return author, rep


# --- write authority -----------------------------------------------------------------------


def test_only_the_author_key_can_write_its_document() -> None:
    author, rep = started()
    good = author.set_info(NodeInfo(device="laptop"))
    # Mallory re-signs the same content as if she were A: the signature does not verify.
    forged = DocUpdate(author=A.public_key, inc=1, seq=1, kind="delta", data=good.data,
                       prev=good.prev, sig=M.sign(b"x" * 10))
    with pytest.raises(ForgedUpdate):
        rep.apply(DocUpdate.decode(codec.encode({**forged.body(), "sig": forged.sig})))
    assert rep.view.info is None
    rep.apply(good)
    assert rep.view.info is not None and rep.view.info.device == "laptop"


def test_tampered_record_is_refused_and_nothing_changes() -> None:
    author, rep = started()
    u = author.set_caps(CapabilityAd(tools=("grep",), expires_ms=10))
    body = codec.decode(u.raw)
    body["d"] = body["d"].replace(b"grep", b"rm -")
    with pytest.raises(ForgedUpdate):
        rep.apply(DocUpdate.decode(codec.encode(body)))
    assert rep.view.caps is None and rep.position == (1, 0)


def test_replayed_record_is_stale_and_changes_nothing() -> None:
    author, rep = started()
    u1 = author.set_info(NodeInfo(device="one"))
    u2 = author.set_info(NodeInfo(device="two"))
    rep.apply(u1)
    rep.apply(u2)
    for old in (u1, author.base):
        assert old is not None
        with pytest.raises(StaleUpdate):
            rep.apply(old)
    assert rep.view.info is not None and rep.view.info.device == "two"


def test_update_under_another_client_id_is_refused() -> None:
    # The author signs an update that writes under the victim's CRDT client id (the pycrdt
    # attack: the victim would show the forged value and drop its own next write).
    author, rep = started()
    doc = pycrdt.Doc(client_id=client_id(M.public_key, 1))
    m = doc.get("w", type=pycrdt.Map)
    with doc.transaction():
        m["node"] = codec.encode(NodeInfo(device="evil").to_value())
    bad = DocUpdate.create(A, inc=1, seq=1, kind="delta", data=doc.get_update(),
                           prev=author.head)
    with pytest.raises(ForgedUpdate, match="client id"):
        rep.apply(bad)
    assert rep.view.info is None


def test_gap_and_fork_are_refused() -> None:
    author, rep = started()
    author.set_info(NodeInfo(device="one"))
    u2 = author.set_info(NodeInfo(device="two"))
    with pytest.raises(WorldGap):
        rep.apply(u2)
    other = DocUpdate.create(A, inc=1, seq=1, kind="delta", data=u2.data, prev=bytes(32))
    with pytest.raises(ForgedUpdate, match="chain"):
        rep.apply(other)
    assert rep.position == (1, 0)


def test_bad_document_contents_are_refused_and_rolled_back() -> None:
    author, rep = started()
    rep.apply(author.set_info(NodeInfo(device="ok")))
    with author.doc.transaction():
        before = author.doc.get_state()
        author.map["node"] = b"\xff not cbor"
    bad = DocUpdate.create(A, inc=1, seq=2, kind="delta", data=author.doc.get_update(before),
                           prev=rep.head)
    with pytest.raises(DecodeError):
        rep.apply(bad)
    assert rep.position == (1, 1) and rep.view.info == NodeInfo(device="ok")
    assert rep.document().get("w", type=pycrdt.Map).to_py()["node"] != b"\xff not cbor"


@given(st.binary(max_size=300))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_record_bytes_never_crash(data: bytes) -> None:
    rep = DocReplica(A.public_key)
    try:
        rep.apply(DocUpdate.decode(data))
    except (DecodeError, ForgedUpdate, StaleUpdate):
        pass
    try:
        Heartbeat.decode(data).verify()
    except (DecodeError, ForgedUpdate):
        pass


def test_new_incarnation_replaces_the_old_one() -> None:
    author, rep = started()
    rep.apply(author.set_info(NodeInfo(device="before crash")))
    # The author crashed after gossiping a write it never stored; it restarts as inc 2 from
    # what it had stored (nothing), under a new client id.
    reborn = AuthorDoc(A, 2)
    rep.apply(reborn.start())
    assert rep.view.info is None and rep.position == (2, 0)
    rep.apply(reborn.set_info(NodeInfo(device="after")))
    assert rep.view.info == NodeInfo(device="after")


def test_compaction_bounds_what_a_newcomer_replays() -> None:
    author, rep = started()
    for i in range(40):
        rep.apply(author.set_info(NodeInfo(device=f"d{i}")))
    base = author.compact()
    rep.apply(base)
    assert rep.records() == [base]
    fresh = DocReplica(A.public_key)
    fresh.apply(base)
    assert fresh.state_hash() == rep.state_hash()


# --- the core: presence and gossip ---------------------------------------------------------


def pair() -> tuple[WorldCore, WorldCore]:
    a = WorldCore(A, inc=1, rng=random.Random(1))
    b = WorldCore(M, inc=1, rng=random.Random(2))
    a.join(NodeInfo(device="a"), now_ms=0)
    b.join(NodeInfo(device="b"), now_ms=0)
    return a, b


def test_settled_link_changes_are_one_update() -> None:
    """The links that settled together are written as one signed update (before: one per
    link, each gossiped to the workspace); a link as it stands is not written again, and a
    peer, seeing the update, reads the same links."""
    a, b = pair()
    p, q = b"p" * 32, b"q" * 32
    seq = a.author.seq if a.author else 0
    fx = a.write_links({p: "direct", q: "nostr"}, now_ms=10)
    assert a.author is not None and a.author.seq == seq + 1
    assert {(lk.target, lk.state) for lk in a.author.view().links} == {(p, "direct"),
                                                                     (q, "nostr")}
    assert a.write_links({p: "direct"}, now_ms=11) == [] and a.author.seq == seq + 1
    a.write_links({p: None, q: "direct"}, now_ms=12)
    assert a.author.seq == seq + 2
    assert [(lk.target, lk.state) for lk in a.author.view().links] == [(q, "direct")]
    assert a.write_links({p: None}, now_ms=13) == []
    assert fx


def deliver(fx: list, src: WorldCore, dst: WorldCore, now_ms: int) -> list:  # type: ignore[type-arg]
    out = []
    for e in fx:
        if isinstance(e, Send) and e.peer == dst.node_id:
            msg = decode_message(encode_message(e.message))
            out += dst.receive(src.node_id, msg, now_ms=now_ms)
    return out


def settle(a: WorldCore, b: WorldCore, fa: list, fb: list, now_ms: int) -> None:  # type: ignore[type-arg]
    while fa or fb:
        fa, fb = deliver(fb, b, a, now_ms), deliver(fa, a, b, now_ms)


def test_heartbeats_keep_a_member_live_and_ttl_expiry_by_receiver_clock() -> None:
    a, b = pair()
    settle(a, b, a.peer_up(b.node_id, b.public_key, now_ms=0),
           b.peer_up(a.node_id, a.public_key, now_ms=0), 0)
    assert b.member(a.node_id, now_ms=0).state == "online"  # type: ignore[union-attr]
    # a goes silent; b's own clock decides.
    fx = b.tick(now_ms=29_000)
    assert b.member(a.node_id, now_ms=29_000).state == "online"  # type: ignore[union-attr]
    fx = b.tick(now_ms=30_001)
    m = b.member(a.node_id, now_ms=30_001)
    assert m is not None and (m.state, m.reason) == ("stale", "ttl_expired")
    assert [e.event.kind for e in fx if hasattr(e, "event")] == ["stale"]
    # A fresh heartbeat (timestamped by a's clock, within the skew bound) revives it.
    settle(a, b, a.heartbeat(now_ms=31_000), [], 31_000)
    assert b.member(a.node_id, now_ms=31_000).state == "online"  # type: ignore[union-attr]


def test_explicit_leave_and_replayed_heartbeat() -> None:
    a, b = pair()
    settle(a, b, a.peer_up(b.node_id, b.public_key, now_ms=0),
           b.peer_up(a.node_id, a.public_key, now_ms=0), 0)
    old = a.presence[a.node_id].hb
    settle(a, b, a.leave(now_ms=10), [], 10)
    m = b.member(a.node_id, now_ms=10)
    assert m is not None and (m.state, m.reason) == ("left", "explicit_offline")
    # Mallory replays a's old "online" heartbeat: older position, ignored.
    assert old is not None
    b.receive(a.node_id, WorldPush(heartbeats=(old.raw,)), now_ms=11)
    assert b.member(a.node_id, now_ms=11).state == "left"  # type: ignore[union-attr]
    # A heartbeat too far from b's clock is refused (it bounds replays after a restart).
    far = Heartbeat.create(A, inc=9, n=1, time_ms=10 + 61_000)
    fx = b.receive(a.node_id, WorldPush(heartbeats=(far.raw,)), now_ms=10)
    assert any(isinstance(e, PeerMisbehaved) for e in fx)


def test_relayed_records_are_forwarded_byte_for_byte() -> None:
    a, b = pair()
    c = WorldCore(Ed25519Signer(bytes([3]) * 32), inc=1, rng=random.Random(3))
    c.join(NodeInfo(device="c"), now_ms=0)
    settle(a, b, a.peer_up(b.node_id, b.public_key, now_ms=0),
           b.peer_up(a.node_id, a.public_key, now_ms=0), 0)
    fb = b.peer_up(c.node_id, c.public_key, now_ms=0)
    fc = c.peer_up(b.node_id, b.public_key, now_ms=0)
    settle(b, c, fb, fc, 0)
    # c learned a's document only through b, with a's own signature.
    assert c.member(a.node_id, now_ms=0).info == NodeInfo(device="a")  # type: ignore[union-attr]
    raw_at_c = [r.raw for r in c.replicas[A.public_key].records()]
    raw_at_a = [r.raw for r in a.replicas[A.public_key].records()]
    assert raw_at_c == raw_at_a


def test_heartbeats_do_not_grow_the_world() -> None:
    sim = Simulator(seed=3, nodes=5)
    sim.run(10)
    size_early = sum(len(r) for n in sim.nodes.values() for rs in n.world_store.docs.values()
                     for r in rs)
    sim.run(600)
    size_late = sum(len(r) for n in sim.nodes.values() for rs in n.world_store.docs.values()
                    for r in rs)
    assert size_late == size_early
    assert all(n.world.presence[m.world.node_id].hb.n >= 100  # type: ignore[union-attr]
               for n in sim.nodes.values() for m in sim.nodes.values())


# --- convergence under faults (the simulator drives the real cores) ------------------------


ops = st.lists(st.tuples(st.sampled_from(["ad", "link", "crash", "partition", "heal", "loss"]),
                         st.integers(0, 3), st.integers(0, 10**6)), min_size=1, max_size=12)


@given(seed=st.integers(0, 10**6), plan=ops)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_world_converges_after_any_faults(seed: int, plan: list[tuple[str, int, int]]) -> None:
    sim = Simulator(seed=seed, nodes=4, degree=2, world_config=WorldConfig(pull_ms=2_000))
    names = sorted(sim.nodes)
    for op, i, x in plan:
        name = names[i]
        w = sim.nodes[name].world
        if op == "ad" and w is not None:
            sim._carry(sim.nodes[name], w.advertise(
                CapabilityAd(tools=(f"t{x}",), expires_ms=10**12), now_ms=sim.now_ms(
                    sim.nodes[name])))
        elif op == "link" and w is not None:
            from p2pworld.world.doc import LinkInfo
            sim._carry(sim.nodes[name], w.set_link(
                LinkInfo(target=bytes(32), state=f"s{x % 5}"), now_ms=sim.now_ms(
                    sim.nodes[name])))
        elif op == "crash":
            sim.crash(name)
            sim.run(0.5)
            sim.restart(name)
        elif op == "partition":
            sim.partition({name})
        elif op == "heal":
            sim.heal()
        elif op == "loss":
            sim.loss = (x % 20) / 100
        sim.run(0.3)
    sim.loss = 0.0
    sim.heal()
    took = sim.run_until_world_converged(limit=60)
    assert took is not None, "world replicas did not converge after heal"
    # Every node sees every other node's latest incarnation and contents.
    positions = {n.name: n.world.positions() for n in sim.nodes.values()}  # type: ignore[union-attr]
    assert len({tuple(sorted(p.items())) for p in positions.values()}) == 1
    incs = {n.signer_id: n.world.inc for n in sim.nodes.values()}  # type: ignore[union-attr]
    assert {nid: pos[0] for nid, pos in positions["n0"].items()} == incs


def test_partitioned_member_goes_stale_and_comes_back() -> None:
    sim = Simulator(seed=5, nodes=3)
    sim.run(5)
    sim.partition({"n2"})
    sim.run(40)
    n2 = sim.nodes["n2"].signer_id
    m = sim.nodes["n0"].world.member(n2, now_ms=sim.now_ms(sim.nodes["n0"]))  # type: ignore[union-attr]
    assert m is not None and (m.state, m.reason) == ("stale", "ttl_expired")
    sim.heal()
    # The nodes dial again at their own backoff (capped at 30 s, as in the runtime), not at
    # once: the simulator no longer reconnects them on the network's behalf.
    sim.run(31)
    m = sim.nodes["n0"].world.member(n2, now_ms=sim.now_ms(sim.nodes["n0"]))  # type: ignore[union-attr]
    assert m is not None and m.state == "online"
    kinds = [e.kind for e in sim.nodes["n0"].world_events if e.node == n2]
    # (Its links are in its document now, so its new sessions show as updates after that.)
    assert kinds.count("stale") == 1 and kinds[kinds.index("stale") + 1] == "joined"


def test_gossip_tree_sends_each_heartbeat_about_once() -> None:
    sim = Simulator(seed=7, nodes=12, degree=4)
    sim.run(30)
    before = [(n.world.stats.hb_new, n.world.stats.hb_dup) for n in sim.nodes.values()]  # type: ignore[union-attr]
    sim.run(60)
    after = [(n.world.stats.hb_new, n.world.stats.hb_dup) for n in sim.nodes.values()]  # type: ignore[union-attr]
    new = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    dup = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    assert new > 0 and (new + dup) / new <= 1.5


# --- persistence and real nodes ------------------------------------------------------------


def test_world_store_round_trip_and_bad_rows(tmp_path: Path) -> None:
    s = WorldStore(tmp_path / "w.db")
    author, rep = started()
    rep.apply(author.set_info(NodeInfo(device="x")))
    s.save(A.public_key, tuple(r.raw for r in rep.records()))
    s.db.execute("INSERT INTO docs VALUES (?, ?)", (b"junk", b"\x01\xff"))
    assert s.bump_incarnation() == 1
    s.close()
    s = WorldStore(tmp_path / "w.db")
    assert s.bump_incarnation() == 2
    loaded = s.load()
    assert s.skipped == 1 and len(loaded) == 1
    core = WorldCore(M, inc=1, rng=random.Random(0), stored=loaded)
    assert core.member(rep.base.node, now_ms=0).info == NodeInfo(device="x")  # type: ignore[union-attr]
    s.close()


def cfg(tmp: Path, name: str, **kw) -> NodeConfig:  # type: ignore[no-untyped-def]
    return NodeConfig(home=tmp / name, workspace="test", mdns=False, keepalive=1.0, **kw)


async def test_nodes_see_presence_ads_and_departure(tmp_path: Path) -> None:
    ad = CapabilityAd(tools=("python",), models=("small",), expires_ms=2**62)
    with trio.fail_after(30):
        async with open_node(cfg(tmp_path, "a", device="laptop", capabilities=ad)) as a:
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b:
                events = b.world_events()
                m = await b.wait_member(a.node_id)
                assert m.info is not None and m.info.device == "laptop"
                assert m.caps is not None and m.caps.tools == ("python",)
                assert [x.node_id for x in b.query(lambda c: "python" in c.tools)] == [a.node_id]
                assert m.sessions and m.sessions[0].workspace == "test"
                await a.advertise(CapabilityAd(tools=("rust",), expires_ms=2**62))
                while b.query(lambda c: "rust" in c.tools) == []:
                    await b._world_changed.wait()
                async with open_node(cfg(tmp_path, "c", peers=[a.url])) as c:
                    await b.wait_member(c.node_id)
                left = await b.wait_member(c.node_id, "left")
                assert left.reason == "explicit_offline"
                kinds = []
                async for ev in events:
                    if ev.node == c.node_id:
                        kinds.append(ev.kind)
                        if ev.kind == "left":
                            break
                assert kinds[0] in ("joined", "updated") and kinds[-1] == "left"
                assert b.health()["world"]["members"] >= 3
            # b's record survives b's restart; b comes back as a new incarnation.
            async with open_node(cfg(tmp_path, "b", peers=[a.url])) as b2:
                assert b2._world.inc == 2
                await a.wait_member(b2.node_id)
                while (m := a.member(b2.node_id)) is None or m.position[0] != 2:
                    await a._world_changed.wait()
                assert m.state == "online" and m.info is not None
                assert m.info.status == "online"  # the new incarnation's document


def test_the_world_store_refuses_another_format(tmp_path: Path) -> None:
    import sqlite3

    from p2pworld.errors import UnsupportedVersion
    from p2pworld.io.world_store import WorldStore

    s = WorldStore(tmp_path / "world.db")
    assert s.bump_incarnation() == 1
    s.close()
    db = sqlite3.connect(tmp_path / "world.db")
    db.execute("UPDATE meta SET value=2 WHERE key='format'")
    db.commit()
    db.close()
    with pytest.raises(UnsupportedVersion):
        WorldStore(tmp_path / "world.db")


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.booleans()), max_size=25))
@settings(max_examples=60, deadline=None)
def test_a_kept_live_document_changes_no_view(ops: list[tuple[int, bool, bool]]) -> None:
    # A replica keeps its author's live CRDT document between changes (the holder may drop
    # it at any time): applied with it, rebuilt without it, or after a refused update that
    # may have touched it, every view and state hash is the same.
    from p2pworld.world.doc import LinkInfo

    author = AuthorDoc(A, 1)
    start = author.start()
    kept, rebuilt = DocReplica(A.public_key), DocReplica(A.public_key)
    kept.apply(start)
    rebuilt.apply(start)
    for target, drop, refuse in ops:
        peer = bytes([target]) * 32
        if refuse:
            bad = DocUpdate.create(A, inc=1, seq=kept.position[1] + 1, kind="delta",
                                   data=b"\xff not crdt", prev=kept.head)
            with pytest.raises(DecodeError):
                kept.apply(bad)
        u = author.drop_link(peer) if drop else author.set_link(
            LinkInfo(target=peer, state="direct"))
        kept.apply(u)
        rebuilt.live = None  # the holder dropped it: rebuilt from the records
        rebuilt.apply(u)
        assert kept.view == rebuilt.view and kept.state_hash() == rebuilt.state_hash()


def test_live_documents_are_kept_for_the_most_recently_changed_authors_only() -> None:
    from p2pworld.world.doc import LiveDocs

    holder = LiveDocs(limit=2)
    reps = []
    for n in (11, 12, 13):
        signer = Ed25519Signer(bytes([n]) * 32)
        rep = DocReplica(signer.public_key, holder=holder)
        rep.apply(AuthorDoc(signer, 1).start())
        reps.append(rep)
    assert [r.live is not None for r in reps] == [False, True, True]
