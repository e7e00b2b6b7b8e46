"""Alias of :mod:`p2pworld.core.cores` (its old path, kept importable)."""

from p2pworld.core.cores import *  # noqa: F403
