"""The `cdc-sidecar` command line: run the service, show a pipeline's status, run the demo."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import structlog
import typer

from core.errors import SidecarError, describe_failure
from sidecar.logs import configure_logging
from sidecar.settings import Settings, load_settings

log = structlog.get_logger("main")
T = TypeVar("T")

cli = typer.Typer(
    help="Keep a Milvus vector index true to MongoDB by tailing its change stream.",
    no_args_is_help=True,
    add_completion=False,
)


def _settings() -> Settings:
    try:
        return load_settings()
    except SidecarError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def _fail(error: BaseException) -> typer.Exit:
    """One `error:` line on stderr and the exit status for *error*; the traceback goes
    to the debug log only."""
    status, message = describe_failure(error)
    log.debug("stopped_by", error=repr(error), exc_info=error)
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(status)


@cli.command()
def run() -> None:
    """Run capture and indexer until SIGTERM/SIGINT, then finish the batch in hand and exit 0."""
    settings = _settings()
    configure_logging(settings.log_level)
    from sidecar.app import serve

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(main())
    except Exception as error:  # noqa: BLE001 - the edge: every failure becomes one line
        raise _fail(error) from None


@cli.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show the pipeline's checkpoint, queue, last applied change and counters (read from Redis)."""
    settings = _settings()
    from sidecar.app import read_status

    try:
        report = asyncio.run(read_status(settings))
    except Exception as error:  # noqa: BLE001 - the edge: every failure becomes one line
        raise _fail(error) from None
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    _print_status(report)


def _print_status(report: dict[str, Any]) -> None:
    checkpoint = report["checkpoint"]
    typer.echo(f"pipeline        {report['pipeline']}")
    if checkpoint is None:
        typer.echo("checkpoint      none (the next start scans the collections first)")
    else:
        when = checkpoint["cluster_time"] or checkpoint["start_at_operation_time"] or {}
        typer.echo(f"checkpoint      {when.get('iso', '?')}  saved {checkpoint['saved_at']}")
    typer.echo(f"queue length    {report['queue_length']}")
    typer.echo(f"pending         {report['pending']}")
    typer.echo(f"dead letters    {report['dead_letters']}")
    typer.echo(f"bulk backlog    {report['backlog_bulk']}")
    job = report["backfill"]
    if job is not None:
        why = f" ({job['reason']}; {job['swept']} deleted)" if job["reason"] else ""
        typer.echo(
            f"backfill        {job['id']} {job['state']}{why}: {job['queued']} of about "
            f"{job['estimated']} documents queued ({', '.join(job['collections'])})"
        )
    paused = report["paused"]
    if paused is not None:
        typer.echo(
            f"indexing        PAUSED by {paused['by']} since {paused['since']}: "
            f"{paused['reason'] or 'no reason given'} (cdc-sidecar resume)"
        )
    last = report["last_applied"]
    typer.echo(f"last applied    {last['doc_key'] + ' at ' + last['timestamp'] if last else '-'}")
    for name, value in report["counters"].items():
        typer.echo(f"{name:<16}{value}")


checkpoint_cli = typer.Typer(
    help="See or move the change stream position (works whether the service runs or not).",
    no_args_is_help=True,
)
cli.add_typer(checkpoint_cli, name="checkpoint")


