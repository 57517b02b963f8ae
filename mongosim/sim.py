"""The in-process API: a simulated replica set for tests, async or thread-hosted."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from mongosim.context import Deployment
from mongosim.server import Server

DEFAULT_OPLOG_SIZE = 100_000


class MongoSim:
    """A single-member replica set on 127.0.0.1, served on the current event loop.

    ``async with MongoSim(port=0) as sim:`` then connect pymongo to ``sim.uri``.
    The fault controls are plain methods that must be called from the loop's
    thread (they do not block).
    """

    def __init__(
        self, *, port: int = 0, oplog_size: int = DEFAULT_OPLOG_SIZE, repl_set: str = "rs0"
    ) -> None:
        self._repl_set = repl_set
        self._server = Server(Deployment.create(repl_set, oplog_size), port=port)

    @property
    def uri(self) -> str:
        """``mongodb://127.0.0.1:PORT/?replicaSet=NAME``; valid once started."""
        if not self._server.port:
            raise RuntimeError("MongoSim is not started")
        return f"mongodb://127.0.0.1:{self._server.port}/?replicaSet={self._repl_set}"

    @property
    def port(self) -> int:
        """The bound port (0 before start)."""
        return self._server.port

    async def start(self) -> None:
        """Start serving; idempotent."""
        await self._server.start()

    async def stop(self) -> None:
        """Close every connection and stop serving; idempotent."""
        await self._server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def drop_connections(self) -> None:
        """Abort every open client connection; drivers see a network error."""
        self._server.drop_connections()

    def pause(self, seconds: float) -> None:
        """Stop answering anything (connections stay open) for *seconds*."""
        self._server.pause(seconds)

    def step_down(self) -> None:
        """Become secondary: writes fail with NotWritablePrimary (10107) until ``step_up``."""
        self._server.step_down()

    def step_up(self) -> None:
        """Become primary again."""
        self._server.step_up()

    def truncate_oplog(self) -> None:
        """Forget all history: resuming from any token issued so far fails with 286."""
        self._server.deployment.oplog.truncate()


class ThreadedMongoSim:
    """A MongoSim hosted on its own thread and event loop.

    Usable from synchronous code (``with ThreadedMongoSim() as sim:``) and from
    async tests whose loop must not host the server. Controls block until applied.
    """

    def __init__(
        self, *, port: int = 0, oplog_size: int = DEFAULT_OPLOG_SIZE, repl_set: str = "rs0"
    ) -> None:
        self._port = port
        self._oplog_size = oplog_size
        self._repl_set = repl_set
        self._sim: MongoSim | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def uri(self) -> str:
        """``mongodb://127.0.0.1:PORT/?replicaSet=NAME``; valid once started."""
        if self._sim is None:
            raise RuntimeError("ThreadedMongoSim is not started")
        return self._sim.uri

    @property
    def port(self) -> int:
        """The bound port."""
        if self._sim is None:
            raise RuntimeError("ThreadedMongoSim is not started")
        return self._sim.port

    def start(self) -> None:
        """Start the server thread and wait until it accepts connections; idempotent.

        Raises whatever binding the port raised.
        """
        if self._thread is not None:
            return
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._host, args=(ready,), name="mongosim", daemon=True
        )
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            raise

    def _host(self, ready: concurrent.futures.Future[None]) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            sim = MongoSim(port=self._port, oplog_size=self._oplog_size, repl_set=self._repl_set)
            try:
                await sim.start()
            except OSError as exc:
                ready.set_exception(exc)
                return
            self._sim = sim
            ready.set_result(None)
            try:
                await self._stopping.wait()
            finally:
                await sim.stop()

        asyncio.run(serve())

    def stop(self) -> None:
        """Stop the server and join its thread; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._sim = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _on_loop(self, action: Callable[[MongoSim], None]) -> None:
        loop, sim = self._loop, self._sim
        if loop is None or sim is None:
            raise RuntimeError("ThreadedMongoSim is not started")

        async def apply() -> None:
            action(sim)

        asyncio.run_coroutine_threadsafe(apply(), loop).result()

    def drop_connections(self) -> None:
        """Abort every open client connection; drivers see a network error."""
        self._on_loop(MongoSim.drop_connections)

    def pause(self, seconds: float) -> None:
        """Stop answering anything (connections stay open) for *seconds*; returns at once."""
        self._on_loop(lambda sim: sim.pause(seconds))

    def step_down(self) -> None:
        """Become secondary: writes fail with NotWritablePrimary (10107) until ``step_up``."""
        self._on_loop(MongoSim.step_down)

    def step_up(self) -> None:
        """Become primary again."""
        self._on_loop(MongoSim.step_up)

    def truncate_oplog(self) -> None:
        """Forget all history: resuming from any token issued so far fails with 286."""
        self._on_loop(MongoSim.truncate_oplog)
