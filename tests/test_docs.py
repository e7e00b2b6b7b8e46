"""The docs follow the code: names and paths in backticks resolve, and the limits that
``docs/protocol.md`` states are the constants the code enforces."""

from __future__ import annotations

import dataclasses
import importlib
import os
import queue
import re
import subprocess
import sys
import threading
from functools import cache
from typing import Any

import pytest

from . import layout

ROOT = layout.ROOT
DOCS = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
TICK = re.compile(r"`([^`\n]+)`")

PATH = re.compile(r"^(p2pworld|discovery|tests|simulations|benchmarks|docs)/[\w/.*-]*$")
BARE_FILE = re.compile(r"^[\w-]+\.py$")
DOTTED = re.compile(r"^((?:p2pworld|discovery)(?:\.\w+)+)(\(\))?$")
CLASS_ATTR = re.compile(r"^([A-Z]\w+)\.(\w+)(\(\))?$")
NODE_ATTR = re.compile(r"^node\.(\w+)(\(\))?$")
NODE_PART = re.compile(r"^node\.(channels|world|compute|bridge|peers)\.(\w+)(\(.*\))?$")
HOME_FILES = {"node.key", "node.lock", "nostr.key"}  # files of a node home, not attributes


def tokens() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = FENCE.sub("", doc.read_text())
        out += [(doc.relative_to(ROOT).as_posix(), t) for t in TICK.findall(text)]
    return out


@cache
def classes() -> dict[str, list[type]]:
    found: dict[str, list[type]] = {}
    for module in layout.source_files():
        if module.startswith("p2pworld.cli"):
            continue
        mod = importlib.import_module(module)
        for name, value in vars(mod).items():
            if isinstance(value, type) and value.__module__ == module:
                found.setdefault(name, []).append(value)
    return found


def has_attr(cls: type, attr: str) -> bool:
    if hasattr(cls, attr):
        return True
    if dataclasses.is_dataclass(cls) and attr in {f.name for f in dataclasses.fields(cls)}:
        return True
    return any(attr in getattr(c, "__annotations__", {}) for c in cls.__mro__)


def resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ModuleNotFoundError(dotted)


def problem(token: str) -> str | None:
    """Why ``token`` does not resolve (None: it does, or it is not a name of the code)."""
    if PATH.match(token) and (token.endswith((".py", "/", ".md")) or "*" in token):
        return None if list(ROOT.glob(token.rstrip("/"))) else "no such path"
    if BARE_FILE.match(token):
        hits = [p for pkg in (*layout.PACKAGES, "tests", "simulations", "benchmarks")
                for p in (ROOT / pkg).rglob(token)]
        return None if hits else "no such file"
    if m := DOTTED.match(token):
        try:
            resolve(m.group(1))
        except (ImportError, AttributeError) as e:
            return f"does not resolve ({e})"
        return None
    if m := CLASS_ATTR.match(token):
        found = classes().get(m.group(1))
        if not found:
            return None  # not a class of ours (a Nostr or Python name, say)
        return None if any(has_attr(c, m.group(2)) for c in found) else "no such attribute"
    if token in HOME_FILES:
        return None
    if m := NODE_PART.match(token):
        import typing

        from p2pworld import Node

        part = typing.get_type_hints(getattr(Node, m.group(1)).fget)["return"]
        return None if has_attr(part, m.group(2)) else f"{part.__name__} has no such attribute"
    if m := NODE_ATTR.match(token):
        from p2pworld import Node

        return None if has_attr(Node, m.group(1)) else "Node has no such attribute"
    return None


def test_names_and_paths_in_the_docs_resolve() -> None:
    bad = [f"{doc}: `{t}` {why}" for doc, t in tokens() if (why := problem(t))]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("token", ["p2pworld.testing.NoSuchThing", "p2pworld/no_such.py",
                                   "no_such_module.py", "node.no_such_method()",
                                   "node.channels.no_such_method()",
                                   "NodeConfig.no_such_field"])
def test_the_check_can_fail(token: str) -> None:
    assert problem(token)


# --- limits -------------------------------------------------------------------------------

def amount(text: str) -> int:
    """``"1 MiB"`` -> 1048576, ``"4,096"`` -> 4096, ``"16 KiB"`` -> 16384."""
    m = re.fullmatch(r"([\d,]+)\s*(KiB|MiB|bytes)?", text.strip())
    assert m, text
    n = int(m.group(1).replace(",", ""))
    return n * {"KiB": 1 << 10, "MiB": 1 << 20}.get(m.group(2) or "", 1)


LIMIT_ROW = re.compile(r"^\| ([^|]+) \| ([\d,]+(?: (?:KiB|MiB|bytes))?) \| `([\w.]+)` \|$", re.M)


def limit_rows() -> list[tuple[str, int, str]]:
    text = (ROOT / "docs/protocol.md").read_text()
    return [(what.strip(), amount(value), const) for what, value, const in LIMIT_ROW.findall(text)]


def test_the_protocol_doc_has_a_limits_table() -> None:
    assert len(limit_rows()) >= 20


