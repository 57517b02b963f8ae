"""Collection events applied to a real index: a real Milvus Lite database, real version
records and floors in Redis, and documents indexed first by the real IndexUpdater with a
deterministic embedder. A drop empties its namespace and makes older changes stale; a
rename re-homes rows and records without embedding; replays change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import indexer.store
from checkpoints.backfills import BackfillStore
from checkpoints.keys import Keys
from checkpoints.stats import Stats
from checkpoints.versions import VersionRecord, VersionStore
from core.errors import VectorStoreUnavailable
from core.events import (
    CollectionDroppedEvent,
    CollectionRenamedEvent,
    DocumentCreatedEvent,
    DocumentDeletedEvent,
    DocumentEvent,
    DocumentUpdatedEvent,
)
from indexer.catalog import CatalogHandler
from indexer.handlers import Outcome
from indexer.store import ChunkRow, VectorStore
from indexer.updater import IndexUpdater
from tests.embedders import HashEmbedder

NOW = datetime(2026, 1, 1, tzinfo=UTC)
A, B = "app.articles", "app.archive"
NAMESPACES = [A, B, "app.notes", "app.elsewhere", "app.fresh", "app2.articles", "ap.p"]


class Paragraphs:
    """Splits at blank lines: chunk texts a test can write down by hand."""

    fingerprint = "split:paragraphs"

    def __call__(self, text: str) -> list[str]:
        return [part for part in text.split("\n\n") if part]


def created(namespace: str, doc: str, text: str, version: int, **metadata: Any) -> DocumentEvent:
    return DocumentCreatedEvent(
        event_id=f"{namespace}/{doc}@{version}",
        document_id=doc,
        namespace=namespace,
        version=version,
        timestamp=NOW,
        content=text,
        source=namespace,
        metadata=metadata,
    )


def updated(namespace: str, doc: str, text: str, version: int, **metadata: Any) -> DocumentEvent:
    return DocumentUpdatedEvent(
        event_id=f"{namespace}/{doc}~{version}",
        document_id=doc,
        namespace=namespace,
        version=version,
        timestamp=NOW,
        content=text,
        metadata=metadata,
    )


def dropped(namespace: str, version: int, **metadata: str) -> CollectionDroppedEvent:
    return CollectionDroppedEvent(
        event_id=f"drop-{namespace}-{version}",
        namespace=namespace,
        version=version,
        timestamp=NOW,
        metadata=metadata,
    )


def renamed(
    namespace: str, to: str, version: int, *, backfill: bool = False
) -> CollectionRenamedEvent:
    return CollectionRenamedEvent(
        event_id=f"rename-{namespace}-{version}",
        namespace=namespace,
        version=version,
        timestamp=NOW,
        to=to,
        backfill=backfill,
    )


@dataclass
class Index:
    """The updater and the catalog handler over one store and one set of version records,
    committing as the indexer does."""

    store: VectorStore
    versions: VersionStore
    redis: aioredis.Redis
    embedder: HashEmbedder
    updater: IndexUpdater
    backfills: list[str] = field(default_factory=list)

    def catalog(
        self, *, keep_dropped: bool = False, store: Any = None, versions: Any = None
    ) -> CatalogHandler:
        """The handler under test; *store* and *versions* replace the real ones."""

        async def backfill(collection: str) -> None:
            self.backfills.append(collection)

        return CatalogHandler(
            store or self.store,
            versions or self.versions,
            keep_dropped=keep_dropped,
            backfill=backfill,
            before_write=lambda: None,
        )

    async def apply(self, events: Sequence[DocumentEvent]) -> Outcome:
        """Index *events* as one batch and commit their version records."""
        outcome = await self.updater.handle_batch(events)
        pipe = self.redis.pipeline(transaction=True)
        self.versions.stage(pipe, outcome.versions)
        await pipe.execute()
        await self.store.flush()
        return outcome

    async def handle(self, event: DocumentEvent, **options: Any) -> Outcome:
        outcome = await self.catalog(**options).handle(event)
        # The scheduler commits the outcome with the acknowledgement: a catalog event
        # writes its records itself and must hand back none.
        assert outcome.versions == {}
        # The commit refuses a counter it does not know.
        assert set(outcome.counts) <= set(Stats.COUNTERS)
        await self.store.flush()
        return outcome

    async def rows(self, namespace: str | None = None) -> dict[str, ChunkRow]:
        """Every stored row (of *namespace*: a collection, or a whole database), by id."""
        found = await self.store.fetch(
            [row["id"] async for page in self.store.pages(["id"]) for row in page]
        )
        return {cid: row for cid, row in found.items() if within(row.namespace, namespace)}

    async def records(self, namespace: str) -> dict[str, VersionRecord]:
        keys = [key async for key in self.versions.keys_in(namespace)]
        return await self.versions.get_many(keys)

    async def state(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
        """Everything the index holds, comparable across runs (no write times): rows,
        version records, and the floors of the namespaces the tests use."""
        rows = {
            cid: (
                row.doc_key,
                row.namespace,
                row.document_id,
                row.chunk_index,
                row.text,
                tuple(round(x, 6) for x in row.vector),
                dict(row.metadata),
            )
            for cid, row in (await self.rows()).items()
        }
        keys = [key async for key in self.versions.all_keys()]
        records = {
            key: (r.version, r.content_hash, r.metadata_hash, r.chunk_ids, r.deleted)
            for key, r in (await self.versions.get_many(keys)).items()
        }
        return rows, records, await self.versions.floors(NAMESPACES)

    @property
    def embedded(self) -> int:
        return self.embedder.counter.texts


def within(namespace: str, wanted: str | None) -> bool:
    if wanted is None or namespace == wanted:
        return True
    return "." not in wanted and namespace.startswith(wanted + ".")


async def open_store(uri: str, embedder: HashEmbedder) -> VectorStore:
    store = VectorStore(
        uri,
        "chunks",
        dimension=embedder.dimension,
        fingerprint=embedder.fingerprint,
        metadata_fields=["lang"],
    )
    await store.start()
    return store


@pytest.fixture
async def index(
    milvus_uri: str, redis_client: aioredis.Redis, pipeline_name: str
) -> AsyncIterator[Index]:
    embedder = HashEmbedder(dimension=16)
    store = await open_store(milvus_uri, embedder)
    versions = VersionStore(redis_client, Keys(pipeline_name), ttl_seconds=None)
    updater = IndexUpdater(store=store, embedder=embedder, chunker=Paragraphs(), versions=versions)
    try:
        yield Index(store, versions, redis_client, embedder, updater)
    finally:
        await store.stop()


class NoRecords:
    """A version ledger that knows nothing: every document is new to it."""

    async def get_many(self, doc_keys: Sequence[str]) -> dict[str, VersionRecord]:
        return {}

    async def floors(self, namespaces: Any) -> dict[str, int]:
        return {}


async def indexed_fresh(
    tmp_path: Path, namespace: str, docs: dict[str, str]
) -> dict[str, dict[str, tuple[int, str]]]:
    """The rows IndexUpdater writes for *docs* created under *namespace* in an empty
    index of its own: by document id, chunk id -> (chunk_index, text)."""
    embedder = HashEmbedder(dimension=16)
    store = await open_store(str(tmp_path / "control.db"), embedder)
    try:
        updater = IndexUpdater(
            store=store, embedder=embedder, chunker=Paragraphs(), versions=NoRecords()
        )
        await updater.handle_batch(
            [created(namespace, doc, text, 1, lang="en") for doc, text in docs.items()]
        )
        await store.flush()
        return {
            doc: {
                row.id: (row.chunk_index, row.text)
                for row in await store.chunks_of(f"{namespace}/{doc}")
            }
            for doc in docs
        }
    finally:
        await store.stop()


def placed(rows: dict[str, ChunkRow]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """What each chunk holds, by document id and position (not by chunk id)."""
    return {
        (row.document_id, row.chunk_index): (row.text, list(row.vector), dict(row.metadata))
        for row in rows.values()
    }


def of(rows: dict[str, ChunkRow], doc: str) -> list[ChunkRow]:
    """*doc*'s rows among *rows*, in order."""
    return sorted((r for r in rows.values() if r.document_id == doc), key=lambda r: r.chunk_index)


