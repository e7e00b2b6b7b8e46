"""I/O shells: sqlite stores, websocket sessions, HTTP, relay clients, the node's home on disk."""
