"""What the HTTP server knows of the service it runs in, as the service fills it in."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from redis.asyncio import Redis

from api.metrics import Metrics
from core.retry import BOARD
from operations.context import IndexView
from sidecar.settings import Settings


class Phase(StrEnum):
    STARTING = "starting"
    """Checking the configuration, loading the model, opening Milvus."""
    STANDBY = "standby"
    """Ready to take over: another replica holds the pipeline's lease."""
    STREAMING = "streaming"
    """Holding the lease: capturing and indexing."""
    STOPPING = "stopping"


class Pipeline(Protocol):
    """The running sidecar, as far as the HTTP server needs it."""

    @property
    def holding(self) -> bool:
        """Whether it holds the pipeline's lease now."""
        ...

    def index_view(self) -> IndexView: ...


@dataclass
class ServiceState:
    """*redis* and *pipeline* are set by the service once it has them; until then the
    server answers what needs them with 503."""

    settings: Settings
    metrics: Metrics
    stop: asyncio.Event
    redis: Redis | None = None
    pipeline: Pipeline | None = None

    @property
    def phase(self) -> Phase:
        if self.stop.is_set():
            return Phase.STOPPING
        if self.pipeline is None:
            return Phase.STARTING
        return Phase.STREAMING if self.pipeline.holding else Phase.STANDBY

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready when streaming or standing by with no outage being waited out; the
        report says the phase and the outages in progress."""
        outages = BOARD.in_progress()
        phase = self.phase
        ready = phase in (Phase.STREAMING, Phase.STANDBY) and not outages
        return ready, {"ready": ready, "phase": str(phase), "outages": sorted(outages)}

    def index(self) -> AbstractAsyncContextManager[IndexView] | None:
        """The service's own index for a command run here, once it has one."""
        if self.pipeline is None:
            return None
        return nullcontext(self.pipeline.index_view())
