"""Wire framing checked byte by byte with raw sockets: OP_QUERY/OP_REPLY, OP_MSG
checksums, moreToCome, and malformed input that must only cost its own connection."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import bson
from pymongo import AsyncMongoClient

from mongosim import MongoSim

HEADER = struct.Struct("<iiii")


def op_msg(
    request_id: int, body: dict[str, Any], *, flags: int = 0, checksum: bool = False
) -> bytes:
    payload = struct.pack("<I", flags | (1 if checksum else 0)) + b"\x00" + bson.encode(body)
    if checksum:
        payload += b"\xde\xad\xbe\xef"
    return HEADER.pack(HEADER.size + len(payload), request_id, 0, 2013) + payload


def op_query(request_id: int, collection: str, query: dict[str, Any]) -> bytes:
    payload = struct.pack("<i", 0) + collection.encode() + b"\x00" + struct.pack("<ii", 0, -1)
    payload += bson.encode(query)
    return HEADER.pack(HEADER.size + len(payload), request_id, 0, 2004) + payload


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, int, dict[str, Any]]:
    """(responseTo, opCode, document) of the next reply."""
    length, _request_id, response_to, op_code = HEADER.unpack(await reader.readexactly(16))
    payload = await reader.readexactly(length - 16)
    if op_code == 1:
        _flags, _cursor, _start, returned = struct.unpack_from("<iqii", payload)
        assert returned == 1
        return response_to, op_code, bson.decode(payload[20:])
    assert payload[4] == 0
    return response_to, op_code, bson.decode(payload[5:])


async def test_legacy_op_query_handshake_is_answered_with_op_reply(sim: MongoSim) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(op_query(7, "admin.$cmd", {"isMaster": 1, "helloOk": True}))
        response_to, op_code, reply = await read_reply(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert (response_to, op_code) == (7, 1)
    assert reply["ismaster"] is True
    assert reply["setName"] == "rs0"
    assert reply["hosts"] == [f"127.0.0.1:{sim.port}"]
    assert reply["maxWireVersion"] == 21
    assert reply["logicalSessionTimeoutMinutes"] == 30
    assert "topologyVersion" not in reply


async def test_op_msg_checksum_and_more_to_come(sim: MongoSim) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(op_msg(1, {"ping": 1, "$db": "admin"}, checksum=True))
        response_to, op_code, reply = await read_reply(reader)
        assert (response_to, op_code, reply["ok"]) == (1, 2013, 1.0)
        # moreToCome: the insert gets no reply; the ping after it is answered.
        insert = {"insert": "c", "documents": [{"_id": 1}], "$db": "wire", "writeConcern": {"w": 0}}
        writer.write(op_msg(2, insert, flags=2))
        writer.write(op_msg(3, {"find": "c", "filter": {}, "$db": "wire"}))
        response_to, _, reply = await read_reply(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert response_to == 3
    assert reply["cursor"]["firstBatch"] == [{"_id": 1}]


async def test_unknown_command_is_code_59(sim: MongoSim) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(op_msg(1, {"frobnicate": 1, "$db": "admin"}))
        _, _, reply = await read_reply(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert reply["ok"] == 0
    assert reply["code"] == 59
    assert reply["codeName"] == "CommandNotFound"
    assert "operationTime" in reply


async def test_malformed_messages_close_only_their_connection(sim: MongoSim) -> None:
    garbage = [
        HEADER.pack(10, 1, 0, 2013),  # shorter than its own header
        HEADER.pack(16 + 4, 1, 0, 9999) + b"\x00\x00\x00\x00",  # unknown opcode
        HEADER.pack(16 + 9, 1, 0, 2013) + b"\x00\x00\x00\x00\x00\xff\xff\xff\x7f",  # bad BSON
        HEADER.pack(16 + 5, 1, 0, 2013) + b"\x00\x00\x00\x00\x07",  # unknown section kind
    ]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(sim.uri)
    try:
        await client.probe.c.insert_one({"_id": "before"})
        for message in garbage:
            reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
            writer.write(message)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, unanswered
            writer.close()
            await writer.wait_closed()
        await client.probe.c.insert_one({"_id": "after"})
        assert await client.probe.c.count_documents({}) == 2
    finally:
        await client.close()


async def test_oversized_length_is_rejected_without_reading_it(sim: MongoSim) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(HEADER.pack(2_000_000_000, 1, 0, 2013))
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        await writer.wait_closed()
