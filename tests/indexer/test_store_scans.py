"""VectorStore's scans against a real Milvus Lite database: every row a page at a time,
the id space split by hex prefix when a query hits the limit, and lookups by id."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

import indexer.store
from indexer.store import ChunkRow, VectorStore

DIM = 8
FINGERPRINT = "test-model:0123456789abcdef:fp32"
LIMIT = 8
"""The scan limit the tests set, so a few dozen rows need several levels of splitting."""


def hex_id(seed: str) -> str:
    """A 32-digit lowercase hex id, like the indexer's chunk ids."""
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


# 30 ids spread over the id space, and 20 under "a" (more than a limit's worth of them
# also under "a" then one more digit), so the scan must split at least twice.
SPREAD = [hex_id(f"spread-{n}") for n in range(30)]
CROWDED = ["a" + hex_id(f"crowded-{n}")[1:] for n in range(10)] + [
    "a7" + hex_id(f"crowded-deeper-{n}")[2:] for n in range(10)
]
IDS = sorted(set(SPREAD + CROWDED))


def row(chunk_id: str, n: int) -> ChunkRow:
    return ChunkRow(
        id=chunk_id,
        doc_key=f"app.articles/doc-{n % 7}",
        namespace="app.articles",
        document_id=f"doc-{n % 7}",
        chunk_index=n,
        text=f"chunk {n}",
        vector=[1.0] + [0.0] * (DIM - 1),
        updated_at=1_764_000_000_000 + n,
        metadata={},
    )


@pytest.fixture
async def store(milvus_uri: str) -> AsyncIterator[VectorStore]:
    """A started store holding a row for each of IDS, flushed."""
    opened = VectorStore(
        milvus_uri, "chunks", dimension=DIM, fingerprint=FINGERPRINT, metadata_fields=()
    )
    await opened.start()
    try:
        await opened.upsert([row(chunk_id, n) for n, chunk_id in enumerate(IDS)])
        await opened.flush()
        yield opened
    finally:
        await opened.stop()


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(indexer.store, "_SCAN_LIMIT", LIMIT)
    return LIMIT


async def all_pages(
    store: VectorStore, fields: list[str], prefix: str = ""
) -> list[list[dict[str, Any]]]:
    return [page async for page in store.pages(fields, prefix=prefix)]


def test_the_ids_need_splitting_twice() -> None:
    under_a = [i for i in IDS if i.startswith("a")]
    under_a7 = [i for i in IDS if i.startswith("a7")]

    assert len(IDS) == 50
    assert len(under_a) > LIMIT
    assert len(under_a7) > LIMIT


async def test_pages_give_every_row_once_in_pages_under_the_limit(
    store: VectorStore, small_limit: int
) -> None:
    pages = await all_pages(store, ["id", "doc_key"])

    ids = Counter(found["id"] for page in pages for found in page)
    assert ids == Counter(IDS)
    assert all(0 < len(page) < small_limit for page in pages)
    assert all(set(found) == {"id", "doc_key"} for page in pages for found in page)


async def test_pages_carry_the_asked_fields(store: VectorStore, small_limit: int) -> None:
    pages = await all_pages(store, ["id", "chunk_index", "document_id"])

    by_id = {found["id"]: found for page in pages for found in page}
    for n, chunk_id in enumerate(IDS):
        assert (by_id[chunk_id]["chunk_index"], by_id[chunk_id]["document_id"]) == (
            n,
            f"doc-{n % 7}",
        )


async def test_a_prefix_restricts_the_scan(store: VectorStore, small_limit: int) -> None:
    for prefix in ("a", "a7", "3", "f0"):
        pages = await all_pages(store, ["id"], prefix=prefix)

        ids = Counter(found["id"] for page in pages for found in page)
        assert ids == Counter(i for i in IDS if i.startswith(prefix)), prefix
        assert all(len(page) < small_limit for page in pages)


async def test_a_prefix_nothing_starts_with_gives_no_pages(
    store: VectorStore, small_limit: int
) -> None:
    absent = next(
        p
        for p in (f"{d:x}{e:x}" for d in range(16) for e in range(16))
        if not any(i.startswith(p) for i in IDS)
    )

    assert await all_pages(store, ["id"], prefix=absent) == []


async def test_under_the_limit_one_page_holds_everything(store: VectorStore) -> None:
    pages = await all_pages(store, ["id"])

    assert len(pages) == 1
    assert sorted(found["id"] for found in pages[0]) == IDS


async def test_the_full_scans_built_on_pages_see_every_row(
    store: VectorStore, small_limit: int
) -> None:
    grouped = await store.chunk_ids_by_document()

    assert sum(len(ids) for ids in grouped.values()) == len(IDS)
    assert set().union(*grouped.values()) == set(IDS)
    assert grouped["app.articles/doc-0"] == {i for n, i in enumerate(IDS) if n % 7 == 0}


async def test_existing_names_the_stored_ids_among_those_asked(
    store: VectorStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer.store, "_PAGE", 3)  # several lookups per call
    unknown = [hex_id(f"never-stored-{n}") for n in range(5)]
    asked = [*IDS[:10], *unknown, IDS[0], IDS[-1]]

    assert await store.existing(asked) == {*IDS[:10], IDS[-1]}
    assert await store.existing(unknown) == set()
    assert await store.existing([]) == set()


async def test_existing_sees_a_write_before_any_flush(
    store: VectorStore,
) -> None:
    fresh = hex_id("fresh")
    await store.upsert([row(fresh, 99)])
    await store.delete([IDS[0]])

    assert await store.existing([fresh, IDS[0], IDS[1]]) == {fresh, IDS[1]}