DOCS = {
    "d1": "alpha one\n\nalpha two\n\nalpha three",
    "d2": "beta\n\nbeta\n\ngamma",  # a repeated paragraph: ids numbered by occurrence
    "d3": "delta only",
}


async def fill(index: Index, namespace: str, version: int, docs: dict[str, str] = DOCS) -> None:
    await index.apply(
        [
            created(namespace, doc, text, version + n, lang="en")
            for n, (doc, text) in enumerate(docs.items())
        ]
    )


# ---- drops -------------------------------------------------------------------------------


async def test_a_drop_deletes_every_row_and_record_of_its_namespace_only(index: Index) -> None:
    await fill(index, A, 100)
    await fill(index, "app.notes", 100)
    await fill(index, "app.articles2", 100)
    notes_before = await index.rows("app.notes")
    others_before = await index.rows("app.articles2")
    assert len(await index.rows(A)) == 7 and len(await index.records(A)) == 3

    outcome = await index.handle(dropped(A, 200))

    assert await index.rows(A) == {}
    assert await index.records(A) == {}
    assert outcome.counts["deletes"] == 3
    assert outcome.last_applied is not None
    assert outcome.last_applied["event_type"] == "dropped"
    assert outcome.last_applied["version"] == 200
    assert await index.rows("app.notes") == notes_before
    assert await index.rows("app.articles2") == others_before
    assert len(await index.records("app.notes")) == 3
    assert len(await index.records("app.articles2")) == 3


