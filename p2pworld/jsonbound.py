"""JSON from the network, bounded before it is parsed.

``json.loads`` recurses once per nesting level: 20,000 ``[`` raise ``RecursionError`` deep in
the parser (and, uncaught, used to end the control service). :func:`loads` checks the size
and the nesting depth with a flat scan first, so hostile input is refused with a typed
:class:`~p2pworld.errors.DecodeError` before the parser sees it.

Example:
    >>> loads(b'{"a": [1, 2, {"b": "]]]"}]}')
    {'a': [1, 2, {'b': ']]]'}]}
    >>> try:
    ...     loads(b"[" * 20_000)
    ... except DecodeError as e:
    ...     e.code
    'DECODE_ERROR'
"""

from __future__ import annotations

import json
from typing import Any

from p2pworld.errors import DecodeError

MAX_DEPTH = 32


def depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data`` (strings are skipped)."""
    deepest = level = 0
    in_string = escaped = False
    for c in data:
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:  # quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):  # [ {
            level += 1
            deepest = max(deepest, level)
        elif c in (0x5D, 0x7D):  # ] }
            level -= 1
    return deepest


def loads(data: bytes, *, max_bytes: int = 64 * 1024, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON of at most ``max_bytes`` and ``max_depth`` levels; anything else (too
    large, too deep, not UTF-8, not JSON) raises :class:`DecodeError`."""
    if len(data) > max_bytes:
        raise DecodeError("JSON too large", limit=max_bytes, size=len(data))
    if depth(data) > max_depth:
        raise DecodeError("JSON nested too deeply", limit=max_depth)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise DecodeError(f"not JSON: {str(e)[:100]}") from None
