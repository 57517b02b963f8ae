"""Fixtures for the indexer's building blocks: a private Milvus Lite database (the model is
the session-wide `minilm` of tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def milvus_uri(tmp_path: Path) -> str:
    """A Milvus Lite database file that only this test opens."""
    return str(tmp_path / "milvus.db")
