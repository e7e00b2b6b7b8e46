"""Shared pieces of the ``p2pworld`` commands."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

import trio


def run_until_interrupted(run: Callable[[argparse.Namespace], Awaitable[int]],
                          args: argparse.Namespace) -> int:
    """``trio.run(run, args)``; Ctrl-C ends it quietly with status 0."""
    rc = 0
    try:
        rc = trio.run(run, args)
    except* KeyboardInterrupt:
        pass
    return rc
