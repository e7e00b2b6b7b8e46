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

import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from p2pworld.core.supervision import (
    HEALTHY_AFTER,
    RESTART_BASE,
    RESTART_CAP,
    SCOPES,
    TASKS,
    Failure,
    RestartSchedule,
    Scope,
    Starter,
    TaskInfo,
    end_node,
    info_of,
    restarts,
    task,
    typed,
    unwrapped,
)

# The registry, the typed errors and the restart rules are the pure core's
# (p2pworld.core.supervision); this module starts the tasks and contains their failures.


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
        self._restarts = RestartSchedule(base=RESTART_BASE, cap=RESTART_CAP,
                                         healthy_after=HEALTHY_AFTER)
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
            end_node(info, e)

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
            end_node(info, e)

    async def _boundary(self, info: TaskInfo, key: str, fn: Callable[..., Awaitable[Any]],
                        args: tuple[Any, ...],
                        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        starter = Starter(task_status.started)

        async def run() -> None:
            if _takes_task_status(fn):
                await fn(*args, task_status=_Status(starter.started_with))
            else:
                starter.started_with()
                await fn(*args)

        while True:
            t0 = trio.current_time()
            try:
                await run()
                return
            except Exception as e:  # noqa: BLE001 - the scope boundary (see the module docs)
                # Raised here, typed, when it failed before it started and is not restarted.
                restart = restarts(info, e, started=starter.started, closed=self.closed)
                self._ended(info, key, e, restarting=restart, args=args)
                if not restart:
                    end_node(info, e)
                    return
            starter.failed()
            await trio.sleep(self._restarts.delay(info.name, key,
                                                  ran_for=trio.current_time() - t0,
                                                  rng=self.rng))

    def _ended(self, info: TaskInfo, key: str, e: BaseException, *, restarting: bool,
               args: tuple[Any, ...] = ()) -> None:
        self.failures += 1
        self.on_failure(Failure(info.scope, key, info.name, typed(e), restarting, args))


class _Status:
    """A ``task_status`` that tells the supervisor the task started."""

    def __init__(self, ok: Callable[..., None]) -> None:
        self._ok = ok

    def started(self, value: Any = None) -> None:
        self._ok(value)


def _takes_task_status(fn: Callable[..., Any]) -> bool:
    import inspect

    try:
        return "task_status" in inspect.signature(unwrapped(fn)).parameters
    except (TypeError, ValueError):
        return False


__all__ = ["Failure", "SCOPES", "Scope", "Supervisor", "TaskInfo", "TASKS", "info_of",
           "spawn_in", "start_in", "task", "typed"]
