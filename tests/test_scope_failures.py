"""A failure scoped to one peer, lane, relay or request never ends ``open_node``.

Regression tests for failures that used to escape a background task into the node's nursery
and end the ``async with open_node(...)`` block with an exception:

* a peer session ending after this node's own token expired (a control-service outage longer
  than the token's life) or was revoked: ``Node._forget`` -> ``WorldCore.drop_link`` ->
  ``_authorize`` raised ``TokenExpired`` / ``Revoked`` out of the session task;
* a rendezvous connection closing (``ConnectionClosed``, raised inside the rendezvous
  client's nursery and so wrapped in an ``ExceptionGroup`` that ``except ConnectionClosed``
  does not catch), at each stage: registration, under a relayed session, at shutdown.

The rule: such a failure closes its scope with a typed reason, is counted in ``health()``,
appears on ``node.notices()``, and the scope is retried where it should be. Every test runs
real nodes over loopback sockets (in-process), on a real clock, bounded by ``fail_after``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from discovery.rendezvous_server import RendezvousServer, serve_rendezvous
from p2pworld import NodeConfig, open_node
from p2pworld.auth.book import DEFAULT_SCOPES, AuthConfig
from p2pworld.auth.control import ControlCore, ControlState, verify_revocations
from p2pworld.auth.token import Claims, mint
from p2pworld.core.node import RevocationsLearned
from p2pworld.errors import P2PWorldError
from p2pworld.identity import Ed25519Signer, NodeIdentity
from p2pworld.io.http import http_json, serve_control
from p2pworld.io.session import close_websocket
from p2pworld.runtime.node import Node

from .tools.rendezvous_gate import STAGES, RendezvousGate

WORKSPACE = "scope"
CONTROL_SEED = bytes([5]) * 32
OP = b"o" * 32
LEEWAY = 0.5
"""Token leeway of every node here (the default is 30 s: too long for a test to outwait)."""


# --- helpers ---------------------------------------------------------------------------------


def leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [x for sub in e.exceptions for x in leaves(sub)]
    return [e]


@asynccontextmanager
async def running(config: NodeConfig, *, identity: NodeIdentity | None = None
                  ) -> AsyncIterator[Node]:
    """``open_node``; if it ends with an exception that its block did not raise (one from a
    background task: the defect under test), fail with that exception's type and message."""
    raised: list[BaseException] = []
    entered = done = False
    try:
        async with open_node(config, identity=identity) as node:
            entered = True
            try:
                yield node
            except BaseException as e:
                raised.append(e)
                raise
            done = True
    except BaseException as out:
        own = [x for r in raised for x in leaves(r)]  # what the block itself raised
        background = [e for e in leaves(out) if isinstance(e, Exception)
                      and not any(e is x for x in own)]
        if entered and background:
            when = "after its block ended" if done else "while its block ran"
            raise AssertionError(
                f"open_node({config.home.name}) ended with an exception from a background "
                f"task {when}: " + "; ".join(f"{type(e).__name__}: {e}" for e in background)
            ) from out
        raise


def cfg(tmp: Path, name: str, **kw: Any) -> NodeConfig:
    return NodeConfig(home=tmp / name, workspace=WORKSPACE, mdns=False, keepalive=2.0,
                      dial_grace=0.5, **kw)


def rv_cfg(tmp: Path, name: str, url: str) -> NodeConfig:
    """A node that reaches peers only through the rendezvous at ``url`` (it publishes no direct
    URL, so every session is a relayed pipe)."""
    return cfg(tmp, name, rendezvous=[url], public_urls=[])


