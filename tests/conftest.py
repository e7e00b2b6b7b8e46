"""Shared fixtures. Under ``CI=true`` a skipped test fails the run: CI must never pass by
not running something."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from p2pworld import codec
from p2pworld.identity import NodeIdentity

# Every value the library encodes during the tests is checked against the data model.
codec.STRICT = True

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "vectors"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("CI") == "true" and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI=true, which is a failure here: {rep.longrepr}"


def make_identity(n: int) -> NodeIdentity:
    """A deterministic identity (seeded from ``n``)."""
    return NodeIdentity.from_seeds(bytes([n]) * 32, bytes([n]) * 32, created_at=1_700_000_000)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)

# Runs under .relay-venv's Python (nostr-sdk), never imported by the test process.
collect_ignore = ["tools/nostr_sdk_check.py"]
