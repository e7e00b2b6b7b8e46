"""What the bridge outbox and its drain decide (pure): the outbox's format check, its retry
schedule, how its rows are read back, which due rows a drain starts, and what a relay's answer
means for a row.

The sqlite outbox (:class:`~p2pworld.io.nostr_outbox.Outbox`) and the drain
(:class:`~p2pworld.io.nostr_relay.Bridge`) are shells: they run the statements and the
publishes, and ask this module what to make of them.

* **Format.** An outbox written by a newer build is refused, and so is one of an older format
  that still holds events (:func:`check_format`): both raise
  :class:`~p2pworld.errors.UnsupportedVersion`.
* **Retries.** A refused or unanswered delivery is retried after
  ``min(RETRY_CAP_S, RETRY_BASE_S * 2**attempts)`` seconds (:func:`next_attempt`).
* **Rows** are re-checked like network input: one that does not parse is skipped
  (:func:`due_rows`).
* **In flight.** A due (event, relay) pair is published once at a time (:class:`InFlight`).
* **Answers.** ``OK true`` and ``duplicate:`` mark the row published; anything else, or no
  answer, leaves it due (:func:`publish_result`).

Example:
    >>> next_attempt(None, now=10.0), next_attempt((3,), now=10.0)
    ((1, 12.0), (4, 26.0))
    >>> class Ev:
    ...     id = "e1"
    >>> book, ev = InFlight(), Ev()
    >>> len(book.start([(ev, "ws://a"), (ev, "ws://b")])), len(book.start([(ev, "ws://a")]))
    (2, 0)
    >>> book.done("e1", "ws://a"); len(book.start([(ev, "ws://a")]))
    1
    >>> publish_result(None)
    (False, 'no answer')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

from p2pworld.errors import NostrError, UnsupportedVersion
from p2pworld.nostr.event import Event
from p2pworld.nostr.pool import Ok, has_it

FORMAT_VERSION = 1
"""The outbox's on-disk format (sqlite ``user_version``)."""
RETRY_BASE_S = 1.0
RETRY_CAP_S = 300.0


def check_format(path: object, version: int, *, has_events: bool) -> None:
    """Refuse an outbox this build cannot use: raises
    :class:`~p2pworld.errors.UnsupportedVersion` if ``version`` is newer than
    :data:`FORMAT_VERSION`, or older while the file already ``has_events`` (an empty older file
    is simply made current).

    >>> check_format("b.db", 0, has_events=False)
    >>> check_format("b.db", 2, has_events=False)
    Traceback (most recent call last):
    ...
    p2pworld.errors.UnsupportedVersion: b.db: bridge outbox format 2 is newer than this build's 1
    """
    if version > FORMAT_VERSION:
        raise UnsupportedVersion(f"{path}: bridge outbox format {version} is newer "
                                 f"than this build's {FORMAT_VERSION}")
    if version < FORMAT_VERSION and has_events:
        raise UnsupportedVersion(f"{path}: bridge outbox format {version} predates "
                                 f"{FORMAT_VERSION}; publish or delete it first")


def next_attempt(row: Sequence[Any] | None, *, now: float) -> tuple[int, float]:
    """A delivery was refused or not answered: its attempt count and when it is due again,
    from its stored row ``(attempts,)`` (None: no such row, counted from zero). The delay
    doubles from :data:`RETRY_BASE_S` up to :data:`RETRY_CAP_S`."""
    attempts = (row[0] if row else 0) + 1
    return attempts, now + min(RETRY_CAP_S, RETRY_BASE_S * 2 ** min(attempts, 20))


def due_rows(rows: Iterable[tuple[str, str]]) -> list[tuple[Event, str]]:
    """The stored ``(event JSON, relay)`` rows as events, in order; a row whose event does not
    parse (a damaged file) is skipped.

    >>> due_rows([("not json", "ws://a")])
    []
    """
    out = []
    for body, relay in rows:
        try:
            out.append((Event.from_json(body), relay))
        except NostrError:
            continue
    return out


def source_of_row(row: Sequence[Any] | None) -> str | None:
    """The p2pworld id in a stored ``(source,)`` row (None: no row).

    >>> source_of_row(("chan:1",)), source_of_row(None)
    ('chan:1', None)
    """
    return str(row[0]) if row else None


def publish_result(got: Ok | None) -> tuple[bool, str]:
    """What one relay's answer to a bridge publish means for its row: (published, the message
    to store). ``OK true`` and ``duplicate:`` publish it; a refusal or no answer (None) leaves
    it due."""
    return has_it(got), got.message if got else "no answer"


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


E = TypeVar("E", bound=_HasId)


class InFlight:
    """The (event id, relay) publishes a drain has under way: a due row is started once, and
    may be started again when its publish is over (:meth:`done`) or failed (:meth:`failed`)."""

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()

    def start(self, due: Iterable[tuple[E, str]]) -> list[tuple[E, str]]:
        """The due (event, relay) pairs not under way yet, now under way."""
        out = []
        for ev, relay in due:
            if (ev.id, relay) not in self.keys:
                self.keys.add((ev.id, relay))
                out.append((ev, relay))
        return out

    def done(self, event_id: str, relay: str) -> None:
        self.keys.discard((event_id, relay))

    def failed(self, args: tuple[Any, ...]) -> None:
        """A publish task started with ``args`` ended with an error: if they name an
        (event, relay) publish, it is no longer under way (the next scan starts it again)."""
        if len(args) == 2 and isinstance(args[0], Event):
            self.done(args[0].id, args[1])
