"""The public surface: every name ``p2pworld`` exports resolves, has a docstring and is named
in the docs; every type a public method of the node returns is exported."""

from __future__ import annotations

import inspect
import re
import typing

import pytest

import p2pworld

from . import layout

DOC_TEXT = "\n".join(p.read_text() for p in
                     [*sorted((layout.ROOT / "docs").rglob("*.md")), layout.ROOT / "README.md"])


@pytest.mark.parametrize("name", sorted(p2pworld.__all__))
def test_export_resolves_and_has_a_docstring(name: str) -> None:
    value = getattr(p2pworld, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        own = value.__dict__.get("__doc__") if inspect.isclass(value) else value.__doc__
        assert own and own.strip(), f"{name} has no docstring of its own"


@pytest.mark.parametrize("name", sorted(p2pworld.__all__))
def test_export_is_documented(name: str) -> None:
    assert re.search(rf"`[\w.]*\b{re.escape(name)}\b[^`]*`", DOC_TEXT) is not None, (
        f"{name} is exported but no doc names it (in backticks)")


def test_dir_lists_every_export() -> None:
    assert set(p2pworld.__all__) <= set(dir(p2pworld))


def _named_types(annotation: object) -> set[type]:
    out: set[type] = set()
    stack = [annotation]
    while stack:
        a = stack.pop()
        if isinstance(a, type) and a.__module__.split(".")[0] in layout.PACKAGES:
            out.add(a)
        stack.extend(typing.get_args(a))
        origin = typing.get_origin(a)
        if isinstance(origin, type) and origin.__module__.split(".")[0] in layout.PACKAGES:
            out.add(origin)
    return out


def test_every_type_a_node_method_returns_is_exported() -> None:
    """The node and each of its sub-APIs (``node.channels``, ``node.world``, ...): every
    public method's and property's return type."""
    from p2pworld import Bridge, Channels, Compute, Node, Peers, World

    exported = {getattr(p2pworld, n) for n in p2pworld.__all__}
    missing: dict[str, list[str]] = {}
    for cls in (Node, Channels, World, Compute, Bridge, Peers):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_") and name != "__call__":
                continue
            fn = member.fget if isinstance(member, property) else member
            if not inspect.isfunction(fn):
                continue
            hints = typing.get_type_hints(fn)
            for t in _named_types(hints.get("return")):
                if t not in exported:
                    missing.setdefault(f"{t.__module__}.{t.__qualname__}", []).append(
                        f"{cls.__name__}.{name}")
    assert not missing, missing


def test_the_return_check_sees_nested_types() -> None:
    from p2pworld.log.entry import ChannelRecord

    assert _named_types(list[ChannelRecord] | None) == {ChannelRecord}
