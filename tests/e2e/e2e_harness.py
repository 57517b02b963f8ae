"""The end-to-end harness: run the sidecar in this process, wait until it applied
everything written so far, and the one check every scenario ends with (the
index equals the source)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from cdc.fields import IndexedText, MetadataFields, document_id
from checkpoints.keys import Keys
from checkpoints.queue import applied_through
from checkpoints.tokens import pack_timestamp
from checkpoints.versions import VersionStore
from core.errors import DocumentRejected
from indexer.chunking import Chunker
from indexer.embedding import Embedder
from indexer.store import VectorStore
from sidecar.app import Sidecar, build_chunker
from sidecar.settings import Settings
from tests.conftest import DATABASE
from tests.waiting import eventually

CONVERGE_SECONDS = 60.0
VECTOR_SAMPLE = 64


def chunker_for(settings: Settings, embedder: Embedder) -> Chunker:
    """The chunker the service builds from *settings*: the source of expected chunks."""
    return build_chunker(settings, embedder)


def doc_key(settings: Settings, collection: str, raw_id: Any) -> str:
    return f"{settings.database}.{collection}/{document_id(raw_id)}"


async def written_so_far(mongo: AsyncMongoClient[dict[str, Any]]) -> int:
    """The packed cluster time of everything written to the source so far."""
    reply = await mongo[DATABASE].command("ping")
    return pack_timestamp(reply["operationTime"])


async def wait_applied(
    redis: aioredis.Redis,
    keys: Keys,
    mongo: AsyncMongoClient[dict[str, Any]],
    *,
    service: asyncio.Task[None] | None = None,
    seconds: float = CONVERGE_SECONDS,
) -> None:
    """Wait until every change written so far is captured and applied; fail early
    with the service's own error if it stopped."""
    target = await written_so_far(mongo)

    async def applied() -> bool:
        if service is not None and service.done():
            service.result()
            pytest.fail("the sidecar stopped before applying every change")
        return await applied_through(redis, keys, target)

    await eventually(applied, within=seconds, what="every change so far is applied")


async def stream_entries(redis: aioredis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    """The fields of every entry of *stream*, oldest first."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(stream)  # type: ignore[assignment]
    return [fields for _, fields in entries]


@dataclass
class Running:
    """A sidecar running in this process: its parts, its stop switch, its task."""

    sidecar: Sidecar
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def keys(self) -> Keys:
        return self.sidecar.keys

    async def applied(self, mongo: AsyncMongoClient[dict[str, Any]]) -> None:
        await wait_applied(self.sidecar.redis, self.keys, mongo, service=self.task)

    async def assert_index_equals_source(
        self, mongo: AsyncMongoClient[dict[str, Any]]
    ) -> dict[str, Expected]:
        """assert_index_equals_source on this service's own settings and parts."""
        sidecar = self.sidecar
        return await assert_index_equals_source(
            sidecar.settings, sidecar.store, sidecar.redis, mongo, sidecar.embedder
        )


@asynccontextmanager
async def running(
    settings: Settings, redis: aioredis.Redis, embedder: Embedder
) -> AsyncIterator[Running]:
    """Start the sidecar and wait until it has a checkpoint and has indexed what the
    source held (the first start's backfill is done), so every write the caller makes
    next reaches it through the change stream; on exit set stop and require the
    service to return within 10 s."""
    async with Sidecar(settings, redis=redis, embedder=embedder) as sidecar:
        stop = asyncio.Event()
        task = asyncio.create_task(sidecar.run(stop))
        service = Running(sidecar, stop, task)
        async with AsyncMongoClient(settings.mongo_uri) as client:
            written = await written_so_far(client)
        try:

            async def streaming() -> bool:
                if task.done():
                    task.result()
                    pytest.fail("the sidecar stopped while starting")
                return await applied_through(sidecar.redis, sidecar.keys, written)

            await eventually(streaming, within=CONVERGE_SECONDS, what="the sidecar streams")
            yield service
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.shield(task), timeout=10)


@asynccontextmanager
async def opened_store(settings: Settings, embedder: Embedder) -> AsyncIterator[VectorStore]:
    """The pipeline's Milvus collection, opened by the test (no service may hold it)."""
    store = VectorStore(
        settings.milvus_uri,
        settings.milvus_collection,
        dimension=embedder.dimension,
        fingerprint=embedder.fingerprint,
        metadata_fields=settings.metadata_fields,
    )
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


