"""Embedders: the real all-MiniLM-L6-v2 (marked ``model``) and the hash stand-in."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigurationError
from indexer.embedding import (
    Embedder,
    SentenceTransformerEmbedder,
)
from tests.embedders import CountingEmbedder, HashEmbedder


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _norm(a: list[float]) -> float:
    return math.sqrt(_dot(a, a))


@pytest.fixture(scope="module")
def bf16() -> Iterator[CountingEmbedder]:
    embedder = CountingEmbedder(precision="bf16")
    try:
        yield embedder
    finally:
        asyncio.run(embedder.stop())


@pytest.mark.model
async def test_minilm_shape_and_window(minilm: CountingEmbedder) -> None:
    await minilm.start()

    assert isinstance(minilm, Embedder)
    assert minilm.dimension == 384
    assert minilm.max_tokens == 256
    assert minilm.count_tokens("变更流") == 5  # [CLS] + one token per character + [SEP]
    vectors = await minilm.embed(["one", "two three"])
    assert [len(v) for v in vectors] == [384, 384]


@pytest.mark.model
async def test_vectors_are_unit_length(
    minilm: CountingEmbedder, bf16: CountingEmbedder
) -> None:
    texts = ["A short sentence.", "索引跟随数据库的变更流。", "x " * 400]

    for embedder in (minilm, bf16):
        for vector in await embedder.embed(texts):
            assert _norm(vector) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.model
@pytest.mark.parametrize(
    ("anchor", "similar", "unrelated"),
    [
        (
            "The cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Interest rates rose by half a percent this quarter.",
        ),
        ("我喜欢吃苹果。", "苹果是我最喜欢的水果。", "股票市场今天下跌了。"),
    ],
)
async def test_similar_sentences_score_higher_than_unrelated(
    minilm: CountingEmbedder, anchor: str, similar: str, unrelated: str
) -> None:
    a, s, u = await minilm.embed([anchor, similar, unrelated])

    assert _dot(a, s) > _dot(a, u) + 0.1


@pytest.mark.model
async def test_counter_counts_calls_and_texts(minilm: CountingEmbedder) -> None:
    before_calls, before_texts = minilm.counter.calls, minilm.counter.texts

    await minilm.embed(["alpha", "beta", "gamma"])
    await minilm.embed(["delta"])
    await minilm.embed([])

    assert minilm.counter.calls - before_calls == 2
    assert minilm.counter.texts - before_texts == 4


@pytest.mark.model
async def test_bf16_is_close_to_fp32(
    minilm: CountingEmbedder, bf16: CountingEmbedder
) -> None:
    texts = [
        "Milvus keeps one vector per chunk.",
        "变更流中的每一次写入都会被索引。",
        "The resume token advances only after the event is durably queued.",
    ]

    full = await minilm.embed(texts)
    half = await bf16.embed(texts)

    for a, b in zip(full, half, strict=True):
        assert _dot(a, b) >= 0.998
    assert minilm.fingerprint.endswith(":fp32")
    assert bf16.fingerprint.endswith(":bf16")
    assert minilm.fingerprint.rsplit(":", 1)[0] == bf16.fingerprint.rsplit(":", 1)[0]


@pytest.mark.model
async def test_encoding_leaves_the_event_loop_free(minilm: CountingEmbedder) -> None:
    encoding = asyncio.create_task(
        minilm.embed(["The loop keeps running while the model encodes. " * 8] * 48)
    )
    # An encode run on the loop would finish before this coroutine got control back:
    # the turns counted here are ones the loop took while the model was encoding.
    turns = 0
    while not encoding.done():
        turns += 1
        await asyncio.sleep(0)
    assert len(await encoding) == 48
    assert turns >= 3


@pytest.mark.model
async def test_concurrent_embeds_match_sequential_ones(
    minilm: CountingEmbedder,
) -> None:
    batches = [[f"sentence number {i} of batch {b}" for i in range(5)] for b in range(4)]

    together = await asyncio.gather(*(minilm.embed(batch) for batch in batches))
    one_by_one = [await minilm.embed(batch) for batch in batches]

    for left, right in zip(together, one_by_one, strict=True):
        for a, b in zip(left, right, strict=True):
            assert _dot(a, b) == pytest.approx(1.0, abs=1e-5)


async def test_a_hub_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a local directory"):
        SentenceTransformerEmbedder("BAAI/bge-small-en-v1.5")


async def test_a_directory_without_a_model_is_a_configuration_error(tmp_path: Path) -> None:
    embedder = SentenceTransformerEmbedder(str(tmp_path))
    try:
        with pytest.raises(ConfigurationError, match=str(tmp_path)):
            await embedder.start()
    finally:
        await embedder.stop()


async def test_hash_embedder_is_deterministic_and_normalised() -> None:
    embedder = HashEmbedder(dimension=32)
    other = HashEmbedder(dimension=32)

    first = await embedder.embed(["same", "different"])
    again = await other.embed(["same"])

    assert isinstance(embedder, Embedder)
    assert first[0] == again[0]
    assert first[0] != first[1]
    assert all(len(v) == 32 and _norm(v) == pytest.approx(1.0) for v in first)
    assert (embedder.counter.calls, embedder.counter.texts) == (1, 2)
    assert embedder.fingerprint != HashEmbedder(dimension=16).fingerprint


@pytest.mark.model
async def test_a_call_returns_each_texts_vector_in_its_place(
    minilm: CountingEmbedder,
) -> None:
    """Texts are encoded sorted by length and in slices; the vectors must still
    come back in the caller's order, each equal to the text encoded alone."""
    texts = [("word " * n).strip() + f" number {n}" for n in (3, 40, 1, 25, 7, 60, 2, 15) * 5]
    together = await minilm.embed(texts)
    for text, vector in zip(texts[:8], together[:8], strict=True):
        [alone] = await minilm.embed([text])
        assert sum(a * b for a, b in zip(vector, alone, strict=True)) > 0.999
