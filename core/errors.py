"""One error base for the whole sidecar; retriable is decided where an error is born."""


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose.

    ``retriable`` says whether the same operation may succeed if tried again
    (a dropped connection) or never will (a bad configuration)."""

    retriable = False


class ConfigurationError(SidecarError):
    """The configuration is invalid or does not match what is already stored."""


class LeaseLost(SidecarError):
    """This writer's fence is no longer the current lease's: stop writing."""


class HistoryLost(SidecarError):
    """The change stream no longer holds the checkpointed position."""


class VectorStoreUnavailable(SidecarError):
    """Milvus did not accept a write; the batch stays unacknowledged."""

    retriable = True


class RedisUnavailable(SidecarError):
    """Redis did not answer; nothing was read or written."""

    retriable = True


class EmbedderUnavailable(SidecarError):
    """The embedding backend did not answer; the batch stays unacknowledged."""

    retriable = True


class DocumentRejected(SidecarError):
    """One document cannot be indexed (wrong types, oversize, undecodable)."""
