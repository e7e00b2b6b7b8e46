"""The API edge of a running node: argument checks and the node's clock.

The checks are a core's (:func:`p2pworld.core.calls.need`,
:func:`p2pworld.core.calls.need_timeout`), named here too; the clock is the runtime's own.

Example:
    >>> need(b"id", bytes, "channel")
    >>> need("id", bytes, "channel")
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: channel must be bytes, not str
"""

from __future__ import annotations

import time

from p2pworld.core.calls import need, need_timeout


def now_ms() -> int:
    """The node's clock: wall-clock milliseconds."""
    return int(time.time() * 1000)


__all__ = ["need", "need_timeout", "now_ms"]
