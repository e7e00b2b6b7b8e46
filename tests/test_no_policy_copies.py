"""The simulator holds no copy of node policy: where the node decides something (what is on
disk before what, the writer's pacing, session admission, when a token is refreshed, which key
a compute op uses), the runtime and the simulator call the same core. This test finds the
copies that used to be there (f-string idempotency keys, token checks by hand, the refresh
fractions, durable effects applied outside the persist core's plan) and checks that both
executors name each shared core."""

from __future__ import annotations

import ast

import pytest

from . import layout

SIMULATOR = {m: p for m, p in layout.modules_of({"simulator"}).items()}
RUNTIME = sorted((layout.ROOT / "p2pworld/runtime").glob("*.py"))
"""The trio executor: the node runtime and its API parts."""

SHARED = {
    "NodeCore": "the node core (p2pworld.core.node: the writer's pacing, what must be on disk "
                "before what, timers, batches)",
    "TimerFired": "the core's wake-ups (p2pworld.core.node)",
    "admit": "session admission (TokenBook.admit)",
    "TokenSchedule": "when a token is refreshed and a failed refresh retried "
                     "(p2pworld.auth.schedule, run by the node core)",
    "RefreshToken": "the node core's ask for a fresh token (each executor carries it out)",
    "PeerCore": "which peer to dial, on which lane, when; which session survives "
                "(p2pworld.core.peers)",
    "Dial": "the node core's dial (each executor carries it out)",
    "DialDone": "how a dial went, back to the node core",
    "CandidateSeen": "discovery candidates as node-core inputs",
    "Keepalive": "pings and dead sessions (p2pworld.transport.peering, in the node core)",
    "op_key": "compute idempotency keys (p2pworld.compute.keys)",
    "Publish": "API calls as node-core inputs (p2pworld.core.calls)",
    "OpenChannel": "API calls as node-core inputs (p2pworld.core.calls)",
}


def names(path: layout.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_both_executors_use_the_shared_core(name: str) -> None:
    sim = set().union(*(names(p) for p in SIMULATOR.values()))
    assert name in set().union(*(names(p) for p in RUNTIME)), \
        f"the runtime does not use {SHARED[name]}"
    assert name in sim, f"the simulator does not use {SHARED[name]}"


IN_THE_CORE = {"pace", "PersistCore", "leaves_at_once", "batched", "refresh_after_s",
               "retry_after_s", "keep_new_session", "dial_delay", "is_dead", "DIRECT_RETRY_S"}
"""Decisions the node core makes: an executor that names one decides beside it."""


@pytest.mark.parametrize("path", [*RUNTIME, *SIMULATOR.values()], ids=lambda p: p.name)
def test_executors_leave_the_core_s_decisions_to_it(path: layout.Path) -> None:
    assert not names(path) & IN_THE_CORE, path


def copies(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg == "idem_key" and isinstance(
                node.value, ast.Call) and isinstance(node.value.func, ast.Attribute) and \
                isinstance(node.value.func.value, ast.JoinedStr):
            found.append(f"line {node.lineno}: an idempotency key made by hand")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                node.func.attr == "check_heartbeat" or (node.func.attr == "learn" and any(
                    k.arg == "grace" for k in node.keywords))):
            # (A node learning its own token at start is not admission.)
            found.append(f"line {node.lineno}: a token check by hand ({node.func.attr})")
        if isinstance(node, ast.Constant) and node.value in (0.8,):
            found.append(f"line {node.lineno}: the token refresh fraction")
        if isinstance(node, ast.Name) and node.id in {"durable_op", "STORE_EFFECTS"}:
            found.append(f"line {node.lineno}: durable effects picked outside the plan")
    return found


@pytest.mark.parametrize("module", sorted(SIMULATOR))
def test_the_simulator_holds_no_copy(module: str) -> None:
    assert not copies(SIMULATOR[module].read_text()), module


def test_the_copy_check_can_fail() -> None:
    old = ('hub.publish(ch, b"", idem_key=f"{rid}/offer/{name}".encode(), now_ms=0)\n'
           'book.learn(raw, now=0, node_key=k, grace=True)\n'
           'delay = ttl * (0.8 - 0.1 * rng.random())\n'
           'ops = [op for e in fx if (op := durable_op(e)) is not None]\n')
    assert len(copies(old)) == 4


CALL_METHODS = {"open_channel", "publish", "add_participant", "remove_participant",
                "close_channel", "handoff", "recover", "ack_message", "join", "advertise",
                "heartbeat", "set_session", "leave"}
"""The cores' API methods: an executor reaches them only through the node core's call
inputs (p2pworld.core.calls), so both make the same calls the same way."""
SCENARIOS = sorted((layout.ROOT / "simulations").glob("*.py"))


def direct_calls(source: str) -> list[str]:
    """Calls of the cores' API methods on a hub or a world core (``hub.publish(...)``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in CALL_METHODS:
            recv = node.func.value
            name = recv.attr if isinstance(recv, ast.Attribute) else \
                recv.id if isinstance(recv, ast.Name) else ""
            facade = isinstance(recv, ast.Attribute) and isinstance(recv.value, ast.Name) \
                and recv.value.id == "self" and name == "world"  # Node.world: the sub-API
            if name.lstrip("_") in ("hub", "world") and not facade:
                found.append(f"line {node.lineno}: {name}.{node.func.attr}")
    return found


@pytest.mark.parametrize("path", [*RUNTIME, *SIMULATOR.values(), *SCENARIOS],
                         ids=lambda p: p.name)
def test_api_calls_reach_the_cores_as_inputs(path: layout.Path) -> None:
    assert not direct_calls(path.read_text()), path


def test_the_direct_call_check_can_fail() -> None:
    old = ("req, fx = self._hub.publish(ch, b'', idem_key=k, now_ms=0)\n"
           "fx = node.world.advertise(ad, now_ms=0)\n"
           "await self._node.channels.publish(ch, b'')\n")
    assert len(direct_calls(old)) == 2
