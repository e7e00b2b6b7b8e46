"""Shared pieces of the ``p2pworld`` commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable

import trio


async def stdin_line() -> str:
    """The next line of stdin ("" at its end), read in a thread the command can walk away
    from: Ctrl-C (or any cancellation) ends the command at once even while stdin is an open
    pipe nobody writes to (``trio.wrap_file`` waits for its thread, so the read would hold
    the exit). A function, not an async generator: a generator left suspended in a read when
    its command is cancelled is finalized later, outside trio."""
    return await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


def run_until_interrupted(run: Callable[[argparse.Namespace], Awaitable[int]],
                          args: argparse.Namespace) -> int:
    """``trio.run(run, args)``; Ctrl-C ends it quietly with status 0."""
    from p2pworld.errors import P2PWorldError

    rc = 0
    try:
        try:
            rc = trio.run(run, args)
        except* KeyboardInterrupt:
            pass
    except BaseExceptionGroup as g:
        # One typed failure inside the command's nursery leaves as itself (main prints it).
        typed = [x for x in g.exceptions if isinstance(x, P2PWorldError)]
        if len(typed) == len(g.exceptions) == 1:
            raise typed[0] from None
        raise
    return rc
