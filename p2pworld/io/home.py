"""The node home directory: key files, written atomically with mode 0600.

Layout (see ``docs/protocol.md``, "Disk formats"):

* ``node.key`` — a frame ``{"kind": "p2pworld-node-key", "seed": <32 bytes>}``.
* ``nostr.key`` — a frame ``{"kind": "p2pworld-nostr-key", "mnemonic": str, "account": int,
  "passphrase": str}``; the NIP-06 key is derived from it on load.

A home with neither file gets a new identity. A home with one of them, or with a file that is
unreadable or corrupt, is an :class:`~p2pworld.errors.IdentityError`: a node never silently
becomes somebody else. What the files hold and mean is :mod:`p2pworld.core.home_rules`'s;
this shell does the file system work.

Example:
    >>> import tempfile, pathlib
    >>> home = NodeHome(pathlib.Path(tempfile.mkdtemp()))
    >>> ident = home.load_or_create()
    >>> home.load().node_id == ident.node_id
    True
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import socket
from pathlib import Path

from p2pworld import codec
from p2pworld.core.home_rules import (
    LOCK_HOLDER_BYTES,
    NODE_KEY_KIND,
    NOSTR_KEY_KIND,
    home_error,
    home_in_use,
    home_location,
    identity_fields,
    key_file_map,
    lock_holder,
    lock_text,
    mnemonic_words,
    node_key_frame,
    nostr_key_frame,
    same_public,
)
from p2pworld.errors import IdentityError, P2PWorldError
from p2pworld.identity import Ed25519Signer, NodeIdentity
from p2pworld.nostr.keys import NostrKey

NODE_KEY_FILE = "node.key"
NOSTR_KEY_FILE = "nostr.key"
LOCK_FILE = "node.lock"


def default_home() -> Path:
    """``$P2PWORLD_HOME``, else ``$XDG_DATA_HOME/p2pworld``, else ``~/.local/share/p2pworld``."""
    base, parts = home_location(os.environ.get("P2PWORLD_HOME"), os.environ.get("XDG_DATA_HOME"))
    return (Path.home() if base is None else Path(base)).joinpath(*parts)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so a crash leaves either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _home_error(path: Path, what: str, e: OSError) -> P2PWorldError:
    """A typed error for the home's own files: a full disk is ``StoreFull``."""
    return home_error(str(path), what, e, disk_full=e.errno == errno.ENOSPC)


class NodeHome:
    """A node's home directory. ``~`` is expanded (``Path("~/p2pw")`` is the user's, never a
    directory named ``~`` in the working directory)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self._lock: int | None = None

    def lock(self) -> None:
        """Take the exclusive lock a running node holds on its home (``node.lock``): two
        nodes on one home would share one identity and one log. Raises
        :class:`IdentityError` naming the holder if another process holds it. Released by
        :meth:`unlock` (or when the process ends, whatever way it ends)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise _home_error(self.path, "cannot create the home's lock file", e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(os.pread(fd, LOCK_HOLDER_BYTES, 0))
            os.close(fd)
            raise home_in_use(str(self.path), holder) from None
        except OSError as e:
            os.close(fd)
            raise IdentityError(f"{self.path}: cannot lock the home: {e}",
                                path=str(self.path)) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, lock_text(os.getpid(), socket.gethostname()), 0)
        except OSError as e:
            os.close(fd)  # the lock goes with it
            raise _home_error(self.path, "cannot write the home's lock file", e) from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the file releases the lock
            self._lock = None

    @property
    def node_key_path(self) -> Path:
        return self.path / NODE_KEY_FILE

    @property
    def nostr_key_path(self) -> Path:
        return self.path / NOSTR_KEY_FILE

    def exists(self) -> bool:
        return self.node_key_path.exists() or self.nostr_key_path.exists()

    def create(
        self, *, mnemonic: str | None = None, passphrase: str = "", account: int = 0
    ) -> NodeIdentity:
        """Write a new identity; ``mnemonic`` imports an existing NIP-06 identity."""
        if self.exists():
            raise IdentityError(f"{self.path} already holds an identity; refusing to replace it")
        words = mnemonic_words(mnemonic, secrets.token_bytes(16))
        nostr = NostrKey.from_mnemonic(words, passphrase=passphrase, account=account)  # checks
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.nostr_key_path, nostr_key_frame(
            words, account=account, passphrase=passphrase, public=nostr.public))
        seed = secrets.token_bytes(32)
        write_atomic(self.node_key_path,
                     node_key_frame(seed, public=Ed25519Signer(seed).public_key))
        return self.load()

    def load(self) -> NodeIdentity:
        """Load the identity; every problem is an :class:`IdentityError` naming the file."""
        node = self._read(self.node_key_path, NODE_KEY_KIND)
        nostr = self._read(self.nostr_key_path, NOSTR_KEY_KIND)
        seed, words, account, passphrase = identity_fields(
            node, nostr, node_path=str(self.node_key_path), nostr_path=str(self.nostr_key_path))
        signer = Ed25519Signer(seed)
        try:
            nostr_key = NostrKey.from_mnemonic(words, passphrase=passphrase, account=account)
        except IdentityError as e:
            raise IdentityError(f"{self.nostr_key_path} is corrupt: {e.message}",
                                path=str(self.nostr_key_path)) from None
        # Each file holds the public key it derives: a changed byte is refused, not another
        # identity. A file from before that gets its key now.
        # (Best effort: a read-only home loads as it is.)
        with contextlib.suppress(OSError):
            if same_public(str(self.node_key_path), node, signer.public_key):
                write_atomic(self.node_key_path, node_key_frame(seed, public=signer.public_key))
            if same_public(str(self.nostr_key_path), nostr, nostr_key.public):
                write_atomic(self.nostr_key_path, nostr_key_frame(
                    words, account=account, passphrase=passphrase, public=nostr_key.public))
        created = int(self.node_key_path.stat().st_mtime)
        return NodeIdentity.create(signer, nostr_key, created_at=created,
                                   aux=secrets.token_bytes(32))

    def load_or_create(self) -> NodeIdentity:
        return self.load() if self.exists() else self.create()

    def mnemonic(self) -> str:
        """The stored mnemonic (for backup / export)."""
        m = self._read(self.nostr_key_path, NOSTR_KEY_KIND)
        return str(m.get("mnemonic", ""))

    def _read(self, path: Path, kind: str) -> dict[str, codec.Value]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IdentityError(f"{path} is missing (identity incomplete)") from None
        except OSError as e:
            raise IdentityError(f"{path} is unreadable: {e.strerror}") from None
        return key_file_map(str(path), path.name, data, kind)


__all__ = ["NodeHome", "default_home", "write_atomic"]
