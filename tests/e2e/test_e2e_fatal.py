"""`main.py run` ending in an error no restart can fix: exit status 2, one `error:`
line on stderr that says what is wrong, and no traceback."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_harness import CONVERGE_SECONDS
from service_process import PROJECT, service_environment

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.tokens import ResumeTokenStore
from indexer.store import VectorStore
from mongosim import ThreadedMongoSim
from sidecar.settings import Settings
from tests.embedders import CountingEmbedder
from tests.waiting import eventually

pytestmark = [pytest.mark.model, pytest.mark.slow]

@dataclass(frozen=True)
class Ended:
    status: int
    stderr: str

    def assert_fatal(self, *phrases: str) -> None:
        """Exit 2 with exactly one `error:` line naming every phrase, and no traceback."""
        errors = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        assert self.status == 2, self.stderr[-3000:]
        assert len(errors) == 1, self.stderr[-3000:]
        for phrase in phrases:
            assert phrase in errors[0], errors[0]
        assert "Traceback" not in self.stderr, self.stderr[-3000:]


class Service:
    """`main.py run` with stderr kept apart, for the test to read when it ends."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "main.py",
            "run",
            cwd=PROJECT,
            env=service_environment(self._settings),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )

    async def ended(self) -> Ended:
        assert self.process is not None
        try:
            _, stderr = await asyncio.wait_for(self.process.communicate(), CONVERGE_SECONDS)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            pytest.fail(f"the service did not stop within {CONVERGE_SECONDS} s")
        assert self.process.returncode is not None
        return Ended(self.process.returncode, stderr.decode(errors="replace"))


async def run_until_it_ends(settings: Settings) -> Ended:
    service = Service(settings)
    await service.start()
    return await service.ended()


async def test_history_lost_exits_2_with_one_error_line(
    make_settings: Callable[..., Settings],
    articles: Any,
    redis_client: aioredis.Redis,
    sim: ThreadedMongoSim,
) -> None:
    settings = make_settings()
    keys = Keys(settings.pipeline)
    async with await articles.watch(max_await_time_ms=100) as stream:
        await articles.insert_one({"title": "seen"})
        while await stream.try_next() is None:
            pass
        token = stream.resume_token
    operator = Lease(redis_client, keys, owner="operator")
    fence = await operator.acquire(wait=False)
    await ResumeTokenStore(redis_client, keys).reset_to_token(token, fence=fence)
    await operator.release()
    await articles.insert_one({"title": "lost"})
    sim.truncate_oplog()

    ended = await run_until_it_ends(settings)

    ended.assert_fatal(
        "no longer holds the saved position",
        token["_data"],
        f'redis-cli -u "$CDC_REDIS_URL" DEL cdc:{settings.pipeline}:checkpoint',
    )
    assert "signature" not in ended.stderr  # the raw server reply stays in the log


async def test_a_lease_taken_over_exits_2_with_one_error_line(
    make_settings: Callable[..., Settings], articles: Any, redis_client: aioredis.Redis
) -> None:
    settings = make_settings()
    keys = Keys(settings.pipeline)
    service = Service(settings)
    await service.start()

    async def streaming() -> bool:
        assert service.process is not None and service.process.returncode is None
        return await ResumeTokenStore(redis_client, keys).load() is not None

    await eventually(streaming, within=CONVERGE_SECONDS, what="the service streams")
    await redis_client.delete(keys.lease)
    await Lease(redis_client, keys, owner="another-replica").acquire(wait=False)
    await articles.insert_one({"title": "after the take-over"})

    (await service.ended()).assert_fatal("lease")


async def test_a_milvus_collection_of_another_model_exits_2_with_one_error_line(
    make_settings: Callable[..., Settings], embedder: CountingEmbedder
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

    ended = await run_until_it_ends(settings)

    ended.assert_fatal(settings.milvus_collection, "another-model")

