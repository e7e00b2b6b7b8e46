"""What must be on disk before what, and when a writer's batch goes: the data path's decisions.

Both executors (the trio runtime and the simulator) run this core, so every seed exercises the
ordering that makes "ack after fsync" true, the lazy outbox and the writer's pacing.

**Ordering** (:meth:`PersistCore.plan`). A batch of core effects becomes steps:
:class:`Carry` (carry these effects out: sends, deliveries, outcomes, notices) and
:class:`Commit` (one transaction, one fsync; the steps after it wait for it). Every durable
effect of a batch goes in one commit before any effect listed after the first of them; effects
listed before it never depend on it (cores emit an effect after what it needs), so they go
first. Outbox rows gate nothing: a submission may leave before its row is on disk (a crash
first means the publish was never acknowledged, and the caller holds an indeterminate outcome
and its key), and an answered one may be reported before its row is deleted (a resubmission
after a crash is answered ``duplicate``). They ride along with the next commit, or are
committed on their own after :data:`LAZY_WRITE_MS` with nothing else to write
(:meth:`PersistCore.idle`), and always before an indeterminate outcome is reported (it tells
the caller "the outbox resubmits it"). Writer submissions (``Send(Submit)``) may leave ahead
of earlier batches still on their way to disk (:func:`leaves_at_once`): they depend on nothing
this node still has to write.

**A failed commit** (the disk is full, :func:`refused_after`): nothing of it is on disk, so
every acknowledgement that waited on it becomes a refusal and what it held never leaves the
node; the outbox rows go back to wait for the next commit.

**Pacing** (:func:`pace`). With :data:`BATCHES_IN_FLIGHT` writer batches unanswered, the next
waits (at most :data:`BATCH_WAIT_MS`) for an answer or a full batch, so under load a few large
batches travel instead of many small ones (every hop costs per batch: a frame, a transaction, a
signature check); with submissions in flight (their answers wake the writer anyway), it waits
up to :data:`NAGLE_WAIT_MS` for :data:`NAGLE_BATCH` publishes, so one signature, one frame and
one transaction on every node cover them; a lone publish never waits.

Example:
    >>> from p2pworld.channel.hub import Delivered, Persist, Resolved
    >>> core = PersistCore()
    >>> steps = core.plan([Resolved(1, None), Persist(record=None), Delivered(b"c", ())],
    ...                   now_ms=0)
    >>> [type(s).__name__ for s in steps]
    ['Carry', 'Commit', 'Carry']
    >>> pace(queued=3, in_flight=5, batches_in_flight=1)
    Pace(wait_ms=1, until_queued=64)
    >>> pace(queued=1, in_flight=0, batches_in_flight=0).wait_ms
    0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2pworld.channel.hub import (
    Delivered,
    OutboxDone,
    OutboxPut,
    Outcomes,
    Persist,
    PublishResult,
    RecordFork,
    Resolved,
    SaveCursor,
    SaveVote,
)
from p2pworld.effects import Send, SendAll
from p2pworld.errors import P2PWorldError, PublishTimeout
from p2pworld.log.entry import SIGN_BATCH
from p2pworld.wire import Ack, Entries, EpochMsg, Nack, Stored, Submit, Tip

if TYPE_CHECKING:
    from p2pworld.core.cores import NodeEffect

StoreEffect = Persist | SaveCursor | OutboxPut | OutboxDone | RecordFork | SaveVote
"""The durable effects: what a store's ``apply`` takes, the one vocabulary at the store."""
STORE_EFFECTS = (Persist, SaveCursor, OutboxPut, OutboxDone, RecordFork, SaveVote)
OUTBOX_EFFECTS = (OutboxPut, OutboxDone)
GATING_EFFECTS = (Persist, SaveCursor, RecordFork, SaveVote)
"""The durable effects that what follows them waits for."""

LAZY_WRITE_MS = 20
"""Outbox rows with nothing else to write are committed on their own after this long."""
BATCHES_IN_FLIGHT = 2
BATCH_WAIT_MS = 50
NAGLE_WAIT_MS = 1
NAGLE_BATCH = 64


@dataclass(frozen=True)
class Carry:
    """Carry out these effects, in order (none of them is durable)."""

    effects: tuple[NodeEffect, ...]
    generation: int = 0
    """As :attr:`Commit.generation`: planned before a commit that failed, it is carried out
    as what follows a failed commit (:meth:`PersistCore.carried`)."""