@dataclass(frozen=True)
class Expected:
    """What the index must hold for one document of the source."""

    chunks: list[str]
    metadata: dict[str, Any]


async def expected_index(
    settings: Settings, mongo: AsyncMongoClient[dict[str, Any]], chunker: Chunker
) -> dict[str, Expected]:
    """Every document key that must have chunks, computed from the source alone.

    The server applies the filter (mongosim's engine, not the sidecar's), so a
    filter bug in the sidecar cannot cancel out of the comparison."""
    text = IndexedText(settings.text_fields)
    metadata = MetadataFields(settings.metadata_fields)
    expected: dict[str, Expected] = {}
    for collection in settings.collections:
        async for doc in mongo[settings.database][collection].find(settings.filter):
            try:
                chunks = chunker(text(doc))
            except DocumentRejected:
                continue
            if chunks:
                expected[doc_key(settings, collection, doc["_id"])] = Expected(
                    chunks, metadata(doc)
                )
    return expected


async def assert_index_equals_source(
    settings: Settings,
    store: VectorStore,
    redis: aioredis.Redis,
    mongo: AsyncMongoClient[dict[str, Any]],
    embedder: Embedder,
) -> dict[str, Expected]:
    """Invariant 2, checked exhaustively: for every live document passing the filter,
    Milvus holds exactly its current chunks (texts in order, metadata, vectors of
    those texts by the current model); nothing for deleted, filtered-out or
    rejected documents; no orphan or duplicate rows; and every version record
    names exactly the rows Milvus holds. Returns what it expected, by document key.

    Embeds the chunks once more to check their vectors (every chunk up to
    VECTOR_SAMPLE of them, an even spread beyond): measure embedding counters
    before calling this."""
    expected = await expected_index(settings, mongo, chunker_for(settings, embedder))
    await store.flush()
    indexed = await store.chunk_ids_by_document()
    missing, extra = sorted(set(expected) - set(indexed)), sorted(set(indexed) - set(expected))
    assert not missing, f"documents missing from Milvus: {missing}"
    assert not extra, f"documents in Milvus that the source does not index: {extra}"

    versions = VersionStore(redis, Keys(settings.pipeline), ttl_seconds=None)
    records = await versions.get_many(list(expected))
    texts: list[str] = []
    vectors: list[list[float]] = []
    for key, want in expected.items():
        rows = await store.chunks_of(key)
        assert [row.text for row in rows] == want.chunks, f"chunks of {key} differ from source"
        assert [row.chunk_index for row in rows] == list(range(len(want.chunks))), key
        assert {row.id for row in rows} == indexed[key], f"{key}: rows differ between scans"
        for row in rows:
            assert dict(row.metadata) == want.metadata, f"{key}: stale metadata {row.metadata}"
        record = records.get(key)
        assert record is not None and not record.deleted, f"{key}: no live version record"
        assert record.chunk_ids == tuple(row.id for row in rows), f"{key}: record disagrees"
        texts += [row.text for row in rows]
        vectors += [list(row.vector) for row in rows]

    total = sum(len(want.chunks) for want in expected.values())
    assert await store.count() == total, "Milvus holds orphan or duplicate rows"
    async for key in versions.all_keys():
        if key not in expected:
            [record] = (await versions.get_many([key])).values()
            assert record.chunk_ids == (), f"{key} is not indexed but its record names chunks"

    sample = range(0, len(texts), max(1, math.ceil(len(texts) / VECTOR_SAMPLE)))
    texts, vectors = [texts[i] for i in sample], [vectors[i] for i in sample]
    for text, stored, fresh in zip(texts, vectors, await embedder.embed(texts), strict=True):
        assert _cosine(stored, fresh) > 0.999, f"the vector stored for {text[:40]!r} is not its own"
    return expected


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def paragraphs(label: str, count: int, *, words: int = 14) -> str:
    """*count* distinct paragraphs about *label*, each short enough to be one chunk."""
    vocabulary = [
        "river",
        "mountain",
        "library",
        "harbour",
        "engine",
        "garden",
        "orbit",
        "violin",
        "ledger",
        "compass",
        "lantern",
        "meadow",
        "circuit",
        "glacier",
        "canyon",
        "archive",
    ]
    out = []
    for n in range(count):
        body = " ".join(vocabulary[(n * 3 + i) % len(vocabulary)] for i in range(words))
        out.append(f"{label} part {n}: {body}.")
    return "\n\n".join(out)
