"""Discovery: how p2pworld nodes find *candidates* to connect to.

Discovery never grants trust: a candidate is an address and a claimed node id, and the session
handshake proves (or refutes) the claim. ``discovery.mdns`` finds peers on the LAN with
zeroconf; the rendezvous node (for peers on other subnets) lives beside it.
"""

# The runtime (p2pworld.node) imports discovery and discovery imports p2pworld's errors:
# loading p2pworld first makes either import order work.
import p2pworld  # noqa: E402, F401
