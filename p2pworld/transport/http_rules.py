"""HTTP bodies read in chunks, bounded (pure): the limit the h11 client
(:func:`p2pworld.io.http.http_exchange`) enforces on every answer it reads.

Example:
    >>> body = BoundedBody(8)
    >>> body.add(b"1234"); body.add(b"5678"); body.data
    b'12345678'
    >>> try:
    ...     body.add(b"9")
    ... except P2PWorldError as e:
    ...     e.message
    'HTTP answer too large'
"""

from __future__ import annotations

from p2pworld.errors import P2PWorldError


class BoundedBody:
    """The body of one HTTP answer, at most ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = b""

    def add(self, chunk: bytes) -> None:
        """Append one chunk of the body.

        Raises:
            P2PWorldError: the body grew past ``limit`` (the answer is refused).
        """
        self.data += chunk
        if len(self.data) > self.limit:
            raise P2PWorldError("HTTP answer too large")


__all__ = ["BoundedBody"]
