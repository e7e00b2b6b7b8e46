"""Cores stay pure: no trio, sockets, clocks, OS randomness, threads or files in core modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

CORES = [
    "p2pworld/codec.py", "p2pworld/errors.py", "p2pworld/identity.py", "p2pworld/wire.py",
    "p2pworld/nostr/keys.py", "p2pworld/transport/handshake.py",
    "p2pworld/transport/backoff.py", "p2pworld/transport/peering.py",
    "p2pworld/log/entry.py", "p2pworld/log/state.py", "p2pworld/log/channel_key.py",
    "p2pworld/log/verify.py", "p2pworld/log/sequencer.py", "p2pworld/log/replica.py",
    "p2pworld/log/hub.py", "p2pworld/testing/checkers.py", "p2pworld/auth/token.py",
    "discovery/candidate.py", "p2pworld/effects.py", "p2pworld/cores.py",
    "p2pworld/world/records.py", "p2pworld/world/doc.py", "p2pworld/world/core.py",
    "p2pworld/nostr/nip44.py", "p2pworld/nostr/event.py", "p2pworld/compute/state.py",
    "p2pworld/compute/core.py",
    "p2pworld/auth/book.py", "p2pworld/auth/control.py", "discovery/rendezvous.py",
]
FORBIDDEN = {"trio", "trio_websocket", "socket", "time", "random", "secrets", "os",
             "threading", "asyncio", "sqlite3", "zeroconf", "subprocess", "pathlib",
             "datetime", "selectors", "select", "p2pworld.node", "p2pworld.home"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        # Imports under `if TYPE_CHECKING:` are annotations only.
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for sub in ast.walk(node):
                sub._typing_only = True
    for node in ast.walk(tree):
        if getattr(node, "_typing_only", False):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", CORES)
def test_core_imports_no_io(module: str) -> None:
    bad = {m for m in imports(ROOT / module)
           if m in FORBIDDEN or m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_simulator_has_no_hidden_clock_or_scheduler() -> None:
    # The simulator owns one seeded random.Random; it never reads a clock or runs trio.
    bad = {m for m in imports(ROOT / "p2pworld/testing/sim.py")
           if m.split(".")[0] in {"trio", "time", "socket", "os", "secrets", "asyncio",
                                  "threading"}}
    assert not bad


def test_the_check_can_fail() -> None:
    assert "trio" in imports(ROOT / "p2pworld/node.py")
