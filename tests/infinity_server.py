"""A real embedding server for the tests of the server backend: Infinity (installed by
scripts/ensure_infinity.sh into .venv-infinity) serving the packaged all-MiniLM-L6-v2
offline, as a process a test can kill and start again on the same port."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from indexer.embedding import DEFAULT_MODEL
from tests.tcp_proxy import free_port

ROOT = Path(__file__).resolve().parents[1]
INFINITY = ROOT / ".venv-infinity" / "bin" / "infinity_emb"
SERVE = ROOT / "scripts" / "serve_embeddings.sh"
START_SECONDS = 180.0
API_KEY = "test-key-0123456789"


class InfinityServer:
    """scripts/serve_embeddings.sh on 127.0.0.1:``port``: the packaged model under the
    name DEFAULT_MODEL (the sidecar's default server model name), requiring *api_key*.
    Its output goes to *log*."""

    def __init__(self, log: Path, *, api_key: str = API_KEY) -> None:
        if not INFINITY.exists():
            pytest.fail(f"{INFINITY} is missing: run `bash scripts/ensure_infinity.sh`")
        self.port = free_port()
        self.model = DEFAULT_MODEL
        self.api_key = api_key
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers (blocking: call it in a thread
        from async code). Fails the test with the server's last output if it does not."""
        command = ["bash", str(SERVE), str(self.port), "--api-key", self.api_key]
        with self._log.open("ab") as output:
            self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while not self._healthy():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self._log.read_text(errors="replace")[-3000:]
                pytest.fail(f"Infinity did not start on port {self.port}:\n{tail}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: the server dies with requests in flight."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(timeout=30)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
