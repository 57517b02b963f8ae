"""Cross-cutting pieces of the sidecar: settings, errors, logging and the supervisor."""
