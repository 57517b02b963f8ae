"""`main.py run` with CDC_EMBEDDING_PRECISION=auto keeps the inference path its
collection was embedded with, whatever path would measure fastest: another
fingerprint would stop start-up (exit 2), so keeping it is what lets it index."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import CONVERGE_SECONDS
from service_process import service_process

from checkpoints.keys import Keys
from checkpoints.stats import Stats
from indexer.store import VectorStore
from sidecar.settings import Settings
from sidecar.status import pipeline_status
from tests.embedders import CountingEmbedder
from tests.waiting import eventually

pytestmark = [pytest.mark.model, pytest.mark.slow]


async def test_auto_keeps_the_path_recorded_on_the_collection(
    make_settings: Callable[..., Settings],
    redis_client: Any,
    articles: Any,
    embedder: CountingEmbedder,
    tmp_path: Path,
) -> None:
    settings = make_settings(embedding_precision="auto")
    label, digest, _ = embedder.fingerprint.split(":")
    recorded = f"{label}:{digest}:bf16"
    existing = VectorStore(
        settings.milvus_uri,
        settings.milvus_collection,
        dimension=embedder.dimension,
        fingerprint=recorded,
        metadata_fields=settings.metadata_fields,
    )
    await existing.start()
    await existing.stop()
    stats = Stats(redis_client, Keys(settings.pipeline))
    await articles.insert_one({"title": "kept", "body": "vectors of one path only"})

    async with service_process(settings, tmp_path / "service.log") as service:

        async def indexed() -> bool:
            service.require_alive()
            return (await stats.read())["documents_indexed"] >= 1

        await eventually(indexed, within=CONVERGE_SECONDS, what="the document is indexed")
        # `status` names the path the running service embeds with.
        report = await pipeline_status(redis_client, Keys(settings.pipeline))
        assert report["service"]["model"] == recorded

    choice = settings.embedding_cache_dir / f"{label}-{digest}" / "choice.json"
    saved = json.loads(choice.read_text())
    assert saved["path"] == "bf16"
    assert saved["reason"] == "recorded on the Milvus collection"
    assert list(saved["trials"]) == ["bf16"], "nothing else was measured"
