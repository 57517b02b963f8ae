"""``python -m mongosim``: URI on the first line, serves, exits 0 on SIGTERM/SIGINT."""

from __future__ import annotations

import re
import select
import signal
import subprocess
import sys
from typing import Any

import pytest
from pymongo import MongoClient


def first_line(process: subprocess.Popen[str], deadline: float) -> str:
    """The process's first stdout line, waiting at most *deadline* seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], deadline)
    if not ready:
        pytest.fail("mongosim printed no URI")
    return process.stdout.readline().strip()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_uri_serves_and_exits_cleanly(signum: signal.Signals) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mongosim",
            "--port",
            "0",
            "--oplog-size",
            "50",
            "--repl-set",
            "cli",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        uri = first_line(process, 20)
        assert re.fullmatch(r"mongodb://127\.0\.0\.1:\d+/\?replicaSet=cli", uri)
        client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5_000)
        try:
            client.cli.c.insert_one({"_id": 1})
            assert client.cli.c.find_one() == {"_id": 1}
        finally:
            client.close()
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
