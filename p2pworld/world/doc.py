"""One author's world document: typed contents, the author's writer and a replica's reader.

The document is a pycrdt ``Map`` named ``"w"`` whose values are canonical CBOR bytes (the CRDT
would turn integers into floats; CBOR keeps them exact and lets the reader check every field):

=================== =====================================================================
key                 value
=================== =====================================================================
``node``            :class:`NodeInfo` (the seed's ``autopilot_node``, minus the heartbeat)
``caps``            :class:`CapabilityAd` (``capability_ad``)
``s:<session id>``  :class:`SessionInfo` (``autopilot_session``)
``l:<node id>``     :class:`LinkInfo` (``peer_link``, from this author to that node)
=================== =====================================================================

:class:`AuthorDoc` writes (only the node itself ever holds one for its own key) and emits
signed :class:`~p2pworld.world.records.DocUpdate` records; :class:`DocReplica` applies the
records of one author received from anyone, refusing what the author did not sign.

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> author = AuthorDoc(Ed25519Signer(bytes(32)), inc=1)
    >>> base = author.start()
    >>> upd = author.set_caps(CapabilityAd(tools=("grep",), expires_ms=10_000))
    >>> replica = DocReplica(author.signer.public_key)
    >>> replica.apply(base).caps is None, replica.apply(upd).caps.tools
    (True, ('grep',))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from p2pworld import codec
from p2pworld.codec import Value
from p2pworld.errors import DecodeError, ForgedUpdate, StaleUpdate, WorldGap
from p2pworld.identity import Signer, blake2b256, verify_raw
from p2pworld.world.records import (
    STATUSES,
    ZERO32,
    DocUpdate,
    Verifier,
    client_id,
    state_vector_clients,
)

MAX_KEYS = 2048
COMPACT_EVERY = 32
"""An author signs a compacted base after this many deltas (newcomers replay at most this)."""


def _strs(m: dict[str, Value], key: str, w: str, limit: int = 256) -> tuple[str, ...]:
    v = m.get(key, [])
    if not isinstance(v, list) or len(v) > limit or \
            not all(isinstance(x, str) and len(x) <= 256 for x in v):
        raise DecodeError(f"{w}: {key} must be a list of short strings")
    return tuple(v)


def _flat(m: dict[str, Value], key: str, w: str) -> dict[str, int | str]:
    v = m.get(key, {})
    if not isinstance(v, dict) or len(v) > 64 or not all(
            isinstance(x, (int, str)) and not isinstance(x, bool) and
            (not isinstance(x, str) or len(x) <= 256) and len(k) <= 64 for k, x in v.items()):
        raise DecodeError(f"{w}: {key} must be a small map of ints and strings")
    return dict(v)


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """``autopilot_node``: who the node is. Liveness comes from heartbeats, not from here."""

    nostr_pubkey: str = ""
    device: str = ""
    status: str = "online"
    version: str = ""
    region: str = ""

    def to_value(self) -> dict[str, Value]:
        return {"nostr": self.nostr_pubkey, "device": self.device, "status": self.status,
                "version": self.version, "region": self.region}

    @classmethod
    def from_value(cls, v: Value) -> NodeInfo:
        w = "node info"
        m = codec.need_map(v, w)
        st = codec.str_field(m, "status", w, max_len=16)
        if st not in STATUSES:
            raise DecodeError(f"{w}: unknown status")
        return cls(nostr_pubkey=codec.str_field(m, "nostr", w, max_len=64),
                   device=codec.str_field(m, "device", w), status=st,
                   version=codec.str_field(m, "version", w, max_len=64),
                   region=codec.str_field(m, "region", w, max_len=64))


@dataclass(frozen=True, kw_only=True)
class SessionInfo:
    """``autopilot_session``: one run of an Autopilot on this node, in one workspace."""

    session_id: str
    workspace: str
    started_ms: int
    ended_ms: int | None = None

    def to_value(self) -> dict[str, Value]:
        return {"id": self.session_id, "ws": self.workspace, "start": self.started_ms,
                "end": self.ended_ms}

    @classmethod
    def from_value(cls, v: Value) -> SessionInfo:
        w = "session"
        m = codec.need_map(v, w)
        end = m.get("end")
        if end is not None and (not isinstance(end, int) or isinstance(end, bool) or end < 0):
            raise DecodeError(f"{w}: bad end time")
        return cls(session_id=codec.str_field(m, "id", w, max_len=128),
                   workspace=codec.str_field(m, "ws", w, max_len=128),
                   started_ms=codec.int_field(m, "start", w), ended_ms=end)


@dataclass(frozen=True, kw_only=True)
class LinkInfo:
    """``peer_link``: this author's view of its link to ``target`` (a node id)."""

    target: bytes
    state: str
    capabilities: tuple[str, ...] = ()

    def to_value(self) -> dict[str, Value]:
        return {"target": self.target, "state": self.state, "caps": list(self.capabilities)}

    @classmethod
    def from_value(cls, v: Value) -> LinkInfo:
        w = "peer link"
        m = codec.need_map(v, w)
        return cls(target=codec.bytes_field(m, "target", w, size=32),
                   state=codec.str_field(m, "state", w, max_len=32),
                   capabilities=_strs(m, "caps", w, 64))


