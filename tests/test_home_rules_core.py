"""What a node home's files say and mean (p2pworld.core.home_rules), and the home shell
carrying it out."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from p2pworld import codec
from p2pworld.core.home_rules import (
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
)
from p2pworld.errors import IdentityError, StoreFull
from p2pworld.io.home import NodeHome, default_home

WORDS = ("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon "
         "abandon about")


def test_home_location() -> None:
    assert home_location("/p", "/x") == ("/p", ())
    assert home_location(None, "/x") == ("/x", ("p2pworld",))
    assert home_location("", "") == (None, (".local", "share", "p2pworld"))


def test_default_home_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("P2PWORLD_HOME", "~raw")
    assert default_home() == Path("~raw")  # not expanded here, as before
    monkeypatch.delenv("P2PWORLD_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_home() == tmp_path / "p2pworld"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_home() == tmp_path / ".local" / "share" / "p2pworld"


def test_home_errors() -> None:
    e = OSError(errno.ENOSPC, "No space left on device")
    full = home_error("/h", "cannot write", e, disk_full=True)
    assert isinstance(full, StoreFull) and full.message == "/h: cannot write: the disk is full"
    other = home_error("/h", "cannot write", OSError(errno.EIO, "EIO"), disk_full=False)
    assert isinstance(other, IdentityError) and other.details == {"path": "/h"}
    busy = home_in_use("/h", "pid 1 on box")
    assert busy.details == {"holder": "pid 1 on box", "path": "/h"}


@given(st.integers(0, 2**22), st.text(alphabet="abcdefghij-.", min_size=1, max_size=20))
def test_the_lock_names_its_holder(pid: int, host: str) -> None:
    assert lock_holder(lock_text(pid, host)) == f"pid {pid} on {host}"


def test_an_empty_or_odd_lock_is_another_process() -> None:
    assert lock_holder(b"  \n") == "another process" and lock_holder(b"\xff") == "\ufffd"


def test_key_files_round_trip() -> None:
    node = key_file_map("/h/node.key", "node.key", node_key_frame(bytes(32)), NODE_KEY_KIND)
    nostr = key_file_map("/h/nostr.key", "nostr.key",
                         nostr_key_frame(WORDS, account=3, passphrase="pw"), NOSTR_KEY_KIND)
    assert identity_fields(node, nostr) == (bytes(32), WORDS, 3, "pw")


@pytest.mark.parametrize("data,message", [
    (b"", "is corrupt"), (codec.encode_frame([1]), "is corrupt"),
    (codec.encode_frame({"kind": "other"}), "is not a p2pworld-node-key file"),
])
def test_a_bad_key_file_is_an_identity_error(data: bytes, message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        key_file_map("/h/node.key", "node.key", data, NODE_KEY_KIND)


def test_bad_fields_are_a_corrupt_key_file() -> None:
    with pytest.raises(IdentityError, match="^node.key is corrupt: "):
        identity_fields({"seed": b"short"}, {})


def test_mnemonic_words() -> None:
    assert mnemonic_words("  " + WORDS.upper(), bytes(16)) == WORDS
    assert mnemonic_words(None, bytes(16)) == WORDS  # zero entropy: the "abandon" phrase
    with pytest.raises(IdentityError):
        mnemonic_words("not words", bytes(16))


def test_the_home_carries_them_out(tmp_path: Path) -> None:
    home = NodeHome(tmp_path / "h")
    ident = home.create(mnemonic=WORDS)
    assert home.mnemonic() == WORDS and home.load().node_id == ident.node_id
    with pytest.raises(IdentityError, match="already holds an identity"):
        home.create()
    home.lock()
    assert (tmp_path / "h" / "node.lock").read_bytes().startswith(b"pid ")
    with pytest.raises(IdentityError, match="is in use by pid "):
        NodeHome(tmp_path / "h").lock()
    home.unlock()
    (tmp_path / "h" / "node.key").write_bytes(node_key_frame(bytes(32))[:-3])
    with pytest.raises(IdentityError, match="node.key is corrupt"):
        home.load()
