"""The route table: every session message type has one core and one scope, stated in
``p2pworld/core/routes.py`` only; the cores route by it and the hub checks tokens by it."""

from __future__ import annotations

import ast
import random
from collections.abc import Iterator

import pytest

from p2pworld.auth.book import AuthConfig, TokenBook, scope_for
from p2pworld.channel.hub import ChannelHub
from p2pworld.core.cores import WORLD_MESSAGES, Cores, build_cores
from p2pworld.core.routes import ROUTES, message_scope
from p2pworld.effects import PeerMisbehaved, Send
from p2pworld.errors import RemoteProtocolError, Unauthorized
from p2pworld.identity import Ed25519Signer, node_id
from p2pworld.log.entry import Submission
from p2pworld.wire import (
    MESSAGE_TYPES,
    ChannelAnnounce,
    Message,
    Nack,
    Ping,
    Pong,
    Submit,
    Subscribe,
    WorldDigest,
    WorldGraft,
    WorldIHave,
    WorldPrune,
    WorldPush,
)

from . import layout
from .test_auth import KEYS, NOW, R, X, cores, refused, token

WORLD = {WorldPush, WorldIHave, WorldGraft, WorldPrune, WorldDigest}
CHANNEL = bytes(range(16))


# --- (a), (b): the table itself ------------------------------------------------------------

def test_every_registered_type_has_exactly_one_route() -> None:
    assert set(ROUTES) == set(MESSAGE_TYPES.values())
    assert len(ROUTES) == len(MESSAGE_TYPES)


def test_keepalive_is_the_node_s_world_gossip_the_world_s_the_rest_the_hub_s() -> None:
    assert {t for t, r in ROUTES.items() if r.core == "node"} == {Ping, Pong}
    assert {t for t, r in ROUTES.items() if r.core == "world"} == WORLD
    assert {t for t, r in ROUTES.items() if r.core == "hub"} == \
        set(MESSAGE_TYPES.values()) - WORLD - {Ping, Pong}
    assert set(WORLD_MESSAGES) == WORLD  # kept for importers, derived from the table


def test_scopes_belong_to_mutating_types_and_every_route_says_why() -> None:
    for t, r in ROUTES.items():
        assert r.why.strip(), t
        if (r.scope is not None or r.control_scope is not None) and t is not Subscribe:
            # A subscription mutates nothing but is a read of a scoped channel.
            assert t.MUTATES, f"{t.TYPE} has a scope but does not mutate"
    unscoped = [t for t in MESSAGE_TYPES.values() if t.MUTATES and ROUTES[t].scope is None]
    assert unscoped == [WorldPush] and "per record" in ROUTES[WorldPush].why


def test_message_scopes_are_the_reducers_scopes() -> None:
    # The local reducer and the message it sends need the same scope.
    assert message_scope(ChannelAnnounce, channel=CHANNEL) == scope_for("open_channel")
    assert message_scope(Subscribe, channel=CHANNEL) == \
        scope_for("ack_message", channel=CHANNEL)  # reading a channel: its read scope
    assert message_scope(Submit, channel=CHANNEL) == \
        scope_for("publish_message", channel=CHANNEL)
    assert message_scope(Submit, channel=CHANNEL, kind="ctl") == scope_for("close_channel")
    assert message_scope(Ping) is None and message_scope(WorldPush) is None
    with pytest.raises(KeyError):
        message_scope(Message)


# --- (c): the cores route by the table ------------------------------------------------------

def _cores() -> Cores:
    return build_cores(Ed25519Signer(bytes(32)), workspace="lab", rng=random.Random(0),
                       incarnation=1)


def _blank(t: type[Message]) -> Message:
    """An instance of ``t`` with no fields set: routing looks at its type only."""
    return object.__new__(t)


@pytest.mark.parametrize("t", sorted(ROUTES, key=lambda t: t.TYPE), ids=lambda t: t.TYPE)
def test_receive_hands_each_type_to_the_core_its_route_names(
        t: type[Message], monkeypatch: pytest.MonkeyPatch) -> None:
    c = _cores()
    calls: list[str] = []
    monkeypatch.setattr(c.hub, "receive", lambda peer, msg, *, now_ms: calls.append("hub") or [])
    monkeypatch.setattr(c.world, "receive",
                        lambda peer, msg, *, now_ms: calls.append("world") or [])
    assert c.receive(b"p" * 32, _blank(t), now_ms=0) == []
    assert calls == ([] if ROUTES[t].core == "node" else [ROUTES[t].core])


def test_a_type_with_no_route_is_a_typed_refusal_not_a_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Stray(Message):
        TYPE = "stray"

    c = _cores()
    monkeypatch.setattr(c.hub, "receive", lambda *a, **k: pytest.fail("hub called"))
    monkeypatch.setattr(c.world, "receive", lambda *a, **k: pytest.fail("world called"))
    fx = c.receive(b"p" * 32, Stray(), now_ms=0)
    assert len(fx) == 1 and isinstance(fx[0], PeerMisbehaved)
    assert isinstance(fx[0].error, RemoteProtocolError) and fx[0].peer == b"p" * 32