@dataclass(frozen=True)
class Commit:
    """Write these durable effects in one transaction; what follows waits for it."""

    ops: tuple[StoreEffect, ...]
    generation: int = 0
    """The persist core's generation when it was planned: a commit planned before an earlier
    one failed is void (:meth:`PersistCore.voided`)."""

    @property
    def gates(self) -> bool:
        """Whether what follows waits for it (a commit of outbox rows alone gates nothing)."""
        return any(not isinstance(op, OUTBOX_EFFECTS) for op in self.ops)


Step = Carry | Commit


@dataclass
class PersistCore:
    """The ordering of one node's durable writes (see the module's docstring)."""

    lazy: list[StoreEffect] = field(default_factory=list)
    """Outbox rows not yet committed."""
    lazy_since_ms: int | None = None
    generation: int = 0
    """How many commits have failed: each failure voids every commit planned before it."""
    failure: P2PWorldError | None = None
    """Why the last commit failed."""

    def plan(self, fx: Iterable[NodeEffect], *, now_ms: int) -> list[Step]:
        # One pass: the outbox rows wait (lazy), the other durable effects go in one commit,
        # the rest is carried before it (listed before the first of them) or after it.
        gating: list[StoreEffect] = []
        head: list[NodeEffect] = []
        tail: list[NodeEffect] = []
        timeout = False
        for e in fx:
            if isinstance(e, STORE_EFFECTS):
                if isinstance(e, OUTBOX_EFFECTS):
                    self._defer(e, now_ms)
                else:
                    gating.append(e)
                continue
            (tail if gating else head).append(e)
            if not timeout and isinstance(e, (Resolved, Outcomes)):
                timeout = any(isinstance(r.outcome, PublishTimeout) for r in outcomes((e,)))
        steps: list[Step] = []
        if self.lazy and timeout:
            steps.append(self._take_lazy())
        if head:
            steps.append(Carry(tuple(head), self.generation))
        if gating:
            lazy = self._take_lazy().ops
            steps.append(Commit(lazy + tuple(gating), self.generation))
            if tail:
                steps.append(Carry(tuple(tail), self.generation))
        return steps

    def idle(self, *, now_ms: int) -> Commit | None:
        """The outbox rows' own commit, once they have waited :data:`LAZY_WRITE_MS`."""
        if self.lazy and self.lazy_since_ms is not None and \
                now_ms - self.lazy_since_ms >= LAZY_WRITE_MS:
            return self._take_lazy()
        return None

    def wake_at(self) -> int | None:
        """When :meth:`idle` has something to commit (None: nothing waits)."""
        return None if not self.lazy or self.lazy_since_ms is None \
            else self.lazy_since_ms + LAZY_WRITE_MS

    def failed(self, commit: Commit, *, now_ms: int, error: P2PWorldError | None = None
               ) -> None:
        """``commit`` did not reach the disk: its outbox rows wait for the next one. With
        ``error`` (the disk refused it), every commit planned before now is void: it was
        planned from the memory the failure puts back (entries the disk never got), so
        writing it would acknowledge what follows a hole."""
        if error is not None and commit.generation == self.generation:
            self.generation += 1
            self.failure = error
        rows = [op for op in commit.ops if isinstance(op, OUTBOX_EFFECTS)]
        self.lazy[:0] = rows
        if rows and self.lazy_since_ms is None:
            self.lazy_since_ms = now_ms

    def _defer(self, e: StoreEffect, now_ms: int) -> None:
        self.lazy.append(e)
        if self.lazy_since_ms is None:
            self.lazy_since_ms = now_ms

    def voided(self, commit: Commit) -> P2PWorldError | None:
        """Why ``commit`` must not be written (a commit planned before it failed), else None.
        The executor carries a void commit out as a failed one (``CommitFailed`` with this
        error)."""
        return self.failure if commit.generation < self.generation else None

    def carried(self, step: Carry) -> tuple[NodeEffect, ...]:
        """What to carry out of ``step``: its effects; or, planned before a commit that
        failed, those with every acknowledgement refused and nothing of what the failure
        took back leaving the node (a catch-up read from memory would send entries the disk
        never got: a fork at the replica)."""
        if step.generation >= self.generation or self.failure is None:
            return step.effects
        return tuple(refused_after(self.failure, step.effects))

    def _take_lazy(self) -> Commit:
        lazy, self.lazy, self.lazy_since_ms = tuple(self.lazy), [], None
        return Commit(lazy, self.generation)


def leaves_at_once(e: NodeEffect) -> bool:
    """A writer's submission: it may leave ahead of earlier batches still on their way to disk."""
    if isinstance(e, SendAll):
        return all(isinstance(m, Submit) for m in e.messages)
    return isinstance(e, Send) and isinstance(e.message, Submit)