@dataclass(frozen=True, kw_only=True)
class CapabilityAd:
    """``capability_ad``: what the node offers, until ``expires_ms`` (author's wall clock,
    judged by the reader's clock)."""

    tools: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    compute: dict[str, int | str] = field(default_factory=dict)
    price_hints: dict[str, int | str] = field(default_factory=dict)
    constraints: dict[str, int | str] = field(default_factory=dict)
    job_kinds: tuple[str, ...] = ()
    expires_ms: int = 0

    def to_value(self) -> dict[str, Value]:
        return {"tools": list(self.tools), "models": list(self.models),
                "compute": dict(self.compute), "price": dict(self.price_hints),
                "constraints": dict(self.constraints), "kinds": list(self.job_kinds),
                "expires": self.expires_ms}

    @classmethod
    def from_value(cls, v: Value) -> CapabilityAd:
        w = "capability ad"
        m = codec.need_map(v, w)
        return cls(tools=_strs(m, "tools", w), models=_strs(m, "models", w),
                   compute=_flat(m, "compute", w), price_hints=_flat(m, "price", w),
                   constraints=_flat(m, "constraints", w), job_kinds=_strs(m, "kinds", w),
                   expires_ms=codec.int_field(m, "expires", w))

    def live(self, now_ms: int) -> bool:
        return self.expires_ms > now_ms


@dataclass(frozen=True, kw_only=True)
class DocView:
    """The checked, typed contents of one author's document."""

    info: NodeInfo | None = None
    caps: CapabilityAd | None = None
    sessions: tuple[SessionInfo, ...] = ()
    links: tuple[LinkInfo, ...] = ()

    def to_value(self) -> dict[str, Value]:
        return {"node": self.info.to_value() if self.info else None,
                "caps": self.caps.to_value() if self.caps else None,
                "sessions": [s.to_value() for s in self.sessions],
                "links": [x.to_value() for x in self.links]}


