"""Canonical CBOR: the one encoding of every wire frame, disk record, hash and signature.

Rules (see ``docs/protocol.md``):

* Values are limited to ``None``, ``bool``, ``int`` (64-bit signed range), ``bytes``, ``str``,
  ``list`` and ``dict`` with ``str`` keys. No floats (their encodings are not unique enough to
  sign), no tags, no indefinite lengths.
* Maps are encoded in RFC 8949 §4.2.1 canonical order (cbor2 ``canonical=True``).
* A *frame* is one version byte (:data:`FORMAT_VERSION`) followed by one CBOR item.
* Anything that is signed or hashed is prefixed with a *domain tag*: the ASCII tag, a NUL,
  then the canonical CBOR bytes. A signature over one kind of structure can never be replayed
  as another kind.
* Decoding is bounded (size, nesting depth, collection lengths) and *strict*: the input must be
  exactly the canonical encoding of the value it decodes to, so two different byte strings
  never decode to the same signed value.

Example:
    >>> frame = encode_frame({"t": "ping", "n": 1})
    >>> decode_frame(frame)
    {'n': 1, 't': 'ping'}
"""

from __future__ import annotations

from typing import Any

import cbor2

from p2pworld.errors import DecodeError, LocalProtocolError, UnsupportedVersion

FORMAT_VERSION = 1
"""Version byte that starts every frame and every disk record."""
_VERSION_BYTE = bytes([FORMAT_VERSION])

MAX_FRAME_BYTES = 1 << 20
MAX_DEPTH = 16
MAX_ITEMS = 4096
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1

Value = Any
"""A value of the canonical data model (see module docs)."""


_LEAVES = frozenset({type(None), bool, bytes, str})


def _check(value: Value, depth: int, *, where: str, max_items: int = MAX_ITEMS) -> None:
    """Raise unless ``value`` is in the data model: nested at most :data:`MAX_DEPTH` deep,
    integers in 64 bits, arrays and maps of at most ``max_items``, text map keys. (Leaves of
    the exact plain types are checked inline, without a call each: decoded values are made of
    them, so the walk costs about one call per container.)"""
    if depth > MAX_DEPTH:
        raise _err(where, "nesting too deep", limit=MAX_DEPTH)
    t = type(value)
    if t in _LEAVES:
        return
    if t is list or t is dict:
        if len(value) > max_items:
            raise _err(where, "array too long" if t is list else "map too large",
                       limit=max_items)
        inner = depth + 1
        if t is dict:
            for key in value:
                # (Checked before the values, as sorted map keys come first in the bytes.)
                if type(key) is not str and not isinstance(key, str):
                    raise _err(where, "map key is not a text string")
        for item in value.values() if t is dict else value:
            it = type(item)
            if inner <= MAX_DEPTH and (it in _LEAVES or (
                    it is int and _INT_MIN <= item <= _INT_MAX)):
                continue
            _check(item, inner, where=where, max_items=max_items)
        return
    if isinstance(value, (bool, bytes, str)):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise _err(where, "integer out of range")
        return
    if isinstance(value, list):
        if len(value) > max_items:
            raise _err(where, "array too long", limit=max_items)
        for item in value:
            _check(item, depth + 1, where=where, max_items=max_items)
        return
    if isinstance(value, dict):
        if len(value) > max_items:
            raise _err(where, "map too large", limit=max_items)
        for key, item in value.items():
            if not isinstance(key, str):
                raise _err(where, "map key is not a text string")
            _check(item, depth + 1, where=where, max_items=max_items)
        return
    raise _err(where, f"type {type(value).__name__} is not in the canonical data model")


def _err(where: str, message: str, **details: Any) -> Exception:
    if where == "encode":
        return LocalProtocolError(f"cannot encode: {message}", **details)
    return DecodeError(message, **details)


def encode(value: Value) -> bytes:
    """Encode ``value`` as canonical CBOR (no version byte).

    Values built by p2pworld itself are in the data model by construction, so the hot path
    does not walk them; :func:`validate` checks a value built from anything else (and the
    test suite runs with :data:`STRICT` on, so a wrong value fails there).

    Raises:
        LocalProtocolError: with :data:`STRICT`, ``value`` is outside the data model.
    """
    if STRICT:
        _check(value, 0, where="encode")
    return _canonical_dumps(value)


