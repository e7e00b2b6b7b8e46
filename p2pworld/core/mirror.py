"""Mirror events (pure): how p2pworld state appears on Nostr relays.

Every mirror event is signed with the node's NIP-06 key and carries two linking tags:
``["p2pworld", <p2pworld id>]`` (what it mirrors: a node, a world record, a compute request)
and ``["p2pworld-hash", <hex>]`` (the log-entry or record hash it was made from), so a reader
can replay-link it to the log; the bridge outbox keeps the mapping both ways.

=====================  =======  ==========================================================
p2pworld               kind     notes
=====================  =======  ==========================================================
capability ad          31990    NIP-89 handler information; ``d`` = node id; one ``k`` tag per
                                job kind served; content = JSON ``{name, tools, models}``
compute ``request``    5000+    NIP-90 job request of the request's kind; ``i`` (job, text or
                                base64), ``param`` per need, ``bid`` (price)
compute phase change   7000     NIP-90 feedback; ``status`` from
                                :data:`~p2pworld.compute.state.NIP90_STATUS`; ``e`` = request
compute ``result``     6000+    NIP-90 result (``kind + 1000``) for ``success``
presence               30315    NIP-38 user status, addressable (``d`` = ``p2pworld``): the
                                relay keeps only the latest; ``expiration`` (NIP-40) =
                                heartbeat + 90 s, republished every 30 s; ``t`` = workspace tag
relay list             10002    NIP-65 (``r`` tags), plus the workspace ``t`` tag so peers
                                find it with one subscription
=====================  =======  ==========================================================

Presence is replaceable rather than ephemeral: a reader that connects later still sees who is
there (and the Nostr lane uses it to find peers when there is no direct path), and the
expiration tag makes a stale status disappear from relays that honour NIP-40.

Example:
    >>> from p2pworld.nostr.keys import NostrKey
    >>> k = NostrKey(bytes(31) + b"\\x05")
    >>> ev = presence_event(k, node=b"N" * 32, workspace="lab", status="online",
    ...                     created_at=1000, aux=bytes(32))
    >>> ev.kind, ev.tag("d"), parse_presence(ev, "lab") == b"N" * 32
    (30315, ['p2pworld'], True)
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from p2pworld import codec
from p2pworld.compute.state import NIP90_STATUS, decode_event
from p2pworld.errors import NostrError, P2PWorldError
from p2pworld.identity import blake2b256
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey
from p2pworld.world.doc import CapabilityAd

if TYPE_CHECKING:
    from p2pworld.core.cores import Cores
    from p2pworld.log.entry import Entry

HANDLER_KIND = 31990
FEEDBACK_KIND = 7000
PRESENCE_KIND = 30315
RELAY_LIST_KIND = 10002
PRESENCE_TTL_S = 90
PRESENCE_EVERY_S = 30
MAX_RELAYS = 8
MIRRORS = ("presence", "capabilities", "compute")
"""Every mirror a node can publish (``NodeConfig.mirror`` picks among them)."""


def workspace_tag(workspace: str) -> str:
    """The ``t`` tag naming a workspace on relays (a hash: the name itself is not shown)."""
    return "p2pw-" + blake2b256(b"p2pworld/workspace/v1\x00" + workspace.encode()).hex()[:32]


def _link(pid: str, h: bytes) -> list[list[str]]:
    return [["p2pworld", pid], ["p2pworld-hash", h.hex()]]


def presence_event(key: NostrKey, *, node: bytes, workspace: str, status: str,
                   created_at: int, aux: bytes, record_hash: bytes = b"") -> Event:
    return Event.create(key, kind=PRESENCE_KIND, content=status, created_at=created_at,
                        aux=aux, tags=[["d", "p2pworld"], ["t", workspace_tag(workspace)],
                                       ["expiration", str(created_at + PRESENCE_TTL_S)],
                                       *_link(f"node:{node.hex()}", record_hash)])


def parse_presence(ev: Event, workspace: str) -> bytes | None:
    """The node id a presence event claims, if it is one for ``workspace`` (a claim: the
    session handshake proves it)."""
    if ev.kind != PRESENCE_KIND or ev.tag("t")[:1] != [workspace_tag(workspace)]:
        return None
    link = ev.tag("p2pworld")[:1]
    if not link or not link[0].startswith("node:"):
        return None
    try:
        nid = bytes.fromhex(link[0][5:])
    except ValueError:
        return None
    return nid if len(nid) == 32 else None


def relay_list_event(key: NostrKey, *, relays: list[str], workspace: str, created_at: int,
                     aux: bytes) -> Event:
    """NIP-65: the relays this node reads and writes (``r`` tags)."""
    return Event.create(key, kind=RELAY_LIST_KIND, content="", created_at=created_at,
                        aux=aux, tags=[*(["r", u] for u in relays[:MAX_RELAYS]),
                                       ["t", workspace_tag(workspace)]])


def parse_relay_list(ev: Event) -> list[str]:
    """The ``ws://`` / ``wss://`` relays of a NIP-65 list (at most :data:`MAX_RELAYS`)."""
    if ev.kind != RELAY_LIST_KIND:
        raise NostrError("not a relay list")
    out = [t[1] for t in ev.tags if len(t) >= 2 and t[0] == "r"
           and t[1].startswith(("ws://", "wss://")) and len(t[1]) <= 256]
    return list(dict.fromkeys(out))[:MAX_RELAYS]


