"""Fixtures for mongosim's own tests: a simulated replica set and real pymongo clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from pymongo import AsyncMongoClient, MongoClient

from mongosim import MongoSim, ThreadedMongoSim


@pytest.fixture
async def sim() -> AsyncIterator[MongoSim]:
    """mongosim served on the test's own event loop, with a small oplog."""
    async with MongoSim(port=0, oplog_size=1_000, repl_set="rs0") as server:
        yield server


@pytest.fixture
async def client(sim: MongoSim) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    """An async driver client of *sim*."""
    driver: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        sim.uri, serverSelectionTimeoutMS=5_000
    )
    try:
        yield driver
    finally:
        await driver.close()


@pytest.fixture
def threaded_sim() -> Iterator[ThreadedMongoSim]:
    """mongosim on its own thread, for synchronous clients."""
    with ThreadedMongoSim(port=0, oplog_size=1_000) as server:
        yield server


@pytest.fixture
def sync_client(threaded_sim: ThreadedMongoSim) -> Iterator[MongoClient[dict[str, object]]]:
    """A synchronous driver client of *threaded_sim*."""
    driver: MongoClient[dict[str, object]] = MongoClient(
        threaded_sim.uri, serverSelectionTimeoutMS=5_000
    )
    try:
        yield driver
    finally:
        driver.close()
