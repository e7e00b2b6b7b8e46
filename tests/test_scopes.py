"""Every background task is registered with its scope, and a failure ends that scope only.

The registry (:mod:`p2pworld.io.scopes`) is checked against every call site that starts a task
in the package (an AST scan): nothing is started with a bare ``nursery.start_soon`` /
``nursery.start``, every target of ``spawn_in`` / ``start_in`` / ``sup.spawn`` / ``sup.start``
/ ``sup.contain`` (and every handler given to a server) is registered, and every registered
task is started somewhere. The injection tests (``test_scope_injection.py``) then make each
registered task fail and watch what the failure takes down.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import trio

from p2pworld.errors import NodeFailed, P2PWorldError, StoreError
from p2pworld.io.scopes import TASKS, Failure, Supervisor, info_of, task

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("p2pworld", "discovery")
SPAWNERS = {"spawn_in": 1, "start_in": 1}
"""Functions that start a task, and the position of the target among their arguments."""
SUPERVISOR_METHODS = {"spawn", "start", "contain", "contain_once"}
SERVER_HANDLERS = {"serve_websocket": 0, "serve_listeners": 0}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            mod = ".".join(rel.parts)
            if mod.endswith("__init__"):
                mod = mod[: -len(".__init__")]
            out.append((mod, path))
    return out


def _text(node: ast.AST) -> str:
    return ast.unparse(node)


class _Sites(ast.NodeVisitor):
    """Call sites that start tasks, with the class they are in."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.cls: list[str] = []
        self.sites: list[tuple[str, ast.expr, int]] = []  # (how, target, line)
        self.bare: list[tuple[str, int]] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.cls.append(node.name)
        self.generic_visit(node)
        self.cls.pop()

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "start_soon":
            self.bare.append((_text(node), node.lineno))
        elif isinstance(f, ast.Attribute) and f.attr == "start" and node.args and \
                _looks_like_nursery(f.value):
            self.bare.append((_text(node), node.lineno))
        elif isinstance(f, ast.Name) and f.id in SPAWNERS and len(node.args) > SPAWNERS[f.id]:
            self.sites.append((f.id, node.args[SPAWNERS[f.id]], node.lineno))
        elif isinstance(f, ast.Attribute) and f.attr in SUPERVISOR_METHODS and node.args and \
                _text(f.value).split(".")[-1] in ("sup", "_sup", "supervisor", "Supervisor"):
            self.sites.append((f.attr, node.args[0], node.lineno))
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) \
            else ""
        if name in SERVER_HANDLERS and len(node.args) > SERVER_HANDLERS[name]:
            self.sites.append((name, node.args[SERVER_HANDLERS[name]], node.lineno))
        self.generic_visit(node)


def _looks_like_nursery(expr: ast.expr) -> bool:
    name = _text(expr).split(".")[-1]
    return name in ("n", "nursery", "_nursery", "conn", "work", "authority") or \
        name.endswith("nursery")


def _resolve(module: str, cls: str | None, target: ast.expr) -> set[str]:
    """Registry names a call-site target may stand for (a handler that is a partial of a
    supervisor's ``contain`` stands for the function it contains)."""
    if isinstance(target, ast.Call) and _text(target.func).endswith("partial") and \
            len(target.args) >= 2 and _text(target.args[0]).split(".")[-1] in (
                "contain", "contain_once"):
        return _resolve(module, cls, target.args[1])
    if isinstance(target, ast.Name):
        return {n for n in TASKS if n.split(":")[1].split(".")[-1] == target.id}
    if isinstance(target, ast.Attribute):
        return {n for n in TASKS if n.split(":")[1].endswith("." + target.attr)
                or n.split(":")[1] == target.attr}
    return set()


