"""The channel composition core: one node's channels (membership, epochs, checkpoints,
writers) over the log cores."""
