"""The heap's free memory goes back to the system while the queue is idle."""

from __future__ import annotations

import platform

import psutil
import pytest

from sidecar.heap import HeapReturn, malloc_trim


def _resident_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_heap_is_trimmed_at_most_once_per_interval_while_idle() -> None:
    trims: list[float] = []
    clock = _Clock()
    heap_return = HeapReturn(lambda: trims.append(clock.now), interval=10.0, clock=clock)

    await heap_return()
    clock.now += 9.9
    await heap_return()
    assert trims == [100.0]
    clock.now += 0.1
    await heap_return()
    assert trims == [100.0, 110.0]


async def test_without_malloc_trim_nothing_is_done() -> None:
    await HeapReturn(None)()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
async def test_freed_memory_leaves_the_resident_set() -> None:
    """The real thing: what Python frees stays in glibc's arenas until trimmed."""
    trim = malloc_trim()
    assert trim is not None
    trim()
    # Below glibc's mmap threshold (128 KiB), so these come from the arenas.
    blocks = [bytearray(100_000) for _ in range(3_000)]
    grown = _resident_mib()
    del blocks[:-1]
    held = _resident_mib()
    await HeapReturn(trim)()
    assert held - _resident_mib() > 200, (grown, held, _resident_mib())