@pytest.mark.parametrize("what,value,const", limit_rows(), ids=lambda x: str(x)[:40])
def test_each_documented_limit_is_the_constant(what: str, value: int, const: str) -> None:
    assert resolve(const) == value, f"{what}: the docs say {value}, {const} is {resolve(const)}"


# Limits stated in the prose of docs/protocol.md, each with the constant it states.
PROSE = [
    (r"by default at most ([\d,]+ (?:KiB|MiB))", "p2pworld.codec.MAX_FRAME_BYTES"),
    (r"nesting at most ([\d,]+)", "p2pworld.codec.MAX_DEPTH"),
    (r"collections at most ([\d,]+) items", "p2pworld.codec.MAX_ITEMS"),
    (r"a handshake message is at most ([\d,]+ KiB)", "p2pworld.transport.handshake.MAX_HANDSHAKE_BYTES"),
    (r"the token slot at most ([\d,]+ KiB)", "p2pworld.transport.handshake.MAX_TOKEN_BYTES"),
    (r"`MAX_MESSAGE` = ([\d,]+ MiB)", "p2pworld.transport.frames.MAX_MESSAGE"),
    (r"A session's send queue holds at most ([\d,]+) messages", "p2pworld.io.session.SEND_QUEUE"),
    (r"messages and ([\d,]+ MiB)", "p2pworld.io.session.SEND_QUEUE_BYTES"),
    (r"a sequencer sends at most ([\d,]+) entries", "p2pworld.channel.hub.MAX_BATCH"),
    (r"entries and ([\d,]+ MiB) of entry bytes per batch", "p2pworld.channel.hub.MAX_BATCH_BYTES"),
    (r"A sequencer keeps at most ([\d,]+) entries", "p2pworld.channel.hub.WINDOW_ENTRIES"),
    (r"entries and ([\d,]+ MiB) of entry bytes in flight", "p2pworld.channel.hub.WINDOW_BYTES"),
    (r"at most\s+([\d,]+ MiB) summed over the channels", "p2pworld.channel.hub.PEER_WINDOW_BYTES"),
    (r"A writer keeps at most\s+([\d,]+ MiB) of payload", "p2pworld.channel.hub.WRITER_WINDOW_BYTES"),
    (r"\(default ([\d,]+ MiB)\)", "p2pworld.log.entry.DEFAULT_MAX_PAYLOAD"),
    (r"payload limit in bytes \(1 \.\. ([\d,]+ MiB)\)", "p2pworld.log.entry.MAX_PAYLOAD_LIMIT"),
    (r"plus at most ([\d,]+) bytes of\s+sealing", "p2pworld.log.entry.SEAL_OVERHEAD"),
    (r"([\d,]+ KiB) for control entries", "p2pworld.log.entry.MAX_CTL_PAYLOAD"),
    (r"at most ([\d,]+) entries and 32 MiB per message", "p2pworld.channel.hub.MAX_EPOCH_CATCHUP"),
    (r"4,000 entries and ([\d,]+ MiB) per message", "p2pworld.channel.hub.EPOCH_CATCHUP_BYTES"),
    (r"at most ([\d,]+) entries and 24 MiB\)", "p2pworld.wire.MAX_RESTORE"),
    (r"4,096 entries and ([\d,]+ MiB)\)", "p2pworld.channel.startup.RESTORE_BYTES"),
]


@pytest.mark.parametrize("pattern,const", PROSE, ids=lambda x: str(x)[:40])
def test_limits_in_the_prose_are_the_constants(pattern: str, const: str) -> None:
    text = " ".join((ROOT / "docs/protocol.md").read_text().split())
    found = re.findall(" ".join(pattern.split()), text)
    assert found, f"docs/protocol.md no longer says {pattern!r}"
    assert all(amount(f) == resolve(const) for f in found), (found, const, resolve(const))


def test_the_user_scenario_in_the_simulation_doc_runs() -> None:
    """docs/simulation.md shows a user writing a scenario of their own: it runs as printed."""
    text = (ROOT / "docs/simulation.md").read_text()
    section = text.split("## Writing a scenario of your own", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/simulation.md", "exec"), {"__name__": "user_scenario"})


def test_the_readme_embedding_example_runs(tmp_path: Any) -> None:
    """The README's ten lines, run as printed in a process of their own (``HOME`` in a
    temporary directory): the publish is acknowledged and the message read back."""
    text = (ROOT / "README.md").read_text()
    code = text.split("## Embedding", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str] = queue.Queue()
    out = proc.stdout
    assert out is not None

    def read() -> None:
        for x in out:
            lines.put(x)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    waited = 0
    try:
        while not any(re.match(r"^1 [0-9a-f]{8} b'hello'$", x) for x in seen):
            try:
                seen.append(lines.get(timeout=1).rstrip("\n"))
            except queue.Empty:
                waited += 1
                exited = proc.poll() is not None and not reader.is_alive()
                assert not exited and waited < 120, f"no message read back: {seen}"
    finally:
        proc.kill()
        proc.wait()
        reader.join(10)
        out.close()
    assert any("PublishResult(" in x and "seq=1" in x for x in seen), seen
