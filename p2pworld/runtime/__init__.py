"""The runtime: the trio program that wires a node's cores to its I/O (shell)."""
