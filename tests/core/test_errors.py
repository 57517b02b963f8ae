"""One classifier decides what is an outage, for every dependency and every caller."""

from __future__ import annotations

import pytest
import redis.exceptions
from pymongo.errors import (
    AutoReconnect,
    CursorNotFound,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
)
from pymongo.errors import ConfigurationError as MongoConfigurationError

from core.errors import (
    ConfigurationError,
    DocumentRejected,
    EmbedderUnavailable,
    HistoryLost,
    LeaseLost,
    RedisUnavailable,
    VectorStoreUnavailable,
    describe_failure,
    is_outage,
)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        redis.exceptions.ResponseError("MASTERDOWN Link with MASTER is down"),
        redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
        AutoReconnect("connection closed"),
        NetworkTimeout("timed out"),
        ServerSelectionTimeoutError("No replica set members match selector"),
        NotPrimaryError("not primary"),
        CursorNotFound("cursor id 7 not found"),
        OperationFailure("interrupted at shutdown", code=11600),
        OperationFailure("x", code=1, details={"errorLabels": ["ResumableChangeStreamError"]}),
        ConnectionRefusedError("refused"),
        TimeoutError("timed out"),
        VectorStoreUnavailable("milvus down"),
        RedisUnavailable("redis down"),
        EmbedderUnavailable("server down"),
    ],
    ids=repr,
)
def test_outages(error: BaseException) -> None:
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.AuthenticationError("invalid username-password pair"),
        redis.exceptions.NoPermissionError("NOPERM this user has no permissions"),
        redis.exceptions.ResponseError("WRONGTYPE Operation against a key"),
        OperationFailure("Authentication failed.", code=18),
        OperationFailure("not authorized on app", code=13),
        OperationFailure("Resume of change stream was not possible", code=286),
        OperationFailure("cannot resume", code=280),
        OperationFailure("Unrecognized pipeline stage name: '$where'", code=40324),
        ConfigurationError("bad setting"),
        LeaseLost("fenced out"),
        HistoryLost("oplog rolled"),
        DocumentRejected("bool in a text field"),
        ValueError("a bug"),
        FileNotFoundError("no such file"),
    ],
    ids=repr,
)
def test_not_outages(error: BaseException) -> None:
    assert not is_outage(error)


@pytest.mark.parametrize(
    ("error", "status", "says"),
    [
        (ConfigurationError("CDC_X: bad"), 2, "CDC_X: bad"),
        (HistoryLost("the change stream no longer holds"), 2, "no longer holds"),
        (LeaseLost("another replica took the lease"), 2, "another replica"),
        (RedisUnavailable("cannot read redis"), 1, "cannot read redis"),
        (
            redis.exceptions.AuthenticationError("invalid username-password pair"),
            2,
            "Redis refused the sidecar: invalid username-password pair (check the user and "
            "password in CDC_REDIS_URL)",
        ),
        (
            OperationFailure("Authentication failed.", code=18),
            2,
            "MongoDB refused the sidecar: Authentication failed.",
        ),
        (
            OperationFailure("x", code=40324, details={"errmsg": "Unrecognized pipeline stage"}),
            2,
            "MongoDB rejected a command: Unrecognized pipeline stage (code 40324)",
        ),
        (
            MongoConfigurationError("Unknown option foo"),
            2,
            "CDC_MONGO_URI: Unknown option foo",
        ),
        (RuntimeError("a bug"), 1, "unexpected RuntimeError: a bug (a restart may help"),
    ],
    ids=repr,
)
def test_every_failure_has_an_exit_status_and_a_line_to_act_on(
    error: BaseException, status: int, says: str
) -> None:
    assert describe_failure(error)[0] == status
    assert says in describe_failure(error)[1]
