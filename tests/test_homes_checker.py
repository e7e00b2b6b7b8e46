"""The checkers over real nodes' stores (``p2pworld.testing.check_homes``) find what they
exist to find: each anomaly is made for real on disk (two real nodes, real sqlite), and the
checker counts it; untouched homes count nothing. The real-process crash, step-down and size
tests run it over the homes they leave (``test_durability``, ``test_superseded``,
``test_message_size``)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import trio

from p2pworld import NodeConfig, open_node
from p2pworld.testing import Acknowledged

from .homes import check_homes


def _cfg(home: Path, **kw: object) -> NodeConfig:
    return NodeConfig(home=home, workspace="homes", mdns=False, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, list[Acknowledged]]:
    """Three stopped nodes: a sequencer ``a`` and a replica ``b`` at one head of 6 entries
    (three from each), a replica ``c`` that stopped at 3; and the acks the writers saw."""
    tmp = tmp_path_factory.mktemp("homes")
    acks: list[Acknowledged] = []

    async def publish(node, channel: bytes, i: int) -> None:  # type: ignore[no-untyped-def]
        key, payload = b"k%d" % i, b"payload %d" % i
        r = await node.publish(channel, payload, key=key)
        acks.append(Acknowledged(writer_key=node.identity.public_key, key=key,
                                 payload=payload, seq=r.seq))

    async def run() -> bytes:
        async with open_node(_cfg(tmp / "a")) as a, \
                open_node(_cfg(tmp / "b", peers=[a.url])) as b:
            ch = (await a.open_channel("c")).channel
            await b.wait_channel("c")
            async with open_node(_cfg(tmp / "c", peers=[a.url])) as c:
                await c.wait_channel("c")
                for i in range(3):
                    await publish((a, b)[i % 2], ch, i)
                while c.head(ch) != a.head(ch):
                    await trio.sleep(0.01)
            for i in range(3, 6):
                await publish((a, b)[i % 2], ch, i)
            while b.head(ch) != a.head(ch):
                await trio.sleep(0.01)
            return ch

    return tmp, trio.run(run), acks


def _copy(pair: tuple[Path, bytes, list[Acknowledged]], tmp: Path, *, with_c: bool = False
          ) -> dict[str, Path]:
    homes = {}
    for n in "abc":
        shutil.copytree(pair[0] / n, tmp / n, ignore=shutil.ignore_patterns("node.lock"))
        homes[n] = tmp / n
    if not with_c:
        del homes["c"]
    return homes


def _found(anomalies: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in anomalies.items() if v}


def test_untouched_homes_show_nothing(pair: tuple[Path, bytes, list[Acknowledged]],
                                      tmp_path: Path) -> None:
    _, channel, acks = pair
    homes = _copy(pair, tmp_path)
    assert _found(check_homes(homes, channel, acks)) == {}


def test_an_ack_the_stores_do_not_hold_is_a_lost_write(
        pair: tuple[Path, bytes, list[Acknowledged]], tmp_path: Path) -> None:
    _, channel, acks = pair
    homes = _copy(pair, tmp_path)
    a = acks[2]
    wrong = [Acknowledged(writer_key=a.writer_key, key=a.key, payload=b"other", seq=a.seq),
             Acknowledged(writer_key=a.writer_key, key=b"never", payload=b"x", seq=7)]
    assert _found(check_homes(homes, channel, [*acks, *wrong])) == {"lost_write": 2}
    # A `local` ack its writer was told it lost (LostWrite) is no anomaly.
    told = Acknowledged(writer_key=a.writer_key, key=b"never", payload=b"x", seq=7, told=True)
    assert _found(check_homes(homes, channel, [*acks, told])) == {}


def test_one_key_acknowledged_at_two_seqs_is_a_duplicate(
        pair: tuple[Path, bytes, list[Acknowledged]], tmp_path: Path) -> None:
    _, channel, acks = pair
    a = acks[0]
    again = Acknowledged(writer_key=a.writer_key, key=a.key, payload=a.payload, seq=4)
    found = _found(check_homes(_copy(pair, tmp_path), channel, [*acks, again]))
    assert found["duplicate"] == 1


def test_a_replica_behind_is_diverged_only_when_they_should_have_converged(
        pair: tuple[Path, bytes, list[Acknowledged]], tmp_path: Path) -> None:
    _, channel, acks = pair
    homes = _copy(pair, tmp_path, with_c=True)  # c stopped at seq 3
    assert _found(check_homes(homes, channel, acks)) == {"diverged": 1}
    assert _found(check_homes(homes, channel, acks, converged=False)) == {}


def test_a_store_that_refuses_its_channel_is_counted(
        pair: tuple[Path, bytes, list[Acknowledged]], tmp_path: Path) -> None:
    _, channel, acks = pair
    homes = _copy(pair, tmp_path)
    con = sqlite3.connect(homes["b"] / "log.db")
    with con:
        con.execute("UPDATE entries SET body=? WHERE seq=3", (b"\xa0garbage",))
    con.close()
    found = _found(check_homes(homes, channel, acks))
    assert found == {"store_refused": 1}  # a still holds every ack, b is left out


def test_entries_lost_under_a_stored_head_are_refused(
        pair: tuple[Path, bytes, list[Acknowledged]], tmp_path: Path) -> None:
    _, channel, acks = pair
    homes = _copy(pair, tmp_path)
    con = sqlite3.connect(homes["b"] / "log.db")
    with con:  # entries lost after the commit that stored the head (a rolled-back file)
        con.execute("DELETE FROM entries WHERE seq=6")
    con.close()
    assert _found(check_homes(homes, channel, acks)) == {"store_refused": 1}
