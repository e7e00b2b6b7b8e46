"""Where a failure ends: every background task belongs to one scope, and a failure ends that
scope, never more.

A node runs many concurrent tasks: one per session, per dial loop, per rendezvous or relay
connection, per lane, per request to a control service, and a few of its own (the effect
runner, the store task, timers). Each is registered here with :func:`task` and the scope it
belongs to:

* ``peer`` — one peer: a session, its dial loop, an incoming connection;
* ``lane`` — one transport or discovery lane: mDNS, the Nostr lane, the bridge, presence;
* ``relay`` — one rendezvous or Nostr relay connection;
* ``request`` — one request: a control-service exchange, a mirror enqueue, a bridge publish,
  one connection to a server this package runs (control service, rendezvous);
* ``node`` — the node's own machinery (effect runner, store task, listener, timers).

A task started through a :class:`Supervisor` is a *boundary*: when it raises, the supervisor
turns the exception into a typed error (a :class:`~p2pworld.errors.P2PWorldError` keeps its
code; anything else becomes :class:`~p2pworld.errors.InternalError`), reports it (the node
counts the code in ``health()``, emits a notice and closes what the scope holds: the session,
the connection) and, for tasks registered with ``restart=True``, starts it again after a
jittered backoff. A ``node`` task with ``restart=False`` ends the node: the error leaves
``open_node`` as :class:`~p2pworld.errors.NodeFailed` (a bug), or as the store's own typed
error (:class:`~p2pworld.errors.StoreError`), which is the one failure of the outside world
that may end a node. Tasks a boundary starts in its own nursery are registered too (with
``boundary=False``): their failure travels up to the boundary that owns them.

``tests/test_scopes.py`` checks this registry against every ``start_soon`` / ``start`` call
site in the package (an AST scan) and injects an exception into every registered task.

This is supervision, not swallowing: the causes of the failures we know are fixed where they
arise (typed errors, bounded inputs); the boundary is what keeps the next unknown one from
taking the node down with it.

Example:
    >>> import trio
    >>> seen = []
    >>> @task("request")
    ... async def flaky(x: int) -> None:
    ...     raise ValueError(x)
    >>> async def main() -> None:
    ...     async with trio.open_nursery() as n:
    ...         sup = Supervisor(n, on_failure=lambda f: seen.append((f.scope, f.error.code)))
    ...         sup.spawn(flaky, 1, key="job-1")
    >>> trio.run(main)
    >>> seen
    [('request', 'INTERNAL_ERROR')]
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import trio

from p2pworld.errors import (
    InternalError,
    LocalProtocolError,
    NodeFailed,
    P2PWorldError,
    StoreError,
)
from p2pworld.transport.backoff import Backoff

Scope = Literal["peer", "lane", "relay", "request", "node"]
SCOPES: tuple[Scope, ...] = ("peer", "lane", "relay", "request", "node")

RESTART_BASE = 0.5
RESTART_CAP = 30.0
HEALTHY_AFTER = 30.0
"""A restarted task that ran this long before failing again starts its backoff afresh."""


@dataclass(frozen=True)
class TaskInfo:
    """How a registered task is supervised."""

    name: str
    """``module:qualname``."""
    scope: Scope
    restart: bool = False
    """Start it again (after a backoff) when it fails."""
    boundary: bool = True
    """Started through a :class:`Supervisor` (False: in its parent's own nursery)."""


@dataclass(frozen=True)
class Failure:
    """One scope that ended with an error: what :class:`Supervisor` reports."""

    scope: Scope
    key: str
    """Which one: a peer's node id (hex), a relay URL, a lane or request name."""
    task: str
    error: P2PWorldError
    restarting: bool
    args: tuple[Any, ...] = ()
    """The task's arguments: what the scope holds (a session, a pipe), for its owner to
    close."""


TASKS: dict[str, TaskInfo] = {}
"""Every registered task, by ``module:qualname``."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def task(scope: Scope, *, restart: bool = False, boundary: bool = True) -> Callable[[F], F]:
    """Register an async function or method as a task of ``scope``."""
    if scope not in SCOPES:
        raise LocalProtocolError(f"unknown scope {scope!r}")

    def deco(fn: F) -> F:
        name = f"{fn.__module__}:{fn.__qualname__}"
        TASKS[name] = TaskInfo(name, scope, restart, boundary)
        return fn

    return deco


def info_of(fn: Callable[..., Any]) -> TaskInfo:
    """The registration of ``fn`` (a function, bound method or partial of one)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = getattr(fn, "__func__", fn)
    got = TASKS.get(f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}")
    if got is None:
        raise LocalProtocolError(f"task {fn!r} is not registered with a scope (p2pworld.io.scopes)")
    return got


def typed(e: BaseException) -> P2PWorldError:
    """The typed error an exception ends its scope with."""
    leaves = list(_leaves(e))
    typed_leaf = next((x for x in leaves if isinstance(x, P2PWorldError)), None)
    if typed_leaf is not None:
        return typed_leaf
    leaf = leaves[0] if leaves else e
    err = InternalError(f"{type(leaf).__name__}: {str(leaf)[:200]}",
                        exception=type(leaf).__name__)
    err.__cause__ = e
    return err


def _leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [x for sub in e.exceptions for x in _leaves(sub)]
    return [e]


def spawn_in(nursery: trio.Nursery, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Start a registered non-boundary task in its parent's nursery (its failure is the
    parent's)."""
    info_of(fn)
    nursery.start_soon(fn, *args)


async def start_in(nursery: trio.Nursery, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """``nursery.start`` for a registered non-boundary task."""
    info_of(fn)
    return await nursery.start(fn, *args)


class Supervisor:
    """Starts boundary tasks in ``nursery`` and contains their failures (module docs).

    ``on_failure`` is called (synchronously, in the failing task) for every scope that ended
    with an error, ``node`` scopes included, before the node ends.
    """

    def __init__(self, nursery: trio.Nursery, *, on_failure: Callable[[Failure], None],
                 rng: random.Random | None = None) -> None:
        self.nursery = nursery
        self.on_failure = on_failure
        self.rng = rng or random.SystemRandom()
        self.failures = 0
        self._backoff: dict[tuple[str, str], Backoff] = {}
        self.closed = False

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any, key: str = "") -> None:
        """Start ``fn(*args)`` as a boundary of its registered scope."""
        info = info_of(fn)
        self.nursery.start_soon(self._boundary, info, key, fn, args)

    async def start(self, fn: Callable[..., Awaitable[Any]], *args: Any, key: str = "") -> Any:
        """Like :meth:`spawn` for a task that reports ``task_status.started()``. A failure
        before it started is raised here (typed) for a task that is not restarted; a
        restartable one is reported and retried, and this returns None at once."""
        info = info_of(fn)
        return await self.nursery.start(self._boundary, info, key, fn, args)

    async def contain(self, fn: Callable[..., Awaitable[Any]], *args: Any, key: str = ""
                      ) -> None:
        """Run ``fn(*args)`` here, as a boundary (for callbacks other libraries start in
        their own nurseries, such as a websocket server's connection handler). Never
        restarted."""
        info = info_of(fn)
        try:
            await fn(*args)
        except Exception as e:  # noqa: BLE001 - the scope boundary (see the module docs)
            self._ended(info, key, e, restarting=False, args=args)
            self._end_node(info, e)

    @staticmethod
    async def contain_once(fn: Callable[..., Awaitable[Any]], *args: Any,
                           on_failure: Callable[[Failure], None], key: str = "") -> None:
        """:meth:`contain` without a supervisor (for a server's per-connection handler,
        which has no nursery of its own to hand a supervisor)."""
        info = info_of(fn)
        try:
            await fn(*args)
        except Exception as e:  # noqa: BLE001 - the scope boundary (see the module docs)
            on_failure(Failure(info.scope, key, info.name, typed(e), False, args))
            Supervisor._end_node(info, e)

    async def _boundary(self, info: TaskInfo, key: str, fn: Callable[..., Awaitable[Any]],
                        args: tuple[Any, ...],
                        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        started = False

        async def run() -> None:
            nonlocal started
            if _takes_task_status(fn):
                def ok(value: Any = None) -> None:
                    nonlocal started
                    started = True
                    task_status.started(value)
                await fn(*args, task_status=_Status(ok))
            else:
                started = True
                task_status.started()
                await fn(*args)

        while True:
            t0 = trio.current_time()
            try:
                await run()
                return
            except Exception as e:  # noqa: BLE001 - the scope boundary (see the module docs)
                if not started and not info.restart:
                    err = typed(e)
                    if isinstance(err, InternalError):
                        self._end_node(info, e)  # a node task's bug: the node does not start
                    raise err from e
                restart = info.restart and not self.closed
                self._ended(info, key, e, restarting=restart, args=args)
                if not restart:
                    self._end_node(info, e)
                    return
            if not started:
                # A restartable task that failed before it was ready does not hold up its
                # starter: it is reported, and keeps being retried in the background.
                started = True
                task_status.started()
            b = self._backoff.setdefault((info.name, key),
                                         Backoff(base=RESTART_BASE, cap=RESTART_CAP))
            if trio.current_time() - t0 > HEALTHY_AFTER:
                b.reset()
            await trio.sleep(b.next_delay(self.rng))
            task_status = trio.TASK_STATUS_IGNORED

    def _ended(self, info: TaskInfo, key: str, e: BaseException, *, restarting: bool,
               args: tuple[Any, ...] = ()) -> None:
        self.failures += 1
        self.on_failure(Failure(info.scope, key, info.name, typed(e), restarting, args))

    @staticmethod
    def _end_node(info: TaskInfo, e: Exception) -> None:
        """A ``node`` task that is not restarted ends the node, typed."""
        if info.scope != "node":
            return
        err = typed(e)
        if isinstance(err, StoreError):
            raise err
        raise NodeFailed(f"{info.name} failed: {err.code}: {err.message}", task=info.name,
                         cause=err.code) from e


class _Status:
    """A ``task_status`` that tells the supervisor the task started."""

    def __init__(self, ok: Callable[..., None]) -> None:
        self._ok = ok

    def started(self, value: Any = None) -> None:
        self._ok(value)


def _takes_task_status(fn: Callable[..., Any]) -> bool:
    import inspect

    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    try:
        return "task_status" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


__all__ = ["Failure", "Scope", "Supervisor", "TaskInfo", "TASKS", "info_of", "spawn_in",
           "start_in", "task", "typed"]
