"""Sessions over real sockets (trio-websocket on 127.0.0.1, port 0)."""

from __future__ import annotations

import trio
import trio_websocket

from p2pworld.errors import HandshakeRefused, HandshakeTimeout, P2PWorldError, PeerIdentityMismatch
from p2pworld.io.session import Session, accept_session, close_websocket, open_session
from p2pworld.transport.handshake import HandshakeConfig
from p2pworld.wire import Message, Ping

from .conftest import make_identity

A, B, C = make_identity(1), make_identity(2), make_identity(3)


async def serve(nursery: trio.Nursery, ident, accepted: list, failures: list,  # type: ignore[no-untyped-def]
                timeout: float = 5.0, changed: trio.Event | None = None) -> int:
    async def handler(req: trio_websocket.WebSocketRequest) -> None:
        try:
            s = await accept_session(req, HandshakeConfig(identity=ident, workspace="w"),
                                     timeout=timeout)
        except P2PWorldError as e:
            failures.append(e.code)
            if changed is not None:
                changed.set()
            return
        accepted.append(s)
        got: list[Message] = []

        def on_frame(msgs: list[Message]) -> None:
            got.extend(msgs)
            if changed is not None and len(got) >= 20:
                changed.set()

        await s.run(on_frame)

    server = await nursery.start(lambda task_status: trio_websocket.serve_websocket(
        handler, "127.0.0.1", 0, None, handler_nursery=nursery, task_status=task_status))
    return int(server.port)


async def test_session_carries_messages_both_ways() -> None:
    async with trio.open_nursery() as n:
        accepted: list[Session] = []
        all_in = trio.Event()
        port = await serve(n, B, accepted, [], changed=all_in)
        s = await open_session(n, f"ws://127.0.0.1:{port}/",
                               HandshakeConfig(identity=A, workspace="w", expected_peer=B.node_id))
        assert s.peer_id == B.node_id
        got: list[Message] = []
        n.start_soon(s.run, got.append)
        for i in range(20):
            s.send_nowait(Ping(i))
        with trio.fail_after(10):
            await all_in.wait()
        assert accepted[0].peer_id == A.node_id and accepted[0].messages_in == 20
        await s.aclose()
        n.cancel_scope.cancel()


async def test_wrong_peer_is_refused_and_listener_keeps_serving() -> None:
    async with trio.open_nursery() as n:
        accepted: list[Session] = []
        failures: list[str] = []
        port = await serve(n, B, accepted, failures)
        url = f"ws://127.0.0.1:{port}/"
        try:
            await open_session(n, url, HandshakeConfig(identity=A, workspace="w",
                                                       expected_peer=C.node_id))
            raise AssertionError("expected a refusal")
        except PeerIdentityMismatch:
            pass
        # Garbage from a hostile client.
        ws = await trio_websocket.connect_websocket_url(n, url)
        await ws.send_message(b"\x01garbage")
        await close_websocket(ws)
        # A different workspace gets a typed refusal back.
        try:
            await open_session(n, url, HandshakeConfig(identity=C, workspace="other"))
            raise AssertionError("expected a refusal")
        except HandshakeRefused as e:
            assert e.details["peer_code"] == "WORKSPACE_MISMATCH"
        # And an honest client still gets in.
        s = await open_session(n, url, HandshakeConfig(identity=A, workspace="w"))
        assert s.peer_id == B.node_id
        assert "WORKSPACE_MISMATCH" in failures
        await s.aclose()
        n.cancel_scope.cancel()


async def test_silent_client_hits_the_handshake_time_bound() -> None:
    async with trio.open_nursery() as n:
        failures: list[str] = []
        refused = trio.Event()
        port = await serve(n, B, [], failures, timeout=0.3, changed=refused)
        ws = await trio_websocket.connect_websocket_url(n, f"ws://127.0.0.1:{port}/")
        with trio.fail_after(10):
            await refused.wait()
        await close_websocket(ws)
        assert failures == [HandshakeTimeout.code]
        n.cancel_scope.cancel()
