"""What a node home's files say and mean (pure): where the default home is, the key files'
contents, what a key file read back holds, the lock file's text, and which typed error a
failure of the home's own files is.

:class:`~p2pworld.io.home.NodeHome` does the file system work (atomic writes, the lock,
reads) and carries out what this module decides. Every problem with a key file is an
:class:`~p2pworld.errors.IdentityError` naming the file: a node never silently becomes
somebody else.

Example:
    >>> frame = node_key_frame(bytes(32))
    >>> key_file_map("/h/node.key", "node.key", frame, NODE_KEY_KIND)["seed"] == bytes(32)
    True
    >>> key_file_map("/h/node.key", "node.key", frame, NOSTR_KEY_KIND)
    Traceback (most recent call last):
    ...
    p2pworld.errors.IdentityError: /h/node.key is not a p2pworld-nostr-key file
"""

from __future__ import annotations

from p2pworld import codec
from p2pworld.errors import (
    DecodeError,
    IdentityError,
    P2PWorldError,
    StoreFull,
    UnsupportedVersion,
)
from p2pworld.nostr.keys import check_mnemonic, mnemonic_from_entropy

NODE_KEY_KIND = "p2pworld-node-key"
NOSTR_KEY_KIND = "p2pworld-nostr-key"
MAX_KEY_FILE_BYTES = 4096
LOCK_HOLDER_BYTES = 200
"""How much of the lock file names its holder."""


def home_location(p2pworld_home: str | None, xdg_data_home: str | None
                  ) -> tuple[str | None, tuple[str, ...]]:
    """The default home as ``(base, parts)``: ``$P2PWORLD_HOME``, else
    ``$XDG_DATA_HOME/p2pworld``, else (base None: the user's home directory)
    ``~/.local/share/p2pworld``. An empty variable counts as unset.

    Example:
        >>> home_location(None, "/data"), home_location("", None)
        (('/data', ('p2pworld',)), (None, ('.local', 'share', 'p2pworld')))
    """
    if p2pworld_home:
        return p2pworld_home, ()
    if xdg_data_home:
        return xdg_data_home, ("p2pworld",)
    return None, (".local", "share", "p2pworld")


def home_error(path: str, what: str, e: OSError, *, disk_full: bool) -> P2PWorldError:
    """A typed error for the home's own files (``what`` failed with ``e``; ``disk_full``:
    its errno is ``ENOSPC``): a full disk is ``StoreFull``, anything else an
    ``IdentityError``."""
    if disk_full:
        return StoreFull(f"{path}: {what}: the disk is full", path=path)
    return IdentityError(f"{path}: {what}: {e}", path=path)


def lock_text(pid: int, host: str) -> bytes:
    """What a node writes into the lock file it holds: who holds the home."""
    return f"pid {pid} on {host}\n".encode()


def lock_holder(text: bytes) -> str:
    """Who holds a home, from its lock file's first bytes (``another process`` when it says
    nothing).

    Example:
        >>> lock_holder(lock_text(7, "box")), lock_holder(b"")
        ('pid 7 on box', 'another process')
    """
    return text.decode(errors="replace").strip() or "another process"


def home_in_use(path: str, holder: str) -> IdentityError:
    """The error for a home another process holds: two nodes on one home would share one
    identity and one log."""
    return IdentityError(f"{path} is in use by {holder}: each node needs a home "
                         "of its own", holder=holder, path=path)


def mnemonic_words(mnemonic: str | None, entropy: bytes) -> str:
    """The words of a new identity: ``mnemonic`` imported (normalised and checked), else
    new words from ``entropy`` (16 bytes)."""
    return check_mnemonic(mnemonic) if mnemonic else mnemonic_from_entropy(entropy)


