"""A real Nostr relay (PyPI ``nostr-relay`` from ``.relay-venv``, which ``make test`` builds),
started on a free loopback port by the test and stopped by pid. Fails (never skips) if the
relay cannot be started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELAY_BIN = ROOT / ".relay-venv" / "bin" / "nostr-relay"

CONFIG = """DEBUG: false
storage:
  sqlalchemy.url: sqlite+aiosqlite:///{db}
  validators:
    - nostr_relay.validators.is_signed
    - nostr_relay.validators.is_not_too_large
gunicorn:
  bind: 127.0.0.1:{port}
  workers: 1
  loglevel: warning
purple:
  host: 127.0.0.1
  port: {port}
  workers: 1
  disable_compression: true
authentication:
  enabled: {auth}
  relay_urls:
    - ws://127.0.0.1:{port}
  actions:
    save: {save}
    query: a
"""


def write_config(tmp: Path, port: int, *, auth: bool = False) -> Path:
    """Write the relay's config (storage in ``tmp``, listening on 127.0.0.1:``port``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "relay.yaml"
    cfg.write_text(CONFIG.format(db=tmp.resolve() / "relay.sqlite3", port=port,
                                 auth="true" if auth else "false", save="w" if auth else "a"))
    return cfg


@asynccontextmanager
async def black_hole() -> AsyncIterator[str]:
    """``ws://`` URL of a listener that accepts connections and never answers anything (a
    dead, hostile or hung relay)."""
    import trio

    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"ws://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def real_relay(tmp: Path, port: int | None = None, *,
               writers: list[str] | None = None, extra: str = "") -> Iterator[str]:
    """``ws://127.0.0.1:PORT`` of a running relay; its storage lives in ``tmp``. ``writers``
    (pubkeys, hex): NIP-42 on, and only these keys, once authenticated, may publish.
    ``extra``: more lines of relay configuration (e.g. ``max_event_size: N``)."""
    if not RELAY_BIN.exists():
        raise AssertionError(f"{RELAY_BIN} missing: run `make .relay-venv/.installed`")
    port = port or free_port()
    cfg = write_config(tmp, port, auth=writers is not None)
    if extra:
        cfg.write_text(cfg.read_text() + extra.rstrip("\n") + "\n")

    proc = subprocess.Popen([str(RELAY_BIN), "-c", str(cfg), "serve"], cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the Nostr relay did not start") from None
                time.sleep(0.1)
        for pk in writers or []:
            # The relay creates its tables when it starts; roles go in after that.
            subprocess.run([str(RELAY_BIN), "-c", str(cfg), "role", "set", "-p", pk, "-r",
                            "w"], cwd=tmp, check=True, capture_output=True, timeout=60)
        yield f"ws://127.0.0.1:{port}"
    finally:
        # gunicorn runs a worker process: stop the whole process group we started.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


SDK_CHECK = ROOT / "tests" / "tools" / "nostr_sdk_check.py"


def sdk_fetch(url: str, flt: dict[str, object], secret: bytes | None = None) -> list[dict[str, object]]:
    """Events matching ``flt`` on the relay at ``url`` as read and verified by ``nostr-sdk``
    (rust-nostr, in ``.relay-venv``, as a separate asyncio process). ``secret``: decrypt
    NIP-44 contents addressed to this key too."""
    import json

    args = [str(ROOT / ".relay-venv" / "bin" / "python"), str(SDK_CHECK), url, json.dumps(flt)]
    if secret is not None:
        args.append(secret.hex())
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise AssertionError(f"nostr-sdk check failed: {out.stderr[-2000:]}")
    result: list[dict[str, object]] = json.loads(out.stdout)
    return result
