"""Cores stay pure, by directory and deny by default: a core imports only what
``tests/layout.py`` allows (computation, codecs, other cores), uses no name that gets around
that (``__import__``, ``open``, ``eval``...), and importing every core in a process where trio,
trio-websocket, sqlite3 and zeroconf cannot be imported succeeds."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from . import layout

CORES = layout.modules_of({"core"})
SIMULATOR = layout.modules_of({"simulator"})
ALL = layout.source_files()


def refusals(source: str, module: str, *, allowed_modules: set[str], extra: frozenset[str] = frozenset(),
             is_package: bool = False) -> list[str]:
    """Why ``source`` (the text of ``module``) is not pure; empty if it is."""
    bad: list[str] = []
    for imp in layout.imports_of(source, module, is_package=is_package, known=set(ALL)):
        if imp.typing_only:
            continue
        name = imp.module
        top = name.split(".")[0]
        if top in {"p2pworld", "discovery"}:
            if name not in allowed_modules:
                bad.append(f"line {imp.line}: imports {name}, which is not a core")
        elif not (name in layout.CORE_STDLIB or name in extra
                  or top in layout.CORE_THIRD_PARTY):
            bad.append(f"line {imp.line}: imports {name}, which is not on the allow list")
    for name, line in layout.names_used(source):
        if name in layout.FORBIDDEN_NAMES:
            bad.append(f"line {line}: uses {name}")
    return bad


def core_names() -> set[str]:
    # Aliases count as the core they name; the facade is not a core (it imports the runtime
    # lazily), so a core importing ``p2pworld`` itself is refused.
    names = set(CORES)
    names |= {m for m, p in ALL.items() if layout.kind(p) == "alias"
              and layout.ALIASES[p.relative_to(layout.ROOT).as_posix()] in CORES}
    return names


def test_every_directory_is_classified() -> None:
    for path in ALL.values():
        layout.kind(path)  # raises for a directory tests/layout.py does not list


@pytest.mark.parametrize("module", sorted(CORES))
def test_core_is_pure(module: str) -> None:
    path = CORES[module]
    bad = refusals(path.read_text(), module, allowed_modules=core_names(),
                   is_package=path.name == "__init__.py")
    assert not bad, f"{module}: {bad}"


@pytest.mark.parametrize("module", sorted(SIMULATOR))
def test_simulator_is_pure_of_os_io(module: str) -> None:
    path = SIMULATOR[module]
    allowed = core_names() | set(SIMULATOR) | set(layout.SIMULATOR_STORES)
    bad = refusals(path.read_text(), module, allowed_modules=allowed,
                   extra=layout.SIMULATOR_EXTRA, is_package=path.name == "__init__.py")
    assert not bad, f"{module}: {bad}"


@pytest.mark.parametrize("path", sorted(layout.ALIASES))
def test_aliases_hold_no_code(path: str) -> None:
    target = layout.ALIASES[path]
    assert layout.is_alias_body((layout.ROOT / path).read_text(), target)
    assert target in ALL


EVASIONS = {
    "from-package-import-module": "from p2pworld.runtime import node",
    "relative-import": "from ..runtime import node",
    "relative-package": "from .. import home",
    "importlib": "import importlib\nimportlib.import_module('trio')",
    "dunder-import": "m = __import__('trio')",
    "builtins-open": "data = open('/etc/hostname').read()",
    "exec": "exec('import trio')",
    "os-path": "from os import path",
    "io-open": "import io\nio.open('x')",
    "sys-modules": "import sys\nsys.modules['trio']",
    "threads": "import _thread",
    "subprocess-alias": "import subprocess as sp",
    "tempfile": "import tempfile",
    "clock": "from time import monotonic",
    "urllib-request": "import urllib.request",
    "typing-guard-is-narrow": "if True:\n    import trio",
}


@pytest.mark.parametrize("name", sorted(EVASIONS))
def test_the_check_refuses_each_evasion(name: str) -> None:
    # Each snippet, put in a core module, must be refused: the checks can fail.
    source = textwrap.dedent(EVASIONS[name])
    assert refusals(source, "p2pworld.log.example", allowed_modules=core_names()), name


def test_the_check_accepts_annotations_only_imports() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import random\n"
    assert not refusals(source, "p2pworld.log.example", allowed_modules=core_names())


BLOCKER = """
import importlib, importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {name}")
        return None
sys.meta_path.insert(0, Block())
failed = []
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except ImportError as e:
        failed.append(f"{name}: {e}")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("\\n".join(failed))
sys.exit(1 if failed or loaded else 0)
"""


def _import_blocked(blocked: tuple[str, ...], names: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKER, ",".join(blocked), *names],
                          capture_output=True, text=True, cwd=layout.ROOT, timeout=300)


def test_every_core_imports_without_trio_sqlite_or_zeroconf() -> None:
    names = sorted(core_names())
    run = _import_blocked(layout.BLOCKED_FOR_CORES, names)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_simulator_imports_without_trio_or_zeroconf() -> None:
    run = _import_blocked(layout.BLOCKED_FOR_SIMULATOR, sorted(SIMULATOR))
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_blocker_can_fail() -> None:
    run = _import_blocked(layout.BLOCKED_FOR_CORES, ["p2pworld.runtime.node"])
    assert run.returncode == 1 and "blocked: trio" in run.stdout


def test_importing_p2pworld_loads_no_runtime() -> None:
    code = ("import sys, time; t = time.process_time(); import p2pworld; "
            "t = time.process_time() - t; "
            "print(t); print(' '.join(m for m in sys.modules if m.split('.')[0] in "
            "{'trio', 'trio_websocket', 'zeroconf', 'sqlite3', 'pycrdt'}))")
    times = []
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=layout.ROOT, timeout=120, check=True)
        cpu, loaded = (run.stdout.splitlines() + [""])[:2]
        assert loaded == "", f"import p2pworld loaded {loaded}"
        times.append(float(cpu))
    # CPU time, not wall time, so another process on the machine does not count; the best of
    # three, so one slow start (a cold disk cache) does not either.
    assert min(times) < 0.2, times
