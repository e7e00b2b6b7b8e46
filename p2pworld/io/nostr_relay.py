"""The relay client (shell): several relays at once, reconnect with backoff and jitter,
bounded queues, subscriptions resumed after a reconnect, per-relay health, NIP-42 AUTH.

Nothing here waits on a relay while holding anything else up: each relay has its own task and
a bounded outgoing queue (a full queue drops the publish for that relay and counts it), and
``publish`` waits for ``OK`` answers only up to its timeout. Every relay message goes to the
pool's :class:`~p2pworld.nostr.pool.PoolBook` (pure: it parses and checks the message, matches
an ``OK`` to its publish and says which waiting publish may return, deduplicates events, counts
each relay's health; it also says where a relay is dialled and which relays a ``REQ`` or
``CLOSE`` goes to); this shell carries out what the book says. The bridge's in-flight set and
what an answer means for an outbox row are :mod:`p2pworld.nostr.bridge_book` (pure).

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
from typing import Any

import trio
import trio_websocket

from p2pworld.io.nip11 import FETCH_TIMEOUT_S, RelayLimits, fetch_limits
from p2pworld.io.scopes import Failure, Supervisor, spawn_in, task
from p2pworld.io.session import close_websocket
from p2pworld.nostr.bridge_book import InFlight, publish_result
from p2pworld.nostr.event import (
    Event,
    auth_event,
    client_auth,
    client_close,
    client_event,
    client_req,
)
from p2pworld.nostr.keys import NostrKey
from p2pworld.nostr.pool import (
    Answered,
    AuthAsked,
    Deliver,
    Ok,
    PoolBook,
    RelayHealth,
    relay_dial,
)
from p2pworld.transport.backoff import Backoff

SEND_QUEUE = 256
_CONNECTION_ERRORS = (OSError, trio.TooSlowError, trio_websocket.HandshakeError,
                      trio_websocket.ConnectionClosed, trio_websocket.ConnectionRejected,
                      trio_websocket.ConnectionTimeout, trio.BrokenResourceError)
"""How a relay connection ends without being anyone's bug: counted in its health, redialled."""


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
    """Connections to several relays (start with :func:`open_relay_pool`); what the pool
    knows and decides is its :class:`~p2pworld.nostr.pool.PoolBook`."""

    def __init__(self, urls: list[str], *, key: NostrKey | None = None,
                 rng: random.Random | None = None,
                 limits_of: Callable[[str], Awaitable[RelayLimits | None]] = fetch_limits
                 ) -> None:
        self.book = PoolBook(urls)
        self.configured = list(self.book.urls)
        """The relays the pool was started with (not those added later)."""
        self.limits: dict[str, RelayLimits | None] = {}
        """Each relay's NIP-11 limits, once learned (None: it published no usable document)."""
        self._limits_of = limits_of
        self._learned = {u: trio.Event() for u in self.urls}
        self.key = key
        self.rng = rng or random.SystemRandom()
        self._queues: dict[str, tuple[trio.MemorySendChannel[str],
                                      trio.MemoryReceiveChannel[str]]] = {
            u: trio.open_memory_channel[str](SEND_QUEUE) for u in self.urls}
        self._waits: dict[int, trio.Event] = {}
        """Publishes waiting for answers: the book's token -> wake-up."""
        self._outs: dict[str, trio.MemorySendChannel[Event]] = {}
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._sup: Supervisor | None = None

    @property
    def urls(self) -> list[str]:
        return self.book.urls

    @property
    def health(self) -> dict[str, RelayHealth]:
        return self.book.health

    def add_relay(self, url: str) -> bool:
        """Connect to one more relay (a peer's NIP-65 relay) while running; at most
        :data:`~p2pworld.nostr.pool.MAX_RELAYS` in all. False if not added (known, full, not
        ``ws(s)://``, or the pool is not running)."""
        if not self.book.add(url, running=self._nursery is not None):
            return False
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
        self.book.failed(f.key, f.error.code)

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
        msg = client_event(ev)
        targets = self.book.targets(relays)
        sent = []
        for u in targets:
            self.book.sending(u, ev.id)
            try:
                self._queues[u][0].send_nowait(msg)
            except trio.WouldBlock:
                self.book.not_sent(u, ev.id)
                continue
            sent.append(u)
        token, at_once = self.book.waiting(ev.id, sent, until_any=until_any)
        done = self._waits[token] = trio.Event()
        try:
            with trio.move_on_after(timeout):
                if not at_once:
                    await done.wait()
        finally:  # also when cancelled: leave nothing behind
            del self._waits[token]
            self.book.done(token)
            answers = {u: self.book.answer(u, ev.id) for u in targets}
        return answers

    def subscribe(self, *filters: dict[str, Any], backdated: bool = False,
                  buffer: int = 1024) -> Subscription:
        """Events matching ``filters`` from every relay, deduplicated by id, live; resumed
        without gaps after reconnects. Use as ``async with pool.subscribe(...) as sub:``
        (leaving it sends ``CLOSE``)."""
        sub_id = f"p2pw{next(self._ids)}"
        send, recv = trio.open_memory_channel[Event](buffer)
        self.book.subscribe(sub_id, list(filters), backdated=backdated)
        self._outs[sub_id] = send
        for u in self.book.live():  # the others send every subscription's REQ when they connect
            try:
                self._queues[u][0].send_nowait(client_req(sub_id, *filters))
            except trio.WouldBlock:
                self.book.not_sent(u)
        return Subscription(self, sub_id, recv)

    def _close(self, sub_id: str) -> None:
        self._outs.pop(sub_id, None)
        for u in self.book.closing(sub_id):
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
                self.book.failed(url, type(eg.exceptions[0]).__name__)
            h.state = "backoff"
            await trio.sleep(backoff.next_delay(self.rng))

    async def _connection(self, url: str, h: RelayHealth, backoff: Backoff) -> None:
        to = relay_dial(url)  # OSError for a scheme the client does not speak
        # We own the TCP stream (so it is closed even if the websocket handshake is
        # cancelled half-way, which trio-websocket 0.12 would leak).
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(to.host, to.port)
        try:
            async with trio.open_nursery() as conn:
                try:
                    with trio.fail_after(10):
                        ws = await trio_websocket.wrap_client_stream(
                            conn, stream, to.host, to.resource,
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
        for sub_id in list(self.book.subs):
            await ws.send_message(client_req(sub_id, *self.book.resume(sub_id)))
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

    @task("relay", boundary=False)
    async def _writer(self, url: str, ws: trio_websocket.WebSocketConnection) -> None:
        recv = self._queues[url][1]
        async for msg in recv:
            try:
                await ws.send_message(msg)
            except trio_websocket.ConnectionClosed:
                return  # the reader sees the close too, and the connection ends

    async def _reader(self, url: str, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            try:
                text = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            act = self.book.receive(url, text)
            carry = _CARRY.get(type(act))
            if carry is not None:
                await carry(self, url, ws, act)

    async def _answered_now(self, url: str, ws: object, a: Answered) -> None:
        for token in a.settles:  # the book's waits are the pool's, token for token
            self._waits[token].set()

    async def _deliver(self, url: str, ws: object, d: Deliver) -> None:
        out = self._outs.get(d.sub)
        try:
            if out is not None:
                out.send_nowait(d.event)
        except trio.WouldBlock:
            self.health[url].dropped += 1
        except trio.BrokenResourceError:
            self._close(d.sub)

    async def _auth(self, url: str, ws: trio_websocket.WebSocketConnection,
                    a: AuthAsked) -> None:
        if self.key is None:
            return
        ev = auth_event(self.key, relay=url, challenge=a.challenge, created_at=int(time.time()),
                        aux=self.rng.getrandbits(256).to_bytes(32, "big"))
        await ws.send_message(client_auth(ev))
        self.health[url].authed = True


_CARRY: dict[type, Callable[[RelayPool, str, Any, Any], Awaitable[None]]] = {
    Answered: RelayPool._answered_now, Deliver: RelayPool._deliver, AuthAsked: RelayPool._auth}
"""How the pool carries out what its book says of a relay message."""


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
        self.book = InFlight()
        self.inflight = self.book.keys
        """The (event id, relay) publishes under way (the book's)."""
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
                for ev, relay in self.book.start(self.outbox.due(now=time.time())):
                    sup.spawn(self._one, ev, relay, key=relay)
                with trio.move_on_after(0.5):
                    await self.wake.wait()
                self.wake = trio.Event()

    def _failed(self, f: Failure) -> None:
        """A publish failed: its row stays due, and the next scan publishes it again."""
        self.book.failed(f.args)
        self.on_failure(f)

    @task("request")
    async def _one(self, ev: Event, relay: str) -> None:
        try:
            async with self.limiter:
                got = (await self.pool.publish(ev, timeout=self.timeout,
                                               relays=[relay])).get(relay)
            ok, message = publish_result(got)
            await trio.to_thread.run_sync(lambda: self.outbox.mark(
                ev.id, relay, ok=ok, message=message, now=time.time()))
            if self.on_mark is not None:
                self.on_mark(ev, relay, ok, message)
        finally:
            self.book.done(ev.id, relay)