async def test_a_drop_also_removes_tombstones_and_rows_without_a_record(index: Index) -> None:
    await fill(index, A, 100)
    await index.apply(
        [
            DocumentDeletedEvent(
                event_id="x", document_id="d3", namespace=A, version=150, timestamp=NOW
            )
        ]
    )
    assert (await index.versions.get_many([f"{A}/d3"]))[f"{A}/d3"].deleted
    # A row Milvus holds with no record at all (its record was lost with Redis's data).
    await index.versions.remove([f"{A}/d1"])

    await index.handle(dropped(A, 200))

    assert await index.rows(A) == {}
    assert await index.records(A) == {}


async def test_after_a_drop_an_older_change_is_stale_and_a_newer_one_indexes(
    index: Index,
) -> None:
    await fill(index, A, 100)
    await index.handle(dropped(A, 200))

    # A backfill read the document before the drop: its event arrives after it.
    outcome = await index.apply([created(A, "d1", "resurrected", 150)])
    assert await index.rows(A) == {}
    assert await index.records(A) == {}
    assert outcome.counts["chunks_embedded"] == 0

    # An update older than the drop of a document that is not even known.
    await index.apply([updated(A, "new", "never indexed", 199)])
    assert await index.rows(A) == {}

    await index.apply([created(A, "d1", "after the drop", 250)])
    assert [row.text for row in (await index.rows(A)).values()] == ["after the drop"]
    record = (await index.records(A))[f"{A}/d1"]
    assert record.version == 250 and not record.deleted


async def test_the_floor_of_a_drop_leaves_other_namespaces_alone(index: Index) -> None:
    await fill(index, A, 100)
    await index.handle(dropped(A, 200))

    await index.apply([created("app.notes", "n1", "older but elsewhere", 150)])

    assert [row.text for row in (await index.rows("app.notes")).values()] == ["older but elsewhere"]