# --- (d): scopes of received messages are stated in the table only --------------------------

def _routed_scope_literals() -> set[str]:
    """Each routed scope, or its fixed part before the first ``{``."""
    out = set()
    for r in ROUTES.values():
        for s in (r.scope, r.control_scope):
            if s is not None:
                out.add(s.split("{")[0])
    return out


def _constants(tree: ast.AST) -> Iterator[ast.Constant]:
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            yield n


def test_no_module_but_the_table_spells_a_routed_scope() -> None:
    # ``p2pworld/auth`` is the token vocabulary (the reducers' scopes and the scopes a control
    # service grants by default): API-side, not routing.
    scopes = _routed_scope_literals()
    assert scopes == {"channel:open", "channel:publish:", "channel:read:"}
    bad = []
    for module, path in layout.source_files().items():
        rel = path.relative_to(layout.ROOT).as_posix()
        if rel == "p2pworld/core/routes.py" or rel.startswith(("p2pworld/auth/", "discovery/")):
            continue
        for n in _constants(ast.parse(path.read_text())):
            if any(n.value.startswith(s) for s in scopes):
                bad.append(f"{module}:{n.lineno}: {n.value!r}")
    assert not bad, bad


def _hub_class() -> ast.ClassDef:
    tree = ast.parse((layout.ROOT / "p2pworld/channel/hub.py").read_text())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ChannelHub")


def test_every_hub_authorization_names_a_message_type() -> None:
    names = {t.__name__ for t in MESSAGE_TYPES.values()}
    calls = [n for n in ast.walk(_hub_class()) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and n.func.attr == "_authorize"]
    assert len(calls) >= 5
    for call in calls:
        arg = call.args[1]
        typed = (isinstance(arg, ast.Name) and arg.id in names) or (
            isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name)
            and arg.func.id == "type")
        assert typed, f"line {call.lineno}: _authorize's scope must come from the route table"


def test_the_literal_check_can_fail() -> None:
    tree = ast.parse('"""channel:open in a docstring is fine."""\nx = f"channel:publish:{c}"\n')
    assert [n.value for n in _constants(tree)] == ["channel:publish:"]


# --- (e): the refusals are what they were -----------------------------------------------------

def test_an_unknown_channel_announced_without_channel_open_is_refused_as_before() -> None:
    receiver = cores(R, token(R))
    assert receiver.auth is not None
    receiver.auth.learn(token(X, scopes=("world:join", "channel:publish:*")), now=NOW,
                        node_key=X.public_key)
    x = cores(X, token(X))
    rec, _ = x.hub.open_channel("c", now_ms=NOW * 1000)
    receiver.peer_up(node_id(X.public_key), X.public_key, now_ms=NOW * 1000)
    fx = receiver.receive(node_id(X.public_key), ChannelAnnounce(rec), now_ms=NOW * 1000)
    assert refused(fx) == ["SCOPE_DENIED"]
    assert isinstance(fx[0], PeerMisbehaved) and fx[0].peer == node_id(X.public_key)
    assert "'channel:open'" in fx[0].error.message
    assert receiver.hub.replicas == {} and receiver.hub.errors == {"SCOPE_DENIED": 1}
    # The same announce from an owner holding channel:open is taken.
    receiver.auth.learn(token(X, exp=NOW + 900), now=NOW, node_key=X.public_key)
    fx = receiver.receive(node_id(X.public_key), ChannelAnnounce(rec), now_ms=NOW * 1000)
    assert not refused(fx) and rec.channel in receiver.hub.replicas


def test_a_control_entry_needs_channel_open_a_message_channel_publish() -> None:
    receiver = cores(R, token(R))
    assert receiver.auth is not None
    receiver.auth.learn(token(X, scopes=("channel:publish:*",)), now=NOW, node_key=X.public_key)
    rec, _ = receiver.hub.open_channel("mine", now_ms=NOW * 1000)
    receiver.peer_up(node_id(X.public_key), X.public_key, now_ms=NOW * 1000)
    peer = node_id(X.public_key)
    ctl = Submission.create(X, channel=rec.channel, idem_key=b"c", payload=b"p", kind="ctl")
    fx = receiver.receive(peer, Submit(1, ctl), now_ms=NOW * 1000)
    nacks = [e.message for e in fx if isinstance(e, Send) and isinstance(e.message, Nack)]
    assert [n.code for n in nacks] == ["SCOPE_DENIED"] and "'channel:open'" in nacks[0].reason
    msg = Submission.create(X, channel=rec.channel, idem_key=b"m", payload=b"p")
    assert not refused(receiver.receive(peer, Submit(2, msg), now_ms=NOW * 1000))


def test_a_hub_checking_tokens_without_the_table_refuses() -> None:
    # Fail closed: only build_cores gives the hub its scopes; one built by hand refuses.
    hub = ChannelHub(X, workspace="w", rng=random.Random(0),
                     auth=TokenBook(AuthConfig(keys=dict(KEYS))))
    with pytest.raises(Unauthorized):
        hub.open_channel("c", now_ms=NOW * 1000)
