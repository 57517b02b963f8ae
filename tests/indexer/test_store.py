"""VectorStore against a real Milvus Lite database in the test's own directory."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigurationError, DocumentRejected, VectorStoreUnavailable
from indexer.store import ChunkRow, VectorStore

DIM = 8
FINGERPRINT = "test-model:0123456789abcdef:fp32"
METADATA = ("author.name", "tags", "extra")
POEM = "床前明月光，疑是地上霜。"

StoreFactory = Callable[..., VectorStore]


@pytest.fixture
async def open_store(milvus_uri: str) -> AsyncIterator[StoreFactory]:
    """Make VectorStores on this test's database; all are stopped at the end."""
    made: list[VectorStore] = []

    def make(**overrides: Any) -> VectorStore:
        options: dict[str, Any] = {
            "dimension": DIM,
            "fingerprint": FINGERPRINT,
            "metadata_fields": METADATA,
        }
        options.update(overrides)
        store = VectorStore(milvus_uri, options.pop("collection", "chunks"), **options)
        made.append(store)
        return store

    try:
        yield make
    finally:
        for store in made:
            await store.stop()


def _unit(*components: float) -> list[float]:
    padded = list(components) + [0.0] * (DIM - len(components))
    norm = math.sqrt(sum(x * x for x in padded))
    return [x / norm for x in padded]


def _row(
    doc: str,
    index: int,
    vector: Sequence[float],
    *,
    text: str | None = None,
    namespace: str = "docs",
    metadata: Mapping[str, Any] | None = None,
) -> ChunkRow:
    return ChunkRow(
        id=f"{namespace}/{doc}#{index}",
        doc_key=f"{namespace}/{doc}",
        namespace=namespace,
        document_id=doc,
        chunk_index=index,
        text=text if text is not None else f"chunk {index} of {doc}",
        vector=vector,
        updated_at=1_764_000_000_000 + index,
        metadata=metadata or {},
    )


def _sealed_files(uri: str, collection: str = "chunks") -> int:
    """Data and delete files Milvus Lite has sealed by flushing (its manifest)."""
    manifest = json.loads((Path(uri) / "collections" / collection / "manifest.json").read_text())
    partition = manifest["partitions"]["_default"]
    return len(partition["data_files"]) + len(partition["delta_files"])


async def test_start_creates_an_empty_collection_and_is_idempotent(
    open_store: StoreFactory,
) -> None:
    store = open_store()

    await store.start()
    await store.start()

    assert await store.count() == 0
    assert await store.search(_unit(1)) == []


async def test_upsert_fetch_and_delete_by_id(open_store: StoreFactory) -> None:
    store = open_store()
    await store.start()
    rows = [_row("a", i, _unit(1, i)) for i in range(3)]

    await store.upsert(rows)
    fetched = await store.fetch([r.id for r in rows] + ["docs/missing#0"])

    assert set(fetched) == {r.id for r in rows}
    for row in rows:
        got = fetched[row.id]
        assert (got.doc_key, got.namespace, got.document_id) == ("docs/a", "docs", "a")
        assert (got.chunk_index, got.text, got.updated_at) == (
            row.chunk_index,
            row.text,
            row.updated_at,
        )
        assert list(got.vector) == pytest.approx(list(row.vector), abs=1e-6)

    await store.upsert([_row("a", 0, _unit(0, 1), text="replaced")])
    await store.delete([rows[1].id, "docs/missing#0"])

    after = await store.fetch([r.id for r in rows])
    assert set(after) == {rows[0].id, rows[2].id}
    assert after[rows[0].id].text == "replaced"
    assert await store.count() == 2


async def test_large_batches_round_trip(open_store: StoreFactory) -> None:
    store = open_store()
    await store.start()
    rows = [_row(f"d{i // 10}", i % 10, _unit(1, i / 2500)) for i in range(2500)]

    await store.upsert(rows)
    fetched = await store.fetch([r.id for r in rows])
    await store.delete([r.id for r in rows[:1500]])

    assert len(fetched) == 2500
    assert await store.count() == 1000


async def test_search_finds_the_nearest_first(open_store: StoreFactory) -> None:
    store = open_store()
    await store.start()
    await store.upsert(
        [
            _row("near", 0, _unit(1, 0.1)),
            _row("middle", 0, _unit(1, 1)),
            _row("far", 0, _unit(0, 0, 1)),
            _row("other-ns", 0, _unit(1, 0.05), namespace="elsewhere"),
        ]
    )

    everywhere = await store.search(_unit(1), limit=3)
    in_docs = await store.search(_unit(1), limit=3, namespace="docs")

    assert [h.doc_key for h in everywhere] == ["elsewhere/other-ns", "docs/near", "docs/middle"]
    assert [h.doc_key for h in in_docs] == ["docs/near", "docs/middle", "docs/far"]
    assert in_docs[0].score == pytest.approx(1 / math.sqrt(1.01), abs=1e-4)
    assert in_docs[0].score > in_docs[1].score > in_docs[2].score
    assert (in_docs[0].id, in_docs[0].chunk_index, in_docs[0].text) == (
        "docs/near#0",
        0,
        "chunk 0 of near",
    )