async def test_keep_dropped_keeps_the_rows_of_a_drop(index: Index) -> None:
    await fill(index, A, 100)
    before = await index.state()

    await index.handle(dropped(A, 200), keep_dropped=True)

    assert await index.state() == before


async def test_keep_dropped_still_deletes_a_collection_renamed_out_of_the_watched_set(
    index: Index,
) -> None:
    await fill(index, A, 100)
    await fill(index, "app.notes", 100)
    notes = await index.rows("app.notes")

    outcome = await index.handle(dropped(A, 200, to="app.elsewhere"), keep_dropped=True)

    assert await index.rows(A) == {}
    assert await index.records(A) == {}
    assert await index.rows("app.elsewhere") == {}
    assert outcome.counts["deletes"] == 3
    assert await index.rows("app.notes") == notes
    # The rename made A's older changes stale as a drop does.
    await index.apply([created(A, "d1", "late", 150)])
    assert await index.rows(A) == {}


async def test_a_database_drop_empties_every_collection_of_it_and_no_other_database(
    index: Index,
) -> None:
    await fill(index, "app.articles", 100)
    await fill(index, "app.notes", 100)
    await fill(index, "app2.articles", 100)
    await fill(index, "ap.p", 100)
    kept = {ns: await index.rows(ns) for ns in ("app2.articles", "ap.p")}

    outcome = await index.handle(dropped("app", 200))

    assert await index.rows("app.articles") == {} and await index.rows("app.notes") == {}
    assert await index.records("app") == {}
    assert outcome.counts["deletes"] == 6
    for namespace, rows in kept.items():
        assert await index.rows(namespace) == rows
        assert len(await index.records(namespace)) == 3
    # The database's floor covers its collections, even one created since.
    await index.apply(
        [created("app.notes", "d1", "late", 150), created("app.fresh", "f", "late", 160)]
    )
    assert await index.rows("app.notes") == {} and await index.rows("app.fresh") == {}
    await index.apply([created("app2.articles", "d9", "older, other database", 150)])
    assert len(await index.records("app2.articles")) == 4


async def test_a_drop_keeps_what_a_newer_change_already_indexed(index: Index) -> None:
    # A replayed drop after newer changes were applied must not undo them.
    await fill(index, A, 100)
    await index.handle(dropped(A, 200))
    await index.apply([created(A, "d1", "one\n\ntwo", 300)])
    after = await index.state()

    outcome = await index.handle(dropped(A, 200))

    assert await index.state() == after
    assert outcome.counts["deletes"] == 0


# ---- renames -----------------------------------------------------------------------------


async def test_a_rename_moves_every_row_with_its_vector_and_text(
    index: Index, tmp_path: Path
) -> None:
    await fill(index, A, 100)
    before = await index.rows(A)
    old_records = await index.records(A)
    embedded = index.embedded

    outcome = await index.handle(renamed(A, B, 200))

    assert index.embedded == embedded, "a rename must not embed"
    assert await index.rows(A) == {}
    assert await index.records(A) == {}
    assert outcome.counts["documents_rehomed"] == 3
    moved = await index.rows(B)
    assert len(moved) == len(before)
    assert placed(moved) == placed(before)
    for row in moved.values():
        assert row.namespace == B
        assert row.doc_key == f"{B}/{row.document_id}"
    records = await index.records(B)
    assert set(records) == {f"{B}/{doc}" for doc in DOCS}
    # The ids IndexUpdater gives the same documents under the new name.
    fresh = await indexed_fresh(tmp_path, B, DOCS)
    for doc in DOCS:
        record, old = records[f"{B}/{doc}"], old_records[f"{A}/{doc}"]
        assert record.version == 200 and not record.deleted
        assert (record.content_hash, record.metadata_hash) == (old.content_hash, old.metadata_hash)
        rows = of(moved, doc)
        assert record.chunk_ids == tuple(row.id for row in rows)
        assert {row.id: (row.chunk_index, row.text) for row in rows} == fresh[doc]


