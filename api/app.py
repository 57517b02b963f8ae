"""The HTTP application: probes, metrics and the admin API (OpenAPI at /docs)."""

from __future__ import annotations

import asyncio
import importlib.metadata
from typing import Any

import structlog
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import admin, errors
from api.metrics import read_pipeline
from api.state import Phase, ServiceState
from checkpoints.keys import Keys
from core.errors import is_outage

log = structlog.get_logger(__name__)

SCRAPE_READ_SECONDS = 5.0
"""How long a scrape waits for Redis before answering without the pipeline's series."""


def version() -> str:
    return importlib.metadata.version("cdc-sidecar")


def create_app(state: ServiceState) -> FastAPI:
    app = FastAPI(
        title="cdc-sidecar",
        version=version(),
        description="Health probes, Prometheus metrics and the admin API of one pipeline. "
        "State-changing endpoints need `Authorization: Bearer <CDC_ADMIN_TOKEN>`.",
    )
    app.state.service = state
    errors.install(app)
    app.include_router(admin.router)

    @app.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, Any]:
        """Liveness: the process is up and its event loop turns (this answer is served
        by that loop). 200 in every phase, starting and standing by included."""
        return {"alive": True, "phase": str(state.phase)}

    @app.get("/readyz", tags=["probes"])
    async def readyz() -> JSONResponse:
        """Readiness: 200 while holding the lease and streaming, or standing by ready to
        take over; 503 while starting, stopping or waiting out an outage."""
        ready, report = state.readiness()
        return JSONResponse(report, 200 if ready else 503)

    @app.get("/metrics", tags=["probes"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text format; the pipeline's series only from the lease holder."""
        await _refresh(state)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _refresh(state: ServiceState) -> None:
    """Read the pipeline's state for this scrape, when this replica holds the lease."""
    metrics = state.metrics
    metrics.lease_held = state.phase == Phase.STREAMING
    metrics.reading = None
    if not metrics.lease_held or state.redis is None:
        return
    reading = read_pipeline(
        state.redis,
        Keys(state.settings.pipeline),
        max_backlog=state.settings.index_queue_max_size,
    )
    try:
        metrics.reading = await asyncio.wait_for(reading, SCRAPE_READ_SECONDS)
    except Exception as error:
        if not (is_outage(error) or isinstance(error, TimeoutError)):
            raise
        log.warning("metrics_without_pipeline_state", error=repr(error))
