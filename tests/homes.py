"""Test helper: the checkers over the homes real nodes left (``p2pworld.testing.check_stored_logs``
with each home's log opened read-only and its node key as a snapshot signer)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path

from p2pworld.errors import P2PWorldError
from p2pworld.identity import Signer
from p2pworld.io.home import NodeHome
from p2pworld.io.log_store import LogStore
from p2pworld.testing import Acknowledged, check_stored_logs


def check_homes(homes: Mapping[str, Path], channel: bytes, acks: Iterable[Acknowledged] = (),
                **kw: object) -> dict[str, int]:
    """The anomalies found (only those counted at least once) over the stopped nodes' homes;
    a home with no log is left out."""
    signers: list[Signer] = []
    with ExitStack() as stack:
        stores = {}
        for name, home in homes.items():
            if (home / "log.db").exists():
                stores[name] = LogStore(home / "log.db", read_only=True)
                stack.callback(stores[name].close)
            try:
                signers.append(NodeHome(home).load().signer)
            except P2PWorldError:
                pass  # no keys there: no mid-log snapshot for its channels
        found = check_stored_logs(stores, channel, acks, signers=signers, **kw)  # type: ignore[arg-type]
    return {k: v for k, v in found.items() if v}
