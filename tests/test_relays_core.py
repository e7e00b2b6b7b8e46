"""When a node connects to its rendezvous nodes: a decision of the node core
(``p2pworld/core/relays.py``), carried out by the runtime (``Node._rendezvous``)."""

from __future__ import annotations

import random

from hypothesis import given, strategies as st

from p2pworld.channel.hub import Notice
from p2pworld.core.node import Flush, RendezvousEnded, TimerFired
from p2pworld.core.relays import BASE_MS, CAP_MS, RendezvousSchedule
from p2pworld.effects import ConnectRendezvous
from p2pworld.errors import RendezvousUnreachable

from .test_node_core import _core

URL = "ws://127.0.0.1:7000/"


@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=40), seed=st.integers(0, 99))
def test_reconnects_back_off_up_to_the_cap_and_start_over_after_a_registration(
        outcomes: list[bool], seed: int) -> None:
    s = RendezvousSchedule(random.Random(seed))
    s.add(URL, now_ms=0)
    now, failures = 0, 0
    for registered in outcomes:
        assert s.take(now_ms=now) == [URL]
        assert s.take(now_ms=now) == []  # connecting: not asked again
        s.ended(URL, registered=registered, now_ms=now)
        failures = 0 if registered else failures
        ceiling = min(CAP_MS, BASE_MS * 2 ** failures)
        due = s.wake_at()
        assert due is not None and now + ceiling // 2 - 1 <= due <= now + ceiling
        failures += 1
        now = due


def test_the_node_core_connects_at_start_and_again_after_a_connection_ends() -> None:
    core = _core()
    core.rendezvous = RendezvousSchedule(random.Random(0))
    core.rendezvous.add(URL, now_ms=1_000)
    assert core.handle(Flush(), now_ms=1_000).wake_at_ms == 1_000

    def carried(now_ms: int) -> list[object]:
        plan = core.handle(TimerFired(), now_ms=now_ms)
        return [e for s in plan.steps for e in getattr(s, "effects", ())]

    assert ConnectRendezvous(URL) in carried(1_000)
    err = RendezvousUnreachable("down", url=URL)
    core.handle(RendezvousEnded(url=URL, error=err), now_ms=2_000)
    fx = [e for s in core.handle(Flush(), now_ms=2_000).steps for e in getattr(s, "effects", ())]
    assert Notice(b"", err, scope="relay", subject=URL) in fx  # the relay scope ended
    due = core.rendezvous.wake_at()
    assert due is not None and 2_000 + BASE_MS // 2 <= due <= 2_000 + BASE_MS
    assert ConnectRendezvous(URL) not in carried(due - 1)
    assert ConnectRendezvous(URL) in carried(due)
    # A task that failed (its scope reported it): connected again, no second notice.
    core.handle(RendezvousEnded(url=URL, error=None), now_ms=due)
    fx = [e for s in core.handle(Flush(), now_ms=due).steps for e in getattr(s, "effects", ())]
    assert not [e for e in fx if isinstance(e, Notice)]
    assert core.rendezvous.wake_at() is not None
