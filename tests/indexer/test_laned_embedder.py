"""LanedEmbedder: bulk work is encoded in slices, and a more urgent lane's slices
are handed to the model before the rest of a bulk call."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from core.errors import EmbedderUnavailable
from indexer.lanes import Lane, LanedEmbedder, current_lane, lane_of
from sidecar.app import laned
from sidecar.settings import load_settings
from tests.embedders import HashEmbedder


class GatedEmbedder(HashEmbedder):
    """Encodes one call at a time, each only when the test lets it: the model's
    one worker thread, slowed down to a pace a test controls."""

    def __init__(self, *, fail_on: str | None = None) -> None:
        super().__init__()
        self.started: list[list[str]] = []
        self.gate = asyncio.Semaphore(0)
        self._one_at_a_time = asyncio.Lock()
        self._fail_on = fail_on

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        async with self._one_at_a_time:
            self.started.append(list(texts))
            await self.gate.acquire()
            if self._fail_on in texts:
                raise EmbedderUnavailable("the model ran out of memory")
            return await super().embed(texts)


async def in_lane(lane: Lane, embedder: LanedEmbedder, texts: list[str]) -> list[list[float]]:
    """embed() called from a batch of *lane*, as the scheduler's batch tasks do."""
    context = contextvars.copy_context()
    context.run(current_lane.set, lane)
    return await asyncio.create_task(embedder.embed(texts), context=context)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def release(inner: GatedEmbedder, calls: int) -> None:
    for _ in range(calls):
        inner.gate.release()
        await settle()


def test_lanes_follow_the_entry_ids_prefixes() -> None:
    assert lane_of("vip:1700000000000-0") is Lane.PRIORITY
    assert lane_of("1700000000000-0") is Lane.LIVE
    assert lane_of("bulk:1700000000000-0") is Lane.BULK


async def test_vectors_come_back_in_the_callers_order() -> None:
    """Slicing sorts a call's texts by length: the vectors must not be sorted with them."""
    inner = HashEmbedder()
    laned = LanedEmbedder(inner, slice_size=3)
    texts = [f"text {'x' * (i * 7 % 11)} {i}" for i in range(10)]

    assert await laned.embed(texts) == await HashEmbedder().embed(texts)
    assert inner.counter.calls == 4


async def test_a_live_call_waits_for_the_slices_handed_over_not_the_whole_bulk_call() -> None:
    inner = GatedEmbedder()
    laned = LanedEmbedder(inner, slice_size=4, ahead=2)
    bulk = asyncio.create_task(in_lane(Lane.BULK, laned, [f"bulk {i}" for i in range(40)]))
    await settle()
    live = asyncio.create_task(in_lane(Lane.LIVE, laned, ["live a", "live b"]))
    await settle()

    await release(inner, 3)

    assert live.done() and len(live.result()) == 2
    assert [len(call) for call in inner.started[:3]] == [4, 4, 2]
    assert sorted(inner.started[2]) == ["live a", "live b"]
    assert not bulk.done()
    await release(inner, 8)
    assert len(await bulk) == 40


async def test_small_calls_of_one_lane_share_a_slice() -> None:
    """Changes captured a few at a time reach the model as full batches."""
    inner = GatedEmbedder()
    laned = LanedEmbedder(inner, slice_size=4, ahead=1)
    first = asyncio.create_task(laned.embed(["first"]))
    await settle()
    calls = [asyncio.create_task(laned.embed([f"{n} a", f"{n} b"])) for n in "xyz"]
    await settle()

    await release(inner, 3)

    assert [len(call) for call in inner.started] == [1, 4, 2]
    assert await first == await HashEmbedder().embed(["first"])
    for n, call in zip("xyz", calls, strict=True):
        assert await call == await HashEmbedder().embed([f"{n} a", f"{n} b"])


async def test_priority_slices_go_before_live_ones_and_live_before_bulk() -> None:
    inner = GatedEmbedder()
    laned = LanedEmbedder(inner, slice_size=2, ahead=1)
    calls = [
        asyncio.create_task(in_lane(lane, laned, [f"{lane.name} {i}" for i in range(4)]))
        for lane in (Lane.BULK, Lane.LIVE, Lane.PRIORITY)
    ]
    await settle()

    await release(inner, 6)

    lanes = [call[0].split()[0] for call in inner.started]
    assert lanes == ["BULK", "PRIORITY", "PRIORITY", "LIVE", "LIVE", "BULK"]
    assert [len(await call) for call in calls] == [4, 4, 4]


async def test_a_failing_slice_fails_its_call_and_withdraws_the_rest() -> None:
    inner = GatedEmbedder(fail_on="bad")
    laned = LanedEmbedder(inner, slice_size=1, ahead=1)
    failing = asyncio.create_task(laned.embed(["bad", "b", "c", "d"]))
    await settle()

    await release(inner, 1)

    with pytest.raises(EmbedderUnavailable, match="out of memory"):
        await failing
    assert await asyncio.wait_for(asyncio.gather(laned.embed(["next"]), release(inner, 1)), 1)
    assert inner.started == [["bad"], ["next"]]


async def test_a_cancelled_call_stops_encoding_and_frees_the_model_for_others() -> None:
    inner = GatedEmbedder()
    laned = LanedEmbedder(inner, slice_size=1, ahead=1)
    abandoned = asyncio.create_task(laned.embed(["a", "b", "c"]))
    await settle()
    other = asyncio.create_task(laned.embed(["other"]))
    await settle()

    abandoned.cancel()
    await settle()
    await release(inner, 1)

    assert await other == await HashEmbedder().embed(["other"])
    assert inner.started == [["a"], ["other"]]


class ConcurrentEmbedder(HashEmbedder):
    """Servers behind one embedder: calls run concurrently; records the most at once."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.most = 0
        self.sizes: list[int] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.now += 1
        self.most = max(self.most, self.now)
        self.sizes.append(len(texts))
        try:
            await asyncio.sleep(0.01)
            return await super().embed(texts)
        finally:
            self.now -= 1


async def test_servers_get_one_request_per_slice_and_every_server_kept_busy() -> None:
    settings = load_settings(
        embedding_url="http://a/v1,http://b/v1", embedding_concurrency=2, embedding_batch_size=8
    )
    inner = ConcurrentEmbedder()

    vectors = await laned(settings, inner).embed([f"text {i}" for i in range(100)])

    assert len(vectors) == 100
    assert max(inner.sizes) == 8
    assert inner.most == 2 * 2 + 1
