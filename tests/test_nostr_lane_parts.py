"""Lane parts sized to the relays: NIP-11 limits (parsing, fetching), :func:`part_size_for`,
split and reassembly with any conforming part size, the frame bound checked before anything is
published, and 1 MiB (plus a :data:`MAX_LANE_FRAME` frame) through a real ``nostr-relay`` with
its default limits and through one configured (and published) with a larger limit.

``nostr-relay`` 1.14 serves NIP-11 (``Accept: application/nostr+json`` on its URL) but publishes
no ``limitation`` object; its content limit is ``max_event_size`` (default 4,096 characters,
checked by the ``is_not_too_large`` validator). So the larger-limit test runs the relay with
``max_event_size: 16384`` behind a tiny front (in this file) that answers the NIP-11 request
with that limit and passes websocket connections through to the relay.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings, strategies as st

from p2pworld.errors import DecodeError, NostrError
from p2pworld.io.nip11 import (
    MAX_DOCUMENT,
    MAX_LIMIT,
    RelayLimits,
    fetch_limits,
    http_url,
    parse_limits,
)
from p2pworld.io.nostr_lane import NostrLane, NostrPipe
from p2pworld.io.nostr_relay import RelayPool, open_relay_pool
from p2pworld.nostr import nip44
from p2pworld.nostr.event import Event, client_event
from p2pworld.nostr.keys import NostrKey
from p2pworld.nostr.lane_frames import (
    DEFAULT_MAX_CONTENT,
    DEFAULT_PART,
    EVENT_OVERHEAD,
    LANE_KIND,
    MAX_BUFFERED,
    MAX_LANE_FRAME,
    MAX_PARTS,
    MIN_PART,
    OPS,
    PART_CAP,
    REORDER_WINDOW,
    LaneFrame,
    Reassembler,
    part_size_for,
    split,
)

from .relay import free_port, real_relay

PIPE = bytes(range(16))
A = NostrKey(bytes(31) + b"\x21")
B = NostrKey(bytes(31) + b"\x22")
CONV = nip44.conversation_key(A.secret, B.public)
MIB = 1 << 20
SESSION_PART = 256 * 1024
"""What the session sends of a large message per pipe frame."""


def worst(k: int, *, op: str = max(OPS, key=len)) -> LaneFrame:
    """A part of ``k`` bytes with worst-case header values."""
    return LaneFrame(bytes([0xFF]) * 16, True, op, 2**40, MAX_PARTS - 1, MAX_PARTS, bytes(k))


def content_len(f: LaneFrame) -> int:
    """The real event content length: NIP-44 v2 encryption of the encoded part."""
    return len(nip44.encrypt(f.encode(), CONV, nonce=os.urandom(32)))


def message_len(content: str) -> int:
    """The real client message length of a lane event with this content (worst-case times)."""
    ev = Event.create(A, kind=LANE_KIND, content=content,
                      tags=[["p", B.public.hex()], ["expiration", str(99_999_999_999)]],
                      created_at=9_999_999_999, aux=bytes(32))
    return len(client_event(ev).encode())


# --- part_size_for ------------------------------------------------------------------------------

def test_the_default_part_size_and_the_bounds() -> None:
    assert part_size_for(DEFAULT_MAX_CONTENT) == DEFAULT_PART == 1849  # was a fixed 1,536
    assert part_size_for(10**9) == PART_CAP == 49078  # the NIP-44 plaintext limit
    assert MAX_PARTS * MIN_PART >= MAX_LANE_FRAME
    assert content_len(worst(DEFAULT_PART)) <= DEFAULT_MAX_CONTENT
    assert len(worst(PART_CAP).encode()) <= nip44.MAX_PLAINTEXT
    # The measured event overhead is below the allowance.
    assert message_len("") <= EVENT_OVERHEAD
    # Limits too small to carry a useful part are refused (typed).
    for content, message in ((600, None), (10, None), (4096, 900), (0, None)):
        with pytest.raises(NostrError) as e:
            part_size_for(content, message)
        assert e.value.code == "NOSTR_INVALID"


@settings(max_examples=150, deadline=None)
@given(content=st.integers(700, 120_000),
       message=st.one_of(st.none(), st.integers(1300, 120_000)))
def test_a_worst_case_part_of_the_size_fits_and_a_larger_one_does_not(
        content: int, message: int | None) -> None:
    try:
        k = part_size_for(content, message)
    except NostrError:
        # Only when even a MIN_PART part would not fit.
        c = content_len(worst(MIN_PART))
        assert c > content or (message is not None and c + EVENT_OVERHEAD > message)
        return
    assert MIN_PART <= k <= PART_CAP
    c = content_len(worst(k))
    assert c <= content
    if message is not None:
        assert message_len("x" * c) <= message
    if k < PART_CAP:  # not capped by NIP-44: one byte more breaks a limit
        bigger = worst(k + 1)
        c1 = content_len(bigger)
        assert c1 > content or (message is not None and c1 + EVENT_OVERHEAD > message)
    # Real parts (any header values below the worst case) are never larger.
    for f in split(PIPE, False, 1, bytes(3 * k + 1), part_size=k):
        assert content_len(f) <= content


def test_the_lane_takes_the_smallest_part_among_the_relays_a_frame_goes_to() -> None:
    pool = RelayPool(["ws://a.invalid", "ws://b.invalid", "ws://tiny.invalid"])
    pool.urls.append("ws://other-peers.invalid")  # a relay another peer listed (NIP-65)

    lane = NostrLane(pool, A, on_incoming=lambda pipe: None, relays_of=lambda pk: [])
    assert lane.targets(B.public) == ["ws://a.invalid", "ws://b.invalid", "ws://tiny.invalid"]
    assert lane.part_size(lane.targets(B.public)) == DEFAULT_PART  # nothing learned yet
    pool.limits["ws://a.invalid"] = RelayLimits(max_content_length=16384)
    pool.limits["ws://b.invalid"] = RelayLimits(max_content_length=65536)
    pool.limits["ws://tiny.invalid"] = RelayLimits(max_content_length=300)  # carries nothing
    pool.limits["ws://other-peers.invalid"] = RelayLimits(max_content_length=1000)
    targets = lane.targets(B.public)
    assert targets == ["ws://a.invalid", "ws://b.invalid"]
    assert lane.part_size(targets) == part_size_for(16384)
    pool.limits["ws://b.invalid"] = RelayLimits(max_content_length=65536,
                                                max_message_length=5000)
    assert lane.part_size(lane.targets(B.public)) == part_size_for(65536, 5000) < 5000
    pool.limits["ws://b.invalid"] = None  # no document: 4,096 characters
    assert lane.part_size(lane.targets(B.public)) == DEFAULT_PART


# --- split and reassembly -----------------------------------------------------------------------

part_sizes = st.sampled_from([MIN_PART, 300, DEFAULT_PART, 4000, part_size_for(16384), PART_CAP])


@settings(max_examples=150, deadline=None)
@given(frames=st.lists(st.integers(0, 120_000), min_size=1, max_size=6),
       size=part_sizes, seed=st.integers(0, 2**32), dups=st.integers(0, 40))
def test_reassembly_under_reordering_and_duplicates_across_frames(
        frames: list[int], size: int, seed: int, dups: int) -> None:
    rng = random.Random(seed)
    data = [rng.randbytes(n) for n in frames]
    parts = [p for n, f in enumerate(data, start=1)
             for p in split(PIPE, True, n, f, part_size=size)]
    # Parts cross the wire as the receiver decodes them.
    parts = [LaneFrame.decode(p.encode()) for p in parts]
    stream = parts + [rng.choice(parts) for _ in range(dups)]
    rng.shuffle(stream)
    r = Reassembler()
    out = [f for p in stream for f in r.feed(p, now=0)]
    assert out == data
    assert r.gap_since is None and r.next_n == len(data) + 1 and r.held == 0


def test_a_whole_max_frame_in_the_largest_and_the_smallest_parts() -> None:
    data = random.Random(1).randbytes(MAX_LANE_FRAME)
    for size in (PART_CAP, MIN_PART):
        parts = split(PIPE, False, 9, data, part_size=size)
        assert len(parts) == -(-MAX_LANE_FRAME // size) <= MAX_PARTS
        r = Reassembler(next_n=9)
        got = [f for p in reversed(parts) for f in r.feed(LaneFrame.decode(p.encode()), now=0)]
        assert got == [data]
    # The largest part still encrypts (NIP-44 plaintext at most 65,535 bytes).
    assert len(nip44.decrypt(nip44.encrypt(split(PIPE, False, 1, data, part_size=PART_CAP)[0]
                                           .encode(), CONV, nonce=bytes(32)), CONV)) <= 65535


def test_split_refuses_frames_over_the_bound_and_bad_part_sizes() -> None:
    with pytest.raises(NostrError) as e:
        split(PIPE, True, 1, bytes(MAX_LANE_FRAME + 1))
    assert e.value.code == "NOSTR_INVALID"
    assert len(split(PIPE, True, 1, bytes(MAX_LANE_FRAME))) == -(-MAX_LANE_FRAME // DEFAULT_PART)
    for bad in (MIN_PART - 1, PART_CAP + 1, 0):
        with pytest.raises(NostrError):
            split(PIPE, True, 1, b"x", part_size=bad)


def test_a_few_whole_max_frames_fit_out_of_order_and_the_byte_bound_holds() -> None:
    frame = bytes(MAX_LANE_FRAME)
    whole = MAX_BUFFERED // MAX_LANE_FRAME  # 8 frames of 512 KiB
    assert whole >= 4
    r = Reassembler()
    held = [p for n in range(2, whole + 1) for p in split(PIPE, True, n, frame,
                                                           part_size=PART_CAP)]
    for p in held:  # frames 2..8 while frame 1 is missing: 3.5 MiB held
        assert r.feed(p, now=0) == []
    assert r.held == (whole - 1) * MAX_LANE_FRAME and r.gap_since == 0
    out = [f for p in split(PIPE, True, 1, b"first") for f in r.feed(p, now=1)]
    assert out == [b"first"] + [frame] * (whole - 1) and r.held == 0
    # Now frame `whole+1` is missing and more than MAX_BUFFERED arrives behind it.
    r2 = Reassembler(next_n=1)
    with pytest.raises(DecodeError):
        for n in range(2, whole + 3):
            for p in split(PIPE, True, n, frame, part_size=PART_CAP):
                r2.feed(p, now=0)
    # Many tiny frames ahead are bounded by the reorder window, not memory.
    r3 = Reassembler()
    for n in range(2, 2 + 2 * REORDER_WINDOW):
        r3.feed(LaneFrame(PIPE, True, "data", n, 0, 1, b"x"), now=0)
    assert r3.held == REORDER_WINDOW - 1


def test_hostile_parts_are_decode_errors() -> None:
    ok = LaneFrame(PIPE, True, "data", 1, 0, 2, bytes(MIN_PART))
    assert LaneFrame.decode(ok.encode()) == ok
    for bad in (
            LaneFrame(PIPE, True, "data", 1, 0, MAX_PARTS + 1, bytes(MIN_PART)),  # too many
            LaneFrame(PIPE, True, "data", 1, 0, 2, bytes(MIN_PART - 1)),  # tiny non-last part
            LaneFrame(PIPE, True, "data", 1, 1, 2, bytes(PART_CAP + 1)),  # part too large
            LaneFrame(PIPE, True, "data", 2**40 + 1, 0, 1, b""),
    ):
        with pytest.raises(DecodeError):
            LaneFrame.decode(bad.encode())
    with pytest.raises(DecodeError):
        LaneFrame.decode("A" * (nip44.MAX_PLAINTEXT + 1))

    def feed_all(*fs: LaneFrame) -> None:
        r = Reassembler()
        for f in fs:
            r.feed(f, now=0)

    size = 1000
    with pytest.raises(DecodeError):  # parts before the last of unequal size
        feed_all(LaneFrame(PIPE, True, "data", 1, 0, 3, bytes(size)),
                 LaneFrame(PIPE, True, "data", 1, 1, 3, bytes(size + 1)))
    with pytest.raises(DecodeError):  # a last part larger than the others
        feed_all(LaneFrame(PIPE, True, "data", 1, 2, 3, bytes(size + 1)),
                 LaneFrame(PIPE, True, "data", 1, 0, 3, bytes(size)))
    with pytest.raises(DecodeError):  # a frame that would be larger than MAX_LANE_FRAME
        feed_all(LaneFrame(PIPE, True, "data", 1, 0, MAX_PARTS, bytes(PART_CAP)))
    with pytest.raises(DecodeError):  # the part count changes
        feed_all(LaneFrame(PIPE, True, "data", 1, 0, 3, bytes(size)),
                 LaneFrame(PIPE, True, "data", 1, 1, 4, bytes(size)))


# --- NIP-11 ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=20), kids,
                                                              max_size=4),
    max_leaves=20)
limit_values = st.one_of(json_values, st.integers(-5, 70_000), st.just(2**40))


@settings(max_examples=400, deadline=None)
@given(doc=st.one_of(
    json_values,
    st.fixed_dictionaries({"limitation": json_values}),
    st.fixed_dictionaries({"limitation": st.fixed_dictionaries(
        {}, optional={"max_content_length": limit_values,
                      "max_message_length": limit_values})})))
def test_hostile_nip11_documents_never_raise(doc: object) -> None:
    text = json.dumps(doc)
    got = parse_limits(text)
    assert got == parse_limits(text.encode())
    lim = doc.get("limitation") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or (lim is not None and not isinstance(lim, dict)):
        assert got is None
        return
    if got is None:  # only for a wrong type or an absurd value
        assert isinstance(lim, dict)
        vals = [lim.get(k) for k in ("max_content_length", "max_message_length")]
        assert any(v is not None and (isinstance(v, bool) or not isinstance(v, int)
                                      or not 1 <= v <= MAX_LIMIT) for v in vals)
        return
    for v in (got.max_content_length, got.max_message_length):
        assert v is None or (type(v) is int and 1 <= v <= MAX_LIMIT)
    if isinstance(lim, dict):
        assert got.max_content_length == lim.get("max_content_length")


@given(st.binary(max_size=300))
def test_nip11_garbage_bytes_never_raise(data: bytes) -> None:
    got = parse_limits(data)
    assert got is None or isinstance(got, RelayLimits)


def test_nip11_edge_cases() -> None:
    assert parse_limits(b"[" * 100_000) is None  # nesting deeper than the parser's recursion
    assert parse_limits('{"limitation": {"max_content_length": 1' + "0" * 5000 + "}}") is None
    assert parse_limits(b'{"limitation": {"max_content_length": true}}') is None
    assert parse_limits(b'{"limitation": {"max_content_length": 4096.0}}') is None
    assert parse_limits(b'{"limitation": {"max_content_length": 0}}') is None
    assert parse_limits(b'{"limitation": {"max_content_length": NaN}}') is None
    assert parse_limits(b'{"limitation": []}') is None
    assert parse_limits(b'{"limitation": null}') == RelayLimits()
    assert parse_limits(b"\xff\xfe{}") is None
    assert parse_limits(b" " * (MAX_DOCUMENT + 1)) is None
    assert parse_limits(b'{"limitation": {"max_message_length": 16384, "other": "x"}}') == \
        RelayLimits(max_message_length=16384)
    assert http_url("wss://relay.example/x") == "https://relay.example/x"
    assert http_url("http://relay.example") is None and http_url("ws://") is None


@asynccontextmanager
async def http_responder(answer: bytes | None) -> AsyncIterator[str]:
    """``ws://`` URL of a loopback server answering every request with ``answer`` (raw bytes;
    None: read the request and never answer)."""
    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            requests.append(head)
            if answer is None:
                await trio.sleep_forever()
            try:
                await stream.send_all(answer)
            except trio.BrokenResourceError:
                pass  # the client stopped reading (an answer too large)

    requests: list[bytes] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as n:
        n.start_soon(trio.serve_listeners, handler, listeners)
        yield f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        n.cancel_scope.cancel()


def response(status: int, body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
            f"{extra}\r\n").encode() + body


async def test_fetch_limits_is_bounded_and_never_raises() -> None:
    doc = json.dumps({"limitation": {"max_content_length": 16384,
                                     "max_message_length": 131072}}).encode()
    with trio.fail_after(60):
        async with http_responder(response(200, doc)) as url:
            assert await fetch_limits(url) == RelayLimits(16384, 131072)
        for bad in (response(404, doc), response(200, b"not json"),
                    response(301, b"", "location: http://127.0.0.1:1/\r\n"),
                    response(200, b"{" * (MAX_DOCUMENT + 10)), b"garbage\r\n\r\n", b""):
            async with http_responder(bad) as url:
                assert await fetch_limits(url) is None
        async with http_responder(None) as url:  # never answers: the timeout ends it
            assert await fetch_limits(url, timeout=0.5) is None
        port = free_port()  # nothing listens there any more: refused
        assert await fetch_limits(f"ws://127.0.0.1:{port}") is None
        assert await fetch_limits("wss://127.0.0.1:1/") is None  # no TLS helper yet
        assert await fetch_limits("ws://127.0.0.1:99999/") is None
        assert await fetch_limits("not a url") is None


async def test_nostr_relay_serves_nip11_without_a_limitation(tmp_path: Path) -> None:
    with real_relay(tmp_path / "relay") as url, trio.fail_after(30):
        assert await fetch_limits(url) == RelayLimits()  # a document, no limits in it
        async with open_relay_pool([url]) as pool:
            assert await pool.limits_known(url) == RelayLimits()
            assert pool.health[url].state == "connected"


# --- through a real relay -------------------------------------------------------------------------

@asynccontextmanager
async def two_lanes(url: str) -> AsyncIterator[tuple[NostrLane, NostrLane, NostrPipe, NostrPipe]]:
    """Lanes for A and B on their own pools (as ``NostrService`` builds them), and the pipe A
    opened to B with B's end of it."""
    accepted, incoming = trio.open_memory_channel[NostrPipe](1)

    def on_incoming(pipe: NostrPipe) -> None:
        accepted.send_nowait(pipe)

    def refuse(pipe: NostrPipe) -> None:
        raise AssertionError("A accepts no pipes")

    async with open_relay_pool([url], key=A) as pa, open_relay_pool([url], key=B) as pb, \
            trio.open_nursery() as n:
        la = NostrLane(pa, A, on_incoming=refuse)
        lb = NostrLane(pb, B, on_incoming=on_incoming)
        await n.start(la.run)
        await n.start(lb.run)
        await pa.limits_known(url)
        await pb.limits_known(url)
        # Both connected (and subscribed) before the first publish: on a loaded machine a
        # first connect that fails waits out a backoff longer than a publish's timeout.
        while pa.health[url].state != "connected" or pb.health[url].state != "connected":
            await trio.sleep(0.02)
        # The relay's first write (its store being set up) can take longer than a lane
        # publish waits on a loaded machine: one throwaway event first, with a generous bound.
        warm = Event.create(A, kind=1, content="warm-up", tags=[], created_at=int(time.time()),
                            aux=bytes(32))
        got = await pa.publish(warm, timeout=60)
        assert any(o is not None and o.ok for o in got.values()), (got, pa.health[url])
        try:
            pipe = await la.open_pipe(B.public)
        except Exception as e:
            raise AssertionError(f"lane open failed: {e!r}; relay health {pa.health[url]}"
                                 ) from e
        theirs = await incoming.receive()
        yield la, lb, pipe, theirs
        n.cancel_scope.cancel()


