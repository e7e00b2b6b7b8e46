"""NIP-01 events and relay messages, NIP-42 auth events (pure).

An event's id is SHA-256 of the UTF-8 JSON array ``[0, pubkey, created_at, kind, tags,
content]`` with no whitespace (``json.dumps`` with ``ensure_ascii=False`` escapes exactly as
NIP-01 and ``JSON.stringify`` do); its signature is BIP-340 over the id, always with explicit
auxiliary randomness (the simulator passes seeded bytes). Everything received from a relay is
checked (:meth:`Event.from_json`, :func:`parse_relay_message`) and every failure is a typed
:class:`~p2pworld.errors.NostrError`.

Example:
    >>> key = NostrKey(bytes(31) + b"\\x07")
    >>> ev = Event.create(key, kind=1, content="hi", tags=[["t", "p2pworld"]],
    ...                   created_at=1_700_000_000, aux=bytes(32))
    >>> Event.from_json(ev.to_json()) == ev
    True
    >>> parse_relay_message('["OK", "' + ev.id + '", false, "rate-limited: slow down"]').prefix
    'rate-limited'
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from p2pworld.errors import NostrError
from p2pworld.nostr.keys import NostrKey, schnorr_verify

MAX_EVENT_BYTES = 256 * 1024
MAX_TAGS = 2000
PREFIXES = ("duplicate", "pow", "blocked", "rate-limited", "invalid", "error",
            "auth-required", "restricted")
AUTH_KIND = 22242


def _hex(v: Any, n: int, what: str) -> str:
    if not isinstance(v, str) or len(v) != 2 * n or any(c not in "0123456789abcdef" for c in v):
        raise NostrError(f"{what} must be {2 * n} lowercase hex digits")
    return v


def serialize(pubkey: str, created_at: int, kind: int, tags: list[list[str]],
              content: str) -> bytes:
    return json.dumps([0, pubkey, created_at, kind, tags, content], separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Event:
    id: str
    pubkey: str
    created_at: int
    kind: int
    tags: tuple[tuple[str, ...], ...]
    content: str
    sig: str

    @classmethod
    def create(cls, key: NostrKey, *, kind: int, content: str, tags: list[list[str]],
               created_at: int, aux: bytes) -> Event:
        pub = key.public.hex()
        eid = hashlib.sha256(serialize(pub, created_at, kind, tags, content)).digest()
        return cls(id=eid.hex(), pubkey=pub, created_at=created_at, kind=kind,
                   tags=tuple(tuple(t) for t in tags), content=content,
                   sig=key.sign_schnorr(eid, aux).hex())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "pubkey": self.pubkey, "created_at": self.created_at,
                "kind": self.kind, "tags": [list(t) for t in self.tags],
                "content": self.content, "sig": self.sig}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    def tag(self, name: str) -> list[str]:
        """Values of the first tag called ``name`` (empty if none)."""
        for t in self.tags:
            if t and t[0] == name:
                return list(t[1:])
        return []

    @classmethod
    def from_dict(cls, d: Any) -> Event:
        """Check everything (shape, bounds, id, signature); raises :class:`NostrError`."""
        if not isinstance(d, dict):
            raise NostrError("event must be a JSON object")
        eid, pub, sig = _hex(d.get("id"), 32, "id"), _hex(d.get("pubkey"), 32, "pubkey"), \
            _hex(d.get("sig"), 64, "sig")
        created, kind = d.get("created_at"), d.get("kind")
        if not isinstance(created, int) or isinstance(created, bool) or not 0 <= created < 2**40:
            raise NostrError("created_at must be a unix time")
        if not isinstance(kind, int) or isinstance(kind, bool) or not 0 <= kind <= 65535:
            raise NostrError("kind must be 0..65535")
        tags, content = d.get("tags"), d.get("content")
        if not isinstance(content, str):
            raise NostrError("content must be a string")
        if not isinstance(tags, list) or len(tags) > MAX_TAGS or not all(
                isinstance(t, list) and all(isinstance(x, str) for x in t) for t in tags):
            raise NostrError("tags must be a list of lists of strings")
        digest = hashlib.sha256(serialize(pub, created, kind, tags, content)).digest()
        if digest.hex() != eid:
            raise NostrError("event id does not match its contents")
        if not schnorr_verify(bytes.fromhex(pub), digest, bytes.fromhex(sig)):
            raise NostrError("event signature does not verify")
        return cls(id=eid, pubkey=pub, created_at=created, kind=kind,
                   tags=tuple(tuple(t) for t in tags), content=content, sig=sig)

    @classmethod
    def from_json(cls, text: str) -> Event:
        return cls.from_dict(_loads(text))


def _loads(text: str) -> Any:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_EVENT_BYTES:
        raise NostrError("message too large")
    try:
        value = json.loads(text)
        # JSON may escape a lone surrogate ("\\ud800"): no UTF-8 string holds one, so no event
        # id or signature can be computed over it (and a reply would not encode).
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        raise NostrError("not JSON, or text that is not UTF-8") from None
    return value


def auth_event(key: NostrKey, *, relay: str, challenge: str, created_at: int,
               aux: bytes) -> Event:
    """NIP-42: the kind 22242 event answering a relay's ``AUTH`` challenge."""
    return Event.create(key, kind=AUTH_KIND, content="",
                        tags=[["relay", relay], ["challenge", challenge]],
                        created_at=created_at, aux=aux)


