"""`check` and `explain` carried out by a running service (in-process, deterministic
embedder): each kind of planted inconsistency is found, named and repaired, and a
document's explanation shows every place it lives."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis

from cdc.namespaces import WatchScope
from checkpoints.audit import AuditLog
from checkpoints.checks import CheckLock, CheckProgress, CheckResults
from checkpoints.keys import Keys
from checkpoints.versions import VersionRecord
from core.errors import SidecarError
from operations.consistency import _Run
from operations.context import Context
from operations.control import perform
from sidecar import commands, operator_cli
from sidecar.app import Sidecar
from sidecar.settings import Settings
from sidecar.status import pipeline_status
from tests.conftest import COLLECTION, DATABASE
from tests.embedders import HashEmbedder
from tests.operations.conftest import WITHIN, Client, idle, orphan_rows
from tests.waiting import eventually

NAMESPACE = f"{DATABASE}.{COLLECTION}"


def key(n: int | str) -> str:
    return f"{NAMESPACE}/$num:{n}" if isinstance(n, int) else f"{NAMESPACE}/{n}"


async def ask(service: Sidecar, command: str, **args: Any) -> dict[str, Any]:
    settings = service.settings
    return await perform(
        service.redis, service.keys, settings.mongo_uri,
        WatchScope(settings.database, settings.collections), command, args,
    )


async def record_of(service: Sidecar, doc_key: str) -> VersionRecord:
    return (await service.versions.get_many([doc_key]))[doc_key]


async def put_record(service: Sidecar, doc_key: str, record: VersionRecord) -> None:
    await service.redis.set(Keys(service.keys.pipeline).version(doc_key), record.to_json())


async def lose_a_change(service: Sidecar, mongo: Client, n: int, body: str) -> None:
    """Change document *n* in MongoDB and drop the queued change before it is indexed
    (as a checkpoint reset past it would): the index keeps the old text."""
    await ask(service, "pause", reason="a test loses a change")
    await mongo[DATABASE][COLLECTION].update_one({"_id": n}, {"$set": {"body": body}})

    async def queued() -> bool:
        return int(await service.redis.xlen(service.keys.events)) == 1

    await eventually(queued, within=WITHIN, what="the change to be queued")
    [(entry_id, _)] = await service.redis.xrange(service.keys.events)
    await service.redis.xdel(service.keys.events, entry_id)
    await ask(service, "resume")


async def plant_one_of_each(service: Sidecar, mongo: Client) -> None:
    rows = await service.store.chunk_ids_by_document()
    await service.store.delete([sorted(rows[key(1)])[0]])  # a missing row
    await service.store.upsert(await orphan_rows(service, key("ghost")))  # orphan rows
    live = await record_of(service, key(2))
    await put_record(service, key("phantom"), live)  # an orphan record, no rows at all
    await lose_a_change(service, mongo, 3, "a paragraph the index never saw " * 4)  # stale
    future = (int(time.time()) + 86_400) << 32
    wrong = replace(await record_of(service, key(4)), version=future)
    await put_record(service, key(4), wrong)  # a version from the future
    (extra,) = await orphan_rows(service, key(5))
    await service.store.upsert([replace(extra, id="extra-row-of-5")])  # a row no record lists
    await service.store.flush()


async def test_an_index_in_sync_has_no_problems_and_the_result_is_kept(service: Sidecar) -> None:
    report = await ask(service, "check")

    assert report["checked"] == 30
    assert report["problems"] == {"missing": 0, "orphan": 0, "stale": 0, "version_mismatch": 0}
    assert report["repair"] is None
    assert await CheckResults(service.redis, service.keys).last() == report
    (entry,) = await AuditLog(service.redis, service.keys).recent(1)
    assert (entry.command, entry.outcome) == ("check", "done: 30 documents checked, 0 problems")


async def test_each_planted_problem_is_found_and_named(service: Sidecar, mongo: Client) -> None:
    await plant_one_of_each(service, mongo)

    report = await ask(service, "check")

    assert report["problems"] == {"missing": 1, "orphan": 2, "stale": 1, "version_mismatch": 2}
    named = {v: sorted(e["doc_key"] for e in found) for v, found in report["examples"].items()}
    assert named == {
        "missing": [key(1)],
        "orphan": sorted([key("ghost"), key("phantom")]),
        "stale": [key(3)],
        "version_mismatch": sorted([key(4), key(5)]),
    }
    reasons = {e["doc_key"]: e["reason"] for found in report["examples"].values() for e in found}
    assert "1 of the" in reasons[key(1)] and "not in Milvus" in reasons[key(1)]
    assert "after the cluster's time now" in reasons[key(4)]
    assert "does not list" in reasons[key(5)]
    assert reasons[key(3)] == "its text changed since it was indexed"


async def test_repair_fixes_every_problem_and_embeds_only_what_changed(
    service: Sidecar, mongo: Client
) -> None:
    before = await service.store.chunk_ids_by_document()
    await plant_one_of_each(service, mongo)
    embedded = service.embedder.counter.texts  # type: ignore[attr-defined]

    report = await ask(service, "check", repair=True)

    assert report["repair"] == {"queued": 6, "left": 0}
    await eventually(lambda: idle(service), within=WITHIN, what="the repairs to be indexed")
    after = await ask(service, "check")
    assert after["problems"] == {"missing": 0, "orphan": 0, "stale": 0, "version_mismatch": 0}
    stored = await service.store.chunk_ids_by_document()
    assert key("ghost") not in stored and "extra-row-of-5" not in stored[key(5)]
    assert (await record_of(service, key("phantom"))).deleted
    assert (await record_of(service, key(4))).version < (int(time.time()) + 3600) << 32
    # The lost row and the stale document's new chunks; the rest reuse their rows.
    new_chunks = len(stored[key(3)] - before[key(3)])
    assert new_chunks > 0
    assert service.embedder.counter.texts - embedded == 1 + new_chunks  # type: ignore[attr-defined]


async def test_a_sample_checks_about_that_many_documents(service: Sidecar) -> None:
    report = await ask(service, "check", sample=5)

    assert report["sample"] == 5
    assert 5 <= report["checked"] <= 30
    assert sum(report["problems"].values()) == 0


async def test_explain_shows_the_source_the_record_the_rows_and_the_verdict(
    service: Sidecar, mongo: Client
) -> None:
    await plant_one_of_each(service, mongo)

    (in_sync,) = (await ask(service, "explain", id="7"))["documents"]
    assert (in_sync["doc_key"], in_sync["verdict"]) == (key(7), "in_sync")
    assert in_sync["document"]["indexed"] and in_sync["record"]["chunks"] == len(in_sync["rows"])
    assert in_sync["document"]["content_hash"] == in_sync["record"]["content_hash"]

    (missing,) = (await ask(service, "explain", id="1"))["documents"]
    assert missing["verdict"] == "missing"
    assert len(missing["rows"]) == missing["record"]["chunks"] - 1

    (orphan,) = (await ask(service, "explain", id="ghost"))["documents"]
    assert (orphan["verdict"], orphan["document"], orphan["record"]) == ("orphan", None, None)
    assert [row["text"] for row in orphan["rows"]] == ["orphan"]

    (absent,) = (await ask(service, "explain", id="nobody"))["documents"]
    assert absent["verdict"] == "absent" and absent["rows"] == []


async def test_explain_lists_queued_and_dead_lettered_entries(
    service: Sidecar, mongo: Client
) -> None:
    await ask(service, "pause", reason="hold the change in the queue")
    await mongo[DATABASE][COLLECTION].update_one({"_id": 8}, {"$set": {"body": "new"}})

    async def queued() -> bool:
        return int(await service.redis.xlen(service.keys.events)) == 1

    await eventually(queued, within=WITHIN, what="the change to be queued")
    await service.redis.xadd(
        service.keys.dead, {"key": key(8), "error": "planted", "deliveries": "3", "event": "{}"}
    )

    (report,) = (await ask(service, "explain", id="8"))["documents"]

    assert report["verdict"] == "stale"
    assert [entry["lane"] for entry in report["queued"]] == ["live"]
    assert [letter["error"] for letter in report["dead_letters"]] == ["planted"]


async def test_explain_and_check_refuse_what_they_cannot_use(service: Sidecar) -> None:
    for command, args, message in [
        ("explain", {"id": ""}, "give the document's _id"),
        ("explain", {"id": "1", "collection": "elsewhere"}, "not a watched collection"),
        ("check", {"sample": 0}, "--sample must be a whole number"),
        ("check", {"sample": "many"}, "--sample must be a whole number"),
    ]:
        try:
            await ask(service, command, **args)
        except Exception as error:  # noqa: BLE001 - the message is what is checked
            assert message in str(error), (command, args, str(error))
        else:
            raise AssertionError(f"{command} {args} was accepted")


async def test_the_text_output_names_each_problem_and_what_to_do(
    service: Sidecar, mongo: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    await plant_one_of_each(service, mongo)
    report = await ask(service, "check")
    (explained,) = (await ask(service, "explain", id="1"))["documents"]
    capsys.readouterr()

    operator_cli._print_check(report)
    operator_cli._print_explanation(explained)

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("checked 32 documents (every document) in ")  # with 2 orphans
    assert "  missing          1" in lines and "  version_mismatch 2" in lines
    assert f"      {key(1)}: 1 of the" in "\n".join(lines)
    hint = lines.index(
        "`cdc-sidecar explain <id>` shows one; `cdc-sidecar check --repair` fixes them"
    )
    explanation = lines[hint + 1 :]
    assert explanation[0].startswith(f"{key(1)}: missing (1 of the ")
    assert explanation[1].startswith("  MongoDB    admitted by the filter; ")
    assert explanation[2].startswith("  record     version ")
    assert explanation[3] == f"  Milvus     {len(explained['rows'])} rows"
    assert explanation[-2:] == ["  queued     0", "  dead       0"]


async def test_the_service_checks_on_schedule_and_status_shows_the_last_result(
    make_settings: Callable[..., Settings], redis_client: aioredis.Redis, mongo: Client
) -> None:
    await mongo[DATABASE][COLLECTION].insert_many([{"_id": n, "title": f"t {n}"} for n in range(5)])
    stop = asyncio.Event()
    settings = make_settings(check_interval=0.2)
    async with Sidecar(settings, redis=redis_client, embedder=HashEmbedder()) as sidecar:
        task = asyncio.create_task(sidecar.run(stop))

        async def checked() -> bool:
            if task.done():
                task.result()
            status = await pipeline_status(redis_client, sidecar.keys)
            last = status["last_check"]
            return last is not None and last["checked"] == 5 and await idle(sidecar)

        await eventually(checked, within=WITHIN, what="a scheduled check of the indexed index")
        stop.set()
        await asyncio.wait_for(task, WITHIN)
    last = (await pipeline_status(redis_client, sidecar.keys))["last_check"]
    assert last["by"] == "schedule" and sum(last["problems"].values()) == 0


async def test_one_check_at_a_time(service: Sidecar) -> None:
    other = CheckLock(service.redis, service.keys, "other-run")
    assert await other.take("by ops@bastion since 09:00") is None

    with pytest.raises(SidecarError, match=r"already running \(by ops@bastion since 09:00\)"):
        await ask(service, "check")

    await other.release()
    assert (await ask(service, "check"))["checked"] == 30


async def test_a_sample_of_one_reads_a_part_of_the_index(service: Sidecar) -> None:
    report = await ask(service, "check", sample=1)

    assert report["sample"] == 1
    # One source document, and the documents of the rows under one random id prefix
    # (about a sixteenth of 30 rows), not the whole index.
    assert 1 <= report["checked"] < 30
    assert sum(report["problems"].values()) == 0


async def test_repairs_wait_for_room_in_the_bulk_lane_while_a_service_indexes(
    service: Sidecar, mongo: Client
) -> None:
    scope = WatchScope(service.settings.database, service.settings.collections)
    context = Context(
        service.redis, service.keys, 0, mongo, scope, live=True, bulk_room=2
    )
    run = _Run(
        context, service.index_view(), "test", CheckLock(service.redis, service.keys, "test"),
        sample=None, repair=True,
    )
    await ask(service, "pause", reason="keep the bulk lane full")
    for n in range(2):
        await service.redis.xadd(service.keys.bulk, {"event": "{}", "key": f"held-{n}"})

    waiting = asyncio.create_task(run._room(1))
    await asyncio.sleep(0.5)
    assert not waiting.done()  # 2 queued + 1 would pass the limit of 2

    await service.redis.xtrim(service.keys.bulk, maxlen=1, approximate=False)
    await asyncio.wait_for(waiting, WITHIN)
    await service.redis.delete(service.keys.bulk)
    await ask(service, "resume")


async def test_a_check_publishes_its_progress(service: Sidecar) -> None:
    await ask(service, "check")

    progress = await CheckProgress(service.redis, service.keys).read()
    assert progress is not None
    assert (progress["phase"], progress["checked"], progress["estimated"]) == ("done", 30, 30)


async def test_the_command_line_shows_the_progress_while_it_waits(
    service: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = CheckProgress(service.redis, service.keys)
    shown: list[dict[str, Any]] = []

    async def slow_check(settings: Settings, name: str, args: dict[str, Any]) -> dict[str, Any]:
        for checked in (10, 20):  # each step waits until the command line has shown it
            await published.publish({"phase": "MongoDB", "checked": checked, "estimated": 30})

            async def shown_now(checked: int = checked) -> bool:
                return any(progress["checked"] == checked for progress in shown)

            await eventually(shown_now, within=WITHIN, what=f"{checked} to be shown")
        return {"checked": 30}

    monkeypatch.setattr(commands, "command", slow_check)

    report = await commands.check_with_progress(service.settings, {}, shown.append)

    assert report == {"checked": 30}
    assert sorted({progress["checked"] for progress in shown}) == [10, 20]
