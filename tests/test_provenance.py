"""Reading the fingerprint an existing collection was embedded with."""

from __future__ import annotations

import asyncio
from pathlib import Path

from indexer.provenance import recorded_fingerprint
from indexer.store import VectorStore
from sidecar.app import recorded_embedder
from sidecar.settings import load_settings

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


async def test_service_reads_the_record_only_when_auto_chooses(tmp_path: Path) -> None:
    uri = str(tmp_path / "milvus.db")
    store = VectorStore(uri, "documents", dimension=4, fingerprint=FINGERPRINT, metadata_fields=[])
    await store.start()
    await store.stop()
    auto = load_settings(milvus_uri=uri, milvus_collection="documents")
    assert auto.embedding_precision == "auto"
    assert await recorded_embedder(auto) == FINGERPRINT
    explicit = load_settings(milvus_uri=uri, embedding_precision="bf16")
    assert await recorded_embedder(explicit) is None
