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
import heapq
import itertools
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


@dataclass(order=True)
class _Slice:
    lane: Lane
    seq: int
    texts: list[str] = field(compare=False)
    result: asyncio.Future[list[list[float]]] = field(compare=False)
    call: list[asyncio.Future[list[list[float]]]] = field(compare=False)
    """The results of every slice of the call this one belongs to."""


class LanedEmbedder:
    """An Embedder over *embedder* that encodes each call in slices of *slice_size*
    texts, at most *ahead* slices handed to *embedder* at a time, the waiting ones
    in order of lane (``current_lane`` when embed() was called), then of arrival.

    A call's texts are sorted by length before slicing, as the model sorts one
    call, so slicing adds no padding. Errors of a slice fail its call; cancelling
    a call withdraws its waiting slices and cancels the ones handed over."""

    def __init__(self, embedder: Embedder, *, slice_size: int = SLICE, ahead: int = AHEAD) -> None:
        if slice_size < 1 or ahead < 1:
            raise ValueError(f"slice_size and ahead must be positive, got {slice_size}, {ahead}")
        self._embedder = embedder
        self._slice_size = slice_size
        self._ahead = ahead
        self._waiting: list[_Slice] = []
        self._handed: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()

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
        lane = current_lane.get()
        loop = asyncio.get_running_loop()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        call: list[asyncio.Future[list[list[float]]]] = []
        slices = [
            _Slice(
                lane,
                next(self._seq),
                [texts[i] for i in order[start : start + self._slice_size]],
                loop.create_future(),
                call,
            )
            for start in range(0, len(order), self._slice_size)
        ]
        call += [part.result for part in slices]
        for part in slices:
            heapq.heappush(self._waiting, part)
        self._hand_over()
        try:
            parts = await asyncio.gather(*(part.result for part in slices))
        finally:
            for part in slices:
                part.result.cancel()
        vectors: list[list[float]] = [[] for _ in texts]
        for index, vector in zip(order, itertools.chain.from_iterable(parts), strict=True):
            vectors[index] = vector
        return vectors

    def _hand_over(self) -> None:
        while self._waiting and len(self._handed) < self._ahead:
            part = heapq.heappop(self._waiting)
            if part.result.done():
                continue
            task = asyncio.get_running_loop().create_task(self._encode(part))
            self._handed.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._handed.discard(task)
        self._hand_over()

    async def _encode(self, part: _Slice) -> None:
        encoding = asyncio.ensure_future(self._embedder.embed(part.texts))
        # A call given up (its result cancelled) stops its slice's encoding too.
        part.result.add_done_callback(lambda _: encoding.cancel())
        try:
            vectors = await encoding
        except asyncio.CancelledError:
            given_up = part.result.cancelled()
            part.result.cancel()
            if given_up:
                return
            raise
        except Exception as error:  # noqa: BLE001 - handed to the call the slice belongs to
            if not part.result.done():
                part.result.set_exception(error)
            for sibling in part.call:
                sibling.cancel()
            return
        if not part.result.done():
            part.result.set_result(vectors)
