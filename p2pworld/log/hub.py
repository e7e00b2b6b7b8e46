"""Alias of :mod:`p2pworld.channel.hub` (its old path, kept importable)."""

from p2pworld.channel.hub import *  # noqa: F403
