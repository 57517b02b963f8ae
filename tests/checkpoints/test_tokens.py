from __future__ import annotations

from datetime import UTC, datetime

import bson
import pytest
import redis.asyncio as aioredis
from bson import Binary, Int64, Timestamp

from checkpoints.audit import AuditEntry, AuditLog
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.tokens import Checkpoint, ResumeTokenStore, pack_timestamp, unpack_timestamp
from core.errors import LeaseLost

SAVED_AT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


@pytest.mark.parametrize(
    "token",
    [
        {"_data": "8263A1B2C3000000012B022C0100296E5A1004"},
        {"_data": Binary(b"\x82c\xa1\x00\xff\x01", 0)},
        {"_data": "82", "_typeBits": Binary(b"\x01", 0), "n": Int64(7), "f": 1.5},
    ],
)
def test_checkpoint_round_trips_tokens_losslessly(token: dict[str, object]) -> None:
    checkpoint = Checkpoint(token, pack_timestamp(Timestamp(1_700_000_000, 3)), None, SAVED_AT)

    decoded = Checkpoint.from_json(checkpoint.to_json())

    # Lossless means the server gets back the same BSON (pymongo itself
    # decodes binary subtype 0 as bytes, which encodes identically).
    assert decoded.token is not None
    assert bson.encode(decoded.token) == bson.encode(token)
    assert (decoded.cluster_time, decoded.saved_at) == (checkpoint.cluster_time, SAVED_AT)


def test_timestamps_pack_in_order() -> None:
    earlier, later = Timestamp(1_700_000_000, 9), Timestamp(1_700_000_001, 0)
    assert pack_timestamp(earlier) < pack_timestamp(later)
    assert unpack_timestamp(pack_timestamp(earlier)) == earlier


def test_from_json_rejects_other_documents() -> None:
    with pytest.raises(ValueError, match="not a checkpoint"):
        Checkpoint.from_json('{"token": null}')


async def test_no_checkpoint_until_one_is_saved(redis_client: aioredis.Redis, keys: Keys) -> None:
    assert await ResumeTokenStore(redis_client, keys).load() is None


def audit(command: str) -> AuditEntry:
    return AuditEntry(SAVED_AT, command, "ops@host", "done", "before", "after")


async def test_reset_saves_the_position_and_its_audit_entry_then_forgets_it(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    store = ResumeTokenStore(redis_client, keys)
    token = {"_data": Binary(b"\x00\x01token", 0)}
    at_time = pack_timestamp(Timestamp(1_700_000_000, 0))

    await store.reset(Checkpoint(token, None, None, SAVED_AT), fence=fence, audit=audit("one"))
    loaded = await store.load()
    assert loaded is not None and loaded.token is not None
    assert bson.encode(loaded.token) == bson.encode(token)
    assert (loaded.cluster_time, loaded.start_at_operation_time) == (None, None)

    await store.reset(Checkpoint(None, None, at_time, SAVED_AT), fence=fence, audit=audit("two"))
    loaded = await store.load()
    assert loaded is not None and (loaded.token, loaded.start_at_operation_time) == (None, at_time)

    await store.reset(None, fence=fence, audit=audit("three"))
    assert await store.load() is None
    assert await AuditLog(redis_client, keys).recent() == [
        audit("three"),
        audit("two"),
        audit("one"),
    ]


async def test_resets_with_a_stale_fence_change_nothing(
    redis_client: aioredis.Redis, keys: Keys, fence: int
) -> None:
    store = ResumeTokenStore(redis_client, keys)
    await store.reset(
        Checkpoint({"_data": "kept"}, None, None, SAVED_AT), fence=fence, audit=audit("kept")
    )
    await redis_client.delete(keys.lease)  # the writer's lease expired
    newer = await Lease(redis_client, keys, owner="another-writer").acquire(wait=False)
    assert newer == fence + 1

    with pytest.raises(LeaseLost):
        await store.reset(
            Checkpoint({"_data": "stale"}, None, None, SAVED_AT), fence=fence, audit=audit("stale")
        )
    with pytest.raises(LeaseLost):
        await store.reset(None, fence=fence, audit=audit("forget"))

    assert await AuditLog(redis_client, keys).recent() == [audit("kept")]
    loaded = await store.load()
    assert loaded is not None and loaded.token == {"_data": "kept"}


def test_a_checkpoint_is_stored_as_compact_json() -> None:
    checkpoint = Checkpoint({"_data": "82AA"}, 42, None, datetime(2026, 1, 2, tzinfo=UTC))
    assert checkpoint.to_json() == (
        '{"token":{"_data":"82AA"},"cluster_time":42,'
        '"start_at_operation_time":null,"saved_at":"2026-01-02T00:00:00+00:00"}'
    )
