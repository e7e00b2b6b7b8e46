"""mDNS discovery shell: advertise this node and browse for peers with zeroconf.

Zeroconf runs its own threads (and an asyncio loop); this shell bridges them into trio: browse
callbacks hand candidates to trio through ``trio.from_thread`` with the run's token, and
blocking zeroconf calls run in worker threads. Interfaces are always explicit: zeroconf is
never started on "all interfaces". Closing unregisters the service, which sends goodbye
packets so peers drop us at once. What a record means (our own, malformed, a peer found or
gone) and which addresses an interface list names are decided by the core
:mod:`p2pworld.transport.mdns_records`.

Example::

    async with MdnsDiscovery(interfaces=["127.0.0.1"], node_id=nid, workspace="lab",
                             port=port) as mdns:
        async for event in mdns.events():
            ...   # Found(candidate) / Lost(node_id)
"""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import ifaddr
import trio
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from p2pworld.io.scopes import task
from p2pworld.transport.candidate import SERVICE_TYPE, build_txt
from p2pworld.transport.mdns_records import (
    LOOKUP,
    LOOKUP_TIMEOUT_MS,
    Found,
    Lookup,
    Lost,
    MdnsBrowse,
    interface_addresses,
    service_host,
)

EVENT_QUEUE = 256


def _is_ipv4(name: str) -> bool:
    """Whether the OS reads ``name`` as an IPv4 address."""
    try:
        socket.inet_aton(name)
    except OSError:
        return False
    return True


def resolve_interfaces(names: list[str]) -> list[str]:
    """Map interface names (``eth0``) or IPv4 addresses to IPv4 addresses
    (:func:`~p2pworld.transport.mdns_records.interface_addresses`)."""
    return interface_addresses(names, is_address=_is_ipv4, adapters=ifaddr.get_adapters)


@dataclass(frozen=True)
class _Running:
    """What :meth:`MdnsDiscovery.__aenter__` started (and ``__aexit__`` stops)."""

    zc: Zeroconf
    info: ServiceInfo
    browser: ServiceBrowser


class MdnsDiscovery:
    """Advertise ``_p2pworld._tcp.local.`` on the given interfaces and browse for peers."""

    def __init__(self, *, interfaces: list[str], node_id: bytes, workspace: str, port: int,
                 versions: tuple[int, ...] = (1,)) -> None:
        self.interfaces = resolve_interfaces(interfaces)
        self.node_id = node_id
        self.workspace = workspace
        self.port = port
        self.versions = versions
        self._browse = MdnsBrowse(node_id)
        self.instance = self._browse.instance
        self._send, self._recv = trio.open_memory_channel[Found | Lost](EVENT_QUEUE)
        self._running: _Running | None = None
        self.dropped = 0
        self.registered = trio.Event()

    async def __aenter__(self) -> MdnsDiscovery:
        token = trio.lowlevel.current_trio_token()
        zc = await trio.to_thread.run_sync(
            lambda: Zeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only))
        info = ServiceInfo(
            SERVICE_TYPE, self.instance,
            addresses=[socket.inet_aton(a) for a in self.interfaces],
            port=self.port,
            properties=build_txt(node_id=self.node_id, workspace=self.workspace,
                                 port=self.port, versions=self.versions),
            server=service_host(self.node_id),
        )
        # Browse callbacks run on zeroconf's thread and reach trio with this run's token.
        browser = ServiceBrowser(zc, SERVICE_TYPE,
                                 handlers=[functools.partial(self._on_change, token)])
        self._running = _Running(zc, info, browser)
        return self

    @task("lane", boundary=False)
    async def register(self) -> None:
        """Announce this node (probing and announcing take about 1.6 s)."""
        running = self._running
        assert running is not None
        await trio.to_thread.run_sync(running.zc.register_service, running.info)
        self.registered.set()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        running, self._running = self._running, None
        if running is None:
            return
        with trio.CancelScope(shield=True):
            def shutdown() -> None:
                running.browser.cancel()
                if self.registered.is_set():
                    running.zc.unregister_service(running.info)  # goodbye packets
                running.zc.close()

            await trio.to_thread.run_sync(shutdown)
        self._send.close()

    def events(self) -> AsyncIterator[Found | Lost]:
        """Discovery events, in arrival order (self and malformed records are filtered)."""
        return self._recv.__aiter__()

    # --- zeroconf thread side ---------------------------------------------------------------

    @property
    def malformed(self) -> int:
        """Browsed records whose TXT did not parse."""
        return self._browse.malformed

    def _on_change(self, token: trio.lowlevel.TrioToken, zeroconf: Zeroconf, service_type: str,
                   name: str, state_change: ServiceStateChange, **_: Any) -> None:
        removed = state_change is ServiceStateChange.Removed
        events: Sequence[Found | Lost] | Lookup = self._browse.changed(name, removed=removed)
        if events is LOOKUP:
            events = self._browse.resolved(name, zeroconf.get_service_info(
                service_type, name, timeout=LOOKUP_TIMEOUT_MS))
        for event in events:
            self._deliver(token, event)

    def _deliver(self, token: trio.lowlevel.TrioToken, event: Found | Lost) -> None:
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


__all__ = ["EVENT_QUEUE", "Found", "Lost", "MdnsDiscovery", "resolve_interfaces"]
