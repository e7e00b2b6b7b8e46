"""What a failure means for its scope (pure): the registry of tasks and the supervisor's rules.

:mod:`p2pworld.io.scopes` starts tasks in trio nurseries and contains their failures; what it
decides is answered here:

* the registry: :func:`task` registers an async function with its scope (an unknown scope is
  refused), :func:`info_of` finds the registration of a function, bound method or partial
  (an unregistered one is refused);
* :func:`typed`: the typed error an exception ends its scope with (the first typed leaf of an
  exception group, else :class:`~p2pworld.errors.InternalError` naming the first leaf);
* :func:`restarts`: whether a failed boundary task starts again, or its failure is raised to
  its starter (it failed before it started and is not restarted);
* :func:`end_node`: a ``node`` task that is not restarted ends the node, as the store's own
  typed error or as :class:`~p2pworld.errors.NodeFailed`;
* :class:`Starter`: when a boundary task's starter is told it started;
* :class:`RestartSchedule`: how long a restarted task waits (jittered exponential backoff
  per task and key, afresh after a healthy run).

Example:
    >>> import random
    >>> info = TaskInfo("m:loop", "peer", restart=True)
    >>> typed(ExceptionGroup("g", [KeyError("k")])).code
    'INTERNAL_ERROR'
    >>> restarts(info, ValueError("x"), started=True, closed=False)
    True
    >>> end_node(info, ValueError("x"))  # a peer's failure never ends the node
    >>> schedule = RestartSchedule()
    >>> 0.25 <= schedule.delay("m:loop", "p1", ran_for=1.0, rng=random.Random(1)) <= 0.5
    True
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from p2pworld.errors import (
    InternalError,
    LocalProtocolError,
    NodeFailed,
    P2PWorldError,
    StoreError,
)
from p2pworld.transport.backoff import Backoff

if TYPE_CHECKING:
    import random

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
    """Started through a supervisor (False: in its parent's own nursery)."""


@dataclass(frozen=True)
class Failure:
    """One scope that ended with an error: what the supervisor reports."""

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
    """Register an async function or method as a task of ``scope``.

    Raises:
        LocalProtocolError: ``scope`` is not one of :data:`SCOPES`.
    """
    if scope not in SCOPES:
        raise LocalProtocolError(f"unknown scope {scope!r}")

    def deco(fn: F) -> F:
        name = f"{fn.__module__}:{fn.__qualname__}"
        TASKS[name] = TaskInfo(name, scope, restart, boundary)
        return fn

    return deco


def info_of(fn: Callable[..., Any]) -> TaskInfo:
    """The registration of ``fn`` (a function, bound method or partial of one).

    Raises:
        LocalProtocolError: ``fn`` is not registered.
    """
    fn = unwrapped(fn)
    fn = getattr(fn, "__func__", fn)
    got = TASKS.get(f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}")
    if got is None:
        raise LocalProtocolError(f"task {fn!r} is not registered with a scope (p2pworld.io.scopes)")
    return got


def unwrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The function a partial (of a partial, ...) calls; ``fn`` itself if it is none."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


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


def restarts(info: TaskInfo, error: Exception, *, started: bool, closed: bool) -> bool:
    """Whether a boundary task that raised ``error`` starts again (True), or ends reported
    (False; :func:`end_node` then says whether the node ends with it).

    Raises:
        P2PWorldError: the task failed before it started and is not restarted: its typed
            error, for its starter (a node task's bug ends the node: NodeFailed).
    """
    if not started and not info.restart:
        err = typed(error)
        if isinstance(err, InternalError):
            end_node(info, error)  # a node task's bug: the node does not start
        raise err from error
    return info.restart and not closed


def end_node(info: TaskInfo, error: BaseException) -> None:
    """A ``node`` task that is not restarted ends the node, typed: the store's own error
    (:class:`~p2pworld.errors.StoreError`, the one failure of the outside world that may end a
    node) or :class:`~p2pworld.errors.NodeFailed` (a bug). Any other scope's failure returns.
    """
    if info.scope != "node":
        return
    err = typed(error)
    if isinstance(err, StoreError):
        raise err
    raise NodeFailed(f"{info.name} failed: {err.code}: {err.message}", task=info.name,
                     cause=err.code) from error


class Starter:
    """A boundary task's starter (``nursery.start``): told once, when the task reports it
    started, or when a restartable task failed before it did (it does not hold up its starter:
    it is reported, and keeps being retried in the background). A restart reports to nobody.

    Example:
        >>> told = []
        >>> s = Starter(told.append)
        >>> s.failed(); s.started_with("again"); s.started, told
        (True, [None])
    """

    def __init__(self, release: Callable[[Any], object]) -> None:
        self.started = False
        self._release = release

    def started_with(self, value: Any = None) -> None:
        """The task reports it started (with ``value`` for its starter)."""
        self.started = True
        self._release(value)

    def failed(self) -> None:
        """The task failed and starts again: a starter still waiting goes on without it."""
        if not self.started:
            self.started_with(None)
        self._release = _nobody


def _nobody(value: Any) -> None:
    """A restarted task's starter: nobody waits for it."""


class RestartSchedule:
    """How long a failed task waits before it starts again: a jittered exponential backoff per
    ``(task, key)``, started afresh when the task ran longer than ``healthy_after``."""

    def __init__(self, *, base: float = RESTART_BASE, cap: float = RESTART_CAP,
                 healthy_after: float = HEALTHY_AFTER) -> None:
        self.base = base
        self.cap = cap
        self.healthy_after = healthy_after
        self._backoff: dict[tuple[str, str], Backoff] = {}

    def delay(self, task: str, key: str, *, ran_for: float, rng: random.Random) -> float:
        """The wait before ``task`` (for ``key``) starts again, after it ran ``ran_for``
        seconds and failed."""
        b = self._backoff.setdefault((task, key), Backoff(base=self.base, cap=self.cap))
        if ran_for > self.healthy_after:
            b.reset()
        return b.next_delay(rng)


__all__ = ["Failure", "HEALTHY_AFTER", "RESTART_BASE", "RESTART_CAP", "RestartSchedule",
           "SCOPES", "Scope", "Starter", "TASKS", "TaskInfo", "end_node", "info_of", "restarts",
           "task", "typed", "unwrapped"]