def read_view(doc: pycrdt.Doc[Any], parsed: dict[bytes, Any] | None = None) -> DocView:
    """Check and type a document's contents (hostile: raises :class:`DecodeError`).

    ``parsed`` (optional, updated in place) maps each value's bytes to what they parsed to
    last time: a value that did not change is not decoded again, so applying one change to a
    document of many keys decodes that change only. Parsing is a function of the bytes, so
    the cache holds nothing a refused update could leave half-applied.

    Example:
        >>> doc = pycrdt.Doc(client_id=1)
        >>> doc["w"] = m = pycrdt.Map()
        >>> m["node"] = codec.encode(NodeInfo(device="a").to_value())
        >>> cache: dict[bytes, Any] = {}
        >>> read_view(doc, cache).info.device, len(cache)
        ('a', 1)
    """
    raw = doc.get("w", type=pycrdt.Map).to_py()
    if not isinstance(raw, dict) or len(raw) > MAX_KEYS:
        raise DecodeError("world doc: too many keys")
    info = caps = None
    sessions: list[SessionInfo] = []
    links: list[LinkInfo] = []
    seen: dict[bytes, Any] = {}
    for key in sorted(raw):
        val = raw[key]
        if not isinstance(val, (bytes, bytearray)):
            raise DecodeError("world doc: values must be CBOR bytes")
        val = bytes(val)
        item = parsed.get(val) if parsed is not None else None
        if key == "node":
            if not isinstance(item, NodeInfo):
                item = NodeInfo.from_value(codec.decode(val))
            info = item
        elif key == "caps":
            if not isinstance(item, CapabilityAd):
                item = CapabilityAd.from_value(codec.decode(val))
            caps = item
        elif key.startswith("s:"):
            if not isinstance(item, SessionInfo):
                item = SessionInfo.from_value(codec.decode(val))
            if key != "s:" + item.session_id:
                raise DecodeError("world doc: session key does not match its id")
            sessions.append(item)
        elif key.startswith("l:"):
            if not isinstance(item, LinkInfo):
                item = LinkInfo.from_value(codec.decode(val))
            if key != "l:" + item.target.hex():
                raise DecodeError("world doc: link key does not match its target")
            links.append(item)
        else:
            raise DecodeError("world doc: unknown key")
        seen[val] = item
    if parsed is not None:
        parsed.clear()
        parsed.update(seen)
    return DocView(info=info, caps=caps, sessions=tuple(sessions), links=tuple(links))


class AuthorDoc:
    """The writer of this node's own document, for incarnation ``inc``.

    Every change is one CRDT transaction turned into one signed delta. On a restart the node
    bumps ``inc`` and calls :meth:`start` with the view it had stored: the document is rewritten
    under the new client id and published whole, so nothing from an earlier incarnation (which
    may have lost unsynced writes in a crash) can collide with the new one.
    """

    def __init__(self, signer: Signer, inc: int, *, token: bytes = b"") -> None:
        if inc < 1:
            raise ValueError("incarnations start at 1")
        self.signer = signer
        self.inc = inc
        self.token = token
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id(signer.public_key, inc))
        self.map = self.doc.get("w", type=pycrdt.Map)
        self.seq = 0
        self.head = ZERO32
        self.base: DocUpdate | None = None
        self.deltas: list[DocUpdate] = []
        self._parsed: dict[bytes, Any] = {}

    def start(self, view: DocView | None = None) -> DocUpdate:
        """Publish the incarnation's base (``seq=0``), carrying ``view`` over if given."""
        if self.base is not None:
            raise RuntimeError("already started")
        if view is not None:
            with self.doc.transaction():
                for key, value in _entries(view):
                    self.map[key] = value
        base = DocUpdate.create(self.signer, inc=self.inc, seq=0, kind="base",
                                data=self.doc.get_update(), token=self.token)
        self.base, self.head = base, base.head
        return base

    def _change(self, sets: dict[str, bytes], dels: tuple[str, ...] = ()) -> DocUpdate:
        if self.base is None:
            raise RuntimeError("start() first")
        before = self.doc.get_state()
        with self.doc.transaction():
            for k, v in sets.items():
                self.map[k] = v
            for k in dels:
                if k in self.map:
                    del self.map[k]
        d = DocUpdate.create(self.signer, inc=self.inc, seq=self.seq + 1, kind="delta",
                             data=self.doc.get_update(before), prev=self.head, token=self.token)
        self.seq, self.head = d.seq, d.head
        self.deltas.append(d)
        return d

    def set_info(self, info: NodeInfo) -> DocUpdate:
        return self._change({"node": codec.encode(info.to_value())})

    def set_caps(self, ad: CapabilityAd) -> DocUpdate:
        return self._change({"caps": codec.encode(ad.to_value())})

    def set_session(self, s: SessionInfo) -> DocUpdate:
        return self._change({"s:" + s.session_id: codec.encode(s.to_value())})

    def set_link(self, link: LinkInfo) -> DocUpdate:
        return self._change({"l:" + link.target.hex(): codec.encode(link.to_value())})

    def drop_link(self, target: bytes) -> DocUpdate:
        return self._change({}, ("l:" + target.hex(),))

    def set_links(self, links: list[LinkInfo], drops: list[bytes]) -> DocUpdate:
        """Several links set and dropped in one delta."""
        return self._change({"l:" + lk.target.hex(): codec.encode(lk.to_value()) for lk in links},
                            tuple("l:" + t.hex() for t in drops))

    def compact(self) -> DocUpdate:
        """A signed base at the current position replacing the deltas (sent to newcomers)."""
        base = DocUpdate.create(self.signer, inc=self.inc, seq=self.seq, kind="base",
                                data=self.doc.get_update(), prev=self.head if self.seq else ZERO32,
                                token=self.token)
        self.base, self.deltas = base, []
        return base

    def view(self) -> DocView:
        return read_view(self.doc, self._parsed)


