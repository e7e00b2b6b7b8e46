"""What a pool of relay connections knows and decides (pure): which publish an ``OK`` answers,
which events a subscription has already seen, where it resumes, and each relay's health.

The relay client (:class:`~p2pworld.io.nostr_relay.RelayPool`, a trio shell) owns the
websockets, queues and wake-ups; every relay message it reads goes to :meth:`PoolBook.receive`
and it carries out what comes back: wake the publish that was answered, hand an event to its
subscription, answer an ``AUTH`` challenge.

* **Answers.** A publish is pending per relay until its ``OK`` arrives. ``OK true`` and
  ``duplicate:`` both mean the relay has the event. A relay that could not read the event's id
  answers with an empty one, in order: it answers the oldest publish still pending on it.
  A publish that waits for the first relay to have it (``until_any``) wakes on the first such
  answer, or once every relay it went to has answered.
* **Subscriptions** are deduplicated by event id across relays (the last :data:`MAX_SEEN` ids
  of each: a relay cannot grow the pool's memory without bound; an event older than that
  window delivered again is delivered again), and resume after a reconnect
  with ``since`` = the newest ``created_at`` seen minus :data:`RESUME_MARGIN_S`
  (:data:`GIFT_WRAP_MARGIN_S` for NIP-59 gift wraps, which backdate ``created_at``).
* **Relays** are at most :data:`MAX_RELAYS`, ``ws://`` or ``wss://``, their URL at most 256
  characters.

Example:
    >>> book = PoolBook(["ws://r"])
    >>> book.sending("ws://r", "e1"); book.sending("ws://r", "e2")
    >>> book.receive("ws://r", '["OK", "", false, "invalid: bad id"]')
    Answered(url='ws://r', event_id='e1', ok=Ok(ok=False, message='invalid: bad id', \
prefix='invalid'), first=False)
    >>> book.answer("ws://r", "e1"), book.health["ws://r"].published_refused
    (Ok(ok=False, message='invalid: bad id', prefix='invalid'), 1)
    >>> book.subscribe("s1", [{"kinds": [1]}])
    >>> book.receive("ws://r", '["NOTICE", "hello"]') is None
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from p2pworld.errors import NostrError
from p2pworld.nostr.event import Event, parse_relay_message

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
    """``url`` answered the publish of ``event_id``; ``first``: a publish waiting for the first
    relay to have it may go on now."""

    url: str
    event_id: str
    ok: Ok
    first: bool


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
        self._any: dict[str, int] = {}
        """Publishes waiting for the first relay to accept: event id -> answers still
        missing."""
        self.subs: dict[str, _Sub] = {}

    def add(self, url: str) -> bool:
        """One more relay (False: known, the pool is full, not ``ws(s)://``, too long)."""
        if (url in self.health or len(self.urls) >= MAX_RELAYS
                or not url.startswith(("ws://", "wss://")) or len(url) > 256):
            return False
        self.urls.append(url)
        self.health[url] = RelayHealth(url)
        return True

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

    def until_any(self, event_id: str, sent_to: int) -> None:
        self._any[event_id] = sent_to

    def answer(self, url: str, event_id: str) -> Ok | None:
        """The publish is over (answered, timed out, cancelled): its answer, if any."""
        self._any.pop(event_id, None)
        return self.pending.pop((url, event_id), None)

    def subscribe(self, sub_id: str, filters: list[dict[str, Any]], *,
                  backdated: bool = False) -> None:
        self.subs[sub_id] = _Sub(list(filters), backdated)

    def unsubscribe(self, sub_id: str) -> bool:
        return self.subs.pop(sub_id, None) is not None

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
        took = ok.ok or ok.prefix == "duplicate"
        if took:
            h.published_ok += 1
        else:
            h.published_refused += 1
            h.rate_limited += ok.prefix == "rate-limited"
        self.pending[key] = ok
        left = self._any.get(key[1])
        if left is not None:
            self._any[key[1]] = left - 1
        return Answered(url, key[1], ok, left is not None and (took or left <= 1))
