"""Reading the fingerprint an existing collection was embedded with."""

from __future__ import annotations

import asyncio
from pathlib import Path

from indexer.provenance import recorded_fingerprint
from indexer.store import VectorStore

FINGERPRINT = "all-MiniLM-L6-v2:5076c6045d315992:openvino-bf16"


async def test_recorded_fingerprint_of_missing_and_existing_collections(tmp_path: Path) -> None:
    uri = str(tmp_path / "milvus.db")
    assert await asyncio.to_thread(recorded_fingerprint, uri, "chunks") is None
    assert list(tmp_path.iterdir()) == [], "reading must create no database"  # noqa: ASYNC240

    store = VectorStore(uri, "chunks", dimension=4, fingerprint=FINGERPRINT, metadata_fields=[])
    await store.start()
    await store.stop()
    assert await asyncio.to_thread(recorded_fingerprint, uri, "chunks") == FINGERPRINT
    assert await asyncio.to_thread(recorded_fingerprint, uri, "others") is None

    # The database is released again: the service's store opens it after the read.
    await store.start()
    await store.stop()
