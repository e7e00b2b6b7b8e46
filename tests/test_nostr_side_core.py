"""A node's Nostr side, what it decides (:mod:`p2pworld.core.nostr_side`), pure: the
workspace peers found on relays, their relay lists, the presence schedule and how a bridge
delivery shows on the feed. The shell is tested with real relays in ``tests/test_nostr_lane.py``
and ``tests/test_nostr_mirror.py``."""

from __future__ import annotations

from p2pworld.core.mirror import (
    PRESENCE_EVERY_S,
    PRESENCE_TTL_S,
    presence_event,
    relay_list_event,
)
from p2pworld.core.nostr_side import (
    PRESENCE_RETRY_S,
    Candidate,
    RelayDiscovery,
    mark_change,
    presence_published,
    presence_wait,
)
from p2pworld.nostr.event import Event
from p2pworld.nostr.keys import NostrKey
from p2pworld.nostr.pool import Ok

ME, PEER = NostrKey(bytes(31) + b"\x01"), NostrKey(bytes(31) + b"\x02")
MY_NODE, PEER_NODE = b"A" * 32, b"B" * 32
NOW = 1_000_000


def presence(key: NostrKey = PEER, *, node: bytes = PEER_NODE, workspace: str = "lab",
             status: str = "online", at: int = NOW) -> Event:
    return presence_event(key, node=node, workspace=workspace, status=status, created_at=at,
                          aux=bytes(32))


def test_a_peer_s_fresh_presence_is_a_candidate() -> None:
    seen = RelayDiscovery(ME.public, node_id=MY_NODE, workspace="lab")
    assert seen.see(presence(), now=NOW) == Candidate(
        f"nostr:{PEER.public.hex()}", PEER_NODE, PEER.public)
    assert seen.see(presence(at=NOW - PRESENCE_TTL_S), now=NOW) is not None  # just in time


def test_presence_that_names_no_one_to_dial_is_ignored() -> None:
    seen = RelayDiscovery(ME.public, node_id=MY_NODE, workspace="lab")
    assert seen.see(presence(ME), now=NOW) is None                      # our own key
    assert seen.see(presence(node=MY_NODE), now=NOW) is None            # our own node
    assert seen.see(presence(status="offline"), now=NOW) is None
    assert seen.see(presence(at=NOW - PRESENCE_TTL_S - 1), now=NOW) is None
    assert seen.see(presence(workspace="elsewhere"), now=NOW) is None


def test_relay_lists_replace_what_is_known_of_a_peer() -> None:
    seen = RelayDiscovery(ME.public, node_id=MY_NODE, workspace="lab")
    assert seen.relays_of(PEER.public) == []
    first = relay_list_event(PEER, relays=["ws://r1", "ws://r2"], workspace="lab",
                             created_at=NOW, aux=bytes(32))
    assert seen.see(first, now=NOW) is None
    assert seen.relays_of(PEER.public) == ["ws://r1", "ws://r2"]
    later = relay_list_event(PEER, relays=["ws://r3"], workspace="lab", created_at=NOW + 1,
                             aux=bytes(32))
    seen.see(later, now=NOW)
    assert seen.peer_relays == {PEER.public: ["ws://r3"]}
    mine = relay_list_event(ME, relays=["ws://mine"], workspace="lab", created_at=NOW,
                            aux=bytes(32))
    seen.see(mine, now=NOW)
    assert ME.public not in seen.peer_relays


def test_presence_is_published_again_slowly_once_a_relay_took_it() -> None:
    assert presence_published({"ws://a": None, "ws://b": Ok(True, "", "")})
    assert not presence_published({"ws://a": Ok(False, "duplicate: x", "duplicate")})
    assert not presence_published({})
    assert presence_wait(0) == PRESENCE_RETRY_S == 1.0
    assert presence_wait(1) == presence_wait(50) == PRESENCE_EVERY_S


def test_how_a_delivery_shows() -> None:
    assert mark_change(True, "chan:1") == ("published", "published", "chan:1")
    assert mark_change(False, "chan:1") == ("failed", "retry", "chan:1")
    assert mark_change(True, None) == ("published", "published", "")
