"""Shared pieces of the ``p2pworld`` commands."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Awaitable, Callable

import trio

from p2pworld.io.scopes import spawn_in, task


async def stdin_line() -> str:
    """The next line of stdin ("" at its end), read in a thread the command can walk away
    from: Ctrl-C (or any cancellation) ends the command at once even while stdin is an open
    pipe nobody writes to (``trio.wrap_file`` waits for its thread, so the read would hold
    the exit). A function, not an async generator: a generator left suspended in a read when
    its command is cancelled is finalized later, outside trio."""
    return await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""What ends a command cleanly: Ctrl-C, and the operator's ``kill`` / ``docker stop``."""
GRACE_S = 15.0
"""How long a command that stops gracefully (it waits on ``args.stop_requested``, as
``p2pworld node`` does to hand its channels off) has after the first signal before it is
cancelled; a second signal cancels it at once."""


def run_until_interrupted(run: Callable[[argparse.Namespace], Awaitable[int]],
                          args: argparse.Namespace) -> int:
    """``trio.run(run, args)``; Ctrl-C or SIGTERM ends it quietly with status 0.

    The signals arrive as messages (``trio.open_signal_receiver``) and cancel the command,
    so its nurseries and the node close in order. Trio's default raises
    ``KeyboardInterrupt`` at whatever line is running, which could land between two
    ``async with`` entries (trio then reports a corrupted nursery stack) or inside code that
    cleans up and waits: a node then ignored Ctrl-C for good. A second signal while the
    command is closing falls back to that default (press Ctrl-C again to force the exit).
    """
    from p2pworld.errors import P2PWorldError

    rc = 0
    try:
        try:
            rc = trio.run(_until_signalled, run, args)
        except* KeyboardInterrupt:
            pass
    except BaseExceptionGroup as g:
        # One typed failure inside the command's nursery leaves as itself (main prints it).
        typed = [x for x in g.exceptions if isinstance(x, P2PWorldError)]
        if len(typed) == len(g.exceptions) == 1:
            raise typed[0] from None
        raise
    return rc


async def _until_signalled(run: Callable[[argparse.Namespace], Awaitable[int]],
                           args: argparse.Namespace) -> int:
    """``await run(args)``, cancelled by the first of :data:`STOP_SIGNALS` (status 0)."""
    if threading.current_thread() is not threading.main_thread():
        return await run(args)  # signals reach only the main thread: nothing to receive
    rc: list[int] = []
    failed: list[BaseException] = []
    stop = args.stop_requested = trio.Event()
    async with trio.open_nursery() as nursery:
        spawn_in(nursery, _command, run, args, rc, failed, nursery.cancel_scope)
        # Open until the signal that cancels: a later one gets trio's KeyboardInterrupt.
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async for _ in signals:
                if getattr(args, "graceful", False) and not stop.is_set():
                    # The command ends itself (a node hands its channels off first), within
                    # the grace period; a second signal cancels it.
                    stop.set()
                    nursery.cancel_scope.deadline = trio.current_time() + GRACE_S
                    continue
                nursery.cancel_scope.cancel()
                break
    if failed:
        raise failed[0]
    return rc[0] if rc else 0


@task("node", boundary=False)
async def _command(run: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace,
                   rc: list[int], failed: list[BaseException], done: trio.CancelScope) -> None:
    """The command itself: its status into ``rc``; its failure into ``failed`` (raised by
    :func:`_until_signalled` outside the nursery, so it leaves as itself)."""
    try:
        rc.append(await run(args))
    except BaseException as e:  # noqa: BLE001 - re-raised by the caller, outside the nursery
        if _only_cancelled(e):
            raise  # the signal's cancellation, absorbed by the caller's nursery
        failed.append(e)
    done.cancel()


def _only_cancelled(e: BaseException) -> bool:
    if isinstance(e, BaseExceptionGroup):
        return all(_only_cancelled(x) for x in e.exceptions)
    return isinstance(e, trio.Cancelled)
