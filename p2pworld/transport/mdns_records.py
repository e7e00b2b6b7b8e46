"""What mDNS records mean for a node (pure): its service names, the interfaces it binds, and a
browsed service as a discovery event.

The zeroconf shell (``discovery/mdns.py``) runs the sockets and threads; it asks this core
which addresses an interface list names (:func:`interface_addresses`: always explicit, never
"all interfaces") and, for each browse callback, what it means (:class:`MdnsBrowse`): a peer
found (:class:`Found`), a peer gone (:class:`Lost`), nothing (our own record, a malformed one,
one that did not resolve) or a look-up of the service's info first (:data:`LOOKUP`). The TXT
record itself is :mod:`p2pworld.transport.candidate`'s.

Example:
    >>> from p2pworld.transport.candidate import build_txt
    >>> class Info:  # what zeroconf's ServiceInfo offers
    ...     port = 4000
    ...     properties = {k.encode(): v.encode() for k, v in build_txt(
    ...         node_id=b"\\x02" * 32, workspace="lab", port=4000, versions=(1,)).items()}
    ...     def parsed_addresses(self): return ["10.0.0.2"]
    >>> browse = MdnsBrowse(node_id=b"\\x01" * 32)
    >>> browse.changed("p2pw-0202.x", removed=False) is LOOKUP
    True
    >>> [e.candidate.urls() for e in browse.resolved("p2pw-0202.x", Info())]
    [['ws://10.0.0.2:4000/']]
    >>> browse.changed("p2pw-0202.x", removed=True)
    [Lost(service_name='p2pw-0202.x')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from p2pworld.errors import DecodeError, DiscoveryError
from p2pworld.transport.candidate import SERVICE_TYPE, Candidate, parse_txt

LOOKUP_TIMEOUT_MS = 3000
"""How long the shell waits for a browsed service's info."""


def service_instance(node_id: bytes) -> str:
    """This node's mDNS service instance name.

    Example:
        >>> service_instance(bytes(range(32)))
        'p2pw-0001020304050607._p2pworld._tcp.local.'
    """
    return f"p2pw-{node_id.hex()[:16]}.{SERVICE_TYPE}"


def service_host(node_id: bytes) -> str:
    """The host name this node's service record points at.

    Example:
        >>> service_host(bytes(range(32)))
        'p2pw-0001020304050607.local.'
    """
    return f"p2pw-{node_id.hex()[:16]}.local."


class _Address(Protocol):
    @property
    def ip(self) -> Any: ...  # ifaddr: a str for IPv4, a tuple for IPv6


class Adapter(Protocol):
    """A network interface as ``ifaddr.get_adapters()`` lists it."""

    @property
    def name(self) -> Any: ...

    @property
    def nice_name(self) -> Any: ...

    @property
    def ips(self) -> Sequence[_Address]: ...


def interface_addresses(names: Iterable[str], *, is_address: Callable[[str], bool],
                        adapters: Callable[[], Iterable[Adapter]]) -> list[str]:
    """The IPv4 addresses mDNS binds for ``names``: each an IPv4 address (``is_address``
    says, the way the OS parses one) or an interface name (``eth0``) whose IPv4 addresses
    ``adapters()`` lists (asked at most once, and only when a name needs it). A name with no
    IPv4 address, or no name at all, is a :class:`~p2pworld.errors.DiscoveryError`.

    Example:
        >>> class A:
        ...     name, nice_name = "veth0", "veth0"
        ...     ips = [type("Ip", (), {"ip": "10.9.0.1"})(), type("Ip", (), {"ip": ("fe80::1", 0, 2)})()]
        >>> interface_addresses(["127.0.0.1", "veth0"], is_address=lambda n: n[0].isdigit(),
        ...                     adapters=lambda: [A()])
        ['127.0.0.1', '10.9.0.1']
    """
    out: list[str] = []
    listed: Sequence[Adapter] | None = None
    for name in names:
        if is_address(name):
            out.append(name)
            continue
        if listed is None:
            listed = list(adapters())
        ips = [ip.ip for a in listed if a.nice_name == name or a.name == name
               for ip in a.ips if isinstance(ip.ip, str)]
        if not ips:
            raise DiscoveryError(f"interface {name!r} has no IPv4 address")
        out.extend(ips)
    if not out:
        raise DiscoveryError("no interface given: mDNS needs an explicit interface")
    return out


@dataclass(frozen=True)
class Found:
    """A peer's service was found (or changed): ``candidate`` is what its record claims."""

    service_name: str
    candidate: Candidate


@dataclass(frozen=True)
class Lost:
    """A peer's service went away (goodbye packet or expiry)."""

    service_name: str


class ServiceInfo(Protocol):
    """What the core reads of zeroconf's ``ServiceInfo``."""

    @property
    def port(self) -> int | None: ...

    @property
    def properties(self) -> Mapping[bytes, bytes | None]: ...

    def parsed_addresses(self) -> list[str]: ...


class Lookup(Enum):
    """Answer of :meth:`MdnsBrowse.changed`: fetch the service's info, then ask
    :meth:`MdnsBrowse.resolved`."""

    LOOKUP = "lookup"


LOOKUP = Lookup.LOOKUP


@dataclass
class MdnsBrowse:
    """What browse callbacks mean for the node ``node_id`` (whose own service is
    ``instance``); ``malformed`` counts records whose TXT did not parse."""

    node_id: bytes
    malformed: int = 0

    @property
    def instance(self) -> str:
        return service_instance(self.node_id)

    def changed(self, name: str, *, removed: bool) -> Sequence[Found | Lost] | Lookup:
        """A service was added, updated or removed: our own is ignored, a removal is
        :class:`Lost`, anything else needs its info (:data:`LOOKUP`)."""
        if name == self.instance:
            return []
        return [Lost(name)] if removed else LOOKUP

    def resolved(self, name: str, info: ServiceInfo | None) -> list[Found]:
        """The looked-up info of ``name`` (``None``: it did not resolve in time) as events:
        a :class:`Found` for a well-formed record of another node (the SRV port wins over the
        TXT one), nothing otherwise."""
        if info is None:
            return []
        try:
            cand = parse_txt(dict(info.properties), addresses=info.parsed_addresses(),
                             source="mdns")
        except DecodeError:
            self.malformed += 1
            return []
        if cand.port != info.port:
            cand = Candidate(node_id=cand.node_id, workspace=cand.workspace,
                             versions=cand.versions, addresses=cand.addresses,
                             port=info.port or cand.port, source="mdns")
        return [Found(name, cand)] if cand.node_id != self.node_id else []


__all__ = ["Adapter", "Found", "LOOKUP", "LOOKUP_TIMEOUT_MS", "Lookup", "Lost", "MdnsBrowse",
           "ServiceInfo", "interface_addresses", "service_host", "service_instance"]
