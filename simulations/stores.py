"""The real sqlite stores for simulations (``--stores sqlite``): each run gets its own
directory, on tmpfs where the machine has one (``/dev/shm``), so fsync is the real call and
its cost is that of memory; the directory is removed when the run ends."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from p2pworld.io.log_store import LogStore
from p2pworld.io.world_store import WorldStore


class SqliteStores:
    """A :class:`~p2pworld.testing.sim.StoreFactory` of real stores, in a temporary
    directory removed on exit."""

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        self.dir = Path(tempfile.mkdtemp(prefix="p2pw-sim-",
                                         dir=shm if shm.is_dir() else None))

    def log(self, name: str, generation: int) -> LogStore:
        return LogStore(self.dir / f"{name}.{generation}.log.db")

    def world(self, name: str) -> WorldStore:
        return WorldStore(self.dir / f"{name}.world.db")

    def __enter__(self) -> SqliteStores:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
