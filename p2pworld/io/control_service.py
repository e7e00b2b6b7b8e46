"""The control service's home and lifetime (shell): state file, operator credential, serving.

Home layout: ``control.state`` (the :class:`~p2pworld.auth.control.ControlState` frame, written
atomically, mode 0600: it holds the signing keys) and ``operator.token`` (the operator
credential, hex, 0600, created once; the service keeps only its hash in the state).

Example::

    async with open_control(Path("/srv/control"), org="acme") as server:
        print(server.url)          # http://127.0.0.1:<port>
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from p2pworld.auth.control import ControlCore, ControlState
from p2pworld.auth.control_rules import decode_state
from p2pworld.io.home import write_atomic
from p2pworld.io.http import ControlServer, serve_control
from p2pworld.io.scopes import start_in

STATE_FILE = "control.state"
OPERATOR_FILE = "operator.token"


def load_or_init(home: Path, *, org: str = "default", ttl_s: int = 900,
                 open_enrollment: bool = False) -> tuple[ControlCore, str | None]:
    """Load the state (or create it with a new signing key and operator credential, which is
    returned once). A corrupt state file is ``STORE_CORRUPT``: the service does not start."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / STATE_FILE
    if path.exists():
        return ControlCore(decode_state(path.read_bytes(), str(path))), None
    secret = secrets.token_bytes(32)
    st = ControlState.create(org=org, operator_secret=secret, key=secrets.token_bytes(32),
                             ttl_s=ttl_s, open_enrollment=open_enrollment)
    write_atomic(home / OPERATOR_FILE, secret.hex().encode() + b"\n")
    write_atomic(path, st.encode())
    return ControlCore(st), secret.hex()




@asynccontextmanager
async def open_control(home: Path, *, host: str = "127.0.0.1", port: int = 0,
                       org: str = "default", ttl_s: int = 900,
                       open_enrollment: bool = False) -> AsyncIterator[ControlServer]:
    core, _ = load_or_init(home, org=org, ttl_s=ttl_s, open_enrollment=open_enrollment)

    def save(c: ControlCore) -> None:
        write_atomic(home / STATE_FILE, c.state.encode())

    async with trio.open_nursery() as n:
        server = await start_in(n, serve_control, core, host, port, save)
        try:
            yield server
        finally:
            n.cancel_scope.cancel()
