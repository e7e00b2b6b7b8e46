"""The API edge of a running node: argument checks and the node's clock.

Example:
    >>> need(b"id", bytes, "channel")
    >>> need("id", bytes, "channel")
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: channel must be bytes, not str
"""

from __future__ import annotations

import math
import time

from p2pworld.errors import InvalidArgument


def need(value: object, kind: type | tuple[type, ...], name: str) -> None:
    """Type-check an argument at the API edge (a typed refusal, not an AttributeError
    somewhere below)."""
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise InvalidArgument(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, "
                              f"not {type(value).__name__}", arg=name)


def need_timeout(value: object, name: str = "timeout") -> None:
    """A timeout in seconds: a finite number above 0 (checked before anything is queued)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0 < value < math.inf:
        raise InvalidArgument(f"{name} must be a number of seconds above 0, not {value!r}",
                              arg=name)


def now_ms() -> int:
    """The node's clock: wall-clock milliseconds."""
    return int(time.time() * 1000)
