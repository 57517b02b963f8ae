"""Waiting out outages: the one retry helper every part of the sidecar uses.

An outage (core.errors.is_outage: Redis, MongoDB, Milvus or the embedder
unreachable or busy) is never a decision about data: the call is tried again
with jittered exponential backoff up to a cap, for as long as it takes, and
the outage is logged once when it starts and once when it ends, with its
duration. Any other error is raised at once."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_when_event_set,
)

from core.errors import dependency_of, is_outage

log = structlog.get_logger("core.retry")

T = TypeVar("T")

MAX_WAIT_SECONDS = 30.0


class Stopped(Exception):
    """The caller was asked to stop while a dependency was still down: the work in
    hand stays where it is (unacknowledged, unsaved) for the next run."""


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep *seconds*, or less if *stop* is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return


class Wakeup:
    """A poll that can be cut short: :meth:`wait_unless` sleeps until :meth:`set` is
    called, *stop* is set or the time is up, whichever comes first."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait_unless(self, stop: asyncio.Event, seconds: float) -> None:
        woken = asyncio.ensure_future(self._event.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({woken, stopped}, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            woken.cancel()
            stopped.cancel()
        self._event.clear()


class OutageBoard:
    """The outages in progress in this process, by dependency (core.errors.DEPENDENCIES
    or "other"), for the outage metric. Every Outage reports to BOARD."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def started(self, dependency: str) -> None:
        self._open[dependency] = self._open.get(dependency, 0) + 1

    def ended(self, dependency: str) -> None:
        left = self._open.get(dependency, 0) - 1
        if left > 0:
            self._open[dependency] = left
        else:
            self._open.pop(dependency, None)

    def in_progress(self) -> dict[str, int]:
        """How many calls wait out an outage of each dependency now (only those > 0)."""
        return dict(self._open)


BOARD = OutageBoard()


class Outage:
    """The log of one outage of *what*: a line when it starts, one when it ends, and
    its place on BOARD meanwhile (under the dependency its first error names).

    A long-running call (a stream followed for days) marks its own recovery with
    ended() when it makes progress again, so the next outage starts from a short
    wait and is logged as a new one."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._started: float | None = None
        self._failures = 0
        self._dependency = "other"

    @property
    def failures(self) -> int:
        return self._failures

    def failed(self, error: BaseException | None, wait: float) -> None:
        self._failures += 1
        if self._started is None:
            self._started = time.monotonic()
            self._dependency = dependency_of(error)
            BOARD.started(self._dependency)
            log.warning("outage_started", what=self._what, error=repr(error), retry_in=wait)
        else:
            log.debug("outage_continues", what=self._what, error=repr(error), retry_in=wait)

    def ended(self) -> None:
        if self._started is not None:
            seconds = round(time.monotonic() - self._started, 3)
            log.warning("outage_ended", what=self._what, seconds=seconds, retries=self._failures)
            BOARD.ended(self._dependency)
        self._started = None
        self._failures = 0

    def left(self) -> None:
        """The call waiting out this outage gave up (stopped, cancelled, or a fatal
        error): it is off BOARD, though nobody saw the dependency come back."""
        if self._started is not None:
            BOARD.ended(self._dependency)
        self._started = None
        self._failures = 0


def raise_if_cancelling() -> None:
    """Raise CancelledError when the current task is being cancelled. For loops whose
    calls may swallow a cancellation (redis-py 8.1 can return the reply of a
    command cancelled early in its run): without it such a loop runs on."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def outlast(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    stop: asyncio.Event,
    initial: float = 0.1,
    max_wait: float = MAX_WAIT_SECONDS,
    outage: Outage | None = None,
) -> T:
    """The result of *call*, tried again through outages until it succeeds; the waits
    start at *initial* seconds and double, with jitter, up to *max_wait*.

    Raises at once any error that is not an outage, and Stopped (from the last
    outage) when *stop* is set while the outage lasts. *outage*, when given, is
    the caller's own log of it (see Outage)."""
    outage = outage or Outage(what)

    def wait(state: RetryCallState) -> float:
        # Full jitter, doubling per failure since the last recovery (not per attempt
        # of this call, which may have recovered and run for days in between).
        return random.uniform(0, min(max_wait, initial * 2 ** min(outage.failures, 30)))

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        outage.failed(error, state.next_action.sleep if state.next_action else 0.0)

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_outage),
        wait=wait,
        stop=stop_when_event_set(stop),  # type: ignore[arg-type]
        sleep=lambda seconds: sleep_unless(stop, seconds),
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:
        # tenacity awaits only what a coroutine function returns, not a lambda's.
        task = asyncio.current_task()
        try:
            result = await call()
        except Exception:
            if task is not None and task.cancelling():
                # A library may turn the cancellation of a call into its own
                # connection error: retrying that would swallow the cancellation.
                raise asyncio.CancelledError from None
            raise
        raise_if_cancelling()
        return result

    try:
        result: T = await retrying(attempt)
    except BaseException as error:
        # Off the board even when the outage is the caller's: a caller that gives up
        # (a capture stopped for a reset, or ended by lost history) never ends it.
        outage.left()
        if isinstance(error, Exception) and stop.is_set() and is_outage(error):
            raise Stopped(f"stopped while {what} was unavailable: {error}") from error
        raise
    outage.ended()
    return result
