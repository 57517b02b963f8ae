"""MongoDB wire-protocol framing: OP_MSG and the legacy OP_QUERY/OP_REPLY handshake.

Only framing lives here; what a command means is decided in ``mongosim.commands``.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

import bson
from bson.codec_options import CodecOptions

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013

CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
QUERY_SECONDARY_OK = 1 << 2

MAX_MESSAGE_SIZE = 48_000_000

_HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")
_OP_REPLY_PREFIX = struct.Struct("<iqii")

# Decoding keeps every BSON type as the client sent it (Binary UUIDs stay Binary,
# Int64 stays Int64) so documents round-trip unchanged through storage.
DECODE_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions()


class ProtocolError(Exception):
    """A message that is not valid MongoDB wire protocol; the connection must be closed."""


@dataclass(slots=True)
class Request:
    """One decoded client message.

    ``body`` is the command document with OP_MSG document sequences merged in
    as lists; ``db`` is the database the command targets.
    """

    request_id: int
    op_code: int
    body: dict[str, Any]
    db: str
    more_to_come: bool = False
    secondary_ok: bool = False


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """Read one message from *reader*.

    Returns None when the peer closed the connection between messages.
    Raises ProtocolError for anything malformed, oversized or unsupported.
    """
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a message header") from exc
    length, request_id, _response_to, op_code = _HEADER.unpack(header)
    if length < _HEADER.size or length > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"message length {length} out of range")
    try:
        payload = await reader.readexactly(length - _HEADER.size)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("connection closed inside a message body") from exc
    return parse_request(request_id, op_code, payload)


def parse_request(request_id: int, op_code: int, payload: bytes) -> Request:
    """Decode the payload of a message whose header has already been read.

    Raises ProtocolError if the payload is not a well-formed OP_MSG or OP_QUERY.
    """
    try:
        if op_code == OP_MSG:
            return _parse_msg(request_id, payload)
        if op_code == OP_QUERY:
            return _parse_query(request_id, payload)
    except ProtocolError:
        raise
    except (bson.errors.BSONError, struct.error, ValueError, IndexError, KeyError) as exc:
        raise ProtocolError(f"malformed opCode {op_code} message: {exc}") from exc
    raise ProtocolError(f"unsupported opCode {op_code}")


def _parse_msg(request_id: int, payload: bytes) -> Request:
    (flags,) = _UINT32.unpack_from(payload, 0)
    end = len(payload)
    if flags & CHECKSUM_PRESENT:
        # The CRC-32C trailer guards against corruption on the wire; loopback TCP
        # already checksums, so it is stripped rather than recomputed.
        end -= 4
    pos = 4
    body: dict[str, Any] | None = None
    extra: dict[str, list[dict[str, Any]]] = {}
    while pos < end:
        kind = payload[pos]
        pos += 1
        if kind == 0:
            (size,) = _INT32.unpack_from(payload, pos)
            if body is not None or size < 5 or pos + size > end:
                raise ProtocolError("invalid OP_MSG body section")
            body = bson.decode(payload[pos : pos + size], DECODE_OPTIONS)
            pos += size
        elif kind == 1:
            (size,) = _INT32.unpack_from(payload, pos)
            section_end = pos + size
            if size < 5 or section_end > end:
                raise ProtocolError("invalid OP_MSG document sequence")
            name_end = payload.index(b"\x00", pos + 4, section_end)
            name = payload[pos + 4 : name_end].decode()
            docs = bson.decode_all(payload[name_end + 1 : section_end], DECODE_OPTIONS)
            extra.setdefault(name, []).extend(docs)
            pos = section_end
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if body is None:
        raise ProtocolError("OP_MSG without a body section")
    body.update(extra)
    db = body.get("$db", "admin")
    if not isinstance(db, str):
        raise ProtocolError("$db must be a string")
    return Request(
        request_id=request_id,
        op_code=OP_MSG,
        body=body,
        db=db,
        more_to_come=bool(flags & MORE_TO_COME),
    )


def _parse_query(request_id: int, payload: bytes) -> Request:
    (flags,) = _INT32.unpack_from(payload, 0)
    name_end = payload.index(b"\x00", 4)
    full_name = payload[4:name_end].decode()
    db, _, coll = full_name.partition(".")
    if coll != "$cmd":
        raise ProtocolError(f"OP_QUERY is only accepted for commands, not {full_name!r}")
    pos = name_end + 1 + 8  # numberToSkip and numberToReturn do not apply to commands
    (size,) = _INT32.unpack_from(payload, pos)
    query = bson.decode(payload[pos : pos + size], DECODE_OPTIONS)
    if "$query" in query:
        query = dict(query["$query"])
    return Request(
        request_id=request_id,
        op_code=OP_QUERY,
        body=query,
        db=db,
        secondary_ok=bool(flags & QUERY_SECONDARY_OK),
    )


def encode_reply(request: Request, reply_id: int, reply: dict[str, Any]) -> bytes:
    """Frame *reply* as the answer to *request*, in the opcode the request used."""
    doc = bson.encode(reply)
    if request.op_code == OP_QUERY:
        body = _OP_REPLY_PREFIX.pack(0, 0, 0, 1) + doc
        op_code = OP_REPLY
    else:
        body = b"\x00\x00\x00\x00\x00" + doc  # flagBits 0, one kind-0 section
        op_code = OP_MSG
    header = _HEADER.pack(_HEADER.size + len(body), reply_id, request.request_id, op_code)
    return header + body
