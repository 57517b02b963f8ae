from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.versions import VersionRecord, VersionStore
from core.errors import ConfigurationError
from tests.conftest import REDIS_URL

NOW = datetime(2026, 6, 1, 8, 30, 0, 123456, tzinfo=UTC)


def record(version: int, *, deleted: bool = False) -> VersionRecord:
    chunks = () if deleted else (f"c{version}-0", f"c{version}-1")
    return VersionRecord(version, "h-content", "h-meta", chunks, deleted, NOW)


async def save(
    redis: aioredis.Redis, store: VersionStore, records: dict[str, VersionRecord]
) -> None:
    pipe = redis.pipeline(transaction=True)
    store.stage(pipe, records)
    await pipe.execute()


def test_record_round_trips_through_json() -> None:
    original = record(7 << 32 | 3)
    assert VersionRecord.from_json(original.to_json()) == original


def test_a_record_is_stored_as_compact_json() -> None:
    assert record(5).to_json() == (
        '{"version":5,"content_hash":"h-content","metadata_hash":"h-meta",'
        '"chunk_ids":["c5-0","c5-1"],"deleted":false,'
        '"updated_at":"2026-06-01T08:30:00.123456+00:00"}'
    )


def test_from_json_rejects_other_documents() -> None:
    with pytest.raises(ValueError, match="not a version record"):
        VersionRecord.from_json('{"version": 1}')


async def test_get_many_returns_what_was_stored_and_skips_absent_documents(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = VersionStore(redis_client, keys, ttl_seconds=3600)
    records = {"db.docs/1": record(10), "db.docs/a/b": record(11, deleted=True)}
    await save(redis_client, store, records)

    found = await store.get_many(["db.docs/1", "db.docs/missing", "db.docs/a/b"])

    assert found == records
    assert await store.get_many([]) == {}


async def test_tombstones_expire_and_live_records_do_not(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = VersionStore(redis_client, keys, ttl_seconds=3600)
    await save(redis_client, store, {"live": record(1), "gone": record(2, deleted=True)})

    assert await redis_client.ttl(keys.version("live")) == -1
    assert 3590 <= await redis_client.ttl(keys.version("gone")) <= 3600


async def test_overwriting_a_tombstone_with_a_live_record_drops_the_ttl(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = VersionStore(redis_client, keys, ttl_seconds=3600)
    await save(redis_client, store, {"doc": record(1, deleted=True)})

    await save(redis_client, store, {"doc": record(2)})

    assert await redis_client.ttl(keys.version("doc")) == -1


async def test_all_keys_lists_every_document_with_a_record(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = VersionStore(redis_client, keys, ttl_seconds=None)
    doc_keys = {f"db.docs/{n}" for n in range(250)} | {"db.other/x:y*z"}
    await save(redis_client, store, {key: record(1) for key in doc_keys})

    assert {key async for key in store.all_keys()} == doc_keys


async def test_all_keys_works_with_a_client_that_decodes_replies(
    redis_client: aioredis.Redis, keys: Keys
) -> None:
    store = VersionStore(redis_client, keys, ttl_seconds=None)
    await save(redis_client, store, {"db.docs/1": record(1), "db.docs/2": record(2)})
    decoding = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        listed = {key async for key in VersionStore(decoding, keys, ttl_seconds=None).all_keys()}
    finally:
        await decoding.aclose()

    assert listed == {"db.docs/1", "db.docs/2"}


def test_rejects_a_non_positive_ttl(redis_client: aioredis.Redis, keys: Keys) -> None:
    with pytest.raises(ConfigurationError, match="tombstone ttl must be positive, got 0"):
        VersionStore(redis_client, keys, ttl_seconds=0)
    assert VersionStore(redis_client, keys, ttl_seconds=1).ttl_seconds == 1