def nostr_key_frame(words: str, *, account: int, passphrase: str,
                    public: bytes | None = None) -> bytes:
    """The contents of ``nostr.key``; ``public``: the Nostr public key they derive (checked
    on every load: a changed account number or passphrase is another key)."""
    m: dict[str, codec.Value] = {"kind": NOSTR_KEY_KIND, "mnemonic": words,
                                 "account": account, "passphrase": passphrase}
    if public is not None:
        m["public"] = public
    return codec.encode_frame(m)


def node_key_frame(seed: bytes, *, public: bytes | None = None) -> bytes:
    """The contents of ``node.key``; ``public``: the node key the seed derives (checked on
    every load: a changed byte in the seed is another identity)."""
    m: dict[str, codec.Value] = {"kind": NODE_KEY_KIND, "seed": seed}
    if public is not None:
        m["public"] = public
    return codec.encode_frame(m)


def same_public(path: str, m: dict[str, codec.Value], derived: bytes) -> bool:
    """Whether the key file ``m`` (read from ``path``) must be written again with its public
    key (a file written before the key was stored beside what derives it).

    Example:
        >>> m = {"public": bytes(32)}
        >>> same_public("/h/node.key", m, bytes(32)), same_public("/h/node.key", {}, bytes(32))
        (False, True)
        >>> same_public("/h/node.key", m, bytes(31) + b"x")
        Traceback (most recent call last):
        ...
        p2pworld.errors.IdentityError: /h/node.key is corrupt: not the key it was written with

    Raises:
        IdentityError: the stored public key is not the one the file derives.
    """
    stored = m.get("public")
    if stored is None:
        return True
    if stored != derived:
        raise IdentityError(f"{path} is corrupt: not the key it was written with", path=path)
    return False


def key_file_map(path: str, name: str, data: bytes, kind: str) -> dict[str, codec.Value]:
    """A key file read back (``path``, file ``name``), checked to be a frame of ``kind``.

    Raises:
        IdentityError: the file is corrupt or of another kind.
    """
    try:
        m = codec.need_map(codec.decode_frame(data, max_bytes=MAX_KEY_FILE_BYTES), name)
    except (DecodeError, UnsupportedVersion) as e:
        raise IdentityError(f"{path} is corrupt: {e.message}", path=path) from None
    if m.get("kind") != kind:
        raise IdentityError(f"{path} is not a {kind} file")
    return m


def identity_fields(node: dict[str, codec.Value], nostr: dict[str, codec.Value], *,
                    node_path: str = "node.key", nostr_path: str = "nostr.key"
                    ) -> tuple[bytes, str, int, str]:
    """``(seed, mnemonic, account, passphrase)`` from the two key files' contents (read
    from ``node_path`` and ``nostr_path``).

    Example:
        >>> identity_fields({"seed": bytes(32)}, {"mnemonic": "w", "account": 0,
        ...                                       "passphrase": ""})[1:]
        ('w', 0, '')

    Raises:
        IdentityError: a field missing or of the wrong type or size (naming the file).
    """
    path = node_path
    try:
        seed = codec.bytes_field(node, "seed", "node.key", size=32)
        if node.get("public") is not None:
            codec.bytes_field(node, "public", "node.key", size=32)
        path = nostr_path
        words = codec.str_field(nostr, "mnemonic", "nostr.key", max_len=1024)
        account = codec.int_field(nostr, "account", "nostr.key", hi=2**31 - 1)
        passphrase = codec.str_field(nostr, "passphrase", "nostr.key", max_len=1024)
        if nostr.get("public") is not None:
            codec.bytes_field(nostr, "public", "nostr.key", size=32)
    except DecodeError as e:
        raise IdentityError(f"{path} is corrupt: {e.message}", path=path) from None
    return seed, words, account, passphrase


__all__ = ["home_location", "home_error", "lock_text", "lock_holder", "home_in_use",
           "mnemonic_words", "nostr_key_frame", "node_key_frame", "key_file_map", "same_public",
           "identity_fields", "NODE_KEY_KIND", "NOSTR_KEY_KIND"]