async def test_metadata_and_chinese_text_round_trip(open_store: StoreFactory) -> None:
    store = open_store()
    await store.start()
    metadata = {
        "author.name": "李白",
        "tags": ["诗", "唐朝", {"nested": {"deeper": [1, 2.5, True, None]}}],
        "extra": None,
    }
    row = _row("poem", 0, _unit(1), text=POEM, metadata=metadata)
    plain = _row("plain", 0, _unit(0, 1))

    await store.upsert([row, plain])
    fetched = await store.fetch([row.id, plain.id])
    hit = (await store.search(_unit(1), limit=1))[0]

    expected = {"author.name": "李白", "tags": metadata["tags"]}
    assert fetched[row.id].text == POEM
    assert fetched[row.id].metadata == expected
    assert fetched[plain.id].metadata == {}
    assert (hit.text, hit.metadata) == (POEM, expected)


async def test_rows_that_cannot_be_stored_are_rejected_before_writing(
    open_store: StoreFactory,
) -> None:
    store = open_store()
    await store.start()
    good = _row("good", 0, _unit(1))

    for bad in (
        _row("short", 0, [1.0, 0.0]),
        _row("unknown-path", 0, _unit(1), metadata={"not.configured": 1}),
        _row("not-json", 0, _unit(1), metadata={"tags": {1, 2}}),
        _row("huge", 0, _unit(1), text="x" * 70_000),
    ):
        with pytest.raises(DocumentRejected, match=bad.doc_key):
            await store.upsert([good, bad])

    assert await store.count() == 0


async def test_chunks_of_returns_a_documents_chunks_in_order(open_store: StoreFactory) -> None:
    store = open_store()
    await store.start()
    awkward = 'quote " and backslash \\ in a key'
    await store.upsert(
        [_row(awkward, i, _unit(1, i)) for i in (2, 0, 1)] + [_row("other", 0, _unit(1))]
    )

    chunks = await store.chunks_of(f"docs/{awkward}")

    assert [c.chunk_index for c in chunks] == [0, 1, 2]
    assert {c.document_id for c in chunks} == {awkward}
    assert await store.chunks_of("docs/nothing") == []


async def test_flush_is_due_after_enough_rows(open_store: StoreFactory, milvus_uri: str) -> None:
    store = open_store(flush_rows=10, flush_interval=3600)
    await store.start()
    sealed = _sealed_files(milvus_uri)

    await store.upsert([_row("a", i, _unit(1, i)) for i in range(6)])
    await store.flush_if_due()
    assert (store.unflushed_rows, _sealed_files(milvus_uri)) == (6, sealed)

    await store.delete(["docs/a#0", "docs/a#1", "docs/a#2", "docs/a#3"])
    await store.flush_if_due()

    assert store.unflushed_rows == 0
    assert _sealed_files(milvus_uri) > sealed
    assert await store.count() == 2


async def test_flush_is_due_after_the_interval(open_store: StoreFactory, milvus_uri: str) -> None:
    store = open_store(flush_rows=10_000, flush_interval=0.3)
    await store.start()
    sealed = _sealed_files(milvus_uri)
    await store.flush_if_due()
    assert _sealed_files(milvus_uri) == sealed  # nothing written, nothing due

    written_at = time.monotonic()
    await store.upsert([_row("a", 0, _unit(1))])
    await store.flush_if_due()
    if time.monotonic() - written_at < 0.3:
        assert store.unflushed_rows == 1

    deadline = time.monotonic() + 10
    while store.unflushed_rows and time.monotonic() < deadline:
        await store.flush_if_due()
        await asyncio.sleep(0.05)

    assert store.unflushed_rows == 0
    assert time.monotonic() - written_at >= 0.3
    assert _sealed_files(milvus_uri) > sealed


async def test_stop_flushes_and_a_new_store_reopens_the_same_data(
    open_store: StoreFactory, milvus_uri: str
) -> None:
    first = open_store()
    await first.start()
    rows = [_row("kept", i, _unit(1, i), metadata={"author.name": "王"}) for i in range(4)]
    await first.upsert(rows)
    sealed = _sealed_files(milvus_uri)

    await first.stop()
    await first.stop()
    assert _sealed_files(milvus_uri) > sealed

    second = open_store()
    await second.start()
    fetched = await second.fetch([r.id for r in rows])

    assert await second.count() == 4
    assert {r.id: r.metadata for r in fetched.values()} == {
        r.id: {"author.name": "王"} for r in rows
    }


