"""Alias of :mod:`p2pworld.core.mirror` (its old path, kept importable)."""

from p2pworld.core.mirror import *  # noqa: F403
