"""Fixtures of the end-to-end tests: the whole sidecar against mongosim, the shared
real Redis, a private Milvus Lite database and the real model. The checks and
the service runner they use live in e2e_harness.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import COLLECTION, DATABASE, REDIS_URL
from pymongo import AsyncMongoClient

from indexer.embedding import SentenceTransformerEmbedder
from mongosim import ThreadedMongoSim
from sidecar.settings import Settings, load_settings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: an end-to-end test that starts the service more than once or as a process"
    )


@pytest.fixture
def embedder(minilm: SentenceTransformerEmbedder) -> SentenceTransformerEmbedder:
    """The session's model, under the name these tests give the sidecar's embedder."""
    return minilm


@pytest.fixture
def articles(mongo: AsyncMongoClient[dict[str, Any]]) -> Any:
    """The watched collection, through the test's client."""
    return mongo[DATABASE][COLLECTION]


@pytest.fixture
def make_settings(
    sim: ThreadedMongoSim, pipeline_name: str, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings of this test's pipeline; keyword arguments override the defaults.

    Small chunks keep the model's work (and the suite) short; short intervals
    make the service react within a fraction of a second."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "mongo_uri": sim.uri,
            "redis_url": REDIS_URL,
            "pipeline": pipeline_name,
            "milvus_uri": str(tmp_path / "milvus.db"),
            "database": DATABASE,
            "collections": [COLLECTION],
            "text_fields": ["title", "body"],
            "metadata_fields": ["lang", "tag"],
            "filter": {},
            "chunk_size": 200,
            "chunk_overlap": 20,
            "milvus_flush_interval": 0.2,
            "index_batch_size": 10,
            "index_batch_interval": 0.1,
            "index_retry_times": 1,
            "index_retry_delay": 0.1,
        }
        values.update(overrides)
        return load_settings(**values)

    return build
