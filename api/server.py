"""uvicorn serving the HTTP application inside the service's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from core.errors import ConfigurationError

STOP_SECONDS = 3.0
"""How long requests in flight may take to finish when the service stops."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service owns SIGTERM and SIGINT: they stop the pipeline, which stops this.
        yield


class HttpServer:
    """Serves *app* on *host*:*port* while entered. Raises ConfigurationError on
    entering when the port is taken."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._socket: socket.socket | None = None
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HttpServer:
        self._socket = self._bind()
        config = uvicorn.Config(
            self._app, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=5
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        # uvicorn sets a flag, not an event, once it listens.
        while not self._server.started and not self._task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()
        return self

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as error:
            sock.close()
            raise ConfigurationError(
                f"cannot serve HTTP on {self._host}:{self._port} ({error.strerror}): set "
                "CDC_HTTP_PORT to a free port (0 turns the HTTP server off)"
            ) from None
        sock.listen(128)
        sock.setblocking(False)
        return sock

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_SECONDS)
        except TimeoutError:
            self._server.force_exit = True
            await self._task
        finally:
            if self._socket is not None:
                self._socket.close()
            self._server = None
