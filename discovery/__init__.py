"""Discovery: how p2pworld nodes find *candidates* to connect to.

Discovery never grants trust: a candidate is an address and a claimed node id, and the session
handshake proves (or refutes) the claim. ``discovery.mdns`` finds peers on the LAN with
zeroconf; the rendezvous node (for peers on other subnets) lives beside it. The pure parts
(TXT records, the rendezvous protocol) are cores in ``p2pworld.transport``.
"""
