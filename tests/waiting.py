"""Waiting on a condition with a deadline, the one way tests wait for something to happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest


async def eventually(
    condition: Callable[[], Awaitable[bool]],
    *,
    within: float = 30.0,
    what: str,
    every: float = 0.05,
) -> None:
    """Poll *condition* every *every* seconds until it holds; fail the test naming
    *what* after *within* seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(every)
