"""CaptureSwitch: an operator command that moves the position runs only while no life of
capture runs, and the next life starts after the command, never during it."""

from __future__ import annotations

import asyncio

from sidecar.capture_switch import CaptureSwitch


async def test_a_pause_ends_the_running_life_and_holds_the_next_until_the_command_is_done() -> None:
    switch, stop, trace = CaptureSwitch(), asyncio.Event(), []
    started = [asyncio.Event(), asyncio.Event()]

    async def supervisor() -> None:
        for life in range(2):
            async with switch.running(stop) as life_stop:
                trace.append(f"life {life} started")
                started[life].set()
                await life_stop.wait()
                await asyncio.sleep(0.05)  # the batch in hand is queued before it ends
                trace.append(f"life {life} ended")

    lives = asyncio.create_task(supervisor())
    await asyncio.wait_for(started[0].wait(), 5)
    async with switch.paused():
        trace.append("command")
        await asyncio.sleep(0.05)  # the next life must not start meanwhile
        trace.append("command done")
    await asyncio.wait_for(started[1].wait(), 5)
    stop.set()
    await asyncio.wait_for(lives, 5)

    assert trace == [
        "life 0 started",
        "life 0 ended",
        "command",
        "command done",
        "life 1 started",
        "life 1 ended",
    ]


async def test_stop_ends_a_life_and_a_pause_with_no_life_running_goes_ahead() -> None:
    switch, stop = CaptureSwitch(), asyncio.Event()
    await asyncio.wait_for(pause_once(switch), 5)
    stop.set()
    async with switch.running(stop) as life_stop:
        await asyncio.wait_for(life_stop.wait(), 5)
    await asyncio.wait_for(pause_once(switch), 5)


async def pause_once(switch: CaptureSwitch) -> None:
    async with switch.paused():
        pass