async def test_after_a_rename_an_identical_change_embeds_nothing_and_a_reindex_keeps_the_rows(
    index: Index,
) -> None:
    await fill(index, A, 100)
    await index.handle(renamed(A, B, 200))
    moved = await index.state()
    embedded = index.embedded

    outcome = await index.apply(
        [updated(B, doc, text, 300, lang="en") for doc, text in DOCS.items()]
    )
    assert outcome.counts["chunks_embedded"] == 0
    assert index.embedded == embedded

    # A reindex trusts Milvus, not the record: it embeds only ids Milvus lacks and
    # deletes rows under the document it would not write.
    reindex = [
        DocumentUpdatedEvent(
            event_id=f"reindex:{doc}",
            document_id=doc,
            namespace=B,
            version=400,
            timestamp=NOW,
            content=text,
            metadata={"lang": "en"},
        )
        for doc, text in DOCS.items()
    ]
    outcome = await index.apply(reindex)
    assert outcome.counts["chunks_embedded"] == 0
    assert index.embedded == embedded
    assert set((await index.state())[0]) == set(moved[0])


async def test_a_later_change_after_a_rename_replaces_only_what_changed(index: Index) -> None:
    await fill(index, A, 100)
    await index.handle(renamed(A, B, 200))
    embedded = index.embedded

    await index.apply([updated(B, "d1", "alpha one\n\nalpha 2\n\nalpha three", 300, lang="en")])

    assert index.embedded == embedded + 1
    rows = sorted(
        (r for r in (await index.rows(B)).values() if r.document_id == "d1"),
        key=lambda r: r.chunk_index,
    )
    assert [row.text for row in rows] == ["alpha one", "alpha 2", "alpha three"]


async def test_after_a_rename_older_changes_of_either_name_are_stale(index: Index) -> None:
    await fill(index, A, 100)
    await index.handle(renamed(A, B, 200))
    after = await index.state()

    await index.apply([created(A, "d1", "late for the old name", 150)])
    await index.apply([updated(B, "d1", "late for the new name", 150, lang="en")])

    assert await index.state() == after


async def test_a_rename_replacing_an_existing_collection_deletes_its_documents(
    index: Index,
) -> None:
    await fill(index, A, 100)
    await fill(index, B, 100, {"d1": "old archive one", "b2": "old archive two\n\nmore"})
    old_b_ids = set(await index.rows(B))

    await index.handle(renamed(A, B, 200))

    rows = await index.rows(B)
    assert not old_b_ids & set(rows)
    assert {row.document_id for row in rows.values()} == set(DOCS)
    assert sorted(row.text for row in rows.values() if row.document_id == "d1") == sorted(
        DOCS["d1"].split("\n\n")
    )
    assert set(await index.records(B)) == {f"{B}/{doc}" for doc in DOCS}
    assert await index.rows(A) == {}


async def test_a_rename_leaves_a_newer_change_of_the_target_applied_before_it(
    index: Index,
) -> None:
    # A change of the new name made after the rename, taken first from the priority lane.
    await fill(index, A, 100)
    await index.apply([updated(B, "d1", "newer\n\ntext", 300, lang="en")])

    await index.handle(renamed(A, B, 200))

    rows = await index.rows(B)
    assert [row.text for row in of(rows, "d1")] == ["newer", "text"]
    assert [row.text for row in of(rows, "d2")] == DOCS["d2"].split("\n\n")
    records = await index.records(B)
    assert records[f"{B}/d1"].version == 300
    assert records[f"{B}/d1"].chunk_ids == tuple(row.id for row in of(rows, "d1"))
    assert records[f"{B}/d2"].version == 200
    assert await index.rows(A) == {} and await index.records(A) == {}


