"""The supervision core (p2pworld.core.supervision): the registry, typed errors, restart or
raise, which failures end the node, the starter and the restart backoff; no trio."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld.core.supervision import (
    HEALTHY_AFTER,
    RESTART_BASE,
    RESTART_CAP,
    TASKS,
    RestartSchedule,
    Starter,
    TaskInfo,
    end_node,
    info_of,
    restarts,
    task,
    typed,
    unwrapped,
)
from p2pworld.errors import (
    InternalError,
    LocalProtocolError,
    NodeFailed,
    SessionClosed,
    StoreError,
)
from p2pworld.io import scopes


@task("request")
async def _registered(x: int) -> None:
    pass


class _Owner:
    @task("peer", restart=True)
    async def method(self) -> None:
        pass


def test_the_shell_names_the_core_s_registry() -> None:
    assert scopes.TASKS is TASKS and scopes.task is task and scopes.info_of is info_of
    assert scopes.typed is typed and scopes.Failure.__module__ == "p2pworld.core.supervision"


def test_registration_and_lookup() -> None:
    name = f"{__name__}:_registered"
    assert TASKS[name] == TaskInfo(name, "request", False, True)
    assert info_of(_registered) is TASKS[name]
    assert info_of(functools.partial(functools.partial(_registered, 1))) is TASKS[name]
    bound = info_of(_Owner().method)
    assert (bound.scope, bound.restart) == ("peer", True)
    with pytest.raises(LocalProtocolError, match="unknown scope"):
        task("galaxy")  # type: ignore[arg-type]

    async def loose() -> None:
        pass

    with pytest.raises(LocalProtocolError, match="is not registered with a scope"):
        info_of(loose)


def test_unwrapped() -> None:
    assert unwrapped(_registered) is _registered
    assert unwrapped(functools.partial(functools.partial(_registered), 1)) is _registered


def test_typed_keeps_a_typed_leaf_and_names_a_bug() -> None:
    closed = SessionClosed("gone")
    assert typed(closed) is closed
    assert typed(ExceptionGroup("g", [ValueError("v"), ExceptionGroup("h", [closed])])) is closed
    bug = KeyError("k")
    err = typed(bug)
    assert isinstance(err, InternalError) and err.__cause__ is bug
    assert err.message == "KeyError: 'k'" and err.details["exception"] == "KeyError"
    long = typed(ValueError("x" * 500))
    assert len(long.message) == len("ValueError: ") + 200
    grouped = typed(ExceptionGroup("g", [OSError("o"), KeyError("k")]))
    assert grouped.details["exception"] == "OSError"


@pytest.mark.parametrize("restart", [True, False])
@pytest.mark.parametrize("closed", [True, False])
def test_a_started_task_restarts_unless_the_supervisor_closed(restart: bool,
                                                              closed: bool) -> None:
    info = TaskInfo("m:t", "lane", restart=restart)
    assert restarts(info, ValueError("x"), started=True, closed=closed) is (
        restart and not closed)


def test_a_restartable_task_that_never_started_restarts() -> None:
    info = TaskInfo("m:t", "relay", restart=True)
    assert restarts(info, ValueError("x"), started=False, closed=False) is True


def test_a_failure_before_start_is_raised_typed() -> None:
    info = TaskInfo("m:t", "lane")
    bug = ValueError("x")
    with pytest.raises(InternalError) as got:
        restarts(info, bug, started=False, closed=False)
    assert got.value.__cause__ is bug
    closed = SessionClosed("gone")
    with pytest.raises(SessionClosed):
        restarts(info, closed, started=False, closed=False)


def test_a_node_task_s_bug_before_start_ends_the_node() -> None:
    with pytest.raises(NodeFailed):
        restarts(TaskInfo("m:t", "node"), KeyError("k"), started=False, closed=False)
    # A typed error before start is its starter's to see, even for a node task.
    with pytest.raises(SessionClosed):
        restarts(TaskInfo("m:t", "node"), SessionClosed("x"), started=False, closed=False)


def test_only_node_tasks_end_the_node() -> None:
    for scope in ("peer", "lane", "relay", "request"):
        end_node(TaskInfo("m:t", scope), KeyError("k"))  # type: ignore[arg-type]
    store = StoreError("disk I/O error", path="log.db")
    with pytest.raises(StoreError) as got:
        end_node(TaskInfo("m:t", "node"), ExceptionGroup("g", [store]))
    assert got.value is store
    with pytest.raises(NodeFailed) as failed:
        end_node(TaskInfo("m:store", "node"), KeyError("k"))
    assert failed.value.details == {"task": "m:store", "cause": "INTERNAL_ERROR"}
    assert failed.value.message.startswith("m:store failed: INTERNAL_ERROR: KeyError")


def test_the_starter_is_told_once() -> None:
    told: list[Any] = []
    s = Starter(told.append)
    s.started_with("ready")
    assert s.started and told == ["ready"]
    s.failed()  # started already: nobody waits
    s.started_with("restarted")
    assert told == ["ready"]

    told.clear()
    early = Starter(told.append)
    assert not early.started
    early.failed()  # failed before it was ready: its starter goes on
    assert early.started and told == [None]


def test_restart_delays_grow_and_start_afresh_after_a_healthy_run() -> None:
    rng = random.Random(3)
    schedule = RestartSchedule()
    assert (schedule.base, schedule.cap, schedule.healthy_after) == (
        RESTART_BASE, RESTART_CAP, HEALTHY_AFTER)
    ceilings = [min(RESTART_CAP, RESTART_BASE * 2 ** i) for i in range(10)]
    for c in ceilings:
        d = schedule.delay("m:t", "k", ran_for=1.0, rng=rng)
        assert c / 2 <= d <= c
    assert schedule.delay("m:t", "k", ran_for=HEALTHY_AFTER + 1, rng=rng) <= RESTART_BASE
    # Each (task, key) has its own backoff.
    assert schedule.delay("m:t", "other", ran_for=1.0, rng=rng) <= RESTART_BASE


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 100), max_size=30), st.integers(0, 2**32))
def test_property_delays_stay_within_the_bounds(runs: list[float], seed: int) -> None:
    schedule, rng = RestartSchedule(), random.Random(seed)
    for ran_for in runs:
        assert RESTART_BASE / 2 <= schedule.delay("t", "k", ran_for=ran_for, rng=rng) \
            <= RESTART_CAP
