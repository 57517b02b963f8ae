"""The Redis key layout of one pipeline, in one place."""

from __future__ import annotations

import re

from core.errors import ConfigurationError

_PIPELINE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class Keys:
    """Every Redis key of one pipeline, all under ``cdc:{pipeline}:``.

    Raises ConfigurationError when *pipeline* is empty or holds characters
    other than letters, digits, ``_``, ``.`` and ``-`` (the name ends up in
    SCAN patterns, where glob characters would match other pipelines)."""

    def __init__(self, pipeline: str) -> None:
        if not _PIPELINE_NAME.fullmatch(pipeline):
            raise ConfigurationError(
                f"pipeline name {pipeline!r} must be non-empty and use only [A-Za-z0-9_.-]"
            )
        self.pipeline = pipeline
        prefix = f"cdc:{pipeline}:"
        self.prefix = prefix
        self.events = prefix + "events"
        self.bulk = prefix + "events:bulk"
        self.priority = prefix + "events:priority"
        self.lanes = {"priority": self.priority, "live": self.events, "bulk": self.bulk}
        """The queue's streams by lane, in the order the indexer reads them."""
        self.dead = prefix + "dead"
        self.checkpoint = prefix + "checkpoint"
        self.fence = prefix + "fence"
        self.lease = prefix + "lease"
        self.lease_since = prefix + "lease_since"
        self.service = prefix + "service"
        self.stats = prefix + "stats"
        self.last_applied = prefix + "last_applied"
        self.version_prefix = prefix + "version:"
        self.audit = prefix + "audit"
        self.paused = prefix + "paused"
        self.backfill = prefix + "backfill"
        self.backfill_wanted = prefix + "backfill:wanted"
        self.floors = prefix + "floors"
        self.requests = prefix + "requests"
        self.reply_prefix = prefix + "reply:"
        self.group = "indexer"

    def version(self, doc_key: str) -> str:
        """The key of *doc_key*'s version record (doc_key as in DocumentEvent.key)."""
        return self.version_prefix + doc_key

    def reply(self, request_id: str) -> str:
        """The key the lease holder answers request *request_id* under."""
        return self.reply_prefix + request_id

    def __repr__(self) -> str:
        return f"Keys({self.pipeline!r})"
