"""What every `cdc-sidecar` command does at the edge: settings read once, each failure
turned into one `error:` line and its exit status, coroutines run to completion."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog
import typer

from core.errors import SidecarError, describe_failure
from sidecar.logs import configure_logging
from sidecar.settings import Settings, load_settings

log = structlog.get_logger("main")
T = TypeVar("T")


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SidecarError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def fail(error: BaseException) -> typer.Exit:
    """One `error:` line on stderr and the exit status for *error*; the traceback goes
    to the debug log only."""
    status, message = describe_failure(error)
    log.debug("stopped_by", error=repr(error), exc_info=error)
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(status)


def run_command(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; any failure becomes one error line and its status
    (the command's own warnings are for the service's log, not for this terminal)."""
    configure_logging("error")
    try:
        return asyncio.run(work)
    except Exception as error:  # noqa: BLE001 - the edge: every failure becomes one line
        raise fail(error) from None
