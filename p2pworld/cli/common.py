"""Shared pieces of the ``p2pworld`` commands."""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable

import trio

_STDIN = bytearray()


async def stdin_line() -> str:
    """The next line of stdin ("" at its end), read in a thread the command can walk away
    from: Ctrl-C (or any cancellation) ends the command at once even while stdin is an open
    pipe nobody writes to. The thread reads the file descriptor itself (``os.read``), not
    ``sys.stdin``: a thread left blocked in ``sys.stdin.readline`` holds the buffered
    reader's lock, and the interpreter's shutdown could wait on it for ever (the Ctrl-C test
    timed out now and then). A function, not an async generator: a generator left suspended
    in a read when its command is cancelled is finalized later, outside trio."""
    while b"\n" not in _STDIN:
        chunk = await trio.to_thread.run_sync(os.read, 0, 65536, abandon_on_cancel=True)
        if not chunk:
            rest = bytes(_STDIN)
            _STDIN.clear()
            return rest.decode("utf-8", errors="replace")
        _STDIN.extend(chunk)
    end = _STDIN.index(b"\n") + 1
    line = bytes(_STDIN[:end])
    del _STDIN[:end]
    return line.decode("utf-8", errors="replace")


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
