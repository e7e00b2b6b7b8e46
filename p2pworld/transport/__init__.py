"""Peer sessions: the handshake and framing core, the websocket shell, reconnect backoff."""
