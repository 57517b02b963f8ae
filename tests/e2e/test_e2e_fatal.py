"""`main.py run` ending in an error no restart can fix: exit status 2, one `error:`
line on stderr that says what is wrong, and no traceback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_harness import CONVERGE_SECONDS
from service_process import ServiceProcess

from checkpoints.audit import AuditEntry
from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.tokens import Checkpoint, ResumeTokenStore
from indexer.store import VectorStore
from mongosim import ThreadedMongoSim
from sidecar.settings import Settings
from tests.embedders import CountingEmbedder
from tests.waiting import eventually

pytestmark = [pytest.mark.model, pytest.mark.slow]

@dataclass(frozen=True)
class Ended:
    status: int
    output: str  # stdout and stderr: `run` prints nothing on stdout

    def assert_fatal(self, *phrases: str) -> None:
        """Exit 2 with exactly one `error:` line naming every phrase, and no traceback."""
        errors = [line for line in self.output.splitlines() if line.startswith("error:")]
        assert self.status == 2, self.output[-3000:]
        assert len(errors) == 1, self.output[-3000:]
        for phrase in phrases:
            assert phrase in errors[0], errors[0]
        assert "Traceback" not in self.output, self.output[-3000:]


async def run_until_it_ends(settings: Settings, log: Path) -> Ended:
    service = ServiceProcess(settings, log)
    await service.start()
    return Ended(*await service.ended(CONVERGE_SECONDS))


async def test_history_lost_exits_2_with_one_error_line_when_told_to_halt(
    make_settings: Callable[..., Settings],
    articles: Any,
    redis_client: aioredis.Redis,
    sim: ThreadedMongoSim,
    tmp_path: Path,
) -> None:
    settings = make_settings(on_history_lost="halt")
    keys = Keys(settings.pipeline)
    async with await articles.watch(max_await_time_ms=100) as stream:
        await articles.insert_one({"title": "seen"})
        while await stream.try_next() is None:
            pass
        token = stream.resume_token
    operator = Lease(redis_client, keys, owner="operator")
    fence = await operator.acquire(wait=False)
    at_token = Checkpoint(token, None, None, datetime.now(UTC))
    entry = AuditEntry(datetime.now(UTC), "checkpoint reset --to-token", "test", "done")
    await ResumeTokenStore(redis_client, keys).reset(at_token, fence=fence, audit=entry)
    await operator.release()
    await articles.insert_one({"title": "lost"})
    sim.truncate_oplog()

    ended = await run_until_it_ends(settings, tmp_path / "service.log")

    ended.assert_fatal(
        "no longer holds the saved position",
        token["_data"],
        "cdc-sidecar checkpoint reset --rescan",
    )
    assert "signature" not in ended.output  # the raw server reply stays in the log


async def test_a_lease_taken_over_exits_2_with_one_error_line(
    make_settings: Callable[..., Settings],
    articles: Any,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    settings = make_settings()
    keys = Keys(settings.pipeline)
    service = ServiceProcess(settings, tmp_path / "service.log")
    await service.start()

    async def streaming() -> bool:
        service.require_alive()
        return await ResumeTokenStore(redis_client, keys).load() is not None

    await eventually(streaming, within=CONVERGE_SECONDS, what="the service streams")
    await redis_client.delete(keys.lease)
    await Lease(redis_client, keys, owner="another-replica").acquire(wait=False)
    await articles.insert_one({"title": "after the take-over"})

    Ended(*await service.ended(CONVERGE_SECONDS)).assert_fatal("lease")


async def test_a_milvus_collection_of_another_model_exits_2_with_one_error_line(
    make_settings: Callable[..., Settings], embedder: CountingEmbedder, tmp_path: Path
) -> None:
    settings = make_settings()
    other = VectorStore(
        settings.milvus_uri,
        settings.milvus_collection,
        dimension=embedder.dimension,
        fingerprint="another-model:0000:fp32",
        metadata_fields=settings.metadata_fields,
    )
    await other.start()
    await other.stop()

    ended = await run_until_it_ends(settings, tmp_path / "service.log")

    ended.assert_fatal(settings.milvus_collection, "another-model")

