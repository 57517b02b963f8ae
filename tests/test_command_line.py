"""The command line: status read from Redis, and errors a person can act on."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.queue import EventQueue
from checkpoints.stats import Stats
from checkpoints.tokens import Checkpoint
from core.events import DocumentCreatedEvent
from mongosim import ThreadedMongoSim
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDC_")}
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=cwd,
        env={**clean, "CDC_HTTP_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_status_json_reports_checkpoint_queue_and_counters(
    redis_client: aioredis.Redis, pipeline_name: str, tmp_path: Path
) -> None:
    keys = Keys(pipeline_name)
    fence = await Lease(redis_client, keys, owner="test").acquire()
    event = DocumentCreatedEvent(
        event_id="e1", document_id="d1", namespace="app.docs", version=(1700000000 << 32) | 3,
        timestamp=datetime.now(UTC), content="hello", source="app.docs",
    )
    token = {"_data": f"82{1700000000:08X}{3:08X}"}
    checkpoint = Checkpoint(token, (1700000000 << 32) | 3, None, datetime.now(UTC))
    await EventQueue(redis_client, keys).append([event], checkpoint, fence=fence)

    done = cli("status", "--json", cwd=tmp_path, CDC_REDIS_URL=REDIS_URL,
               CDC_PIPELINE=pipeline_name)

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["pipeline"] == pipeline_name
    assert report["service"]["owner"] == "test"
    assert report["queue_length"] == 1
    assert report["checkpoint"]["token"] == token
    assert report["checkpoint"]["cluster_time"]["t"] == 1700000000
    assert report["counters"]["events_captured"] == 1
    # The saved position is of 2023 and the queued change of now: the lag counts from
    # the older of the two.
    assert report["lag_seconds"] > (datetime.now(UTC).timestamp() - 1700000000) - 60


def test_status_text_output_is_readable_and_exits_3_without_a_service(
    pipeline_name: str, tmp_path: Path
) -> None:
    done = cli("status", cwd=tmp_path, CDC_REDIS_URL=REDIS_URL, CDC_PIPELINE=pipeline_name)
    assert done.returncode == 3, done.stderr
    assert "service         NOT RUNNING" in done.stdout
    assert "checkpoint      none" in done.stdout
    assert "queue length    0" in done.stdout
    assert "lag             -" in done.stdout
    # Every counter's name and number stay apart, however long the name.
    counters = done.stdout.splitlines()[-len(Stats.COUNTERS):]
    assert [line.split() for line in counters] == [[name, "0"] for name in Stats.COUNTERS]


def test_status_watch_redraws_until_interrupted_and_refuses_json(
    pipeline_name: str, tmp_path: Path
) -> None:
    """On a terminal (a pty), --watch draws the status and redraws it until Ctrl-C."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CDC_")},
           "CDC_REDIS_URL": REDIS_URL, "CDC_PIPELINE": pipeline_name, "CDC_HTTP_PORT": "0",
           "COLUMNS": "120"}
    terminal, screen = pty.openpty()
    with subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "status", "--watch", "--interval", "0.2"],
        cwd=tmp_path, env=env, stdout=screen, stderr=subprocess.PIPE, text=True,
    ) as watching:
        os.close(screen)
        shown = read_until(terminal, "Ctrl-C stops", count=2, seconds=60)
        watching.send_signal(signal.SIGINT)
        _, err = watching.communicate(timeout=10)
    os.close(terminal)
    refused = cli("status", "--watch", "--json", cwd=tmp_path, CDC_REDIS_URL=REDIS_URL)

    assert watching.returncode == 0, err
    assert f"pipeline        {pipeline_name}" in shown
    assert "service         NOT RUNNING" in shown
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: --watch shows text: leave out --json")


def read_until(terminal: int, text: str, *, count: int, seconds: float) -> str:
    """What a program wrote to the pty *terminal* until *text* appeared *count* times
    (each redraw writes it once); fails the test after *seconds*."""
    shown = ""
    deadline = time.monotonic() + seconds
    while shown.count(text) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} not shown {count} times within {seconds} s: {shown!r}"
        ready, _, _ = select.select([terminal], [], [], left)
        if ready:
            shown += os.read(terminal, 65536).decode(errors="replace")
    return shown


def test_bad_setting_stops_with_the_variable_named(tmp_path: Path) -> None:
    done = cli("status", cwd=tmp_path, CDC_INDEX_BATCH_SIZE="lots")
    assert done.returncode == 2
    assert "CDC_INDEX_BATCH_SIZE" in done.stderr
    assert "Traceback" not in done.stderr


def test_status_without_redis_says_what_to_do(tmp_path: Path) -> None:
    done = cli("status", cwd=tmp_path, CDC_REDIS_DATA_DIR=str(tmp_path / "nothing"))
    assert done.returncode == 2
    assert "CDC_REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_demo_rejects_unknown_precision(tmp_path: Path) -> None:
    done = cli("demo", "--precision", "fp8", cwd=tmp_path)
    assert done.returncode == 2
    assert "must be one of auto, fp32, bf16, onnx-fp32" in done.stderr


def test_status_with_unreachable_redis_says_so(tmp_path: Path) -> None:
    done = cli("status", cwd=tmp_path, CDC_REDIS_URL="redis://ops:hunter2@127.0.0.1:1/0")
    assert done.returncode == 1
    assert "cannot read redis://ops:****@127.0.0.1:1/0" in done.stderr
    assert "hunter2" not in done.stderr
    assert "Traceback" not in done.stderr


def test_a_misspelt_setting_stops_the_command_with_the_closest_name(tmp_path: Path) -> None:
    done = cli("status", cwd=tmp_path, CDC_PIPLINE="articles")
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown configuration")
    assert "CDC_PIPLINE is not a setting (did you mean CDC_PIPELINE?)" in done.stderr


