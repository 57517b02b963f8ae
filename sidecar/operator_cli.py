"""The operator commands of `cdc-sidecar`: the stream position, backfills, reindexing,
pausing, dead letters. Each validates its input at once and then calls one operation
(operations/), which the running service carries out when one holds the lease."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from core.errors import InvalidRequest, SidecarError
from sidecar.cli_support import fail, run_command, settings_or_exit
from sidecar.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

JSON_OPTION = typer.Option("--json", help="Print one JSON document.")

checkpoint_cli = typer.Typer(
    help="See or move the change stream position (works whether the service runs or not).",
    no_args_is_help=True,
)


@checkpoint_cli.command("show")
def checkpoint_show(
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Show the saved position, who holds the lease, and the latest operator commands."""
    settings = settings_or_exit()
    from sidecar.commands import show_checkpoint

    report = run_command(show_checkpoint(settings))
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
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Move the position. A running service carries it out within about a second
    (capture stops, the position moves, capture starts again from it); with none
    running, this command does it under the lease. Audited either way."""
    settings = settings_or_exit()
    from operations.positions import ResetTarget
    from sidecar.commands import command

    try:
        target = ResetTarget.parse(
            to_now=to_now, to_time=to_time, to_token=to_token, rescan=rescan
        )
    except SidecarError as error:
        raise fail(error) from None
    result = run_command(command(settings, "checkpoint reset", target.args()))
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    typer.echo("position moved")
    typer.echo(f"  from {result['before']}")
    typer.echo(f"  to   {result['after']}")


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
    cancel: Annotated[
        bool,
        typer.Option("--cancel", help="Stop the running backfill or reindex instead."),
    ] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Queue watched documents again, in _id order, beside the live stream (live changes
    go first). Resumes after a restart; unchanged documents embed nothing."""
    if cancel:
        if collection or filter_json or follow:
            raise fail(InvalidRequest("--cancel takes no --collection, --filter or --follow"))
        _simple_command("backfill cancel", {}, as_json)
        return
    args = {"collections": collection or [], "filter": filter_json}
    _start_job("backfill", args, follow, as_json)