@checkpoint_cli.command("show")
def checkpoint_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show the saved position, who holds the lease, and the latest operator commands."""
    settings = _settings()
    from sidecar.commands import show_checkpoint

    report = _run(show_checkpoint(settings))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    lease = report["lease"]
    typer.echo(f"pipeline   {report['pipeline']}")
    typer.echo(f"position   {report['position']}")
    if report["checkpoint"] is not None:
        typer.echo(f"saved at   {report['checkpoint']['saved_at']}")
    if lease is None:
        typer.echo("lease      free: no service runs")
    else:
        typer.echo(f"lease      {lease['owner']} since {lease['since']}")
    typer.echo("operator commands, newest first:" if report["audit"] else "operator commands: none")
    for entry in report["audit"]:
        typer.echo(f"  {entry['at']}  {entry['by']}  {entry['command']}  {entry['outcome']}")
        if entry["before"] is not None:
            typer.echo(f"      from {entry['before']}")
            typer.echo(f"      to   {entry['after']}")


@checkpoint_cli.command("reset")
def checkpoint_reset(
    to_now: Annotated[
        bool, typer.Option("--to-now", help="The current end of the stream: skip what is unread.")
    ] = False,
    to_time: Annotated[
        str | None,
        typer.Option(
            "--to-time", help="The first change at or after this ISO 8601 time (with a timezone)."
        ),
    ] = None,
    to_token: Annotated[
        str | None,
        typer.Option("--to-token", help="After this resume token (JSON, as `show --json` prints)."),
    ] = None,
    rescan: Annotated[
        bool,
        typer.Option(
            "--rescan", help="No position: scan every watched collection, then stream on."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Move the position. A running service carries it out within about a second
    (capture stops, the position moves, capture starts again from it); with none
    running, this command does it under the lease. Audited either way."""
    settings = _settings()
    from operations.positions import ResetTarget
    from sidecar.commands import command

    try:
        target = ResetTarget.parse(
            to_now=to_now, to_time=to_time, to_token=to_token, rescan=rescan
        )
    except SidecarError as error:
        raise _fail(error) from None
    result = _run(command(settings, "checkpoint reset", target.args()))
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    typer.echo("position moved")
    typer.echo(f"  from {result['before']}")
    typer.echo(f"  to   {result['after']}")


