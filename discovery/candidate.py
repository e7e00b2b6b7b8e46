"""Alias of :mod:`p2pworld.transport.candidate` (its old path, kept importable)."""

from p2pworld.transport.candidate import *  # noqa: F403
