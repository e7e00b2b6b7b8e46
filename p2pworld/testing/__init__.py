"""Testing helpers for p2pworld users and for the project's own tests, like ``trio.testing``.

* :class:`Simulator` — seeded, deterministic runs of many nodes with virtual time and faults
  (``docs/simulation.md``).
* :class:`MemoryLogStore` — the durable store's contract in memory: what was written (synced)
  survives :meth:`~MemoryLogStore.crash`, and writing and loading run the same code as the
  sqlite store's.
"""

from p2pworld.testing.sim import Simulator
from p2pworld.testing.store import MemoryLogStore

__all__ = ["MemoryLogStore", "Simulator"]
