"""The demo: the whole sidecar on embedded defaults, offline, in one command."""
