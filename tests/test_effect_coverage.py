"""Every effect the node's cores emit is carried out by both executors: the trio runtime
(``p2pworld/runtime/node.py``) and the simulator's (``p2pworld/testing/executor.py``). A new
effect that one of them ignores would be a decision of that executor (to drop it), and no
seed would see the difference. Store effects reach both through the stores, in a commit."""

from __future__ import annotations

import ast
import typing

from p2pworld.core.cores import NodeEffect
from p2pworld.core.persist import STORE_EFFECTS
from p2pworld.runtime.node import CARRIERS as runtime_carriers
from p2pworld.testing.executor import CARRIERS as sim_carriers

from . import layout

RUNTIME = layout.ROOT / "p2pworld" / "runtime" / "node.py"
SIMULATOR = layout.ROOT / "p2pworld" / "testing" / "executor.py"

NOT_SIMULATED = {
    "ChannelKnown": "wakes the application's waiters for a new channel; the simulator has none",
    "ConnectRendezvous": "the simulator does not model rendezvous nodes (its discovery is the "
                         "topology); the schedule is tested in tests/test_relays_core.py",
}
"""Effects the simulator does not carry out, each with its reason (may only shrink)."""


def handled(carriers: dict[type, object]) -> set[str]:
    """The effects an executor's table carries out."""
    return {t.__name__ for t in carriers}


def test_the_executors_dispatch_by_table_only() -> None:
    """Neither executor picks an effect's handling by an ``isinstance`` chain: each has one
    table, by exact type (what is not in it is not carried out, and the tests above see it)."""
    for path in (RUNTIME, SIMULATOR):
        named = set()
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and \
                    n.func.id == "isinstance" and len(n.args) == 2:
                arg = n.args[1]
                named |= {x.id for x in (arg.elts if isinstance(arg, ast.Tuple) else [arg])
                          if isinstance(x, ast.Name)}
        assert not named & loose_effects(), (path.name, named & loose_effects())


def loose_effects() -> set[str]:
    store = {t.__name__ for t in STORE_EFFECTS}
    return {t.__name__ for t in typing.get_args(NodeEffect)} - store


def test_the_runtime_carries_out_every_effect() -> None:
    assert loose_effects() - handled(runtime_carriers) == set()


def test_the_simulator_carries_out_every_effect_it_models() -> None:
    assert loose_effects() - handled(sim_carriers) == set(NOT_SIMULATED)


def test_the_exceptions_name_real_effects() -> None:
    assert set(NOT_SIMULATED) <= loose_effects()