async def until(pred: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``pred`` (a cheap look at ``health()`` or similar) until it holds."""
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def notice_where(node: Node, pred: Callable[[Any], bool], what: str,
                       timeout: float = 10.0) -> Any:
    """The next notice on ``node.notices()`` that satisfies ``pred`` (others are skipped)."""
    seen: list[str] = []
    with trio.move_on_after(timeout):
        while True:
            n = await node.notices()
            if pred(n):
                return n
            seen.append(f"{type(n).__name__}({n.error.code})")
    raise AssertionError(f"no notice {what} on node.notices() within {timeout} s "
                         f"(saw {seen or 'none'})")


async def drain_notices(node: Node) -> None:
    """Skip the notices already queued (so a later check sees only what came after)."""
    while True:
        with trio.move_on_after(0.1):
            await node.notices()
            continue
        return


def counted(node: Node, code: str) -> int:
    """How often ``code`` is counted in ``health()["errors"]`` and the world refusals."""
    h = node.health()
    return h["errors"].get(code, 0) + h["world"]["refused"].get(code, 0)


def grown(node: Node, before: dict[str, int]) -> dict[str, int]:
    """Codes of ``health()["errors"]`` counted more often than in ``before``."""
    now = node.health()["errors"]
    return {c: k for c, k in now.items() if k > before.get(c, 0)}


async def reported(node: Node, before: dict[str, int], what: str) -> str:
    """``what`` (a rendezvous failure) was reported: a code is counted in ``health()["errors"]``
    more often than in ``before``, and a notice with one of those codes arrives (of scope
    ``relay``, when notices carry a scope). Returns the notice's code."""
    await until(lambda: bool(grown(node, before)),
                f"health()['errors'] to count a code for {what}", 10)
    got = await notice_where(
        node, lambda x: x.error.code in grown(node, before)
        and getattr(x, "scope", "relay") == "relay",
        f"(scope relay) for {what} with a code counted in health() "
        f"(counted: {grown(node, before)})")
    return str(got.error.code)


def lane_to(node: Node, peer: Node) -> str | None:
    for p in node.health()["peers"]:
        if p["node_id"] == peer.node_id.hex() and p["state"] == "connected":
            return str(p["lane"])
    return None


async def relayed(a: Node, b: Node, timeout: float = 20.0) -> None:
    await until(lambda: lane_to(a, b) == "relay" and lane_to(b, a) == "relay",
                "a relayed session between the two nodes", timeout)


async def publish_acked(node: Node, channel: bytes, payload: bytes, key: bytes,
                        timeout: float = 20.0) -> Any:
    """Publish until the (remote) sequencer acknowledges; retries with the same key are
    idempotent. Returns the ``PublishResult``."""
    last: P2PWorldError | None = None
    with trio.move_on_after(timeout):
        while True:
            try:
                res = await node.publish(channel, payload, key=key, timeout=5.0)
            except P2PWorldError as e:
                last = e
                await trio.sleep(0.2)
                continue
            assert res.status in ("appended", "duplicate")
            return res
    raise AssertionError(f"publish not acknowledged within {timeout} s (last refusal: {last!r})")


def identity(n: int) -> NodeIdentity:
    return NodeIdentity.from_seeds(bytes([n]) * 32, bytes([n + 100]) * 32,
                                   created_at=int(time.time()))


def control_core(ttl_s: int = 900) -> ControlCore:
    return ControlCore(ControlState.create(org="acme", operator_secret=OP, key=CONTROL_SEED,
                                           ttl_s=ttl_s, open_enrollment=True))


def long_token(ident: NodeIdentity, life_s: int = 3600) -> bytes:
    """A token from the same authority that outlives the test: the peers' tokens stay good,
    so the only node whose token expires (or is revoked) is the one under test."""
    now = int(time.time())
    return mint(Claims(org="acme", user="peer", device=ident.node_id.hex()[:8],
                       session="s", node_key=ident.public_key,
                       nostr_pubkey=ident.nostr.public, scopes=DEFAULT_SCOPES,
                       issued_at=now - 5, expires_at=now + life_s,
                       token_id=secrets.token_bytes(16)),
                Ed25519Signer(CONTROL_SEED), kid="k1")


class Control:
    """The control service on one loopback port, which a test stops (an outage) and starts
    again on the same port (the service returns)."""

    def __init__(self, core: ControlCore) -> None:
        self.core = core
        self.port = 0
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, nursery: trio.Nursery) -> None:
        done = self._done = trio.Event()
        scope = self._scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await serve_control(self.core, "127.0.0.1", self.port,
                                        task_status=task_status)
            finally:
                done.set()

        server = await nursery.start(run)
        self.port = server.port

    async def stop(self) -> None:
        """Returns once the listening socket is closed."""
        assert self._scope is not None
        self._scope.cancel()
        await self._done.wait()


