"""The base of every session message and the one registry of their types
(:data:`MESSAGE_TYPES`), which :mod:`p2pworld.wire` re-exports with the messages.

Example:
    >>> from p2pworld.wire import Ping
    >>> MESSAGE_TYPES["ping"] is Ping
    True
"""

from __future__ import annotations

from typing import ClassVar

from p2pworld.codec import Value


class Message:
    TYPE: ClassVar[str]
    MUTATES: ClassVar[bool] = False
    TYPED: ClassVar[bool] = False
    """``parse`` checks the type and bounds of every field it reads and ignores the rest, so
    decoding skips the generic data-model walk (``codec.decode(walk=False)``)."""

    def fields(self) -> dict[str, Value]:
        raise NotImplementedError

    @classmethod
    def parse(cls, m: dict[str, Value]) -> Message:
        raise NotImplementedError


MESSAGE_TYPES: dict[str, type[Message]] = {}


def message(cls: type[Message]) -> type[Message]:
    if cls.TYPE in MESSAGE_TYPES:
        raise RuntimeError(f"duplicate message type {cls.TYPE}")
    MESSAGE_TYPES[cls.TYPE] = cls
    return cls