@dataclass(frozen=True)
class RelayMessage:
    """A message from a relay: ``EVENT`` (``sub``, ``event``), ``OK`` (``event_id``, ``ok``,
    ``message``), ``EOSE`` / ``CLOSED`` (``sub``[, ``message``]), ``NOTICE`` (``message``),
    ``AUTH`` (``message`` = the challenge)."""

    type: str
    sub: str = ""
    event: Event | None = None
    event_id: str = ""
    ok: bool = False
    message: str = ""

    @property
    def prefix(self) -> str:
        """The machine-readable prefix of ``message`` (``duplicate``, ``rate-limited``, ...),
        or ``""``."""
        head, sep, _ = self.message.partition(":")
        return head if sep and head in PREFIXES else ""


def parse_relay_message(text: str) -> RelayMessage:
    """Parse and check one relay→client message; raises :class:`NostrError`."""
    m = _loads(text)
    if not isinstance(m, list) or not m or not isinstance(m[0], str):
        raise NostrError("relay message must be a JSON array starting with its type")
    t, args = m[0], m[1:]

    def s(i: int, limit: int = 4096) -> str:
        if i >= len(args) or not isinstance(args[i], str) or len(args[i]) > limit:
            raise NostrError(f"{t}: argument {i + 1} must be a string")
        return str(args[i])

    if t == "EVENT" and len(args) == 2:
        return RelayMessage("EVENT", sub=s(0, 64), event=Event.from_dict(args[1]))
    if t == "OK" and len(args) == 3 and isinstance(args[1], bool):
        # Some relays answer an event they could not parse with an empty id.
        eid = "" if args[0] == "" and not args[1] else _hex(args[0], 32, "OK id")
        return RelayMessage("OK", event_id=eid, ok=args[1], message=s(2))
    if t == "EOSE" and len(args) == 1:
        return RelayMessage("EOSE", sub=s(0, 64))
    if t == "CLOSED" and len(args) == 2:
        return RelayMessage("CLOSED", sub=s(0, 64), message=s(1))
    if t == "NOTICE" and len(args) == 1:
        return RelayMessage("NOTICE", message=s(0))
    if t == "AUTH" and len(args) == 1:
        return RelayMessage("AUTH", message=s(0, 256))
    raise NostrError(f"unknown or malformed relay message {t[:16]!r}")


def client_event(ev: Event) -> str:
    return json.dumps(["EVENT", ev.to_dict()], separators=(",", ":"), ensure_ascii=False)


def client_req(sub: str, *filters: dict[str, Any]) -> str:
    if not filters:
        raise NostrError("REQ needs at least one filter")
    return json.dumps(["REQ", sub, *filters], separators=(",", ":"))


def client_close(sub: str) -> str:
    return json.dumps(["CLOSE", sub])


def client_auth(ev: Event) -> str:
    return json.dumps(["AUTH", ev.to_dict()], separators=(",", ":"), ensure_ascii=False)
