"""The index updater on its own: a real Milvus Lite database, real version records in
Redis, a deterministic embedder and a paragraph chunker, so each rule of invariants 2-4
is checked in a fraction of a second and without the model."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.versions import VersionRecord, VersionStore
from core.errors import LeaseStale
from core.events import (
    DocumentCreatedEvent,
    DocumentDeletedEvent,
    DocumentEvent,
    DocumentUpdatedEvent,
)
from indexer.handlers import Outcome
from indexer.plan import chunk_id
from indexer.store import ChunkRow, VectorStore
from indexer.updater import IndexUpdater, RememberedChunks
from tests.embedders import HashEmbedder

NAMESPACE = "app.docs"
KEY = f"{NAMESPACE}/d1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Paragraphs:
    """Splits at blank lines (or, as "sentences", at every ". "): chunk texts a test
    can write down by hand."""

    def __init__(self, separator: str = "\n\n") -> None:
        self._separator = separator
        self.fingerprint = f"split:{separator!r}"

    def __call__(self, text: str) -> list[str]:
        return [part for part in text.split(self._separator) if part]


@dataclass
class Index:
    """The updater under test with everything it writes to, committing as the indexer does."""

    updater: IndexUpdater
    store: VectorStore
    versions: VersionStore
    redis: aioredis.Redis
    embedder: HashEmbedder

    async def apply(self, events: Sequence[DocumentEvent]) -> Outcome:
        """Handle *events* as one batch and commit the version records it returns."""
        outcome = await self.attempt(events)
        pipe = self.redis.pipeline(transaction=True)
        self.versions.stage(pipe, outcome.versions)
        await pipe.execute()
        return outcome

    async def attempt(self, events: Sequence[DocumentEvent]) -> Outcome:
        """Handle *events* but commit nothing: an attempt that died before its commit."""
        outcome = await self.updater.handle_batch(events)
        await self.store.flush()
        return outcome

    def with_chunker(self, chunker: Paragraphs) -> Index:
        updater = IndexUpdater(
            store=self.store, embedder=self.embedder, chunker=chunker, versions=self.versions
        )
        return Index(updater, self.store, self.versions, self.redis, self.embedder)

    async def rows(self, doc_key: str = KEY) -> list[ChunkRow]:
        """The document's rows in Milvus, by chunk index."""
        return await self.store.chunks_of(doc_key)

    async def texts(self, doc_key: str = KEY) -> list[str]:
        return [row.text for row in await self.rows(doc_key)]

    async def record(self, doc_key: str = KEY) -> VersionRecord | None:
        return (await self.versions.get_many([doc_key])).get(doc_key)

    @property
    def embedded(self) -> int:
        return self.embedder.counter.texts


@pytest.fixture
async def index(
    milvus_uri: str, redis_client: aioredis.Redis, pipeline_name: str
) -> AsyncIterator[Index]:
    embedder = HashEmbedder(dimension=16)
    store = VectorStore(
        milvus_uri,
        "chunks",
        dimension=embedder.dimension,
        fingerprint=embedder.fingerprint,
        metadata_fields=["lang"],
    )
    await store.start()
    versions = VersionStore(redis_client, Keys(pipeline_name), ttl_seconds=None)
    updater = IndexUpdater(store=store, embedder=embedder, chunker=Paragraphs(), versions=versions)
    try:
        yield Index(updater, store, versions, redis_client, embedder)
    finally:
        await store.stop()


def created(text: str, version: int, **metadata: Any) -> DocumentCreatedEvent:
    return DocumentCreatedEvent(
        event_id=f"c{version}",
        document_id="d1",
        namespace=NAMESPACE,
        version=version,
        timestamp=NOW,
        content=text,
        source=NAMESPACE,
        metadata=metadata,
    )


def updated(text: str, version: int, *, doc: str = "d1", **metadata: Any) -> DocumentUpdatedEvent:
    return DocumentUpdatedEvent(
        event_id=f"{doc}-u{version}",
        document_id=doc,
        namespace=NAMESPACE,
        version=version,
        timestamp=NOW,
        content=text,
        metadata=metadata,
    )


