"""Namespace floors and the namespace-wide operations on version records that drops
and renames use: a floor only rises, a database's floor covers its collections, and a
namespace's keys are exactly its own, whatever characters its name holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.versions import VersionRecord, VersionStore, database_of
from tests.conftest import REDIS_URL

NOW = datetime(2026, 6, 1, 8, 30, tzinfo=UTC)


def record(version: int, *, deleted: bool = False) -> VersionRecord:
    chunks = () if deleted else (f"c{version}-0",)
    return VersionRecord(version, "h-content", "h-meta", chunks, deleted, NOW)


@pytest.fixture
def store(redis_client: aioredis.Redis, keys: Keys) -> VersionStore:
    return VersionStore(redis_client, keys, ttl_seconds=3600)


async def test_a_floor_rises_and_never_falls(store: VersionStore) -> None:
    await store.raise_floor("app.articles", 100)
    assert await store.floors(["app.articles"]) == {"app.articles": 100}

    await store.raise_floor("app.articles", 40)
    await store.raise_floor("app.articles", 100)
    assert await store.floors(["app.articles"]) == {"app.articles": 100}

    await store.raise_floor("app.articles", 250)
    assert await store.floors(["app.articles"]) == {"app.articles": 250}


async def test_a_floor_compares_versions_as_numbers_not_as_text(store: VersionStore) -> None:
    await store.raise_floor("app.articles", 10)
    await store.raise_floor("app.articles", 9)
    assert await store.floors(["app.articles"]) == {"app.articles": 10}
    await store.raise_floor("app.articles", 100)
    await store.raise_floor("app.articles", 99)
    await store.raise_floor("app.articles", 20)
    assert await store.floors(["app.articles"]) == {"app.articles": 100}


async def test_a_floor_holds_versions_beyond_what_a_double_keeps_exactly(
    store: VersionStore,
) -> None:
    # Packed cluster times are around 2**62: a float would round them.
    high = (1_900_000_000 << 32) | 123_457
    await store.raise_floor("app.articles", high)
    await store.raise_floor("app.articles", high - 1)
    assert await store.floors(["app.articles"]) == {"app.articles": high}
    await store.raise_floor("app.articles", high + 1)
    assert await store.floors(["app.articles"]) == {"app.articles": high + 1}


async def test_each_namespace_has_its_own_floor(store: VersionStore) -> None:
    await store.raise_floor("app.articles", 10)
    await store.raise_floor("app.notes", 20)
    assert await store.floors(["app.articles", "app.notes"]) == {
        "app.articles": 10,
        "app.notes": 20,
    }


async def test_a_database_floor_applies_to_every_collection_of_it(store: VersionStore) -> None:
    await store.raise_floor("app", 30)
    await store.raise_floor("app.articles", 10)
    await store.raise_floor("app.notes", 50)
    floors = await store.floors(["app.articles", "app.notes", "app.fresh", "app"])
    assert floors == {"app.articles": 30, "app.notes": 50, "app.fresh": 30, "app": 30}


async def test_a_database_floor_does_not_reach_a_database_whose_name_shares_a_prefix(
    store: VersionStore,
) -> None:
    await store.raise_floor("app", 30)
    assert await store.floors(["app2.articles", "ap.articles", "app2"]) == {}


async def test_namespaces_without_a_floor_are_absent(store: VersionStore) -> None:
    assert await store.floors([]) == {}
    assert await store.floors(["app.articles"]) == {}
    await store.raise_floor("app.articles", 5)
    assert await store.floors(["app.notes", "other.articles"]) == {}
    assert await store.floors(iter(["app.notes", "app.articles"])) == {"app.articles": 5}


async def test_floors_belong_to_their_pipeline(
    redis_client: aioredis.Redis, store: VersionStore
) -> None:
    await store.raise_floor("app.articles", 5)
    other = Keys("another-pipeline-that-no-test-writes")
    assert await VersionStore(redis_client, other, ttl_seconds=None).floors(["app.articles"]) == {}


@pytest.mark.parametrize(
    ("namespace", "database"),
    [("app.articles", "app"), ("app", "app"), ("app.a.b", "app"), ("app2.x", "app2")],
)
def test_database_of(namespace: str, database: str) -> None:
    assert database_of(namespace) == database


async def test_put_writes_records_and_remove_deletes_them(
    redis_client: aioredis.Redis, store: VersionStore, keys: Keys
) -> None:
    records = {"app.a/1": record(7), "app.a/2": record(8), "app.a/3": record(9, deleted=True)}
    await store.put(records)
    assert await store.get_many(list(records)) == records
    # put follows the same rules as the indexer's commit: a tombstone expires, a live record not.
    assert await redis_client.ttl(keys.version("app.a/1")) == -1
    assert 3590 <= await redis_client.ttl(keys.version("app.a/3")) <= 3600

    await store.remove(["app.a/1", "app.a/3", "app.a/never"])
    assert await store.get_many(list(records)) == {"app.a/2": record(8)}

    await store.put({})
    await store.remove([])
    assert await store.get_many(list(records)) == {"app.a/2": record(8)}


async def test_remove_deletes_more_keys_than_one_delete_takes(store: VersionStore) -> None:
    doc_keys = [f"app.a/{n}" for n in range(1234)]
    await store.put({key: record(1) for key in doc_keys})
    await store.put({"app.b/keep": record(2)})
    assert len(await store.get_many(doc_keys)) == 1234

    await store.remove(doc_keys)

    assert await store.get_many(doc_keys) == {}
    assert await store.get_many(["app.b/keep"]) == {"app.b/keep": record(2)}


async def listed(store: VersionStore, namespace: str) -> list[str]:
    return sorted([key async for key in store.keys_in(namespace)])


async def test_keys_in_lists_only_that_collections_documents(store: VersionStore) -> None:
    await store.put(
        {
            key: record(1)
            for key in (
                "db.articles/1",
                "db.articles/a/b",
                "db.articles/x.y",
                "db.articles2/1",
                "db.articles.old/1",
                "db.article/1",
                "db.art/1",
                "other.articles/1",
                "db2.articles/1",
            )
        }
    )
    assert await listed(store, "db.articles") == [
        "db.articles/1",
        "db.articles/a/b",
        "db.articles/x.y",
    ]
    assert await listed(store, "db.art") == ["db.art/1"]
    assert await listed(store, "db.missing") == []


async def test_keys_in_lists_every_record_of_a_large_collection(store: VersionStore) -> None:
    doc_keys = {f"db.big/{n}" for n in range(2500)}
    await store.put({key: record(1) for key in doc_keys | {"db.bigger/1"}})
    assert set(await listed(store, "db.big")) == doc_keys


@pytest.mark.parametrize(
    ("collection", "lookalikes"),
    [
        ("a*", ["ab", "a", "abc"]),
        ("a?", ["ab", "ax"]),
        ("a[b]", ["ab"]),
        ("a[", ["ab"]),
        ("a]b", []),
        ("a\\b", ["ab", "a\\\\b"]),
        ("*", ["x", "articles"]),
        ("[a-z]", ["q", "a"]),
    ],
)
async def test_keys_in_takes_glob_characters_in_a_name_literally(
    store: VersionStore, collection: str, lookalikes: list[str]
) -> None:
    namespace = f"db.{collection}"
    mine = [f"{namespace}/1", f"{namespace}/2"]
    theirs = [f"db.{name}/1" for name in lookalikes]
    await store.put({key: record(1) for key in mine + theirs})
    assert await listed(store, namespace) == sorted(mine)


async def test_keys_in_a_database_lists_every_collection_of_it(store: VersionStore) -> None:
    mine = ["app.a/1", "app.a/2", "app.b/1", "app.b.c/9", "app.system.x/1"]
    theirs = ["app2.a/1", "ap.p/1", "other.a/1", "apps.a/1"]
    await store.put({key: record(1) for key in mine + theirs})
    assert await listed(store, "app") == sorted(mine)
    assert await listed(store, "app2") == ["app2.a/1"]
    assert await listed(store, "nothing") == []


async def test_keys_in_a_database_named_with_glob_characters(store: VersionStore) -> None:
    await store.put({key: record(1) for key in ["a*.x/1", "ab.x/1", "a?.y/1"]})
    assert await listed(store, "a*") == ["a*.x/1"]
    assert await listed(store, "a?") == ["a?.y/1"]


async def test_keys_in_works_with_a_client_that_decodes_replies(
    store: VersionStore, keys: Keys
) -> None:
    await store.put({"app.a/1": record(1), "app.b/1": record(1)})
    decoding = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        found = [
            key async for key in VersionStore(decoding, keys, ttl_seconds=None).keys_in("app.a")
        ]
    finally:
        await decoding.aclose()
    assert found == ["app.a/1"]
