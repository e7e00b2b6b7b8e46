"""A node's configuration, checked before anything starts (pure).

``open_node`` refuses a :class:`~p2pworld.runtime.config.NodeConfig` whose fields have the
wrong types or are out of range with one typed
:class:`~p2pworld.errors.InvalidArgument` naming the field, instead of an ``AttributeError``
from deep inside a task later.

Example:
    >>> from types import SimpleNamespace as Config
    >>> ok = dict(home="/tmp/a", workspace="lab", port=0, interfaces=["127.0.0.1"],
    ...           peers=[], rendezvous=[], relays=[], startup_check_s=2.0)
    >>> check_config(Config(**ok))
    >>> check_config(Config(**{**ok, "peers": "ws://x"}))
    Traceback (most recent call last):
    ...
    p2pworld.errors.InvalidArgument: NodeConfig.peers must be a list of strings
"""

from __future__ import annotations

from typing import Any

from p2pworld.core.calls import need
from p2pworld.errors import InvalidArgument

LIST_FIELDS = ("interfaces", "peers", "rendezvous", "relays")
"""Fields that hold lists of strings (addresses, URLs)."""
MAX_WORKSPACE_BYTES = 128
MAX_STARTUP_CHECK_S = 600
MAX_HANDOFF_S = 60


def check_config(config: Any) -> None:
    """Raise :class:`~p2pworld.errors.InvalidArgument` for the first field that is not as
    ``NodeConfig`` documents it."""
    if not isinstance(config.home, str) and not hasattr(config.home, "__fspath__"):
        raise InvalidArgument("NodeConfig.home must be str or Path, not "
                              f"{type(config.home).__name__}", arg="NodeConfig.home")
    need(config.workspace, str, "NodeConfig.workspace")
    need(config.port, int, "NodeConfig.port")
    for name in LIST_FIELDS:
        v = getattr(config, name)
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise InvalidArgument(f"NodeConfig.{name} must be a list of strings", arg=name)
    if not config.workspace or len(config.workspace.encode()) > MAX_WORKSPACE_BYTES:
        raise InvalidArgument("NodeConfig.workspace must be 1..128 bytes of UTF-8",
                              arg="workspace")
    s = config.startup_check_s
    if not isinstance(s, (int, float)) or not 0 <= s <= MAX_STARTUP_CHECK_S:
        raise InvalidArgument("NodeConfig.startup_check_s must be 0..600 seconds",
                              arg="startup_check_s")
    h = getattr(config, "handoff_timeout_s", 0.0)
    if isinstance(h, bool) or not isinstance(h, (int, float)) or not 0 <= h <= MAX_HANDOFF_S:
        raise InvalidArgument("NodeConfig.handoff_timeout_s must be 0..60 seconds",
                              arg="handoff_timeout_s")


__all__ = ["LIST_FIELDS", "check_config"]
