"""The relay client (shell): several relays at once, reconnect with backoff and jitter,
bounded queues, subscriptions resumed after a reconnect, per-relay health, NIP-42 AUTH.

Nothing here waits on a relay while holding anything else up: each relay has its own task and
a bounded outgoing queue (a full queue drops the publish for that relay and counts it), and
``publish`` waits for ``OK`` answers only up to its timeout. Every relay message is checked by
:func:`~p2pworld.nostr.event.parse_relay_message` before it is used.

Limits: the first time a relay's websocket is up, the pool fetches its NIP-11 document
(:func:`~p2pworld.io.nip11.fetch_limits`, bounded) and keeps its limits in
:attr:`RelayPool.limits` (None: no usable document); the Nostr lane sizes its parts with them.

Resuming a subscription re-sends its ``REQ`` with ``since`` set to the newest ``created_at``
seen minus a margin (events are deduplicated by id), so a reconnect leaves no gap. NIP-59 gift
wraps backdate ``created_at`` by up to two days: subscriptions for them pass
``backdated=True`` and resume with a two-day margin.

Example::

    async with open_relay_pool(["ws://127.0.0.1:7777"], key=nostr_key) as pool:
        outcome = await pool.publish(event)             # {url: Ok(ok, message, prefix)}
        async for ev in pool.subscribe({"kinds": [1]}):
            ...
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from p2pworld.errors import NostrError
from p2pworld.io.nip11 import FETCH_TIMEOUT_S, RelayLimits, fetch_limits
from p2pworld.io.scopes import Failure, Supervisor, spawn_in, task
from p2pworld.io.session import close_websocket
from p2pworld.nostr.event import (
    Event,
    auth_event,
    client_auth,
    client_close,
    client_event,
    client_req,
    parse_relay_message,
)
from p2pworld.nostr.keys import NostrKey
from p2pworld.transport.backoff import Backoff

SEND_QUEUE = 256
_CONNECTION_ERRORS = (OSError, trio.TooSlowError, trio_websocket.HandshakeError,
                      trio_websocket.ConnectionClosed, trio_websocket.ConnectionRejected,
                      trio_websocket.ConnectionTimeout, trio.BrokenResourceError)
"""How a relay connection ends without being anyone's bug: counted in its health, redialled."""
MAX_RELAYS = 32
RESUME_MARGIN_S = 10
GIFT_WRAP_MARGIN_S = 2 * 24 * 3600


@dataclass(frozen=True)
class Ok:
    ok: bool
    message: str
    prefix: str


@dataclass
class RelayHealth:
    url: str
    state: str = "connecting"
    connects: int = 0
    failures: int = 0
    last_error: str = ""
    published_ok: int = 0
    published_refused: int = 0
    dropped: int = 0
    rate_limited: int = 0
    notices: int = 0
    authed: bool = False


@dataclass
class _Sub:
    filters: list[dict[str, Any]]
    out: trio.MemorySendChannel[Event]
    backdated: bool
    newest: int = 0
    seen: set[str] = field(default_factory=set)


class Subscription:
    """An async iterator of events (and an async context manager that closes it)."""

    def __init__(self, pool: RelayPool, sub_id: str,
                 recv: trio.MemoryReceiveChannel[Event]) -> None:
        self.pool, self.sub_id, self._recv = pool, sub_id, recv

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.pool._close(self.sub_id)