async def carry(la: NostrLane, pipe: NostrPipe, theirs: NostrPipe, frames: list[bytes]
                ) -> tuple[int, float]:
    """Send ``frames`` on ``pipe``; check ``theirs`` gets them intact and in order. Returns
    (events published, seconds until the last frame arrived)."""
    before = la.stats["frames_out"]
    t0 = time.perf_counter()
    async with trio.open_nursery() as n:
        async def send() -> None:
            for f in frames:
                await pipe.send_message(f)
        n.start_soon(send)
        for f in frames:
            assert await theirs.get_message() == f
    return la.stats["frames_out"] - before, time.perf_counter() - t0


def report(what: str, events: int, seconds: float, nbytes: int) -> None:
    mib = nbytes / MIB
    print(f"\n[lane parts] {what}: {nbytes} bytes, {events} events "
          f"({events / mib:.0f} per MiB), {seconds:.2f} s ({seconds / mib:.2f} s per MiB)")


async def test_one_mib_and_a_max_frame_through_nostr_relay_defaults(tmp_path: Path) -> None:
    rng = random.Random(7)
    payload = rng.randbytes(MIB)
    session_frames = [payload[i:i + SESSION_PART] for i in range(0, MIB, SESSION_PART)]
    assert len(session_frames) == 4
    big = rng.randbytes(MAX_LANE_FRAME)
    with real_relay(tmp_path / "relay") as url, trio.fail_after(600):
        async with two_lanes(url) as (la, lb, pipe, theirs):
            assert la.part_size(la.targets(B.public)) == DEFAULT_PART
            events, secs = await carry(la, pipe, theirs, session_frames)
            assert events == 4 * -(-SESSION_PART // DEFAULT_PART)
            report("nostr-relay defaults, 4 x 256 KiB", events, secs, MIB)
            events, secs = await carry(la, pipe, theirs, [big])
            assert events == -(-MAX_LANE_FRAME // DEFAULT_PART)
            report("nostr-relay defaults, one MAX_LANE_FRAME", events, secs, MAX_LANE_FRAME)
            assert la.stats["refused"] == 0 and lb.stats["bad_frames"] == 0

            # A frame over the bound: a typed error before anything is published, and the
            # pipe goes on (no frame number was used up).
            published = la.stats["frames_out"], la.pool.health[url].published_ok
            with pytest.raises(NostrError) as e:
                await pipe.send_message(bytes(MAX_LANE_FRAME + 1))
            assert e.value.code == "NOSTR_INVALID"
            assert (la.stats["frames_out"], la.pool.health[url].published_ok) == published
            assert not pipe.closed
            await carry(la, pipe, theirs, [b"still here"])


@contextmanager
def relay_with_limit(tmp: Path, max_content: int) -> Iterator[int]:
    """A ``nostr-relay`` with ``max_event_size: max_content`` on a free loopback port (its
    port); stopped by its process group."""
    with real_relay(tmp, extra=f"max_event_size: {max_content}") as url:
        yield int(url.rsplit(":", 1)[1])


@asynccontextmanager
async def nip11_front(relay_port: int, doc: dict[str, object]) -> AsyncIterator[str]:
    """``ws://`` URL of a loopback front for the relay: a NIP-11 request (no websocket
    upgrade) gets ``doc``; everything else is passed through to the relay."""
    body = json.dumps(doc).encode()

    async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        with trio.move_on_after(1):
            await dst.aclose()

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk or len(head) > 16384:
                    return
                head += chunk
            lower = head.lower()
            if b"upgrade: websocket" not in lower and b"application/nostr+json" in lower:
                nip11_served.append(head)
                await stream.send_all(response(200, body, "content-type: application/nostr+json"
                                               "\r\n"))
                return
            relay = await trio.open_tcp_stream("127.0.0.1", relay_port)
            async with relay:
                await relay.send_all(head)
                async with trio.open_nursery() as n:
                    n.start_soon(pump, stream, relay)
                    n.start_soon(pump, relay, stream)

    nip11_served: list[bytes] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as n:
        n.start_soon(trio.serve_listeners, handler, listeners)
        yield f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        assert nip11_served, "nobody asked for the NIP-11 document"
        n.cancel_scope.cancel()


async def test_a_relay_publishing_a_larger_limit_gets_fewer_larger_parts(tmp_path: Path) -> None:
    limit = 16384
    payload = random.Random(8).randbytes(MIB)
    frames = [payload[i:i + SESSION_PART] for i in range(0, MIB, SESSION_PART)]
    with relay_with_limit(tmp_path / "relay", limit) as port, trio.fail_after(300):
        async with nip11_front(port, {"name": "big", "limitation": {
                "max_content_length": limit}}) as url, two_lanes(url) as (la, lb, pipe, theirs):
            assert la.pool.limits[url] == RelayLimits(max_content_length=limit)
            size = la.part_size(la.targets(B.public))
            assert size == part_size_for(limit) > 4 * DEFAULT_PART
            events, secs = await carry(la, pipe, theirs, frames)
            assert events == 4 * -(-SESSION_PART // size) < 4 * -(-SESSION_PART // DEFAULT_PART)
            report(f"max_content_length {limit} (NIP-11), 4 x 256 KiB", events, secs, MIB)
            assert la.stats["refused"] == 0 and lb.stats["bad_frames"] == 0
