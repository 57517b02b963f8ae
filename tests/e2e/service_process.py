"""The service as operators run it: `main.py run` in its own process, configured by
CDC_* variables as a Settings object says."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from e2e_harness import CONVERGE_SECONDS

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.tokens import ResumeTokenStore
from operations.control import COMMAND_OWNER
from sidecar.settings import Settings
from tests.waiting import eventually

PROJECT = Path(__file__).resolve().parents[2]
EXIT_SECONDS = 10.0


def service_environment(settings: Settings) -> dict[str, str]:
    """The process environment that configures `main.py run` as *settings* say."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CDC_")}
    env |= {
        "HF_HUB_OFFLINE": "1",
        "CDC_LOG_LEVEL": "warning",
        "CDC_MONGO_URI": settings.mongo_uri,
        "CDC_REDIS_URL": settings.redis_url or "",
        "CDC_PIPELINE": settings.pipeline,
        "CDC_MILVUS_URI": settings.milvus_uri,
        "CDC_DATABASE": settings.database,
        "CDC_COLLECTIONS": ",".join(settings.collections),
        "CDC_TEXT_FIELDS": ",".join(settings.text_fields),
        "CDC_METADATA_FIELDS": ",".join(settings.metadata_fields),
        "CDC_CHUNK_SIZE": str(settings.chunk_size),
        "CDC_CHUNK_OVERLAP": str(settings.chunk_overlap),
        "CDC_MILVUS_FLUSH_INTERVAL": str(settings.milvus_flush_interval),
        "CDC_INDEX_BATCH_SIZE": str(settings.index_batch_size),
        "CDC_INDEX_BATCH_INTERVAL": str(settings.index_batch_interval),
        "CDC_INDEX_RETRY_TIMES": str(settings.index_retry_times),
        "CDC_INDEX_RETRY_DELAY": str(settings.index_retry_delay),
        "CDC_INDEX_DRAIN_SECONDS": str(settings.index_drain_seconds),
        "CDC_ON_HISTORY_LOST": settings.on_history_lost,
        "CDC_ON_COLLECTION_DROP": settings.on_collection_drop,
        "CDC_BACKFILL_CHUNK": str(settings.backfill_chunk),
        "CDC_BACKFILL_MAX_QUEUED": str(settings.backfill_max_queued),
        "CDC_LEASE_TTL": str(settings.lease_ttl),
        "CDC_EMBEDDING_PRECISION": settings.embedding_precision,
        "CDC_EMBEDDING_CACHE_DIR": str(settings.embedding_cache_dir),
        # Off unless a test asks for it: parallel tests would fight over one port.
        "CDC_HTTP_PORT": str(settings.http_port if "http_port" in settings.model_fields_set else 0),
    }
    if settings.admin_token is not None:
        env["CDC_ADMIN_TOKEN"] = settings.admin_token
    if settings.embedding_url:
        env["CDC_EMBEDDING_URL"] = ",".join(settings.embedding_url)
    if settings.embedding_api_key is not None:
        env["CDC_EMBEDDING_API_KEY"] = settings.embedding_api_key.get_secret_value()
    return env


class ServiceProcess:
    """One `main.py run` process; its stderr (the JSON log) goes to *log*."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self._settings = settings
        self._log = log
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self._log.open("ab") as sink:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "main.py",
                "run",
                cwd=PROJECT,
                env=service_environment(self._settings),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
            )

    @property
    def process(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise RuntimeError("the service process was not started")
        return self._process

    def require_alive(self) -> None:
        if self.process.returncode is not None:
            pytest.fail(f"the service exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-30:])

    async def signal_and_wait(self, signum: int) -> int:
        """Send *signum* and return the exit status; fail if it takes over EXIT_SECONDS."""
        self.process.send_signal(signum)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout=EXIT_SECONDS)
        except TimeoutError:
            pytest.fail(f"the service did not exit within {EXIT_SECONDS} s of {signum}")

    async def ended(self, within: float) -> tuple[int, str]:
        """The exit status and the whole output once the process exits by itself;
        fail (killing it) if it still runs after *within* seconds."""
        try:
            status = await asyncio.wait_for(self.process.wait(), timeout=within)
        except TimeoutError:
            await self.kill()
            pytest.fail(f"the service did not stop by itself within {within} s")
        return status, self._log.read_text(errors="replace")

    async def kill(self) -> None:
        """SIGKILL unless already gone; reaps the process either way."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()


@asynccontextmanager
async def service_process(settings: Settings, log: Path) -> AsyncIterator[ServiceProcess]:
    service = ServiceProcess(settings, log)
    await service.start()
    try:
        yield service
    finally:
        await service.kill()


async def cdc(settings: Settings, *args: str, status: int = 0) -> dict[str, Any]:
    """`main.py ARGS --json` as an operator runs it; its JSON output. Fails the test
    unless it exits with *status*."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "main.py",
        *args,
        "--json",
        cwd=PROJECT,
        env=service_environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), CONVERGE_SECONDS)
    assert process.returncode == status, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def streaming(service: ServiceProcess, redis: aioredis.Redis, keys: Keys) -> None:
    """Wait until the service holds the lease and has a position (a position saved by
    an earlier run does not say this one is past its start-up)."""
    tokens = ResumeTokenStore(redis, keys)
    lease = Lease(redis, keys, owner="test-probe")

    async def positioned() -> bool:
        service.require_alive()
        holder = await lease.holder()
        serving = holder is not None and not holder[0].startswith(COMMAND_OWNER)
        return serving and await tokens.load() is not None

    await eventually(positioned, within=CONVERGE_SECONDS, what="the service streams")