async def test_a_stopped_store_refuses_work(open_store: StoreFactory) -> None:
    store = open_store()
    await store.start()
    await store.stop()

    with pytest.raises(VectorStoreUnavailable):
        await store.upsert([_row("a", 0, _unit(1))])


async def test_a_different_dimension_is_a_configuration_error(open_store: StoreFactory) -> None:
    await open_store().start()

    with pytest.raises(ConfigurationError) as caught:
        await open_store(dimension=16).start()

    message = str(caught.value)
    assert "field vector is FLOAT_VECTOR(8), expected FLOAT_VECTOR(16)" in message
    assert "Drop the collection" in message
    assert "another collection name" in message


async def test_a_different_model_fingerprint_is_a_configuration_error(
    open_store: StoreFactory,
) -> None:
    await open_store().start()

    with pytest.raises(ConfigurationError) as caught:
        await open_store(fingerprint="test-model:fedcba9876543210:bf16").start()

    message = str(caught.value)
    assert FINGERPRINT in message
    assert "test-model:fedcba9876543210:bf16" in message
    assert "Drop the collection" in message


async def test_a_foreign_schema_is_a_configuration_error(
    open_store: StoreFactory, milvus_uri: str
) -> None:
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=milvus_uri)
    try:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        schema.add_field("title", DataType.VARCHAR, max_length=64)
        client.create_collection("theirs", schema=schema)
    finally:
        client.close()

    with pytest.raises(ConfigurationError) as caught:
        await open_store(collection="theirs").start()

    message = str(caught.value)
    assert "missing fields chunk_index, doc_key, document_id, metadata" in message
    assert "unexpected fields title" in message
    assert "embedder None" in message


async def test_impossible_settings_are_configuration_errors(milvus_uri: str) -> None:
    def make(**overrides: Any) -> VectorStore:
        options: dict[str, Any] = {
            "dimension": DIM,
            "fingerprint": FINGERPRINT,
            "metadata_fields": METADATA,
        }
        options.update(overrides)
        return VectorStore(milvus_uri, "chunks", **options)

    for overrides in (
        {"dimension": 0},
        {"flush_rows": 0},
        {"flush_interval": 0},
        {"metadata_fields": ["tags", "tags"]},
        {"metadata_fields": [""]},
    ):
        with pytest.raises(ConfigurationError):
            make(**overrides)


OTHER_PROCESS = """
import asyncio, sys
from indexer.store import VectorStore
from core.errors import VectorStoreUnavailable

async def main() -> str:
    store = VectorStore(sys.argv[1], "chunks", dimension=8, fingerprint=sys.argv[2],
                        metadata_fields=["author.name", "tags", "extra"])
    try:
        await store.start()
    except VectorStoreUnavailable:
        return "locked"
    count = await store.count()
    await store.stop()
    return f"opened {count}"

print(asyncio.run(main()))
"""


def _open_in_other_process(uri: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, uri, FINGERPRINT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


async def test_one_process_at_a_time_holds_a_lite_database(
    open_store: StoreFactory, milvus_uri: str
) -> None:
    store = open_store()
    await store.start()
    await store.upsert([_row("a", 0, _unit(1))])

    assert await asyncio.to_thread(_open_in_other_process, milvus_uri) == "locked"

    await store.stop()

    assert await asyncio.to_thread(_open_in_other_process, milvus_uri) == "opened 1"


async def test_chunk_ids_by_document_scans_past_the_query_limit(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verification scan splits the id space when one query would be capped."""
    import hashlib

    import indexer.store

    monkeypatch.setattr(indexer.store, "_SCAN_LIMIT", 7)
    store = open_store()
    await store.start()
    rows = []
    for n in range(40):
        base = _row(f"d{n % 5}", n, _unit(1.0, n))
        hex_id = hashlib.sha256(str(n).encode()).hexdigest()[:32]
        rows.append(ChunkRow(**{**base.__dict__, "id": hex_id}))
    await store.upsert(rows)
    grouped = await store.chunk_ids_by_document()
    expected: dict[str, set[str]] = {}
    for row in rows:
        expected.setdefault(row.doc_key, set()).add(row.id)
    assert grouped == expected


async def test_an_unreachable_server_is_an_outage_whose_message_hides_the_password() -> None:
    store = VectorStore(
        "http://reader:hunter2@127.0.0.1:1",
        "chunks",
        dimension=DIM,
        fingerprint=FINGERPRINT,
        metadata_fields=METADATA,
    )
    with pytest.raises(VectorStoreUnavailable) as caught:
        await store.start()
    assert "reader:****@127.0.0.1:1" in str(caught.value)
    assert "hunter2" not in str(caught.value)