def _scan() -> tuple[list[str], list[str], set[str]]:
    for mod, _ in _modules():
        importlib.import_module(mod)  # registers its tasks
    bare, unregistered, used = [], [], set()
    for mod, path in _modules():
        if mod == "p2pworld.io.scopes":
            continue
        v = _Sites(mod)
        v.visit(ast.parse(path.read_text()))
        bare += [f"{path.relative_to(ROOT)}:{line}: {text}" for text, line in v.bare]
        for how, target, line in v.sites:
            names = _resolve(mod, None, target)
            if not names:
                unregistered.append(f"{path.relative_to(ROOT)}:{line}: {how}({_text(target)})")
            used |= names
    return bare, unregistered, used


def test_every_task_is_started_through_the_registry() -> None:
    bare, unregistered, used = _scan()
    assert not bare, "tasks started without a scope:\n" + "\n".join(bare)
    assert not unregistered, "targets not registered with a scope:\n" + "\n".join(unregistered)
    stale = sorted(set(TASKS) - used - {n for n in TASKS if n.startswith("tests.")})
    assert not stale, "registered but never started: " + ", ".join(stale)


def test_the_registry_covers_every_scope_a_failure_may_end() -> None:
    _scan()
    scopes = {i.scope for i in TASKS.values()}
    assert scopes == {"peer", "lane", "relay", "request", "node"}
    # What must never end the node is contained: every peer, lane, relay or request task
    # started by a node is a boundary itself or runs inside one.
    for name, info in TASKS.items():
        if info.scope == "node" and info.boundary and not info.restart and \
                not name.startswith("tests."):
            # The node's data path and its listener (the node ends, typed), and the command
            # loop of ``p2pworld node`` (the process ends).
            assert name.rsplit(".", 1)[-1].split(":")[-1] in (
                "_effect_runner", "_store_runner", "_listen", "_commands"), name


# --- the supervisor itself -------------------------------------------------------------------

@task("peer", restart=True)
async def _flaky_loop(runs: list[int], fail_times: int) -> None:
    runs.append(len(runs))
    if len(runs) <= fail_times:
        raise RuntimeError("boom")
    await trio.sleep_forever()


@task("node")
async def _fatal(kind: str) -> None:
    if kind == "store":
        raise StoreError("disk I/O error", path="log.db")
    raise KeyError("a bug")


@task("lane")
async def _not_started(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    raise ValueError("failed before it started")


async def test_a_failed_scope_is_reported_and_restarted(autojump_clock: trio.abc.Clock) -> None:
    seen: list[Failure] = []
    runs: list[int] = []
    async with trio.open_nursery() as n:
        sup = Supervisor(n, on_failure=seen.append)
        sup.spawn(_flaky_loop, runs, 2, key="peer-1")
        await trio.sleep(120)
        n.cancel_scope.cancel()
    assert len(runs) == 3  # failed twice, restarted twice, then ran
    assert [(f.scope, f.key, f.error.code, f.restarting) for f in seen] == [
        ("peer", "peer-1", "INTERNAL_ERROR", True)] * 2
    assert "RuntimeError" in seen[0].error.message


@pytest.mark.parametrize("kind,expected", [("store", StoreError), ("bug", NodeFailed)])
async def test_a_node_scope_failure_ends_the_node_typed(kind: str, expected: type) -> None:
    seen: list[Failure] = []
    with pytest.raises(BaseExceptionGroup) as got:
        async with trio.open_nursery() as n:
            Supervisor(n, on_failure=seen.append).spawn(_fatal, kind, key="store")
    (leaf,) = got.value.exceptions
    assert isinstance(leaf, expected) and isinstance(leaf, P2PWorldError)
    assert [f.scope for f in seen] == ["node"]


async def test_a_failure_before_start_is_raised_typed() -> None:
    async with trio.open_nursery() as n:
        sup = Supervisor(n, on_failure=lambda f: None)
        with pytest.raises(P2PWorldError) as got:
            await sup.start(_not_started, key="x")
        assert got.value.code == "INTERNAL_ERROR"


def test_an_unregistered_target_is_refused() -> None:
    async def loose() -> None:
        pass

    with pytest.raises(P2PWorldError):
        info_of(loose)
