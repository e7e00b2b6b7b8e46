"""Every error class lives in ``p2pworld/errors.py``, is registered under a code of its own,
and is under exactly one of local, remote or refused: a caller (and a metric) can always tell
whose fault an error is."""

from __future__ import annotations

import ast

import pytest

from p2pworld import errors

from . import layout

KINDS = (errors.LocalProtocolError, errors.RemoteProtocolError, errors.Refused)


def all_error_classes() -> list[type[errors.P2PWorldError]]:
    out: list[type[errors.P2PWorldError]] = []
    stack: list[type[errors.P2PWorldError]] = [errors.P2PWorldError]
    while stack:
        cls = stack.pop()
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def test_every_exception_class_is_defined_in_errors_py() -> None:
    # No module but errors.py defines an exception class (by its bases' names: any class
    # deriving from an Error/Exception name, outside tests).
    bad = []
    for module, path in layout.source_files().items():
        if module == "p2pworld.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                if any(b.endswith(("Error", "Exception", "Closed", "Timeout", "Expired",
                                   "Denied", "Refused", "Conflict", "Unavailable"))
                       for b in bases):
                    bad.append(f"{module}:{node.lineno} {node.name}({', '.join(bases)})")
    assert not bad, bad


def test_every_class_is_registered_under_its_own_code() -> None:
    import p2pworld.runtime.node  # noqa: F401  (every module that could define one is loaded)

    classes = all_error_classes()
    assert all(c.__module__ == "p2pworld.errors" for c in classes), [
        f"{c.__module__}.{c.__name__}" for c in classes if c.__module__ != "p2pworld.errors"]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert {c.code: c for c in classes} == errors.ERROR_CODES


@pytest.mark.parametrize("cls", [c for c in all_error_classes()
                                 if c is not errors.P2PWorldError and c not in KINDS],
                         ids=lambda c: c.__name__)
def test_under_exactly_one_kind(cls: type[errors.P2PWorldError]) -> None:
    under = [k.__name__ for k in KINDS if issubclass(cls, k)]
    assert len(under) == 1, f"{cls.__name__} is under {under or 'none'} of local, remote, refused"


def test_codes_round_trip_to_their_classes() -> None:
    for code, cls in errors.ERROR_CODES.items():
        e = errors.error_from_code(code, "x", seq=1)
        assert type(e) is cls and e.code == code and e.details == {"seq": 1}
