"""What documents hold: Chinese text round-trips MongoDB -> Milvus at sentence
boundaries, and a document the pipeline cannot index is dead-lettered while
the rest keeps flowing (invariant 8)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from bson.binary import Binary
from e2e_harness import (
    assert_index_equals_source,
    doc_key,
    paragraphs,
    running,
    stream_entries,
)
from pymongo import AsyncMongoClient

from checkpoints.keys import Keys
from checkpoints.stats import Stats
from checkpoints.versions import VersionStore
from sidecar.settings import Settings
from tests.conftest import COLLECTION
from tests.embedders import CountingEmbedder

pytestmark = pytest.mark.model

Mongo = AsyncMongoClient[dict[str, Any]]

GREAT_WALL = (
    "长城是中国古代修建的军事防御工程。它东起山海关，西至嘉峪关，绵延数千公里！"
    "历代王朝不断修筑和加固城墙，用来抵御北方游牧民族的侵扰。"
    "城墙上每隔一段距离就建有烽火台；一旦发现敌情，守军便点燃烽火传递消息。"
    "你知道长城为什么能保存到今天吗？"
    "明朝用砖石重修了大部分城墙，所以今天看到的长城多是明代的遗迹。"
)
CHUNKING = (
    "把长文档切分成片段，是构建检索增强生成系统的第一步。"
    "每个片段都不能超过嵌入模型能读取的长度！"
    "切分时应优先在句号、问号和分号处断开；这样每个片段都保持完整的句子。"
    "片段太短会丢失上下文，太长又会被模型截断，怎样选择合适的长度？"
)
COOKING = (
    "红烧肉是一道家常菜。先把五花肉切块焯水，再用冰糖炒出糖色。"
    "加入酱油、料酒和香料，小火慢炖一个小时！汤汁收浓以后就可以出锅了。"
)
SENTENCE_ENDS = ("。", "！", "？", "；")


async def test_chinese_text_chunks_at_sentence_boundaries_and_round_trips(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings(text_fields=["body"], chunk_size=60, chunk_overlap=0)
    texts = {"wall": GREAT_WALL, "chunking": CHUNKING, "cooking": COOKING}
    async with running(settings, redis_client, embedder) as service:
        await articles.insert_many([{"_id": name, "body": body} for name, body in texts.items()])
        await service.applied(mongo)
        store = service.sidecar.store
        indexed = await assert_index_equals_source(settings, store, redis_client, mongo, embedder)

        for name, body in texts.items():
            rows = await store.chunks_of(doc_key(settings, COLLECTION, name))
            assert len(rows) > 1, f"{name} should need several chunks"
            assert "".join(row.text for row in rows) == body
            assert all(row.text.endswith(SENTENCE_ENDS) for row in rows), [r.text for r in rows]
            assert all(len(row.text) <= settings.chunk_size for row in rows)
        assert set(indexed) == {doc_key(settings, COLLECTION, name) for name in texts}

        # all-MiniLM-L6-v2 was trained on English: in Chinese it matches mostly
        # by shared characters, so each query shares words with its document.
        for query, answer in (
            ("中国古代修建的军事防御工程", "wall"),
            ("如何把长文档切分成适合嵌入模型的片段？", "chunking"),
            ("五花肉和冰糖怎么炖", "cooking"),
        ):
            [vector] = await embedder.embed([query])
            [best] = await store.search(vector, limit=1)
            assert best.doc_key == doc_key(settings, COLLECTION, answer), (query, best.text)


async def test_a_wrong_typed_text_field_is_dead_lettered_and_the_rest_flows(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    mongo: Mongo,
    articles: Any,
    embedder: CountingEmbedder,
) -> None:
    settings = make_settings()
    keys = Keys(settings.pipeline)
    async with running(settings, redis_client, embedder) as service:
        store = service.sidecar.store
        await articles.insert_many(
            [
                {"_id": "good", "title": "Good", "body": paragraphs("good", 2)},
                {"_id": "bad", "title": "Soon bad", "body": paragraphs("bad", 2)},
            ]
        )
        await service.applied(mongo)
        await assert_index_equals_source(settings, store, redis_client, mongo, embedder)
        assert await store.chunks_of(doc_key(settings, COLLECTION, "bad"))

        await articles.update_one({"_id": "bad"}, {"$set": {"body": {"nested": "text"}}})
        await articles.insert_one({"_id": "blob", "title": "Blob", "body": Binary(b"\x00\x01")})
        await articles.insert_one({"_id": "later", "title": "Later", "body": paragraphs("l", 2)})
        await articles.update_one({"_id": "good"}, {"$set": {"body": paragraphs("better", 2)}})
        await service.applied(mongo)
        indexed = await assert_index_equals_source(settings, store, redis_client, mongo, embedder)
        assert set(indexed) == {doc_key(settings, COLLECTION, i) for i in ("good", "later")}

        dead = await stream_entries(redis_client, keys.dead)
        errors = {fields[b"key"].decode(): fields[b"error"].decode() for fields in dead}
        assert set(errors) == {doc_key(settings, COLLECTION, i) for i in ("bad", "blob")}
        assert "'body'" in errors[doc_key(settings, COLLECTION, "bad")]
        assert "dict" in errors[doc_key(settings, COLLECTION, "bad")]
        assert "'body'" in errors[doc_key(settings, COLLECTION, "blob")]
        assert (await Stats(redis_client, keys).read())["dead_lettered"] == 2

        await articles.update_one({"_id": "bad"}, {"$set": {"body": "Fixed text again."}})
        await service.applied(mongo)
        indexed = await assert_index_equals_source(settings, store, redis_client, mongo, embedder)
        assert doc_key(settings, COLLECTION, "bad") in indexed

    versions = VersionStore(redis_client, keys, ttl_seconds=None)
    [blob] = (await versions.get_many([doc_key(settings, COLLECTION, "blob")])).values()
    assert blob.deleted
