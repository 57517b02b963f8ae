"""Fixtures for the indexer's building blocks: the real model, a private Milvus Lite database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer.embedding import SentenceTransformerEmbedder


@pytest.fixture(scope="session")
def minilm() -> Iterator[SentenceTransformerEmbedder]:
    """The bundled all-MiniLM-L6-v2 in fp32, loaded once for the whole session."""
    embedder = SentenceTransformerEmbedder()
    try:
        yield embedder
    finally:
        asyncio.run(embedder.stop())


@pytest.fixture
def milvus_uri(tmp_path: Path) -> str:
    """A Milvus Lite database file that only this test opens."""
    return str(tmp_path / "milvus.db")