def deleted(version: int) -> DocumentDeletedEvent:
    return DocumentDeletedEvent(
        event_id=f"d{version}",
        document_id="d1",
        namespace=NAMESPACE,
        version=version,
        timestamp=NOW,
    )


async def test_a_new_document_gets_one_row_per_chunk_and_a_record_naming_them(
    index: Index,
) -> None:
    outcome = await index.apply([created("alpha\n\nbeta\n\ngamma", 10, lang="en")])

    rows = await index.rows()
    assert [(r.chunk_index, r.text) for r in rows] == [(0, "alpha"), (1, "beta"), (2, "gamma")]
    assert [r.id for r in rows] == [chunk_id(KEY, t, 0) for t in ("alpha", "beta", "gamma")]
    assert all(r.metadata == {"lang": "en"} and r.document_id == "d1" for r in rows)
    assert index.embedded == 3
    record = await index.record()
    assert record is not None and record.version == 10 and not record.deleted
    assert record.chunk_ids == tuple(r.id for r in rows)
    assert outcome.counts["chunks_embedded"] == 3 and outcome.counts["documents_indexed"] == 1


async def test_an_edit_embeds_only_the_new_paragraph_and_deletes_the_one_it_replaced(
    index: Index,
) -> None:
    await index.apply([created("alpha\n\nbeta\n\ngamma", 10)])
    before = index.embedded

    outcome = await index.apply([updated("alpha\n\nBETA\n\ngamma", 11)])

    assert await index.texts() == ["alpha", "BETA", "gamma"]
    assert index.embedded - before == 1
    assert outcome.counts["chunks_embedded"] == 1 and outcome.counts["embeddings_skipped"] == 2
    record = await index.record()
    assert record is not None and record.chunk_ids == tuple(r.id for r in await index.rows())


async def test_a_document_that_shrinks_loses_the_rows_it_no_longer_has(index: Index) -> None:
    await index.apply([created("alpha\n\nbeta\n\ngamma\n\ndelta", 10)])
    before = index.embedded

    await index.apply([updated("alpha", 11)])

    assert await index.texts() == ["alpha"]
    assert index.embedded == before


async def test_a_delete_removes_every_row_and_leaves_a_tombstone(index: Index) -> None:
    await index.apply([created("alpha\n\nbeta", 10)])

    outcome = await index.apply([deleted(11)])

    assert await index.rows() == []
    record = await index.record()
    assert record is not None and record.deleted and record.chunk_ids == () and record.version == 11
    assert outcome.counts["deletes"] == 1


async def test_a_metadata_change_rewrites_rows_with_their_stored_vectors(index: Index) -> None:
    await index.apply([created("alpha\n\nbeta", 10, lang="en")])
    # A vector no embedder would compute for these texts: a rewrite that re-embedded
    # instead of reusing what is stored would lose it.
    marked = _marked(await index.rows())
    await index.store.upsert(marked)
    await index.store.flush()
    before = index.embedded

    outcome = await index.apply([updated("alpha\n\nbeta", 11, lang="fr")])

    rows = await index.rows()
    assert [r.metadata for r in rows] == [{"lang": "fr"}, {"lang": "fr"}]
    assert [r.vector for r in rows] == [r.vector for r in marked]
    assert index.embedded == before
    assert outcome.counts["documents_indexed"] == 1 and outcome.counts["embeddings_skipped"] == 2


async def test_a_paragraph_inserted_in_front_moves_the_others_without_embedding_them(
    index: Index,
) -> None:
    await index.apply([created("alpha\n\nbeta", 10)])
    marked = _marked(await index.rows())
    await index.store.upsert(marked)
    await index.store.flush()
    before = index.embedded

    await index.apply([updated("intro\n\nalpha\n\nbeta", 11)])

    rows = await index.rows()
    assert [(r.chunk_index, r.text) for r in rows] == [(0, "intro"), (1, "alpha"), (2, "beta")]
    assert [r.vector for r in rows[1:]] == [r.vector for r in marked]
    assert index.embedded - before == 1


