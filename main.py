"""The `cdc-sidecar` command line: run the service, show a pipeline's status, run the demo;
the operator commands are in sidecar/operator_cli.py."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Annotated, Any

import typer

from sidecar import operator_cli
from sidecar.cli_support import fail, settings_or_exit
from sidecar.logs import configure_logging

cli = typer.Typer(
    help="Keep a Milvus vector index true to MongoDB by tailing its change stream.",
    no_args_is_help=True,
    add_completion=False,
)


@cli.command()
def run() -> None:
    """Run capture and indexer until SIGTERM/SIGINT, then finish the batch in hand and exit 0."""
    settings = settings_or_exit()
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
        raise fail(error) from None


@cli.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show the pipeline's service, checkpoint, queue, last applied change and counters
    (read from Redis). Exits 3 when no service holds the pipeline's lease."""
    settings = settings_or_exit()
    from sidecar.app import read_status

    try:
        report = asyncio.run(read_status(settings))
    except Exception as error:  # noqa: BLE001 - the edge: every failure becomes one line
        raise fail(error) from None
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_status(report)
    if report["service"] is None:
        raise typer.Exit(NOT_RUNNING)


NOT_RUNNING = 3
"""`status`'s exit status when no service runs the pipeline (as `systemctl status`)."""


def _print_status(report: dict[str, Any]) -> None:
    checkpoint = report["checkpoint"]
    service = report["service"]
    typer.echo(f"pipeline        {report['pipeline']}")
    if service is None:
        typer.echo("service         NOT RUNNING (no replica holds the lease)")
    else:
        typer.echo(f"service         {service['owner']} (lease since {service['since']})")
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
    check = report["last_check"]
    if check is not None:
        found = ", ".join(f"{count} {kind}" for kind, count in check["problems"].items() if count)
        typer.echo(
            f"last check      {check['started_at']} by {check['by']}: {check['checked']} "
            f"documents, {found or 'no problems'}"
        )
    last = report["last_applied"]
    typer.echo(f"last applied    {last['doc_key'] + ' at ' + last['timestamp'] if last else '-'}")
    counters = report["counters"]
    width = max(16, *(len(name) + 2 for name in counters))
    for name, value in counters.items():
        typer.echo(f"{name:<{width}}{value}")


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
        raise fail(error) from None


cli.add_typer(operator_cli.checkpoint_cli, name="checkpoint")
cli.add_typer(operator_cli.dlq_cli, name="dlq")
for command in (
    operator_cli.backfill,
    operator_cli.reindex,
    operator_cli.pause,
    operator_cli.resume,
    operator_cli.explain,
    operator_cli.check,
):
    cli.command()(command)


if __name__ == "__main__":
    sys.exit(cli())
