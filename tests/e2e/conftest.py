"""Fixtures of the end-to-end tests: the whole sidecar against mongosim, the shared
real Redis, a private Milvus Lite database and the real model. The checks and
the service runner they use live in e2e_harness.py."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient

from tests.conftest import COLLECTION, DATABASE
from tests.embedders import CountingEmbedder


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: an end-to-end test that starts the service more than once or as a process"
    )


@pytest.fixture
def embedder(minilm: CountingEmbedder) -> CountingEmbedder:
    """The session's model, under the name these tests give the sidecar's embedder."""
    return minilm


@pytest.fixture
def articles(mongo: AsyncMongoClient[dict[str, Any]]) -> Any:
    """The watched collection, through the test's client."""
    return mongo[DATABASE][COLLECTION]