async def test_an_unchanged_document_costs_no_write_and_no_embedding(index: Index) -> None:
    await index.apply([created("alpha\n\nbeta", 10, lang="en")])
    before = index.embedded

    outcome = await index.apply([updated("alpha\n\nbeta", 11, lang="en")])

    assert index.embedded == before
    assert outcome.counts["documents_indexed"] == 0 and outcome.counts["embeddings_skipped"] == 2
    record = await index.record()
    assert record is not None and record.version == 11


async def test_the_newest_event_of_a_batch_wins_and_equal_versions_go_to_the_last_queued(
    index: Index,
) -> None:
    await index.apply([updated("two", 12), created("one", 11)])
    assert await index.texts() == ["two"]

    # A change and the delete that rejected it share their version: the later entry wins.
    await index.apply([updated("three", 13), deleted(13)])
    assert await index.rows() == []
    record = await index.record()
    assert record is not None and record.deleted


async def test_an_older_change_never_overwrites_a_newer_one(index: Index) -> None:
    await index.apply([created("alpha\n\nbeta", 10)])
    await index.apply([updated("gamma", 20)])
    before = index.embedded

    outcome = await index.apply([updated("old text", 19)])

    assert await index.texts() == ["gamma"]
    assert index.embedded == before
    assert outcome.versions == {}
    record = await index.record()
    assert record is not None and record.version == 20


async def test_an_older_change_never_resurrects_a_deleted_document(index: Index) -> None:
    await index.apply([created("alpha", 10)])
    await index.apply([deleted(20)])

    await index.apply([updated("alpha again", 15)])

    assert await index.rows() == []
    record = await index.record()
    assert record is not None and record.deleted and record.version == 20


async def test_a_change_at_exactly_the_indexed_version_is_applied_again(index: Index) -> None:
    # The same change delivered again after the pipeline's chunking changed: it is not
    # older than what is indexed, so the document is re-chunked to the new settings.
    event = updated("one. two. three", 10)
    await index.apply([event])
    assert await index.texts() == ["one. two. three"]

    sentences = index.with_chunker(Paragraphs(". "))
    await sentences.apply([event])

    assert await sentences.texts() == ["one", "two", "three"]
    record = await index.record()
    assert record is not None and record.chunk_ids == tuple(r.id for r in await index.rows())


