"""The process's heap: start-up's objects frozen out of the collector's sight, and
memory freed by a burst of indexing given back to the system once the queue is idle."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import time
from collections.abc import Callable

TRIM_INTERVAL = 10.0
"""Seconds between two returns of free heap while the queue stays idle. A return
takes about 10 ms over a heap of 1.7 GB with much free, under 1 ms when there is
nothing to give back."""


def settle_heap() -> None:
    """Take what start-up built out of the garbage collector's sight.

    Start-up leaves about half a million long-lived objects (torch, transformers,
    the model, the clients). Every full collection walks them all, about 0.3 s on
    these machines, and capturing a backlog allocates fast enough to trigger one
    every second or so: a third of capture's time went to the collector
    (bench/bench_capture.py). Frozen objects are never collected, so the garbage
    of start-up is collected first."""
    gc.collect()
    gc.freeze()


def malloc_trim() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


class HeapReturn:
    """Gives the heap's free memory back to the system while the queue is idle, at
    most once per *interval* seconds.

    glibc keeps what Python, torch, OpenVINO and Milvus Lite free in its arenas for
    reuse, so the resident set stays at the high-water mark of the last burst: after
    indexing 1,800 chunks, 1,176 MiB, of which a ``malloc_trim`` returned 105 MiB
    (bench/bench_pipeline.py). The set a memory limit is held against is the one
    this lowers; the peak while indexing stays as it was."""

    def __init__(
        self,
        trim: Callable[[], None] | None,
        *,
        interval: float = TRIM_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trim = trim
        self._interval = interval
        self._clock = clock
        self._last: float | None = None

    async def __call__(self) -> None:
        if self._trim is None:
            return
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return
        self._last = now
        await asyncio.to_thread(self._trim)
