"""The service record `status` reads: the fingerprint of the service holding the lease."""

from __future__ import annotations

import redis.asyncio as aioredis

from checkpoints.keys import Keys
from checkpoints.lease import Lease
from checkpoints.service import ServiceRecord
from sidecar.status import pipeline_status, status_lines

FINGERPRINT = "all-MiniLM-L6-v2:5076c6045d315992:openvino-bf16"


async def test_the_holder_shows_the_fingerprint_it_recorded_and_no_other(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    record = ServiceRecord(redis_client, keys)
    assert await record.fingerprint("replica-1") is None

    await record.save("replica-1", FINGERPRINT)
    assert await record.fingerprint("replica-1") == FINGERPRINT
    assert await record.fingerprint("replica-2") is None, "another holder's record"


async def test_status_names_the_model_the_holder_runs(
    redis_client: aioredis.Redis, pipeline_name: str
) -> None:
    keys = Keys(pipeline_name)
    lease = Lease(redis_client, keys, owner="replica-1")
    await lease.acquire()
    assert (await pipeline_status(redis_client, keys))["service"]["model"] is None
    text = status_lines(await pipeline_status(redis_client, keys))
    assert not any(line.startswith("model") for line in text)

    await ServiceRecord(redis_client, keys).save("replica-1", FINGERPRINT)
    report = await pipeline_status(redis_client, keys)
    assert report["service"] == {
        "owner": "replica-1",
        "since": report["service"]["since"],
        "model": FINGERPRINT,
    }
    assert f"model           {FINGERPRINT}" in status_lines(report)

    # A standby that takes over later records its own; until then the old record is
    # not shown as the new holder's.
    await lease.release()
    await Lease(redis_client, keys, owner="replica-2").acquire()
    assert (await pipeline_status(redis_client, keys))["service"]["model"] is None
