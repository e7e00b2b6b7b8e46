"""Testing helpers for p2pworld users and for the project's own tests, like ``trio.testing``.

* :class:`MemoryLogStore` — the durable store's contract in memory: what was written (synced)
  survives :meth:`~MemoryLogStore.crash`, a torn tail can be injected, and loading runs the
  same verification code as the sqlite store.
"""

from p2pworld.testing.store import MemoryLogStore

__all__ = ["MemoryLogStore"]