# --- canonical CBOR, fast -----------------------------------------------------------------
# cbor2's ``canonical=True`` costs about three times its plain encoding. For values made only
# of the exact plain types of the data model, the two differ in one thing: the order of map
# keys. So: put every map's keys in canonical order (the order of each key set is computed
# once and remembered), then encode plainly; the bytes are the same. Anything else (floats,
# tags, tuples, subclasses, non-text keys) takes cbor2's canonical encoder, as before.

_PLAIN = frozenset({type(None), bool, int, bytes, str})
_KEY_ORDER: dict[tuple[Any, ...], tuple[str, ...]] = {}
"""A map's keys, as they come -> the same keys in canonical order (bounded, see below)."""
_KEY_ORDER_LIMIT = 4096


_NotPlain = TypeError
"""Raised (as ``TypeError("not plain")``) when a value holds something the fast encoder
leaves to cbor2's canonical one; any TypeError on the way (an unhashable key set) means the
same: the canonical encoder handles it, or raises as it always did."""


def _canonical_key(key: str) -> tuple[int, bytes]:
    # RFC 8949 4.2.1 (bytewise order of the encoded keys) is, for text keys, the order of
    # their UTF-8 lengths and then of their bytes (the header encodes the length).
    b = key.encode()
    return len(b), b


def _key_order(keys: tuple[Any, ...]) -> tuple[str, ...]:
    for k in keys:
        if type(k) is not str:
            raise _NotPlain("not plain")
    order = tuple(sorted(keys, key=_canonical_key))
    if len(_KEY_ORDER) >= _KEY_ORDER_LIMIT:
        _KEY_ORDER.clear()  # start over: the protocol's maps have a few hundred key sets
    _KEY_ORDER[keys] = order
    return order


def _sorted_maps(value: Value) -> Value:
    """``value`` with every map rebuilt in canonical key order; raises :class:`_NotPlain`
    for a value cbor2's canonical encoder must handle."""
    t = type(value)
    if t is dict:
        keys = tuple(value)
        order = _KEY_ORDER.get(keys) or _key_order(keys)
        out = {}
        for k in order:
            x = value[k]
            out[k] = x if type(x) in _PLAIN else _sorted_maps(x)
        return out
    if t is list:
        return [x if type(x) in _PLAIN else _sorted_maps(x) for x in value]
    if t in _PLAIN:
        return value
    raise _NotPlain("not plain")


def _in_canonical_order(value: Value) -> bool:
    """Whether every map of ``value`` already has its keys in canonical order (a decoded
    value keeps the order of its bytes); raises :class:`_NotPlain` as :func:`_sorted_maps`."""
    t = type(value)
    if t is dict:
        keys = tuple(value)
        if (_KEY_ORDER.get(keys) or _key_order(keys)) != keys:
            return False
        for x in value.values():
            if type(x) not in _PLAIN and not _in_canonical_order(x):
                return False
        return True
    if t is list:
        for x in value:
            if type(x) not in _PLAIN and not _in_canonical_order(x):
                return False
        return True
    if t in _PLAIN:
        return True
    raise _NotPlain("not plain")


def _canonical_dumps(value: Value) -> bytes:
    """``cbor2.dumps(value, canonical=True)``, the same bytes, faster.

    Example:
        >>> _canonical_dumps({"bb": [1, {"b": b"", "a": None}], "c": True}).hex()
        'a26163f56262628201a26161f6616240'
    """
    try:
        return cbor2.dumps(_sorted_maps(value))
    except (_NotPlain, RecursionError):
        return cbor2.dumps(value, canonical=True)


def _is_canonical(value: Value, data: bytes) -> bool:
    """Whether ``data`` is ``cbor2.dumps(value, canonical=True)``, for ``value`` decoded from
    ``data``: its maps in canonical order and its plain encoding ``data`` (the same answer
    as encoding it canonically and comparing, without rebuilding its maps)."""
    try:
        return _in_canonical_order(value) and cbor2.dumps(value) == data
    except (_NotPlain, RecursionError):
        return cbor2.dumps(value, canonical=True) == data


STRICT = False
"""Check every encoded value against the data model (on in the project's tests)."""


def validate(value: Value) -> None:
    """Raise :class:`LocalProtocolError` unless ``value`` is in the canonical data model."""
    _check(value, 0, where="encode")