def _entries(view: DocView) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    if view.info:
        out.append(("node", codec.encode(view.info.to_value())))
    if view.caps:
        out.append(("caps", codec.encode(view.caps.to_value())))
    out += [("s:" + s.session_id, codec.encode(s.to_value())) for s in view.sessions]
    out += [("l:" + x.target.hex(), codec.encode(x.to_value())) for x in view.links]
    return out


@dataclass
class DocReplica:
    """One author's document as a reader holds it: the signed base, the deltas since and the
    checked view. Accepts records only in chain order."""

    author: bytes
    verifier: Verifier = verify_raw
    base: DocUpdate | None = None
    deltas: list[DocUpdate] = field(default_factory=list)
    view: DocView = field(default_factory=DocView)
    holder: LiveDocs | None = field(default=None, repr=False, compare=False)
    """Who bounds how many replicas keep a live document (None: this one always keeps it)."""
    live: pycrdt.Doc[Any] | None = field(default=None, repr=False, compare=False)
    """The CRDT document of these records, kept between changes (an optimisation: rebuilt
    from the records whenever it is absent; the holder drops it to bound memory)."""
    parsed: dict[bytes, Any] = field(default_factory=dict, repr=False, compare=False)
    """Each current value's bytes and what they parsed to (see :func:`read_view`)."""

    @property
    def position(self) -> tuple[int, int]:
        if self.base is None:
            return (0, 0)
        return (self.base.inc, self.deltas[-1].seq if self.deltas else self.base.seq)

    @property
    def head(self) -> bytes:
        if self.deltas:
            return self.deltas[-1].head
        return self.base.head if self.base else ZERO32

    def records(self) -> list[DocUpdate]:
        """What a peer needs to rebuild this document: the base and the deltas since."""
        return ([self.base] if self.base else []) + list(self.deltas)

    def records_after(self, pos: tuple[int, int]) -> list[DocUpdate]:
        """What a peer at ``pos`` lacks: the deltas after it, or everything if it is on
        another incarnation or behind the base."""
        if self.base is None or pos >= self.position:
            return []
        if pos[0] == self.base.inc and pos[1] >= self.base.seq:
            return [d for d in self.deltas if d.seq > pos[1]]
        return self.records()

    def check(self, u: DocUpdate) -> str:
        """Classify ``u`` without changing anything: ``apply`` / ``replace`` / ``compact`` /
        ``stale`` / ``gap``. Raises :class:`ForgedUpdate` for a record this author did not
        sign (or that inserts under a foreign client id)."""
        if u.author != self.author:
            raise ForgedUpdate("world update for another author")
        pos = self.position
        if u.kind == "base":
            if (u.inc, u.seq) > pos:
                return "replace"
            if (u.inc, u.seq) == pos and u.seq > 0 and u.prev == self.head and self.deltas:
                return "compact"
            return "stale"
        if u.inc < pos[0] or (u.inc == pos[0] and u.seq <= pos[1]):
            return "stale"
        if u.inc > pos[0] or u.seq > pos[1] + 1:
            return "gap"
        return "apply" if u.prev == self.head else "fork"

    def apply(self, u: DocUpdate, guard: Callable[[DocView, DocView], None] | None = None
              ) -> DocView:
        """Apply one record; returns the new view. Refusals raise and change nothing:
        :class:`ForgedUpdate` (bad signature, foreign client id, broken chain),
        :class:`StaleUpdate` (already held), :class:`DecodeError` (bad CRDT data or contents),
        :class:`WorldGap` (records are missing before it). ``guard(old, new)`` runs before
        anything is committed and may raise (the auth check: a changed ad needs its scope)."""
        what = self.check(u)
        if what == "stale":
            raise StaleUpdate("world update already held", author=u.node.hex())
        if what == "gap":
            raise WorldGap("world update arrived before the records it follows",
                           author=u.node.hex())
        if what == "fork":
            u.verify(self.verifier)
            raise ForgedUpdate("world update does not extend the author's chain",
                               author=u.node.hex())
        u.verify(self.verifier)
        clients = state_vector_clients(u.data)
        if set(clients) - {client_id(u.author, u.inc)}:
            raise ForgedUpdate("world update inserts under another client id",
                               author=u.node.hex())
        if what == "compact":
            # Same position, same head: the author vouches that this is the same state.
            self.base, self.deltas = u, []
            return self.view
        # The CRDT document of the records so far: the live one if the holder kept it (taken
        # here, so a refused update, which may have touched it, leaves none behind), else
        # rebuilt from the records. The holder keeps live documents for the authors that
        # change most recently only: a node tracking a thousand peers keeps their records and
        # checked views, not a thousand live documents.
        doc, self.live = self.live, None
        if doc is None or what == "replace":
            doc = pycrdt.Doc(client_id=1)
            if what == "apply":
                for r in self.records():
                    doc.apply_update(r.data)
        view = _apply_checked(doc, u.data, self.parsed)
        if guard is not None:
            guard(self.view, view)
        if what == "replace":
            self.base, self.deltas = u, []
        else:
            self.deltas.append(u)
        self.view, self.live = view, doc
        if self.holder is not None:
            self.holder.touch(self)
        return view

    def document(self) -> pycrdt.Doc[Any]:
        """The author's document as a live pycrdt ``Doc`` (built from the records)."""
        doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=1)
        for r in self.records():
            doc.apply_update(r.data)
        return doc

    def state_hash(self) -> bytes:
        """Hash of the checked contents (equal on every replica holding the same records)."""
        return blake2b256(codec.tagged("p2pworld/world-view", {
            "pos": list(self.position), "view": self.view.to_value()}))


LIVE_DOCS = 64
"""Authors whose live CRDT document a node keeps between changes (the most recently
touched; the others are rebuilt from their records when they next change)."""


class LiveDocs:
    """Which replicas keep their live document: the :data:`LIVE_DOCS` most recently touched
    (a node tracking a thousand peers keeps their records, not a thousand live documents)."""

    def __init__(self, limit: int = LIVE_DOCS) -> None:
        self.limit = limit
        self._order: dict[bytes, DocReplica] = {}

    def touch(self, rep: DocReplica) -> None:
        self._order.pop(rep.author, None)
        self._order[rep.author] = rep
        while len(self._order) > self.limit:
            self._order.pop(next(iter(self._order))).live = None


def _apply_checked(doc: pycrdt.Doc[Any], data: bytes, parsed: dict[bytes, Any]) -> DocView:
    try:
        doc.apply_update(data)
    except Exception as e:  # noqa: BLE001 - pycrdt raises assorted types on bad updates
        raise DecodeError(f"world update: bad CRDT data ({type(e).__name__})") from None
    return read_view(doc, parsed)
