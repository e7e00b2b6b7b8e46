"""What a pool of relay connections knows and decides (pure): which publish an ``OK`` answers,
which events a subscription has already seen, where it resumes, and each relay's health.

The relay client (:class:`~p2pworld.io.nostr_relay.RelayPool`, a trio shell) owns the
websockets, queues and wake-ups; every relay message it reads goes to :meth:`PoolBook.receive`
and it carries out what comes back: wake the publish that was answered, hand an event to its
subscription, answer an ``AUTH`` challenge.

* **Answers.** A publish is pending per relay until its ``OK`` arrives. ``OK true`` and
  ``duplicate:`` both mean the relay has the event. A relay that could not read the event's id
  answers with an empty one, in order: it answers the oldest publish still pending on it.
  A publish waits (:meth:`PoolBook.waiting`) until every relay it went to has answered, or,
  if it waits for the first relay to have it (``until_any``), until the first such answer or
  every relay's; one that went nowhere does not wait. The answer that ends a wait names it
  (:attr:`Answered.settles`).
* **Subscriptions** are deduplicated by event id across relays (the last :data:`MAX_SEEN` ids
  of each: a relay cannot grow the pool's memory without bound; an event older than that
  window delivered again is delivered again), and resume after a reconnect
  with ``since`` = the newest ``created_at`` seen minus :data:`RESUME_MARGIN_S`
  (:data:`GIFT_WRAP_MARGIN_S` for NIP-59 gift wraps, which backdate ``created_at``).
* **Relays** are at most :data:`MAX_RELAYS`, ``ws://`` or ``wss://``, their URL at most 256
  characters, added only while the pool runs. A relay is dialled at the host, port and
  resource :func:`relay_dial` reads from its URL (``ws://`` only for now).
* **Health**: a connection that ended with an error counts in its relay's health
  (:meth:`PoolBook.failed`); a ``REQ`` goes at once only to the relays connected now
  (:meth:`PoolBook.live`), the others send every subscription when they connect; a ``CLOSE``
  goes to every relay, once (:meth:`PoolBook.closing`).

Example:
    >>> book = PoolBook(["ws://r"])
    >>> book.sending("ws://r", "e1"); book.sending("ws://r", "e2")
    >>> book.receive("ws://r", '["OK", "", false, "invalid: bad id"]')
    Answered(url='ws://r', event_id='e1', ok=Ok(ok=False, message='invalid: bad id', \
prefix='invalid'), first=False, settles=())
    >>> book.answer("ws://r", "e1"), book.health["ws://r"].published_refused
    (Ok(ok=False, message='invalid: bad id', prefix='invalid'), 1)
    >>> book.subscribe("s1", [{"kinds": [1]}])
    >>> book.receive("ws://r", '["NOTICE", "hello"]') is None
    True
    >>> book.live(), book.closing("s1"), book.closing("s1")
    ([], ['ws://r'], [])
    >>> relay_dial("ws://127.0.0.1:7777/r?x=1")
    RelayDial(host='127.0.0.1', port=7777, resource='/r?x=1')
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from p2pworld.errors import NostrError
from p2pworld.nostr.event import Event, parse_relay_message
from p2pworld.nostr.limits import resource_of

MAX_RELAYS = 32
RESUME_MARGIN_S = 10
GIFT_WRAP_MARGIN_S = 2 * 24 * 3600
MAX_SEEN = 65_536
"""Event ids a subscription remembers for deduplication (the most recent)."""


@dataclass(frozen=True)
class Ok:
    """A relay's answer to a publish (``prefix``: the machine-readable part of ``message``,
    for example ``duplicate`` or ``rate-limited``)."""

    ok: bool
    message: str
    prefix: str


def has_it(ok: Ok | None) -> bool:
    """Whether an answer means the relay holds the event: ``OK true``, or a refusal with the
    ``duplicate:`` prefix (None: no answer).

    >>> has_it(Ok(False, "duplicate: have it", "duplicate")), has_it(None)
    (True, False)
    """
    return ok is not None and (ok.ok or ok.prefix == "duplicate")


@dataclass(frozen=True)
class RelayDial:
    """Where a relay's websocket is dialled: TCP ``host`` and ``port``, and the ``resource``
    (path and query) of its handshake."""

    host: str
    port: int
    resource: str


def relay_dial(url: str) -> RelayDial:
    """Where to dial the relay at ``url``. Raises :class:`ValueError` for a URL that does not
    parse or a port that is not a number (as :func:`urllib.parse.urlsplit` does), then
    :class:`OSError` for any scheme but ``ws`` (there is no TLS helper yet): both end the
    connection attempt, the second as a connection error that is counted and redialled.

    >>> relay_dial("ws://relay.example")
    RelayDial(host='relay.example', port=80, resource='/')
    >>> relay_dial("wss://relay.example")
    Traceback (most recent call last):
    ...
    OSError: unsupported relay URL 'wss://relay.example' (ws:// only for now)
    """
    u = urlsplit(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "wss" else 80)
    if u.scheme != "ws":
        raise OSError(f"unsupported relay URL {url!r} (ws:// only for now)")
    return RelayDial(host, port, resource_of(u))


@dataclass
class RelayHealth:
    """One relay's connection state and counters."""

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


@dataclass(frozen=True)
class Answered:
    """``url`` answered the publish of ``event_id``; ``first``: a publish waiting on it may go
    on now, namely those of ``settles`` (their :meth:`PoolBook.waiting` tokens)."""

    url: str
    event_id: str
    ok: Ok
    first: bool
    settles: tuple[int, ...] = ()


@dataclass(frozen=True)
class Deliver:
    """Hand ``event`` to subscription ``sub`` (first time seen)."""

    sub: str
    event: Event


@dataclass(frozen=True)
class AuthAsked:
    """The relay asks for NIP-42 authentication with ``challenge``."""

    challenge: str


@dataclass
class _Wait:
    """A publish waiting for answers: from the relays of ``urls`` (None: any relay's), at most
    ``left`` more; ``until_any``: it goes on at the first relay that has the event."""

    event_id: str
    urls: set[str] | None
    left: int
    until_any: bool

    def answered(self, url: str, took: bool) -> bool:
        """Count ``url``'s answer (if it is one of ours); whether the publish may go on now."""
        if self.urls is not None:
            if url not in self.urls:
                return False
            self.urls.discard(url)
        self.left -= 1
        return (self.until_any and took) or self.left <= 0


@dataclass
class _Sub:
    filters: list[dict[str, Any]]
    backdated: bool
    newest: int = 0
    seen: dict[str, None] = field(default_factory=dict)
    """The ids delivered, oldest first (at most :data:`MAX_SEEN`)."""


class PoolBook:
    """The pool's state (see the module's docstring)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = list(dict.fromkeys(urls))
        self.health = {u: RelayHealth(u) for u in self.urls}
        self.pending: dict[tuple[str, str], Ok | None] = {}
        """(relay, event id) -> its answer, None until it comes."""
        self._waits: dict[int, _Wait] = {}
        """Publishes waiting for answers, by token."""
        self._tokens = itertools.count(1)
        self.subs: dict[str, _Sub] = {}

    def add(self, url: str, *, running: bool = True) -> bool:
        """One more relay (False: the pool is not ``running``, the relay is known, the pool
        is full, not ``ws(s)://``, too long)."""
        if (not running or url in self.health or len(self.urls) >= MAX_RELAYS
                or not url.startswith(("ws://", "wss://")) or len(url) > 256):
            return False
        self.urls.append(url)
        self.health[url] = RelayHealth(url)
        return True

    def failed(self, url: str, error: str) -> None:
        """A connection (or a task keyed by ``url``) ended with ``error``: counted in that
        relay's health; a key that is not a relay of the pool is ignored."""
        h = self.health.get(url)
        if h is not None:
            h.failures += 1
            h.last_error = error

    def live(self) -> list[str]:
        """The relays connected now (a new subscription's ``REQ`` goes to these at once; the
        others send it when they connect)."""
        return [u for u in self.urls if self.health[u].state == "connected"]

    def targets(self, relays: list[str] | None) -> list[str]:
        """The relays a publish goes to (all, or those of ``relays`` in the pool)."""
        return [u for u in self.urls if relays is None or u in relays]

    def sending(self, url: str, event_id: str) -> None:
        self.pending[(url, event_id)] = None

    def not_sent(self, url: str, event_id: str | None = None) -> None:
        """``url``'s queue was full: the message is dropped and counted."""
        self.health[url].dropped += 1
        if event_id is not None:
            self.pending.pop((url, event_id), None)

    def waiting(self, event_id: str, sent: list[str], *,
                until_any: bool = False) -> tuple[int, bool]:
        """A publish of ``event_id`` went to the relays of ``sent`` and waits for their
        answers (see the module's docstring): its token, and whether it may go on at once (it
        went nowhere). End it with :meth:`done`."""
        token = next(self._tokens)
        if sent:
            self._waits[token] = _Wait(event_id, set(sent), len(sent), until_any)
        return token, not sent

    def until_any(self, event_id: str, sent_to: int) -> int:
        """A publish of ``event_id`` waits for the first relay to have it, or for ``sent_to``
        answers from any relays: its token (end it with :meth:`done`)."""
        token = next(self._tokens)
        self._waits[token] = _Wait(event_id, None, sent_to, True)
        return token

    def done(self, token: int) -> None:
        """The publish of ``token`` waits no more (it went on, timed out or was cancelled)."""
        self._waits.pop(token, None)

    def answer(self, url: str, event_id: str) -> Ok | None:
        """The publish is over (answered, timed out, cancelled): its answer, if any."""
        return self.pending.pop((url, event_id), None)

    def subscribe(self, sub_id: str, filters: list[dict[str, Any]], *,
                  backdated: bool = False) -> None:
        self.subs[sub_id] = _Sub(list(filters), backdated)

    def unsubscribe(self, sub_id: str) -> bool:
        return self.subs.pop(sub_id, None) is not None

    def closing(self, sub_id: str) -> list[str]:
        """Forget subscription ``sub_id``; the relays its ``CLOSE`` goes to (every relay, or
        none if it was not open)."""
        return list(self.urls) if self.unsubscribe(sub_id) else []

    def resume(self, sub_id: str) -> list[dict[str, Any]]:
        """The filters to send again after a reconnect (with ``since`` once events came)."""
        sub = self.subs[sub_id]
        if not sub.newest:
            return sub.filters
        margin = GIFT_WRAP_MARGIN_S if sub.backdated else RESUME_MARGIN_S
        return [{**f, "since": max(0, sub.newest - margin)} for f in sub.filters]

    def receive(self, url: str, text: str | bytes) -> Answered | Deliver | AuthAsked | None:
        """One message from ``url`` (hostile: a message that does not parse is counted and
        dropped, as is an answer nobody waits for)."""
        h = self.health[url]
        try:
            m = parse_relay_message(text if isinstance(text, str) else text.decode())
        except (NostrError, UnicodeDecodeError):
            h.last_error = "NOSTR_INVALID"
            return None
        if m.type == "OK":
            return self._ok(url, h, Ok(m.ok, m.message, m.prefix), m.event_id)
        if m.type == "EVENT" and m.event is not None:
            sub = self.subs.get(m.sub)
            if sub is None or m.event.id in sub.seen:
                return None
            sub.seen[m.event.id] = None
            if len(sub.seen) > MAX_SEEN:
                del sub.seen[next(iter(sub.seen))]
            sub.newest = max(sub.newest, m.event.created_at)
            return Deliver(m.sub, m.event)
        if m.type == "AUTH":
            return AuthAsked(m.message)
        if m.type == "NOTICE":
            h.notices += 1
        elif m.type == "CLOSED":
            h.last_error = m.message[:100]
        return None

    def _ok(self, url: str, h: RelayHealth, ok: Ok, event_id: str) -> Answered | None:
        key = (url, event_id)
        if not event_id:
            # Answered in order: the oldest publish still pending on this relay.
            key = next((k for k, v in self.pending.items() if k[0] == url and v is None), key)
        if key not in self.pending or self.pending[key] is not None:
            return None  # an answer to nothing pending here: not counted
        took = has_it(ok)
        if took:
            h.published_ok += 1
        else:
            h.published_refused += 1
            h.rate_limited += ok.prefix == "rate-limited"
        self.pending[key] = ok
        settles = tuple(t for t, w in self._waits.items()
                        if w.event_id == key[1] and w.answered(url, took))
        for t in settles:
            del self._waits[t]
        return Answered(url, key[1], ok, bool(settles), settles)
