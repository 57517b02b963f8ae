"""Chunk rows as the indexer sees them, and as Milvus stores them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import DocumentRejected
from indexer.schema import ID_MAX_BYTES, KEY_MAX_BYTES, TEXT_MAX_BYTES

FIELDS = [
    "id",
    "doc_key",
    "namespace",
    "document_id",
    "chunk_index",
    "text",
    "vector",
    "updated_at",
    "metadata",
]
"""Every stored field, in schema order: what a query asks for to rebuild a ChunkRow."""


@dataclass(frozen=True)
class ChunkRow:
    """One chunk as stored: the caller builds ``id`` deterministically.

    ``metadata`` maps configured metadata paths to JSON-able values; a null
    value is not stored, so it reads back absent (see indexer.schema).
    """

    id: str
    doc_key: str
    namespace: str
    document_id: str
    chunk_index: int
    text: str
    vector: Sequence[float]
    updated_at: int
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    """One search result; ``score`` is cosine similarity, higher is nearer."""

    id: str
    doc_key: str
    chunk_index: int
    text: str
    score: float
    metadata: Mapping[str, Any]


def to_entity(row: ChunkRow, *, dimension: int, metadata_paths: Sequence[str]) -> dict[str, Any]:
    """*row* as a Milvus entity.

    Raises DocumentRejected naming the document when the row cannot be stored:
    a vector of another dimension, a text or key over its field's size, a
    metadata path that is not configured, metadata that is not JSON-able.
    """
    problems = []
    # Keys starting with "$" are the pipeline's own marks (such as "$truncated"):
    # no configured path can start with "$".
    unknown = {key for key in row.metadata if not key.startswith("$")} - set(metadata_paths)
    if unknown:
        problems.append(f"metadata paths {sorted(unknown)} are not configured")
    if len(row.vector) != dimension:
        problems.append(f"vector has {len(row.vector)} dimensions, not {dimension}")
    for name, value, limit in (
        ("id", row.id, ID_MAX_BYTES),
        ("doc_key", row.doc_key, KEY_MAX_BYTES),
        ("namespace", row.namespace, KEY_MAX_BYTES),
        ("document_id", row.document_id, KEY_MAX_BYTES),
        ("text", row.text, TEXT_MAX_BYTES),
    ):
        if len(value.encode()) > limit:
            problems.append(f"{name} is longer than {limit} bytes")
    if problems:
        raise DocumentRejected(f"chunk {row.chunk_index} of {row.doc_key}: {'; '.join(problems)}")
    return {
        "id": row.id,
        "doc_key": row.doc_key,
        "namespace": row.namespace,
        "document_id": row.document_id,
        "chunk_index": row.chunk_index,
        "text": row.text,
        "vector": [float(x) for x in row.vector],
        "updated_at": row.updated_at,
        "metadata": _json_object(row),
    }


def from_entity(found: Mapping[str, Any]) -> ChunkRow:
    """A ChunkRow from a query result that asked for FIELDS."""
    return ChunkRow(
        id=str(found["id"]),
        doc_key=found["doc_key"],
        namespace=found["namespace"],
        document_id=found["document_id"],
        chunk_index=int(found["chunk_index"]),
        text=found["text"],
        vector=[float(x) for x in found["vector"]],
        updated_at=int(found["updated_at"]),
        metadata=found["metadata"],
    )


def _json_object(row: ChunkRow) -> dict[str, Any]:
    """*row*'s metadata as Milvus will return it: nulls left out, tuples as
    lists, keys as strings."""
    present = {path: value for path, value in row.metadata.items() if value is not None}
    try:
        normalised: dict[str, Any] = json.loads(json.dumps(present, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise DocumentRejected(
            f"chunk {row.chunk_index} of {row.doc_key}: metadata is not JSON-able: {err}"
        ) from err
    return normalised
