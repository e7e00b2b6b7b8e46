"""Tests that guard the design's shape (they protect the design; they are not style rules).

* Sizes: no module over 700 lines, no class over 450. Anything over 600 / 400 is on
  :data:`SIZE_ALLOWANCES` with its reason and its size when listed; an entry may only shrink,
  and one that no longer needs to be there must go.
* Decisions live in cores: the share of the node's decision points (``if``, ``while``,
  ternaries, ``try``, ``except``, ``and``/``or``) that sit in the shells (``p2pworld.io``,
  ``p2pworld.runtime``, ``discovery``) may only fall, to 20% once the node core lands.
"""

from __future__ import annotations

import ast

from . import layout

MODULE_LIMIT, CLASS_LIMIT = 700, 450
MODULE_WATCH, CLASS_WATCH = 600, 400
SLACK = 20

SIZE_ALLOWANCES: dict[str, tuple[int, str]] = {
    # module or module:Class -> (lines when listed, reason)
    "p2pworld.runtime.node": (1515, "the runtime's tasks (sessions, discovery, lanes, the "
                                    "effect runner and store task) in one class, and the flat "
                                    "API methods kept one release as delegations to the "
                                    "sub-APIs (runtime/api.py)"),
    "p2pworld.runtime.node:Node": (1197, "as above"),
    "p2pworld.channel.hub": (936, "writers (publish, signing, the outbox), fan-out and the "
                                  "peer protocol's routing in one class (membership, "
                                  "checkpoints, epochs, subscriptions and the start-up "
                                  "exchange are parts of their own); the channel-speed issue "
                                  "(17) reshapes the writer queue and fan-out"),
    "p2pworld.channel.hub:ChannelHub": (704, "as above"),
    "p2pworld.wire": (655, "every message of every protocol; one module per noun once the "
                           "channel data path changes the wire (issue 17)"),
}

SHELL_UNITS = {"p2pworld.io", "p2pworld.runtime", "discovery"}
NOT_THE_NODE = {"p2pworld.testing", "p2pworld.cli"}
SHELL_SHARE_CEILING = 0.17
"""39.4% when the test landed, 38.8% once the persist core took the data path's ordering and
pacing, 37.3% once the node core took the flush, the timers and the batching, 31.1% once the
lane rule, the lane ledger, the relay pool's book, NIP-11 parsing, the control service's
answers and the executors' effect tables moved, 30.4% with the lane book and the write plan;
16.4% once the stores' rows and statements, the API's checks, statistics and feed cursors, the
Nostr lane, pool and outbox books, the session link and supervision rules, the rendezvous
client and mDNS records, and the runtime's session edges became cores. Issue 15 asked for at
most 20%; the ceiling follows the share down (lower it as decisions move)."""
ISSUE_15_TARGET = 0.20


def sizes() -> dict[str, int]:
    out: dict[str, int] = {}
    for module, path in layout.source_files().items():
        text = path.read_text()
        out[module] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                out[f"{module}:{node.name}"] = node.end_lineno - node.lineno + 1
    return out


def _limits(name: str) -> tuple[int, int]:
    return (CLASS_WATCH, CLASS_LIMIT) if ":" in name else (MODULE_WATCH, MODULE_LIMIT)


def test_sizes_stay_within_bounds() -> None:
    bad = []
    for name, lines in sizes().items():
        watch, limit = _limits(name)
        allowed = SIZE_ALLOWANCES.get(name)
        if allowed is None and lines > watch:
            bad.append(f"{name}: {lines} lines (over {watch}: shrink it or list it with a reason)")
        elif allowed is not None and lines > allowed[0]:
            bad.append(f"{name}: {lines} lines, grown past its allowance of {allowed[0]}")
    assert not bad, bad


def test_allowances_only_shrink() -> None:
    current = sizes()
    stale = [n for n, (_, _) in SIZE_ALLOWANCES.items()
             if n not in current or current[n] <= _limits(n)[0]]
    assert not stale, f"remove these allowances, they are no longer needed: {stale}"
    # An allowance follows its module down (within SLACK lines), so it cannot grow back.
    loose = {n: current[n] for n, (lines, _) in SIZE_ALLOWANCES.items()
             if current[n] < lines - SLACK}
    assert not loose, f"lower these allowances to the current sizes: {loose}"


def decision_points(tree: ast.AST) -> int:
    return sum(isinstance(n, (ast.If, ast.While, ast.IfExp, ast.Try, ast.ExceptHandler,
                              ast.BoolOp, ast.match_case)) for n in ast.walk(tree))


def shell_share() -> float:
    shell = total = 0
    for module, path in layout.source_files().items():
        unit = layout.unit(module)
        if unit in NOT_THE_NODE:
            continue
        n = decision_points(ast.parse(path.read_text()))
        total += n
        shell += n if unit in SHELL_UNITS else 0
    return shell / total


def test_decisions_move_out_of_the_shells() -> None:
    share = shell_share()
    assert share <= SHELL_SHARE_CEILING <= ISSUE_15_TARGET, \
        f"{share:.1%} of the decision points are in shells"


def test_decision_points_are_counted() -> None:
    tree = ast.parse("if a and b:\n    x = 1 if c else 2\ntry:\n    pass\nexcept E:\n    pass\n")
    assert decision_points(tree) == 5
