"""The `cdc-sidecar` command line: run the service, show a pipeline's status, run the demo;
the operator commands are in sidecar/operator_cli.py."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer

from core.errors import InvalidRequest, describe_failure
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
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh in place every --interval s until Ctrl-C.")
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.2, max=3600, help="Seconds between refreshes of --watch.")
    ] = 2.0,
) -> None:
    """Show the pipeline's service, checkpoint, lag, queue, last applied change and
    counters (read from Redis). Exits 3 when no service holds the pipeline's lease,
    1 when Redis cannot be read."""
    settings = settings_or_exit()
    from sidecar.app import read_status
    from sidecar.status import status_lines

    if watch:
        if as_json:
            raise fail(
                InvalidRequest("--watch shows text: leave out --json (or poll status --json)")
            )
        _watch(lambda: status_lines(asyncio.run(read_status(settings))), interval)
        return
    try:
        report = asyncio.run(read_status(settings))
    except Exception as error:  # noqa: BLE001 - the edge: every failure becomes one line
        raise fail(error) from None
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        typer.echo("\n".join(status_lines(report)))
    if report["service"] is None:
        raise typer.Exit(NOT_RUNNING)


def _watch(render: Callable[[], list[str]], interval: float) -> None:
    """`status --watch`: *render*'s lines redrawn in place until Ctrl-C; a read that fails
    shows its error line and the next try goes on."""
    from rich.live import Live
    from rich.text import Text

    with Live(auto_refresh=False) as live:
        try:
            while True:
                try:
                    lines = render()
                except Exception as error:  # noqa: BLE001 - shown, then tried again
                    lines = [f"error: {describe_failure(error)[1]}"]
                footer = f"(every {interval:g} s, {time.strftime('%H:%M:%S')}; Ctrl-C stops)"
                live.update(Text("\n".join([*lines, footer])), refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            return


NOT_RUNNING = 3
"""`status`'s exit status when no service runs the pipeline (as `systemctl status`)."""


@cli.command()
def demo(
    documents: Annotated[
        int, typer.Option(min=20, max=5000, help="How many documents to load.")
    ] = 300,
    precision: Annotated[
        str,
        typer.Option(
            help="The inference path: fp32, auto (the fastest that passes the quality "
            "gate), bf16, onnx-fp32, onnx-int8, openvino-fp32 or openvino-bf16."
        ),
    ] = "fp32",
) -> None:
    """Run everything on embedded defaults (mongosim, a private Redis, Milvus Lite, the
    offline model): load real documents, change some, follow the index, search, summarise."""
    from indexer.embedding import PRECISIONS

    if precision not in PRECISIONS:
        typer.echo(f"error: --precision must be one of {', '.join(PRECISIONS)}", err=True)
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
