"""Offline verification of a stored channel log (``p2pworld log verify``).

Unlike loading (which stops at the first problem with a typed error), verification walks the
whole log and reports what holds: the hash chain (``chain_ok``: every entry links to its
predecessor and is valid for the folded state: membership, owner-only control entries, closed
channels, epochs), the signatures (``signatures_ok``: the genesis record, every writer
signature, every epoch change), the head hash and the state hash. ``--genesis`` pins the
record (and so the first sequencer and the authority key) by its hash.

Example:
    >>> from p2pworld.identity import Ed25519Signer
    >>> from p2pworld.log.entry import ChannelRecord
    >>> rec = ChannelRecord.create(Ed25519Signer(bytes(32)), workspace="w", name="c",
    ...                            created_at=0)
    >>> from p2pworld import codec
    >>> from p2pworld.log.state import ChannelState
    >>> r = verify_rows(codec.encode_frame(rec.to_wire()), codec.encode_frame([]),
    ...                 ChannelState.genesis(rec).encode(), 0, [])
    >>> r["entries"], r["chain_ok"], r["signatures_ok"]
    (0, True, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from p2pworld import codec
from p2pworld.errors import P2PWorldError
from p2pworld.log.entry import ChannelRecord, Entry
from p2pworld.log.state import ChannelState, EpochChange


def verify_rows(raw_record: bytes, raw_epochs: bytes, raw_base: bytes, floor: int,
                rows: Iterable[tuple[int, bytes, bytes]], *,
                genesis: bytes | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"entries": 0, "chain_ok": False, "signatures_ok": False,
                           "head_hash": None, "state_hash": None, "genesis_ok": None,
                           "torn_tail": False, "errors": []}
    errors: list[str] = out["errors"]
    try:
        rec = ChannelRecord.from_wire(codec.decode_frame(raw_record))
        epochs = [EpochChange.from_wire(e) for e in codec.decode_frame(raw_epochs)]
        base = ChannelState.decode(raw_base)
    except (P2PWorldError, TypeError, ValueError) as err0:
        errors.append(f"record, epochs or base unreadable: {err0}")
        return out
    out["channel"] = rec.channel.hex()
    out["genesis_hash"] = rec.genesis_hash.hex()
    if genesis is not None:
        out["genesis_ok"] = rec.genesis_hash == genesis
        if not out["genesis_ok"]:
            errors.append("record does not match the pinned genesis hash")
    sig_ok = True
    chain_ok = base.record.genesis_hash == rec.genesis_hash and base.seq == floor
    try:
        rec.verify()
    except P2PWorldError as err1:
        sig_ok = False
        errors.append(f"genesis record: {err1.code}")
    walk = base.copy()
    later = [ec for ec in epochs if ec.epoch > walk.epoch]
    rows = list(rows)
    for i, (seq, h, body) in enumerate(rows):
        try:
            e = Entry.from_frame(body)
        except P2PWorldError as err:
            if i == len(rows) - 1:
                out["torn_tail"] = True
                break
            chain_ok = False
            errors.append(f"seq {seq}: unreadable: {err.code}")
            break
        while e.epoch != walk.epoch and later and later[0].start_seq == walk.seq:
            ec = later.pop(0)
            try:
                walk.check_epoch_change(ec)
            except P2PWorldError as err:
                sig_ok = False
                errors.append(f"epoch {ec.epoch}: {err.code}")
            walk.epoch, walk.sequencer_key = ec.epoch, ec.sequencer_key
            walk.epochs.append(ec)
        try:
            e.submission().verify()
        except P2PWorldError:
            sig_ok = False
            errors.append(f"seq {seq}: writer signature does not verify")
        try:
            if e.seq != seq or e.hash != h:
                raise ValueError("row does not match its entry")
            walk.check_submission(e.submission())
            walk.apply(e)
        except (P2PWorldError, ValueError) as err:
            chain_ok = False
            errors.append(f"seq {seq}: {getattr(err, 'code', err)}")
            break
        out["entries"] += 1
    out["chain_ok"] = chain_ok
    out["signatures_ok"] = sig_ok
    out["head_hash"] = walk.head_hash.hex()
    out["state_hash"] = walk.state_hash().hex()
    out["head_seq"] = walk.seq
    out["epoch"] = walk.epoch
    return out