def handler_event(key: NostrKey, *, node: bytes, ad: CapabilityAd, record_hash: bytes,
                  created_at: int, aux: bytes, name: str = "") -> Event:
    """NIP-89 handler information for a capability ad."""
    content = json.dumps({"name": name or f"p2pworld node {node.hex()[:16]}",
                          "tools": list(ad.tools), "models": list(ad.models)},
                         separators=(",", ":"), sort_keys=True)
    return Event.create(key, kind=HANDLER_KIND, content=content, created_at=created_at,
                        aux=aux, tags=[["d", node.hex()],
                                       *(["k", k] for k in ad.job_kinds if k.isdigit()),
                                       *_link(f"ad:{node.hex()}", record_hash)])


def ad_mirror_row(key: NostrKey, *, mirror: Collection[str], node: bytes, ad: CapabilityAd,
                  created_at: int, aux: bytes, name: str = "") -> tuple[Event, str, bytes] | None:
    """The bridge row (event, p2pworld id, record hash) of this node's capability ad: its
    NIP-89 handler information, when the node mirrors ``capabilities`` (None: it does not)."""
    if "capabilities" not in mirror:
        return None
    h = blake2b256(codec.encode(ad.to_value()))
    ev = handler_event(key, node=node, ad=ad, record_hash=h, created_at=created_at, aux=aux,
                       name=name)
    return ev, f"ad:{node.hex()}", h


def mirrors_presence(mirror: Collection[str], mode: str) -> bool:
    """Whether the node publishes presence to its relays: when it mirrors ``presence``, and
    always in ``forced-nostr`` mode (its peers find it there)."""
    return "presence" in mirror or mode == "forced-nostr"


def _job_input(job: bytes) -> list[str]:
    try:
        return ["i", job.decode("utf-8"), "text"]
    except UnicodeDecodeError:
        return ["i", base64.b64encode(job).decode(), "text", "", "base64"]