@cli.command()
def backfill(
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", help="Only this watched collection (repeatable)."),
    ] = None,
    filter_json: Annotated[
        str, typer.Option("--filter", help='Only documents matching this query: {"lang": "zh"}')
    ] = "",
    follow: Annotated[
        bool, typer.Option("--follow", help="Show progress until the backfill is indexed.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Queue watched documents again, in _id order, beside the live stream (live changes
    go first). Resumes after a restart; unchanged documents embed nothing."""
    settings = _settings()
    from operations.backfills import parse_filter
    from sidecar.commands import command

    try:
        parse_filter(filter_json)
    except SidecarError as error:
        raise _fail(error) from None
    args = {"collections": collection or [], "filter": filter_json}
    result = _run(command(settings, "backfill", args))
    job = result["backfill"]
    if as_json and not follow:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"backfill {job['id']} started: {', '.join(job['collections'])}, about "
        f"{job['estimated']} documents; `cdc-sidecar status` shows its progress"
    )
    if follow:
        _follow_backfill(settings, job["id"])


def _follow_backfill(settings: Settings, job_id: str) -> None:
    """A progress bar until the job's scan is done and the bulk lane is indexed."""
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from sidecar.commands import backfill_progress

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as bar:
        task = bar.add_task("queued", total=None)
        while True:
            state = _run(backfill_progress(settings))
            job = state["backfill"]
            if job is None or job["id"] != job_id:
                raise _fail(SidecarError(f"backfill {job_id} was replaced by another job"))
            bar.update(task, completed=job["queued"], total=max(job["estimated"], job["queued"]))
            if job["state"] == "done":
                bar.update(task, description=f"indexing ({state['backlog_bulk']} left)")
                if state["backlog_bulk"] == 0:
                    break
            time.sleep(0.5)
    typer.echo(f"backfill {job_id} done: {job['queued']} documents queued and indexed")


@cli.command()
def pause(
    reason: Annotated[str, typer.Option(help="Why, for whoever reads `status`.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Stop indexing until `resume` (also across restarts): batches in flight finish,
    nothing new is read; capture goes on until the queue's limit
    (CDC_INDEX_QUEUE_MAX_SIZE)."""
    _simple_command("pause", {"reason": reason}, as_json)


@cli.command()
def resume(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Let indexing go on after `pause`."""
    _simple_command("resume", {}, as_json)


def _simple_command(name: str, args: dict[str, Any], as_json: bool) -> None:
    settings = _settings()
    from sidecar.commands import command

    result = _run(command(settings, name, args))
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    typer.echo(result["message"])


dlq_cli = typer.Typer(
    help="List, show, replay or purge dead letters (works whether the service runs or not).",
    no_args_is_help=True,
)
cli.add_typer(dlq_cli, name="dlq")
JSON_OPTION = typer.Option("--json", help="Print one JSON document.")


@dlq_cli.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 20,
    after: Annotated[
        str | None, typer.Option(help="Only dead letters after this id (for the next page).")
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Dead letters, oldest first: id, when, the document, deliveries and the error."""
    settings = _settings()
    from sidecar.commands import list_dead_letters

    report = _run(list_dead_letters(settings, limit, after))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    typer.echo(f"{report['total']} dead letter(s)")
    for letter in report["letters"]:
        typer.echo(
            f"  {letter['id']}  {letter['failed_at']}  {letter['doc_key'] or '?'}  "
            f"after {letter['deliveries']} deliveries: {letter['error']}"
        )
    if report["next"] is not None:
        typer.echo(f"more: cdc-sidecar dlq list --after {report['next']}")


@dlq_cli.command("show")
def dlq_show(entry_id: Annotated[str, typer.Argument(help="The id `dlq list` shows.")]) -> None:
    """One dead letter with its original event, as JSON."""
    settings = _settings()
    from sidecar.commands import show_dead_letter

    typer.echo(json.dumps(_run(show_dead_letter(settings, entry_id)), ensure_ascii=False, indent=2))


def _dlq_move(name: str, ids: list[str] | None, every: bool, as_json: bool) -> None:
    settings = _settings()
    from operations.deadletters import Selection
    from sidecar.commands import command

    try:
        selection = Selection.parse(ids or [], every)
    except SidecarError as error:
        raise _fail(error) from None
    result = _run(command(settings, name, selection.args()))
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    typer.echo(", ".join(f"{value} {key.replace('_', ' ')}" for key, value in result.items()))


IDS_ARGUMENT = typer.Argument(help="Dead-letter ids, as `dlq list` shows them.")
ALL_OPTION = typer.Option("--all", help="Every dead letter.")


@dlq_cli.command("replay")
def dlq_replay(
    ids: Annotated[list[str] | None, IDS_ARGUMENT] = None,
    every: Annotated[bool, ALL_OPTION] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Queue dead letters' events again (after fixing their cause) and remove them from
    the dead-letter stream; the running service carries it out."""
    _dlq_move("dlq replay", ids, every, as_json)


@dlq_cli.command("purge")
def dlq_purge(
    ids: Annotated[list[str] | None, IDS_ARGUMENT] = None,
    every: Annotated[bool, ALL_OPTION] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Delete dead letters for good (audited)."""
    _dlq_move("dlq purge", ids, every, as_json)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; any failure becomes one error line and its status
    (the command's own warnings are for the service's log, not for this terminal)."""
    configure_logging("error")
    try:
        return asyncio.run(work)
    except Exception as error:  # noqa: BLE001 - the edge: every failure becomes one line
        raise _fail(error) from None


@cli.command()
def demo(
    documents: Annotated[
        int, typer.Option(min=20, max=5000, help="How many documents to load.")
    ] = 300,
    precision: Annotated[
        str, typer.Option(help="fp32, or bf16 (about twice as fast on CPUs that have it).")
    ] = "fp32",
) -> None:
    """Run everything on embedded defaults (mongosim, a private Redis, Milvus Lite, the
    offline model): load real documents, change some, follow the index, search, summarise."""
    if precision not in ("fp32", "bf16"):
        typer.echo("error: --precision must be fp32 or bf16", err=True)
        raise typer.Exit(2)
    configure_logging("warning")
    from demo.run import run_demo

    try:
        asyncio.run(run_demo(documents=documents, precision=precision))
    except Exception as error:  # noqa: BLE001 - the edge: every failure becomes one line
        raise _fail(error) from None


if __name__ == "__main__":
    sys.exit(cli())
