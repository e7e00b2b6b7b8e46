"""The packages form layers: no import cycle between packages (or top-level modules), cores
below the simulator and the shells, the runtime above the I/O shells, the command line on top.

Units are the subpackages (``p2pworld.log``) and the top-level modules (``p2pworld.wire``);
aliases count as the module they name, and imports under ``TYPE_CHECKING`` count too (a type
that points up the layers is a design that points up)."""

from __future__ import annotations

from collections import defaultdict

from . import layout

ALL = layout.source_files()

# Kinds of unit, bottom to top: a unit may import only units of its own rank or below; the
# simulator and the shells never import each other, except that the simulator runs the stores.
RANK = {"core": 0, "simulator": 1, "io": 1, "discovery": 2, "runtime": 3, "cli": 4}


def unit_kind(unit: str) -> str:
    if unit in {"p2pworld.io"}:
        return "io"
    if unit in {"p2pworld.runtime", "p2pworld.cli", "discovery"}:
        return unit.rpartition(".")[2]
    if unit == "p2pworld.testing":
        return "simulator"
    return "core"


def graph(*, typing_too: bool = True) -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> where (``module:line``)."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for module, path in ALL.items():
        k = layout.kind(path)
        if k in {"alias", "facade"}:
            continue
        for imp in layout.imports_of(path.read_text(), module,
                                     is_package=path.name == "__init__.py", known=set(ALL)):
            if imp.typing_only and not typing_too:
                continue
            target = _resolve_alias(imp.module)
            if target.split(".")[0] not in layout.PACKAGES or target == "p2pworld":
                continue
            a, b = layout.unit(module), layout.unit(target)
            if a != b:
                edges[a][b].append(f"{module}:{imp.line}")
    return edges


def _resolve_alias(module: str) -> str:
    path = ALL.get(module)
    if path is not None and layout.kind(path) == "alias":
        return layout.ALIASES[path.relative_to(layout.ROOT).as_posix()]
    return module


def find_cycle(edges: dict[str, dict[str, list[str]]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, {})):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (c := visit(v)) is not None:
                return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(edges):
        if u not in state and (c := visit(u)) is not None:
            return c
    return None


def test_no_cycle_between_packages() -> None:
    edges = graph()
    cycle = find_cycle(edges)
    where = [edges[a][b][0] for a, b in zip(cycle, cycle[1:], strict=False)] if cycle else []
    assert cycle is None, f"cycle {' -> '.join(cycle or [])} at {where}"


def test_no_import_points_up_the_layers() -> None:
    bad = []
    for a, targets in graph().items():
        for b, where in targets.items():
            ka, kb = unit_kind(a), unit_kind(b)
            if RANK[kb] > RANK[ka] or (ka, kb) in {("io", "simulator"), ("runtime", "simulator")} or (
                    unit_kind(a) == "simulator" and unit_kind(b) == "io"
                    and not all(_store_import(w, b) for w in where)):
                bad.append(f"{a} -> {b} at {where[0]}")
    assert not bad, bad


def _store_import(where: str, target_unit: str) -> bool:
    module, _, line = where.partition(":")
    path = ALL[module]
    return all(i.module in layout.SIMULATOR_STORES
               for i in layout.imports_of(path.read_text(), module, known=set(ALL))
               if str(i.line) == line and layout.unit(i.module) == target_unit)


def test_the_cycle_check_can_fail() -> None:
    assert find_cycle({"a": {"b": ["x:1"]}, "b": {"a": ["y:2"]}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b": ["x:1"]}}) is None
