"""The admin API fuzzed from its own OpenAPI schema (schemathesis) against the real
service process: no input gets a 5xx, and every answer has the content type and,
where the schema declares its status, the body the schema promises.

Answers with a status the schema does not declare (400, 401, 403, 409, 503: the JSON
``{"error": ...}`` of api/errors.py) are not failures here: FastAPI's schema
declares only 200 and 422."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from checkpoints.keys import Keys
from sidecar.settings import Settings
from tests.e2e.e2e_harness import CONVERGE_SECONDS
from tests.e2e.service_process import service_process, streaming
from tests.e2e.test_e2e_http import TOKEN, free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.model]

CHECKS = (
    "not_a_server_error,response_schema_conformance,content_type_conformance,"
    "status_code_conformance"
)
FUZZ_SECONDS = 60.0
"""How long schemathesis may take before the test gives up on it (it takes about 30 s)."""


def schemathesis_command(base_url: str) -> list[str]:
    """`st run` against the service at *base_url*: its own schema, its own address only
    (``--url`` overrides any ``servers`` the schema could name, redirects are not
    followed), and no example database left behind. A failure prints its seed and a
    curl line that repeats it."""
    return [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base_url}/openapi.json",
        "--url",
        base_url,
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        CHECKS,
        "--max-examples",
        "10",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--max-redirects",
        "0",
        "--no-color",
    ]


async def fuzz(command: list[str], workdir: Path) -> tuple[int, str]:
    """Run *command* in *workdir* with no proxy in its way; its exit status and output."""
    env = {name: value for name, value in os.environ.items() if "proxy" not in name.lower()}
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=workdir,
        env=env | {"NO_COLOR": "1", "COLUMNS": "200"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), FUZZ_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"schemathesis did not finish within {FUZZ_SECONDS:g} s")
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


async def test_fuzzing_the_admin_api_from_its_schema_finds_no_5xx_or_schema_violation(
    make_settings: Callable[..., Settings],
    redis_client: aioredis.Redis,
    articles: Any,
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = make_settings(http_port=port, http_host="127.0.0.1", admin_token=TOKEN)
    base_url = f"http://127.0.0.1:{port}"
    await articles.insert_many(
        [{"_id": i, "title": f"t{i}", "body": f"body {i}"} for i in range(5)]
    )
    async with (
        service_process(settings, tmp_path / "service.log") as service,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        await streaming(service, redis_client, Keys(settings.pipeline))

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, within=CONVERGE_SECONDS, what="/readyz 200")
        schema = (await client.get("/openapi.json")).json()
        operations = sum(len(methods) for methods in schema["paths"].values())
        workdir = tmp_path / "schemathesis"
        workdir.mkdir()
        status, output = await fuzz(schemathesis_command(base_url), workdir)
        service.require_alive()
        assert status == 0, f"schemathesis found problems:\n{output}"
        # It tested every operation the schema names, and its token was taken: the
        # state changes it sent were carried out and audited.
        assert f"Tested: {operations}" in output, output
        audit = (await client.get("/checkpoint")).json()["audit"]
        assert any(entry["by"] == "http api (127.0.0.1)" for entry in audit), audit
