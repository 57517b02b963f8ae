"""Everything the sidecar persists in Redis: positions, the lease, the queue, version records."""
