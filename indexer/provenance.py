"""What an existing collection records about how its vectors were made."""

from __future__ import annotations

from pathlib import Path

from pymilvus import MilvusClient, MilvusException

from core.errors import VectorStoreUnavailable, redact
from indexer.lite import LITE_SERVERS, is_lite
from indexer.schema import FINGERPRINT_PROPERTY


def recorded_fingerprint(uri: str, collection: str) -> str | None:
    """The embedder fingerprint stored on *collection* at *uri*; None when the
    collection (or the Milvus Lite database) does not exist yet. Blocking.

    Raises VectorStoreUnavailable when Milvus cannot be reached or the Milvus
    Lite database is held by another process. Creates nothing."""
    lite = is_lite(uri)
    if lite:
        if not Path(uri).exists():
            return None
        LITE_SERVERS.acquire(uri)
    try:
        client = MilvusClient(uri=uri)
        try:
            if not client.has_collection(collection):
                return None
            described = client.describe_collection(collection)
        finally:
            client.close()
    except MilvusException as err:
        raise VectorStoreUnavailable(
            f"cannot read collection {collection!r} at {redact(uri)}: {err}"
        ) from err
    finally:
        if lite:
            LITE_SERVERS.release(uri)
    stored = (described.get("properties") or {}).get(FINGERPRINT_PROPERTY)
    return stored if isinstance(stored, str) else None
