"""Testing helpers for p2pworld users and for the project's own tests, like ``trio.testing``.

* :class:`Simulator` — seeded, deterministic runs of many nodes with virtual time, each node
  the real cores under its real node core (``docs/simulation.md``). Its fault schedule is its
  methods, called between :meth:`~Simulator.run` steps: ``partition`` (halves, one way,
  silent), ``heal``, ``crash``, ``restart``, ``destroy_store``, ``jump_clock``, ``inject``
  (a hostile peer's message), ``revoke``, and the attributes ``loss`` (frame loss),
  ``control_up`` and ``nostr`` (relay outages and misbehaviour).
* Checkers over a finished run, each returning anomaly counts (:data:`ANOMALIES`):
  :func:`check_all`, or one by one :func:`check_channel`, :func:`check_world`,
  :func:`check_auth`, :func:`check_compute`, :func:`check_bridge`, :func:`check_stores`;
  over the stores real nodes left on disk (a real-process test), :func:`check_stored_logs`
  with the acks its writers saw (:class:`Acknowledged`); :func:`check_logs` is their shared part.
* :class:`MemoryLogStore` — the durable store's contract in memory: what was written (synced)
  survives :meth:`~MemoryLogStore.crash`, and writing and loading run the same code as the
  sqlite store's.

Example:
    >>> sim = Simulator(seed=1, nodes=3)
    >>> ch = sim.open_channel("n0", "orders"); sim.run(0.5)
    >>> sim.publish("n1", ch, b"order 1", key=b"o1"); sim.run(1.0)
    >>> sum(check_all(sim, ch).values())
    0
"""

from p2pworld.testing.checkers import (
    ANOMALIES,
    Acknowledged,
    check_all,
    check_auth,
    check_bridge,
    check_channel,
    check_compute,
    check_logs,
    check_stores,
    check_world,
)
from p2pworld.testing.executor import Ack
from p2pworld.testing.sim import SimNode, Simulator, Stats
from p2pworld.testing.store import MemoryLogStore
from p2pworld.testing.stored import check_stored_logs

__all__ = ["ANOMALIES", "Ack", "Acknowledged", "MemoryLogStore", "SimNode", "Simulator", "Stats",
           "check_all", "check_auth", "check_bridge", "check_channel", "check_compute",
           "check_logs", "check_stored_logs", "check_stores", "check_world"]
