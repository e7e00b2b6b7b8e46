"""The package's layout in one place: which directories hold cores, the simulator or shells.

The shape tests (purity, layering, sizes, branch share) read this module; a directory that is
not listed here fails them, so a new package must say what it is (deny by default).

* **core**: pure state machines. They import only the standard-library modules and the
  third-party codecs listed in :data:`CORE_STDLIB` and :data:`CORE_THIRD_PARTY`, and other
  cores; no clock, randomness of the OS, files, sockets, threads or trio.
* **simulator**: the second executor (``p2pworld.testing``). Pure of OS I/O like a core; it may
  also use a seeded ``random.Random`` and the stores of :data:`SIMULATOR_STORES`.
* **shell**: trio, sockets, sqlite, zeroconf, HTTP, files: ``p2pworld.io``, the runtime, the
  command line and ``discovery`` (a top-level package, as the project's layout asks).
* the **facade** (``p2pworld/__init__.py``) resolves public names lazily, so importing a core
  loads no runtime.
* **aliases** keep the old paths of moved core modules importable; each is a docstring and one
  ``from new.path import *``, and counts as the module it names.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("p2pworld", "discovery")

CORE_DIRS = ("p2pworld", "p2pworld/auth", "p2pworld/channel", "p2pworld/compute", "p2pworld/core",
             "p2pworld/log", "p2pworld/nostr", "p2pworld/transport", "p2pworld/world")
SIMULATOR_DIRS = ("p2pworld/testing",)
SHELL_DIRS = ("p2pworld/io", "p2pworld/runtime", "p2pworld/cli", "discovery")
FACADE = "p2pworld/__init__.py"

ALIASES = {
    "p2pworld/cores.py": "p2pworld.core.cores",
    "p2pworld/log/hub.py": "p2pworld.channel.hub",
    "p2pworld/nostr/mirror.py": "p2pworld.core.mirror",
    "p2pworld/nostr/transport.py": "p2pworld.core.lanes",
    "discovery/candidate.py": "p2pworld.transport.candidate",
    "discovery/rendezvous.py": "p2pworld.transport.rendezvous",
}

CORE_STDLIB = frozenset({
    "__future__", "abc", "base64", "binascii", "bisect", "collections", "collections.abc",
    "copy", "dataclasses", "enum", "functools", "hashlib", "heapq", "hmac", "ipaddress",
    "itertools", "json", "marshal", "math", "operator", "re", "string", "struct", "types", "typing",
    "unicodedata", "urllib.parse",
})
"""Standard-library modules a core may import: computation only (no clock, no OS randomness,
no files, no sockets, no threads, no ``sys`` or ``importlib``)."""

CORE_THIRD_PARTY = frozenset({
    "cbor2", "nacl", "coincurve", "cryptography", "bip_utils", "mnemonic", "pycrdt",
})
"""Third-party packages a core may import (codecs and cryptography; their own imports are
outside the project's control)."""

SIMULATOR_EXTRA = frozenset({"random", "weakref"})
"""The simulator owns one seeded ``random.Random`` (never the module's global state)."""

SIMULATOR_STORES = frozenset({
    "p2pworld.io.log_store", "p2pworld.io.world_store", "p2pworld.io.nostr_outbox",
    "p2pworld.io.storage",
})
"""Shell modules the simulator may run: the real stores (sqlite, no trio)."""

FORBIDDEN_NAMES = frozenset({
    "__import__", "open", "eval", "exec", "compile", "breakpoint", "input", "__builtins__",
    "globals", "vars", "__loader__", "__spec__",
})
"""Names a core or the simulator may not use: each is a way around the import checks or a
door to the file system."""

BLOCKED_FOR_CORES = ("trio", "trio_websocket", "sqlite3", "_sqlite3", "zeroconf")
BLOCKED_FOR_SIMULATOR = ("trio", "trio_websocket", "zeroconf")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    """Every module of the packages: dotted name -> path."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def kind(path: Path) -> str:
    """``core``, ``simulator``, ``shell``, ``facade`` or ``alias``; ValueError if the module's
    directory is not classified."""
    rel = path.relative_to(ROOT).as_posix()
    if rel == FACADE:
        return "facade"
    if rel in ALIASES:
        return "alias"
    directory = path.relative_to(ROOT).parent.as_posix()
    for dirs, name in ((CORE_DIRS, "core"), (SIMULATOR_DIRS, "simulator"), (SHELL_DIRS, "shell")):
        if directory in dirs:
            return name
    raise ValueError(f"{rel}: its directory {directory!r} is not classified in tests/layout.py")


def modules_of(kinds: set[str]) -> dict[str, Path]:
    return {m: p for m, p in source_files().items() if kind(p) in kinds}


@dataclass(frozen=True)
class Import:
    module: str
    """The resolved absolute module name (for ``from pkg import mod``, ``pkg.mod`` when that
    is a module of the packages)."""
    line: int
    typing_only: bool


def _typing_only_nodes(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else (
                test.attr if isinstance(test, ast.Attribute) else "")
            if name == "TYPE_CHECKING":
                for stmt in node.body:
                    ids |= {id(sub) for sub in ast.walk(stmt)}
    return ids


def imports_of(source: str, module: str, *, is_package: bool = False,
               known: set[str] | None = None) -> list[Import]:
    """Every import in ``source`` (the text of ``module``), resolved: relative imports against
    the module's package, ``from pkg import name`` to ``pkg.name`` where that is a module."""
    tree = ast.parse(source)
    typing_only = _typing_only_nodes(tree)
    known = known if known is not None else set(source_files())
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        only = id(node) in typing_only
        if isinstance(node, ast.Import):
            found += [Import(a.name, node.lineno, only) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                if node.level - 1 > len(parts):
                    raise ValueError(f"{module}: relative import beyond the top package")
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            # ``from pkg import mod`` imports the module; ``from pkg import name`` takes an
            # attribute of the package itself (so ``from p2pworld import Node`` is an import
            # of the facade, which loads the runtime).
            subs = [f"{base}.{a.name}" for a in node.names]
            modules = [s for s in subs if s in known or _is_stdlib_submodule(s)]
            found += [Import(s, node.lineno, only) for s in modules]
            if len(modules) < len(subs):
                found.append(Import(base, node.lineno, only))
    return found


def _is_stdlib_submodule(name: str) -> bool:
    # ``from os import path`` and ``from importlib import util`` name modules too; the allow
    # list refuses their parents anyway, so this only matters for allowed parents.
    return name in {"collections.abc", "urllib.parse"}


def names_used(source: str) -> list[tuple[str, int]]:
    """Every bare name (and dunder attribute) a module uses, with its line (for FORBIDDEN_NAMES)."""
    tree = ast.parse(source)
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.append((node.id, node.lineno))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            out.append((node.attr, node.lineno))  # x.__import__, x.__builtins__ (not x.open)
    return out


def is_alias_body(source: str, target: str) -> bool:
    """An alias is a docstring and ``from <target> import *``, nothing else."""
    body = ast.parse(source).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return (len(body) == 1 and isinstance(body[0], ast.ImportFrom)
            and body[0].module == target and body[0].level == 0
            and [a.name for a in body[0].names] == ["*"])


def unit(module: str) -> str:
    """The layering unit of a module: its subpackage (``p2pworld.log``), or the module itself
    for a top-level module (``p2pworld.wire``)."""
    parts = module.split(".")
    if parts[0] == "discovery":
        return "discovery"
    if len(parts) >= 2 and (ROOT / parts[0] / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module
