"""Whether a relayed world record is admitted: its author's token (pure).

A world record carries its author's token; a receiver admits the record if the author holds a
valid token granting ``world:join`` now. Records form a chain per author, so refusing one
holds back every later one: a record made while the author's token was about to lapse must
not stay refused once the author has refreshed. The world core (:mod:`p2pworld.world.core`)
calls both functions for every push.

Example:
    >>> from p2pworld.auth.book import AuthConfig, TokenBook
    >>> book = TokenBook(AuthConfig(keys={}))
    >>> learn_latest_tokens(book, lambda k, m, s: True, (b"not a record",), now_ms=0)
    >>> book.tokens
    {}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pworld.errors import P2PWorldError
from p2pworld.world.records import DocUpdate

if TYPE_CHECKING:
    from p2pworld.auth.book import TokenBook
    from p2pworld.world.records import Verifier


def authorize_record(auth: TokenBook | None, verifier: Verifier, u: DocUpdate,
                     now_ms: int) -> None:
    """Raise unless ``u``'s author holds a valid token granting ``world:join`` now (None: an
    open world). The token ``u`` carries is learned first (only from a record its node
    signed); if that token has lapsed since the record was made, the author's latest token
    decides. A record refused here leaves a gap before the author's later records: the
    world core does not graft it at once (the refused record would come straight back, a
    ping-pong at network speed); the digest pull repairs it later."""
    if auth is None:
        return
    if u.token:
        u.verify(verifier)
        held = auth.tokens.get(u.author)
        if held is None or held[0] != u.token:
            try:
                auth.learn(u.token, now=now_ms / 1000, node_key=u.author)
            except P2PWorldError:
                if held is None:
                    raise
    auth.check(u.author, "world:join", now=now_ms / 1000)


def learn_latest_tokens(auth: TokenBook, verifier: Verifier, updates: tuple[bytes, ...],
                        now_ms: int) -> None:
    """Before a push's records are checked in order, learn each author's latest token in it
    (from a record that author signed), so an earlier record is judged by the token its
    author holds now. Before, a record made as its token lapsed was refused for ever, and
    every later record of that author with it: the document never converged again."""
    seen: set[bytes] = set()
    for raw in reversed(updates):
        try:
            u = DocUpdate.decode(raw)
            if u.author in seen or not u.token:
                continue
            seen.add(u.author)
            held = auth.tokens.get(u.author)
            if held is None or held[0] != u.token:
                u.verify(verifier)
                auth.learn(u.token, now=now_ms / 1000, node_key=u.author)
        except P2PWorldError:
            continue
