"""The TCP server: one task per client connection, plus the operator's fault controls."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

from bson import ObjectId

from mongosim.context import Connection, Deployment
from mongosim.dispatch import Dispatcher
from mongosim.errors import CloseConnection
from mongosim.wire import ProtocolError, encode_reply, read_request

log = logging.getLogger("mongosim")


class Server:
    """Serves one deployment on 127.0.0.1.

    Each connection is handled by its own task, so a slow or stalled client
    never holds up another. Must be started, used and stopped on one event loop.
    """

    def __init__(self, deployment: Deployment, host: str = "127.0.0.1", port: int = 0) -> None:
        self.deployment = deployment
        self._host = host
        self._port = port
        self._dispatcher = Dispatcher(deployment)
        self._server: asyncio.Server | None = None
        self._tasks: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._ids = itertools.count(1)
        self._reply_ids = itertools.count(1)
        self._paused_until = 0.0
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._resume_handle: asyncio.TimerHandle | None = None

    @property
    def port(self) -> int:
        """The port actually bound (after ``start``)."""
        return self.deployment.port

    async def start(self) -> None:
        """Bind and start accepting connections; a no-op if already started."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        self.deployment.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, close every connection and wait for their tasks; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.drop_connections()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
        if self._resume_handle is not None:
            self._resume_handle.cancel()

    def drop_connections(self) -> None:
        """Abort every open client connection, as a network failure would."""
        for task, writer in list(self._tasks.items()):
            writer.transport.abort()
            task.cancel()

    def pause(self, seconds: float) -> None:
        """Stop answering (reading nothing, replying nothing) for *seconds*."""
        loop = asyncio.get_running_loop()
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        self._resumed.clear()
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        self._resume_handle = loop.call_later(
            max(self._paused_until - time.monotonic(), 0.0), self._resumed.set
        )

    def step_down(self) -> None:
        """Become a secondary: writes fail with NotWritablePrimary until ``step_up``."""
        self.deployment.primary = False

    def step_up(self) -> None:
        """Become primary again, under a new election id as after a real election."""
        self.deployment.election_id = ObjectId()
        self.deployment.primary = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or self._server is None:
            writer.transport.abort()
            return
        self._tasks[task] = writer
        deployment = self.deployment
        deployment.connections_created += 1
        deployment.connections_open += 1
        host, port = writer.get_extra_info("sockname")[:2]
        connection = Connection(id=next(self._ids), address=f"{host}:{port}")
        try:
            await self._converse(connection, reader, writer)
        except ProtocolError as exc:
            log.warning("closing connection %d: %s", connection.id, exc)
        except (ConnectionError, CloseConnection):
            pass
        except asyncio.CancelledError:
            # Only drop_connections/stop cancel a handler; ending normally keeps
            # asyncio's stream callback from reporting the cancellation as an error.
            task.uncancel()
        finally:
            deployment.connections_open -= 1
            self._tasks.pop(task, None)
            writer.transport.abort()
            writer.close()

    async def _converse(
        self, connection: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await self._resumed.wait()
            request = await read_request(reader)
            if request is None:
                return
            await self._resumed.wait()
            reply = await self._dispatcher.execute(
                connection, request.db, request.body, request.secondary_ok
            )
            if request.more_to_come:
                continue
            await self._resumed.wait()
            writer.write(encode_reply(request, next(self._reply_ids), reply))
            await writer.drain()
