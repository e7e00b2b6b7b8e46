"""Checking a stored channel: one walker for opening a store and for ``p2pworld log verify``.

A node opening its store and an operator running ``log verify`` must never disagree about a
file, so both call :func:`check_channel`. It walks the whole stored channel and reports what
holds:

* ``chain_ok``: every row decodes, matches its key, links to its predecessor and is valid for
  the folded state (membership, owner-only control entries, closed channels, epochs). A row
  that does not decode is damage wherever it is, the last row too: sqlite commits are atomic
  and acks are sent only after a commit, so a half-written row cannot exist.
* ``signatures_ok``: the genesis record, every writer signature, every epoch change.
* ``base_ok``: the retention base (the state at the floor: idempotency index, members) is the
  genesis state, or matches its stored digest and the sequencer signature over it.
* ``head_ok``: the rows end at the head stored with the last commit (and the sequencer's
  signature over that head verifies, where it was stored). A log that lost rows at its end,
  or an index that hides rows, is therefore never served as a shorter log.

``--genesis`` pins the record (and so the first sequencer and the authority key) by its hash.

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> from p2pworld.log.entry import ChannelRecord
    >>> from p2pworld import codec
    >>> from p2pworld.log.state import ChannelState
    >>> rec = ChannelRecord.create(Ed25519Signer(bytes(32)), workspace="w", name="c",
    ...                            created_at=0)
    >>> row = ChannelRow(channel=rec.channel, record=codec.encode_frame(rec.to_wire()),
    ...                  epochs=codec.encode_frame([]),
    ...                  base=ChannelState.genesis(rec).encode(), floor=0, head_seq=0)
    >>> r = check_channel(row, []).report
    >>> r["entries"], r["chain_ok"], r["signatures_ok"], r["head_ok"]
    (0, True, True, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from p2pworld import codec
from p2pworld.errors import P2PWorldError, StoreCorrupt
from p2pworld.identity import verify
from p2pworld.log.entry import ChannelRecord, Entry, SignedHead
from p2pworld.log.state import SNAPSHOT_DOMAIN, ChannelState, EpochChange, Snapshot


@dataclass(frozen=True, kw_only=True)
class ChannelRow:
    """One row of the store's ``channels`` table, as bytes (nothing decoded yet)."""

    channel: bytes
    record: bytes
    epochs: bytes
    base: bytes
    floor: int
    base_proof: bytes | None = None
    """The base's digest and, where the store had it, the sequencer's signature over it
    (:func:`base_proof`); None only for a genesis base (floor 0)."""
    head_seq: int | None = None
    """The head stored with the last commit (None: a store that did not record it)."""
    head_hash: bytes | None = None
    """The head's hash; None: the base's head (no rows above the floor)."""
    head_sig: bytes | None = None
    """The sequencer's :class:`~p2pworld.log.entry.SignedHead` over the stored head (wire
    frame), when the commit came with one."""
    legacy: bool = False
    """Read from a store of an older format (read-only, not migrated): it holds no head and
    no base proof, so only the chain is checked."""


@dataclass
class StoredChannel:
    """A channel as it is on disk, verified."""

    record: ChannelRecord
    epochs: list[EpochChange]
    base: ChannelState
    entries: list[Entry]
    head: SignedHead | None = None
    """The sequencer's signature over the head, stored with the last commit (verified)."""


@dataclass
class ChannelCheck:
    """What :func:`check_channel` found: the report (``log verify --json`` prints it), the
    channel when everything holds, else the typed error naming the channel and seq."""

    report: dict[str, Any]
    stored: StoredChannel | None
    problem: StoreCorrupt | None


def base_proof(snapshot: Snapshot | None, state_hash: bytes) -> bytes:
    """The stored proof of a retention base: its state hash, and the sequencer's snapshot
    signature when there is one (a base made here by the sequencer, or taken from a signed
    snapshot)."""
    proof: dict[str, Any] = {"hash": state_hash}
    if snapshot is not None:
        proof.update(by=snapshot.signer_key, sig=snapshot.signature)
    return codec.encode_frame(proof)