def compute_events(key: NostrKey, *, event: dict[str, Any], rid_link: str, entry_hash: bytes,
                   request_kind: int, request_event: str, klass: str, price: int,
                   assignee_pubkey: str, created_at: int, aux: bytes) -> list[Event]:
    """The NIP-90 events one compute-channel entry maps to (possibly none).

    ``request_event``: the Nostr id of the mirrored job request (for ``e`` tags; empty when
    ``event`` is the request itself)."""
    op = event.get("op")
    link = _link(rid_link, entry_hash)
    if op == "request":
        job = event.get("job", b"")
        tags = [_job_input(job if isinstance(job, bytes) else b""),
                *(["param", "need", str(n)] for n in event.get("needs", [])),
                ["bid", str(int(event.get("price", 0)) * 1000)], *link]
        return [Event.create(key, kind=request_kind, content="", tags=tags,
                             created_at=created_at, aux=aux)]
    status: str | None
    content = ""
    if op == "accept":
        status = "payment-required" if klass == "paid" else NIP90_STATUS["accepted"]
    elif op == "progress":
        status = NIP90_STATUS["processing"]
    elif op == "result":
        status = NIP90_STATUS.get(str(event.get("status")))
    elif op in ("cancel", "expire"):
        status = NIP90_STATUS["cancelled" if op == "cancel" else "expired"]
        content = "cancelled" if op == "cancel" else "expired"
    else:
        return []
    if status is None:
        return []
    refs = [["e", request_event]] if request_event else []
    who = [["p", assignee_pubkey]] if assignee_pubkey else []
    extra = [["amount", str(price * 1000)]] if status == "payment-required" else []
    out = [Event.create(key, kind=FEEDBACK_KIND, content=content, created_at=created_at,
                        aux=aux, tags=[["status", status], *extra, *refs, *who, *link])]
    if op == "result" and status == "success":
        data = event.get("data", b"")
        body = data.decode("utf-8", "replace") if isinstance(data, bytes) else ""
        out.append(Event.create(key, kind=request_kind + 1000, content=body,
                                created_at=created_at, aux=aux,
                                tags=[*refs, *who, *link]))
    return out


def compute_mirror_rows(cores: Cores, key: NostrKey, channel: bytes, entries: Sequence[Entry],
                        *, now_ms: int, aux: Callable[[], bytes],
                        requests: dict[str, str], mirror: Collection[str] = MIRRORS,
                        ) -> list[tuple[Event, str, bytes]]:
    """The bridge rows (event, p2pworld id, entry hash) for entries delivered on ``channel``:
    only when the node mirrors ``compute`` (``NodeConfig.mirror``), only this node's own
    compute channel, only if its policy has ``nostr_mirror``.
    ``requests`` maps a request's p2pworld id to its mirrored job request's event id (filled
    here as requests go by, so feedback can reference them). ``created_at`` is the entry's
    sequencer time, so a restart that delivers the entry again builds the same row identity
    (the outbox refuses a second event for one ``(id, entry hash, kind)``)."""
    comp = cores.compute
    if "compute" not in mirror or comp is None:
        return []
    rec = cores.hub.record(channel)
    if not (comp.is_compute(rec) and rec.owner_key == cores.hub.signer.public_key
                            and rec.policy.nostr_mirror):
        return []
    state = comp.state(cores.hub.log(channel))
    rows: list[tuple[Event, str, bytes]] = []
    for entry in entries:
        try:
            ev = decode_event(entry.payload)
        except P2PWorldError:
            continue
        rid = str(ev.get("rid", ""))
        req = state.requests.get(rid)
        if req is None:
            continue
        assignee = cores.world.member(req.assignee, now_ms=now_ms) if req.assignee else None
        link = f"compute:{channel.hex()}:{rid}"
        try:
            out = compute_events(
                key, event=ev, rid_link=link, entry_hash=entry.hash,
                request_kind=int(req.kind), request_event=requests.get(link, ""),
                klass=req.policy_class, price=req.price,
                assignee_pubkey=assignee.info.nostr_pubkey if assignee and assignee.info else "",
                created_at=entry.sequencer_time // 1000, aux=aux())
        except (ValueError, P2PWorldError):
            continue
        if ev.get("op") == "request" and out:
            requests[link] = out[0].id
        rows += [(x, link, entry.hash) for x in out]
    return rows
