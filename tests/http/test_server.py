"""The HTTP server inside the service's loop: it serves while entered, and a taken port
is one error line naming the setting."""

from __future__ import annotations

import socket

import httpx
import pytest
from fastapi import FastAPI

from api.server import HttpServer
from core.errors import ConfigurationError


def app() -> FastAPI:
    served = FastAPI()

    @served.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"pong": True}

    return served


async def test_it_serves_while_entered_and_frees_the_port_on_leaving() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with HttpServer(app(), "127.0.0.1", port), httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/ping")
    assert answer.json() == {"pong": True}
    async with HttpServer(app(), "127.0.0.1", port):
        pass


async def test_a_taken_port_is_a_configuration_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match="set CDC_HTTP_PORT to a free port"):
            async with HttpServer(app(), "127.0.0.1", port):
                pass
