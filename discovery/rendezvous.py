"""Alias of :mod:`p2pworld.transport.rendezvous` (its old path, kept importable)."""

from p2pworld.transport.rendezvous import *  # noqa: F403
