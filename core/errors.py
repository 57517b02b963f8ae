"""The error model: one base for the sidecar's own errors, and one classifier for
every library's.

A failure is one of three kinds. An **outage** (Redis, MongoDB, Milvus or the
embedder unreachable or busy) is waited out with capped backoff, forever, and is
never a decision about data. A **document's own fault** (DocumentRejected) is
retried a few times, then dead-lettered. Anything else is **fatal**: the service
stops with one line saying what to change (exit 2 for configuration, permission
and history loss; 1 only where a restart may help)."""

from __future__ import annotations

import re

import redis.exceptions
from pymongo.errors import (
    ConfigurationError as MongoConfigurationError,
)
from pymongo.errors import (
    ConnectionFailure,
    CursorNotFound,
    OperationFailure,
    PyMongoError,
)

# ChangeStreamHistoryLost, and ChangeStreamFatalError, which servers before
# 4.4 raise when the resume point has left the oplog.
HISTORY_LOST_CODES = frozenset({286, 280})

# Server errors of a replica set in transition (no primary, stepping down,
# shutting down): the same command succeeds against the next primary.
_MONGO_TRANSITION_CODES = frozenset({91, 189, 10107, 11600, 11602, 13435, 13436})

_CREDENTIALS = re.compile(r"(?<=://)([^/@:]*):([^/@]*)@")

# Server errors that mean the credentials or the user's roles are wrong.
_MONGO_AUTH_CODES = frozenset({13, 18, 8000})

# Replies of a Redis that is starting, failing over or read-only for a moment.
_REDIS_TRANSIENT_REPLIES = ("LOADING", "MASTERDOWN", "TRYAGAIN", "READONLY", "CLUSTERDOWN")


class SidecarError(Exception):
    """Base of every error the sidecar raises on purpose.

    ``retriable`` says whether the same operation may succeed if tried again
    (a dropped connection) or never will (a bad configuration)."""

    retriable = False


class ConfigurationError(SidecarError):
    """The configuration is invalid or does not match what is already stored."""


class LeaseLost(SidecarError):
    """This writer's fence is no longer the current lease's: stop writing."""


class LeaseStale(SidecarError):
    """The lease was not renewed lately (Redis is down): it may expire before a write
    lands, so nothing is written until a renewal goes through."""

    retriable = True


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


class InvalidRequest(SidecarError):
    """An operator command was given something it cannot act on; nothing was changed."""


class NoAnswer(SidecarError):
    """The running service did not answer an operator command in time; the command was
    not carried out (its request expires unexecuted)."""

    retriable = True


class DocumentRejected(SidecarError):
    """One document cannot be indexed (wrong types, oversize, undecodable)."""


def is_outage(error: BaseException) -> bool:
    """Whether *error* means a dependency is unreachable or busy for a while, so the
    same call may succeed later: the caller waits it out, and never dead-letters a
    document or stops the service for it."""
    if isinstance(error, SidecarError):
        return error.retriable
    if isinstance(error, redis.exceptions.RedisError):
        return _redis_outage(error)
    if isinstance(error, PyMongoError):
        return _mongo_outage(error)
    return isinstance(error, ConnectionError | TimeoutError)


def _redis_outage(error: redis.exceptions.RedisError) -> bool:
    # A wrong password or a missing permission is configuration, though redis-py
    # raises some of them as connection errors.
    if isinstance(error, redis.exceptions.AuthenticationError | redis.exceptions.NoPermissionError):
        return False
    if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return True
    return isinstance(error, redis.exceptions.ResponseError) and str(error).startswith(
        _REDIS_TRANSIENT_REPLIES
    )


def _mongo_outage(error: PyMongoError) -> bool:
    if isinstance(error, OperationFailure) and error.code in HISTORY_LOST_CODES:
        return False
    if isinstance(error, ConnectionFailure | CursorNotFound):
        return True
    if isinstance(error, OperationFailure):
        return (
            error.code in _MONGO_TRANSITION_CODES
            or error.has_error_label("ResumableChangeStreamError")
            or error.has_error_label("RetryableWriteError")
        )
    return error.timeout


DEPENDENCIES = ("mongodb", "redis", "milvus", "embedder")
"""What an outage can be of (the label of the outage metric)."""


def dependency_of(error: BaseException | None) -> str:
    """Which dependency *error* (an outage) came from: one of DEPENDENCIES, or "other"
    for a bare connection error or timeout whose origin the error does not say."""
    if isinstance(error, RedisUnavailable | redis.exceptions.RedisError):
        return "redis"
    if isinstance(error, PyMongoError):
        return "mongodb"
    if isinstance(error, VectorStoreUnavailable):
        return "milvus"
    if isinstance(error, EmbedderUnavailable):
        return "embedder"
    return "other"


def describe_failure(error: BaseException) -> tuple[int, str]:
    """The exit status and the one line a person reads when *error* stops the
    service or a command: 2 for configuration, permission and lost history (a
    restart would fail the same way), 1 where a restart may help."""
    if isinstance(error, SidecarError):
        return (1 if error.retriable else 2), str(error)
    if isinstance(error, redis.exceptions.AuthenticationError | redis.exceptions.NoPermissionError):
        return (
            2,
            f"Redis refused the sidecar: {error} (check the user and password in CDC_REDIS_URL)",
        )
    if isinstance(error, OperationFailure):
        message = (error.details or {}).get("errmsg", str(error))
        if error.code in _MONGO_AUTH_CODES:
            return 2, (
                f"MongoDB refused the sidecar: {message} (check the user and password in "
                "CDC_MONGO_URI, and that the user may read and watch the database)"
            )
        return 2, f"MongoDB rejected a command: {message} (code {error.code})"
    if isinstance(error, MongoConfigurationError):
        return 2, f"CDC_MONGO_URI: {error}"
    return 1, (
        f"unexpected {type(error).__name__}: {error} (a restart may help; "
        "CDC_LOG_LEVEL=debug logs the traceback)"
    )


def redact(url: str) -> str:
    """*url* with the password of its user info replaced by ****: what an error or a
    log line may show of a URL."""
    return _CREDENTIALS.sub(lambda m: f"{m.group(1)}:****@", url)