def test_run_with_a_wrong_redis_password_stops_before_loading_the_model(
    tmp_path: Path, sim: ThreadedMongoSim
) -> None:
    done = cli(
        "run",
        cwd=tmp_path,
        CDC_MONGO_URI=sim.uri,
        CDC_REDIS_URL="redis://bob:hunter2@127.0.0.1:6379/0",
        CDC_LOG_LEVEL="debug",
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert errors == [
        "error: Redis refused the sidecar: invalid username-password pair or user is disabled. "
        "(check the user and password in CDC_REDIS_URL)"
    ]
    assert "hunter2" not in done.stderr
    assert "model_loaded" not in done.stderr


def test_run_waits_for_an_unreachable_mongodb_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    with subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "run"],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("CDC_")},
            "CDC_MONGO_URI": "mongodb://127.0.0.1:1/?replicaSet=rs0",
            "CDC_REDIS_URL": REDIS_URL,
        },
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stderr is not None
            lines: list[str] = []
            for line in process.stderr:
                lines.append(line)
                if "outage_started" in line:
                    break
            assert process.poll() is None, "".join(lines)
            assert "MongoDB" in lines[-1]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_checkpoint_reset_refuses_a_bad_target_with_what_to_give(
    pipeline_name: str, tmp_path: Path
) -> None:
    env = {"CDC_REDIS_URL": REDIS_URL, "CDC_PIPELINE": pipeline_name}
    for args, message in (
        ((), "give exactly one of --to-now, --to-time, --to-token, --rescan (got none)"),
        (("--to-time", "2026-11-30 08:00"), "has no timezone: add Z for UTC"),
        (("--to-token", "8267"), "must be a resume token object such as"),
    ):
        done = cli("checkpoint", "reset", *args, cwd=tmp_path, **env)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
        assert done.stderr.startswith("error: ") and message in done.stderr


def test_checkpoint_reset_and_show_without_a_service(
    sim: ThreadedMongoSim, pipeline_name: str, tmp_path: Path
) -> None:
    env = {"CDC_REDIS_URL": REDIS_URL, "CDC_PIPELINE": pipeline_name, "CDC_MONGO_URI": sim.uri}

    moved = cli("checkpoint", "reset", "--to-now", "--json", cwd=tmp_path, **env)
    shown = cli("checkpoint", "show", cwd=tmp_path, **env)

    assert moved.returncode == 0, moved.stderr
    result = json.loads(moved.stdout)
    assert result["before"] == "none: the next start scans every watched collection first"
    assert result["checkpoint"]["token"]["_data"]
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"pipeline   {pipeline_name}"
    assert lines[1] == f"position   {result['after']}"
    assert "lease      free: no service runs" in lines
    assert "checkpoint reset --to-now  done" in shown.stdout


def test_dlq_commands_refuse_an_unclear_selection_and_list_an_empty_stream(
    pipeline_name: str, tmp_path: Path
) -> None:
    env = {"CDC_REDIS_URL": REDIS_URL, "CDC_PIPELINE": pipeline_name}

    neither = cli("dlq", "replay", cwd=tmp_path, **env)
    unknown = cli("dlq", "show", "1-0", cwd=tmp_path, **env)
    listed = cli("dlq", "list", cwd=tmp_path, **env)
    purged = cli("dlq", "purge", "--all", cwd=tmp_path, **env)

    assert neither.returncode == 2
    assert neither.stderr.strip() == (
        "error: give dead-letter ids (as `cdc-sidecar dlq list` shows them) or --all, not neither"
    )
    assert unknown.returncode == 2 and "no dead letter 1-0" in unknown.stderr
    assert listed.returncode == 0 and listed.stdout.strip() == "0 dead letter(s)"
    assert purged.returncode == 0
    assert purged.stdout.strip() == "0 purged, 0 not found, 0 without event"


def test_pause_shows_in_status_until_resume(pipeline_name: str, tmp_path: Path) -> None:
    env = {"CDC_REDIS_URL": REDIS_URL, "CDC_PIPELINE": pipeline_name}

    paused = cli("pause", "--reason", "Milvus upgrade", cwd=tmp_path, **env)
    while_paused = cli("status", cwd=tmp_path, **env)
    resumed = cli("resume", cwd=tmp_path, **env)
    after = cli("status", cwd=tmp_path, **env)

    assert paused.returncode == 0 and paused.stdout.startswith("indexing paused: ")
    assert "indexing        PAUSED by " in while_paused.stdout
    assert ": Milvus upgrade (cdc-sidecar resume)" in while_paused.stdout
    assert resumed.returncode == 0 and resumed.stdout.strip() == "indexing resumed"
    assert "PAUSED" not in after.stdout


def test_backfill_refuses_a_bad_filter_or_collection_before_anything_starts(
    sim: ThreadedMongoSim, pipeline_name: str, tmp_path: Path
) -> None:
    env = {
        "CDC_REDIS_URL": REDIS_URL, "CDC_PIPELINE": pipeline_name, "CDC_MONGO_URI": sim.uri,
        "CDC_DATABASE": "app", "CDC_COLLECTIONS": "articles",
    }

    bad_json = cli("backfill", "--filter", "{lang: zh", cwd=tmp_path, **env)
    unwatched = cli("backfill", "--collection", "users", cwd=tmp_path, **env)
    status = cli("status", cwd=tmp_path, **env)

    assert bad_json.returncode == 2 and bad_json.stderr.startswith("error: --filter is not JSON")
    assert unwatched.returncode == 2
    assert unwatched.stderr.strip() == (
        "error: not a watched collection: users (watched: articles)"
    )
    assert "backfill " not in status.stdout
