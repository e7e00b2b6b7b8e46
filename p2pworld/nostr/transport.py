"""Alias of :mod:`p2pworld.core.lanes` (its old path, kept importable)."""

from p2pworld.core.lanes import *  # noqa: F403
