"""Nostr: pure codecs (keys, NIP-01 events, NIP-44) and, later, the relay client and bridge."""
