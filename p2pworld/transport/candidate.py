"""Candidates: what a discovery source tells us about a possible peer (pure parsing).

The mDNS TXT record of service ``_p2pworld._tcp.local.`` carries (all ASCII):

=========  ===============================================
``v``      protocol versions, comma separated (``"1"``)
``ws``     workspace id
``id``     node id, 64 lowercase hex digits
``port``   websocket port (also in the SRV record)
=========  ===============================================

Example:
    >>> c = parse_txt({b"v": b"1", b"ws": b"lab", b"id": b"ab" * 32, b"port": b"4000"},
    ...               addresses=["10.0.0.2", "fe80::1"], source="mdns")
    >>> c.urls()
    ['ws://10.0.0.2:4000/']
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from p2pworld.errors import DecodeError

SERVICE_TYPE = "_p2pworld._tcp.local."
MAX_WORKSPACE = 128


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A possible peer. ``node_id`` is a claim until a handshake proves it."""

    node_id: bytes
    workspace: str
    versions: tuple[int, ...]
    addresses: tuple[str, ...]
    port: int
    source: str
    relay: str = ""
    """A rendezvous URL that can relay a session to this peer (empty: none)."""
    nostr: bytes = b""
    """The peer's Nostr key, when the candidate came from a relay (the Nostr lane's address)."""

    def urls(self) -> list[str]:
        out = []
        for a in self.addresses:
            ip = ipaddress.ip_address(a)
            host = f"[{a}]" if ip.version == 6 else a
            out.append(f"ws://{host}:{self.port}/")
        return out


def usable_address(addr: str) -> bool:
    """Skip link-local IPv6 (needs a scope id we do not carry) and unspecified addresses."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast or (ip.version == 6 and ip.is_link_local))


def build_txt(*, node_id: bytes, workspace: str, port: int,
              versions: tuple[int, ...]) -> dict[str, str]:
    return {"v": ",".join(str(v) for v in versions), "ws": workspace, "id": node_id.hex(),
            "port": str(port)}


def parse_txt(props: dict[bytes, bytes | None], *, addresses: list[str],
              source: str) -> Candidate:
    """Parse and bound a TXT record; any problem is a :class:`DecodeError`."""

    def get(key: bytes, limit: int, encoding: str = "ascii") -> str:
        v = props.get(key)
        if v is None or len(v) > limit:
            raise DecodeError(f"TXT field {key.decode()} missing or too long")
        try:
            return v.decode(encoding)
        except UnicodeDecodeError:
            raise DecodeError(f"TXT field {key.decode()} is not {encoding}") from None

    nid_hex = get(b"id", 64)
    if len(nid_hex) != 64 or any(c not in "0123456789abcdef" for c in nid_hex):
        raise DecodeError("TXT id is not 64 lowercase hex digits")
    try:
        versions = tuple(int(x) for x in get(b"v", 32).split(","))
        port = int(get(b"port", 5))
    except ValueError:
        raise DecodeError("TXT v or port is not numeric") from None
    if not 0 < port < 65536:
        raise DecodeError("TXT port out of range")
    addrs = tuple(a for a in addresses if usable_address(a))
    # A workspace name is UTF-8 (any language), bounded in bytes.
    return Candidate(node_id=bytes.fromhex(nid_hex),
                     workspace=get(b"ws", MAX_WORKSPACE, "utf-8"),
                     versions=versions, addresses=addrs, port=port, source=source)


def from_urls(node_id: bytes, workspace: str, urls: tuple[str, ...], *, source: str,
              relay: str = "") -> Candidate:
    """A candidate from ``ws://host:port/`` URLs (a rendezvous registration). Unparseable or
    unusable URLs are dropped; the port of the first usable one is kept."""
    addrs: list[str] = []
    port = 0
    for u in urls:
        if not u.startswith("ws://"):
            continue
        hostport = u[5:].split("/", 1)[0]
        host, _, p = hostport.rpartition(":")
        host = host.strip("[]")
        if not p.isdigit() or not 0 < int(p) < 65536 or not usable_address(host):
            continue
        if port in (0, int(p)):
            port = int(p)
            addrs.append(host)
    return Candidate(node_id=node_id, workspace=workspace, versions=(1,),
                     addresses=tuple(addrs), port=port, source=source, relay=relay)