class RelayPool:
    """Connections to several relays (start with :func:`open_relay_pool`)."""

    def __init__(self, urls: list[str], *, key: NostrKey | None = None,
                 rng: random.Random | None = None,
                 limits_of: Callable[[str], Awaitable[RelayLimits | None]] = fetch_limits
                 ) -> None:
        self.urls = list(dict.fromkeys(urls))
        self.configured = list(self.urls)
        """The relays the pool was started with (not those added later)."""
        self.limits: dict[str, RelayLimits | None] = {}
        """Each relay's NIP-11 limits, once learned (None: it published no usable document)."""
        self._limits_of = limits_of
        self._learned = {u: trio.Event() for u in self.urls}
        self.key = key
        self.rng = rng or random.SystemRandom()
        self.health = {u: RelayHealth(u) for u in self.urls}
        self._queues: dict[str, tuple[trio.MemorySendChannel[str],
                                      trio.MemoryReceiveChannel[str]]] = {
            u: trio.open_memory_channel[str](SEND_QUEUE) for u in self.urls}
        self._oks: dict[tuple[str, str], tuple[trio.Event, list[Ok]]] = {}
        self._subs: dict[str, _Sub] = {}
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._sup: Supervisor | None = None
        self._any: dict[str, tuple[trio.Event, list[int]]] = {}
        """Publishes waiting for the first relay to accept: event id -> (wake-up, answers
        still missing)."""

    def add_relay(self, url: str) -> bool:
        """Connect to one more relay (a peer's NIP-65 relay) while running; at most
        :data:`MAX_RELAYS` in all. False if not added (known, full, not ``ws(s)://``, or the
        pool is not running)."""
        if (url in self.health or self._nursery is None or len(self.urls) >= MAX_RELAYS
                or not url.startswith(("ws://", "wss://")) or len(url) > 256):
            return False
        self.urls.append(url)
        self.health[url] = RelayHealth(url)
        self._learned[url] = trio.Event()
        self._queues[url] = trio.open_memory_channel[str](SEND_QUEUE)
        self._spawn(url)
        return True

    def attach(self, sup: Supervisor) -> None:
        """Run every relay connection as a scope of its own under ``sup`` (a failure ends and
        restarts that connection only); relays added later join it."""
        self._sup, self._nursery = sup, sup.nursery
        for url in self.urls:
            self._spawn(url)

    def _failed(self, f: Failure) -> None:
        """A relay connection ended with an error (it is restarted)."""
        h = self.health.get(f.key)
        if h is not None:
            h.failures += 1
            h.last_error = f.error.code

    def _spawn(self, url: str) -> None:
        if self._sup is not None:
            self._sup.spawn(self._run, url, key=url)

    # --- API ----------------------------------------------------------------------------------

    async def limits_known(self, url: str) -> RelayLimits | None:
        """Wait until ``url``'s NIP-11 limits are learned (its first connection) and return
        them (None: no usable document)."""
        await self._learned[url].wait()
        return self.limits[url]

    async def publish(self, ev: Event, *, timeout: float = 5.0,
                      relays: list[str] | None = None,
                      until_any: bool = False) -> dict[str, Ok | None]:
        """Send ``ev`` to every relay (or to ``relays``); returns each relay's ``OK`` (None:
        no answer in time, or not sent). ``OK true`` and ``duplicate:`` both mean the relay
        has it. ``until_any``: return as soon as one relay has it (the others keep the event
        and answer later, unrecorded): a dead relay then costs nothing while another works."""
        waits = {}
        accepted = trio.Event()
        msg = client_event(ev)
        targets = [u for u in self.urls if relays is None or u in relays]
        for u in targets:
            done = trio.Event()
            self._oks[(u, ev.id)] = (done, [])
            waits[u] = done
            try:
                self._queues[u][0].send_nowait(msg)
            except trio.WouldBlock:
                self.health[u].dropped += 1
                del self._oks[(u, ev.id)]
                waits.pop(u)
        out: dict[str, Ok | None] = {}
        try:
            with trio.move_on_after(timeout):
                if until_any:
                    self._any[ev.id] = (accepted, [len(waits)])
                    try:
                        if waits:
                            await accepted.wait()
                    finally:
                        self._any.pop(ev.id, None)
                else:
                    for done in waits.values():
                        await done.wait()
        finally:  # also when cancelled: leave nothing behind in _oks
            for u in targets:
                entry = self._oks.pop((u, ev.id), None)
                out[u] = entry[1][0] if entry and entry[1] else None
        return out

    def subscribe(self, *filters: dict[str, Any], backdated: bool = False,
                  buffer: int = 1024) -> Subscription:
        """Events matching ``filters`` from every relay, deduplicated by id, live; resumed
        without gaps after reconnects. Use as ``async with pool.subscribe(...) as sub:``
        (leaving it sends ``CLOSE``)."""
        sub_id = f"p2pw{next(self._ids)}"
        send, recv = trio.open_memory_channel[Event](buffer)
        self._subs[sub_id] = _Sub(list(filters), send, backdated)
        for u in self.urls:
            try:
                self._queues[u][0].send_nowait(client_req(sub_id, *filters))
            except trio.WouldBlock:
                self.health[u].dropped += 1
        return Subscription(self, sub_id, recv)

    def _close(self, sub_id: str) -> None:
        if self._subs.pop(sub_id, None) is None:
            return
        for u in self.urls:
            try:
                self._queues[u][0].send_nowait(client_close(sub_id))
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass

    # --- one relay ----------------------------------------------------------------------------

    @task("relay", restart=True)
    async def _run(self, url: str) -> None:
        """Keep one relay connected: connect, resume subscriptions, pump, back off, again."""
        backoff = Backoff(base=0.25, cap=30.0)
        h = self.health[url]
        while True:
            h.state = "connecting"
            try:
                await self._connection(url, h, backoff)
            except* _CONNECTION_ERRORS as eg:
                # Raised inside a nursery, these come wrapped in an ExceptionGroup: except*
                # takes them either way.
                h.failures += 1
                h.last_error = type(eg.exceptions[0]).__name__
            h.state = "backoff"
            await trio.sleep(backoff.next_delay(self.rng))

    async def _connection(self, url: str, h: RelayHealth, backoff: Backoff) -> None:
        u = urlsplit(url)
        host, port = u.hostname or "", u.port or (443 if u.scheme == "wss" else 80)
        if u.scheme != "ws":
            raise OSError(f"unsupported relay URL {url!r} (ws:// only for now)")
        # We own the TCP stream (so it is closed even if the websocket handshake is
        # cancelled half-way, which trio-websocket 0.12 would leak).
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(host, port)
        try:
            async with trio.open_nursery() as conn:
                try:
                    with trio.fail_after(10):
                        ws = await trio_websocket.wrap_client_stream(
                            conn, stream, host,
                            (u.path or "/") + (f"?{u.query}" if u.query else ""),
                            message_queue_size=64, max_message_size=1 << 20)
                    try:
                        await self._pump(url, h, backoff, ws)
                    finally:
                        # trio-websocket 0.12 leaves the TCP stream open when the server
                        # closes first: close it ourselves (as the session shell does).
                        await close_websocket(ws)
                finally:
                    # Cancelled only after the stream is closed: a checkpoint under this
                    # cancellation would replace whatever error is on its way out (and the
                    # nursery would then swallow the Cancelled, and the error with it).
                    conn.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    async def _pump(self, url: str, h: RelayHealth, backoff: Backoff,
                    ws: trio_websocket.WebSocketConnection) -> None:
        if url not in self.limits:
            await self._learn_limits(url)
        h.state, h.connects = "connected", h.connects + 1
        backoff.reset()
        for sub_id, sub in list(self._subs.items()):
            await ws.send_message(client_req(sub_id, *self._resume(sub)))
        async with trio.open_nursery() as n:
            spawn_in(n, self._writer, url, ws)
            await self._reader(url, ws)
            n.cancel_scope.cancel()

    async def _learn_limits(self, url: str) -> None:
        """Fetch ``url``'s NIP-11 limits once (bounded; any failure counts as none)."""
        lim = None
        with trio.move_on_after(2 * FETCH_TIMEOUT_S):
            lim = await self._limits_of(url)
        self.limits[url] = lim
        self._learned[url].set()

    def _resume(self, sub: _Sub) -> list[dict[str, Any]]:
        if not sub.newest:
            return sub.filters
        margin = GIFT_WRAP_MARGIN_S if sub.backdated else RESUME_MARGIN_S
        return [{**f, "since": max(0, sub.newest - margin)} for f in sub.filters]

    @task("relay", boundary=False)
    async def _writer(self, url: str, ws: trio_websocket.WebSocketConnection) -> None:
        recv = self._queues[url][1]
        async for msg in recv:
            try:
                await ws.send_message(msg)
            except trio_websocket.ConnectionClosed:
                return  # the reader sees the close too, and the connection ends

    async def _reader(self, url: str, ws: trio_websocket.WebSocketConnection) -> None:
        h = self.health[url]
        while True:
            try:
                text = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            try:
                m = parse_relay_message(text if isinstance(text, str) else text.decode())
            except (NostrError, UnicodeDecodeError):
                h.last_error = "NOSTR_INVALID"
                continue
            if m.type == "OK":
                ok = Ok(m.ok, m.message, m.prefix)
                if m.ok or m.prefix == "duplicate":
                    h.published_ok += 1
                else:
                    h.published_refused += 1
                    if m.prefix == "rate-limited":
                        h.rate_limited += 1
                key = (url, m.event_id)
                if not m.event_id:
                    # A relay that could not read the event's id answers in order: the
                    # oldest unanswered publish on this relay is the one it refused.
                    key = next((k for k, v in self._oks.items() if k[0] == url and not v[1]),
                               key)
                entry = self._oks.get(key)
                if entry is not None and not entry[1]:
                    entry[1].append(ok)
                    entry[0].set()
                    first = self._any.get(key[1])
                    if first is not None:
                        first[1][0] -= 1
                        if ok.ok or ok.prefix == "duplicate" or first[1][0] <= 0:
                            first[0].set()
            elif m.type == "EVENT" and m.event is not None:
                sub = self._subs.get(m.sub)
                if sub is None or m.event.id in sub.seen:
                    continue
                sub.seen.add(m.event.id)
                sub.newest = max(sub.newest, m.event.created_at)
                try:
                    sub.out.send_nowait(m.event)
                except trio.WouldBlock:
                    h.dropped += 1
                except trio.BrokenResourceError:
                    self._subs.pop(m.sub, None)
            elif m.type == "AUTH" and self.key is not None:
                ev = auth_event(self.key, relay=url, challenge=m.message,
                                created_at=int(time.time()),
                                aux=self.rng.getrandbits(256).to_bytes(32, "big"))
                await ws.send_message(client_auth(ev))
                h.authed = True
            elif m.type == "NOTICE":
                h.notices += 1
            elif m.type == "CLOSED":
                h.last_error = m.message[:100]


