"""The Nostr lane's book (:mod:`p2pworld.nostr.lane_book`): what the lane decides, pure.

Incoming lane events (accepted opens, frames fed in order, closes, hostile events), the relays
a frame goes to, the gap sweep and the conversation-key cache; the trio shell around it is
tested against real relays in ``tests/test_nostr_lane.py`` and ``tests/test_nostr_lane_parts.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld.errors import NostrError
from p2pworld.nostr import lane_book, nip44
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey
from p2pworld.nostr.lane_book import (
    Accept,
    End,
    Feed,
    LaneBook,
    check_frame,
    lane_targets,
    part_size_of,
)
from p2pworld.nostr.lane_frames import (
    DEFAULT_MAX_CONTENT,
    GAP_TIMEOUT_S,
    LANE_KIND,
    MAX_INCOMING,
    MAX_LANE_FRAME,
    OPEN_MAX_AGE_S,
    LaneFrame,
    part_size_for,
    split,
)
from p2pworld.nostr.limits import RelayLimits
from p2pworld.nostr.pool import Ok

A, B = NostrKey(bytes(31) + b"\x01"), NostrKey(bytes(31) + b"\x02")
PIPE = bytes(range(16))
NOW = 1_000_000.0


def lane_event(f: LaneFrame, *, sender: NostrKey = A, to: NostrKey = B,
               at: float = NOW) -> Event:
    conv = nip44.conversation_key(sender.secret, to.public)
    return Event.create(sender, kind=LANE_KIND, tags=[["p", to.public.hex()]],
                        created_at=int(at), aux=bytes(32),
                        content=nip44.encrypt(f.encode(), conv, nonce=bytes(32)))


def test_a_fresh_open_is_accepted_and_frames_come_out_in_order() -> None:
    book = LaneBook(B.secret)
    key = (A.public, PIPE, False)
    assert book.read(lane_event(LaneFrame(PIPE, True, "open", 0)), now=NOW) == Accept(key)
    assert book.stats["pipes_accepted"] == 1 and key not in book.rx  # the shell opens it
    book.opened(key)
    parts = split(PIPE, True, 1, b"x" * 5000, part_size=2000)
    got = [book.read(lane_event(p), now=NOW) for p in reversed(parts)]
    assert got[:-1] == [Feed(key, [])] * (len(parts) - 1)
    assert got[-1] == Feed(key, [b"x" * 5000])
    assert book.read(lane_event(LaneFrame(PIPE, True, "close", 2)), now=NOW) == End(key)
    book.closed(key)
    assert book.read(lane_event(parts[0]), now=NOW) is None  # the pipe is over
    assert book.stats["frames_in"] == 1 + len(parts) + 2 and book.stats["bad_frames"] == 0


def test_opens_that_are_stale_not_from_the_opener_or_over_the_limit_are_not_accepted() -> None:
    book = LaneBook(B.secret)
    stale = lane_event(LaneFrame(PIPE, True, "open", 0), at=NOW - OPEN_MAX_AGE_S - 1)
    assert book.read(stale, now=NOW) is None
    assert book.read(lane_event(LaneFrame(PIPE, False, "open", 0)), now=NOW) is None
    assert book.read(lane_event(LaneFrame(PIPE, True, "data", 1)), now=NOW) is None
    for i in range(MAX_INCOMING):
        book.opened((A.public, i.to_bytes(16, "big"), False))
    book.opened((A.public, b"o" * 16, True))  # ours: not counted against the limit
    assert book.read(lane_event(LaneFrame(PIPE, True, "open", 0)), now=NOW) is None
    assert book.stats["refused_opens"] == 1 and book.stats["pipes_accepted"] == 0


def test_an_open_for_a_pipe_already_open_changes_nothing() -> None:
    book = LaneBook(B.secret)
    book.opened((A.public, PIPE, False))
    assert book.read(lane_event(LaneFrame(PIPE, True, "open", 0)), now=NOW) is None


def test_our_own_pipe_is_the_one_the_peer_did_not_open() -> None:
    book = LaneBook(B.secret)
    ours = (A.public, PIPE, True)
    book.opened(ours)
    answer = LaneFrame(PIPE, False, "data", 1, data=b"hi")
    assert book.read(lane_event(answer), now=NOW) == Feed(ours, [b"hi"])


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=200).map(lambda b: b.hex())))
def test_hostile_content_is_counted_as_bad_never_raised(content: str) -> None:
    book = LaneBook(B.secret)
    ev = Event.create(A, kind=LANE_KIND, tags=[], created_at=int(NOW), aux=bytes(32),
                      content=content)
    assert book.read(ev, now=NOW) is None
    assert book.stats["bad_frames"] == 1 and book.stats["frames_in"] == 0


def test_a_peer_that_breaks_its_framing_ends_the_pipe() -> None:
    book = LaneBook(B.secret)
    key = (A.public, PIPE, False)
    book.opened(key)
    first = LaneFrame(PIPE, True, "data", 1, part=0, parts=3, data=bytes(300))
    assert book.read(lane_event(first), now=NOW) == Feed(key, [])
    other_count = LaneFrame(PIPE, True, "data", 1, part=1, parts=2, data=bytes(300))
    assert book.read(lane_event(other_count), now=NOW) == End(key)
    assert book.stats["bad_frames"] == 1


def test_pipes_whose_gap_stays_open_are_overdue_once_counted() -> None:
    book = LaneBook(B.secret)
    key, fine = (A.public, PIPE, False), (A.public, b"f" * 16, True)
    book.opened(key)
    book.opened(fine)
    assert book.read(lane_event(LaneFrame(PIPE, True, "data", 2)), now=NOW) == Feed(key, [])
    assert book.overdue(NOW + GAP_TIMEOUT_S) == []
    assert book.overdue(NOW + GAP_TIMEOUT_S + 0.1) == [key]
    assert book.stats["gap_closed"] == 1


def test_the_conversation_key_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lane_book, "MAX_PEER_KEYS", 2)
    book = LaneBook(A.secret)
    peers = [NostrKey(bytes(31) + bytes([i])).public for i in range(3, 7)]
    for p in peers:
        assert book.conversation_key(p) == nip44.conversation_key(A.secret, p)
        assert len(book._conv) <= 2


def test_a_frame_counts_as_taken_when_some_relay_has_it() -> None:
    book = LaneBook(A.secret)
    assert book.answered({"ws://a": None, "ws://b": Ok(False, "duplicate: x", "duplicate")})
    assert book.answered({"ws://a": Ok(True, "", "")})
    assert not book.answered({"ws://a": Ok(False, "blocked: no", "blocked"), "ws://b": None})
    assert not book.answered({})
    assert book.stats["refused"] == 2


def _targets_as_the_shell_chose(urls: list[str], wanted: set[str],
                                limits: dict[str, RelayLimits | None]) -> list[str]:
    out = []
    for url in urls:
        if url in wanted:
            lim = limits.get(url)
            try:
                if lim is None:
                    part_size_for(DEFAULT_MAX_CONTENT)
                else:
                    part_size_for(lim.max_content_length or DEFAULT_MAX_CONTENT,
                                  lim.max_message_length)
            except NostrError:
                continue
            out.append(url)
    return out


relay_limits = st.one_of(st.none(), st.builds(
    RelayLimits, st.one_of(st.none(), st.integers(1, 100_000)),
    st.one_of(st.none(), st.integers(1, 100_000))))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([f"ws://r{i}" for i in range(6)]), unique=True),
       st.sets(st.sampled_from([f"ws://r{i}" for i in range(8)])),
       st.dictionaries(st.sampled_from([f"ws://r{i}" for i in range(6)]), relay_limits))
def test_targets_are_the_wanted_relays_that_can_carry_a_part(
        urls: list[str], wanted: set[str], limits: dict[str, RelayLimits | None]) -> None:
    got = lane_targets(urls, wanted, limits)
    assert got == _targets_as_the_shell_chose(urls, wanted, limits)
    for url in got:
        assert part_size_of(limits.get(url)) >= 1


def test_part_size_of_published_limits() -> None:
    assert part_size_of(None) == part_size_for(DEFAULT_MAX_CONTENT)
    assert part_size_of(RelayLimits()) == part_size_for(DEFAULT_MAX_CONTENT)
    assert part_size_of(RelayLimits(16384, 5000)) == part_size_for(16384, 5000)
    with pytest.raises(NostrError):
        part_size_of(RelayLimits(max_content_length=300))


def test_a_frame_over_the_lane_limit_is_refused_before_anything_is_published() -> None:
    check_frame(bytes(MAX_LANE_FRAME))
    with pytest.raises(NostrError, match="frame too large for the Nostr lane"):
        check_frame(bytes(MAX_LANE_FRAME + 1))
