"""The queue lane of the work in hand, and an embedder that serves the lanes in order.

The queue's lanes (priority documents, other live changes, bulk work) decide what
is read first; the model is the other resource they share. A batch of bulk work
holds many chunks, and a live batch read while it is being embedded would wait
for all of them. LanedEmbedder hands the model small slices instead, a slice of
a higher lane before any slice of a lower one, so a live change waits for the
slices already handed over, never for a whole bulk batch: bulk batches can be
large (less padding, fewer round trips) without making live changes wait."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import IntEnum

from checkpoints.consumer import BULK_PREFIX, PRIORITY_PREFIX
from indexer.embedding import Embedder


class Lane(IntEnum):
    """Queue lanes, most urgent first."""

    PRIORITY = 0
    LIVE = 1
    BULK = 2


def lane_of(entry_id: str) -> Lane:
    """The lane a queue entry was read from, by its id."""
    if entry_id.startswith(PRIORITY_PREFIX):
        return Lane.PRIORITY
    if entry_id.startswith(BULK_PREFIX):
        return Lane.BULK
    return Lane.LIVE


current_lane: ContextVar[Lane] = ContextVar("current_lane", default=Lane.LIVE)
"""The lane of the batch the running task applies; the scheduler sets it for each
batch's task, LanedEmbedder reads it."""

SLICE = 16
"""Texts per slice: two model batches at the default CDC_EMBEDDING_BATCH_SIZE of 8,
about 0.3 s of fp32 encoding on two cores."""

AHEAD = 2
"""Slices handed to the model at once: one encoding, one waiting, so the model
never idles between slices while the event loop is busy elsewhere."""


@dataclass(eq=False)
class _Call:
    """One embed() call: its texts, the vectors found so far, its result."""

    texts: list[str]
    result: asyncio.Future[list[list[float]]]
    vectors: list[list[float] | None] = field(init=False)
    missing: int = field(init=False)

    def __post_init__(self) -> None:
        self.vectors = [None] * len(self.texts)
        self.missing = len(self.texts)

    def found(self, index: int, vector: list[float]) -> None:
        if self.result.done() or self.vectors[index] is not None:
            return
        self.vectors[index] = vector
        self.missing -= 1
        if self.missing == 0:
            self.result.set_result([v for v in self.vectors if v is not None])


class LanedEmbedder:
    """An Embedder over *embedder* that encodes in slices of up to *slice_size* texts,
    at most *ahead* slices handed to *embedder* at a time. A slice takes the waiting
    texts of the most urgent lane (``current_lane`` when embed() was called), in order
    of arrival: a large bulk call is cut into many slices, and small calls of one lane
    (a few live changes each) share one, so the model sees full batches either way.

    A call's texts wait sorted by length, as the model sorts one call, so cutting it
    adds no padding. An error fails every call with a text in the slice; cancelling a
    call withdraws its waiting texts and cancels the slices that hold only its texts."""

    def __init__(self, embedder: Embedder, *, slice_size: int = SLICE, ahead: int = AHEAD) -> None:
        if slice_size < 1 or ahead < 1:
            raise ValueError(f"slice_size and ahead must be positive, got {slice_size}, {ahead}")
        self._embedder = embedder
        self._slice_size = slice_size
        self._ahead = ahead
        self._waiting: dict[Lane, deque[tuple[_Call, int]]] = {lane: deque() for lane in Lane}
        self._handed: dict[asyncio.Task[None], list[_Call]] = {}

    @property
    def dimension(self) -> int:
        return self._embedder.dimension

    @property
    def fingerprint(self) -> str:
        return self._embedder.fingerprint

    @property
    def max_tokens(self) -> int:
        return self._embedder.max_tokens

    def count_tokens(self, text: str) -> int:
        return self._embedder.count_tokens(text)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        call = _Call(list(texts), asyncio.get_running_loop().create_future())
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        self._waiting[current_lane.get()].extend((call, index) for index in order)
        call.result.add_done_callback(lambda _: self._cancel_abandoned_slices())
        self._hand_over()
        try:
            return await call.result
        finally:
            call.result.cancel()

    def _hand_over(self) -> None:
        while len(self._handed) < self._ahead:
            part = self._next_slice()
            if not part:
                return
            calls = list({id(call): call for call, _ in part}.values())
            task = asyncio.get_running_loop().create_task(self._encode(part))
            self._handed[task] = calls
            task.add_done_callback(self._finished)

    def _next_slice(self) -> list[tuple[_Call, int]]:
        for lane in Lane:
            waiting = self._waiting[lane]
            part: list[tuple[_Call, int]] = []
            while waiting and len(part) < self._slice_size:
                call, index = waiting.popleft()
                if not call.result.done():
                    part.append((call, index))
            if part:
                return part
        return []

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._handed.pop(task, None)
        self._hand_over()

    def _cancel_abandoned_slices(self) -> None:
        """A call is done: stop the slices handed over whose calls are all done."""
        for task, calls in list(self._handed.items()):
            if all(other.result.done() for other in calls):
                task.cancel()

    async def _encode(self, part: list[tuple[_Call, int]]) -> None:
        try:
            vectors = await self._embedder.embed([call.texts[index] for call, index in part])
        except Exception as error:  # noqa: BLE001 - handed to the calls the slice serves
            for call, _ in part:
                if not call.result.done():
                    call.result.set_exception(error)
            return
        for (call, index), vector in zip(part, vectors, strict=True):
            call.found(index, vector)