async def test_a_newer_change_is_applied_under_a_guard_that_is_off(
    index: Index, redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    await index.apply([updated("new", 20)])
    unguarded = IndexUpdater(
        store=index.store,
        embedder=index.embedder,
        chunker=Paragraphs(),
        versions=index.versions,
        version_guard=False,
    )
    restored = Index(unguarded, index.store, index.versions, redis_client, index.embedder)

    await restored.apply([updated("restored from a backup", 5)])

    assert await index.texts() == ["restored from a backup"]


async def test_chunks_of_an_interrupted_attempt_are_deleted_when_a_newer_event_wins_the_batch(
    index: Index,
) -> None:
    await index.apply([created("alpha", 10)])
    first = updated("alpha\n\nfirst draft", 11)
    await index.attempt([first])  # upserted, then the process died before the commit
    assert await index.texts() == ["alpha", "first draft"]

    await index.apply([first, updated("alpha\n\nsecond draft", 12)])

    assert await index.texts() == ["alpha", "second draft"]
    record = await index.record()
    assert record is not None and record.chunk_ids == tuple(r.id for r in await index.rows())


async def test_chunks_of_an_interrupted_attempt_are_deleted_when_its_redelivery_is_stale(
    index: Index,
) -> None:
    await index.apply([created("alpha", 10)])
    first = updated("alpha\n\nfirst draft", 11)
    await index.attempt([first])
    await index.apply([updated("alpha\n\nsecond draft", 12)])
    assert sorted(await index.texts()) == ["alpha", "first draft", "second draft"]

    await index.apply([first])  # redelivered, now older than the record

    assert await index.texts() == ["alpha", "second draft"]


async def test_a_row_an_interrupted_attempt_overwrote_is_rewritten_not_kept(index: Index) -> None:
    await index.apply([created("alpha\n\nbeta", 10, lang="en")])
    moved = updated("beta\n\nalpha", 11, lang="en")
    await index.attempt([moved])  # rewrote both rows at new positions, then died
    assert await index.texts() == ["beta", "alpha"]

    # The redelivered batch ends with the document as it was indexed: the rows the
    # dead attempt moved must be written back, although the record says "keep".
    await index.apply([moved, updated("alpha\n\nbeta", 12, lang="en")])

    assert [(r.chunk_index, r.text) for r in await index.rows()] == [(0, "alpha"), (1, "beta")]


async def test_rows_missing_from_milvus_are_rebuilt_instead_of_rewritten(index: Index) -> None:
    await index.apply([created("alpha\n\nbeta", 10, lang="en")])
    record = await index.record()
    assert record is not None
    await index.store.delete(list(record.chunk_ids))  # Milvus lost the rows
    await index.store.flush()
    before = index.embedded

    await index.apply([updated("alpha\n\nbeta", 11, lang="fr")])

    rows = await index.rows()
    assert [(r.text, r.metadata) for r in rows] == [
        ("alpha", {"lang": "fr"}),
        ("beta", {"lang": "fr"}),
    ]
    assert index.embedded - before == 2


def _marked(rows: Sequence[ChunkRow]) -> list[ChunkRow]:
    """*rows* with vectors no embedder computes for their texts (one axis each)."""
    return [
        replace(row, vector=[float(i == 15 - row.chunk_index) for i in range(16)]) for row in rows
    ]


async def test_each_encode_is_reported_before_anything_is_written(index: Index) -> None:
    reported: list[tuple[int, int]] = []

    async def on_embedded(texts: int) -> None:
        reported.append((texts, len(await index.rows())))

    updater = IndexUpdater(
        store=index.store,
        embedder=index.embedder,
        chunker=Paragraphs(),
        versions=index.versions,
        on_embedded=on_embedded,
    )
    counting = Index(updater, index.store, index.versions, index.redis, index.embedder)

    await counting.apply([created("alpha\n\nbeta\n\ngamma", 10)])
    await counting.apply([updated("alpha\n\nbeta\n\ngamma", 11, lang="fr")])  # no encode
    await counting.apply([updated("alpha\n\nBETA\n\ngamma", 12, lang="fr")])

    assert reported == [(3, 0), (1, 3)]


async def test_nothing_is_written_when_the_holder_may_have_lost_its_lease(index: Index) -> None:
    def stale() -> None:
        raise LeaseStale("not renewed lately")

    guarded = IndexUpdater(
        store=index.store,
        embedder=index.embedder,
        chunker=Paragraphs(),
        versions=index.versions,
        before_write=stale,
    )
    with pytest.raises(LeaseStale):
        await guarded.handle_batch([created("alpha\n\nbeta", 10)])
    await index.store.flush()
    assert await index.rows() == []


async def test_a_batchs_outcome_sums_every_document_and_names_the_newest_change(
    index: Index,
) -> None:
    await index.apply([created("gone", 5), updated("x", 5, doc="d2")])
    rejected = DocumentDeletedEvent(
        event_id="r9",
        document_id="bad",
        namespace=NAMESPACE,
        version=9,
        timestamp=NOW,
        metadata={"reason": "rejected", "error": "text field 'title' holds a bool"},
    )
    before = time.time() * 1000

    outcome = await index.apply(
        [
            updated("gone", 4),  # older than what is indexed: stale, first in the batch
            updated("x\n\ny", 6, doc="d2"),
            updated("p\n\nq", 7, doc="d3"),
            deleted(8),
            rejected,
        ]
    )

    assert dict(outcome.counts) == {
        "deletes": 2,
        "documents_indexed": 2,
        "chunks_embedded": 3,
        "embeddings_skipped": 1,
    }
    assert set(outcome.versions) == {f"{NAMESPACE}/d2", f"{NAMESPACE}/d3", KEY, rejected.key}
    assert outcome.rejected == {rejected.key: "text field 'title' holds a bool"}
    assert outcome.last_applied is not None
    applied_at = outcome.last_applied.pop("applied_at")
    assert outcome.last_applied == {
        "event_id": "r9",
        "doc_key": rejected.key,
        "event_type": "deleted",
        "version": 9,
        "timestamp": NOW.isoformat(),
    }
    assert datetime.fromisoformat(applied_at).tzinfo is not None
    record = outcome.versions[f"{NAMESPACE}/d3"]
    assert record.updated_at.tzinfo is not None
    rows = await index.rows(f"{NAMESPACE}/d3")
    assert all(before - 1000 <= r.updated_at <= time.time() * 1000 + 1000 for r in rows)


async def test_a_plain_delete_is_not_a_rejection(index: Index) -> None:
    await index.apply([created("alpha", 1)])
    outcome = await index.apply([deleted(2)])
    assert outcome.rejected == {}


async def test_one_event_is_handled_as_a_batch_of_one(index: Index) -> None:
    event = created("alpha\n\nbeta", 1)
    assert index.updater.can_handle(event)
    outcome = await index.updater.handle(event)
    assert outcome.counts["chunks_embedded"] == 2


async def test_rebuilding_missing_rows_still_deletes_the_chunks_the_change_dropped(
    index: Index,
) -> None:
    await index.apply([created("alpha\n\nbeta", 10, lang="en")])
    record = await index.record()
    assert record is not None
    await index.store.delete([record.chunk_ids[0]])  # Milvus lost the row of "alpha"
    await index.store.flush()

    await index.apply([updated("alpha\n\ngamma", 11, lang="fr")])

    assert [(r.text, r.metadata) for r in await index.rows()] == [
        ("alpha", {"lang": "fr"}),
        ("gamma", {"lang": "fr"}),
    ]


async def test_a_stale_change_does_not_stop_the_batchs_other_documents(index: Index) -> None:
    await index.apply([created("alpha", 10)])
    outcome = await index.apply([updated("older", 9), updated("x", 11, doc="d2")])
    assert set(outcome.versions) == {f"{NAMESPACE}/d2"}


async def test_an_empty_batch_changes_nothing(index: Index) -> None:
    outcome = await index.updater.handle_batch([])
    assert (outcome.versions, outcome.last_applied, dict(outcome.counts)) == ({}, None, {})


async def test_a_document_whose_record_was_lost_gets_its_new_metadata_on_its_stored_rows(
    index: Index, redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    await index.apply([created("one\n\ntwo", 10, lang="en")])
    embedded = index.embedded
    await redis_client.delete(Keys(pipeline_name).version(KEY))

    await index.apply([created("one\n\ntwo", 20, lang="fr")])

    assert index.embedded == embedded
    assert [(r.text, r.metadata["lang"]) for r in await index.rows()] == [
        ("one", "fr"),
        ("two", "fr"),
    ]


async def test_a_reindex_of_changed_text_embeds_the_new_chunk_and_drops_the_old(
    index: Index,
) -> None:
    await index.apply([created("one\n\ntwo", 10)])

    await index.apply([replace(created("one\n\nthree", 30), event_id="reindex:j1:30:app.docs:d1")])

    assert await index.texts() == ["one", "three"]


def test_remembered_chunks_forget_the_oldest_text_past_their_size() -> None:
    seen: list[str] = []

    class Recording(Paragraphs):
        def __call__(self, text: str) -> list[str]:
            seen.append(text)
            return super().__call__(text)

    remembered = RememberedChunks(Recording(), size=2)
    for text in ["a", "b", "a", "c", "a", "b"]:
        assert remembered(text) == [text]

    assert seen == ["a", "b", "c", "b"]
