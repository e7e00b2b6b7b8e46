"""mDNS discovery shell: advertise this node and browse for peers with zeroconf.

Zeroconf runs its own threads (and an asyncio loop); this shell bridges them into trio: browse
callbacks hand candidates to trio through ``trio.from_thread`` with the run's token, and
blocking zeroconf calls run in worker threads. Interfaces are always explicit: zeroconf is
never started on "all interfaces". Closing unregisters the service, which sends goodbye
packets so peers drop us at once.

Example::

    async with MdnsDiscovery(interfaces=["127.0.0.1"], node_id=nid, workspace="lab",
                             port=port) as mdns:
        async for event in mdns.events():
            ...   # Found(candidate) / Lost(node_id)
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import ifaddr
import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from p2pworld.errors import DecodeError, DiscoveryError
from p2pworld.io.scopes import task
from p2pworld.transport.candidate import SERVICE_TYPE, Candidate, build_txt, parse_txt

EVENT_QUEUE = 256


@dataclass(frozen=True)
class Found:
    service_name: str
    candidate: Candidate


@dataclass(frozen=True)
class Lost:
    service_name: str


def resolve_interfaces(names: list[str]) -> list[str]:
    """Map interface names (``eth0``) or IPv4 addresses to IPv4 addresses."""
    out: list[str] = []
    adapters = None
    for name in names:
        try:
            socket.inet_aton(name)
            out.append(name)
            continue
        except OSError:
            pass
        if adapters is None:
            adapters = ifaddr.get_adapters()
        ips = [ip.ip for a in adapters if a.nice_name == name or a.name == name
               for ip in a.ips if isinstance(ip.ip, str)]
        if not ips:
            raise DiscoveryError(f"interface {name!r} has no IPv4 address")
        out.extend(ips)
    if not out:
        raise DiscoveryError("no interface given: mDNS needs an explicit interface")
    return out


class MdnsDiscovery:
    """Advertise ``_p2pworld._tcp.local.`` on the given interfaces and browse for peers."""

    def __init__(self, *, interfaces: list[str], node_id: bytes, workspace: str, port: int,
                 versions: tuple[int, ...] = (1,)) -> None:
        self.interfaces = resolve_interfaces(interfaces)
        self.node_id = node_id
        self.workspace = workspace
        self.port = port
        self.versions = versions
        self.instance = f"p2pw-{node_id.hex()[:16]}.{SERVICE_TYPE}"
        self._send, self._recv = trio.open_memory_channel[Found | Lost](EVENT_QUEUE)
        self._zc: Zeroconf | None = None
        self._info: ServiceInfo | None = None
        self._browser: ServiceBrowser | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.dropped = 0
        self.malformed = 0
        self.registered = trio.Event()

    async def __aenter__(self) -> MdnsDiscovery:
        self._token = trio.lowlevel.current_trio_token()
        self._zc = await trio.to_thread.run_sync(
            lambda: Zeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only))
        self._info = ServiceInfo(
            SERVICE_TYPE, self.instance,
            addresses=[socket.inet_aton(a) for a in self.interfaces],
            port=self.port,
            properties=build_txt(node_id=self.node_id, workspace=self.workspace,
                                 port=self.port, versions=self.versions),
            server=f"p2pw-{self.node_id.hex()[:16]}.local.",
        )
        self._browser = ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self._on_change])
        return self

    @task("lane", boundary=False)
    async def register(self) -> None:
        """Announce this node (probing and announcing take about 1.6 s)."""
        zc, info = self._zc, self._info
        assert zc is not None and info is not None
        await trio.to_thread.run_sync(zc.register_service, info)
        self.registered.set()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        zc = self._zc
        self._zc = None
        if zc is None:
            return
        with trio.CancelScope(shield=True):
            def shutdown() -> None:
                if self._browser is not None:
                    self._browser.cancel()
                if self.registered.is_set() and self._info is not None:
                    zc.unregister_service(self._info)  # goodbye packets
                zc.close()

            await trio.to_thread.run_sync(shutdown)
        self._send.close()

    def events(self) -> AsyncIterator[Found | Lost]:
        """Discovery events, in arrival order (self and malformed records are filtered)."""
        return self._recv.__aiter__()

    # --- zeroconf thread side ---------------------------------------------------------------

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange, **_: Any) -> None:
        if name == self.instance:
            return
        if state_change is ServiceStateChange.Removed:
            self._deliver(Lost(name))
            return
        info = zeroconf.get_service_info(service_type, name, timeout=3000)
        if info is None:
            return
        try:
            cand = parse_txt(dict(info.properties), addresses=info.parsed_addresses(),
                             source="mdns")
        except DecodeError:
            self.malformed += 1
            return
        if cand.port != info.port:
            cand = Candidate(node_id=cand.node_id, workspace=cand.workspace,
                             versions=cand.versions, addresses=cand.addresses,
                             port=info.port or cand.port, source="mdns")
        if cand.node_id != self.node_id:
            self._deliver(Found(name, cand))

    def _deliver(self, event: Found | Lost) -> None:
        token = self._token
        if token is None:
            return

        def put() -> None:
            try:
                self._send.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

        try:
            trio.from_thread.run_sync(put, trio_token=token)
        except trio.RunFinishedError:
            pass
