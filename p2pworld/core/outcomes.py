"""What a caller gets back (pure): a publish's answer, and the one error that leaves a node.

* :func:`publish_outcome`: a publish waits for the node core's answer (a result, or a typed
  refusal); no answer within its timeout, or the node stopped first, is a
  :class:`~p2pworld.errors.PublishTimeout` that says to resubmit with the same key (the
  outcome is unknown: it may yet be sequenced, and the key makes a retry safe).
* :func:`leaving_error`: what leaves ``open_node`` when its tasks end with a group of
  errors: the application's own exception unchanged; else the node's one typed error (the
  failure that ended it) when every other leaf is typed or a cancellation; else the group.

Example:
    >>> from p2pworld.errors import StoreError
    >>> publish_outcome(None, closed=False, timeout=2.0, key=b"k")
    Traceback (most recent call last):
    ...
    p2pworld.errors.PublishTimeout: no answer within 2.0 s; resubmit with the same key
    >>> err = StoreError("disk")
    >>> leaving_error(BaseExceptionGroup("x", [err, KeyboardInterrupt()]), [], ()) is None
    True
    >>> leaving_error(BaseExceptionGroup("x", [err]), [], ()) is err
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pworld.errors import P2PWorldError, PublishTimeout

if TYPE_CHECKING:
    from p2pworld.channel.hub import PublishResult


def publish_outcome(out: PublishResult | P2PWorldError | None, *, closed: bool,
                    timeout: float, key: bytes) -> PublishResult:
    """The publish's result; its refusal, or an unknown outcome, raised typed."""
    if out is None and closed:
        raise PublishTimeout("the node stopped before an answer came; resubmit with the "
                             "same key", key=key.hex(), node_closed=True)
    if out is None:
        raise PublishTimeout(f"no answer within {timeout} s; resubmit with the same key",
                             key=key.hex())
    if isinstance(out, P2PWorldError):
        raise out
    return out


def leaves(e: BaseException) -> list[BaseException]:
    """The exceptions at the leaves of a (nested) exception group, in order."""
    if isinstance(e, BaseExceptionGroup):
        return [x for sub in e.exceptions for x in leaves(sub)]
    return [e]


def leaving_error(group: BaseExceptionGroup[BaseException], caller: list[BaseException],
                  benign: tuple[type[BaseException], ...]) -> BaseException | None:
    """What leaves instead of ``group``: the application's own exception (``caller``: it,
    or nothing) if it is among the leaves; else the first typed error when every leaf is
    typed or ``benign`` (a cancellation); None: the group itself leaves."""
    found = leaves(group)
    mine = [x for x in found if any(x is c for c in caller)]
    if mine:
        return mine[0]
    typed = [x for x in found if isinstance(x, P2PWorldError)]
    if typed and all(isinstance(x, (P2PWorldError, *benign)) for x in found):
        return typed[0]
    return None


__all__ = ["leaves", "leaving_error", "publish_outcome"]
