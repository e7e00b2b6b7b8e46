"""What ``open_node`` settles before a node runs (the runtime's, over HTTP and the file
system): the control service's signed policy and the transport mode it allows, the node's
first token, the home's channel log (refused when a home that ran before lost it), and the
listeners."""

from __future__ import annotations

import time
from typing import Any

import trio

from discovery.mdns import resolve_interfaces
from p2pworld.auth.book import AuthConfig
from p2pworld.auth.control import minted_token, published_keys, token_request, verify_policy
from p2pworld.core.lanes import resolve_mode
from p2pworld.errors import (
    AddressUnavailable,
    DiscoveryError,
    SessionClosed,
    StoreCorrupt,
    Unauthorized,
)
from p2pworld.identity import NodeIdentity
from p2pworld.io.home import NodeHome
from p2pworld.io.http import http_json
from p2pworld.io.log_store import LogStore
from p2pworld.runtime.config import NodeConfig


async def transport_policy(config: NodeConfig, auth: AuthConfig | None
                            ) -> tuple[dict[str, Any] | None, str]:
    """The control service's signed policy (when there is one) and the effective transport
    mode: local config narrowed by the policy, never widened (raises ``PolicyDenied``)."""
    policy = None
    if config.relays and config.control is not None and auth is not None:
        with trio.move_on_after(config.handshake_timeout):
            status, doc = await http_json(config.control, "GET", "/v1/policy")
            if status == 200:
                policy = verify_policy(doc, auth.keys)
    return policy, resolve_mode(config.transport, policy, relays=bool(config.relays))


async def bootstrap_auth(config: NodeConfig, ident: NodeIdentity, auth: AuthConfig | None
                          ) -> tuple[AuthConfig, bytes]:
    """Fetch the control service's keys (unless given) and a first token, retrying for up to
    ``handshake_timeout`` seconds. Raises ``Unauthorized`` (or ``SessionClosed``) if none."""
    assert config.control is not None
    deadline = time.monotonic() + config.handshake_timeout
    while True:
        try:
            if auth is None:
                status, out = await http_json(config.control, "GET", "/v1/keys")
                keys = published_keys(status, out)
                if keys is None:
                    raise Unauthorized(f"control service keys: HTTP {status}")
                auth = AuthConfig(keys=keys)
            token, _ = minted_token(*await http_json(
                config.control, "POST", "/v1/token",
                token_request(ident.signer, at=int(time.time()), nostr=ident.nostr.public)))
            return auth, token
        except SessionClosed:
            if time.monotonic() > deadline:
                raise Unauthorized("no token: the control service is unreachable") from None
            await trio.sleep(0.5)


def log_store(home: NodeHome) -> LogStore:
    """The home's channel log. A home that has run before (its world store exists: it is
    created after the log, on the first start) whose log is missing or empty lost every
    acknowledged entry: refused, typed, instead of starting over with an empty log."""
    path = home.path / "log.db"
    world = home.path / "world.db"
    empty = not path.exists() or path.stat().st_size == 0
    if empty and world.exists() and world.stat().st_size > 0:
        raise StoreCorrupt(f"{path} is missing or empty, but this home has run before "
                           f"({world} exists): restore the log, or start a fresh home",
                           path=str(path))
    return LogStore(path)


async def open_listeners(config: NodeConfig) -> tuple[str, list[trio.SocketListener]]:
    """One listener per configured interface (names resolve as for mDNS), all on one
    port: the first one's; and the first host. A failure is one typed error naming the
    address."""
    try:
        hosts = resolve_interfaces(config.interfaces or ["127.0.0.1"])
    except DiscoveryError as e:
        raise AddressUnavailable(e.message, address=",".join(config.interfaces)) \
            from None
    out: list[trio.SocketListener] = []
    port = config.port
    try:
        for host in dict.fromkeys(hosts):
            try:
                got = await trio.open_tcp_listeners(port, host=host)
            except OSError as e:
                raise AddressUnavailable(f"cannot listen on {host}:{port}: {e}",
                                         address=f"{host}:{port}") from None
            out += got
            port = got[0].socket.getsockname()[1]
    except BaseException:
        for lst in out:
            await trio.aclose_forcefully(lst)
        raise
    return hosts[0], out


__all__ = ["bootstrap_auth", "log_store", "open_listeners", "transport_policy"]
