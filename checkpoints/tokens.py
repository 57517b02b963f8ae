"""The change stream position: where capture resumes after a restart."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import Timestamp, json_util
from redis.asyncio import Redis

from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.keys import Keys

# Canonical extended JSON keeps every BSON type of a token (binary, Int64, ...) exact.
_TOKEN_JSON = json_util.CANONICAL_JSON_OPTIONS.with_options(tz_aware=True, tzinfo=UTC)


def pack_timestamp(ts: Timestamp) -> int:
    """A BSON Timestamp as one ordered integer, ``(time << 32) | inc``."""
    return (ts.time << 32) | ts.inc


def unpack_timestamp(packed: int) -> Timestamp:
    """The inverse of :func:`pack_timestamp`."""
    return Timestamp(packed >> 32, packed & 0xFFFFFFFF)


@dataclass(frozen=True)
class Checkpoint:
    """A position to resume the change stream from.

    ``token`` is the resume token document as pymongo returns it: resume
    *after* it. ``start_at_operation_time`` is set instead of a token by an
    operator's reset to a time. Both times are packed BSON Timestamps."""

    token: Mapping[str, Any] | None
    cluster_time: int | None
    start_at_operation_time: int | None
    saved_at: datetime

    def to_json(self) -> str:
        body = {
            "token": None if self.token is None else _token_to_plain(self.token),
            "cluster_time": self.cluster_time,
            "start_at_operation_time": self.start_at_operation_time,
            "saved_at": self.saved_at.isoformat(),
        }
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Checkpoint:
        """Decode what :meth:`to_json` wrote; raises ValueError when *raw* is not a checkpoint."""
        try:
            body = json.loads(raw)
            token = body["token"]
            return cls(
                token=None if token is None else _token_from_plain(token),
                cluster_time=body["cluster_time"],
                start_at_operation_time=body["start_at_operation_time"],
                saved_at=datetime.fromisoformat(body["saved_at"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a checkpoint: {exc}") from exc


def _token_to_plain(token: Mapping[str, Any]) -> Any:
    # Through json_util.dumps, not json.dumps: an Int64 must stay tagged as one.
    return json.loads(json_util.dumps(dict(token), json_options=_TOKEN_JSON))


def _token_from_plain(plain: Any) -> Mapping[str, Any]:
    token: Mapping[str, Any] = json_util.loads(json.dumps(plain), json_options=_TOKEN_JSON)
    return token


class ResumeTokenStore:
    """Reads the checkpoint and applies an operator's resets.

    Capture saves positions through EventQueue.append, in the same atomic
    write as the events they cover; :meth:`reset` is for operators. It checks
    *fence* inside the write and raises LeaseLost, changing nothing, when it
    is not the current lease's fence. A reset takes effect at the next start
    of capture: the caller must hold the lease with capture stopped, so a
    running capture does not overwrite it."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def load(self) -> Checkpoint | None:
        """The saved position, or None when the pipeline has never started (its
        first start backfills the watched collections)."""
        raw = await self._redis.get(self._keys.checkpoint)
        return None if raw is None else Checkpoint.from_json(raw)

    async def reset(self, checkpoint: Checkpoint | None, *, fence: int, audit: AuditEntry) -> None:
        """Make *checkpoint* the position (None forgets it: the next start scans the
        collections again) and add *audit* to the audit log, in one atomic write."""
        saved = None if checkpoint is None else checkpoint.to_json()
        await AuditLog(self._redis, self._keys).set_key(
            self._keys.checkpoint, saved, fence=fence, entry=audit
        )
