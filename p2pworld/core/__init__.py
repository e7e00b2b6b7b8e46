"""The node-level cores: the composition of every core of one node, lane policy and mirror decisions."""