def check_channel(row: ChannelRow, rows: Iterable[tuple[int, bytes, bytes]], *,
                  genesis: bytes | None = None) -> ChannelCheck:
    """Walk one stored channel from its base through every row (see the module docs).
    ``rows``: ``(seq, hash, body)`` in ``seq`` order."""
    out: dict[str, Any] = {"channel": row.channel.hex(), "entries": 0, "chain_ok": False,
                           "signatures_ok": False, "base_ok": False, "head_ok": False,
                           "head_hash": None, "state_hash": None, "genesis_ok": None,
                           "errors": []}
    errors: list[str] = out["errors"]
    bad_seq: list[int] = []

    def done() -> ChannelCheck:
        if not errors:
            return ChannelCheck(out, StoredChannel(rec, epochs, base, ents, signed), None)
        seq = {"seq": bad_seq[0]} if bad_seq else {}
        return ChannelCheck(out, None, StoreCorrupt(
            f"channel {row.channel.hex()}: {errors[0]}", channel=row.channel.hex(), **seq))

    try:
        rec = ChannelRecord.from_wire(codec.decode_frame(row.record))
        epochs = [EpochChange.from_wire(e) for e in codec.decode_frame(row.epochs)]
        base = ChannelState.decode(row.base)
    except (P2PWorldError, TypeError, ValueError) as err0:
        errors.append(f"record, epochs or base unreadable: {err0}")
        return ChannelCheck(out, None, StoreCorrupt(
            f"channel {row.channel.hex()}: {errors[0]}", channel=row.channel.hex()))
    ents: list[Entry] = []
    signed: SignedHead | None = None
    out["genesis_hash"] = rec.genesis_hash.hex()
    if genesis is not None:
        out["genesis_ok"] = rec.genesis_hash == genesis
    chain_ok = sig_ok = True
    if rec.channel != row.channel:
        chain_ok = False
        errors.append("record is of another channel")
    try:
        rec.verify()
    except P2PWorldError as err1:
        sig_ok = False
        errors.append(f"genesis record: {err1.code}")
    keys, epoch_errors = _sequencer_keys(rec, epochs)
    if epoch_errors:
        sig_ok = False
        errors.extend(epoch_errors)
    base_errors = _check_base(rec, base, row, set(keys.values()))
    out["base_ok"] = not base_errors
    errors.extend(base_errors)
    walk = base.copy()
    later = [ec for ec in epochs if ec.epoch > walk.epoch]
    for seq, h, body in rows:
        try:
            if not isinstance(seq, int) or not isinstance(h, bytes):
                raise TypeError("a row column of the wrong type")
            e = Entry.from_frame(body)
        except (P2PWorldError, ValueError, TypeError) as err:
            chain_ok = False
            errors.append(f"entry {seq} unreadable: {getattr(err, 'code', err)}")
            bad_seq.append(seq)
            break
        try:
            while e.epoch != walk.epoch and later and later[0].start_seq == walk.seq:
                walk.apply_epoch(later.pop(0))
        except P2PWorldError as err:
            chain_ok = False
            errors.append(f"epoch change at seq {seq} does not fit the chain: {err.code}")
            bad_seq.append(seq)
            break
        try:
            e.submission().verify()
        except P2PWorldError:
            sig_ok = False
            errors.append(f"entry {seq}: writer signature does not verify")
            bad_seq.append(seq)
        try:
            if e.seq != seq or e.hash != h or e.channel != row.channel:
                raise ValueError("row does not match its entry")
            walk.check_submission(e.submission())
            walk.apply(e)
        except (P2PWorldError, ValueError) as err:
            chain_ok = False
            errors.append(f"chain broken at seq {seq}: {getattr(err, 'code', err)}")
            bad_seq.append(seq)
            break
        ents.append(e)
        out["entries"] += 1
    # Epoch changes that start at the head (no entry of theirs yet).
    for ec in later:
        if chain_ok and ec.start_seq == walk.seq and ec.epoch > walk.epoch:
            try:
                walk.apply_epoch(ec)
            except P2PWorldError as err:
                chain_ok = False
                errors.append(f"epoch {ec.epoch} does not start at the head: {err.code}")
    head_errors, signed = _check_head(row, walk, keys) if chain_ok else ([], None)
    out["head_ok"] = chain_ok and not head_errors
    errors.extend(head_errors)
    if out["genesis_ok"] is False:
        errors.append("record does not match the pinned genesis hash")
    out["chain_ok"] = chain_ok
    out["signatures_ok"] = sig_ok
    out["head_hash"] = walk.head_hash.hex()
    out["state_hash"] = walk.state_hash().hex()
    out["head_seq"] = walk.seq
    out["epoch"] = walk.epoch
    return done()