@asynccontextmanager
async def open_relay_pool(urls: list[str], *, key: NostrKey | None = None,
                          rng: random.Random | None = None,
                          limits_of: Callable[[str], Awaitable[RelayLimits | None]] = fetch_limits
                          ) -> AsyncIterator[RelayPool]:
    pool = RelayPool(urls, key=key, rng=rng, limits_of=limits_of)
    async with trio.open_nursery() as n:
        pool.attach(Supervisor(n, on_failure=pool._failed, rng=pool.rng))
        try:
            yield pool
        finally:
            n.cancel_scope.cancel()


class Bridge:
    """Drains an :class:`~p2pworld.io.nostr_outbox.Outbox` into a relay pool: every due
    (event, relay) pair is published concurrently (at most ``parallel`` at a time), each
    bounded by ``timeout``, and marked on ``OK true`` / ``duplicate:`` or scheduled for a
    retry. A relay that never answers only delays its own rows."""

    def __init__(self, outbox: Any, pool: RelayPool, *, timeout: float = 5.0,
                 parallel: int = 32,
                 on_mark: Callable[[Event, str, bool, str], None] | None = None) -> None:
        self.outbox, self.pool, self.timeout, self.on_mark = outbox, pool, timeout, on_mark
        self.limiter = trio.CapacityLimiter(parallel)
        self.wake = trio.Event()
        self.inflight: set[tuple[str, str]] = set()
        self.on_failure: Callable[[Failure], None] = lambda f: None
        """Told when one publish ended with an error (its row stays due and is retried)."""

    def notify(self) -> None:
        """Call after ``enqueue``: publish now rather than at the next scan."""
        self.wake.set()

    @task("lane", restart=True)
    async def run(self) -> None:
        async with trio.open_nursery() as n:
            # Each publish is a request of its own: one that fails leaves its row due.
            sup = Supervisor(n, on_failure=self._failed)
            while True:
                for ev, relay in self.outbox.due(now=time.time()):
                    if (ev.id, relay) not in self.inflight:
                        self.inflight.add((ev.id, relay))
                        sup.spawn(self._one, ev, relay, key=relay)
                with trio.move_on_after(0.5):
                    await self.wake.wait()
                self.wake = trio.Event()

    def _failed(self, f: Failure) -> None:
        """A publish failed: its row stays due, and the next scan publishes it again."""
        if len(f.args) == 2 and isinstance(f.args[0], Event):
            self.inflight.discard((f.args[0].id, f.args[1]))
        self.on_failure(f)

    @task("request")
    async def _one(self, ev: Event, relay: str) -> None:
        try:
            async with self.limiter:
                got = (await self.pool.publish(ev, timeout=self.timeout,
                                               relays=[relay])).get(relay)
            ok = got is not None and (got.ok or got.prefix == "duplicate")
            message = got.message if got else "no answer"
            await trio.to_thread.run_sync(lambda: self.outbox.mark(
                ev.id, relay, ok=ok, message=message, now=time.time()))
            if self.on_mark is not None:
                self.on_mark(ev, relay, ok, message)
        finally:
            self.inflight.discard((ev.id, relay))
