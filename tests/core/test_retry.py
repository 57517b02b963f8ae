"""The one retry helper: outages are waited out and logged once, anything else is raised
at once, a stop ends the wait, and a cancellation is never swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis.exceptions
import structlog.testing

from core.retry import BOARD, Outage, Stopped, outlast


def failing(times: int, error: Exception) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "done"

    return calls, call


async def test_an_outage_is_waited_out_and_logged_once_at_each_end() -> None:
    calls, call = failing(3, redis.exceptions.ConnectionError("refused"))
    with structlog.testing.capture_logs() as logs:
        result = await outlast(call, what="Redis", stop=asyncio.Event(), initial=0.01)
    assert result == "done" and len(calls) == 4
    events = [entry["event"] for entry in logs]
    assert events.count("outage_started") == 1 and events.count("outage_ended") == 1
    ended = next(entry for entry in logs if entry["event"] == "outage_ended")
    assert ended["what"] == "Redis" and ended["retries"] == 3


async def test_an_error_that_is_not_an_outage_is_raised_at_once() -> None:
    calls, call = failing(1, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await outlast(call, what="Redis", stop=asyncio.Event())
    assert len(calls) == 1


async def test_a_stop_during_an_outage_ends_the_wait() -> None:
    stop = asyncio.Event()
    _, call = failing(10**6, redis.exceptions.ConnectionError("refused"))
    waiting = asyncio.create_task(outlast(call, what="Redis", stop=stop, initial=0.01))
    await asyncio.sleep(0.1)
    stop.set()
    with pytest.raises(Stopped, match="stopped while Redis was unavailable"):
        await asyncio.wait_for(waiting, 10)


async def test_a_cancelled_call_is_not_retried_even_if_its_library_calls_it_a_lost_connection() -> (
    None
):
    async def call() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise redis.exceptions.ConnectionError("Connection closed by server.") from None

    task = asyncio.create_task(outlast(call, what="Redis", stop=asyncio.Event()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_a_call_that_swallows_its_cancellation_still_ends_the_caller() -> None:
    """redis-py 8.1 returns the reply of a command cancelled early in its run; a loop
    of such calls (the scheduler's reads) would then never end."""
    async def call() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "a reply anyway"
        return "never"

    task = asyncio.create_task(outlast(call, what="Redis", stop=asyncio.Event()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)



async def test_an_outage_is_on_the_board_under_its_dependency_until_it_ends() -> None:
    seen: list[dict[str, int]] = []
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        seen.append(BOARD.in_progress())
        if len(calls) <= 2:
            raise redis.exceptions.ConnectionError("refused")
        return "done"

    before = BOARD.in_progress().get("redis", 0)
    await outlast(call, what="Redis", stop=asyncio.Event(), initial=0.01)
    assert [view.get("redis", 0) - before for view in seen] == [0, 1, 1]
    assert BOARD.in_progress().get("redis", 0) == before


@pytest.mark.parametrize("ending", ["stop", "fatal error"])
async def test_a_caller_that_gives_up_on_its_own_outage_takes_it_off_the_board(
    ending: str,
) -> None:
    """A capture keeps its own Outage and never ends it once it stopped (a reset, lost
    history): the board must not report that outage for the rest of the process."""
    outage = Outage("the change stream (MongoDB) or the queue (Redis)")
    stop = asyncio.Event()
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) == 3:
            if ending == "stop":
                stop.set()
            else:
                raise ValueError("a bug")
        raise redis.exceptions.ConnectionError("refused")

    before = BOARD.in_progress().get("redis", 0)
    with pytest.raises(Stopped if ending == "stop" else ValueError):
        await outlast(call, what="capture", stop=stop, initial=0.01, outage=outage)
    assert BOARD.in_progress().get("redis", 0) == before
