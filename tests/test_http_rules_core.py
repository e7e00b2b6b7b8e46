"""The HTTP body bound (p2pworld.transport.http_rules) the h11 client enforces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from p2pworld.errors import P2PWorldError
from p2pworld.transport.http_rules import BoundedBody


def test_a_body_at_its_limit_is_taken() -> None:
    body = BoundedBody(4)
    body.add(b"ab")
    body.add(b"cd")
    assert body.data == b"abcd"
    with pytest.raises(P2PWorldError, match="HTTP answer too large"):
        body.add(b"e")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(0, 400))
def test_property_a_body_is_refused_exactly_when_it_grows_past_its_limit(
        chunks: list[bytes], limit: int) -> None:
    body, total = BoundedBody(limit), 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            with pytest.raises(P2PWorldError, match="HTTP answer too large"):
                body.add(chunk)
            return
        body.add(chunk)
    assert body.data == b"".join(chunks)
