"""The compute core: folds every node's ``compute`` channel, validates submissions to this
node's own, drives its requests (assign, lapse, expire), and answers the provider-scoped
query (pure; see :mod:`p2pworld.compute.state` for the rules).

Example:
    >>> core = ComputeCore(node_id=b"R" * 32)
    >>> compute = ChannelRecordStub(COMPUTE_CHANNEL, compute_policy())
    >>> core.is_compute(compute), core.is_compute(ChannelRecordStub("compute", ChannelPolicy()))
    (True, False)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from p2pworld.compute.state import (
    MAX_ATTEMPTS,
    ComputeState,
    Request,
    decode_event,
    encode_event,
)
from p2pworld.errors import P2PWorldError
from p2pworld.log.entry import ChannelPolicy
from p2pworld.world.doc import CapabilityAd

COMPUTE_CHANNEL = "~compute"
"""The name of a node's compute channel (names starting with ``~`` are the library's: an
application cannot open one)."""
COMPUTE_APP = "compute"


def compute_policy(*, nostr_mirror: bool = False) -> ChannelPolicy:
    """The policy of a compute channel (``app="compute"``: what marks it, not its name)."""
    return ChannelPolicy(nostr_mirror=nostr_mirror, app=COMPUTE_APP)
ACCEPT_WINDOW_MS = 10_000


class _Record(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def policy(self) -> ChannelPolicy: ...


@dataclass
class ChannelRecordStub:
    """For examples and tests: anything with a ``name`` and a ``policy``."""

    name: str
    policy: ChannelPolicy = field(default_factory=ChannelPolicy)


class _Log(Protocol):
    @property
    def record(self) -> Any: ...

    @property
    def entries(self) -> Any: ...

    @property
    def floor(self) -> int: ...


@dataclass(frozen=True)
class ProviderEvent:
    """One thing a provider must hear of (:meth:`ComputeCore.provider_events`): ``kind`` is
    ``request``, ``assigned`` (to this node) or ``reopened``; ``seq`` the entry that says
    so."""

    kind: str
    rid: str
    seq: int


@dataclass(frozen=True)
class Intent:
    """A submission the requester's node should make on its own compute channel (the shell
    publishes it with ``key``: retries are idempotent)."""

    payload: bytes
    key: bytes


@dataclass
class ComputeCore:
    node_id: bytes
    accept_window_ms: int = ACCEPT_WINDOW_MS
    states: dict[bytes, ComputeState] = field(default_factory=dict)
    """channel id -> fold of that requester's compute channel."""
    times: dict[tuple[bytes, str], int] = field(default_factory=dict)
    """(channel, rid) -> sequencer time of the current assignment (for the accept window)."""

    def is_compute(self, rec: _Record) -> bool:
        return rec.policy.app == COMPUTE_APP

    def state(self, log: _Log) -> ComputeState:
        """The fold of a compute channel, brought up to the log's head."""
        rec = log.record
        st = self.states.get(rec.channel)
        if st is None:
            from p2pworld.identity import node_id
            st = self.states[rec.channel] = ComputeState(requester=node_id(rec.owner_key))
        for e in log.entries[max(0, st.folded - log.floor):]:
            if e.kind == "msg":
                before = {rid: (r.assignee, r.attempt) for rid, r in st.requests.items()}
                st.fold([(e.sender, e.payload)])
                for rid, r in st.requests.items():
                    if r.assignee is not None and before.get(rid) != (r.assignee, r.attempt):
                        self.times[(rec.channel, rid)] = e.sequencer_time
            st.folded = e.seq
        return st

    def validate(self, log: _Log, sender: bytes, payload: bytes) -> None:
        """The sequencer's check of a submission to a compute channel: it must be a valid
        transition now (raises ``Conflict`` / ``Unauthorized`` / ``DecodeError``)."""
        st = self.state(log)
        ev = decode_event(payload)
        rid = ev.get("rid")
        trial = ComputeState(requester=st.requester, folded=st.folded)
        trial.requests = dict(st.requests)
        if isinstance(rid, str) and rid in trial.requests:
            trial.requests[rid] = copy.deepcopy(trial.requests[rid])
        trial.apply(sender, ev)

    # --- the requester's side ---------------------------------------------------------------

    def drive(self, log: _Log, *, now_ms: int, stale: Callable[[bytes], bool]
              ) -> list[Intent]:
        """What this node, as the requester, must do now on its own compute channel: expire
        what passed its expiry, assign the next offer by the request's policy, lapse an
        assignment not accepted within the window, lapse (once) an accepted assignment whose
        assignee went stale."""
        st = self.state(log)
        ch = log.record.channel
        out: list[Intent] = []
        for rid, r in sorted(st.requests.items()):
            if r.terminal:
                continue
            if now_ms > r.expires_ms:
                out.append(Intent(encode_event("expire", rid=rid), f"{rid}/expire".encode()))
                continue
            if r.open and r.attempt < MAX_ATTEMPTS:
                # Only to a provider whose presence is live: an offer whose provider died
                # (or stopped answering) would only burn an attempt and an accept window.
                # With none live, the request stays open and waits for offers.
                nxt = r.next_offer(live=lambda p: not stale(p))
                if nxt is not None:
                    out.append(Intent(encode_event("assign", rid=rid, provider=nxt.provider,
                                                   attempt=r.attempt + 1),
                                      f"{rid}/assign/{r.attempt + 1}".encode()))
            elif r.phase == "assigned" and \
                    now_ms - self.times.get((ch, rid), now_ms) > self.accept_window_ms:
                out.append(Intent(encode_event("lapse", rid=rid, attempt=r.attempt,
                                               reason="accept_timeout"),
                                  f"{rid}/lapse/{r.attempt}".encode()))
            elif r.phase in ("accepted", "processing") and not r.reopened and \
                    r.accepted_by is not None and stale(r.accepted_by):
                out.append(Intent(encode_event("lapse", rid=rid, attempt=r.attempt,
                                               reason="assignee_stale"),
                                  f"{rid}/lapse/{r.attempt}".encode()))
        return out

    # --- the provider's side ----------------------------------------------------------------

    def provider_events(self, log: _Log, ad: CapabilityAd | None, *, after: int, now_ms: int
                        ) -> tuple[list[ProviderEvent], int]:
        """What this node, as a provider, must hear of on another node's compute channel in
        the entries after seq ``after``, judged against the request as it stands now (so a
        resumed cursor never replays what no longer holds): a ``request`` its live ad
        satisfies and it has not offered on, an assignment to it (``assigned``), a request
        that ``reopened`` (lapsed or rejected) that it may serve. At most one event per
        request (assigned over reopened over request). Returns them, in log order, and the
        seq read up to (the next cursor)."""
        st = self.state(log)
        head = log.floor + len(log.entries)
        if st.requester == self.node_id:
            return [], head
        serve = ad is not None and ad.live(now_ms)
        have = set(ad.tools) | set(ad.models) | set(ad.job_kinds) if ad is not None else set()
        found: dict[str, ProviderEvent] = {}
        rank = {"request": 0, "reopened": 1, "assigned": 2}
        for e in log.entries[max(0, after - log.floor):]:
            if e.kind != "msg":
                continue
            try:
                ev = decode_event(e.payload)
            except P2PWorldError:
                continue
            rid, op = ev.get("rid"), ev.get("op")
            r = st.requests.get(rid) if isinstance(rid, str) else None
            if r is None or r.terminal or now_ms > r.expires_ms:
                continue
            fits = serve and set(r.needs) <= have and (
                ad is None or not ad.job_kinds or r.kind in ad.job_kinds)
            kind = None
            if op == "assign" and ev.get("provider") == self.node_id and \
                    r.assignee == self.node_id and r.phase == "assigned" and \
                    ev.get("attempt") == r.attempt:
                kind = "assigned"
            elif r.open and fits and (op == "lapse" or (
                    op == "reject" and e.sender != self.node_id)) and \
                    all(o.provider != self.node_id for o in r.offers):
                # Open again, and this node holds no offer on it (never offered, or its own
                # assignment lapsed and took its offer): offering is how it takes part.
                kind = "reopened"
            elif op == "request" and r.open and fits and \
                    all(o.provider != self.node_id for o in r.offers):
                kind = "request"
            if kind is not None and (rid not in found or rank[kind] >= rank[found[rid].kind]):
                found[r.rid] = ProviderEvent(kind, r.rid, e.seq)
        return sorted(found.values(), key=lambda x: x.seq), head

    def eligible(self, logs: Sequence[_Log], ad: CapabilityAd | None, *, now_ms: int
                 ) -> list[tuple[bytes, Request]]:
        """The provider-scoped query: open requests of other nodes that this node's ad
        satisfies (every ``need`` is one of its tools, models or job kinds) and that it has
        not offered on yet."""
        if ad is None or not ad.live(now_ms):
            return []
        have = set(ad.tools) | set(ad.models) | set(ad.job_kinds)
        out = []
        for log in logs:
            st = self.state(log)
            if st.requester == self.node_id:
                continue
            for _rid, r in sorted(st.requests.items()):
                if r.open and now_ms <= r.expires_ms and set(r.needs) <= have and \
                        (not ad.job_kinds or r.kind in ad.job_kinds) and \
                        all(o.provider != self.node_id for o in r.offers):
                    out.append((log.record.channel, r))
        return out