def decode(data: bytes, *, max_bytes: int = MAX_FRAME_BYTES, max_items: int = MAX_ITEMS,
           walk: bool = True) -> Value:
    """Decode strict canonical CBOR produced by :func:`encode`.

    ``walk=False`` skips the walk that checks the decoded value against the data model; only
    for callers that check the type and bounds of every field they read and ignore the rest
    (the typed decoders of the hot messages and of entries). The bytes must still be the
    canonical encoding of the value.

    Raises:
        DecodeError: the bytes are too long, malformed, non-canonical, nested too deeply, or
            hold a type outside the data model.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("input is not bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise DecodeError("input too large", limit=max_bytes, size=len(data))
    try:
        value = cbor2.loads(
            data,
            max_depth=MAX_DEPTH + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise DecodeError(f"malformed CBOR: {e}") from None
    if walk:
        _check(value, 0, where="decode", max_items=max_items)
    if not _is_canonical(value, data):
        raise DecodeError("not the canonical encoding of its value")
    return value


def encode_frame(value: Value) -> bytes:
    """Version byte + canonical CBOR."""
    return _VERSION_BYTE + encode(value)


def decode_frame(data: bytes, *, max_bytes: int = MAX_FRAME_BYTES,
                 max_items: int = MAX_ITEMS, walk: bool = True) -> Value:
    """Inverse of :func:`encode_frame`; refuses unknown versions with :class:`UnsupportedVersion`."""
    if not data:
        raise DecodeError("empty frame")
    if data[0] != FORMAT_VERSION:
        raise UnsupportedVersion(f"frame version {data[0]} not supported", version=data[0])
    return decode(data[1:], max_bytes=max_bytes, max_items=max_items, walk=walk)


def check_decoded(value: Value, *, max_items: int = MAX_ITEMS) -> None:
    """The data-model walk :func:`decode` skips with ``walk=False``. Raises
    :class:`DecodeError`."""
    _check(value, 0, where="decode", max_items=max_items)


def tagged(domain: str, value: Value) -> bytes:
    """Domain-separated bytes to sign or hash: ``domain || 0x00 || canonical CBOR(value)``."""
    if "\x00" in domain or not domain.isascii():
        raise LocalProtocolError("domain tag must be ASCII without NUL")
    return domain.encode() + b"\x00" + encode(value)


# --- typed field access for decoders ------------------------------------------------------


def need_map(value: Value, what: str) -> dict[str, Value]:
    if not isinstance(value, dict):
        raise DecodeError(f"{what}: expected a map")
    return value


def record_map(raw: bytes, what: str, *, max_bytes: int, fields: set[str]
               ) -> dict[str, Value]:
    """Decode a signed record received from anyone: at most ``max_bytes``, a map with exactly
    ``fields`` (no more, no fewer). Raises :class:`DecodeError`."""
    if len(raw) > max_bytes:
        raise DecodeError(f"{what}: too large", limit=max_bytes)
    m = need_map(decode(raw, max_bytes=max_bytes), what)
    if set(m) != fields:
        raise DecodeError(f"{what}: unexpected fields")
    return m


_MISSING: Any = object()


def field(m: dict[str, Value], key: str, typ: type | tuple[type, ...], what: str) -> Any:
    """``m[key]`` checked against ``typ`` (bool is never accepted as int)."""
    v = m.get(key, _MISSING)
    if type(v) is typ:
        return v  # (the common case, decoded values being of the exact plain types)
    if key not in m:
        raise DecodeError(f"{what}: missing field {key!r}")
    v = m[key]
    if isinstance(v, bool) and typ in (int, (int,)):
        raise DecodeError(f"{what}: field {key!r} has the wrong type")
    if not isinstance(v, typ):
        raise DecodeError(f"{what}: field {key!r} has the wrong type")
    return v


def bytes_field(m: dict[str, Value], key: str, what: str, *, size: int | None = None) -> bytes:
    v: bytes = m.get(key, _MISSING)
    if type(v) is not bytes:
        v = field(m, key, bytes, what)
    if size is not None and len(v) != size:
        raise DecodeError(f"{what}: field {key!r} must be {size} bytes")
    return v


def str_field(m: dict[str, Value], key: str, what: str, *, max_len: int = 256) -> str:
    v: str = m.get(key, _MISSING)
    if type(v) is not str:
        v = field(m, key, str, what)
    if len(v) > max_len:
        raise DecodeError(f"{what}: field {key!r} too long")
    return v


def int_field(m: dict[str, Value], key: str, what: str, *, lo: int = 0, hi: int = _INT_MAX) -> int:
    v: int = m.get(key, _MISSING)
    if type(v) is not int:
        v = field(m, key, int, what)
    if not lo <= v <= hi:
        raise DecodeError(f"{what}: field {key!r} out of range")
    return v