def outcomes(fx: Iterable[NodeEffect]) -> list[Resolved]:
    """Every outcome among ``fx``, single or in batches."""
    out: list[Resolved] = []
    for e in fx:
        if isinstance(e, Resolved):
            out.append(e)
        elif isinstance(e, Outcomes):
            out += e.items
    return out


def persisted_channels(commit: Commit) -> list[bytes]:
    """The channels a commit changed (to put back to what the disk holds when it failed)."""
    return sorted({op.record.channel for op in commit.ops if isinstance(op, Persist)})


def gated_tail(steps: Sequence[Step], i: int) -> tuple[NodeEffect, ...]:
    """What follows the commit ``steps[i]`` in its plan and waits on it (refused with it when
    it fails; nothing when it gates nothing)."""
    step = steps[i]
    if not isinstance(step, Commit) or not step.gates:
        return ()
    return tuple(e for s in steps[i + 1:] if isinstance(s, Carry) for e in s.effects)


def refused_after(err: P2PWorldError, tail: Sequence[NodeEffect]) -> list[NodeEffect]:
    """The effects that followed a failed commit, with every acknowledgement that waited on
    it turned into a refusal, and nothing of what it held leaving the node."""
    out: list[NodeEffect] = []
    for e in _unbatched(tail):
        if isinstance(e, Resolved) and isinstance(e.outcome, PublishResult):
            out.append(Resolved(e.req, err))
        elif isinstance(e, Send) and isinstance(e.message, Ack):
            a = e.message
            out.append(Send(e.peer, Nack(a.req, a.channel, err.code, err.message[:512])))
        elif isinstance(e, Send) and isinstance(e.message, (Entries, Stored, Tip, EpochMsg)):
            continue
        elif not isinstance(e, (Delivered, *STORE_EFFECTS)):
            out.append(e)
    return out


def _unbatched(fx: Iterable[NodeEffect]) -> list[NodeEffect]:
    out: list[NodeEffect] = []
    for e in fx:
        if isinstance(e, SendAll):
            out += [Send(e.peer, m) for m in e.messages]
        elif isinstance(e, Outcomes):
            out += e.items
        else:
            out.append(e)
    return out


def batched(fx: list[NodeEffect]) -> list[NodeEffect]:
    """Group a flush's effects into batches: the sends to one peer into one
    :class:`~p2pworld.effects.SendAll` (writer submissions apart, as they leave at once), the
    outcomes into one :class:`~p2pworld.channel.hub.Outcomes`, each at its first member's
    place. Groups never span a durable effect (a commit), so what the persist core orders
    keeps its order.

    Example:
        >>> from p2pworld.wire import Ping
        >>> [type(e).__name__ for e in batched([Send(b"a", Ping(1)), Send(b"a", Ping(2)),
        ...                                     Send(b"b", Ping(3))])]
        ['SendAll', 'Send']
    """
    out: list[NodeEffect | list[NodeEffect]] = []
    sends: dict[tuple[bytes, bool], list[NodeEffect]] = {}
    outcomes: list[NodeEffect] | None = None
    for e in fx:
        if isinstance(e, Send):
            k = (e.peer, leaves_at_once(e))
            group = sends.get(k)
            if group is None:
                group = sends[k] = []
                out.append(group)
            group.append(e)
        elif isinstance(e, Resolved):
            if outcomes is None:
                outcomes = []
                out.append(outcomes)
            outcomes.append(e)
        else:
            if isinstance(e, GATING_EFFECTS):
                sends, outcomes = {}, None
            out.append(e)
    return [_one(x) if isinstance(x, list) else x for x in out]


def _one(group: list[NodeEffect]) -> NodeEffect:
    if len(group) == 1:
        return group[0]
    first = group[0]
    if isinstance(first, Send):
        return SendAll(first.peer, tuple(e.message for e in group if isinstance(e, Send)))
    return Outcomes(tuple(e for e in group if isinstance(e, Resolved)))


@dataclass(frozen=True)
class Pace:
    """Before a flush: wait up to ``wait_ms`` (0: flush now) for ``until_queued`` publishes.
    An executor asks again at every event while it waits, and flushes as soon as the answer
    is another one (or the wait is over)."""

    wait_ms: int
    until_queued: int = 0


NO_WAIT = Pace(0)


def pace(*, queued: int, in_flight: int, batches_in_flight: int) -> Pace:
    """How long a writer's queued publishes wait for company (see the module's docstring)."""
    if queued and batches_in_flight >= BATCHES_IN_FLIGHT and queued < SIGN_BATCH:
        return Pace(BATCH_WAIT_MS, SIGN_BATCH)
    if 0 < queued < NAGLE_BATCH and in_flight:
        return Pace(NAGLE_WAIT_MS, NAGLE_BATCH)
    return NO_WAIT
