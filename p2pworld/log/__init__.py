"""Channel logs: entries, the sequencer core, verifying replicas and stores."""