def _sequencer_keys(rec: ChannelRecord, epochs: list[EpochChange]
                    ) -> tuple[dict[int, bytes], list[str]]:
    """Each epoch's sequencer key, from the genesis and the authority-signed epoch chain."""
    walk = ChannelState.genesis(rec)
    keys = {walk.epoch: walk.sequencer_key}
    errors = []
    for ec in epochs:
        try:
            walk.check_epoch_change(ec)
        except P2PWorldError as err:
            errors.append(f"epoch {ec.epoch}: {err.code}")
            continue
        walk.epoch, walk.sequencer_key = ec.epoch, ec.sequencer_key
        keys[ec.epoch] = ec.sequencer_key
    return keys, errors


def _check_base(rec: ChannelRecord, base: ChannelState, row: ChannelRow,
                sequencers: set[bytes]) -> list[str]:
    if base.record.genesis_hash != rec.genesis_hash or base.seq != row.floor:
        return ["base state does not match the channel or its floor"]
    h = base.state_hash()
    if row.base_proof is None:
        if (row.floor == 0 and h == ChannelState.genesis(rec).state_hash()) or row.legacy:
            return []
        return ["retention base has no stored proof"]
    try:
        proof = codec.need_map(codec.decode_frame(row.base_proof), "base proof")
        digest = codec.bytes_field(proof, "hash", "base proof", size=32)
        by = proof.get("by")
        sig = proof.get("sig")
    except P2PWorldError as err:
        return [f"retention base proof unreadable: {err.code}"]
    if digest != h:
        return ["retention base does not match its stored hash"]
    if by is None and sig is None:
        return []
    body = {"ch": rec.channel, "seq": base.seq, "hash": h}
    if not (isinstance(by, bytes) and isinstance(sig, bytes) and by in sequencers
            and verify(by, SNAPSHOT_DOMAIN, body, sig)):
        return ["retention base signature does not verify"]
    return []


def _check_head(row: ChannelRow, walk: ChannelState, keys: dict[int, bytes]
                ) -> tuple[list[str], SignedHead | None]:
    if row.head_seq is None:
        return ([], None) if row.legacy else (["the last commit's head is missing"], None)
    if row.head_hash is None and row.head_seq != row.floor:
        return ["the last commit's head hash is missing"], None
    if walk.seq != row.head_seq:
        return [f"the rows end at seq {walk.seq} but the last commit's head is seq "
                f"{row.head_seq}: rows are missing or an index is damaged"], None
    if row.head_hash is not None and row.head_hash != walk.head_hash:
        return [f"head at seq {walk.seq} does not match the last commit's head"], None
    if row.head_sig is None:
        return [], None
    try:
        sh = SignedHead.from_wire(codec.decode_frame(row.head_sig))
    except P2PWorldError as err:
        return [f"stored head signature unreadable: {err.code}"], None
    key = keys.get(sh.epoch)
    try:
        if (sh.channel, sh.seq, sh.head_hash) != (row.channel, walk.seq, walk.head_hash) \
                or key is None:
            raise ValueError
        sh.verify(key)
    except (P2PWorldError, ValueError):
        return ["stored head signature does not verify"], None
    return [], sh