async def test_a_rename_leaves_a_newer_document_of_the_recreated_source_where_it_is(
    index: Index,
) -> None:
    # After the rename the old name was created again and written to; that change,
    # taken first from the priority lane, was applied before the rename.
    await fill(index, A, 100)
    await index.apply([created(A, "x", "born after\n\nthe rename", 300, lang="en")])
    x_rows = of(await index.rows(A), "x")

    await index.handle(renamed(A, B, 200))

    assert of(await index.rows(A), "x") == x_rows
    record = (await index.records(A))[f"{A}/x"]
    assert record.version == 300
    assert record.chunk_ids == tuple(row.id for row in x_rows)
    assert {row.document_id for row in (await index.rows(B)).values()} == set(DOCS)
    assert set(await index.records(B)) == {f"{B}/{doc}" for doc in DOCS}
    assert {row.document_id for row in (await index.rows(A)).values()} == {"x"}
    # What the new name may hold of "x" from before the rename only the source has.
    assert index.backfills == ["archive"]


async def test_a_rename_into_the_watched_set_asks_for_a_backfill_of_the_new_name(
    index: Index,
) -> None:
    await fill(index, B, 100)

    await index.handle(renamed("app.staging", B, 200, backfill=True))

    assert index.backfills == ["archive"]
    # The replaced collection's documents are gone; the backfill brings the new ones.
    assert await index.rows(B) == {}
    assert await index.records(B) == {}


async def test_a_rename_inside_the_watched_set_asks_for_no_backfill(index: Index) -> None:
    await fill(index, A, 100)
    await index.handle(renamed(A, B, 200))
    assert index.backfills == []