class Rendezvous:
    """An in-process rendezvous on one loopback port, stoppable and restartable there."""

    def __init__(self) -> None:
        self.port = 0
        self.server: RendezvousServer | None = None
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self, nursery: trio.Nursery) -> None:
        done = self._done = trio.Event()
        scope = self._scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await serve_rendezvous("127.0.0.1", self.port, task_status=task_status)
            finally:
                done.set()

        self.server = await nursery.start(run)
        self.port = self.server.port

    async def stop(self) -> None:
        """Stop the whole server: every connection closes and the port refuses."""
        assert self._scope is not None
        self._scope.cancel()
        await self._done.wait()
        self.server = None

    def cid(self, node: Node) -> int | None:
        """The server's connection id of ``node``'s registration (None: not registered)."""
        if self.server is None:
            return None
        return self.server.core.by_node.get((WORKSPACE, node.node_id))

    async def close_connection(self, node: Node) -> int:
        """Close ``node``'s rendezvous connection from the server side (a real websocket
        close); returns the connection id that was closed."""
        cid = self.cid(node)
        assert cid is not None and self.server is not None, "node is not registered"
        await close_websocket(self.server.sockets[cid])
        return cid


async def peer(tmp: Path, name: str, ident: NodeIdentity, seed_url: str,
               keys: dict[str, bytes], stop: trio.Event, *,
               task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
    """A peer with a long-lived token that dials ``seed_url``, until ``stop`` is set."""
    config = cfg(tmp, name, peers=[seed_url], auth=AuthConfig(keys=dict(keys), leeway_s=LEEWAY),
                 token=long_token(ident))
    config.home.mkdir(parents=True, exist_ok=True)  # open_node creates it only for its own keys
    async with running(config, identity=ident) as node:
        task_status.started(node)
        await stop.wait()


async def revoke(ctl: Control, node: Node) -> None:
    """The operator revokes ``node`` at the control service."""
    status, _ = await http_json(ctl.url, "POST", "/v1/revoke", {"node": node.node_id.hex()},
                                bearer=OP.hex())
    assert status == 200


@asynccontextmanager
async def controlled_a(tmp_path: Path, n: trio.Nursery, *, ttl_s: int = 900
                       ) -> AsyncIterator[tuple[Control, dict[str, bytes], Node]]:
    """A control service and node A under it (its peers start with :func:`peer`); the
    service stops when the block ends."""
    core = control_core(ttl_s=ttl_s)
    keys = core.state.public_keys()
    ctl = Control(core)
    await ctl.start(n)
    try:
        auth = AuthConfig(keys=dict(keys), leeway_s=LEEWAY)
        async with running(cfg(tmp_path, "a", control=ctl.url, auth=auth)) as a:
            yield ctl, keys, a
    finally:
        await ctl.stop()


async def apply_revocations(node: Node, ctl: Control) -> None:
    """Do ``node``'s revocation poll now (it polls every 30 s, longer than a test should
    wait): fetch the signed list, verify it, apply it to the node's token book."""
    status, doc = await http_json(ctl.url, "GET", "/v1/revocations")
    assert status == 200
    book = node._cores.auth
    assert book is not None
    toks, nodes = verify_revocations(doc, book.config.keys)
    node._input(RevocationsLearned(tokens=toks, nodes=nodes))  # as the poll hands it over


# --- this node's token expired or was revoked, then a peer session ends ---------------------


TTL = 12
"""Token life in the expiry test: long enough for three nodes to connect, short enough to
outwait (with LEEWAY) on a real clock."""


async def test_token_expired_then_a_peer_drops_the_node_survives_and_recovers(
        tmp_path: Path) -> None:
    core = control_core(ttl_s=TTL)
    keys = core.state.public_keys()
    stop_b, stop_c = trio.Event(), trio.Event()
    with trio.fail_after(45):
        async with trio.open_nursery() as n:
            ctl = Control(core)
            await ctl.start(n)
            auth = AuthConfig(keys=dict(keys), leeway_s=LEEWAY)
            async with running(cfg(tmp_path, "a", control=ctl.url, auth=auth)) as a:
                # The outage starts as soon as A holds its first token: A cannot refresh it.
                await ctl.stop()
                b = await n.start(peer, tmp_path, "b", identity(11), a.url, keys, stop_b)
                c = await n.start(peer, tmp_path, "c", identity(12), a.url, keys, stop_c)
                with trio.fail_after(15):
                    await a.wait_peers(2)
                chan = await c.open_channel("sequenced-by-c")
                with trio.fail_after(10):
                    await a.wait_channel("sequenced-by-c")
                await publish_acked(a, chan.channel, b"before", b"before")

                await until(lambda: time.time() > (a.health()["auth"]["token_expires"] or 0)
                            + LEEWAY + 0.5, "A's token to expire on A's clock", TTL + 10)
                assert a.health()["auth"]["refresh_failures"] >= 1, \
                    "precondition: A tried to refresh during the outage and failed"
                before = counted(a, "TOKEN_EXPIRED")
                await drain_notices(a)

                stop_b.set()  # peer churn: B leaves, A's session to B ends
                await until(lambda: b.node_id not in a._sessions, "A's session to B to end")

                got = await notice_where(a, lambda x: x.error.code == "TOKEN_EXPIRED",
                                         "with code TOKEN_EXPIRED")
                assert getattr(got, "scope", None) in (None, "node", "peer")
                await until(lambda: counted(a, "TOKEN_EXPIRED") > before,
                            "TOKEN_EXPIRED to be counted in A's health()", 5)
                h = a.health()
                assert h["node_id"] == a.node_id.hex()
                assert c.node_id in a._sessions, "reads go on: A's other session stays up"

                # The control service returns on the same port: A refreshes and writes again.
                await ctl.start(n)
                await until(lambda: (a.health()["auth"]["token_expires"] or 0)
                            > time.time() + 1, "A to refresh its token", 15)
                res = await publish_acked(a, chan.channel, b"after", b"after")
                assert res.seq >= 2
            stop_c.set()
            await ctl.stop()


async def test_revoked_then_a_peer_drops_the_node_survives(tmp_path: Path) -> None:
    stop_b, stop_c = trio.Event(), trio.Event()
    with trio.fail_after(40):
        async with trio.open_nursery() as n:
            async with controlled_a(tmp_path, n) as (ctl, keys, a):
                b = await n.start(peer, tmp_path, "b", identity(21), a.url, keys, stop_b)
                c = await n.start(peer, tmp_path, "c", identity(22), a.url, keys, stop_c)
                with trio.fail_after(15):
                    await a.wait_peers(2)
                chan = await c.open_channel("sequenced-by-c")
                with trio.fail_after(10):
                    await a.wait_channel("sequenced-by-c")
                await publish_acked(a, chan.channel, b"before", b"before")

                await revoke(ctl, a)
                await apply_revocations(a, ctl)
                # Heartbeats are refused (and counted in the world refusals) from now on, so
                # the peer drop's refusal is looked for in health()["errors"] only.
                before = a.health()["errors"].get("REVOKED", 0)
                await drain_notices(a)

                stop_b.set()
                await until(lambda: b.node_id not in a._sessions, "A's session to B to end")

                got = await notice_where(a, lambda x: x.error.code == "REVOKED",
                                         "with code REVOKED")
                assert getattr(got, "scope", None) in (None, "node", "peer")
                await until(lambda: a.health()["errors"].get("REVOKED", 0) > before,
                            "REVOKED to be counted in A's health()['errors']", 5)
                assert a.health()["node_id"] == a.node_id.hex()
                stop_c.set()


async def test_a_revoked_subscriber_reads_nothing_new(tmp_path: Path) -> None:
    """Before, a revocation ended no session: a revoked node kept its subscription and read
    every entry published after. Now the sequencer ends the revoked node's session when it
    applies the list (``REVOKED``, counted), and the redial is refused at admission."""
    stop_b = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            async with controlled_a(tmp_path, n) as (ctl, keys, a):
                b = await n.start(peer, tmp_path, "b", identity(21), a.url, keys, stop_b)
                with trio.fail_after(15):
                    await a.wait_peers(1)
                chan = await a.open_channel("read-by-b")
                await publish_acked(a, chan.channel, b"before", b"before")
                await until(lambda: b._hub.head(chan.channel)[0] >= 1 if
                            b._hub.find("read-by-b") else False, "B to read the first entry")
                await revoke(ctl, b)
                await apply_revocations(a, ctl)
                await until(lambda: b.node_id not in a._sessions, "A to end B's session")
                await publish_acked(a, chan.channel, b"after", b"after")
                await trio.sleep(3)  # B redials (refused) and would catch up on a session
                assert b._hub.head(chan.channel)[0] == 1
                assert b.node_id not in a._sessions
                assert a.health()["errors"].get("REVOKED", 0) >= 1
                stop_b.set()


@pytest.mark.parametrize("why", ["expired", "revoked"])
async def test_leaving_with_an_unusable_token_exits_cleanly(tmp_path: Path, why: str) -> None:
    """``open_node`` ends the node's session record when it leaves; with its token expired or
    revoked that write is refused, which must not end the block with an exception."""
    core = control_core(ttl_s=3 if why == "expired" else 900)
    keys = core.state.public_keys()
    with trio.fail_after(30):
        async with trio.open_nursery() as n:
            ctl = Control(core)
            await ctl.start(n)
            auth = AuthConfig(keys=dict(keys), leeway_s=LEEWAY)
            async with running(cfg(tmp_path, "a", control=ctl.url, auth=auth)) as a:
                if why == "expired":
                    await ctl.stop()
                    await until(lambda: time.time() > (a.health()["auth"]["token_expires"]
                                                       or 0) + LEEWAY + 0.5,
                                "A's token to expire on A's clock", 15)
                else:
                    status, _ = await http_json(ctl.url, "POST", "/v1/revoke",
                                                {"node": a.node_id.hex()}, bearer=OP.hex())
                    assert status == 200
                    await apply_revocations(a, ctl)
                    await ctl.stop()
            # Reaching this line is the assertion: the block exited without an exception.


# --- the rendezvous connection closes: while registering, under a relayed pipe, at shutdown --


@pytest.mark.parametrize("stage", STAGES)
async def test_rendezvous_closed_while_registering(tmp_path: Path, stage: str) -> None:
    """A's first rendezvous connection is closed by the rendezvous side right after the
    upgrade (``accept``), after the challenge (``challenge``) or after the registration
    (``register``); the next connection passes: A re-registers and relays again."""
    with trio.fail_after(40):
        async with trio.open_nursery() as n:
            rv = Rendezvous()
            await rv.start(n)
            async with RendezvousGate(rv.url, close_at=stage) as gate:
                async with running(rv_cfg(tmp_path, "b", rv.url)) as b:
                    chan = await b.open_channel("sequenced-by-b")
                    async with running(rv_cfg(tmp_path, "a", gate.url)) as a:
                        with trio.fail_after(10):
                            await gate.closed.wait()
                        assert gate.closed_at == [stage]
                        await reported(a, {}, f"A's rendezvous connection closed at {stage}")
                        # The rendezvous returns (the gate passes the next connection).
                        await until(lambda: rv.cid(a) is not None, "A to re-register", 15)
                        assert gate.passed >= 1
                        await relayed(a, b)
                        with trio.fail_after(10):
                            await a.wait_channel("sequenced-by-b")
                        await publish_acked(a, chan.channel, b"after", b"after")
            n.cancel_scope.cancel()


@pytest.mark.parametrize("side", ["initiator", "acceptor"])
async def test_rendezvous_connection_closed_under_a_relayed_session(tmp_path: Path,
                                                                   side: str) -> None:
    """The rendezvous closes the connection of the node that dialled the relayed session
    (``initiator``: the session runs in the node's nursery) or of the one that accepted it
    (``acceptor``: the session was started inside the rendezvous client's nursery)."""
    with trio.fail_after(45):
        async with trio.open_nursery() as n:
            rv = Rendezvous()
            await rv.start(n)
            async with running(rv_cfg(tmp_path, "a", rv.url)) as a, \
                    running(rv_cfg(tmp_path, "b", rv.url)) as b:
                await relayed(a, b)
                chan = await b.open_channel("sequenced-by-b")
                with trio.fail_after(10):
                    await a.wait_channel("sequenced-by-b")
                await publish_acked(a, chan.channel, b"before", b"before")
                a_dialled = a._sessions[b.node_id].initiator
                victim = a if a_dialled == (side == "initiator") else b
                before = dict(victim.health()["errors"])
                await drain_notices(victim)

                old = await rv.close_connection(victim)
                await reported(victim, before, "its closed rendezvous connection")
                # The rendezvous is still there: the victim re-registers, the session returns.
                await until(lambda: rv.cid(victim) not in (None, old),
                            "the victim to re-register", 15)
                await relayed(a, b)
                await publish_acked(a, chan.channel, b"after", b"after")
            n.cancel_scope.cancel()


async def test_rendezvous_server_stopped_under_a_relayed_session(tmp_path: Path) -> None:
    """The whole rendezvous stops (every connection closes, the port refuses), then returns
    on the same port: both nodes survive, count it, re-register and relay again."""
    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            rv = Rendezvous()
            await rv.start(n)
            async with running(rv_cfg(tmp_path, "a", rv.url)) as a, \
                    running(rv_cfg(tmp_path, "b", rv.url)) as b:
                await relayed(a, b)
                chan = await b.open_channel("sequenced-by-b")
                with trio.fail_after(10):
                    await a.wait_channel("sequenced-by-b")
                await publish_acked(a, chan.channel, b"before", b"before")
                before = {x: dict(x.health()["errors"]) for x in (a, b)}
                await drain_notices(a)
                await drain_notices(b)

                await rv.stop()
                await until(lambda: b.node_id not in a._sessions and a.node_id not in b._sessions,
                            "the relayed session to end", 15)
                for x in (a, b):
                    await reported(x, before[x], "the stopped rendezvous")

                await rv.start(n)  # same port
                await until(lambda: rv.cid(a) is not None and rv.cid(b) is not None,
                            "both nodes to re-register", 30)
                await relayed(a, b)
                await publish_acked(a, chan.channel, b"after", b"after")
            n.cancel_scope.cancel()


@pytest.mark.parametrize("how", ["connection-while-leaving", "connection-before-leaving",
                                 "server-while-leaving"])
async def test_rendezvous_closed_as_the_node_leaves(tmp_path: Path, how: str) -> None:
    """The rendezvous closes A's connection (or stops) at the moment A leaves its block: the
    block exits normally (a node that has left has no health() to read; B, which stays, must
    report a stopped rendezvous); A, started again from the same home, registers and relays
    again."""
    with trio.fail_after(60):
        async with trio.open_nursery() as n:
            rv = Rendezvous()
            await rv.start(n)
            async with running(rv_cfg(tmp_path, "b", rv.url)) as b:
                chan = await b.open_channel("sequenced-by-b")
                async with running(rv_cfg(tmp_path, "a", rv.url)) as a:
                    await relayed(a, b)
                    with trio.fail_after(10):
                        await a.wait_channel("sequenced-by-b")
                    await publish_acked(a, chan.channel, b"before", b"before")
                    server = rv.server
                    assert server is not None
                    ws = server.sockets[rv.cid(a) or -1]
                    before_b = dict(b.health()["errors"])
                    await drain_notices(b)
                    if how == "connection-while-leaving":
                        n.start_soon(close_websocket, ws)
                    elif how == "connection-before-leaving":
                        await close_websocket(ws)
                    else:
                        n.start_soon(rv.stop)
                # Reaching this line is the assertion: A's block exited without an exception.
                if how == "server-while-leaving":
                    await until(lambda: rv.server is None, "the rendezvous to stop", 10)
                    # B, still running, lost its rendezvous connection too.
                    await reported(b, before_b, "the stopped rendezvous")
                    await rv.start(n)
                async with running(rv_cfg(tmp_path, "a", rv.url)) as a2:
                    await until(lambda: rv.cid(a2) is not None, "A to register again", 15)
                    await relayed(a2, b)
                    await publish_acked(a2, chan.channel, b"again", b"again")
            n.cancel_scope.cancel()
