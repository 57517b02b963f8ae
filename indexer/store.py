"""The Milvus collection of document chunks, as the indexer writes and verifies it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pymilvus import MilvusClient, MilvusException

from core.errors import ConfigurationError, VectorStoreUnavailable, redact
from indexer.lite import LITE_SERVERS, is_lite
from indexer.rows import FIELDS, ChunkRow, Hit, from_entity, to_entity
from indexer.schema import (
    FINGERPRINT_PROPERTY,
    build_schema,
    check_metadata_paths,
    expected_fields,
    schema_differences,
)

__all__ = ["ChunkRow", "Hit", "VectorStore"]

T = TypeVar("T")

# Milvus caps one query's result window and one request's size: page below both.
_PAGE = 1000
_SCAN_LIMIT = 16_384


class VectorStore:
    """A Milvus collection of chunks, through one worker thread.

    *uri* is a Milvus Lite database path ending in ``.db`` (created if
    missing) or a server URL such as ``http://host:19530``. A Milvus Lite
    database can be open in one process at a time. Every pymilvus call blocks,
    so all of them run in order on one dedicated thread, never on the event
    loop.

    Writes become cheap to search and to scan by filter only once flushed: the
    caller calls flush_if_due() after its writes and periodically, and the
    store flushes when ``flush_rows`` rows were written or ``flush_interval``
    seconds passed since the first unflushed write. Queries by primary key are
    cheap either way.

    The caller must call start() before anything else and must not share a
    VectorStore between event loops.
    """

    def __init__(
        self,
        uri: str,
        collection: str,
        *,
        dimension: int,
        fingerprint: str,
        metadata_fields: Sequence[str],
        flush_rows: int = 5000,
        flush_interval: float = 2.0,
    ) -> None:
        if dimension < 1:
            raise ConfigurationError(f"dimension must be at least 1, got {dimension}")
        if flush_rows < 1 or flush_interval <= 0:
            raise ConfigurationError("flush_rows and flush_interval must be positive")
        self._uri = uri
        self._collection = collection
        self._dimension = dimension
        self._fingerprint = fingerprint
        self._metadata_paths = check_metadata_paths(metadata_fields)
        self._flush_rows = flush_rows
        self._flush_interval = flush_interval
        self._client: MilvusClient | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._unflushed_rows = 0
        self._first_unflushed_at: float | None = None

    @property
    def unflushed_rows(self) -> int:
        """Rows upserted or deleted since the last flush."""
        return self._unflushed_rows

    async def start(self) -> None:
        """Open the database; create and index the collection if missing; load it.

        Idempotent. Raises ConfigurationError when an existing collection's
        schema, dimension or embedder fingerprint differs from this store's,
        and VectorStoreUnavailable when Milvus cannot be reached or the Milvus
        Lite database is held by another process.
        """
        if self._client is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vector-store")
        try:
            self._client = await self._run(self._open)
        except BaseException:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            raise

    async def stop(self) -> None:
        """Flush pending writes, close the connection, release the thread. Idempotent."""
        client, executor = self._client, self._executor
        if client is None or executor is None:
            return
        try:
            if self._unflushed_rows:
                await self.flush()
        finally:
            self._client = None
            self._executor = None
            await asyncio.get_running_loop().run_in_executor(executor, self._close, client)
            await asyncio.to_thread(executor.shutdown, wait=True)

    async def upsert(self, rows: Sequence[ChunkRow]) -> None:
        """Insert or replace *rows* by id. Idempotent: after a failure, retry the
        same rows.

        Raises DocumentRejected naming the document when a row cannot be
        stored (wrong dimension, oversize text or key, unknown metadata
        path), before anything is written; VectorStoreUnavailable when Milvus
        did not accept the write.
        """
        if not rows:
            return
        entities = [
            to_entity(row, dimension=self._dimension, metadata_paths=self._metadata_paths)
            for row in rows
        ]
        client = self._require()

        def upsert() -> None:
            for start in range(0, len(entities), _PAGE):
                client.upsert(self._collection, entities[start : start + _PAGE])

        await self._write(upsert, len(rows))

    async def delete(self, ids: Sequence[str]) -> None:
        """Delete rows by primary key; unknown ids are ignored.

        Raises VectorStoreUnavailable when Milvus did not accept the delete.
        """
        if not ids:
            return
        client = self._require()
        batch = list(ids)
        await self._write(lambda: client.delete(self._collection, ids=batch), len(batch))

    async def fetch(self, ids: Sequence[str]) -> dict[str, ChunkRow]:
        """The stored rows among *ids*, vectors included, by id.

        Raises VectorStoreUnavailable.
        """
        if not ids:
            return {}
        client = self._require()
        unique = list(dict.fromkeys(ids))

        def query() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = []
            for start in range(0, len(unique), _PAGE):
                page = unique[start : start + _PAGE]
                found += client.query(self._collection, ids=page, output_fields=FIELDS)
            return found

        return {row.id: row for row in map(from_entity, await self._read(query))}

    async def flush_if_due(self) -> None:
        """Flush if ``flush_rows`` rows were written or ``flush_interval`` seconds
        passed since the first unflushed write; otherwise do nothing.

        Raises VectorStoreUnavailable.
        """
        if self._unflushed_rows >= self._flush_rows or (
            self._first_unflushed_at is not None
            and time.monotonic() - self._first_unflushed_at >= self._flush_interval
        ):
            await self.flush()

    async def flush(self) -> None:
        """Seal written rows so searches and filter scans stop scanning them one by one.

        Raises VectorStoreUnavailable.
        """
        client = self._require()
        pending = self._unflushed_rows
        await self._read(lambda: client.flush(self._collection))
        self._unflushed_rows -= pending
        if self._unflushed_rows == 0:
            self._first_unflushed_at = None

    async def search(
        self, vector: Sequence[float], limit: int = 5, namespace: str | None = None
    ) -> list[Hit]:
        """The *limit* chunks nearest to *vector* by cosine similarity, nearest first,
        within *namespace* if given.

        Raises VectorStoreUnavailable.
        """
        client = self._require()
        fields = ["doc_key", "chunk_index", "text", "metadata"]
        query = list(map(float, vector))

        scope = {} if namespace is None else {"filter": f"namespace == {_literal(namespace)}"}

        def search() -> list[dict[str, Any]]:
            found = client.search(
                self._collection, data=[query], limit=limit, output_fields=fields, **scope
            )
            return list(found[0])

        hits = await self._read(search)
        return [
            Hit(
                id=str(hit["id"]),
                doc_key=hit["entity"]["doc_key"],
                chunk_index=int(hit["entity"]["chunk_index"]),
                text=hit["entity"]["text"],
                score=float(hit["distance"]),
                metadata=hit["entity"]["metadata"],
            )
            for hit in hits
        ]

    async def chunks_of(self, doc_key: str) -> list[ChunkRow]:
        """Every stored chunk of *doc_key*, by chunk_index.

        A filter scan: slow before a flush. For tests and verification only;
        the indexer must not call it on the hot path (it deletes by id).
        Raises VectorStoreUnavailable.
        """
        client = self._require()
        found = await self._read(
            lambda: client.query(
                self._collection,
                filter=f"doc_key == {_literal(doc_key)}",
                output_fields=FIELDS,
                limit=_SCAN_LIMIT,
            )
        )
        return sorted(map(from_entity, found), key=lambda row: row.chunk_index)

    async def chunk_ids_of(self, doc_keys: Sequence[str]) -> dict[str, list[str]]:
        """The ids of the stored chunks of *doc_keys*, by doc_key (absent: none). One
        filter scan (slow before a flush), split in halves while a part hits the query
        cap: only for documents whose version record is gone, or that a reindex or a
        check looks at. Raises VectorStoreUnavailable."""
        keys = list(dict.fromkeys(doc_keys))
        if not keys:
            return {}
        client = self._require()
        listed = ", ".join(_literal(key) for key in keys)
        found = await self._read(
            lambda: client.query(
                self._collection,
                filter=f"doc_key in [{listed}]",
                output_fields=["id", "doc_key"],
                limit=_SCAN_LIMIT,
            )
        )
        if len(found) >= _SCAN_LIMIT and len(keys) > 1:
            half = len(keys) // 2
            return await self.chunk_ids_of(keys[:half]) | await self.chunk_ids_of(keys[half:])
        grouped: dict[str, list[str]] = {}
        for row in found:
            grouped.setdefault(row["doc_key"], []).append(str(row["id"]))
        return grouped

    async def chunk_ids_by_document(self) -> dict[str, set[str]]:
        """Every stored chunk id, grouped by doc_key: a full scan, for verification
        (comparing the index with the source and the version records).
        Raises VectorStoreUnavailable."""
        grouped: dict[str, set[str]] = {}
        for row in await self._scan_all(["id", "doc_key"]):
            grouped.setdefault(row["doc_key"], set()).add(row["id"])
        return grouped

    async def documents(self) -> dict[str, tuple[str, str]]:
        """Every document with rows stored: doc_key -> (namespace, document_id). A full
        scan, for resynchronising. Raises VectorStoreUnavailable."""
        rows = await self._scan_all(["doc_key", "namespace", "document_id"])
        return {row["doc_key"]: (row["namespace"], row["document_id"]) for row in rows}

    async def _scan_all(self, fields: list[str]) -> list[dict[str, Any]]:
        return [row async for page in self.pages(fields) for row in page]

    async def pages(
        self, fields: list[str], *, prefix: str = "", namespace: str | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """*fields* of every stored row whose id starts with *prefix* (and that belongs
        to *namespace*, a collection "db.coll" or a whole database "db", if given), a
        page at a time (at most _SCAN_LIMIT rows each, so a caller holds one page in
        memory). Milvus caps one query at _SCAN_LIMIT rows and Milvus Lite has no
        query iterator, so the scan splits the id space by hex prefix until every
        part fits. Raises VectorStoreUnavailable."""
        client = self._require()
        within = [] if namespace is None else [_namespace_filter(namespace)]

        def query(part: str) -> list[dict[str, Any]]:
            clauses = within + ([f"id like {_literal(part + '%')}"] if part else [])
            rows: list[dict[str, Any]] = client.query(
                self._collection,
                filter=" and ".join(clauses),
                output_fields=fields,
                limit=_SCAN_LIMIT,
            )
            return rows

        parts = [prefix]
        while parts:
            part = parts.pop()
            rows = await self._read(partial(query, part))
            if len(rows) == _SCAN_LIMIT:
                parts += [part + digit for digit in reversed("0123456789abcdef")]
            elif rows:
                yield rows

    async def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of *ids* are stored (primary-key lookups, cheap before a flush too).
        Raises VectorStoreUnavailable."""
        if not ids:
            return set()
        client = self._require()
        unique = list(dict.fromkeys(ids))

        def query() -> set[str]:
            found: set[str] = set()
            for start in range(0, len(unique), _PAGE):
                page = unique[start : start + _PAGE]
                rows = client.query(self._collection, ids=page, output_fields=["id"])
                found.update(str(row["id"]) for row in rows)
            return found

        return await self._read(query)

    async def count(self) -> int:
        """Rows currently stored, flushed or not. Raises VectorStoreUnavailable."""
        client = self._require()
        result = await self._read(
            lambda: client.query(self._collection, filter="", output_fields=["count(*)"])
        )
        return int(result[0]["count(*)"])

    def _open(self) -> MilvusClient:
        lite = is_lite(self._uri)
        if lite:
            Path(self._uri).parent.mkdir(parents=True, exist_ok=True)
            LITE_SERVERS.acquire(self._uri)
        try:
            try:
                client = MilvusClient(uri=self._uri)
            except MilvusException as err:
                raise VectorStoreUnavailable(
                    f"cannot open Milvus at {redact(self._uri)} (a Milvus Lite database can be "
                    f"open in one process at a time: is another sidecar using it?): {err}"
                ) from err
            try:
                self._prepare(client)
            except BaseException:
                client.close()
                raise
        except BaseException:
            if lite:
                LITE_SERVERS.release(self._uri)
            raise
        return client

    def _prepare(self, client: MilvusClient) -> None:
        expected = expected_fields(self._dimension)
        if not client.has_collection(self._collection):
            index = client.prepare_index_params()
            index.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="COSINE")
            client.create_collection(
                self._collection,
                schema=build_schema(self._dimension, self._fingerprint),
                consistency_level="Strong",
                properties={FINGERPRINT_PROPERTY: self._fingerprint},
            )
            # sync=False: waiting for the build allocates a timestamp, an RPC that
            # Milvus Lite does not implement (it logs a traceback for it); an
            # index on an empty collection is ready by the time it is loaded.
            client.create_index(self._collection, index, sync=False)
        described = client.describe_collection(self._collection)
        problems = schema_differences(expected, described)
        stored = (described.get("properties") or {}).get(FINGERPRINT_PROPERTY)
        if stored != self._fingerprint:
            problems.append(
                f"its vectors were made by embedder {stored!r}, "
                f"this pipeline embeds with {self._fingerprint!r}"
            )
        if problems:
            raise ConfigurationError(
                f"Milvus collection {self._collection!r} at {redact(self._uri)} does not match "
                f"this pipeline: {'; '.join(problems)}. Drop the collection to rebuild it "
                "from the source, or configure another collection name."
            )
        client.load_collection(self._collection)

    def _close(self, client: MilvusClient) -> None:
        client.close()
        if is_lite(self._uri):
            LITE_SERVERS.release(self._uri)

    def _require(self) -> MilvusClient:
        if self._client is None:
            raise VectorStoreUnavailable(f"vector store {self._collection!r} is not started")
        return self._client

    async def _write(self, call: Callable[[], object], rows: int) -> None:
        await self._read(call)
        if self._first_unflushed_at is None:
            self._first_unflushed_at = time.monotonic()
        self._unflushed_rows += rows

    async def _read(self, call: Callable[[], T]) -> T:
        try:
            return await self._run(call)
        except MilvusException as err:
            raise VectorStoreUnavailable(
                f"Milvus collection {self._collection!r} at {redact(self._uri)}: {err}"
            ) from err

    async def _run(self, call: Callable[[], T]) -> T:
        if self._executor is None:
            raise VectorStoreUnavailable(f"vector store {self._collection!r} is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)


def _namespace_filter(namespace: str) -> str:
    """The rows of a collection ("db.coll"), or of every collection of a database ("db":
    database names hold no "." and "/" sorts right after it)."""
    if "." in namespace:
        return f"namespace == {_literal(namespace)}"
    return f"namespace >= {_literal(namespace + '.')} and namespace < {_literal(namespace + '/')}"


def _literal(value: str) -> str:
    """*value* as a double-quoted filter-expression string literal."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'
