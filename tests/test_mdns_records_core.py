"""What mDNS records mean (p2pworld.transport.mdns_records): service names, the interfaces
mDNS binds (always explicit) and a browsed service as a discovery event."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
from hypothesis import given, strategies as st

from discovery.mdns import resolve_interfaces
from p2pworld.errors import DiscoveryError
from p2pworld.transport.candidate import SERVICE_TYPE, Candidate, build_txt
from p2pworld.transport.mdns_records import (
    LOOKUP,
    Found,
    Lost,
    MdnsBrowse,
    interface_addresses,
    service_host,
    service_instance,
)

ME, THEM = b"\x01" * 32, b"\x02" * 32


@dataclass
class Ip:
    ip: object


@dataclass
class Adapter:
    name: str
    nice_name: str
    ips: list[Ip]


@dataclass
class Info:
    properties: dict[bytes, bytes | None]
    port: int | None = 4000
    addresses: list[str] = field(default_factory=lambda: ["10.0.0.2"])

    def parsed_addresses(self) -> list[str]:
        return self.addresses


def txt(node_id: bytes = THEM, port: int = 4000) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in build_txt(
        node_id=node_id, workspace="lab", port=port, versions=(1,)).items()}


def is_ipv4(name: str) -> bool:
    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True


# --- names ----------------------------------------------------------------------------------

@given(st.binary(min_size=32, max_size=32))
def test_service_names_are_the_old_ones(nid: bytes) -> None:
    assert service_instance(nid) == f"p2pw-{nid.hex()[:16]}.{SERVICE_TYPE}"
    assert service_host(nid) == f"p2pw-{nid.hex()[:16]}.local."
    assert MdnsBrowse(nid).instance == service_instance(nid)


# --- interfaces -----------------------------------------------------------------------------

ADAPTERS = [Adapter("eth0", "eth0", [Ip("10.1.0.1"), Ip(("fe80::1", 0, 2))]),
            Adapter("{guid}", "Wi-Fi", [Ip("10.2.0.1"), Ip("10.2.0.2")]),
            Adapter("v6only", "v6only", [Ip(("fe80::2", 0, 3))])]


def test_addresses_are_kept_and_names_resolved_in_order() -> None:
    got = interface_addresses(["127.0.0.1", "eth0", "Wi-Fi", "{guid}"], is_address=is_ipv4,
                              adapters=lambda: ADAPTERS)
    assert got == ["127.0.0.1", "10.1.0.1", "10.2.0.1", "10.2.0.2", "10.2.0.1", "10.2.0.2"]


def test_adapters_are_listed_once_and_only_when_a_name_needs_them() -> None:
    calls = []

    def adapters() -> list[Adapter]:
        calls.append(1)
        return ADAPTERS

    assert interface_addresses(["127.0.0.1", "10.0.0.1"], is_address=is_ipv4,
                               adapters=adapters) == ["127.0.0.1", "10.0.0.1"]
    assert calls == []
    interface_addresses(["eth0", "127.0.0.1", "Wi-Fi"], is_address=is_ipv4, adapters=adapters)
    assert calls == [1]


@pytest.mark.parametrize("names, message", [
    ([], "no interface given: mDNS needs an explicit interface"),
    (["v6only"], "interface 'v6only' has no IPv4 address"),
    (["eth9"], "interface 'eth9' has no IPv4 address"),
    (["127.0.0.1", "eth9"], "interface 'eth9' has no IPv4 address"),
])
def test_no_ipv4_address_is_an_error(names: list[str], message: str) -> None:
    with pytest.raises(DiscoveryError) as e:
        interface_addresses(names, is_address=is_ipv4, adapters=lambda: ADAPTERS)
    assert str(e.value) == message


def test_the_shell_keeps_an_address_and_refuses_no_interface() -> None:
    assert resolve_interfaces(["127.0.0.1"]) == ["127.0.0.1"]
    with pytest.raises(DiscoveryError):
        resolve_interfaces([])


# --- browsing -------------------------------------------------------------------------------

def test_our_own_service_is_ignored() -> None:
    b = MdnsBrowse(ME)
    assert b.changed(b.instance, removed=False) == []
    assert b.changed(b.instance, removed=True) == []


def test_removed_is_lost_and_anything_else_is_looked_up() -> None:
    b = MdnsBrowse(ME)
    assert b.changed("x", removed=True) == [Lost("x")]
    assert b.changed("x", removed=False) is LOOKUP


def test_a_peer_record_is_found() -> None:
    b = MdnsBrowse(ME)
    (found,) = b.resolved("x", Info(txt()))
    assert found == Found("x", Candidate(node_id=THEM, workspace="lab", versions=(1,),
                                         addresses=("10.0.0.2",), port=4000, source="mdns"))


def test_unresolved_malformed_and_own_records_are_dropped() -> None:
    b = MdnsBrowse(ME)
    assert b.resolved("x", None) == []
    assert b.resolved("x", Info({b"id": b"zz"})) == [] and b.malformed == 1
    assert b.resolved("x", Info(txt(node_id=ME))) == [] and b.malformed == 1


@pytest.mark.parametrize("srv, want", [(4000, 4000), (5000, 5000), (0, 4000), (None, 4000)])
def test_the_srv_port_wins(srv: int | None, want: int) -> None:
    (found,) = MdnsBrowse(ME).resolved("x", Info(txt(port=4000), port=srv))
    assert isinstance(found, Found)
    assert found.candidate.port == want and found.candidate.source == "mdns"
    assert found.candidate.relay == "" and found.candidate.nostr == b""
