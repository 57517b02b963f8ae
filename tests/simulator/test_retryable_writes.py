"""Retryable writes: a retried write is applied once, as on a real server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from bson import Int64
from bson.binary import Binary, UuidRepresentation
from pymongo import AsyncMongoClient
from pymongo.errors import WriteConcernError

from mongosim import MongoSim

Client = AsyncMongoClient[dict[str, Any]]


async def wce_once(client: Client, command: str, **labels: Any) -> None:
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {
                "failCommands": [command],
                "writeConcernError": {"code": 91, "errmsg": "shutdown in progress"},
                **labels,
            },
        }
    )


async def test_a_write_retried_after_a_write_concern_error_is_applied_once(
    sim: MongoSim, client: Client
) -> None:
    """The first attempt is applied and answered with a retryable write concern
    error; the driver retries with the same txnNumber and gets the first result."""
    articles = client.app.articles
    async with await articles.watch() as stream:
        await wce_once(client, "insert")
        await articles.insert_one({"_id": 1, "title": "once"})
        await wce_once(client, "update")
        await articles.update_one({"_id": 1}, {"$inc": {"n": 1}})
        changes = [await stream.next(), await stream.next()]
        assert await stream.try_next() is None
    assert [c["operationType"] for c in changes] == ["insert", "update"]
    assert await articles.find_one({"_id": 1}) == {"_id": 1, "title": "once", "n": 1}


async def test_explicit_error_labels_win_over_the_servers_choice(client: Client) -> None:
    await wce_once(client, "insert", errorLabels=[])
    with pytest.raises(WriteConcernError):
        await client.app.articles.insert_one({"_id": 2})
    assert await client.app.articles.count_documents({"_id": 2}) == 1


async def test_the_same_statement_sent_twice_returns_the_first_result(client: Client) -> None:
    session = {"id": Binary.from_uuid(uuid.uuid4(), UuidRepresentation.STANDARD)}
    body = {"insert": "articles", "documents": [{"_id": 3}], "lsid": session, "txnNumber": Int64(7)}
    first = await client.app.command(dict(body))
    again = await client.app.command(dict(body))
    assert first["n"] == again["n"] == 1
    assert "writeErrors" not in again
    assert await client.app.articles.count_documents({}) == 1
