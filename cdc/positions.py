"""Where a change stream (re)opens: after a token, at a time, or at the current position."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import OperationFailure

from cdc.namespaces import Document, WatchScope
from checkpoints.tokens import Checkpoint, pack_timestamp, unpack_timestamp
from core.errors import HISTORY_LOST_CODES, ConfigurationError

# MongoDB's resume token "_data" is a KeyString whose first value is the
# clusterTime: type byte 0x82 (Timestamp) then the 8-byte big-endian (time << 32 | inc).
_TIMESTAMP_TYPE = "82"


def token_cluster_time(token: Mapping[str, Any] | None) -> int | None:
    """The packed clusterTime a resume token encodes, or None when it is not in
    MongoDB's KeyString format (a position is then saved without its time)."""
    data = None if token is None else token.get("_data")
    if not isinstance(data, str) or len(data) < 18 or not data.startswith(_TIMESTAMP_TYPE):
        return None
    try:
        return int(data[2:18], 16)
    except ValueError:
        return None


@dataclass(frozen=True)
class StreamPosition:
    """One way to open a change stream; all fields None means "from now"."""

    resume_after: Mapping[str, Any] | None = None
    start_after: Mapping[str, Any] | None = None
    start_at_operation_time: int | None = None
    cluster_time: int | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint | None) -> StreamPosition:
        if checkpoint is None:
            return cls()
        if checkpoint.token is not None:
            return cls(resume_after=checkpoint.token, cluster_time=checkpoint.cluster_time)
        return cls(
            start_at_operation_time=checkpoint.start_at_operation_time,
            cluster_time=checkpoint.start_at_operation_time,
        )

    @property
    def token(self) -> Mapping[str, Any] | None:
        return self.resume_after if self.resume_after is not None else self.start_after

    def watch_options(self) -> dict[str, Any]:
        """Keyword arguments for ``watch`` that open the stream here."""
        if self.resume_after is not None:
            return {"resume_after": self.resume_after}
        if self.start_after is not None:
            return {"start_after": self.start_after}
        if self.start_at_operation_time is not None:
            return {"start_at_operation_time": unpack_timestamp(self.start_at_operation_time)}
        return {}

    def describe(self) -> dict[str, Any]:
        """The position as log fields."""
        token = self.token
        if token is not None:
            return {"token": token.get("_data", str(token)), "cluster_time": self.cluster_time}
        if self.start_at_operation_time is not None:
            return {"start_at_operation_time": self.start_at_operation_time}
        return {"position": "now"}

    def explain(self) -> str:
        """The position in words, for a person: its time first, then its token."""
        token = self.token
        packed = self.cluster_time if token is not None else self.start_at_operation_time
        when = (
            datetime.fromtimestamp(packed >> 32, UTC).isoformat().replace("+00:00", "Z")
            if packed is not None
            else "an unknown time"
        )
        if token is not None:
            return f"after the change at {when} (resume token {token.get('_data', token)})"
        if packed is not None:
            return f"at {when}"
        return "at the current end of the stream"

    def checkpoint(self) -> Checkpoint:
        """This position as a checkpoint to save."""
        token = self.token
        return Checkpoint(
            token=token,
            cluster_time=self.cluster_time,
            start_at_operation_time=None if token is not None else self.start_at_operation_time,
            saved_at=datetime.now(UTC),
        )


async def cluster_time(
    client: AsyncMongoClient[Document], database: str, session: AsyncClientSession | None = None
) -> int:
    """The cluster's time now (packed), from a ping's operationTime. Read in a causally
    consistent *session* before the session's reads, what they read is at least as new.
    Raises ConfigurationError when the server reports no time (not a replica set)."""
    if session is None:
        async with client.start_session(causal_consistency=True) as own:
            return await cluster_time(client, database, own)
    await client[database].command("ping", session=session)
    if session.operation_time is None:
        raise ConfigurationError(
            "the server reported no operationTime for a read: is it a replica set?"
        )
    return pack_timestamp(session.operation_time)


async def current_position(
    client: AsyncMongoClient[Document],
    scope: WatchScope,
    session: AsyncClientSession | None = None,
) -> StreamPosition:
    """The end of *scope*'s change stream now, read by opening (and closing) a stream.

    Raises ConfigurationError when the server reports no position (not a replica set)."""
    target = scope.target(client)
    async with await target.watch(scope.pipeline(None, False), session=session) as stream:
        token = stream.resume_token
    operation_time = None if session is None else session.operation_time
    cluster_time = token_cluster_time(token) or (
        pack_timestamp(operation_time) if operation_time is not None else None
    )
    if cluster_time is None:
        raise ConfigurationError(
            "the server reported no position for the change stream: is it a replica set?"
        )
    if token is None:
        return StreamPosition(start_at_operation_time=cluster_time, cluster_time=cluster_time)
    return StreamPosition(resume_after=token, cluster_time=cluster_time)


async def still_in_history(
    client: AsyncMongoClient[Document], scope: WatchScope, position: StreamPosition
) -> bool:
    """Whether the server can still open *scope*'s stream at *position* (False when
    its oplog rolled past it, or when the position is from another deployment)."""
    try:
        async with await scope.target(client).watch(
            scope.pipeline(None, False), **position.watch_options()
        ):
            return True
    except OperationFailure as error:
        if error.code in HISTORY_LOST_CODES:
            return False
        raise