async def test_the_backfill_request_reaches_the_backfill_store(
    index: Index, redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    backfills = BackfillStore(redis_client, Keys(pipeline_name))
    handler = CatalogHandler(
        index.store,
        index.versions,
        keep_dropped=False,
        backfill=backfills.want,
        before_write=lambda: None,
    )
    await handler.handle(renamed("app.staging", B, 200, backfill=True))
    await handler.handle(renamed("app.staging", B, 200, backfill=True))
    await handler.handle(renamed("other.x", "app.notes", 300, backfill=True))
    assert await backfills.wanted() == ["archive", "notes"]


async def test_a_rename_of_a_collection_larger_than_one_scan_page(
    index: Index, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Milvus caps one query (here at 5 rows, more than one document's chunks): the scan
    # splits the id space, so one document's chunks come in different pages.
    docs = {f"d{n}": f"part {n}-0\n\npart {n}-1\n\nsame\n\nsame" for n in range(10)}
    await fill(index, A, 100, docs)
    monkeypatch.setattr(indexer.store, "_SCAN_LIMIT", 5)

    await index.handle(renamed(A, B, 200))

    rows = await index.rows(B)
    assert len(rows) == 4 * len(docs)
    assert await index.rows(A) == {}
    records = await index.records(B)
    fresh = await indexed_fresh(tmp_path, B, docs)
    for doc in docs:
        mine = of(rows, doc)
        assert [row.text for row in mine] == docs[doc].split("\n\n")
        assert {row.id: (row.chunk_index, row.text) for row in mine} == fresh[doc]
        assert records[f"{B}/{doc}"].chunk_ids == tuple(row.id for row in mine)


async def test_a_drop_of_a_collection_larger_than_one_scan_page(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = {f"d{n}": "\n\n".join(f"part {n}-{k}" for k in range(4)) for n in range(10)}
    await fill(index, A, 100, docs)
    await fill(index, "app.notes", 100)
    notes = await index.rows("app.notes")
    monkeypatch.setattr(indexer.store, "_SCAN_LIMIT", 5)

    outcome = await index.handle(dropped(A, 200))

    assert outcome.counts["deletes"] == len(docs)
    monkeypatch.undo()
    assert await index.rows(A) == {}
    assert await index.records(A) == {}
    assert await index.rows("app.notes") == notes


# ---- replays -----------------------------------------------------------------------------


EVENTS: dict[str, Callable[[], DocumentEvent]] = {
    "drop": lambda: dropped(A, 200),
    "rename-out": lambda: dropped(A, 200, to="app.elsewhere"),
    "database-drop": lambda: dropped("app", 200),
    "rename": lambda: renamed(A, B, 200),
    "rename-replacing": lambda: renamed(A, "app.notes", 200),
}


@pytest.mark.parametrize("name", list(EVENTS))
async def test_applying_the_same_event_twice_changes_nothing_more(index: Index, name: str) -> None:
    await fill(index, A, 100)
    await fill(index, "app.notes", 100, {"n1": "a note", "d1": "a note with d1's name"})
    await fill(index, "app2.articles", 100)
    before = await index.state()
    event = EVENTS[name]()
    await index.handle(event)
    once = await index.state()
    assert once != before
    embedded = index.embedded

    await index.handle(event)

    assert await index.state() == once
    assert index.embedded == embedded


class CrashingStore:
    """The real store, whose first delete of any of *ids* fails as a Milvus outage would:
    the handler dies half-way, its event still queued."""

    def __init__(self, store: VectorStore, ids: set[str]) -> None:
        self._store = store
        self._ids = ids
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def delete(self, ids: Sequence[str]) -> None:
        if not self.crashed and self._ids & set(ids):
            self.crashed = True
            raise VectorStoreUnavailable("milvus went away")
        await self._store.delete(ids)


class CrashingVersions:
    """The real version store, whose first remove fails as a Redis outage would."""

    def __init__(self, versions: VersionStore) -> None:
        self._versions = versions
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._versions, name)

    async def remove(self, doc_keys: Sequence[str]) -> None:
        if not self.crashed and doc_keys:
            self.crashed = True
            raise ConnectionError("redis went away")
        await self._versions.remove(doc_keys)


@pytest.mark.parametrize("name", ["drop", "rename", "rename-replacing", "database-drop"])
@pytest.mark.parametrize("where", ["deleting rows", "removing records"])
async def test_a_replay_after_a_crash_half_way_ends_as_one_clean_run(
    milvus_uri: str,
    redis_client: aioredis.Redis,
    pipeline_name: str,
    tmp_path: Path,
    name: str,
    where: str,
) -> None:
    async def prepared(uri: str, pipeline: str) -> Index:
        embedder = HashEmbedder(dimension=16)
        store = await open_store(uri, embedder)
        versions = VersionStore(redis_client, Keys(pipeline), ttl_seconds=None)
        updater = IndexUpdater(
            store=store, embedder=embedder, chunker=Paragraphs(), versions=versions
        )
        index = Index(store, versions, redis_client, embedder, updater)
        await fill(index, A, 100)
        await fill(index, "app.notes", 100, {"n1": "a note", "d1": "a note with d1's name"})
        await fill(index, "app2.articles", 100)
        return index

    clean = await prepared(str(tmp_path / "clean.db"), f"{pipeline_name}-clean")
    crashed = await prepared(milvus_uri, pipeline_name)
    try:
        await clean.handle(EVENTS[name]())
        expected = await clean.state()

        event = EVENTS[name]()
        source = A if name != "database-drop" else "app"
        handler: CatalogHandler
        if where == "deleting rows":
            crashing_store = CrashingStore(crashed.store, set(await crashed.rows(A)))
            handler = crashed.catalog(store=crashing_store)
            failure: type[Exception] = VectorStoreUnavailable
        else:
            handler = crashed.catalog(versions=CrashingVersions(crashed.versions))
            failure = ConnectionError
        with pytest.raises(failure):
            await handler.handle(event)
        await crashed.store.flush()
        assert await crashed.rows(source) or await crashed.records(source), (
            "the crash must leave the work half done"
        )

        await crashed.handle(event)

        assert await crashed.state() == expected
    finally:
        keys = [k async for k in redis_client.scan_iter(match=f"cdc:{pipeline_name}-clean:*")]
        if keys:
            await redis_client.delete(*keys)
        await clean.store.stop()
        await crashed.store.stop()