def reindex(
    ids: Annotated[
        list[str] | None,
        typer.Argument(help='Document _ids: 42, abc, 65a1...(ObjectId hex) or {"$oid": ...}.'),
    ] = None,
    filter_json: Annotated[
        str, typer.Option("--filter", help='Or the documents matching this query: {"lang": "zh"}')
    ] = "",
    follow: Annotated[
        bool, typer.Option("--follow", help="Show progress until it is indexed.")
    ] = False,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Bring documents' vectors in line with MongoDB without trusting what Redis says is
    indexed: rows Milvus lost are written again (from stored vectors where it has
    them), documents the source no longer has are deleted. Runs like a backfill."""
    _start_job("reindex", {"ids": ids or [], "filter": filter_json}, follow, as_json)


def _start_job(name: str, args: dict[str, Any], follow: bool, as_json: bool) -> None:
    """Start a backfill or reindex job: the filter checked here first, then the command;
    print its start (or its JSON) and, with *follow*, its progress."""
    settings = settings_or_exit()
    from operations.backfills import parse_filter
    from sidecar.commands import command

    try:
        parse_filter(args["filter"])
    except SidecarError as error:
        raise fail(error) from None
    result = run_command(command(settings, name, args))
    job = result["backfill"]
    if as_json and not follow:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    typer.echo(
        f"{name} {job['id']} started: {', '.join(job['collections'])}, about "
        f"{job['estimated']} documents; `cdc-sidecar status` shows its progress"
    )
    if follow:
        _follow_backfill(settings, job["id"])


def _progress_bar(console: Console | None = None) -> Progress:
    """The long commands' progress bar: what is being done, the bar, done of total, and
    the time left (on *console*, else rich's default)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _follow_backfill(settings: Settings, job_id: str) -> None:
    """A progress bar until the job's scan is done and the bulk lane is indexed."""
    from sidecar.commands import backfill_progress

    with _progress_bar() as bar:
        task = bar.add_task("queued", total=None)
        while True:
            state = run_command(backfill_progress(settings))
            job = state["backfill"]
            if job is None or job["id"] != job_id:
                raise fail(SidecarError(f"backfill {job_id} was replaced by another job"))
            if job["state"] == "cancelled":
                raise fail(SidecarError(f"backfill {job_id} was {job['reason']}"))
            bar.update(task, completed=job["queued"], total=max(job["estimated"], job["queued"]))
            if job["state"] == "done":
                bar.update(task, description=f"indexing ({state['backlog_bulk']} left)")
                if state["backlog_bulk"] == 0:
                    break
            time.sleep(0.5)
    typer.echo(f"backfill {job_id} done: {job['queued']} documents queued and indexed")


def pause(
    reason: Annotated[str, typer.Option(help="Why, for whoever reads `status`.")] = "",
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Stop indexing until `resume` (also across restarts): batches in flight finish,
    nothing new is read; capture goes on until the queue's limit
    (CDC_INDEX_QUEUE_MAX_SIZE)."""
    _simple_command("pause", {"reason": reason}, as_json)


def resume(
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Let indexing go on after `pause`."""
    _simple_command("resume", {}, as_json)


def _simple_command(name: str, args: dict[str, Any], as_json: bool) -> None:
    settings = settings_or_exit()
    from sidecar.commands import command

    result = run_command(command(settings, name, args))
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    typer.echo(result["message"])


def explain(
    document: Annotated[
        str, typer.Argument(help='The _id: 42, abc, 65a1...(ObjectId hex) or {"$oid": ...}.')
    ],
    collection: Annotated[
        str | None, typer.Option(help="Only in this watched collection.")
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """How one document stands: in MongoDB (does the filter admit it, its text hash),
    its version record, its rows in Milvus, queued or dead-lettered entries, and a
    verdict: in_sync, absent, missing, stale, orphan or version_mismatch."""
    settings = settings_or_exit()
    from sidecar.commands import command

    result = run_command(command(settings, "explain", {"id": document, "collection": collection}))
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    for report in result["documents"]:
        _print_explanation(report)


def _print_explanation(report: dict[str, Any]) -> None:
    typer.echo(f"{report['doc_key']}: {report['verdict']} ({report['reason']})")
    source = report["document"]
    if source is None:
        typer.echo("  MongoDB    no such document")
    elif source["indexed"]:
        typer.echo(
            f"  MongoDB    admitted by the filter; {source['text_chars']} characters of "
            f"text, hash {source['content_hash'][:12]}"
        )
    else:
        typer.echo(f"  MongoDB    not indexed: {source['why_not']}")
    record = report["record"]
    if record is None:
        typer.echo("  record     none")
    else:
        state = "deleted (tombstone)" if record["deleted"] else f"{record['chunks']} chunks"
        typer.echo(
            f"  record     version {record['version']} ({record['version_time']}), {state}, "
            f"hash {record['content_hash'][:12]}, written {record['updated_at']}"
        )
    typer.echo(f"  Milvus     {len(report['rows'])} rows")
    for row in report["rows"]:
        typer.echo(f"    #{row['chunk_index']}  {row['id']}  {row['chars']} chars  {row['text']!r}")
    typer.echo(f"  queued     {len(report['queued'])}")
    for entry in report["queued"]:
        typer.echo(f"    {entry['lane']} {entry['id']}")
    typer.echo(f"  dead       {len(report['dead_letters'])}")
    for letter in report["dead_letters"]:
        typer.echo(f"    {letter['id']}  {letter['failed_at']}  {letter['error']}")


def check(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Queue a reindex or a delete for each problem (at most 10,000 a run).",
        ),
    ] = False,
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="Check about N documents of each collection and N rows."),
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Compare MongoDB, the version records and Milvus: count and show missing, orphan,
    stale and version-mismatched documents. Exits 3 when it found problems it did not
    queue a repair for."""
    settings = settings_or_exit()
    from rich.console import Console

    from sidecar.commands import check_with_progress

    with _progress_bar(Console(stderr=True, quiet=as_json)) as bar:
        task = bar.add_task("checking", total=None)

        def show(progress: dict[str, Any]) -> None:
            total = max(progress["estimated"], progress["checked"])
            bar.update(
                task, description=progress["phase"], completed=progress["checked"], total=total
            )

        args = {"repair": repair, "sample": sample}
        report = run_command(check_with_progress(settings, args, show))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_check(report)
    problems = sum(report["problems"].values())
    if problems and (not repair or report["repair"]["left"]):
        raise typer.Exit(3)


def _print_check(report: dict[str, Any]) -> None:
    scope = f"a sample of {report['sample']}" if report["sample"] else "every document"
    typer.echo(
        f"checked {report['checked']} documents ({scope}) in {report['seconds']:.1f} s; "
        f"{report['changed_while_checking']} changed while checking were left out"
    )
    if not report["indexer_caught_up"]:
        typer.echo(
            "  (the indexer had not caught up with the check's start within 30 s: some of "
            "these may be changes still queued; run it again when `status` shows no backlog)"
        )
    for verdict, count in report["problems"].items():
        typer.echo(f"  {verdict:<17}{count}")
        for example in report["examples"].get(verdict, []):
            typer.echo(f"      {example['doc_key']}: {example['reason']}")
    repaired = report["repair"]
    if repaired is not None:
        typer.echo(f"repair: {repaired['queued']} fixes queued in the bulk lane")
        if repaired["left"]:
            typer.echo(f"  {repaired['left']} more: run `cdc-sidecar check --repair` again")
    elif sum(report["problems"].values()):
        typer.echo("`cdc-sidecar explain <id>` shows one; `cdc-sidecar check --repair` fixes them")


dlq_cli = typer.Typer(
    help="List, show, replay or purge dead letters (works whether the service runs or not).",
    no_args_is_help=True,
)


@dlq_cli.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 20,
    after: Annotated[
        str | None, typer.Option(help="Only dead letters after this id (for the next page).")
    ] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Dead letters, oldest first: id, when, the document, deliveries and the error."""
    settings = settings_or_exit()
    from sidecar.commands import list_dead_letters

    report = run_command(list_dead_letters(settings, limit, after))
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
    settings = settings_or_exit()
    from sidecar.commands import show_dead_letter

    letter = run_command(show_dead_letter(settings, entry_id))
    typer.echo(json.dumps(letter, ensure_ascii=False, indent=2))


def _dlq_move(name: str, ids: list[str] | None, every: bool, as_json: bool) -> None:
    settings = settings_or_exit()
    from operations.deadletters import Selection
    from sidecar.commands import command

    try:
        selection = Selection.parse(ids or [], every)
    except SidecarError as error:
        raise fail(error) from None
    result = run_command(command(settings, name, selection.args()))
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
